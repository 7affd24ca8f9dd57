//! The proxy's view of auditing: reserve room before injecting, record after.
//!
//! Audit fails closed (docs/architecture.md "Audit"): a secret is substituted only once room for its
//! `secret.read` event is reserved in the spool, so a full spool refuses injections with 503
//! `audit_unavailable` instead of injecting unaudited. Refusals are recorded best effort — the
//! request is refused either way — and only into the first quarter of the spool, so a flood of
//! requests refused for free cannot crowd out the events of injections. The spool itself
//! (batching, persistence, delivery to `POST /v1/sidecar/audit`) lives in [`crate::spool`];
//! this module only adapts it to the two calls the request path makes.

use std::sync::Arc;

use agent_secret_core::api::{SidecarAuditEvent, SidecarAuditEventRef};

use crate::control_plane::ControlPlane;
use crate::spool::{AuditBody, AuditPipeline, AuditSink, SinkError};

/// Where audit events go.
pub trait AuditBackend: Send + Sync + 'static {
    /// Reserve room for `count` events; false when the spool is full.
    fn try_reserve(&self, count: usize) -> bool;
    /// Give back room reserved but not used.
    fn release(&self, count: usize);
    /// Record an event into previously reserved room (encoded before this returns).
    fn record_reserved(&self, event: &SidecarAuditEventRef<'_>);
    /// Reserve room for one refusal event, which may use only part of the room (see
    /// `spool::REFUSAL_SHARE`); false when that part is full.
    fn try_reserve_refusal(&self) -> bool {
        self.try_reserve(1)
    }
}

/// Handle used by the request path.
#[derive(Clone)]
pub struct Audit {
    backend: Arc<dyn AuditBackend>,
}

/// Room for a number of events, reserved before injecting. Unused room is released on drop.
pub struct AuditPermit {
    backend: Arc<dyn AuditBackend>,
    remaining: usize,
}

/// The spool cannot take more events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the audit spool is full")]
pub struct AuditFull;

impl Audit {
    pub fn new(backend: Arc<dyn AuditBackend>) -> Audit {
        Audit { backend }
    }

    /// Reserve room for `count` events before injecting.
    pub fn reserve(&self, count: usize) -> Result<AuditPermit, AuditFull> {
        if self.backend.try_reserve(count) {
            Ok(AuditPermit {
                backend: self.backend.clone(),
                remaining: count,
            })
        } else {
            Err(AuditFull)
        }
    }

    /// Record a refusal if there is room.
    pub fn record_denial(&self, event: &SidecarAuditEvent) -> Result<(), AuditFull> {
        if !self.backend.try_reserve_refusal() {
            return Err(AuditFull);
        }
        self.backend.record_reserved(&event.borrowed());
        Ok(())
    }
}

impl AuditPermit {
    /// Record events into the reserved room (at most as many as reserved).
    pub fn record<'e>(mut self, events: impl IntoIterator<Item = SidecarAuditEventRef<'e>>) {
        for event in events.into_iter().take(self.remaining) {
            self.backend.record_reserved(&event);
            self.remaining -= 1;
        }
    }
}

impl Drop for AuditPermit {
    fn drop(&mut self) {
        if self.remaining > 0 {
            self.backend.release(self.remaining);
        }
    }
}

impl AuditBackend for AuditPipeline {
    fn try_reserve(&self, count: usize) -> bool {
        AuditPipeline::try_reserve(self, count)
    }
    fn release(&self, count: usize) {
        AuditPipeline::release(self, count)
    }
    fn record_reserved(&self, event: &SidecarAuditEventRef<'_>) {
        AuditPipeline::record_reserved(self, event)
    }
    fn try_reserve_refusal(&self) -> bool {
        AuditPipeline::try_reserve_refusal(self)
    }
}

/// Batches go to `POST /v1/sidecar/audit`. The answer's status decides what the spool does
/// with a refused batch (retry, split, dead-letter: [`crate::spool::SinkErrorKind`]); a
/// failure without an answer is retried.
#[async_trait::async_trait]
impl AuditSink for ControlPlane {
    async fn send(&self, batch: &AuditBody) -> Result<(), SinkError> {
        self.post_audit(batch.bytes()).await.map_err(|e| {
            match e.status().filter(|s| !s.is_server_error()) {
                Some(status) => SinkError::status(status.as_u16(), e.to_string()),
                None => SinkError::unavailable(e.to_string()),
            }
        })
    }
}
