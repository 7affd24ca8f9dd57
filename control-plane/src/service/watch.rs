//! What sidecars consume besides resolve: the change stream of their tenant, and the batched
//! `secret.read` events they report for each injection.

use agent_secret_core::api::{
    ErrorCode, SidecarAuditAccepted, SidecarAuditBatch, SidecarAuditEvent, SidecarEventKind,
    WatchEvent, AUDIT_DROPPED_REASON,
};
use futures::stream::{self, Stream};
use tokio::sync::broadcast::error::RecvError;

use super::auth::SidecarPrincipal;
use super::{App, ServiceError, ServiceResult};
use crate::audit::{Actor, AuditDraft, AuditEventType};
use crate::events::Signal;

/// Most events one audit batch may carry.
pub const MAX_AUDIT_BATCH: usize = 500;
/// Longest free-text field a sidecar may report (user agents are truncated to this).
const MAX_FIELD: usize = 512;

/// The tenant's events, in order, and `resync` whenever events may have been missed: this
/// replica's PostgreSQL listener reconnected (see `crate::events`), or this subscriber fell
/// behind its buffer. The sidecar flushes every cached grant and value on `resync`. The stream
/// ends when this sidecar's key is revoked (its reconnect is then refused).
pub fn subscribe(app: &App, sidecar: SidecarPrincipal) -> impl Stream<Item = WatchEvent> + Send {
    let receiver = app.events.subscribe();
    let resyncs = app.events.resyncs();
    stream::unfold(
        (receiver, resyncs),
        move |(mut receiver, mut resyncs)| async move {
            loop {
                let received = tokio::select! {
                    // A resync goes out before any event received after it.
                    biased;
                    changed = resyncs.changed() => match changed {
                        Ok(()) => return Some((WatchEvent::Resync, (receiver, resyncs))),
                        // The hub is gone.
                        Err(_) => return None,
                    },
                    received = receiver.recv() => received,
                };
                match received {
                    Ok(e) if e.tenant != sidecar.tenant => continue,
                    Ok(e) => match e.signal {
                        Signal::Watch(event) => return Some((event, (receiver, resyncs))),
                        Signal::SidecarRevoked(id) if id == sidecar.id => return None,
                        Signal::SidecarRevoked(_) => continue,
                    },
                    Err(RecvError::Lagged(missed)) => {
                        let id = sidecar.id;
                        tracing::warn!(missed, sidecar = %id, "watcher fell behind; resyncing");
                        return Some((WatchEvent::Resync, (receiver, resyncs)));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        },
    )
}

fn bounded(field: Option<String>) -> Option<String> {
    field.map(|s| {
        s.chars()
            .filter(|c| !c.is_control())
            .take(MAX_FIELD)
            .collect()
    })
}

fn draft(sidecar: SidecarPrincipal, e: SidecarAuditEvent) -> AuditDraft {
    if let Some(count) = e.dropped_count() {
        return AuditDraft {
            event_type: AuditEventType::AuditDropped,
            actor: sidecar.actor(),
            ip: None,
            user_agent: None,
            path: None,
            destination_host: None,
            success: false,
            reason: Some(format!(
                "{AUDIT_DROPPED_REASON}: {count} audit events this control plane refused were \
                 moved to the dead-letter file of sidecar {}",
                sidecar.id
            )),
            occurred_at: e.occurred_at.trunc_subsecs_micros(),
        };
    }
    let actor = match &e.token_id {
        Some(id) => Actor::new("token", id.chars().take(64).collect::<String>()),
        None => sidecar.actor(),
    };
    // A credential the sidecar turned down itself (malformed, missing) is a failed
    // authentication, like one the control plane turns down.
    let code = e.reason.as_deref().unwrap_or_default();
    let event_type = match e.kind {
        SidecarEventKind::SecretRead
            if !e.success
                && (code == ErrorCode::TokenInvalid.as_str()
                    || code == ErrorCode::Unauthenticated.as_str()) =>
        {
            AuditEventType::AuthFailed
        }
        SidecarEventKind::SecretRead => AuditEventType::SecretRead,
        SidecarEventKind::McpToolCalled => AuditEventType::McpToolCalled,
    };
    let reported = format!("reported by sidecar {}", sidecar.id);
    let reason = match bounded(e.reason) {
        Some(r) => format!("{r}; {reported}"),
        None => reported,
    };
    AuditDraft {
        event_type,
        actor,
        ip: bounded(e.client_ip),
        user_agent: bounded(e.user_agent),
        path: bounded(e.path),
        destination_host: bounded(e.destination_host),
        success: e.success,
        reason: Some(reason),
        occurred_at: e.occurred_at.trunc_subsecs_micros(),
    }
}

/// Appends the batch to the tenant's chain in one transaction: all events or none, so a
/// sidecar retrying a failed batch never duplicates part of it.
pub async fn ingest_audit(
    app: &App,
    sidecar: SidecarPrincipal,
    batch: SidecarAuditBatch,
) -> ServiceResult<SidecarAuditAccepted> {
    if batch.events.len() > MAX_AUDIT_BATCH {
        return Err(ServiceError::invalid(
            ErrorCode::InvalidRequest,
            format!("an audit batch holds at most {MAX_AUDIT_BATCH} events"),
        ));
    }
    let drafts: Vec<AuditDraft> = batch
        .events
        .into_iter()
        .map(|e| draft(sidecar, e))
        .collect();
    let accepted = drafts.len();
    if accepted > 0 {
        app.store.append_audit_batch(sidecar.tenant, drafts).await?;
    }
    Ok(SidecarAuditAccepted { accepted })
}

trait TruncMicros {
    fn trunc_subsecs_micros(self) -> Self;
}

impl TruncMicros for chrono::DateTime<chrono::Utc> {
    fn trunc_subsecs_micros(self) -> Self {
        chrono::SubsecRound::trunc_subsecs(self, 6)
    }
}
