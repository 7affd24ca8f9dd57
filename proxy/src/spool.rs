//! The audit pipeline: every injection's `secret.read` event reaches the control plane
//! (`POST /v1/sidecar/audit`, batched), and survives the control plane being down.
//!
//! Why this shape: auditing must fail closed (docs/architecture.md "Audit") without putting a network
//! call on the request path. [`AuditPipeline::record`] (or [`AuditPipeline::reserve`] before
//! injecting, then [`Permit::record`]) only does a little accounting and a channel send; a
//! background worker batches events to an [`AuditSink`]. When the sink fails, the batch goes
//! to a bounded JSON Lines spool file (fsynced, mode 0600), replayed in order — before any newer
//! event — once the sink works again, and replayed at start-up after a restart.
//!
//! Bound: every event not yet accepted by the sink (queued in memory *or* spooled) counts its
//! JSON-line size against `max_bytes`. When the next event would not fit, `record`/`reserve`
//! return [`SpoolFull`] and the caller refuses the injection (503) *before* it happens. A
//! reservation is an estimate ([`RESERVED_EVENT_BYTES`]) settled to the real size on record,
//! so the bound may be exceeded by at most one event per outstanding permit.
//!
//! No event can poison the spool (block it forever, filling it until every injection is
//! refused). Every event is capped field by field when recorded (and when loaded from a spool
//! file), so it always fits a request ([`bound`] documents the caps); batches are cut by bytes
//! below the control plane's body limit as well as by count. What the sink still refuses is
//! sorted by [`SinkErrorKind`]:
//!
//! * [`Unavailable`](SinkErrorKind::Unavailable) (network errors, 5xx, 408, 429) and
//!   [`Unauthorized`](SinkErrorKind::Unauthorized) (401, 403): the batch is kept and retried
//!   with backoff, in order — fail closed, as before;
//! * [`TooLarge`](SinkErrorKind::TooLarge) (413) and [`Rejected`](SinkErrorKind::Rejected)
//!   (any other 4xx): the control plane takes a batch all or nothing, so the batch is split in
//!   halves and each half resent, down to single events. A single event it still refuses is
//!   dead-lettered only when the refusal is evidently about that event: another piece of the
//!   same batch was accepted. It then moves to the dead-letter file next to the spool
//!   ([`DEAD_LETTER_SUFFIX`](dead_letter::DEAD_LETTER_SUFFIX)), is counted in [`SpoolStats::dead_lettered`], and is reported to
//!   the control plane as one [`audit_dropped`](SidecarAuditEvent::audit_dropped) event
//!   carrying the count, which it records as `audit.dropped` in the hash-chained log. So an
//!   event is either delivered or dead-lettered *and* its loss is audited; none is silently
//!   dropped (`dropped` stays 0). If the dead-letter file cannot be written or is full, the
//!   events stay in the spool (fail closed).
//!
//! A 4xx is not always about the events: an L7 proxy in front of the control plane answering
//! 400/404, a request format the control plane no longer takes after an upgrade, or a
//! constraint violation mapped to 409 refuse *every* batch. Dead-lettering then would turn
//! fail-closed into fail-open (injections continuing, audited nowhere, until the dead-letter
//! file filled). So when every piece of a batch is refused, down to single events, or the
//! `audit_dropped` report itself is refused (it is never dead-lettered), the sink is treated
//! as unavailable: nothing is dead-lettered, the events stay in the spool in order and are
//! retried at the slowest backoff with small probe batches, an error is logged and
//! [`SpoolStats::refused_whole`] counts it. The spool fills and injections get 503
//! `audit_unavailable` until the control plane accepts events again; then everything is
//! delivered in order. The cost: an event refused on its own while alone in its batch (no
//! sibling to compare with) waits in the spool until the next event arrives; the next retry
//! sends both, and the accepted one proves the refusal specific.
//!
//! Delivery is at-least-once: spooled events leave the file only after the sink accepted them
//! (or they were dead-lettered), so a crash between that and the file rewrite sends them again
//! after restart.

pub mod bound;
mod dead_letter;
mod file;
mod worker;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use agent_secret_core::api::{SidecarAuditEvent, SidecarAuditEventRef};
use tokio::sync::{mpsc, oneshot};

pub use file::SpoolError;
pub use worker::AuditWorker;

use bound::Queued;
use file::SpoolFile;

/// What a permit reserves before the event's real size is known; typical events are
/// 250–400 bytes, capped ones at most [`bound::MAX_EVENT_BYTES`].
pub const RESERVED_EVENT_BYTES: u64 = 1024;

/// Refusal events may fill at most 1/`REFUSAL_SHARE` of the spool; the rest is kept for the
/// `secret.read` events of injections.
pub const REFUSAL_SHARE: u64 = 4;

/// Where batches go: the control plane's `POST /v1/sidecar/audit`, or a fake in tests.
#[async_trait::async_trait]
pub trait AuditSink: Send + Sync + 'static {
    /// Deliver one batch. `Ok` means durably accepted. Implementations bound their own time
    /// (HTTP timeouts): the worker sends one batch at a time.
    async fn send(&self, batch: &AuditBody) -> Result<(), SinkError>;
}

/// One batch as the JSON body of `POST /v1/sidecar/audit` (a
/// [`SidecarAuditBatch`](agent_secret_core::api::SidecarAuditBatch)), built
/// from the events' JSON as it was encoded when they were recorded: an event is serialized
/// once, on the request path, and never again.
#[derive(Debug, Clone)]
pub struct AuditBody(pub(crate) bytes::Bytes);

impl AuditBody {
    /// The body, shared (cloning it copies nothing).
    pub fn bytes(&self) -> bytes::Bytes {
        self.0.clone()
    }

    /// The batch decoded, for the tests' sink.
    #[cfg(test)]
    pub(crate) fn decode(&self) -> serde_json::Result<agent_secret_core::api::SidecarAuditBatch> {
        serde_json::from_slice(&self.0)
    }
}

/// The sink did not accept a batch; [`kind`](Self::kind) decides what happens to it (see the
/// module docs).
#[derive(Debug, Clone, thiserror::Error)]
#[error("audit sink refused the batch: {message}")]
pub struct SinkError {
    pub kind: SinkErrorKind,
    /// The HTTP status, when the sink answered one (written to the dead-letter file).
    pub status: Option<u16>,
    /// Must not contain secret material (it is logged and dead-lettered).
    pub message: String,
}

/// How the pipeline treats a refused batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkErrorKind {
    /// Down, overloaded or unreachable: keep the batch, retry with growing backoff.
    Unavailable,
    /// Our credentials were refused: keep the batch, retry at the slowest pace (an operator
    /// must fix the key; injecting unaudited meanwhile is not an option).
    Unauthorized,
    /// The body was too large (413): split the batch.
    TooLarge,
    /// The batch will not be accepted as it is (another 4xx): split it, and dead-letter the
    /// single events still refused while other pieces are accepted (if every piece is
    /// refused, retry like [`Unavailable`](Self::Unavailable)).
    Rejected,
}

impl SinkErrorKind {
    /// The treatment of an HTTP status other than 2xx.
    pub fn from_status(status: u16) -> SinkErrorKind {
        match status {
            401 | 403 => SinkErrorKind::Unauthorized,
            413 => SinkErrorKind::TooLarge,
            // Request timeout and rate limiting say "try again later".
            408 | 429 => SinkErrorKind::Unavailable,
            400..=499 => SinkErrorKind::Rejected,
            _ => SinkErrorKind::Unavailable,
        }
    }
}

impl SinkError {
    /// A failure without an answer (connection refused, timeout).
    pub fn unavailable(message: impl Into<String>) -> SinkError {
        SinkError {
            kind: SinkErrorKind::Unavailable,
            status: None,
            message: message.into(),
        }
    }

    /// The sink answered `status`.
    pub fn status(status: u16, message: impl Into<String>) -> SinkError {
        SinkError {
            kind: SinkErrorKind::from_status(status),
            status: Some(status),
            message: message.into(),
        }
    }
}

/// No room for another event: refuse the injection (503). Also returned after
/// [`shutdown`](AuditPipeline::shutdown), when the pipeline can no longer promise delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the audit spool is full")]
pub struct SpoolFull;

/// Tunables, usually from the sidecar's `[audit]` config.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// Spool file, or an existing directory to hold [`SPOOL_FILE_NAME`](file::SPOOL_FILE_NAME).
    pub path: PathBuf,
    /// Bound on events not yet accepted by the sink (memory + file), in JSON-line bytes.
    pub max_bytes: u64,
    /// Most events per batch sent to the sink (at most
    /// [`agent_secret_core::api::MAX_SIDECAR_AUDIT_BATCH_EVENTS`]); batches are also cut by
    /// bytes ([`bound::MAX_BATCH_BYTES`]).
    pub batch_size: usize,
    /// Longest wait before a partial batch is sent.
    pub flush_interval: Duration,
}

/// A snapshot of the pipeline's counters, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Events in memory waiting for their first delivery attempt.
    pub queued: u64,
    /// Events in the spool file waiting for the sink.
    pub spooled: u64,
    /// Events the sink accepted since start.
    pub sent: u64,
    /// Events lost. Always 0: the pipeline refuses injections instead of dropping events, and
    /// what the control plane refuses is dead-lettered and reported, not lost.
    pub dropped: u64,
    /// Events the control plane refused on their own, moved to the dead-letter file since start.
    pub dead_lettered: u64,
    /// Times since start the control plane refused a batch whole (every piece, down to single
    /// events) or refused a loss report: the events were kept and retried, not dead-lettered.
    /// Anything above 0 that keeps growing means it refuses every request (see the module docs).
    pub refused_whole: u64,
    /// Events whose fields were capped to fit a request since start (including on load).
    pub truncated: u64,
    /// Batches the sink refused since start.
    pub send_failures: u64,
    /// Bytes counted against the bound (queued + spooled + reserved).
    pub used_bytes: u64,
    pub max_bytes: u64,
}

/// Handle to the audit pipeline; cheap to clone.
#[derive(Clone)]
pub struct AuditPipeline {
    inner: Arc<Inner>,
}

/// Room for one event, taken before injecting. Dropping it unused gives the room back.
pub struct Permit {
    inner: Arc<Inner>,
    armed: bool,
}

pub(crate) struct Inner {
    tx: mpsc::UnboundedSender<Msg>,
    used: AtomicU64,
    max: u64,
    closed: AtomicBool,
    queued: AtomicU64,
    spooled: AtomicU64,
    sent: AtomicU64,
    send_failures: AtomicU64,
    dead_lettered: AtomicU64,
    refused_whole: AtomicU64,
    truncated: AtomicU64,
    spool: Mutex<SpoolFile>,
}

pub(crate) enum Msg {
    Event(Queued),
    Flush(oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

impl AuditPipeline {
    /// Open the spool (replaying what a previous run left) and spawn the worker on the
    /// current tokio runtime.
    pub fn start(
        config: SpoolConfig,
        sink: Arc<dyn AuditSink>,
    ) -> Result<AuditPipeline, SpoolError> {
        let (pipeline, worker) = AuditPipeline::open(config, sink)?;
        tokio::spawn(worker.run());
        Ok(pipeline)
    }

    /// Like [`start`](Self::start), returning the worker for the caller to run (e.g. in a
    /// pingora background service).
    pub fn open(
        config: SpoolConfig,
        sink: Arc<dyn AuditSink>,
    ) -> Result<(AuditPipeline, AuditWorker), SpoolError> {
        let spool = SpoolFile::open(&config.path)?;
        if !spool.is_empty() {
            tracing::info!(
                events = spool.len(),
                file = %spool.path().display(),
                "replaying audit events spooled by a previous run"
            );
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            tx,
            used: AtomicU64::new(spool.bytes()),
            max: config.max_bytes,
            closed: AtomicBool::new(false),
            queued: AtomicU64::new(0),
            spooled: AtomicU64::new(spool.len() as u64),
            sent: AtomicU64::new(0),
            send_failures: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            refused_whole: AtomicU64::new(0),
            truncated: AtomicU64::new(spool.truncated_on_load()),
            spool: Mutex::new(spool),
        });
        let worker = AuditWorker::new(Arc::clone(&inner), rx, sink, &config);
        Ok((AuditPipeline { inner }, worker))
    }

    /// Queue an event if it fits in the bound. Cheap and non-blocking.
    pub fn record(&self, event: SidecarAuditEvent) -> Result<(), SpoolFull> {
        let queued = self.inner.capped(&event.borrowed());
        self.inner.take(queued.bytes)?;
        self.inner.enqueue(queued);
        Ok(())
    }

    /// Reserve room for one event before injecting; record it through the permit.
    pub fn reserve(&self) -> Result<Permit, SpoolFull> {
        self.inner.take(RESERVED_EVENT_BYTES)?;
        Ok(Permit {
            inner: Arc::clone(&self.inner),
            armed: true,
        })
    }

    /// Reserve room for `events` events at once (all or nothing), for adapters that count.
    /// Pair with [`release`](Self::release) and [`record_reserved`](Self::record_reserved).
    pub fn try_reserve(&self, events: usize) -> bool {
        self.inner
            .take(RESERVED_EVENT_BYTES.saturating_mul(events as u64))
            .is_ok()
    }

    /// Reserve room for one *refusal* event: only while the spool is under
    /// [`REFUSAL_SHARE`] full. Refusals cost the sender nothing (no token is needed to be
    /// refused), so without this share a local flood of refused requests could fill the spool
    /// and turn every injection into 503 `audit_unavailable`.
    pub fn try_reserve_refusal(&self) -> bool {
        self.inner
            .take_within(RESERVED_EVENT_BYTES, self.inner.max / REFUSAL_SHARE)
            .is_ok()
    }

    /// Give back room for `events` reserved events that will not be recorded.
    pub fn release(&self, events: usize) {
        self.inner
            .give_back(RESERVED_EVENT_BYTES.saturating_mul(events as u64));
    }

    /// Record an event into room reserved by [`try_reserve`](Self::try_reserve).
    pub fn record_reserved(&self, event: &SidecarAuditEventRef<'_>) {
        self.inner.record_reserved(event);
    }

    /// Deliver (or spool) everything recorded so far, retrying the spool now even if the
    /// sink recently failed. Returns when that attempt is over.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Refuse new events, make one last delivery attempt, spool the rest and stop the worker.
    /// Events recorded through permits still outstanding go straight to the spool file.
    pub async fn shutdown(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        let (tx, rx) = oneshot::channel();
        if self.inner.tx.send(Msg::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    pub fn stats(&self) -> SpoolStats {
        let i = &self.inner;
        SpoolStats {
            queued: i.queued.load(Ordering::Relaxed),
            spooled: i.spooled.load(Ordering::Relaxed),
            sent: i.sent.load(Ordering::Relaxed),
            dropped: 0,
            dead_lettered: i.dead_lettered.load(Ordering::Relaxed),
            refused_whole: i.refused_whole.load(Ordering::Relaxed),
            truncated: i.truncated.load(Ordering::Relaxed),
            send_failures: i.send_failures.load(Ordering::Relaxed),
            used_bytes: i.used.load(Ordering::Relaxed),
            max_bytes: i.max,
        }
    }
}

impl Permit {
    /// Record the event this permit reserved room for.
    pub fn record(mut self, event: SidecarAuditEvent) {
        self.armed = false;
        self.inner.record_reserved(&event.borrowed());
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.armed {
            self.inner.give_back(RESERVED_EVENT_BYTES);
        }
    }
}

impl Inner {
    /// Count `bytes` against the bound, or refuse.
    fn take(&self, bytes: u64) -> Result<(), SpoolFull> {
        self.take_within(bytes, self.max)
    }

    /// Take `bytes` only while the bound stays at or below `limit` (≤ `max`).
    fn take_within(&self, bytes: u64, limit: u64) -> Result<(), SpoolFull> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(SpoolFull);
        }
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= limit)
            })
            .map(|_| ())
            .map_err(|_| SpoolFull)
    }

    pub(crate) fn give_back(&self, bytes: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(bytes))
            });
    }

    /// Settle a reservation to the event's real size (the injection happened: never refuse).
    fn record_reserved(&self, event: &SidecarAuditEventRef<'_>) {
        let queued = self.capped(event);
        if queued.bytes > RESERVED_EVENT_BYTES {
            self.used
                .fetch_add(queued.bytes - RESERVED_EVENT_BYTES, Ordering::AcqRel);
        } else {
            self.give_back(RESERVED_EVENT_BYTES - queued.bytes);
        }
        self.enqueue(queued);
    }

    /// Cap the event's fields so it always fits a request, counting it if something was cut.
    pub(crate) fn capped(&self, event: &SidecarAuditEventRef<'_>) -> Queued {
        let (queued, truncated) = Queued::capped(event);
        if truncated {
            self.truncated.fetch_add(1, Ordering::Relaxed);
        }
        queued
    }

    fn enqueue(&self, queued: Queued) {
        self.queued.fetch_add(1, Ordering::Relaxed);
        if let Err(mpsc::error::SendError(Msg::Event(queued))) = self.tx.send(Msg::Event(queued)) {
            // The worker has stopped (after shutdown): keep the event in the spool file.
            self.queued.fetch_sub(1, Ordering::Relaxed);
            self.spooled.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = self.lock_spool().append(vec![queued]) {
                tracing::error!(error = %e, "cannot write an audit event to the spool after shutdown");
            }
        }
    }

    pub(crate) fn lock_spool(&self) -> MutexGuard<'_, SpoolFile> {
        self.spool.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
