//! The background half of the audit pipeline: batches queued events, sends them, spools
//! what the sink refuses and drains the spool — oldest first — when the sink recovers.
//!
//! One task does all of it, sending one batch at a time, so ordering is simple: while the
//! spool holds anything, new batches are appended behind it rather than sent ahead of it.
//! File I/O runs on the blocking pool so an fsync never stalls the proxy's runtime.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use agent_secret_core::api::SidecarAuditBatch;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::file::Queued;
use super::{AuditSink, Inner, Msg, SinkError, SpoolConfig};

const FIRST_RETRY: Duration = Duration::from_millis(200);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// Runs the pipeline; see [`AuditPipeline::open`](super::AuditPipeline::open).
pub struct AuditWorker {
    inner: Arc<Inner>,
    rx: mpsc::UnboundedReceiver<Msg>,
    sink: Arc<dyn AuditSink>,
    batch_size: usize,
    flush_interval: Duration,
    batch: Vec<Queued>,
    batch_deadline: Option<Instant>,
    /// When to retry the spool; `Some` whenever it is non-empty.
    retry_at: Option<Instant>,
    backoff: Duration,
}

impl AuditWorker {
    pub(crate) fn new(
        inner: Arc<Inner>,
        rx: mpsc::UnboundedReceiver<Msg>,
        sink: Arc<dyn AuditSink>,
        config: &SpoolConfig,
    ) -> AuditWorker {
        let spool_pending = !inner.lock_spool().is_empty();
        AuditWorker {
            inner,
            rx,
            sink,
            batch_size: config.batch_size.max(1),
            flush_interval: config.flush_interval,
            batch: Vec::new(),
            batch_deadline: None,
            retry_at: spool_pending.then(Instant::now),
            backoff: FIRST_RETRY,
        }
    }

    /// Run until [`shutdown`](super::AuditPipeline::shutdown) or until every handle is dropped.
    pub async fn run(mut self) {
        loop {
            let wake = match (self.batch_deadline, self.retry_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let sleep = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now));
            tokio::select! {
                msg = self.rx.recv() => match msg {
                    Some(Msg::Event(q)) => {
                        if self.batch.is_empty() {
                            self.batch_deadline = Some(Instant::now() + self.flush_interval);
                        }
                        self.batch.push(q);
                        if self.batch.len() >= self.batch_size {
                            self.deliver(false).await;
                        }
                    }
                    Some(Msg::Flush(reply)) => {
                        self.deliver(true).await;
                        let _ = reply.send(());
                    }
                    Some(Msg::Shutdown(reply)) => {
                        self.stop().await;
                        let _ = reply.send(());
                        return;
                    }
                    None => {
                        self.stop().await;
                        return;
                    }
                },
                () = sleep, if wake.is_some() => {
                    let now = Instant::now();
                    if self.batch_deadline.is_some_and(|d| d <= now) {
                        self.deliver(false).await;
                    } else if self.retry_at.is_some_and(|r| r <= now) {
                        self.drain_spool().await;
                    }
                }
            }
        }
    }

    /// Last attempt, then everything still pending goes to the spool file.
    async fn stop(&mut self) {
        self.rx.close();
        while let Some(msg) = self.rx.recv().await {
            match msg {
                Msg::Event(q) => self.batch.push(q),
                Msg::Flush(reply) | Msg::Shutdown(reply) => {
                    let _ = reply.send(());
                }
            }
        }
        self.deliver(true).await;
    }

    /// Send the current batch — after the spool, which goes first. `force` retries the
    /// spool even before its backoff expires.
    async fn deliver(&mut self, force: bool) {
        self.batch_deadline = None;
        let mut pending = std::mem::take(&mut self.batch);
        if !self.inner.lock_spool().is_empty() {
            let due = self.retry_at.is_none_or(|r| r <= Instant::now());
            if force || due {
                self.drain_spool().await;
            }
            if !self.inner.lock_spool().is_empty() {
                self.spool(pending).await;
                return;
            }
        }
        while !pending.is_empty() {
            let rest = pending.split_off(self.batch_size.min(pending.len()));
            let n = pending.len() as u64;
            match self.send(pending).await {
                Ok(()) => {
                    self.inner.queued.fetch_sub(n, Ordering::Relaxed);
                    pending = rest;
                }
                Err(mut refused) => {
                    refused.extend(rest);
                    self.spool(refused).await;
                    return;
                }
            }
        }
    }

    /// Send spooled events in order until the spool is empty or the sink fails.
    async fn drain_spool(&mut self) {
        let mut accepted_any = false;
        loop {
            let chunk = self.inner.lock_spool().take_front(self.batch_size);
            if chunk.is_empty() {
                break;
            }
            let n = chunk.len() as u64;
            let bytes = chunk.iter().map(|q| q.bytes).sum();
            match self.send(chunk).await {
                Ok(()) => {
                    self.inner.lock_spool().acknowledged(bytes);
                    self.inner.spooled.fetch_sub(n, Ordering::Relaxed);
                    accepted_any = true;
                }
                Err(chunk) => {
                    self.inner.lock_spool().put_front(chunk);
                    break;
                }
            }
        }
        if accepted_any {
            let inner = Arc::clone(&self.inner);
            let synced = tokio::task::spawn_blocking(move || inner.lock_spool().sync()).await;
            match synced {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "cannot rewrite the audit spool file"),
                Err(e) => tracing::error!(error = %e, "audit spool rewrite task failed"),
            }
        }
        if self.inner.lock_spool().is_empty() {
            self.retry_at = None;
            self.backoff = FIRST_RETRY;
        }
    }

    /// One batch to the sink. On success the events' room is released (the caller adjusts its
    /// own gauge); on failure they are handed back and the retry is scheduled.
    async fn send(&mut self, events: Vec<Queued>) -> Result<(), Vec<Queued>> {
        let sizes: Vec<u64> = events.iter().map(|q| q.bytes).collect();
        let batch = SidecarAuditBatch {
            events: events.into_iter().map(|q| q.event).collect(),
        };
        match self.sink.send(&batch).await {
            Ok(()) => {
                let n = sizes.len() as u64;
                self.inner.give_back(sizes.iter().sum());
                self.inner.sent.fetch_add(n, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.failed(&e);
                Err(batch
                    .events
                    .into_iter()
                    .zip(sizes)
                    .map(|(event, bytes)| Queued { event, bytes })
                    .collect())
            }
        }
    }

    fn failed(&mut self, e: &SinkError) {
        self.inner.send_failures.fetch_add(1, Ordering::Relaxed);
        if e.retryable {
            tracing::warn!(error = %e, retry_in = ?self.backoff, "audit batch not delivered; spooling");
        } else {
            self.backoff = MAX_RETRY;
            tracing::error!(error = %e, retry_in = ?self.backoff, "audit batch refused; spooling and retrying");
        }
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_RETRY);
    }

    /// Append events to the spool file (behind anything already there).
    async fn spool(&mut self, events: Vec<Queued>) {
        if events.is_empty() {
            return;
        }
        let n = events.len() as u64;
        self.inner.queued.fetch_sub(n, Ordering::Relaxed);
        self.inner.spooled.fetch_add(n, Ordering::Relaxed);
        if self.retry_at.is_none() {
            self.retry_at = Some(Instant::now() + self.backoff);
        }
        let inner = Arc::clone(&self.inner);
        let appended = tokio::task::spawn_blocking(move || inner.lock_spool().append(events)).await;
        match appended {
            Ok(Ok(())) => {}
            // The events stay in memory and the file is rewritten at the next sync.
            Ok(Err(e)) => tracing::error!(error = %e, "cannot append to the audit spool file"),
            Err(e) => tracing::error!(error = %e, "audit spool append task failed"),
        }
    }
}
