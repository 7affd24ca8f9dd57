//! Streaming scrubber for identity bodies: a sliding window over the chunk stream.
//!
//! Each push appends the chunk to the bytes held back so far, finds the runs (unions of
//! overlapping matches, see `matcher.rs`) in that buffer and emits everything before the first
//! point where the future could still change the result:
//! * a tail that could be the start of a match completed by the next chunk
//!   ([`ScrubSet::hold_from`], never more than `max_pattern_len - 1` bytes, and nothing at all
//!   when the tail cannot begin any pattern — SSE events ending in `\n\n` flow at once);
//! * a run that reaches that tail: a match starting there would extend it, and the run must be
//!   replaced as one.
//!
//! So the output is byte-for-byte what scrubbing the whole body at once produces, except after
//! a single run longer than [`MAX_HELD_RUN`] (a value repeating itself in a long stream, or a
//! whole echo of a long value's longest forms: JSON `\uXXXX` of a 7 KiB value is 42 KB): the
//! run is then redacted in pieces, which keeps memory and rescanning bounded. The last
//! `max_pattern_len - 1` bytes before a cut stay behind as already-emitted context, so a window
//! straddling the cut is still found and the piece after it is redacted from its first byte:
//! without it, strided windows (`windows.rs`) would leave up to `stride - 1` characters there.

use std::sync::Arc;

use bytes::Bytes;

use super::matcher::{Run, Scratch};
use super::ScrubSet;

/// A run still growing at the end of the buffer is held back up to this many bytes; beyond,
/// it is redacted and emitted as it is and its continuation gets its own replacement.
pub const MAX_HELD_RUN: usize = 16 * 1024;

/// Scrubs one body pushed in arbitrary chunks. Call [`finish`](Self::finish) at the end.
pub struct StreamScrubber {
    set: Arc<ScrubSet>,
    /// The held-back tail of earlier pushes, then the current chunk. The first `context`
    /// bytes were emitted already (the end of a run cut at [`MAX_HELD_RUN`]): they are kept
    /// only so that matches starting in them are found, and redacted from `context` on.
    pending: Vec<u8>,
    context: usize,
    /// Reused buffers for the matches and runs of `pending`.
    scratch: Scratch,
    runs: Vec<Run>,
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
            context: 0,
            scratch: Scratch::default(),
            runs: Vec::new(),
        }
    }

    /// The most bytes a push holds back when no secret run is growing at the end of it.
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
        let set: &ScrubSet = &self.set;
        let Some(matcher) = set.matcher() else {
            out.extend_from_slice(chunk);
            return;
        };
        self.pending.extend_from_slice(chunk);
        set.find_runs(matcher, &self.pending, &mut self.scratch, &mut self.runs);
        clip_runs(&mut self.runs, self.context);
        // A match starting here could still be completed by the next chunk.
        let could_start = set.hold_from(&self.pending);
        let tail = could_start.max(self.context);
        // Hold back from the first run that reaches the tail (a match starting in the tail
        // would touch or overlap it).
        let mut safe = tail;
        for run in self.runs.iter().rev() {
            if run.end < safe {
                break;
            }
            safe = safe.min(run.start);
        }
        // Keep what a later match could start in; when nothing new is emitted, keep it all: a
        // held run found in the context must be found again, from its true start.
        let mut keep_from = if safe == self.context {
            0
        } else {
            could_start.min(safe)
        };
        if tail - safe > MAX_HELD_RUN {
            // A run that keeps growing: redact what we have, up to its end, and keep its last
            // bytes as context for a window that straddles the cut.
            safe = self
                .runs
                .iter()
                .filter(|r| r.start < tail)
                .map(|r| r.end)
                .fold(tail, usize::max);
            keep_from =
                could_start.min(safe.saturating_sub(set.max_pattern_len().saturating_sub(1)));
        }
        let done = self.runs.partition_point(|r| r.start < safe);
        set.replace_runs_from(&self.pending[..safe], self.context, &self.runs[..done], out);
        self.pending.drain(..keep_from);
        self.context = safe - keep_from;
    }

    /// [`finish`](Self::finish), appending to a caller-owned buffer.
    pub(crate) fn finish_into(&mut self, out: &mut Vec<u8>) {
        let set: &ScrubSet = &self.set;
        match set.matcher() {
            Some(matcher) => {
                set.find_runs(matcher, &self.pending, &mut self.scratch, &mut self.runs);
                clip_runs(&mut self.runs, self.context);
                set.replace_runs_from(&self.pending, self.context, &self.runs, out);
            }
            None => out.extend_from_slice(&self.pending),
        }
        self.pending.clear();
        self.context = 0;
    }
}

/// Drop the runs that end inside the already-emitted context and start the others after it.
fn clip_runs(runs: &mut Vec<Run>, context: usize) {
    if context == 0 {
        return;
    }
    runs.retain(|r| r.end > context);
    for run in runs.iter_mut() {
        run.start = run.start.max(context);
    }
}
