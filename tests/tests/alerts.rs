//! Anomaly alerts end to end: real agents' requests through the real sidecar and control plane
//! raise each rule's `alert.raised` (with the metric and the webhook's POST), a normal baseline
//! raises none, and the exfiltration rule revokes the token so that the sidecar refuses its
//! next request. The rules' thresholds and windows are unit-tested in
//! `control-plane/src/anomaly/tests.rs`; here they are lowered so a test reaches them quickly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_secret_control_plane::anomaly::Rules;
use agent_secret_control_plane::audit::{Actor, AuditDraft, AuditEventType};
use agent_secret_control_plane::service::alerts::{AlertSettings, AlertWebhook};
use agent_secret_control_plane::service::Policy;
use agent_secret_core::credential::{issue_with_id, CredentialKind, Pepper, PresentedCredential};
use agent_secret_core::ids::TenantId;
use agent_secret_core::secret::SecretString;
use agent_secret_testkit::eventually;
use agent_secret_testkit::harness::{agent, Harness, Issued};
use agent_secret_testkit::sidecar::local_host;
use agent_secret_testkit::upstream::Upstream;
use axum::http::HeaderMap;
use axum::routing::post;
use chrono::{DateTime, SubsecRound, Timelike, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const VALUE: &str = "sk-alerts-0123456789abcdef";

/// What the alert webhook received: (Authorization header, body).
type Received = Arc<Mutex<Vec<(String, Value)>>>;

async fn webhook() -> (String, Received) {
    let received: Received = Arc::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/alerts",
        post(move |headers: HeaderMap, body: axum::Json<Value>| {
            let sink = sink.clone();
            async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                sink.lock().unwrap().push((auth, body.0));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/alerts"), received)
}

fn alerting(rules: Rules, webhook: &str) -> Policy {
    let mut alerts = AlertSettings::on(rules);
    alerts.poll_interval = Duration::from_millis(50);
    alerts.webhook = Some(AlertWebhook {
        url: webhook.to_owned(),
        token: Some(SecretString::new("alert-hook-token".to_owned())),
        ca_pem: None,
    });
    Policy {
        alerts,
        ..Policy::default()
    }
}

fn tenant_id(h: &Harness) -> TenantId {
    h.tenant.id.parse().unwrap()
}

/// Waits until the alert worker has judged every event written so far.
async fn caught_up(h: &Harness) {
    let store = h.cp.app.store.clone();
    let tenant = tenant_id(h);
    eventually(
        "the alert worker has seen every event",
        Duration::from_secs(20),
        || async {
            let head = store
                .audit_head(tenant)
                .await
                .unwrap()
                .map_or(0, |(s, _)| s);
            let cursor = store.sink_cursor(tenant, ".alerts").await.unwrap();
            cursor >= head
        },
    )
    .await;
}

/// The `alert.raised` reasons of anomaly rules (rate-limit alerts left out).
async fn alerts(h: &Harness) -> Vec<String> {
    h.audit("type=alert.raised&limit=1000")
        .await
        .iter()
        .filter_map(|e| e["reason"].as_str().map(str::to_owned))
        .filter(|r| !r.starts_with("rate_limited"))
        .collect()
}

async fn await_alert(h: &Harness, prefix: &str) -> String {
    eventually(
        &format!("an alert `{prefix}`"),
        Duration::from_secs(20),
        || async {
            alerts(h)
                .await
                .into_iter()
                .find(|reason| reason.starts_with(prefix))
        },
    )
    .await
}

/// The agent's request through the sidecar to `url` with `header`, from `from`.
async fn send(h: &Harness, token: &Issued, url: &str, header: &str, from: &str) -> StatusCode {
    let proxy = reqwest::Proxy::http(format!("http://{}", h.sidecar.proxy_addr()))
        .unwrap()
        .basic_auth("agent", &token.token);
    let client = reqwest::Client::builder()
        .proxy(proxy)
        .local_address(from.parse::<IpAddr>().unwrap())
        .build()
        .unwrap();
    client
        .get(url)
        .header("authorization", header)
        .send()
        .await
        .unwrap()
        .status()
}

fn placeholder(path: &str) -> String {
    format!("Bearer {{{{secret:{path}}}}}")
}

async fn metric(h: &Harness, rule: &str) -> u64 {
    let text = h.cp.metrics_text().await;
    let series = format!("agent_secret_store_anomaly_alerts_total{{rule=\"{rule}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placeholder_toward_an_unbound_host_revokes_the_token_and_the_next_request_is_refused() {
    let (hook, received) = webhook().await;
    let elsewhere = Upstream::http().await;
    let other = elsewhere.authority();
    let h = Harness::builder()
        .secret("demo/echo/api_key", VALUE)
        .policy(alerting(Rules::default(), &hook))
        .sidecar(move |config| config.hosts.push(local_host(&other)))
        .start()
        .await;
    let token = h.issue(agent().scope("secrets:read:demo/**")).await;
    let header = placeholder("demo/echo/api_key");
    let home = h.url("/echo");

    // The baseline: the bound host, twice.
    for _ in 0..2 {
        assert_eq!(
            send(&h, &token, &home, &header, "127.0.0.1").await,
            StatusCode::OK
        );
    }
    caught_up(&h).await;
    assert_eq!(
        alerts(&h).await,
        Vec::<String>::new(),
        "a normal baseline is quiet"
    );

    // The same placeholder toward a host the secret is not bound to.
    let away = format!("http://{}/collect", elsewhere.authority());
    assert_eq!(
        send(&h, &token, &away, &header, "127.0.0.1").await,
        StatusCode::FORBIDDEN
    );
    assert!(
        elsewhere.received().is_empty(),
        "nothing reached the other host"
    );
    let reason = await_alert(&h, "exfiltration: ").await;
    assert!(
        reason.starts_with(&format!("exfiltration: token:{}: ", token.id)),
        "{reason}"
    );
    assert!(reason.contains(&elsewhere.authority()), "{reason}");
    assert!(!reason.contains(VALUE));

    // The token is revoked by the system, and the sidecar refuses it from now on.
    let revoked = h.audit("type=token.revoked").await;
    assert_eq!(revoked.len(), 1, "{revoked:#?}");
    assert_eq!(revoked[0]["actor"], "system");
    assert!(revoked[0]["reason"]
        .as_str()
        .unwrap()
        .contains("exfiltration alert"));
    eventually(
        "the sidecar refuses the revoked token",
        Duration::from_secs(20),
        || async {
            send(&h, &token, &home, &header, "127.0.0.1").await
                == StatusCode::PROXY_AUTHENTICATION_REQUIRED
        },
    )
    .await;

    // The webhook heard of it, with its token; the metric counts it.
    let posted = eventually(
        "the webhook got the alert",
        Duration::from_secs(20),
        || async { received.lock().unwrap().first().cloned() },
    )
    .await;
    assert_eq!(posted.0, "Bearer alert-hook-token");
    assert_eq!(posted.1["rule"], "exfiltration");
    assert_eq!(posted.1["subject"], format!("token:{}", token.id));
    assert_eq!(posted.1["token_revoked"], true);
    assert_eq!(metric(&h, "exfiltration").await, 1);
    assert_eq!(metric(&h, "new_ip").await, 0);
}

/// Appends successful reads by `token` at `times` to the log: history the baselines learn
/// from (the live events that trip the rules are real).
async fn seed_reads(h: &Harness, token: &Issued, times: impl IntoIterator<Item = DateTime<Utc>>) {
    for at in times {
        let mut draft = AuditDraft::new(AuditEventType::SecretRead, Actor::new("token", &token.id))
            .client(Some("127.0.0.1".into()), None)
            .path("demo/echo/api_key")
            .reason("version 1");
        draft.occurred_at = at.trunc_subsecs(6);
        h.cp.app
            .store
            .append_audit(tenant_id(h), draft)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_rule_fires_on_its_scenario_after_a_quiet_baseline() {
    let (hook, received) = webhook().await;
    let mut rules = Rules::default();
    rules.denial_burst.threshold = 6;
    rules.auth_failed_burst.threshold = 4;
    rules.read_spike.window_seconds = 5;
    rules.read_spike.factor = 4.0;
    rules.read_spike.min_reads = 12;
    rules.read_spike.min_history_windows = 3;
    rules.unusual_hours.min_reads = 50;
    rules.unusual_hours.max_share = 0.15;
    let h = Harness::builder()
        .secret("demo/echo/api_key", VALUE)
        .policy(alerting(rules, &hook))
        .start()
        .await;
    let scope = "secrets:read:demo/**";
    let denied = h.issue(agent().scope(scope)).await;
    let roaming = h.issue(agent().scope(scope)).await;
    let above = h.issue(agent().scope(scope)).await;
    let busy = h.issue(agent().scope(scope)).await;
    let header = placeholder("demo/echo/api_key");
    let home = h.url("/echo");

    // History: `busy` read about once a window over the last minute.
    let now = Utc::now();
    let minute = (0..12).map(|i| now - chrono::Duration::seconds(61 - 5 * i));
    seed_reads(&h, &busy, minute).await;

    // A normal baseline: each token reads a few times, one refusal, from the usual address.
    for token in [&denied, &roaming, &above, &busy] {
        for _ in 0..2 {
            assert_eq!(
                send(&h, token, &home, &header, "127.0.0.1").await,
                StatusCode::OK
            );
        }
    }
    let outside = placeholder("other/api_key");
    assert_eq!(
        send(&h, &denied, &home, &outside, "127.0.0.1").await,
        StatusCode::FORBIDDEN
    );
    caught_up(&h).await;
    assert_eq!(
        alerts(&h).await,
        Vec::<String>::new(),
        "a normal baseline is quiet"
    );

    // denial_burst: refusal after refusal.
    for _ in 0..5 {
        send(&h, &denied, &home, &outside, "127.0.0.1").await;
    }
    await_alert(&h, &format!("denial_burst: token:{}: ", denied.id)).await;
    await_alert(&h, &format!("denial_burst: agent:{}: ", h.tenant.agent_id)).await;

    // new_ip: a token from an address it never used.
    assert_eq!(
        send(&h, &roaming, &home, &header, "127.0.0.2").await,
        StatusCode::OK
    );
    let reason = await_alert(&h, &format!("new_ip: token:{}: ", roaming.id)).await;
    assert!(reason.contains("used from 127.0.0.2"), "{reason}");

    // above_sensitivity: a critical secret appears under the token's wildcard.
    h.cp.ok(
        Method::PUT,
        "/v1/secrets/demo/crown_jewels",
        &h.tenant.admin,
        Some(json!({"value": VALUE, "allowed_hosts": [h.upstream.authority()], "sensitivity": "critical"})),
    )
    .await;
    let status = send(
        &h,
        &above,
        &home,
        &placeholder("demo/crown_jewels"),
        "127.0.0.1",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    await_alert(&h, &format!("above_sensitivity: token:{}: ", above.id)).await;

    // read_spike: `busy` reads far above its rate.
    for _ in 0..14 {
        assert_eq!(
            send(&h, &busy, &home, &header, "127.0.0.1").await,
            StatusCode::OK
        );
    }
    await_alert(&h, &format!("read_spike: token:{}: ", busy.id)).await;

    // auth_failed_burst: an operator credential with a real id and a wrong secret, again
    // and again (the aggregated burst is written when its window closes; closed here).
    let admin_id = PresentedCredential::parse(&h.tenant.admin).unwrap().id;
    let forged = issue_with_id(CredentialKind::Operator, admin_id, &Pepper::generate());
    for _ in 0..5 {
        let (status, _) =
            h.cp.call(Method::GET, "/v1/secrets", forged.token.expose(), None)
                .await;
        assert!(
            status == StatusCode::UNAUTHORIZED || status == StatusCode::TOO_MANY_REQUESTS,
            "{status}"
        );
    }
    let app = h.cp.app.clone();
    app.limits
        .auth_failures
        .flush(app.store.as_ref(), true)
        .await;
    await_alert(&h, "auth_failed_burst: ip:127.0.0.1: ").await;

    // unusual_hours: the agent's history says it works twelve hours from now (a hundred reads
    // in that hour on each of the five days before), then it reads now.
    let hour =
        Utc::now().with_minute(0).unwrap().with_second(0).unwrap() - chrono::Duration::hours(12);
    let days = (1..=5).rev().flat_map(|day| {
        (0..100)
            .map(move |i| hour - chrono::Duration::days(day) + chrono::Duration::seconds(30 * i))
    });
    seed_reads(&h, &roaming, days).await;
    assert_eq!(
        send(&h, &roaming, &home, &header, "127.0.0.1").await,
        StatusCode::OK
    );
    await_alert(&h, &format!("unusual_hours: agent:{}: ", h.tenant.agent_id)).await;

    // Nothing was revoked by these rules (only exfiltration revokes by default); the webhook
    // heard every alert.
    assert!(h.audit("type=token.revoked").await.is_empty());
    let expected: std::collections::BTreeSet<String> = [
        "denial_burst",
        "new_ip",
        "above_sensitivity",
        "read_spike",
        "auth_failed_burst",
        "unusual_hours",
    ]
    .map(String::from)
    .into();
    eventually(
        "the webhook heard every alert",
        Duration::from_secs(20),
        || async {
            let posted: std::collections::BTreeSet<String> = received
                .lock()
                .unwrap()
                .iter()
                .map(|(_, body)| body["rule"].as_str().unwrap().to_owned())
                .collect();
            expected.is_subset(&posted)
        },
    )
    .await;
}
