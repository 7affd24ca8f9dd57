//! The background half of the audit pipeline: batches queued events, sends them, spools
//! what the sink refuses and drains the spool — oldest first — when the sink recovers.
//!
//! Over 400 lines: one task's state machine (batch, split, spool, drain) and its ordering.
//!
//! One task does all of it, sending one batch at a time, so ordering is simple: while the
//! spool holds anything, new batches are appended behind it rather than sent ahead of it.
//! File I/O runs on the blocking pool so an fsync never stalls the proxy's runtime.
//!
//! A batch refused as too large or as invalid is split in halves and resent piece by piece in
//! order. A single event still refused is dead-lettered only when another piece of the same
//! batch was accepted; when every piece is refused the batch is kept and retried, as when the
//! sink is down (see the parent module's docs). [`AuditWorker::report_dead_lettered`] puts one
//! `audit_dropped` report of the dead-lettered events in the spool.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use agent_secret_core::api::{SidecarAuditEvent, MAX_SIDECAR_AUDIT_BATCH_EVENTS};
use chrono::Utc;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::bound::{batch_body, batch_len, Queued, BATCH_ENVELOPE_BYTES, MAX_BATCH_BYTES};
use super::dead_letter::{DeadLetter, DeadLetterError};
use super::{AuditBody, AuditSink, Inner, Msg, SinkError, SinkErrorKind, SpoolConfig};

const FIRST_RETRY: Duration = Duration::from_millis(200);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// Most events per batch while the sink refuses everything. Finding out whether a refusal is
/// about particular events takes about two requests per event (the split down to singles), so
/// a control plane refusing every request costs at most ~15 requests per retry, not ~200. A
/// poisoned event at the front still has up to 7 good ones behind it to prove the refusal is
/// its own.
const PROBE_EVENTS: usize = 8;

/// Runs the pipeline; see [`AuditPipeline::open`](super::AuditPipeline::open).
pub struct AuditWorker {
    inner: Arc<Inner>,
    rx: mpsc::UnboundedReceiver<Msg>,
    sink: Arc<dyn AuditSink>,
    batch_size: usize,
    flush_interval: Duration,
    batch: Vec<Queued>,
    /// JSON-line bytes of `batch`.
    batch_bytes: u64,
    batch_deadline: Option<Instant>,
    /// When to retry the spool; `Some` whenever it is non-empty.
    retry_at: Option<Instant>,
    backoff: Duration,
    dead_letter: DeadLetter,
    /// Events dead-lettered and not yet reported to the control plane.
    unreported: u64,
    /// The sink refused the last batch whole (every piece, or a loss report): retries send
    /// at most [`PROBE_EVENTS`] events until it accepts something again.
    refusing: bool,
}

/// Where the events being sent came from, for accounting.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The in-memory batch (counted in `queued`).
    Memory,
    /// Taken from the front of the spool (counted in `spooled`).
    Spool,
}

/// What became of events that left the pipeline.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Settled {
    Sent,
    DeadLettered,
}

impl AuditWorker {
    pub(crate) fn new(
        inner: Arc<Inner>,
        rx: mpsc::UnboundedReceiver<Msg>,
        sink: Arc<dyn AuditSink>,
        config: &SpoolConfig,
    ) -> AuditWorker {
        let (spool_pending, dead_letter) = {
            let spool = inner.lock_spool();
            (
                !spool.is_empty(),
                DeadLetter::new(spool.path(), config.max_bytes),
            )
        };
        AuditWorker {
            inner,
            rx,
            sink,
            batch_size: config.batch_size.clamp(1, MAX_SIDECAR_AUDIT_BATCH_EVENTS),
            flush_interval: config.flush_interval,
            batch: Vec::new(),
            batch_bytes: BATCH_ENVELOPE_BYTES,
            batch_deadline: None,
            retry_at: spool_pending.then(Instant::now),
            backoff: FIRST_RETRY,
            dead_letter,
            unreported: 0,
            refusing: false,
        }
    }

    /// Run until [`shutdown`](super::AuditPipeline::shutdown) or until every handle is dropped.
    ///
    /// One timer serves the whole run, re-armed only when the next deadline changes, and a
    /// wake-up takes every event already queued: every injection sends an event, and arming
    /// and dropping a timer per event was a measurable share of the sidecar's work per
    /// request (bench/results/warm-path-callgrind.md).
    pub async fn run(mut self) {
        let timer = tokio::time::sleep_until(Instant::now());
        tokio::pin!(timer);
        loop {
            let wake = match (self.batch_deadline, self.retry_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            // A timer that fired at this same deadline stays ready, as a fresh one would be.
            if let Some(at) = wake.filter(|at| timer.deadline() != *at) {
                timer.as_mut().reset(at);
            }
            tokio::select! {
                msg = self.rx.recv() => {
                    if !self.handle(msg).await {
                        return;
                    }
                    // At most a batch's worth per wake-up, so a steady stream of events
                    // cannot keep the timer (deadlines, retries) from being looked at.
                    for _ in 1..self.batch_size {
                        let Ok(msg) = self.rx.try_recv() else { break };
                        if !self.handle(Some(msg)).await {
                            return;
                        }
                    }
                }
                () = &mut timer, if wake.is_some() => {
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

    /// Act on one message (`None`: every sender is gone). False once the worker has stopped.
    async fn handle(&mut self, msg: Option<Msg>) -> bool {
        match msg {
            Some(Msg::Event(q)) => {
                if self.batch.is_empty() {
                    self.batch_deadline = Some(Instant::now() + self.flush_interval);
                }
                self.batch_bytes += q.bytes;
                self.batch.push(q);
                if self.batch.len() >= self.batch_size || self.batch_bytes >= MAX_BATCH_BYTES {
                    self.deliver(false).await;
                }
                true
            }
            Some(Msg::Flush(reply)) => {
                self.deliver(true).await;
                let _ = reply.send(());
                true
            }
            Some(Msg::Shutdown(reply)) => {
                self.stop().await;
                let _ = reply.send(());
                false
            }
            None => {
                self.stop().await;
                false
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
        self.batch_bytes = BATCH_ENVELOPE_BYTES;
        let mut pending: VecDeque<Queued> = std::mem::take(&mut self.batch).into();
        if !self.inner.lock_spool().is_empty() {
            let due = self.retry_at.is_none_or(|r| r <= Instant::now());
            if force || due {
                self.drain_spool().await;
            }
            if !self.inner.lock_spool().is_empty() {
                self.spool(pending.into()).await;
                return;
            }
        }
        while !pending.is_empty() {
            let n = batch_len(&pending, self.chunk_limit());
            let chunk: Vec<Queued> = pending.drain(..n).collect();
            if let Err(mut unsent) = self.push(chunk, Source::Memory).await {
                unsent.extend(pending);
                self.spool(unsent).await;
                break;
            }
        }
        if self.report_dead_lettered().await {
            self.drain_spool().await;
        }
    }

    /// Most events in the next batch (see [`PROBE_EVENTS`]).
    fn chunk_limit(&self) -> usize {
        if self.refusing {
            PROBE_EVENTS.min(self.batch_size)
        } else {
            self.batch_size
        }
    }

    /// Send spooled events in order until the spool is empty or the sink fails.
    async fn drain_spool(&mut self) {
        let mut left_spool = false;
        loop {
            let limit = self.chunk_limit();
            let chunk = self.inner.lock_spool().take_batch(limit);
            if chunk.is_empty() {
                // Everything went (or was dead-lettered): report the losses, and send the
                // report too.
                if self.report_dead_lettered().await {
                    continue;
                }
                break;
            }
            left_spool = true;
            if let Err(unsent) = self.push(chunk, Source::Spool).await {
                self.inner.lock_spool().put_front(unsent);
                // Report what was dead-lettered before the failure; it is sent with the rest.
                self.report_dead_lettered().await;
                break;
            }
        }
        if left_spool {
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

    /// Deliver `events` (in order) or dead-letter the ones the sink refuses on their own.
    /// On a failure worth retrying, hands back the events not yet settled, in order, and
    /// schedules the retry.
    ///
    /// A single event refused after a split is only *suspected* until some other piece of the
    /// same batch is accepted: that acceptance is the evidence that the refusal is about the
    /// event and not about every request (an L7 proxy answering 404, a request format the
    /// control plane no longer takes). Without it — every piece refused — nothing is
    /// dead-lettered: the batch is kept and retried (fail closed). A refused `audit_dropped`
    /// report is never dead-lettered either.
    async fn push(&mut self, events: Vec<Queued>, source: Source) -> Result<(), Vec<Queued>> {
        let mut todo: VecDeque<Vec<Queued>> = VecDeque::from([events]);
        // Whether the sink accepted a piece of this batch.
        let mut accepted = false;
        // Single events refused while nothing was accepted yet, in order.
        let mut suspects: Vec<(Queued, SinkError)> = Vec::new();
        while let Some(mut piece) = todo.pop_front() {
            let e = match self.send(&piece).await {
                Ok(()) => {
                    self.settle(&piece, source, Settled::Sent);
                    accepted = true;
                    self.refusing = false;
                    let mut suspects = std::mem::take(&mut suspects).into_iter();
                    while let Some((q, refusal)) = suspects.next() {
                        if let Err(q) = self.quarantine(q, &refusal, source).await {
                            self.schedule_retry(None);
                            let mut unsent: Vec<Queued> = vec![q];
                            unsent.extend(suspects.map(|(q, _)| q));
                            unsent.extend(todo.into_iter().flatten());
                            return Err(unsent);
                        }
                    }
                    continue;
                }
                Err(e) => e,
            };
            self.inner.send_failures.fetch_add(1, Ordering::Relaxed);
            let refused = matches!(e.kind, SinkErrorKind::TooLarge | SinkErrorKind::Rejected);
            if refused && piece.len() > 1 {
                tracing::warn!(error = %e, events = piece.len(), "audit batch refused; resending it in halves");
                let second = piece.split_off(piece.len() / 2);
                todo.push_front(second);
                todo.push_front(piece);
                continue;
            }
            let is_report = piece.iter().any(|q| q.is_report);
            if refused && !is_report {
                if let Some(q) = piece.pop() {
                    if !accepted {
                        suspects.push((q, e));
                        continue;
                    }
                    match self.quarantine(q, &e, source).await {
                        Ok(()) => continue,
                        Err(q) => piece.push(q),
                    }
                }
                self.schedule_retry(None);
            } else if refused {
                self.refused_whole(&e, "the control plane refused a report of dead-lettered audit events; keeping it in the spool and retrying");
            } else {
                self.schedule_retry(Some(&e));
            }
            let mut unsent: Vec<Queued> = suspects.into_iter().map(|(q, _)| q).collect();
            unsent.extend(piece);
            unsent.extend(todo.into_iter().flatten());
            return Err(unsent);
        }
        if let Some((_, refusal)) = suspects.last() {
            let refusal = refusal.clone();
            self.refused_whole(&refusal, "the control plane refused every piece of an audit batch, down to single events; it may be refusing every request, so nothing is dead-lettered: keeping the events in the spool and retrying");
            return Err(suspects.into_iter().map(|(q, _)| q).collect());
        }
        Ok(())
    }

    /// The sink refused everything we could try: count it, log it, retry at the slowest pace
    /// and probe with small batches until it accepts something again.
    fn refused_whole(&mut self, refusal: &SinkError, what: &'static str) {
        self.inner.refused_whole.fetch_add(1, Ordering::Relaxed);
        self.refusing = true;
        self.schedule_retry(None);
        tracing::error!(
            status = refusal.status,
            error = %refusal.message,
            retry_in = ?MAX_RETRY,
            "{what}"
        );
    }

    /// Dead-letter one event the sink refused on its own and settle it; hands it back when
    /// the dead-letter file cannot take it (it then stays in the spool).
    async fn quarantine(
        &mut self,
        q: Queued,
        refusal: &SinkError,
        source: Source,
    ) -> Result<(), Queued> {
        let one = std::slice::from_ref(&q);
        match self.dead_letter_events(one, refusal).await {
            Ok(()) => {
                self.settle(one, source, Settled::DeadLettered);
                Ok(())
            }
            Err(dl) => {
                tracing::error!(error = %dl, refusal = %refusal, "audit event refused by the control plane and not dead-lettered; keeping it and retrying");
                Err(q)
            }
        }
    }

    /// One batch to the sink, its body the events' JSON as encoded when they were recorded.
    async fn send(&self, events: &[Queued]) -> Result<(), SinkError> {
        self.sink.send(&AuditBody(batch_body(events).into())).await
    }

    /// Events left the pipeline: release their room and update the counters.
    fn settle(&self, events: &[Queued], source: Source, how: Settled) {
        let n = events.len() as u64;
        let bytes: u64 = events.iter().map(|q| q.bytes).sum();
        self.inner.give_back(bytes);
        match source {
            Source::Memory => {
                self.inner.queued.fetch_sub(n, Ordering::Relaxed);
            }
            Source::Spool => {
                self.inner.lock_spool().acknowledged(bytes);
                self.inner.spooled.fetch_sub(n, Ordering::Relaxed);
            }
        }
        let counter = match how {
            Settled::Sent => &self.inner.sent,
            Settled::DeadLettered => &self.inner.dead_lettered,
        };
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Move events the sink refused on their own to the dead-letter file, durably.
    async fn dead_letter_events(
        &mut self,
        events: &[Queued],
        refusal: &SinkError,
    ) -> Result<(), DeadLetterError> {
        let lines = DeadLetter::render(
            events.iter().map(|q| &q.json[..]),
            refusal.status,
            &refusal.message,
        );
        let len = lines.len() as u64;
        self.dead_letter.check_room(len)?;
        let path = self.dead_letter.path().to_path_buf();
        let written = tokio::task::spawn_blocking(move || DeadLetter::write(&path, &lines))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        written.map_err(|e| self.dead_letter.io_error(e))?;
        self.dead_letter.wrote(len);
        // Reports are never dead-lettered (`push` keeps them), so each of these is a loss to
        // report.
        self.unreported += events.len() as u64;
        tracing::error!(
            events = events.len(),
            status = refusal.status,
            error = %refusal.message,
            file = %self.dead_letter.path().display(),
            "audit events refused by the control plane moved to the dead-letter file"
        );
        Ok(())
    }

    /// Put one `audit_dropped` report of the events dead-lettered so far into the spool (it
    /// goes out with the next drain). Returns whether there was anything to report.
    async fn report_dead_lettered(&mut self) -> bool {
        if self.unreported == 0 {
            return false;
        }
        let report = SidecarAuditEvent::audit_dropped(self.unreported, Utc::now());
        self.unreported = 0;
        let queued = self.inner.capped(&report.borrowed());
        // The loss already happened: its report is never refused for room.
        self.inner.used.fetch_add(queued.bytes, Ordering::AcqRel);
        self.inner.queued.fetch_add(1, Ordering::Relaxed);
        self.spool(vec![queued]).await;
        self.retry_at = Some(Instant::now());
        true
    }

    /// Schedule the next attempt after a failure; `None` is a failure already logged (the
    /// dead-letter file, or a sink refusing everything), retried at the slowest pace.
    fn schedule_retry(&mut self, e: Option<&SinkError>) {
        match e.map(|e| (e, e.kind)) {
            Some((e, SinkErrorKind::Unavailable)) => {
                tracing::warn!(error = %e, retry_in = ?self.backoff, "audit batch not delivered; spooling");
            }
            Some((e, _)) => {
                self.backoff = MAX_RETRY;
                tracing::error!(error = %e, retry_in = ?self.backoff, "audit batch refused; spooling and retrying");
            }
            None => self.backoff = MAX_RETRY,
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
