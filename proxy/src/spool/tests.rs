#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_secret_core::api::{SidecarAuditBatch, SidecarAuditEvent, MAX_REQUEST_BODY_BYTES};
use chrono::Utc;

use super::bound::{
    MAX_BATCH_BYTES, MAX_EVENT_BYTES, MAX_ID_CHARS, MAX_REASON_CHARS, MAX_TEXT_CHARS,
};
use super::dead_letter::DEAD_LETTER_SUFFIX;
use super::file::SPOOL_FILE_NAME;
use super::*;

/// Bytes of the event's compact JSON, encoded here independently of the pipeline.
fn encoded_len(event: &SidecarAuditEvent) -> u64 {
    serde_json::to_vec(event).unwrap().len() as u64
}

/// The user agent of an event [`FakeSink`] refuses 422 (like a field the server rejects).
const POISON: &str = "poison";

/// A control plane as the pipeline sees it: refuses bodies above `body_limit` with 413 (the
/// real one's behaviour), batches holding a [`POISON`] event with 422, everything with
/// `status` when set, batches holding an `audit_dropped` report with 400 while
/// `refuse_reports`, and fails without an answer while `down`. Remembers what it accepted
/// and every body size it was sent.
struct FakeSink {
    down: AtomicBool,
    refuse_reports: AtomicBool,
    status: Mutex<Option<u16>>,
    body_limit: AtomicUsize,
    accepted: Mutex<Vec<Vec<SidecarAuditEvent>>>,
    bodies: Mutex<Vec<(usize, Option<u16>)>>,
}

impl Default for FakeSink {
    fn default() -> FakeSink {
        FakeSink {
            down: AtomicBool::new(false),
            refuse_reports: AtomicBool::new(false),
            status: Mutex::new(None),
            body_limit: AtomicUsize::new(MAX_REQUEST_BODY_BYTES),
            accepted: Mutex::default(),
            bodies: Mutex::default(),
        }
    }
}

#[async_trait::async_trait]
impl AuditSink for FakeSink {
    async fn send(&self, body: &AuditBody) -> Result<(), SinkError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(SinkError::unavailable("connection refused"));
        }
        let batch: SidecarAuditBatch = body.decode().unwrap();
        let body = body.bytes().len();
        let status = if body > self.body_limit.load(Ordering::SeqCst) {
            Some(413)
        } else if let Some(status) = *self.status.lock().unwrap() {
            Some(status)
        } else if batch
            .events
            .iter()
            .any(|e| e.user_agent.as_deref() == Some(POISON))
        {
            Some(422)
        } else if self.refuse_reports.load(Ordering::SeqCst)
            && batch.events.iter().any(|e| e.dropped_count().is_some())
        {
            Some(400)
        } else {
            None
        };
        self.bodies.lock().unwrap().push((body, status));
        if let Some(status) = status {
            return Err(SinkError::status(
                status,
                format!("control plane answered {status}"),
            ));
        }
        self.accepted.lock().unwrap().push(batch.events.clone());
        Ok(())
    }
}

impl FakeSink {
    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
    fn set_status(&self, status: Option<u16>) {
        *self.status.lock().unwrap() = status;
    }
    /// Token ids of the accepted events, `dropped:N` for an `audit_dropped` report.
    fn tokens(&self) -> Vec<String> {
        let accepted = self.accepted.lock().unwrap();
        accepted
            .iter()
            .flatten()
            .map(|e| match e.dropped_count() {
                Some(n) => format!("dropped:{n}"),
                None => e.token_id.clone().unwrap(),
            })
            .collect()
    }
    fn batch_sizes(&self) -> Vec<usize> {
        self.accepted.lock().unwrap().iter().map(Vec::len).collect()
    }
    fn refusals(&self) -> Vec<u16> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .filter_map(|b| b.1)
            .collect()
    }
}

fn event(i: usize) -> SidecarAuditEvent {
    SidecarAuditEvent {
        kind: Default::default(),
        token_id: Some(format!("tok-{i:04}")),
        client_ip: Some("127.0.0.1".into()),
        user_agent: Some("curl/8.5.0".into()),
        path: Some("production/openai/api_key".into()),
        destination_host: Some("api.openai.com".into()),
        success: true,
        reason: None,
        occurred_at: Utc::now(),
    }
}

fn tokens(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("tok-{i:04}")).collect()
}

fn config(path: &Path, max_bytes: u64, batch_size: usize) -> SpoolConfig {
    SpoolConfig {
        path: path.to_path_buf(),
        max_bytes,
        batch_size,
        flush_interval: Duration::from_secs(3600),
    }
}

fn lines(path: &Path) -> Vec<SidecarAuditEvent> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn start(path: &Path, max_bytes: u64, batch: usize) -> (AuditPipeline, Arc<FakeSink>) {
    let sink = Arc::new(FakeSink::default());
    let pipeline = AuditPipeline::start(config(path, max_bytes, batch), sink.clone()).unwrap();
    (pipeline, sink)
}

#[tokio::test]
async fn events_are_sent_in_batches_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (p, sink) = start(&dir.path().join("spool.jsonl"), 1 << 20, 3);
    for i in 0..7 {
        p.record(event(i)).unwrap();
    }
    p.flush().await;
    assert_eq!(sink.tokens(), tokens(0..7));
    assert!(sink.batch_sizes().iter().all(|&n| n <= 3));
    assert!(sink.batch_sizes().contains(&3));
    let stats = p.stats();
    assert_eq!(
        (stats.sent, stats.queued, stats.spooled, stats.dropped),
        (7, 0, 0, 0)
    );
    assert_eq!(stats.used_bytes, 0);
}

#[tokio::test]
async fn partial_batch_goes_after_the_flush_interval() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(FakeSink::default());
    let mut cfg = config(&dir.path().join("spool.jsonl"), 1 << 20, 100);
    cfg.flush_interval = Duration::from_millis(50);
    let p = AuditPipeline::start(cfg, sink.clone()).unwrap();
    p.record(event(0)).unwrap();
    p.record(event(1)).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(sink.tokens(), tokens(0..2));
}

#[tokio::test]
async fn sink_down_spools_and_sink_back_drains_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool.jsonl");
    let (p, sink) = start(&path, 1 << 20, 2);
    sink.set_down(true);
    for i in 0..5 {
        p.record(event(i)).unwrap();
    }
    p.flush().await;
    assert_eq!(lines(&path).len(), 5);
    assert_eq!((p.stats().spooled, p.stats().queued), (5, 0));
    assert!(p.stats().send_failures > 0);
    for i in 5..7 {
        p.record(event(i)).unwrap();
    }
    p.flush().await;
    let spooled: Vec<_> = lines(&path)
        .into_iter()
        .map(|e| e.token_id.unwrap())
        .collect();
    assert_eq!(spooled, tokens(0..7));
    assert!(sink.tokens().is_empty());

    sink.set_down(false);
    p.record(event(7)).unwrap();
    p.flush().await;
    assert_eq!(
        sink.tokens(),
        tokens(0..8),
        "spooled events first, in order"
    );
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "spool emptied");
    let stats = p.stats();
    assert_eq!(
        (stats.sent, stats.spooled, stats.queued, stats.used_bytes),
        (8, 0, 0, 0)
    );
}

#[tokio::test]
async fn spool_drains_on_its_own_once_the_sink_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let (p, sink) = start(&dir.path().join("spool.jsonl"), 1 << 20, 10);
    sink.set_down(true);
    p.record(event(0)).unwrap();
    p.flush().await;
    assert_eq!(p.stats().spooled, 1);
    sink.set_down(false);
    for _ in 0..50 {
        if p.stats().spooled == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sink.tokens(), tokens(0..1));
}

#[tokio::test]
async fn full_spool_refuses_and_drops_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool.jsonl");
    let one = encoded_len(&event(0)) + 1;
    let (p, sink) = start(&path, one * 4 + one / 2, 3);
    sink.set_down(true);
    let mut accepted = 0;
    let mut refused = 0;
    for i in 0..10 {
        match p.record(event(i)) {
            Ok(()) => accepted += 1,
            Err(SpoolFull) => refused += 1,
        }
        p.flush().await;
    }
    assert_eq!((accepted, refused), (4, 6));
    assert!(p.reserve().is_err());
    assert!(!p.try_reserve(1));
    assert_eq!(lines(&path).len(), 4, "every accepted event is on disk");
    assert!(std::fs::metadata(&path).unwrap().len() <= one * 4 + one / 2);

    sink.set_down(false);
    p.flush().await;
    assert_eq!(sink.tokens(), tokens(0..4));
    assert_eq!(p.stats().dropped, 0);
    p.record(event(99)).unwrap();
}

#[tokio::test]
async fn restart_replays_the_spool() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool.jsonl");
    {
        let (p, sink) = start(&path, 1 << 20, 10);
        sink.set_down(true);
        for i in 0..3 {
            p.record(event(i)).unwrap();
        }
        p.shutdown().await;
        assert!(p.record(event(3)).is_err(), "no events after shutdown");
    }
    assert_eq!(lines(&path).len(), 3);
    let (p, sink) = start(&path, 1 << 20, 10);
    assert_eq!(p.stats().spooled, 3);
    assert!(
        p.stats().used_bytes > 0,
        "replayed events count against the bound"
    );
    p.flush().await;
    assert_eq!(sink.tokens(), tokens(0..3));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
}

#[tokio::test]
async fn permit_recorded_after_shutdown_lands_in_the_spool() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool.jsonl");
    let (p, sink) = start(&path, 1 << 20, 10);
    sink.set_down(true);
    let permit = p.reserve().unwrap();
    p.shutdown().await;
    permit.record(event(42));
    assert_eq!(lines(&path)[0].token_id.as_deref(), Some("tok-0042"));
}

#[tokio::test]
async fn permits_settle_and_release_room() {
    let dir = tempfile::tempdir().unwrap();
    let (p, sink) = start(&dir.path().join("spool.jsonl"), 1 << 20, 10);
    drop(p.reserve().unwrap());
    assert_eq!(p.stats().used_bytes, 0);
    assert!(p.try_reserve(2));
    assert_eq!(p.stats().used_bytes, 2 * RESERVED_EVENT_BYTES);
    p.release(1);
    p.record_reserved(&event(0).borrowed());
    p.reserve().unwrap().record(event(1));
    p.flush().await;
    assert_eq!(sink.tokens(), tokens(0..2));
    assert_eq!(p.stats().used_bytes, 0);
}

#[tokio::test]
async fn spool_file_is_private_and_a_directory_works() {
    let dir = tempfile::tempdir().unwrap();
    let (p, sink) = start(dir.path(), 1 << 20, 10);
    sink.set_down(true);
    p.record(event(0)).unwrap();
    p.flush().await;
    let file = dir.path().join(SPOOL_FILE_NAME);
    assert_eq!(lines(&file).len(), 1);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[tokio::test]
async fn unreadable_lines_are_moved_aside_not_lost() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool.jsonl");
    let good = serde_json::to_string(&event(1)).unwrap();
    std::fs::write(
        &path,
        format!("{good}\nnot json at all\n{{\"token_id\":\"tok-"),
    )
    .unwrap();
    let (p, sink) = start(&path, 1 << 20, 10);
    p.flush().await;
    assert_eq!(sink.tokens(), tokens(1..2));
    let corrupt = std::fs::read_to_string(dir.path().join("spool.jsonl.corrupt")).unwrap();
    assert!(corrupt.contains("not json at all"));
    assert!(corrupt.contains("{\"token_id\":\"tok-"));
}

fn with_agent(i: usize, user_agent: &str) -> SidecarAuditEvent {
    SidecarAuditEvent {
        kind: Default::default(),
        user_agent: Some(user_agent.into()),
        ..event(i)
    }
}

fn dead_letters(spool: &Path) -> Vec<serde_json::Value> {
    let file = file::sibling(spool, DEAD_LETTER_SUFFIX);
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn refusals_are_sorted_by_status() {
    use SinkErrorKind::*;
    for (status, kind) in [
        (400, Rejected),
        (404, Rejected),
        (422, Rejected),
        (413, TooLarge),
        (401, Unauthorized),
        (403, Unauthorized),
        (408, Unavailable),
        (429, Unavailable),
        (500, Unavailable),
        (503, Unavailable),
    ] {
        assert_eq!(SinkErrorKind::from_status(status), kind, "{status}");
    }
}

#[tokio::test]
async fn a_batch_refused_as_too_large_is_split_in_halves_and_all_delivered_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (p, sink) = start(&dir.path().join("spool.jsonl"), 1 << 20, 8);
    // Room for three events per request: a batch of 8 is refused 413 and must be split.
    let one = usize::try_from(encoded_len(&event(0))).unwrap() + 1;
    sink.body_limit.store(13 + 3 * one, Ordering::SeqCst);
    for i in 0..8 {
        p.record(event(i)).unwrap();
    }
    p.flush().await;
    assert_eq!(sink.tokens(), tokens(0..8), "every event, in order");
    assert!(sink.refusals().iter().all(|&s| s == 413));
    assert!(
        sink.refusals().len() >= 2,
        "8 and 4 were refused: {:?}",
        sink.refusals()
    );
    assert!(sink.batch_sizes().iter().all(|&n| n <= 3));
    let stats = p.stats();
    assert_eq!(
        (
            stats.sent,
            stats.dead_lettered,
            stats.spooled,
            stats.used_bytes
        ),
        (8, 0, 0, 0)
    );
    assert!(dead_letters(&dir.path().join("spool.jsonl")).is_empty());
}

#[tokio::test]
async fn a_single_event_still_too_large_is_dead_lettered_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool.jsonl");
    let (p, sink) = start(&path, 1 << 20, 10);
    let big = "b".repeat(400);
    // Small events and the loss report fit; one with a long user agent never does.
    let limit = usize::try_from(encoded_len(&event(0))).unwrap() + 100;
    sink.body_limit.store(limit, Ordering::SeqCst);
    p.record(event(0)).unwrap();
    p.record(with_agent(1, &big)).unwrap();
    p.record(event(2)).unwrap();
    p.flush().await;
    assert_eq!(
        sink.tokens(),
        vec!["tok-0000".to_owned(), "tok-0002".into(), "dropped:1".into()]
    );
    let dead = dead_letters(&path);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["status"], 413);
    assert_eq!(dead[0]["event"]["token_id"], "tok-0001");
    assert_eq!(dead[0]["event"]["user_agent"], big.as_str());
    assert_eq!((p.stats().dead_lettered, p.stats().spooled), (1, 0));
}

#[tokio::test]
async fn a_rejected_event_is_quarantined_with_a_metric_and_a_report_and_the_queue_moves_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool.jsonl");
    let (p, sink) = start(&path, 1 << 20, 10);
    for i in 0..10 {
        let e = if i == 6 {
            with_agent(i, POISON)
        } else {
            event(i)
        };
        p.record(e).unwrap();
    }
    p.flush().await;
    let mut expected = tokens(0..6);
    expected.extend(tokens(7..10));
    expected.push("dropped:1".into());
    assert_eq!(sink.tokens(), expected, "only the refused event is missing");
    assert!(sink.refusals().iter().all(|&s| s == 422));

    let dead = dead_letters(&path);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["status"], 422);
    assert_eq!(dead[0]["event"]["token_id"], "tok-0006");
    assert!(dead[0]["error"].as_str().unwrap().contains("422"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let file = file::sibling(&path, DEAD_LETTER_SUFFIX);
        let mode = std::fs::metadata(file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let stats = p.stats();
    assert_eq!(
        (
            stats.sent,
            stats.dead_lettered,
            stats.dropped,
            stats.spooled,
            stats.used_bytes
        ),
        (10, 1, 0, 0, 0),
        "9 events and the report sent"
    );
    let metrics = crate::metrics::Metrics::new().unwrap();
    metrics.observe_spool(&stats);
    metrics.observe_spool(&stats);
    assert_eq!(metrics.audit_dead_lettered.get(), 1);
    let rendered = String::from_utf8(metrics.render()).unwrap();
    assert!(rendered.contains("agent_secret_proxy_audit_dead_lettered_total 1"));

    // Nothing is stuck behind it.
    p.record(event(11)).unwrap();
    p.flush().await;
    assert_eq!(sink.tokens().last().map(String::as_str), Some("tok-0011"));
}

/// Token ids of the events in the spool file, in order.
fn spooled_tokens(path: &Path) -> Vec<String> {
    lines(path)
        .into_iter()
        .map(|e| e.token_id.unwrap())
        .collect()
}

#[tokio::test]
async fn a_control_plane_refusing_everything_dead_letters_nothing_and_fails_closed() {
    // An L7 proxy answering 400/404, version skew, a constraint mapped to 409...: every batch
    // and every piece of it is refused, so no refusal is evidently about particular events.
    for status in [400, 404, 409, 422, 413] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.jsonl");
        let one = encoded_len(&event(0)) + 1;
        let (p, sink) = start(&path, one * 12 + one / 2, 5);
        sink.set_status(Some(status));
        let mut recorded = 0;
        while p.record(event(recorded)).is_ok() {
            p.flush().await;
            recorded += 1;
            assert!(recorded < 100, "{status}: the spool never filled");
        }
        p.flush().await;
        assert_eq!(recorded, 12, "{status}");
        assert!(
            p.reserve().is_err(),
            "{status}: injections refused (fail closed)"
        );
        assert!(!p.try_reserve(1), "{status}");
        assert!(sink.tokens().is_empty(), "{status}");
        assert!(
            sink.refusals().iter().all(|&s| s == status),
            "{status}: every piece was tried"
        );
        assert!(
            dead_letters(&path).is_empty(),
            "{status}: nothing dead-lettered"
        );
        assert_eq!(
            spooled_tokens(&path),
            tokens(0..12),
            "{status}: kept, in order"
        );
        let stats = p.stats();
        assert_eq!(
            (
                stats.dead_lettered,
                stats.spooled,
                stats.queued,
                stats.dropped
            ),
            (0, 12, 0, 0),
            "{status}"
        );
        assert!(stats.refused_whole > 0, "{status}: counted");
        let metrics = crate::metrics::Metrics::new().unwrap();
        metrics.observe_spool(&stats);
        let rendered = String::from_utf8(metrics.render()).unwrap();
        assert!(
            rendered.contains(&format!(
                "agent_secret_proxy_audit_spool{{kind=\"refused_whole\"}} {}",
                stats.refused_whole
            )),
            "{rendered}"
        );

        // The control plane accepts events again: every one is delivered, in order, and no
        // loss is reported because none happened.
        sink.set_status(None);
        p.flush().await;
        assert_eq!(
            sink.tokens(),
            tokens(0..12),
            "{status}: all delivered in order"
        );
        assert!(dead_letters(&path).is_empty(), "{status}");
        let stats = p.stats();
        assert_eq!(
            (
                stats.sent,
                stats.dead_lettered,
                stats.spooled,
                stats.used_bytes
            ),
            (12, 0, 0, 0),
            "{status}"
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "{status}");
        p.reserve().unwrap().record(event(12));
        p.flush().await;
        assert_eq!(sink.tokens(), tokens(0..13), "{status}");
    }
}

#[tokio::test]
async fn a_refused_loss_report_is_kept_and_retried_not_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool.jsonl");
    let (p, sink) = start(&path, 1 << 20, 10);
    sink.refuse_reports.store(true, Ordering::SeqCst);
    for i in 0..6 {
        let e = if i == 2 {
            with_agent(i, POISON)
        } else {
            event(i)
        };
        p.record(e).unwrap();
    }
    p.flush().await;
    p.flush().await;
    let mut delivered = vec!["tok-0000", "tok-0001", "tok-0003", "tok-0004", "tok-0005"];
    assert_eq!(
        sink.tokens(),
        delivered,
        "the poisoned event's siblings went"
    );
    let dead = dead_letters(&path);
    assert_eq!(dead.len(), 1, "only the poisoned event: {dead:?}");
    assert_eq!(dead[0]["event"]["token_id"], "tok-0002");
    let spooled = lines(&path);
    assert_eq!(spooled.len(), 1);
    assert_eq!(spooled[0].dropped_count(), Some(1), "the report is kept");
    let stats = p.stats();
    assert_eq!((stats.dead_lettered, stats.spooled), (1, 1));
    assert!(stats.refused_whole > 0);

    sink.refuse_reports.store(false, Ordering::SeqCst);
    p.record(event(6)).unwrap();
    p.flush().await;
    delivered.extend(["dropped:1", "tok-0006"]);
    assert_eq!(sink.tokens(), delivered, "the report, then the rest");
    assert_eq!(dead_letters(&path).len(), 1);
    assert_eq!((p.stats().spooled, p.stats().used_bytes), (0, 0));
}

#[tokio::test]
async fn a_lone_refused_event_is_kept_until_a_sibling_proves_the_refusal_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool.jsonl");
    let (p, sink) = start(&path, 1 << 20, 10);
    p.record(with_agent(0, POISON)).unwrap();
    p.flush().await;
    // Alone, its refusal could as well be the control plane refusing everything.
    assert!(dead_letters(&path).is_empty());
    assert_eq!(spooled_tokens(&path), tokens(0..1));
    assert_eq!(p.stats().refused_whole, 1);

    p.record(event(1)).unwrap();
    p.flush().await;
    p.flush().await;
    assert_eq!(
        sink.tokens(),
        vec!["tok-0001".to_owned(), "dropped:1".into()],
        "its sibling was accepted, so it was dead-lettered and reported"
    );
    let dead = dead_letters(&path);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["event"]["token_id"], "tok-0000");
    let stats = p.stats();
    assert_eq!(
        (stats.dead_lettered, stats.spooled, stats.used_bytes),
        (1, 0, 0)
    );
}

#[tokio::test]
async fn server_errors_and_auth_refusals_keep_every_event_in_order() {
    for status in [500, 503, 401, 403, 429] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.jsonl");
        let (p, sink) = start(&path, 1 << 20, 2);
        sink.set_status(Some(status));
        for i in 0..5 {
            p.record(event(i)).unwrap();
        }
        p.flush().await;
        p.flush().await;
        assert_eq!(lines(&path).len(), 5, "{status}: kept in the spool");
        assert_eq!(p.stats().dead_lettered, 0, "{status}");
        assert!(dead_letters(&path).is_empty(), "{status}");
        sink.set_status(None);
        p.record(event(5)).unwrap();
        p.flush().await;
        assert_eq!(
            sink.tokens(),
            tokens(0..6),
            "{status}: in order once it recovers"
        );
        assert_eq!(p.stats().spooled, 0);
    }
}

#[tokio::test]
async fn batches_are_sized_by_bytes_below_the_server_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (p, sink) = start(&dir.path().join("spool.jsonl"), 16 << 20, 500);
    let long = "Mozilla/5.0 ".repeat(700);
    for i in 0..400 {
        p.record(with_agent(i, &long)).unwrap();
    }
    p.flush().await;
    assert_eq!(sink.tokens(), tokens(0..400));
    assert!(sink.refusals().is_empty(), "no 413: {:?}", sink.refusals());
    let bodies = sink.bodies.lock().unwrap().clone();
    assert!(bodies.len() > 1, "400 capped events do not fit one request");
    for (body, _) in bodies {
        assert!(body as u64 <= MAX_BATCH_BYTES, "{body}");
        assert!(body <= MAX_REQUEST_BODY_BYTES);
    }
}

#[tokio::test]
async fn byte_sized_batches_also_hold_for_the_spool() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool.jsonl");
    let (p, sink) = start(&path, 16 << 20, 500);
    sink.set_down(true);
    let long = "x".repeat(4000);
    for i in 0..300 {
        p.record(with_agent(i, &long)).unwrap();
    }
    p.flush().await;
    assert_eq!(p.stats().spooled, 300);
    sink.set_down(false);
    p.flush().await;
    assert_eq!(sink.tokens(), tokens(0..300));
    assert!(sink.refusals().is_empty());
    assert!(sink
        .bodies
        .lock()
        .unwrap()
        .iter()
        .all(|(b, _)| *b as u64 <= MAX_BATCH_BYTES));
}

#[tokio::test]
async fn an_oversized_event_is_capped_field_by_field() {
    let dir = tempfile::tempdir().unwrap();
    let (p, sink) = start(&dir.path().join("spool.jsonl"), 1 << 20, 10);
    let huge = SidecarAuditEvent {
        kind: Default::default(),
        token_id: Some("t".repeat(1000)),
        client_ip: Some("1".repeat(1000)),
        user_agent: Some(format!("ua\u{7}\n{}", "🦀".repeat(100_000))),
        path: Some(format!("prod/api/key?api_key={}", "s".repeat(10_000))),
        destination_host: Some(format!("{}#frag", "h".repeat(10_000))),
        success: false,
        reason: Some("r".repeat(10_000)),
        occurred_at: Utc::now(),
    };
    p.record(huge).unwrap();
    p.record(event(1)).unwrap();
    p.flush().await;
    let accepted = sink.accepted.lock().unwrap().concat();
    let capped = &accepted[0];
    let ua = capped.user_agent.as_deref().unwrap();
    assert!(ua.starts_with("ua🦀"), "control characters removed");
    assert_eq!(ua.chars().count(), MAX_TEXT_CHARS);
    assert!(ua.ends_with('…'));
    assert_eq!(
        capped.path.as_deref(),
        Some("prod/api/key?…"),
        "query dropped"
    );
    let host = capped.destination_host.as_deref().unwrap();
    assert!(!host.contains("frag"));
    assert!(host.chars().count() <= MAX_TEXT_CHARS);
    assert_eq!(
        capped.reason.as_deref().unwrap().chars().count(),
        MAX_REASON_CHARS
    );
    assert_eq!(
        capped.token_id.as_deref().unwrap().chars().count(),
        MAX_ID_CHARS
    );
    assert_eq!(
        capped.client_ip.as_deref().unwrap().chars().count(),
        MAX_ID_CHARS
    );
    assert!(encoded_len(capped) <= MAX_EVENT_BYTES);
    assert_eq!(
        &accepted[1],
        &event_like(&accepted[1], 1),
        "ordinary events untouched"
    );
    assert_eq!(p.stats().truncated, 1);
}

/// `event(i)` with `other`'s timestamp, to compare an accepted event with what was recorded.
fn event_like(other: &SidecarAuditEvent, i: usize) -> SidecarAuditEvent {
    SidecarAuditEvent {
        occurred_at: other.occurred_at,
        ..event(i)
    }
}

#[test]
fn the_worst_case_capped_event_fits_max_event_bytes() {
    // Every field over its cap with 4-byte characters (a quote escapes to only 2): the largest
    // JSON a capped event can have.
    let worst = |n: usize| Some("𝄞".repeat(n + 1));
    let mut e = SidecarAuditEvent {
        kind: Default::default(),
        token_id: worst(MAX_ID_CHARS),
        client_ip: worst(MAX_ID_CHARS),
        user_agent: worst(MAX_TEXT_CHARS),
        path: worst(MAX_TEXT_CHARS),
        destination_host: worst(MAX_TEXT_CHARS),
        success: false,
        reason: worst(MAX_REASON_CHARS),
        occurred_at: Utc::now(),
    };
    assert!(bound::cap_event(&mut e));
    assert!(
        encoded_len(&e) <= MAX_EVENT_BYTES,
        "{} > {MAX_EVENT_BYTES}",
        encoded_len(&e)
    );
    assert!(!bound::cap_event(&mut e), "capping is idempotent");
}

/// Text for one audit field: mostly what the request path records (ids, addresses, paths,
/// hosts), sometimes what needs capping or escaping (quotes, backslashes, control and
/// non-ASCII characters, queries, fragments, a dropped-query marker, long runs).
fn field_text() -> impl proptest::strategy::Strategy<Value = Option<String>> {
    use proptest::prelude::*;
    let piece = prop_oneof![
        "[a-z0-9./:_-]{0,24}",
        Just("\"".to_owned()),
        Just("\\".to_owned()),
        Just("?q=1".to_owned()),
        Just("#frag".to_owned()),
        Just("?…".to_owned()),
        Just("é𝄞".to_owned()),
        Just("\u{7f}\t\n".to_owned()),
        "\\PC{0,4}",
        Just("x".repeat(300)),
    ];
    proptest::option::of(proptest::collection::vec(piece, 0..5).prop_map(|p| p.concat()))
}

proptest::proptest! {
    /// The spool's encoder writes exactly the JSON `serde_json` writes for the event with
    /// its fields capped, and says whether the caps cut anything, for any field text: the
    /// encoder's copy-as-is path for plain text and its cap-and-escape path agree with the
    /// rule the module documents.
    #[test]
    fn the_encoder_writes_what_serde_writes_for_the_capped_event(
        token_id in field_text(),
        client_ip in field_text(),
        user_agent in field_text(),
        path in field_text(),
        destination_host in field_text(),
        reason in field_text(),
        success: bool,
        mcp: bool,
        nanos in 0u32..2_000_000_000,
    ) {
        use chrono::TimeZone;
        let event = SidecarAuditEvent {
            kind: if mcp {
                agent_secret_core::api::SidecarEventKind::McpToolCalled
            } else {
                Default::default()
            },
            token_id,
            client_ip,
            user_agent,
            path,
            destination_host,
            success,
            reason,
            occurred_at: Utc.timestamp_opt(1_780_000_019, nanos).unwrap(),
        };
        let (queued, cut) = bound::Queued::capped(&event.borrowed());
        let mut capped = event.clone();
        let expected_cut = bound::cap_event(&mut capped);
        proptest::prop_assert_eq!(
            String::from_utf8(queued.json.to_vec()).unwrap(),
            serde_json::to_string(&capped).unwrap()
        );
        proptest::prop_assert_eq!(cut, expected_cut);
        proptest::prop_assert_eq!(queued.bytes, encoded_len(&capped) + 1);
        proptest::prop_assert_eq!(queued.is_report, event.dropped_count().is_some());
    }
}

#[tokio::test]
async fn restart_with_a_poisoned_spool_drains_and_injections_work_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool.jsonl");
    // What an older sidecar left: 150 events with 8 KiB user agents (1.2 MiB, over this
    // spool's bound and never sendable in one batch), one event over the server's limit on
    // its own, and one the control plane rejects.
    let ua = "A".repeat(8 * 1024);
    let mut raw = String::new();
    for i in 0..152 {
        let e = match i {
            70 => with_agent(i, &"Z".repeat(100 * 1024)),
            100 => with_agent(i, POISON),
            _ => with_agent(i, &ua),
        };
        raw.push_str(&serde_json::to_string(&e).unwrap());
        raw.push('\n');
    }
    let max_bytes = 1 << 20;
    assert!(raw.len() as u64 > max_bytes);
    std::fs::write(&path, &raw).unwrap();

    let (p, sink) = start(&path, max_bytes, 100);
    let stats = p.stats();
    assert_eq!((stats.spooled, stats.truncated), (152, 151));
    assert!(stats.used_bytes < max_bytes, "capped on load: room again");
    p.record(event(152))
        .expect("an injection can be audited again");
    p.flush().await;

    let mut expected = tokens(0..100);
    expected.extend(tokens(101..152));
    expected.push("dropped:1".into());
    expected.push("tok-0152".into());
    let mut got = sink.tokens();
    // The report goes out after the drain; the new event may go before or after it.
    got.sort_by_key(|t| t.starts_with("dropped"));
    expected.sort_by_key(|t| t.starts_with("dropped"));
    assert_eq!(got, expected);
    assert!(
        sink.refusals().iter().all(|&s| s == 422),
        "{:?}",
        sink.refusals()
    );
    assert_eq!(dead_letters(&path).len(), 1);
    let stats = p.stats();
    assert_eq!((stats.spooled, stats.queued, stats.used_bytes), (0, 0, 0));
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        0,
        "spool file emptied"
    );
}

#[tokio::test]
async fn refusals_may_fill_only_a_quarter_of_the_spool_and_injections_keep_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool.jsonl");
    let max = RESERVED_EVENT_BYTES * 40;
    let (p, sink) = start(&path, max, 3);
    sink.set_down(true);
    // A flood of refused requests: each refusal reserves before it records.
    let mut refusals = 0;
    while p.try_reserve_refusal() {
        p.record_reserved(&event(refusals).borrowed());
        refusals += 1;
        assert!(refusals < 100, "refusals never stop being accepted");
    }
    assert!(refusals >= 1);
    assert!(
        p.stats().used_bytes <= max / REFUSAL_SHARE,
        "refusals stay within their share: {} of {max}",
        p.stats().used_bytes
    );
    // Injections still find room: the flood cannot turn them into audit_unavailable.
    for _ in 0..20 {
        assert!(
            p.try_reserve(1),
            "an injection was refused after a refusal flood"
        );
    }
}

#[test]
fn an_event_is_encoded_once_and_a_batch_body_is_what_serde_writes_for_the_batch() {
    let events: Vec<SidecarAuditEvent> = (0..3)
        .map(event)
        .chain([SidecarAuditEvent::audit_dropped(2, Utc::now())])
        .collect();
    let queued: Vec<bound::Queued> = events
        .iter()
        .map(|e| bound::Queued::capped(&e.borrowed()).0)
        .collect();
    for (q, e) in queued.iter().zip(&events) {
        assert_eq!(
            serde_json::from_slice::<SidecarAuditEvent>(&q.json).unwrap(),
            *e
        );
        assert_eq!(q.bytes, encoded_len(e) + 1, "the spool line's size");
        assert_eq!(q.is_report, e.dropped_count().is_some());
    }
    assert_eq!(
        bound::batch_body(&queued),
        serde_json::to_vec(&SidecarAuditBatch { events }).unwrap(),
        "the control plane receives exactly the batch it would have been sent before"
    );
    assert_eq!(
        bound::batch_body(&[]),
        br#"{"events":[]}"#.to_vec(),
        "and the envelope of BATCH_ENVELOPE_BYTES"
    );
    assert_eq!(
        bound::batch_body(&[]).len() as u64,
        bound::BATCH_ENVELOPE_BYTES
    );
}
