//! The audit spool cannot be poisoned, end to end: the real sidecar reporting to the real
//! control plane (TLS, SQLite, local KMS), an agent sending injections through it.
//!
//! Before the fix, ~100 requests with long User-Agents built an audit batch over the control
//! plane's 64 KiB body limit; the 413 was retried forever, the spool filled and every
//! injection got 503 `audit_unavailable`, even after a restart. Each test here reproduces one
//! way in and asserts that injections keep working and the events reach the hash-chained log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use agent_secret_control_plane::service::Policy;
use agent_secret_core::api::SidecarAuditEvent;
use agent_secret_proxy::RunningSidecar;
use agent_secret_testkit::control_plane::{ControlPlane, Install, Tenant};
use agent_secret_testkit::sidecar;
use agent_secret_testkit::{eventually, Upstream};
use chrono::Utc;
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const KEY: &str = "sk-live-spool-0123456789abcdefXYZ";
/// Over this bound, the uncapped events of 150 long-User-Agent requests (~1.2 MiB) fill the
/// spool; capped they take ~120 KiB.
const MAX_SPOOL_BYTES: u64 = 1024 * 1024;
/// The User-Agent length that poisoned the spool.
const LONG: usize = 8 * 1024;

struct World {
    dir: tempfile::TempDir,
    install: Install,
    cp: ControlPlane,
    tenant: Tenant,
    upstream: Upstream,
}

impl World {
    async fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let install = Install::new(dir.path(), None).await;
        let cp =
            ControlPlane::serve(&install, "127.0.0.1:0".parse().unwrap(), Policy::default()).await;
        let tenant = Tenant::create(&cp, "acme").await;
        let upstream = Upstream::http().await;
        tenant
            .put_secret(&cp, "prod/api/key", KEY, &[&upstream.authority()])
            .await;
        World {
            dir,
            install,
            cp,
            tenant,
            upstream,
        }
    }

    fn spool_path(&self) -> std::path::PathBuf {
        self.dir.path().join("audit-spool.jsonl")
    }

    /// The real sidecar with its spool at [`spool_path`](Self::spool_path), bounded to
    /// [`MAX_SPOOL_BYTES`], and the default batch size and flush interval (so a burst of
    /// requests fills whole batches of 100).
    async fn sidecar(&self) -> RunningSidecar {
        let mut config = sidecar::config(&self.install, &self.cp, &self.tenant.sidecar_key);
        config.audit.spool_path = self.spool_path();
        config.audit.max_spool_bytes = MAX_SPOOL_BYTES;
        config.audit.batch_size = 100;
        config.audit.flush_interval_ms = 1000;
        config
            .hosts
            .push(sidecar::local_host(&self.upstream.authority()));
        sidecar::start(config).await
    }

    async fn token(&self) -> (String, String) {
        self.tenant
            .token(&self.cp, &["secrets:read:prod/**"], json!({}))
            .await
    }

    /// One injection through `sidecar` with `user_agent`; the response status.
    async fn inject(&self, sidecar: &RunningSidecar, token: &str, user_agent: &str) -> StatusCode {
        let proxy = reqwest::Proxy::http(format!("http://{}", sidecar.proxy_addr()))
            .unwrap()
            .basic_auth("agent", token);
        let client = reqwest::Client::builder().proxy(proxy).build().unwrap();
        client
            .get(format!("http://{}/echo", self.upstream.authority()))
            .header("authorization", "Bearer {{secret:prod/api/key}}")
            .header("user-agent", user_agent)
            .send()
            .await
            .unwrap()
            .status()
    }

    /// `secret.read` events whose user agent starts with `prefix`, once there are `n`.
    async fn reads_with_agent(&self, prefix: &str, n: usize) -> Vec<Value> {
        eventually(
            "the audit events reach the control plane's log",
            Duration::from_secs(30),
            || async {
                let events: Vec<Value> = self
                    .tenant
                    .audit(&self.cp, "type=secret.read")
                    .await
                    .into_iter()
                    .filter(|e| {
                        e["user_agent"]
                            .as_str()
                            .is_some_and(|ua| ua.starts_with(prefix))
                    })
                    .collect();
                (events.len() >= n).then_some(events)
            },
        )
        .await
    }

    async fn chain_is_valid(&self) {
        let verify = self
            .cp
            .ok(Method::GET, "/v1/audit/verify", &self.tenant.admin, None)
            .await;
        assert_eq!(verify["valid"], true, "{verify}");
    }
}

fn long_agent(prefix: &str, i: usize) -> String {
    let head = format!("{prefix}{i:03}-");
    format!("{head}{}", "A".repeat(LONG - head.len()))
}

async fn spool_drained(sidecar: &RunningSidecar) {
    eventually("the spool drains", Duration::from_secs(30), || async {
        let stats = sidecar.audit().unwrap().stats();
        (stats.spooled == 0 && stats.queued == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn long_user_agents_never_block_injections_and_reach_the_audit_log() {
    let w = World::new().await;
    let sidecar = w.sidecar().await;
    let (_, token) = w.token().await;
    // A burst, so the events fill batches of 100: ~72 KB of JSON each once the request path
    // keeps 512 characters of a User-Agent, over the 64 KiB the control plane accepts.
    let statuses: Vec<StatusCode> = futures::stream::iter(0..150)
        .map(|i| {
            let (w, sidecar, token) = (&w, &sidecar, &token);
            async move { w.inject(sidecar, token, &long_agent("long-", i)).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );

    let events = w.reads_with_agent("long-", 150).await;
    assert_eq!(events.len(), 150);
    for e in &events {
        let ua = e["user_agent"].as_str().unwrap();
        assert!(ua.chars().count() <= 512, "{ua}");
        assert_eq!(e["destination_host"], w.upstream.authority());
    }
    spool_drained(&sidecar).await;
    assert_eq!(
        w.inject(&sidecar, &token, "after-long").await,
        StatusCode::OK,
        "an injection still succeeds"
    );
    w.reads_with_agent("after-long", 1).await;
    let stats = sidecar.audit().unwrap().stats();
    assert_eq!(
        (stats.send_failures, stats.dead_lettered, stats.dropped),
        (0, 0, 0),
        "batches cut by bytes: the control plane never refused one"
    );
    w.chain_is_valid().await;
    sidecar.stop().await;
}

/// What a sidecar without the caps left behind: `count` events with 8 KiB user agents (and
/// one of 100 KiB, over the server's limit on its own), more bytes than the spool's bound.
fn write_poisoned_spool(path: &Path, token_id: &str, destination: &str, count: usize) {
    let mut raw = String::new();
    for i in 0..count {
        let user_agent = if i == count / 2 {
            format!("poisoned-{i:03}-{}", "Z".repeat(100 * 1024))
        } else {
            long_agent("poisoned-", i)
        };
        let event = SidecarAuditEvent {
            kind: Default::default(),
            token_id: Some(token_id.to_owned()),
            client_ip: Some("127.0.0.1".into()),
            user_agent: Some(user_agent),
            path: Some("prod/api/key".into()),
            destination_host: Some(destination.to_owned()),
            success: true,
            reason: None,
            occurred_at: Utc::now(),
        };
        raw.push_str(&serde_json::to_string(&event).unwrap());
        raw.push('\n');
    }
    assert!(raw.len() as u64 > MAX_SPOOL_BYTES, "the spool was full");
    std::fs::write(path, raw).unwrap();
}

#[tokio::test]
async fn a_restart_with_a_poisoned_spool_drains_it_and_injections_work_again() {
    let w = World::new().await;
    let (token_id, token) = w.token().await;
    // A first run, stopped; then the spool file as an older sidecar would have left it.
    let sidecar = w.sidecar().await;
    assert_eq!(
        w.inject(&sidecar, &token, "first-run").await,
        StatusCode::OK
    );
    spool_drained(&sidecar).await;
    sidecar.stop().await;
    write_poisoned_spool(&w.spool_path(), &token_id, &w.upstream.authority(), 150);

    let sidecar = w.sidecar().await;
    let events = w.reads_with_agent("poisoned-", 150).await;
    assert_eq!(events.len(), 150);
    assert!(events
        .iter()
        .all(|e| e["user_agent"].as_str().unwrap().chars().count() <= 512));
    spool_drained(&sidecar).await;
    assert_eq!(
        std::fs::metadata(w.spool_path()).unwrap().len(),
        0,
        "the spool file is empty"
    );
    assert_eq!(
        w.inject(&sidecar, &token, "after-restart").await,
        StatusCode::OK
    );
    w.reads_with_agent("after-restart", 1).await;
    assert_eq!(sidecar.audit().unwrap().stats().dead_lettered, 0);
    w.chain_is_valid().await;
    sidecar.stop().await;
}

#[tokio::test]
async fn a_report_of_dead_lettered_events_lands_in_the_chain_as_audit_dropped() {
    let w = World::new().await;
    let (token_id, _) = w.token().await;
    let read = SidecarAuditEvent {
        kind: Default::default(),
        token_id: Some(token_id),
        client_ip: Some("127.0.0.1".into()),
        user_agent: Some("report-test".into()),
        path: Some("prod/api/key".into()),
        destination_host: Some(w.upstream.authority()),
        success: true,
        reason: None,
        occurred_at: Utc::now(),
    };
    let report = SidecarAuditEvent::audit_dropped(3, Utc::now());
    let (status, body) =
        w.cp.call(
            Method::POST,
            "/v1/sidecar/audit",
            &w.tenant.sidecar_key,
            Some(json!({ "events": [read, report] })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 2);

    let dropped = w.tenant.audit(&w.cp, "type=audit.dropped").await;
    assert_eq!(dropped.len(), 1, "{dropped:?}");
    let reason = dropped[0]["reason"].as_str().unwrap();
    assert!(reason.starts_with("audit_dropped: 3 "), "{reason}");
    assert!(dropped[0]["actor"]
        .as_str()
        .unwrap()
        .starts_with("sidecar:"));
    assert_eq!(dropped[0]["success"], false);
    assert_eq!(w.reads_with_agent("report-test", 1).await.len(), 1);
    w.chain_is_valid().await;
}
