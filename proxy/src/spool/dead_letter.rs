//! The dead-letter file: audit events the control plane refused on their own (a 4xx other
//! than 401/403, once the batch was split down to that single event, while another piece of
//! the same batch was accepted — a control plane refusing everything dead-letters nothing).
//!
//! Keeping such an event in the spool would block every event behind it and, once the spool
//! filled, every injection; dropping it would lose it silently. So it moves here — a JSON
//! Lines file next to the spool (`<spool file>.dead-letter`, mode 0600, fsynced) with the
//! refusal that sent it here — and the pipeline reports the count to the control plane as an
//! `audit.dropped` event. The file is bounded by the spool's own `max_bytes`: when it is full
//! the refused events stay in the spool (fail closed) until an operator inspects and removes
//! it.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::file::{open_private, restrict_permissions, sibling};

/// Suffix added to the spool file's name.
pub const DEAD_LETTER_SUFFIX: &str = "dead-letter";

/// One line of the dead-letter file.
#[derive(Serialize)]
struct Line<'a> {
    dead_lettered_at: DateTime<Utc>,
    /// The HTTP status of the refusal, when there was one.
    status: Option<u16>,
    /// The refusal as logged (never secret material).
    error: &'a str,
    /// The event as it was queued (its JSON, parsed back).
    event: serde_json::Value,
}

/// Why events could not be dead-lettered; they then stay in the spool.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeadLetterError {
    #[error("the audit dead-letter file {} is full ({max} bytes); inspect and remove it", path.display())]
    Full { path: PathBuf, max: u64 },
    #[error("cannot write the audit dead-letter file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

pub(crate) struct DeadLetter {
    path: PathBuf,
    /// Its size when last written (or found at start-up).
    bytes: u64,
    max: u64,
}

impl DeadLetter {
    /// The dead-letter file that goes with the spool file `spool`, bounded to `max` bytes.
    pub(crate) fn new(spool: &Path, max: u64) -> DeadLetter {
        let path = sibling(spool, DEAD_LETTER_SUFFIX);
        let bytes = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        DeadLetter { path, bytes, max }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Render the lines for `events` refused with `status` / `error`.
    pub(crate) fn render<'a>(
        events: impl IntoIterator<Item = &'a [u8]>,
        status: Option<u16>,
        error: &str,
    ) -> Vec<u8> {
        let now = Utc::now();
        let mut buf = Vec::new();
        for event in events {
            let line = Line {
                dead_lettered_at: now,
                status,
                error,
                // It was encoded by us, so it parses; should it not, the line still says
                // that an event was dead-lettered, and when.
                event: serde_json::from_slice(event).unwrap_or_default(),
            };
            // Plain strings, numbers and a timestamp: serializing cannot fail. Should it, the
            // line is left out of the file but the events are still counted and reported.
            if serde_json::to_writer(&mut buf, &line).is_ok() {
                buf.push(b'\n');
            }
        }
        buf
    }

    /// Whether `len` more bytes fit.
    pub(crate) fn check_room(&self, len: u64) -> Result<(), DeadLetterError> {
        if self.bytes.saturating_add(len) > self.max {
            return Err(DeadLetterError::Full {
                path: self.path.clone(),
                max: self.max,
            });
        }
        Ok(())
    }

    /// Append rendered lines durably (blocking I/O: call on the blocking pool).
    pub(crate) fn write(path: &Path, lines: &[u8]) -> io::Result<()> {
        let mut f = open_private(path, OpenOptions::new().create(true).append(true))?;
        restrict_permissions(path)?;
        f.write_all(lines)?;
        f.sync_all()
    }

    /// Record that `len` bytes were written.
    pub(crate) fn wrote(&mut self, len: u64) {
        self.bytes = self.bytes.saturating_add(len);
    }

    pub(crate) fn io_error(&self, source: io::Error) -> DeadLetterError {
        DeadLetterError::Io {
            path: self.path.clone(),
            source,
        }
    }
}
