//! Scrubbing compressed bodies: decode incrementally, scrub, re-encode incrementally.
//!
//! A value inside a gzip body is invisible to a byte scanner, so the body is inflated, passed
//! through a [`StreamScrubber`] and deflated again with the same coding (the response keeps its
//! `Content-Encoding`; only `Content-Length` must go). After every pushed chunk the encoder is
//! sync-flushed so output flows as it arrives (a few bytes of overhead per chunk).
//!
//! Input is fed to the decoder in the steps it accepts (each yields at most ~32 KiB of output),
//! and each step is scrubbed and re-compressed before the next, so a decompression bomb costs
//! CPU but not memory. A corrupt, truncated or trailing-garbage stream is an error: the caller
//! answers 502 `unscannable_response` instead of passing anything through unscanned.

use std::io::{self, Write};
use std::sync::Arc;

use bytes::Bytes;
use flate2::write::{
    DeflateDecoder, DeflateEncoder, GzEncoder, MultiGzDecoder, ZlibDecoder, ZlibEncoder,
};
use flate2::Compression;

use super::{ScrubError, ScrubSet, StreamScrubber};

/// Scrubs a `Content-Encoding: gzip` body (multi-member streams included), re-encoded as gzip.
#[derive(Debug)]
pub struct GzipScrubber(Recoder<MultiGzDecoder<Vec<u8>>, GzEncoder<Vec<u8>>>);

/// Scrubs a `Content-Encoding: deflate` body: zlib-wrapped as RFC 9110 says, or raw deflate as
/// some servers send (told apart by the zlib header check), re-encoded the same way.
#[derive(Debug)]
pub struct DeflateScrubber {
    state: DeflateState,
}

enum DeflateState {
    /// Waiting for the two bytes that tell zlib from raw deflate.
    Sniffing {
        set: Arc<ScrubSet>,
        head: Vec<u8>,
    },
    Zlib(Recoder<ZlibDecoder<Vec<u8>>, ZlibEncoder<Vec<u8>>>),
    Raw(Recoder<DeflateDecoder<Vec<u8>>, DeflateEncoder<Vec<u8>>>),
}

/// A decoder → scrubber → encoder pipeline over one flate2 format.
pub(crate) struct Recoder<D, E> {
    decoder: D,
    encoder: E,
    scrubber: StreamScrubber,
    /// Reused buffer between the scrubber and the encoder.
    scrubbed: Vec<u8>,
    received_input: bool,
}

/// The flate2 writer types used above, behind one interface.
pub(crate) trait Codec: Write {
    fn output(&mut self) -> &mut Vec<u8>;
    fn try_finish(&mut self) -> io::Result<()>;
}

macro_rules! codec {
    ($($ty:ident),*) => {$(
        impl Codec for $ty<Vec<u8>> {
            fn output(&mut self) -> &mut Vec<u8> {
                self.get_mut()
            }
            fn try_finish(&mut self) -> io::Result<()> {
                $ty::try_finish(self)
            }
        }
    )*};
}
codec!(
    MultiGzDecoder,
    GzEncoder,
    ZlibDecoder,
    ZlibEncoder,
    DeflateDecoder,
    DeflateEncoder
);

impl GzipScrubber {
    pub fn new(set: Arc<ScrubSet>) -> GzipScrubber {
        GzipScrubber(Recoder::new(
            MultiGzDecoder::new(Vec::new()),
            GzEncoder::new(Vec::new(), Compression::fast()),
            set,
        ))
    }

    /// Scrub the next compressed chunk; returns re-compressed bytes safe to emit now.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Bytes, ScrubError> {
        self.0.push(chunk, "gzip")
    }

    /// End of body: verifies the stream is complete (CRC, length) and emits the tail.
    pub fn finish(&mut self) -> Result<Bytes, ScrubError> {
        self.0.finish("gzip")
    }
}

impl DeflateScrubber {
    pub fn new(set: Arc<ScrubSet>) -> DeflateScrubber {
        DeflateScrubber {
            state: DeflateState::Sniffing {
                set,
                head: Vec::with_capacity(2),
            },
        }
    }

    pub fn push(&mut self, chunk: &[u8]) -> Result<Bytes, ScrubError> {
        if let DeflateState::Sniffing { set, head } = &mut self.state {
            head.extend_from_slice(chunk);
            let (Some(&cmf), Some(&flg)) = (head.first(), head.get(1)) else {
                return Ok(Bytes::new());
            };
            let head = std::mem::take(head);
            let set = Arc::clone(set);
            self.state = if is_zlib_header(cmf, flg) {
                DeflateState::Zlib(Recoder::new(
                    ZlibDecoder::new(Vec::new()),
                    ZlibEncoder::new(Vec::new(), Compression::fast()),
                    set,
                ))
            } else {
                DeflateState::Raw(Recoder::new(
                    DeflateDecoder::new(Vec::new()),
                    DeflateEncoder::new(Vec::new(), Compression::fast()),
                    set,
                ))
            };
            return self.push(&head);
        }
        match &mut self.state {
            DeflateState::Zlib(r) => r.push(chunk, "deflate"),
            DeflateState::Raw(r) => r.push(chunk, "deflate"),
            DeflateState::Sniffing { .. } => Ok(Bytes::new()),
        }
    }

    pub fn finish(&mut self) -> Result<Bytes, ScrubError> {
        match &mut self.state {
            DeflateState::Zlib(r) => r.finish("deflate"),
            DeflateState::Raw(r) => r.finish("deflate"),
            DeflateState::Sniffing { head, .. } if head.is_empty() => Ok(Bytes::new()),
            DeflateState::Sniffing { .. } => Err(ScrubError::Corrupt {
                encoding: "deflate",
                source: io::Error::new(io::ErrorKind::UnexpectedEof, "truncated deflate stream"),
            }),
        }
    }
}

impl std::fmt::Debug for DeflateState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeflateState::Sniffing { head, .. } => write!(f, "Sniffing({} bytes)", head.len()),
            DeflateState::Zlib(r) => f.debug_tuple("Zlib").field(r).finish(),
            DeflateState::Raw(r) => f.debug_tuple("Raw").field(r).finish(),
        }
    }
}

/// RFC 1950: compression method 8, window ≤ 32 KiB, header checksum a multiple of 31.
fn is_zlib_header(cmf: u8, flg: u8) -> bool {
    cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(cmf) << 8 | u16::from(flg)) % 31 == 0
}

/// Hand-written: the codecs' buffers hold unscrubbed body bytes, which must not reach a log.
impl<D, E> std::fmt::Debug for Recoder<D, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recoder")
            .field("scrubber", &self.scrubber)
            .field("received_input", &self.received_input)
            .finish_non_exhaustive()
    }
}

impl<D: Codec, E: Codec> Recoder<D, E> {
    fn new(decoder: D, encoder: E, set: Arc<ScrubSet>) -> Recoder<D, E> {
        Recoder {
            decoder,
            encoder,
            scrubber: StreamScrubber::new(set),
            scrubbed: Vec::new(),
            received_input: false,
        }
    }

    fn push(&mut self, chunk: &[u8], encoding: &'static str) -> Result<Bytes, ScrubError> {
        let corrupt = |source| ScrubError::Corrupt { encoding, source };
        let mut rest = chunk;
        let mut wrote = false;
        while !rest.is_empty() {
            self.received_input = true;
            let n = self.decoder.write(rest).map_err(corrupt)?;
            if n == 0 {
                return Err(corrupt(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "data after the end of the compressed stream",
                )));
            }
            rest = &rest[n..];
            self.decoder.flush().map_err(corrupt)?;
            wrote |= self.scrub_decoded(encoding)?;
        }
        if wrote {
            self.encoder
                .flush()
                .map_err(|source| ScrubError::Encode { encoding, source })?;
        }
        Ok(Bytes::from(std::mem::take(self.encoder.output())))
    }

    fn finish(&mut self, encoding: &'static str) -> Result<Bytes, ScrubError> {
        if !self.received_input {
            return Ok(Bytes::new());
        }
        let encode = |source| ScrubError::Encode { encoding, source };
        self.decoder
            .try_finish()
            .map_err(|source| ScrubError::Corrupt { encoding, source })?;
        self.scrub_decoded(encoding)?;
        self.scrubbed.clear();
        self.scrubber.finish_into(&mut self.scrubbed);
        self.encoder.write_all(&self.scrubbed).map_err(encode)?;
        self.encoder.try_finish().map_err(encode)?;
        Ok(Bytes::from(std::mem::take(self.encoder.output())))
    }

    /// Move what the decoder produced through the scrubber into the encoder.
    fn scrub_decoded(&mut self, encoding: &'static str) -> Result<bool, ScrubError> {
        let decoded = self.decoder.output();
        if decoded.is_empty() {
            return Ok(false);
        }
        self.scrubbed.clear();
        self.scrubber.push_into(decoded, &mut self.scrubbed);
        decoded.clear();
        self.encoder
            .write_all(&self.scrubbed)
            .map_err(|source| ScrubError::Encode { encoding, source })?;
        Ok(true)
    }
}
