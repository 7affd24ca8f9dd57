//! Secret paths: the names secrets are stored, scoped and substituted under.
//!
//! A path is the one string that travels through every layer — a URL segment of the control
//! plane API, a scope pattern, a `{{secret:PATH}}` placeholder, a storage key and the AAD of its
//! ciphertext — so its grammar is deliberately narrow: `/`-separated segments of
//! `[A-Za-z0-9._-]+`, no empty segment, no leading or trailing `/`, at most
//! [`MAX_PATH_LEN`] bytes and [`MAX_SEGMENTS`] segments. The segments `.` and `..` are rejected
//! too: URL clients and servers normalise them away, so `a/../b` would name a different secret
//! in the API than in a scope. A `SecretPath` value is always valid; there is no way to build
//! one without going through [`SecretPath::parse`].

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest path accepted, in bytes.
pub const MAX_PATH_LEN: usize = 512;
/// Most segments a path may have.
pub const MAX_SEGMENTS: usize = 32;

/// A validated secret path such as `production/openai/api_key`.
///
/// Shared text: the sidecar clones a path into cache keys, grants and audit records on every
/// request, and a clone here copies nothing.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretPath(Arc<str>);

/// Why a string is not a valid secret path. Messages are safe to show to users: a path is a
/// name, never a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("secret path is empty")]
    Empty,
    #[error("secret path is longer than {MAX_PATH_LEN} bytes")]
    TooLong,
    #[error("secret path has more than {MAX_SEGMENTS} segments")]
    TooManySegments,
    #[error("secret path has an empty segment (leading, trailing or doubled `/`)")]
    EmptySegment,
    #[error("secret path segment `{segment}` is not allowed (`.` and `..` are reserved)")]
    DotSegment { segment: String },
    #[error(
        "secret path has invalid character {ch:?} at byte {index} (allowed: A-Z a-z 0-9 . _ - and `/` between segments)"
    )]
    InvalidCharacter { ch: char, index: usize },
}

impl SecretPath {
    /// Parse and validate a path; see the module docs for the grammar.
    pub fn parse(s: &str) -> Result<SecretPath, PathError> {
        check_length(s)?;
        let mut count = 0;
        for (offset, segment) in segments_with_offsets(s) {
            count += 1;
            if count > MAX_SEGMENTS {
                return Err(PathError::TooManySegments);
            }
            validate_segment(segment, offset)?;
        }
        Ok(SecretPath(s.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The segments, in order; never empty strings.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// True if `self` equals `prefix` or lies below it, comparing whole segments
    /// (`prod/a` is under `prod`, `production/a` is not).
    pub fn starts_with(&self, prefix: &SecretPath) -> bool {
        match self.0.strip_prefix(prefix.as_str()) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }
}

/// Length checks shared with scope patterns, which obey the same limits.
pub(crate) fn check_length(s: &str) -> Result<(), PathError> {
    if s.is_empty() {
        return Err(PathError::Empty);
    }
    if s.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    Ok(())
}

/// Split on `/`, yielding each segment with its byte offset in `s` (for error messages).
pub(crate) fn segments_with_offsets(s: &str) -> impl Iterator<Item = (usize, &str)> {
    s.split('/').scan(0, |offset, segment| {
        let start = *offset;
        *offset += segment.len() + 1;
        Some((start, segment))
    })
}

/// Validate one literal segment that starts at byte `offset` of the whole string.
pub(crate) fn validate_segment(segment: &str, offset: usize) -> Result<(), PathError> {
    if segment.is_empty() {
        return Err(PathError::EmptySegment);
    }
    if let Some((i, ch)) = segment.char_indices().find(|(_, c)| !is_segment_char(*c)) {
        return Err(PathError::InvalidCharacter {
            ch,
            index: offset + i,
        });
    }
    if segment == "." || segment == ".." {
        return Err(PathError::DotSegment {
            segment: segment.to_owned(),
        });
    }
    Ok(())
}

fn is_segment_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

impl fmt::Display for SecretPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SecretPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretPath({:?})", self.0)
    }
}

impl FromStr for SecretPath {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SecretPath::parse(s)
    }
}

impl AsRef<str> for SecretPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for SecretPath {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SecretPath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        SecretPath::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
