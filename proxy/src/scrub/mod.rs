//! Response scrubbing: an injected secret that the upstream echoes back reaches the agent as
//! `[REDACTED:<path>]`, in headers and in bodies, whatever the chunking and through gzip.
//!
//! Why here: the agent must never see a credential it asked us to inject, and a malicious or
//! buggy upstream (an echo endpoint, a verbose error page) is the obvious side channel.
//!
//! A [`ScrubSet`] is built once per request from the values injected into it. It generates the
//! encoded forms of each value (see [`forms`]) and compiles all of them into one leftmost-longest
//! multi-pattern searcher (aho-corasick's SIMD packed searcher, or its automaton for large
//! sets; see `matcher.rs`) — no regex, no per-chunk compilation. Bodies go through a
//! [`StreamScrubber`] (a sliding window holding back only a tail that could still grow into a
//! form, at most `max_pattern_len - 1` bytes) or,
//! for compressed bodies, a [`GzipScrubber`]/[`DeflateScrubber`] that decodes, scrubs and
//! re-encodes incrementally; [`BodyScrubber`] picks one from the `Content-Encoding`.
//!
//! Secret material: the forms are kept in `Zeroizing` buffers (for the hold-back prefix checks)
//! and wiped when the set is dropped. The searcher keeps its own copy of the patterns, which is
//! not wiped
//! (aho-corasick offers no hook); response bytes passing through are not secret-managed either,
//! since pingora holds them in ordinary buffers anyway.

mod body;
mod compression;
pub mod forms;
mod matcher;
mod stream;

#[cfg(test)]
mod tests;

use std::fmt;

use agent_secret_core::path::SecretPath;
use agent_secret_core::secret::SecretBytes;

use matcher::Matcher;

pub use body::{BodyScrubber, ScrubError, Unscannable};
pub use compression::{DeflateScrubber, GzipScrubber};
pub use stream::StreamScrubber;

/// The secret values injected into one request, compiled for scrubbing.
pub struct ScrubSet {
    /// `None` when no value was long enough to scrub: everything passes unchanged.
    matcher: Option<Matcher>,
    max_pattern_len: usize,
    /// Pattern id → index into `replacements`.
    pattern_owner: Vec<usize>,
    /// `[REDACTED:<path>]` per injected path.
    replacements: Vec<Vec<u8>>,
    paths: Vec<SecretPath>,
    /// The forms themselves, for [`ScrubSet::could_continue`]: a streamed body holds back
    /// only a tail that could still become one of them.
    patterns: Vec<zeroize::Zeroizing<Vec<u8>>>,
    /// `starts[b]`: some pattern begins with byte `b` (cheap rejection before prefix checks).
    starts: [bool; 256],
}

/// The searcher could not be built (only on absurd pattern counts or sizes).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the response scrubber: {0}")]
pub struct ScrubSetError(#[from] aho_corasick::BuildError);

impl ScrubSet {
    /// Compile the values injected into this request. A path given twice with the same value,
    /// or two paths sharing a value, redact as the first path listed.
    pub fn new(values: &[(SecretPath, SecretBytes)]) -> Result<ScrubSet, ScrubSetError> {
        let mut patterns = Vec::new();
        let mut pattern_owner = Vec::new();
        let mut replacements = Vec::with_capacity(values.len());
        let mut paths = Vec::with_capacity(values.len());
        for (index, (path, value)) in values.iter().enumerate() {
            replacements.push(format!("[REDACTED:{path}]").into_bytes());
            paths.push(path.clone());
            for form in forms::forms(value.expose()) {
                if !patterns.contains(&form) {
                    patterns.push(form);
                    pattern_owner.push(index);
                }
            }
        }
        let max_pattern_len = patterns.iter().map(|p| p.len()).max().unwrap_or(0);
        let matcher = if patterns.is_empty() {
            None
        } else {
            let slices: Vec<&[u8]> = patterns.iter().map(|p| p.as_slice()).collect();
            Some(Matcher::new(&slices)?)
        };
        let mut starts = [false; 256];
        for p in &patterns {
            if let Some(&b) = p.first() {
                starts[usize::from(b)] = true;
            }
        }
        Ok(ScrubSet {
            matcher,
            max_pattern_len,
            pattern_owner,
            replacements,
            paths,
            patterns,
            starts,
        })
    }

    /// A set that scrubs nothing (no secret was injected).
    pub fn empty() -> ScrubSet {
        ScrubSet {
            matcher: None,
            max_pattern_len: 0,
            pattern_owner: Vec::new(),
            replacements: Vec::new(),
            paths: Vec::new(),
            patterns: Vec::new(),
            starts: [false; 256],
        }
    }

    /// Whether `tail` (the end of the bytes seen so far) is a proper prefix of some form, i.e.
    /// the next chunk could complete a secret that starts here.
    pub(crate) fn could_continue(&self, tail: &[u8]) -> bool {
        let Some(&first) = tail.first() else {
            return false;
        };
        self.starts[usize::from(first)]
            && self
                .patterns
                .iter()
                .any(|p| p.len() > tail.len() && p.starts_with(tail))
    }

    /// True when nothing can match: bodies and headers pass through untouched.
    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }

    /// The longest form, in bytes; a body scrubber holds back one byte less than this.
    pub fn max_pattern_len(&self) -> usize {
        self.max_pattern_len
    }

    /// The paths whose values this set scrubs.
    pub fn paths(&self) -> &[SecretPath] {
        &self.paths
    }

    /// The header value with every form replaced, or `None` if it contained none.
    pub fn scrub_header_value(&self, value: &[u8]) -> Option<Vec<u8>> {
        let matcher = self.matcher.as_ref()?;
        let mut hits = matcher.find_iter(value).peekable();
        hits.peek()?;
        let mut out = Vec::with_capacity(value.len() + 16);
        let mut cursor = 0;
        for hit in hits {
            out.extend_from_slice(&value[cursor..hit.start]);
            out.extend_from_slice(self.replacement(hit.pattern));
            cursor = hit.end;
        }
        out.extend_from_slice(&value[cursor..]);
        Some(out)
    }

    fn matcher(&self) -> Option<&Matcher> {
        self.matcher.as_ref()
    }

    fn replacement(&self, pattern: usize) -> &[u8] {
        self.pattern_owner
            .get(pattern)
            .and_then(|&owner| self.replacements.get(owner))
            .map_or(b"[REDACTED]".as_slice(), Vec::as_slice)
    }
}

impl fmt::Debug for ScrubSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScrubSet")
            .field("paths", &self.paths)
            .field("patterns", &self.pattern_owner.len())
            .field("max_pattern_len", &self.max_pattern_len())
            .finish()
    }
}
