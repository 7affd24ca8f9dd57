//! Streaming scrubber for identity bodies: a sliding window over the chunk stream.
//!
//! Each push scans `pending ++ chunk` and emits everything except a tail that could be the
//! start of a form completed by the next chunk (never more than `max_pattern_len - 1` bytes,
//! and nothing at all when the tail cannot begin any form).
//! Any form *starting* before that point fits entirely in what we have, so the output is
//! byte-for-byte what a leftmost-longest scan of the whole body would produce — while only a
//! few dozen bytes are ever held back and SSE events flow chunk by chunk.
//!
//! The chunk is not copied into a scratch buffer: matches that begin in the held-back bytes are
//! found in a small "stitch" (`pending ++ first max_pattern_len - 1 bytes of chunk`), the rest
//! directly in the chunk. The only allocation per push is the output.

use std::sync::Arc;

use bytes::Bytes;

use super::ScrubSet;

/// Scrubs one body pushed in arbitrary chunks. Call [`finish`](Self::finish) at the end.
pub struct StreamScrubber {
    set: Arc<ScrubSet>,
    /// Bytes held back from previous pushes (at most `max_pattern_len - 1`).
    pending: Vec<u8>,
    /// Reused buffer for the stitch between `pending` and the new chunk.
    stitch: Vec<u8>,
    /// Reused buffer for the last `max_pattern_len - 1` bytes seen (see `hold_from`).
    tail: Vec<u8>,
}

/// Hand-written: `pending` may hold the first bytes of a secret.
impl std::fmt::Debug for StreamScrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamScrubber")
            .field("set", &self.set)
            .field("pending_len", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl StreamScrubber {
    pub fn new(set: Arc<ScrubSet>) -> StreamScrubber {
        let cap = set.max_pattern_len().saturating_sub(1);
        StreamScrubber {
            set,
            pending: Vec::with_capacity(cap),
            stitch: Vec::with_capacity(cap * 2),
            tail: Vec::with_capacity(cap),
        }
    }

    /// The most bytes a push may hold back.
    pub fn holdback(&self) -> usize {
        self.set.max_pattern_len().saturating_sub(1)
    }

    /// Scrub `chunk`; returns the bytes that are safe to emit now.
    pub fn push(&mut self, chunk: &[u8]) -> Bytes {
        let mut out = Vec::with_capacity(self.pending.len() + chunk.len());
        self.push_into(chunk, &mut out);
        Bytes::from(out)
    }

    /// Flush the held-back bytes (scrubbed) at the end of the body.
    pub fn finish(&mut self) -> Bytes {
        let mut out = Vec::with_capacity(self.pending.len() + 16);
        self.finish_into(&mut out);
        Bytes::from(out)
    }

    /// [`push`](Self::push), appending to a caller-owned buffer.
    pub(crate) fn push_into(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        if self.set.matcher().is_none() {
            out.extend_from_slice(chunk);
            return;
        }
        let held = self.pending.len();
        let total = held + chunk.len();
        // Forms starting before `limit` are complete within `pending ++ chunk`; of the last
        // `max_pattern_len - 1` bytes only a tail that could still grow into a form is held.
        let window = total.saturating_sub(self.set.max_pattern_len() - 1);
        let limit = self.hold_from(chunk, window, total);
        let set: &ScrubSet = &self.set;
        let Some(matcher) = set.matcher() else {
            return;
        };
        let mut cursor = 0;

        if held > 0 {
            let take = chunk.len().min(set.max_pattern_len() - 1);
            self.stitch.clear();
            self.stitch.extend_from_slice(&self.pending);
            self.stitch.extend_from_slice(&chunk[..take]);
            for m in matcher.find_iter(self.stitch.as_slice()) {
                if m.start >= held || m.start >= limit {
                    break;
                }
                out.extend_from_slice(&self.stitch[cursor..m.start]);
                out.extend_from_slice(set.replacement(m.pattern));
                cursor = m.end;
            }
        }

        let from = cursor.saturating_sub(held);
        for m in matcher.find_iter(&chunk[from..]) {
            let (start, end) = (held + from + m.start, held + from + m.end);
            if start >= limit {
                break;
            }
            self.emit(chunk, cursor, start, out);
            out.extend_from_slice(set.replacement(m.pattern));
            cursor = end;
        }

        let hold_from = cursor.max(limit);
        self.emit(chunk, cursor, hold_from, out);
        if hold_from < held {
            self.pending.drain(..hold_from);
            self.pending.extend_from_slice(chunk);
        } else {
            self.pending.clear();
            self.pending.extend_from_slice(&chunk[hold_from - held..]);
        }
    }

    /// The first position in `[window, total)` of `pending ++ chunk` whose tail is a proper
    /// prefix of some form, or `total` when none is: holding back less than the full window
    /// lets small chunks (SSE events) through at once. Any longer match starting before the
    /// returned point would itself be such a tail, so leftmost-longest results are unchanged.
    fn hold_from(&mut self, chunk: &[u8], window: usize, total: usize) -> usize {
        let held = self.pending.len();
        self.tail.clear();
        if window < held {
            self.tail.extend_from_slice(&self.pending[window..]);
            self.tail.extend_from_slice(chunk);
        } else {
            self.tail.extend_from_slice(&chunk[window - held..]);
        }
        (0..self.tail.len())
            .find(|&i| self.set.could_continue(&self.tail[i..]))
            .map_or(total, |i| window + i)
    }

    /// [`finish`](Self::finish), appending to a caller-owned buffer.
    pub(crate) fn finish_into(&mut self, out: &mut Vec<u8>) {
        let set: &ScrubSet = &self.set;
        match set.matcher() {
            Some(matcher) => {
                let mut cursor = 0;
                for m in matcher.find_iter(self.pending.as_slice()) {
                    out.extend_from_slice(&self.pending[cursor..m.start]);
                    out.extend_from_slice(set.replacement(m.pattern));
                    cursor = m.end;
                }
                out.extend_from_slice(&self.pending[cursor..]);
            }
            None => out.extend_from_slice(&self.pending),
        }
        self.pending.clear();
    }

    /// Append bytes `[from, to)` of the logical buffer `pending ++ chunk`.
    fn emit(&self, chunk: &[u8], from: usize, to: usize, out: &mut Vec<u8>) {
        if from >= to {
            return;
        }
        let held = self.pending.len();
        if from < held {
            out.extend_from_slice(&self.pending[from..to.min(held)]);
        }
        if to > held {
            out.extend_from_slice(&chunk[from.max(held) - held..to - held]);
        }
    }
}
