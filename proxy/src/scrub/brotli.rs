//! Scrubbing `Content-Encoding: br` bodies: decode incrementally, scrub, re-encode
//! incrementally, like the gzip and deflate scrubbers in `compression.rs`.
//!
//! The brotli crate's `DecompressorWriter` decodes everything it is given in one `write`, so
//! its output does not go to a buffer but straight into a [`Sink`] that scrubs each piece
//! (≤ the decoder's buffer size) and feeds it to the encoder: a decompression bomb costs CPU,
//! not memory. After every pushed chunk the encoder is flushed so output flows as it arrives.
//! A corrupt, truncated or trailing-garbage stream is an error, as for gzip.

use std::io::{self, Write};
use std::sync::Arc;

use ::brotli::{CompressorWriter, DecompressorWriter};
use bytes::Bytes;

use super::{ScrubError, ScrubSet, StreamScrubber};

/// Decoder buffer: the most decoded bytes scrubbed in one step.
const DECODE_BUFFER: usize = 32 * 1024;
/// Encoder buffer size, quality and window (log2): fast, with a 1 MiB window.
const ENCODE_BUFFER: usize = 4096;
const QUALITY: u32 = 4;
const LG_WINDOW: u32 = 20;

const ENCODING: &str = "br";

/// Scrubs a `Content-Encoding: br` body, re-encoded as brotli.
pub struct BrotliScrubber {
    /// `None` once finished. Boxed: the brotli state is several KiB and
    /// [`BodyScrubber`](super::BodyScrubber) should stay small.
    decoder: Option<Box<DecompressorWriter<Sink>>>,
    received_input: bool,
    /// A push failed: the stream is unusable (the decoder forgets its error after reporting it).
    failed: bool,
}

/// The decoder's output: scrubbed, then re-encoded.
struct Sink {
    scrubber: StreamScrubber,
    scrubbed: Vec<u8>,
    encoder: CompressorWriter<Vec<u8>>,
    /// The encoder failed (as opposed to the decoder rejecting its input).
    encode_failed: bool,
}

impl Write for Sink {
    fn write(&mut self, decoded: &[u8]) -> io::Result<usize> {
        self.scrubbed.clear();
        self.scrubber.push_into(decoded, &mut self.scrubbed);
        if let Err(e) = self.encoder.write_all(&self.scrubbed) {
            self.encode_failed = true;
            return Err(e);
        }
        Ok(decoded.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Hand-written: the codecs' buffers hold unscrubbed body bytes, which must not reach a log.
impl std::fmt::Debug for BrotliScrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrotliScrubber")
            .field(
                "scrubber",
                &self.decoder.as_ref().map(|d| &d.get_ref().scrubber),
            )
            .field("received_input", &self.received_input)
            .field("failed", &self.failed)
            .finish()
    }
}

impl BrotliScrubber {
    pub fn new(set: Arc<ScrubSet>) -> BrotliScrubber {
        let sink = Sink {
            scrubber: StreamScrubber::new(set),
            scrubbed: Vec::new(),
            encoder: CompressorWriter::new(Vec::new(), ENCODE_BUFFER, QUALITY, LG_WINDOW),
            encode_failed: false,
        };
        BrotliScrubber {
            decoder: Some(Box::new(DecompressorWriter::new(sink, DECODE_BUFFER))),
            received_input: false,
            failed: false,
        }
    }

    /// Scrub the next compressed chunk; returns re-compressed bytes safe to emit now.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Bytes, ScrubError> {
        let result = self.try_push(chunk);
        self.failed |= result.is_err();
        result
    }

    /// End of body: verifies the stream is complete and emits the tail.
    pub fn finish(&mut self) -> Result<Bytes, ScrubError> {
        let result = self.try_finish();
        self.failed |= result.is_err();
        result
    }

    fn try_push(&mut self, chunk: &[u8]) -> Result<Bytes, ScrubError> {
        if chunk.is_empty() {
            self.usable()?;
            return Ok(Bytes::new());
        }
        self.received_input = true;
        let decoder = self.usable()?;
        let written = decoder.write(chunk);
        let sink = decoder.get_mut();
        match written {
            Ok(n) if n == chunk.len() => {}
            Ok(_) => {
                return Err(corrupt(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "data after the end of the compressed stream",
                )))
            }
            Err(source) if sink.encode_failed => {
                return Err(ScrubError::Encode {
                    encoding: ENCODING,
                    source,
                })
            }
            Err(source) => return Err(corrupt(source)),
        }
        sink.encoder.flush().map_err(|source| ScrubError::Encode {
            encoding: ENCODING,
            source,
        })?;
        Ok(Bytes::from(std::mem::take(sink.encoder.get_mut())))
    }

    fn try_finish(&mut self) -> Result<Bytes, ScrubError> {
        self.usable()?;
        let Some(mut decoder) = self.decoder.take() else {
            return Err(corrupt(io::Error::other("brotli stream already finished")));
        };
        if !self.received_input {
            return Ok(Bytes::new());
        }
        decoder.close().map_err(|source| {
            if decoder.get_ref().encode_failed {
                ScrubError::Encode {
                    encoding: ENCODING,
                    source,
                }
            } else {
                corrupt(source)
            }
        })?;
        let mut sink = (*decoder).into_inner().map_err(|_| {
            corrupt(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "truncated brotli stream",
            ))
        })?;
        let mut tail = Vec::new();
        sink.scrubber.finish_into(&mut tail);
        let encode = |source| ScrubError::Encode {
            encoding: ENCODING,
            source,
        };
        sink.encoder.write_all(&tail).map_err(encode)?;
        // `into_inner` finishes the stream (the last meta-block).
        Ok(Bytes::from(sink.encoder.into_inner()))
    }

    /// The decoder, unless a previous call failed or the body was finished.
    fn usable(&mut self) -> Result<&mut Box<DecompressorWriter<Sink>>, ScrubError> {
        if self.failed {
            return Err(corrupt(io::Error::other("brotli stream failed earlier")));
        }
        self.decoder
            .as_mut()
            .ok_or_else(|| corrupt(io::Error::other("brotli stream already finished")))
    }
}

fn corrupt(source: io::Error) -> ScrubError {
    ScrubError::Corrupt {
        encoding: ENCODING,
        source,
    }
}
