//! The audit pipeline: every injection's `secret.read` event reaches the control plane
//! (`POST /v1/sidecar/audit`, batched), and survives the control plane being down.
//!
//! Why this shape: auditing must fail closed (DESIGN.md "Audit") without putting a network
//! call on the request path. [`AuditPipeline::record`] (or [`AuditPipeline::reserve`] before
//! injecting, then [`Permit::record`]) only does a little accounting and a channel send; a
//! background worker batches events to an [`AuditSink`]. When the sink fails, the batch goes
//! to a bounded JSON Lines spool file (fsynced, mode 0600), replayed in order — before any newer
//! event — once the sink works again, and replayed at start-up after a restart.
//!
//! Bound: every event not yet accepted by the sink (queued in memory *or* spooled) counts its
//! JSON-line size against `max_bytes`. When the next event would not fit, `record`/`reserve`
//! return [`SpoolFull`] and the caller refuses the injection (503) *before* it happens. Nothing
//! is ever dropped (`dropped` is always 0): a reservation is an estimate
//! ([`RESERVED_EVENT_BYTES`]) settled to the real size on record, so the bound may be exceeded
//! by at most one oversized event per outstanding permit.
//!
//! Delivery is at-least-once: spooled events leave the file only after the sink accepted them,
//! so a crash between acceptance and the file rewrite sends them again after restart.

mod file;
mod worker;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use agent_secret_core::api::{SidecarAuditBatch, SidecarAuditEvent};
use tokio::sync::{mpsc, oneshot};

pub use file::{SpoolError, SPOOL_FILE_NAME};
pub use worker::AuditWorker;

use file::{Queued, SpoolFile};

/// What a permit reserves before the event's real size is known; typical events are
/// 250–400 bytes.
pub const RESERVED_EVENT_BYTES: u64 = 1024;

/// Where batches go: the control plane's `POST /v1/sidecar/audit`, or a fake in tests.
#[async_trait::async_trait]
pub trait AuditSink: Send + Sync + 'static {
    /// Deliver one batch. `Ok` means durably accepted. Implementations bound their own time
    /// (HTTP timeouts): the worker sends one batch at a time.
    async fn send(&self, batch: &SidecarAuditBatch) -> Result<(), SinkError>;
}

/// The sink did not accept a batch. Either way the batch is kept and retried (fail closed);
/// `retryable: false` (e.g. a 4xx) is logged as an error and retried at the slowest pace.
#[derive(Debug, Clone, thiserror::Error)]
#[error("audit sink refused the batch: {message}")]
pub struct SinkError {
    pub retryable: bool,
    /// Must not contain secret material (it is logged).
    pub message: String,
}

/// No room for another event: refuse the injection (503). Also returned after
/// [`shutdown`](AuditPipeline::shutdown), when the pipeline can no longer promise delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the audit spool is full")]
pub struct SpoolFull;

/// Tunables, usually from the sidecar's `[audit]` config.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// Spool file, or an existing directory to hold [`SPOOL_FILE_NAME`].
    pub path: PathBuf,
    /// Bound on events not yet accepted by the sink (memory + file), in JSON-line bytes.
    pub max_bytes: u64,
    /// Events per batch sent to the sink.
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
    /// Events lost. Always 0: the pipeline refuses instead of dropping.
    pub dropped: u64,
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
            spool: Mutex::new(spool),
        });
        let worker = AuditWorker::new(Arc::clone(&inner), rx, sink, &config);
        Ok((AuditPipeline { inner }, worker))
    }

    /// Queue an event if it fits in the bound. Cheap and non-blocking.
    pub fn record(&self, event: SidecarAuditEvent) -> Result<(), SpoolFull> {
        let queued = Queued::new(event);
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

    /// Give back room for `events` reserved events that will not be recorded.
    pub fn release(&self, events: usize) {
        self.inner
            .give_back(RESERVED_EVENT_BYTES.saturating_mul(events as u64));
    }

    /// Record an event into room reserved by [`try_reserve`](Self::try_reserve).
    pub fn record_reserved(&self, event: SidecarAuditEvent) {
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
        self.inner.record_reserved(event);
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
        if self.closed.load(Ordering::SeqCst) {
            return Err(SpoolFull);
        }
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.max)
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
    fn record_reserved(&self, event: SidecarAuditEvent) {
        let queued = Queued::new(event);
        if queued.bytes > RESERVED_EVENT_BYTES {
            self.used
                .fetch_add(queued.bytes - RESERVED_EVENT_BYTES, Ordering::AcqRel);
        } else {
            self.give_back(RESERVED_EVENT_BYTES - queued.bytes);
        }
        self.enqueue(queued);
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
