//! `{{secret:PATH}}` placeholders in request header values, and their substitution.
//!
//! The agent never holds a credential; it writes a placeholder where the credential goes and the
//! sidecar substitutes the value on the way out. The grammar fails safe: anything that looks
//! like an *attempt* at a placeholder but is not exactly well formed is an error (a 400 at the
//! sidecar), so a typo can never be forwarded upstream verbatim — where it would leak the path,
//! fail confusingly, or be logged by a third party.
//!
//! # Grammar
//!
//! * A placeholder is exactly `{{secret:` + a valid [`SecretPath`] + `}}`: lowercase `secret`,
//!   no whitespace anywhere.
//! * An *attempt* is `{{`, optional ASCII whitespace, then `secret` in any letter case. Every
//!   attempt that is not a placeholder is an error: `{{ secret:x}}`, `{{SECRET:x}}`,
//!   `{{secret x}}`, `{{secrets:x}}`, `{{secret: x}}`, `{{secret:}}`, `{{secret:a b}}`, or
//!   `{{secret:x` with no closing `}}` (the path runs to the first `}}`).
//! * Any other `{{...}}` text (`{{name}}` templating, JSON in a header) is left alone.
//! * A value may hold several placeholders; each is replaced independently.
//!
//! Header values are bytes (they need not be UTF-8), so everything here works on `&[u8]`.

use std::ops::Range;

use zeroize::Zeroizing;

use crate::path::{PathError, SecretPath};

const OPEN: &[u8] = b"{{";
const CLOSE: &[u8] = b"}}";
const KEYWORD: &[u8] = b"secret";
const PREFIX: &[u8] = b"{{secret:";

/// One placeholder found in a header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder {
    /// Byte range of the whole `{{secret:...}}` in the value.
    pub range: Range<usize>,
    pub path: SecretPath,
}

/// Why a header value's placeholders cannot be used. Messages name paths, never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaceholderError {
    #[error("placeholder `{{{{secret:...` has no closing `}}}}`")]
    Unterminated,
    #[error("placeholder holds an invalid secret path: {0}")]
    InvalidPath(PathError),
    #[error("malformed placeholder at byte {offset}: {reason} (expected `{{{{secret:PATH}}}}`)")]
    Malformed { offset: usize, reason: &'static str },
    #[error("no value for secret `{0}`")]
    Missing(SecretPath),
}

impl PlaceholderError {
    /// The API error code for every placeholder error.
    pub fn code(&self) -> &'static str {
        "invalid_placeholder"
    }
}

/// Fast pre-check for the hot path: true if `value` contains `{{` anywhere. A value without it
/// cannot hold a placeholder or an attempt at one, so it can be forwarded untouched.
pub fn contains_placeholder_marker(value: &[u8]) -> bool {
    find_from(value, OPEN, 0).is_some()
}

/// Find every placeholder in `value`, in order; any malformed attempt fails the whole value.
pub fn find_placeholders(value: &[u8]) -> Result<Vec<Placeholder>, PlaceholderError> {
    let mut found = Vec::new();
    let mut pos = 0;
    while let Some(open) = find_from(value, OPEN, pos) {
        if !is_attempt(&value[open + OPEN.len()..]) {
            pos = open + 1;
            continue;
        }
        let placeholder = parse_at(value, open)?;
        pos = placeholder.range.end;
        found.push(placeholder);
    }
    Ok(found)
}

/// Replace `placeholders` (as returned by [`find_placeholders`] for this `value`) with the
/// values `lookup` gives. The result is allocated once at its final size, so no partial copy of
/// a secret is left behind by a reallocation, and it is zeroized on drop.
pub fn substitute<'v>(
    value: &[u8],
    placeholders: &[Placeholder],
    mut lookup: impl FnMut(&SecretPath) -> Option<&'v [u8]>,
) -> Result<Zeroizing<Vec<u8>>, PlaceholderError> {
    check_ranges(value, placeholders)?;
    let mut secrets = Vec::with_capacity(placeholders.len());
    for p in placeholders {
        let secret = lookup(&p.path).ok_or_else(|| PlaceholderError::Missing(p.path.clone()))?;
        secrets.push(secret);
    }
    let removed: usize = placeholders.iter().map(|p| p.range.len()).sum();
    let added: usize = secrets.iter().map(|s| s.len()).sum();
    let mut out = Zeroizing::new(Vec::with_capacity(value.len() - removed + added));
    let mut pos = 0;
    for (p, secret) in placeholders.iter().zip(secrets) {
        out.extend_from_slice(&value[pos..p.range.start]);
        out.extend_from_slice(secret);
        pos = p.range.end;
    }
    out.extend_from_slice(&value[pos..]);
    Ok(out)
}

/// `rest` follows a `{{`: is it optional whitespace then `secret` in any case?
fn is_attempt(rest: &[u8]) -> bool {
    let start = rest
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(rest.len());
    rest[start..]
        .get(..KEYWORD.len())
        .is_some_and(|word| word.eq_ignore_ascii_case(KEYWORD))
}

/// Parse the attempt that starts at `open` (the index of its `{{`).
fn parse_at(value: &[u8], open: usize) -> Result<Placeholder, PlaceholderError> {
    if !value[open..].starts_with(PREFIX) {
        return Err(malformed(
            open,
            "write `{{secret:` in lowercase with no spaces",
        ));
    }
    let path_start = open + PREFIX.len();
    let close = find_from(value, CLOSE, path_start).ok_or(PlaceholderError::Unterminated)?;
    let inner = &value[path_start..close];
    if inner.first().is_some_and(u8::is_ascii_whitespace)
        || inner.last().is_some_and(u8::is_ascii_whitespace)
    {
        return Err(malformed(open, "no whitespace is allowed around the path"));
    }
    let path = parse_path(inner).map_err(PlaceholderError::InvalidPath)?;
    Ok(Placeholder {
        range: open..close + CLOSE.len(),
        path,
    })
}

/// Paths are ASCII, so bytes that are not UTF-8 are simply an invalid character.
fn parse_path(inner: &[u8]) -> Result<SecretPath, PathError> {
    match std::str::from_utf8(inner) {
        Ok(s) => SecretPath::parse(s),
        Err(e) => Err(PathError::InvalidCharacter {
            ch: char::REPLACEMENT_CHARACTER,
            index: e.valid_up_to(),
        }),
    }
}

/// Placeholders must be in order, non-overlapping and inside `value`.
fn check_ranges(value: &[u8], placeholders: &[Placeholder]) -> Result<(), PlaceholderError> {
    let mut pos = 0;
    for p in placeholders {
        if p.range.start < pos || p.range.start > p.range.end || p.range.end > value.len() {
            return Err(malformed(
                p.range.start,
                "placeholder ranges do not fit this value",
            ));
        }
        pos = p.range.end;
    }
    Ok(())
}

fn malformed(offset: usize, reason: &'static str) -> PlaceholderError {
    PlaceholderError::Malformed { offset, reason }
}

/// Index of the first occurrence of `needle` in `haystack` at or after `from`.
fn find_from(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| from + i)
}

#[cfg(test)]
mod tests;
