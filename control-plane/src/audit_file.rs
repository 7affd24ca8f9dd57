//! Verifying an exported audit log with nothing else: the JSON Lines of
//! `GET /v1/audit?format=jsonl` (or `ass audit export`), read line by line at constant memory.
//!
//! Each line is turned back into the event it describes and its hash recomputed with the same
//! canonical encoding the store used (`crate::audit`), then chained: an edited event fails its
//! own hash, a deleted one leaves a gap in `seq`, a reordered one breaks `seq` or `prev_hash`.
//! An export that starts after the first event is checked from where it starts (the report
//! says so: what came before is not covered).

use std::collections::HashMap;
use std::io::BufRead;

use agent_secret_core::ids::{AuditEventId, TenantId};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::audit::{Actor, AuditDraft, AuditEvent, AuditEventType, ChainVerifier};
use crate::audit_checkpoint::{CheckpointVerifier, PublicKeys, Statement};
use crate::service::audit_log::AuditEventView;

/// What `ass audit verify --offline` prints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileReport {
    pub valid: bool,
    pub events_checked: i64,
    /// The first position in the file: 1 when it starts at the beginning of the chain.
    pub first_seq: Option<i64>,
    pub last_seq: Option<i64>,
    /// Hex hash of the last event checked: compare it with a head recorded elsewhere.
    pub head_hash: Option<String>,
    pub first_bad_seq: Option<i64>,
    /// The id of the first bad event, when its line could be read.
    pub first_bad_id: Option<String>,
    /// 1-based line of the first problem.
    pub first_bad_line: Option<u64>,
    pub problem: Option<String>,
    /// Checkpoints whose position and head held (and signature, when keys were given).
    pub checkpoints_verified: i64,
    pub last_checkpoint_seq: Option<i64>,
    /// Whether checkpoint signatures were checked (a public key was given).
    pub signatures_checked: bool,
    /// Anchored heads (`--anchors`) found in the file with the anchored hash.
    pub anchors_matched: i64,
}

impl FileReport {
    fn broken(line: Option<u64>, problem: String) -> FileReport {
        FileReport {
            valid: false,
            events_checked: 0,
            first_seq: None,
            last_seq: None,
            head_hash: None,
            first_bad_seq: None,
            first_bad_id: None,
            first_bad_line: line,
            problem: Some(problem),
            checkpoints_verified: 0,
            last_checkpoint_seq: None,
            signatures_checked: false,
            anchors_matched: 0,
        }
    }
}

/// Why a line is not an event.
fn parse_line(line: &str) -> Result<(AuditEventView, AuditEvent), String> {
    let view: AuditEventView =
        serde_json::from_str(line).map_err(|e| format!("not an exported audit event: {e}"))?;
    let event = event_of(&view)?;
    Ok((view, event))
}

fn hash_of(hex_text: &str, what: &str) -> Result<[u8; 32], String> {
    let bytes = hex::decode(hex_text).map_err(|_| format!("{what} is not hex"))?;
    bytes
        .try_into()
        .map_err(|_| format!("{what} is not 32 bytes"))
}

/// The stored event an exported view stands for.
pub fn event_of(view: &AuditEventView) -> Result<AuditEvent, String> {
    let id: AuditEventId = view.id.parse().map_err(|_| "id is not an event id")?;
    let tenant_id: TenantId = view
        .tenant_id
        .parse()
        .map_err(|_| "tenant_id is not a tenant id")?;
    let event_type: AuditEventType = view.event_type.parse().map_err(|e| format!("{e}"))?;
    let occurred_at: DateTime<Utc> = DateTime::parse_from_rfc3339(&view.timestamp)
        .map_err(|_| "timestamp is not RFC 3339")?
        .with_timezone(&Utc);
    Ok(AuditEvent {
        id,
        tenant_id,
        seq: view.seq,
        draft: AuditDraft {
            event_type,
            actor: Actor(view.actor.clone()),
            ip: view.ip.clone(),
            user_agent: view.user_agent.clone(),
            path: view.path.clone(),
            destination_host: view.destination_host.clone(),
            success: view.success,
            reason: view.reason.clone(),
            occurred_at,
        },
        prev_hash: hash_of(&view.prev_hash, "prev_hash")?,
        hash: hash_of(&view.hash, "hash")?,
    })
}

/// Checks every line of `input`, and every checkpoint in it (signatures too with `keys`);
/// stops at the first problem, which the report names.
pub fn verify_jsonl(input: impl BufRead, keys: Option<PublicKeys>) -> std::io::Result<FileReport> {
    verify_jsonl_anchored(input, keys, &[])
}

/// [`verify_jsonl`], and the file must also hold exactly the heads of `anchors`, checkpoint
/// statements kept outside the database (`[audit] checkpoint_file`): each anchored position
/// the file covers must have the anchored hash, and the file must not end before the last
/// anchor. So a checkpoint event deleted together with a rewritten past, or a cut-off log,
/// shows up. Anchors are signature-checked too when `keys` are given.
pub fn verify_jsonl_anchored(
    input: impl BufRead,
    keys: Option<PublicKeys>,
    anchors: &[Statement],
) -> std::io::Result<FileReport> {
    let mut heads: HashMap<i64, &Statement> = HashMap::new();
    for (i, anchor) in anchors.iter().enumerate() {
        if let Some(keys) = &keys {
            let key = keys.get(&anchor.key_id);
            let checked = key.map(|k| anchor.verify_signature(k));
            if !matches!(checked, Some(Ok(()))) {
                return Ok(FileReport::broken(
                    None,
                    format!(
                        "anchor {} (seq {}) is not signed by a given key",
                        i + 1,
                        anchor.seq
                    ),
                ));
            }
        }
        heads.insert(anchor.seq, anchor);
    }
    let mut checkpoints = CheckpointVerifier::new(keys);
    let mut report = FileReport {
        anchors_matched: 0,
        checkpoints_verified: 0,
        last_checkpoint_seq: None,
        signatures_checked: checkpoints.checks_signatures(),
        valid: true,
        events_checked: 0,
        first_seq: None,
        last_seq: None,
        head_hash: None,
        first_bad_seq: None,
        first_bad_id: None,
        first_bad_line: None,
        problem: None,
    };
    let mut verifier: Option<ChainVerifier> = None;
    let mut tenant: Option<TenantId> = None;
    for (n, line) in input.lines().enumerate() {
        let line = line?;
        let number = n as u64 + 1;
        if line.trim().is_empty() {
            continue;
        }
        let fail = |report: &mut FileReport, seq, id, problem: String| {
            report.valid = false;
            report.first_bad_seq = seq;
            report.first_bad_id = id;
            report.first_bad_line = Some(number);
            report.problem = Some(problem);
        };
        let (view, event) = match parse_line(&line) {
            Ok(parsed) => parsed,
            Err(problem) => {
                fail(&mut report, None, None, problem);
                return Ok(report);
            }
        };
        if *tenant.get_or_insert(event.tenant_id) != event.tenant_id {
            let problem = "the file mixes events of two tenants".to_owned();
            fail(&mut report, Some(event.seq), Some(view.id), problem);
            return Ok(report);
        }
        let chain = verifier.get_or_insert_with(|| {
            report.first_seq = Some(event.seq);
            ChainVerifier::starting_at(event.seq, event.prev_hash)
        });
        chain.push(&event);
        if let Some((seq, problem)) = chain.failure() {
            fail(&mut report, Some(seq), Some(view.id), problem.to_owned());
            return Ok(report);
        }
        checkpoints.push(&event);
        if let Some((seq, problem)) = checkpoints.failure() {
            fail(&mut report, Some(*seq), Some(view.id), problem.to_string());
            return Ok(report);
        }
        report.checkpoints_verified = checkpoints.verified;
        report.last_checkpoint_seq = checkpoints.last_verified_seq;
        if let Some(anchor) = heads.get(&event.seq) {
            if anchor.tenant_id != event.tenant_id.to_string() || anchor.head != view.hash {
                let problem = format!(
                    "event seq {} is not the one anchored outside the database",
                    event.seq
                );
                fail(&mut report, Some(event.seq), Some(view.id), problem);
                return Ok(report);
            }
            report.anchors_matched += 1;
        }
        report.events_checked += 1;
        report.last_seq = Some(event.seq);
        report.head_hash = Some(view.hash);
    }
    let last = report.last_seq.unwrap_or(0);
    if let Some(beyond) = heads.keys().filter(|seq| **seq > last).min() {
        report.valid = false;
        report.first_bad_seq = Some(last + 1);
        report.problem = Some(format!(
            "the log ends at seq {last}, before the checkpoint anchored at seq {beyond}: \
             events were removed from its end"
        ));
    }
    Ok(report)
}
