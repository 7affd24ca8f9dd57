//! Where a command's result goes: one JSON document on stdout with `--json`, human text
//! otherwise; notes and progress always on stderr.
//!
//! The `--json` contract (docs/architecture.md "CLI contract"): stdout holds exactly one JSON document and
//! nothing else, so `agent-secret-store ... --json | jq` always works. On failure stdout stays
//! empty; the error goes to stderr as `error: <code>: <message>` and the exit status is
//! non-zero.

use std::io::{self, Write};

use serde::Serialize;

use super::failure::Failure;

/// The output mode chosen by `--json`.
#[derive(Clone, Copy, Debug)]
pub struct Output {
    json: bool,
}

impl Output {
    pub fn new(json: bool) -> Output {
        Output { json }
    }

    pub fn is_json(&self) -> bool {
        self.json
    }

    /// Prints the result: `doc` as JSON with `--json`, otherwise whatever `human` writes.
    pub fn emit<T: Serialize + ?Sized>(
        &self,
        doc: &T,
        human: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<(), Failure> {
        let stdout = io::stdout();
        let mut out = stdout.lock();
        let written = if self.json {
            serde_json::to_writer(&mut out, doc)
                .map_err(io::Error::other)
                .and_then(|()| out.write_all(b"\n"))
        } else {
            human(&mut out)
        };
        match written.and_then(|()| out.flush()) {
            Ok(()) => Ok(()),
            // The reader went away (`... | head`): like other Unix tools, stop quietly.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            Err(e) => Err(Failure::failed(
                "output_failed",
                format!("cannot write to stdout: {e}"),
            )),
        }
    }

    /// A human note on stderr (never part of the `--json` document).
    pub fn note(&self, message: &str) {
        // A closed stderr is no reason to fail the command.
        let _ = writeln!(io::stderr(), "{message}");
    }

    /// Reports a failure on stderr; stdout is left untouched.
    pub fn failure(&self, failure: &Failure) {
        let _ = writeln!(io::stderr(), "error: {}: {}", failure.code, failure.message);
    }
}
