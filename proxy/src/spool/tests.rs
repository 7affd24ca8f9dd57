#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_secret_core::api::{SidecarAuditBatch, SidecarAuditEvent};
use chrono::Utc;

use super::*;

/// Accepts or refuses batches depending on a switch; remembers what it accepted.
#[derive(Default)]
struct FakeSink {
    down: AtomicBool,
    accepted: Mutex<Vec<Vec<SidecarAuditEvent>>>,
}

#[async_trait::async_trait]
impl AuditSink for FakeSink {
    async fn send(&self, batch: &SidecarAuditBatch) -> Result<(), SinkError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(SinkError {
                retryable: true,
                message: "connection refused".into(),
            });
        }
        self.accepted.lock().unwrap().push(batch.events.clone());
        Ok(())
    }
}

impl FakeSink {
    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
    fn tokens(&self) -> Vec<String> {
        let accepted = self.accepted.lock().unwrap();
        accepted
            .iter()
            .flatten()
            .map(|e| e.token_id.clone().unwrap())
            .collect()
    }
    fn batch_sizes(&self) -> Vec<usize> {
        self.accepted.lock().unwrap().iter().map(Vec::len).collect()
    }
}

fn event(i: usize) -> SidecarAuditEvent {
    SidecarAuditEvent {
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
    let one = file::encoded_len(&event(0)) + 1;
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
    p.record_reserved(event(0));
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
