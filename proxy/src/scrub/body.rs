//! Choosing a body scrubber from the response's `Content-Encoding`, and the errors that make a
//! response unscannable.
//!
//! Fail closed: a coding we cannot decode (zstd, compress, stacked codings) is refused up
//! front with [`Unscannable`], and a stream that fails to decode midway is a [`ScrubError`];
//! the proxy answers 502 `unscannable_response` (or aborts the stream) and never forwards the
//! bytes unscanned. The scrubbed body's length differs from the upstream's: the caller drops
//! `Content-Length` and streams chunked.

use std::io;
use std::sync::Arc;

use bytes::Bytes;

use super::{BrotliScrubber, DeflateScrubber, GzipScrubber, ScrubSet, StreamScrubber};

/// The scrubber for one response body.
#[derive(Debug)]
pub enum BodyScrubber {
    Identity(StreamScrubber),
    Gzip(GzipScrubber),
    Deflate(DeflateScrubber),
    Brotli(BrotliScrubber),
}

/// The response's content coding cannot be scanned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("response content-encoding `{encoding}` cannot be scanned for secrets")]
pub struct Unscannable {
    /// The `Content-Encoding` value as received (no secret material: a header we did not inject).
    pub encoding: String,
}

/// The body could not be decoded (or re-encoded) while scrubbing.
#[derive(Debug, thiserror::Error)]
pub enum ScrubError {
    #[error("the {encoding} response body is corrupt or truncated")]
    Corrupt {
        encoding: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("re-encoding the scrubbed {encoding} response body failed")]
    Encode {
        encoding: &'static str,
        #[source]
        source: io::Error,
    },
}

impl BodyScrubber {
    /// Pick the scrubber for `Content-Encoding: encoding` (`None` = header absent). Codings are
    /// case-insensitive; `identity` entries are ignored. An empty `set` has nothing to find, so
    /// every coding passes through unchanged (no decoding, no refusal).
    pub fn for_content_encoding(
        set: Arc<ScrubSet>,
        encoding: Option<&str>,
    ) -> Result<BodyScrubber, Unscannable> {
        if set.is_empty() {
            return Ok(BodyScrubber::Identity(StreamScrubber::new(set)));
        }
        let raw = encoding.unwrap_or("");
        let mut codings = raw
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity"));
        let unscannable = || Unscannable {
            encoding: raw.trim().to_owned(),
        };
        let scrubber = match codings.next() {
            None => BodyScrubber::Identity(StreamScrubber::new(set)),
            Some(c) if c.eq_ignore_ascii_case("gzip") || c.eq_ignore_ascii_case("x-gzip") => {
                BodyScrubber::Gzip(GzipScrubber::new(set))
            }
            Some(c) if c.eq_ignore_ascii_case("deflate") => {
                BodyScrubber::Deflate(DeflateScrubber::new(set))
            }
            Some(c) if c.eq_ignore_ascii_case("br") => {
                BodyScrubber::Brotli(BrotliScrubber::new(set))
            }
            Some(_) => return Err(unscannable()),
        };
        if codings.next().is_some() {
            return Err(unscannable());
        }
        Ok(scrubber)
    }

    /// Scrub the next chunk of the body as received; returns bytes safe to send now.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Bytes, ScrubError> {
        match self {
            BodyScrubber::Identity(s) => Ok(s.push(chunk)),
            BodyScrubber::Gzip(s) => s.push(chunk),
            BodyScrubber::Deflate(s) => s.push(chunk),
            BodyScrubber::Brotli(s) => s.push(chunk),
        }
    }

    /// End of body: the remaining bytes. Errors if a compressed stream was incomplete.
    pub fn finish(&mut self) -> Result<Bytes, ScrubError> {
        match self {
            BodyScrubber::Identity(s) => Ok(s.finish()),
            BodyScrubber::Gzip(s) => s.finish(),
            BodyScrubber::Deflate(s) => s.finish(),
            BodyScrubber::Brotli(s) => s.finish(),
        }
    }
}
