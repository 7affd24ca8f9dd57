//! Audit retention: the archive an operator runs as the database's owner
//! (`agent-secret-store audit archive`, docs/operations.md "Audit retention").
//!
//! The service itself never deletes an audit event. An archive takes the oldest events of a
//! tenant's chain — a contiguous prefix, all older than `before`, none that a SIEM sink or the
//! anomaly alerts have not yet handled — verifies their chain (from genesis, or from the last
//! archive's marker), writes them as JSON Lines (the `GET /v1/audit?format=jsonl` shape, which
//! `audit verify --offline` checks), and only then, in one transaction, records a marker (the
//! range, the hash of its last event, the file's SHA-256), deletes the range and appends an
//! `audit.archived` event. Online verification starts from the latest marker, so the chain in
//! the database stays verifiable, and the archived files chain into each other and into it.

use std::io::Write;

use agent_secret_core::ids::TenantId;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::audit_log::AuditEventView;
use crate::audit::{now_micros, Actor, AuditDraft, AuditEventType, ChainVerifier};
use crate::store::{ArchiveMarker, AuditFilter, Store, StoreError};

/// Events read per query.
const PAGE: i64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("the chain is broken at seq {seq} ({problem}); nothing was archived")]
    Broken { seq: i64, problem: String },
    #[error("writing the archive file: {0}")]
    Write(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an archive did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ArchiveReport {
    pub tenant_id: String,
    pub first_seq: i64,
    pub through_seq: i64,
    pub events: i64,
    /// Of the file's bytes, as written.
    pub file_sha256: String,
    /// Why the archive stopped before `before`, when a consumer had not caught up
    /// (`sink:<name>` or `sink:.alerts`).
    pub held_back_by: Option<String>,
}

/// Archives the tenant's events older than `before` into `out` and deletes them from the
/// database; `None` when there is nothing to archive. `store` must be connected as the
/// tables' owner (`database.owner_url`); `actor` is who ran it.
pub async fn archive(
    store: &dyn Store,
    tenant: TenantId,
    before: DateTime<Utc>,
    actor: Actor,
    out: &mut (dyn Write + Send),
) -> Result<Option<ArchiveReport>, ArchiveError> {
    let previous = store.audit_archive(tenant).await?;
    let mut chain = match &previous {
        Some(m) => ChainVerifier::starting_at(m.through_seq + 1, m.through_hash),
        None => ChainVerifier::default(),
    };
    // Nothing a consumer still has to read may leave the database.
    let slowest = store
        .sink_cursors(tenant)
        .await?
        .into_iter()
        .min_by_key(|(_, seq)| *seq);
    let mut after = previous.as_ref().map_or(0, |m| m.through_seq);
    let mut hasher = Sha256::new();
    let mut first_seq = None;
    let mut last = None;
    let mut events = 0i64;
    let mut held_back_by = None;
    'pages: loop {
        let filter = AuditFilter {
            after_seq: Some(after),
            limit: Some(PAGE),
            ..AuditFilter::default()
        };
        let page = store.list_audit(tenant, &filter).await?;
        for event in &page {
            if event.draft.occurred_at >= before {
                break 'pages;
            }
            if let Some((sink, cursor)) = &slowest {
                if event.seq > *cursor {
                    held_back_by = Some(format!("sink:{sink}"));
                    break 'pages;
                }
            }
            chain.push(event);
            if let Some((seq, problem)) = chain.failure() {
                return Err(ArchiveError::Broken {
                    seq,
                    problem: problem.to_owned(),
                });
            }
            let mut line = serde_json::to_vec(&AuditEventView::from(event))
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            line.push(b'\n');
            out.write_all(&line)?;
            hasher.update(&line);
            first_seq.get_or_insert(event.seq);
            last = Some((event.seq, event.hash));
            events += 1;
            after = event.seq;
        }
        if (page.len() as i64) < PAGE {
            break;
        }
    }
    out.flush()?;
    let (Some(first_seq), Some((through_seq, through_hash))) = (first_seq, last) else {
        return Ok(None);
    };
    let file_sha256 = hex::encode(hasher.finalize());
    let marker = ArchiveMarker {
        first_seq,
        through_seq,
        through_hash,
        events,
        file_sha256: file_sha256.clone(),
        archived_at: now_micros(),
    };
    let audit = AuditDraft::new(AuditEventType::AuditArchived, actor).reason(format!(
        "events {first_seq} to {through_seq} ({events}) archived to a file with SHA-256 \
         {file_sha256}; the chain in the database continues from seq {through_seq}'s hash"
    ));
    store.archive_audit(tenant, &marker, audit).await?;
    Ok(Some(ArchiveReport {
        tenant_id: tenant.to_string(),
        first_seq,
        through_seq,
        events,
        file_sha256,
        held_back_by,
    }))
}
