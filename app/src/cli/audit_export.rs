//! `audit export` in human mode: the control plane's JSON Lines or CSV stream copied to stdout
//! or a file as it arrives (constant memory however long the log), with a progress line on
//! stderr when a person is watching it and the events are going somewhere else.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use agent_secret_control_plane::audit_checkpoint::{key_id_of, PublicKeys, Statement};
use agent_secret_control_plane::audit_file::verify_jsonl_anchored;
use base64::Engine as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

use super::api::{AuditFilter, ControlPlane};
use super::failure::Failure;
use super::output::Output;

/// Streams the export in `wire` format (`jsonl` or `csv`) to `output` (stdout when `None`).
pub async fn stream(
    api: &ControlPlane<'_>,
    filter: &AuditFilter<'_>,
    wire: &str,
    output: Option<&Path>,
) -> Result<(), Failure> {
    let mut sink: Box<dyn Write> = match output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).map_err(|e| {
                Failure::invalid_argument(format!("--output {}: {e}", path.display()))
            })?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    // Only for a person at a terminal, and only when the events are not printed right there.
    let watched =
        std::io::stderr().is_terminal() && (output.is_some() || !std::io::stdout().is_terminal());
    let progress = watched.then(|| progress_line(wire));
    let mut lines = 0u64;
    let copied = api
        .stream_audit(filter, wire, &mut sink, |chunk| {
            if let Some(bar) = &progress {
                lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
                bar.set_position(lines);
            }
        })
        .await;
    let flushed = sink
        .flush()
        .map_err(|e| Failure::failed("write_failed", format!("writing the output: {e}")));
    if let Some(bar) = progress {
        match &copied {
            Ok(bytes) => bar.finish_with_message(format!("done, {bytes} bytes")),
            Err(_) => bar.abandon_with_message("failed"),
        }
    }
    copied?;
    flushed
}

fn progress_line(wire: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    let unit = if wire == "csv" { "lines" } else { "events" };
    if let Ok(style) =
        ProgressStyle::with_template(&format!("{{spinner}} {{pos}} {unit} exported {{msg}}"))
    {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// `audit export --json`: every page, followed by cursor, as one `{"events": [...]}`.
pub async fn document(
    api: &ControlPlane<'_>,
    filter: &AuditFilter<'_>,
    out: Output,
) -> Result<(), Failure> {
    let mut events = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let reply = api.audit_page(filter, cursor.as_deref()).await?;
        let doc = reply.doc();
        if let Some(page) = doc.get("events").and_then(Value::as_array) {
            events.extend(page.iter().cloned());
        }
        match doc.get("next_cursor").and_then(Value::as_str) {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    out.emit(&serde_json::json!({ "events": events }), |_| Ok(()))
}

/// The keys of `--public-key`: a base64 Ed25519 key, or a file holding one or the JSON of
/// `audit public-keys --json`.
fn public_keys(arg: &str) -> Result<PublicKeys, Failure> {
    let text = match std::fs::read_to_string(arg) {
        Ok(text) => text,
        Err(_) => arg.to_owned(),
    };
    let bad = |why: &str| Failure::invalid_argument(format!("--public-key: {why}"));
    let encoded: Vec<String> = match serde_json::from_str::<Value>(&text) {
        Ok(doc) => doc["keys"]
            .as_array()
            .ok_or_else(|| bad("the JSON has no \"keys\" list"))?
            .iter()
            .filter_map(|k| k["public_key"].as_str().map(str::to_owned))
            .collect(),
        Err(_) => vec![text.trim().to_owned()],
    };
    encoded
        .iter()
        .map(|b64| {
            let key = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .ok()
                .filter(|k| k.len() == 32)
                .ok_or_else(|| bad("not a base64 32-byte Ed25519 key"))?;
            Ok((key_id_of(&key), key))
        })
        .collect()
}

/// The signed statements of an anchor file, one per line.
fn read_anchors(path: &Path) -> Result<Vec<Statement>, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::invalid_argument(format!("--anchors {}: {e}", path.display())))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, line)| {
            Statement::from_reason(Some(line)).map_err(|e| {
                Failure::invalid_argument(format!(
                    "--anchors {} line {}: {e}",
                    path.display(),
                    i + 1
                ))
            })
        })
        .collect()
}

/// `audit verify --offline FILE [--public-key K]`: the chain of an exported JSON Lines file and
/// its checkpoints, checked locally.
pub fn verify_file(
    file: &Path,
    public_key: Option<&str>,
    anchors: Option<&Path>,
    out: Output,
) -> Result<(), Failure> {
    let keys = public_key.map(public_keys).transpose()?;
    let anchors = match anchors {
        Some(path) => read_anchors(path)?,
        None => Vec::new(),
    };
    let report = if file == Path::new("-") {
        verify_jsonl_anchored(std::io::stdin().lock(), keys, &anchors)
    } else {
        let opened = std::fs::File::open(file)
            .map_err(|e| Failure::invalid_argument(format!("--offline {}: {e}", file.display())))?;
        verify_jsonl_anchored(std::io::BufReader::new(opened), keys, &anchors)
    }
    .map_err(|e| Failure::failed("read_failed", format!("reading {}: {e}", file.display())))?;
    out.emit(&report, |w| {
        if report.valid {
            writeln!(
                w,
                "audit file intact: {} events, seq {} to {}, head {}",
                report.events_checked,
                report.first_seq.unwrap_or_default(),
                report.last_seq.unwrap_or_default(),
                report.head_hash.as_deref().unwrap_or("-"),
            )?;
            writeln!(
                w,
                "{} checkpoints hold (last at seq {}), signatures {}",
                report.checkpoints_verified,
                report
                    .last_checkpoint_seq
                    .map_or("-".to_owned(), |s| s.to_string()),
                if report.signatures_checked {
                    "checked"
                } else {
                    "NOT checked (give --public-key)"
                },
            )?;
            if report.first_seq.is_some_and(|s| s > 1) {
                writeln!(
                    w,
                    "(the file starts mid-chain: earlier events are not covered)"
                )?;
            }
            Ok(())
        } else {
            writeln!(
                w,
                "audit file BROKEN at line {} (seq {}, event {}): {}",
                report.first_bad_line.unwrap_or_default(),
                report
                    .first_bad_seq
                    .map_or("-".to_owned(), |s| s.to_string()),
                report.first_bad_id.as_deref().unwrap_or("-"),
                report.problem.as_deref().unwrap_or_default(),
            )
        }
    })?;
    if report.valid {
        Ok(())
    } else {
        Err(Failure::new(
            "audit_chain_broken",
            format!(
                "the audit file does not verify: {}",
                report.problem.as_deref().unwrap_or_default()
            ),
            super::failure::EXIT_FAILED,
        ))
    }
}
