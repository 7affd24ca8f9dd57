//! Request rate limits of the control plane over real sockets: each limit answers 429
//! `rate_limited` with `Retry-After`, counts the refusal in its metric and raises one
//! `alert.raised` event per subject per window, while other subjects go on unaffected; failed
//! authentications are aggregated into few `auth.failed` events that carry their count; and
//! the CSV export neutralises formulas.
//!
//! Clients connect from distinct loopback addresses (127.0.0.2, 127.0.0.3, ...) so that
//! per-address limits can be told apart; 127.0.0.1 is the admin's own address.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod served;
mod support;

use std::time::Duration;

use agent_secret_control_plane::config::{Config, RateLimit, RateLimitsConfig};
use agent_secret_core::api::{SidecarAuditBatch, SidecarAuditEvent};
use agent_secret_core::credential::{issue_with_id, PresentedCredential};
use agent_secret_core::credential::{CredentialKind, Pepper};
use reqwest::StatusCode;
use serde_json::{json, Value};
use served::{roomy_server, Served};

const TIGHT: RateLimit = RateLimit {
    per_second: 1,
    burst: 3,
};
const ROOMY: RateLimit = RateLimit {
    per_second: 10_000,
    burst: 10_000,
};

/// Every limit roomy, alerts once a minute; a test narrows the one it exercises.
fn roomy_limits() -> RateLimitsConfig {
    RateLimitsConfig {
        tokens_per_agent: ROOMY,
        tokens_per_ip: ROOMY,
        resolve_per_sidecar: ROOMY,
        resolve_per_ip: ROOMY,
        auth_failures_per_ip: ROOMY,
        mcp_per_agent: ROOMY,
        alert_window_seconds: 60,
    }
}

/// Asserts a 429 `rate_limited` with a whole-seconds `Retry-After` of at least 1.
async fn assert_rate_limited(response: reqwest::Response, what: &str) {
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS, "{what}");
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .unwrap_or_else(|| panic!("{what}: no Retry-After"))
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1, "{what}: Retry-After {retry_after}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{what}");
}

async fn issue(served: &Served, from: &str, agent_key: &str) -> reqwest::Response {
    served
        .client_from(from)
        .post(served.url("/v1/tokens"))
        .bearer_auth(agent_key)
        .json(&json!({"scopes": ["secrets:read:app/*"], "ttl_seconds": 600}))
        .send()
        .await
        .unwrap()
}

async fn resolve(served: &Served, from: &str, sidecar_key: &str, token: &str) -> reqwest::Response {
    served
        .client_from(from)
        .post(served.url("/v1/sidecar/resolve"))
        .bearer_auth(sidecar_key)
        .json(&json!({"token": token, "paths": [], "destination_host": "api.example.com", "client_ip": "10.0.0.1"}))
        .send()
        .await
        .unwrap()
}

/// Sends until a request is refused 429 (at most 30 tries): the refusal and the statuses of
/// the requests before it. Buckets refill while a test runs, so how many pass before the
/// refusal is at least the burst, not exactly it.
async fn until_refused<F, Fut>(mut send: F) -> (reqwest::Response, Vec<StatusCode>)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = reqwest::Response>,
{
    let mut before = Vec::new();
    for _ in 0..30 {
        let response = send().await;
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            return (response, before);
        }
        before.push(response.status());
    }
    panic!("never refused: {before:?}");
}

/// The `alert.raised` events naming `limit`.
async fn alerts_for(served: &Served, limit: &str) -> Vec<Value> {
    served
        .audit("alert.raised")
        .await
        .into_iter()
        .filter(|e| {
            e["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with(&format!("rate_limited: {limit} ")))
        })
        .collect()
}

#[tokio::test]
async fn token_issuance_is_limited_per_agent_key() {
    let served = Served::builder()
        .server(roomy_server())
        .rate_limits(RateLimitsConfig {
            tokens_per_agent: TIGHT,
            ..roomy_limits()
        })
        .tenant("acme")
        .start()
        .await;
    let (noisy_id, noisy) = served.agent("noisy").await;
    let (_, quiet) = served.agent("quiet").await;
    let (refused, before) = until_refused(|| issue(&served, "127.0.0.2", &noisy)).await;
    assert!(
        before.len() >= 3 && before.iter().all(|s| *s == 201),
        "{before:?}"
    );
    assert_rate_limited(refused, "a token past the agent's burst").await;
    let (refused, _) = until_refused(|| issue(&served, "127.0.0.2", &noisy)).await;
    assert_rate_limited(refused, "another token past the agent's burst").await;
    // Another agent on the same address is unaffected.
    assert_eq!(issue(&served, "127.0.0.2", &quiet).await.status(), 201);

    assert_eq!(
        served.metric("rate_limited_total{limit=\"tokens_per_agent\"}"),
        2.0
    );
    let alerts = alerts_for(&served, "tokens_per_agent").await;
    assert_eq!(
        alerts.len(),
        1,
        "one alert per subject per window: {alerts:?}"
    );
    assert_eq!(alerts[0]["actor"], format!("agent:{noisy_id}"));
    assert_eq!(alerts[0]["ip"], "127.0.0.2");
    served.stop().await;
}

/// One JSON-RPC `ping` to `/mcp`.
async fn mcp_ping(served: &Served, credential: &str) -> reqwest::Response {
    served
        .client_from("127.0.0.3")
        .post(served.url("/mcp"))
        .bearer_auth(credential)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn mcp_requests_are_limited_per_agent() {
    let served = Served::builder()
        .server(roomy_server())
        .rate_limits(RateLimitsConfig {
            mcp_per_agent: TIGHT,
            ..roomy_limits()
        })
        .tenant("acme")
        .start()
        .await;
    let (noisy_id, noisy) = served.agent("noisy").await;
    let (_, quiet) = served.agent("quiet").await;
    let (refused, before) = until_refused(|| mcp_ping(&served, &noisy)).await;
    assert!(
        before.len() >= 3 && before.iter().all(|s| *s == 200),
        "{before:?}"
    );
    assert_rate_limited(refused, "an MCP request past the agent's burst").await;
    assert_eq!(mcp_ping(&served, &quiet).await.status(), 200);
    assert_eq!(
        served.metric("rate_limited_total{limit=\"mcp_per_agent\"}"),
        1.0
    );
    let alerts = alerts_for(&served, "mcp_per_agent").await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["actor"], format!("agent:{noisy_id}"));
    served.stop().await;
}

#[tokio::test]
async fn token_issuance_is_limited_per_client_address() {
    let served = Served::builder()
        .server(roomy_server())
        .rate_limits(RateLimitsConfig {
            tokens_per_ip: TIGHT,
            ..roomy_limits()
        })
        .tenant("acme")
        .start()
        .await;
    let (_, a) = served.agent("a").await;
    let (_, b) = served.agent("b").await;
    // Several agents behind one address share its bucket.
    let mut turn = 0;
    let (refused, before) = until_refused(|| {
        turn += 1;
        issue(&served, "127.0.0.2", if turn % 2 == 0 { &a } else { &b })
    })
    .await;
    assert!(
        before.len() >= 3 && before.iter().all(|s| *s == 201),
        "{before:?}"
    );
    assert_rate_limited(refused, "a token past the address's burst").await;
    // The same agent from another address is unaffected.
    assert_eq!(issue(&served, "127.0.0.3", &b).await.status(), 201);

    assert_eq!(
        served.metric("rate_limited_total{limit=\"tokens_per_ip\"}"),
        1.0
    );
    assert_eq!(alerts_for(&served, "tokens_per_ip").await.len(), 1);
    served.stop().await;
}

/// A sidecar key, and a token it can validate (a resolve with no paths).
async fn sidecar_and_token(served: &Served, name: &str) -> (String, String) {
    let (_, sidecar) = served.sidecar(name).await;
    let (_, agent) = served.agent(&format!("{name}-agent")).await;
    let token: Value = issue(served, "127.0.0.1", &agent)
        .await
        .json()
        .await
        .unwrap();
    (sidecar, token["token"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn resolve_is_limited_per_sidecar_key() {
    let served = Served::builder()
        .server(roomy_server())
        .rate_limits(RateLimitsConfig {
            resolve_per_sidecar: TIGHT,
            ..roomy_limits()
        })
        .tenant("acme")
        .start()
        .await;
    let (busy, token) = sidecar_and_token(&served, "busy").await;
    let (other, other_token) = sidecar_and_token(&served, "other").await;
    let (refused, before) = until_refused(|| resolve(&served, "127.0.0.2", &busy, &token)).await;
    assert!(
        before.len() >= 3 && before.iter().all(|s| *s == 200),
        "{before:?}"
    );
    assert_rate_limited(refused, "a resolve past the sidecar's burst").await;
    assert_eq!(
        resolve(&served, "127.0.0.2", &other, &other_token)
            .await
            .status(),
        200,
        "another sidecar on the same address was throttled"
    );
    assert_eq!(
        served.metric("rate_limited_total{limit=\"resolve_per_sidecar\"}"),
        1.0
    );
    assert_eq!(alerts_for(&served, "resolve_per_sidecar").await.len(), 1);
    served.stop().await;
}

#[tokio::test]
async fn resolve_is_limited_per_sidecar_address() {
    let served = Served::builder()
        .server(roomy_server())
        .rate_limits(RateLimitsConfig {
            resolve_per_ip: TIGHT,
            ..roomy_limits()
        })
        .tenant("acme")
        .start()
        .await;
    let (a, token_a) = sidecar_and_token(&served, "a").await;
    let (b, token_b) = sidecar_and_token(&served, "b").await;
    let mut turn = 0;
    let (refused, before) = until_refused(|| {
        turn += 1;
        if turn % 2 == 0 {
            resolve(&served, "127.0.0.2", &a, &token_a)
        } else {
            resolve(&served, "127.0.0.2", &b, &token_b)
        }
    })
    .await;
    assert!(
        before.len() >= 3 && before.iter().all(|s| *s == 200),
        "{before:?}"
    );
    assert_rate_limited(refused, "a resolve past the address's burst").await;
    assert_eq!(
        resolve(&served, "127.0.0.3", &b, &token_b).await.status(),
        200
    );
    assert_eq!(
        served.metric("rate_limited_total{limit=\"resolve_per_ip\"}"),
        1.0
    );
    assert_eq!(alerts_for(&served, "resolve_per_ip").await.len(), 1);
    served.stop().await;
}

/// A well-formed operator credential with the admin's id and a wrong secret.
fn forged_admin(served: &Served) -> String {
    let id = PresentedCredential::parse(served.admin()).unwrap().id;
    issue_with_id(CredentialKind::Operator, id, &Pepper::generate())
        .token
        .expose()
        .to_owned()
}

async fn list_agents(served: &Served, from: &str, credential: &str) -> reqwest::Response {
    served
        .client_from(from)
        .get(served.url("/v1/agents"))
        .bearer_auth(credential)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn failed_authentications_are_limited_per_address_and_a_valid_key_still_passes() {
    let served = Served::builder()
        .server(roomy_server())
        .rate_limits(RateLimitsConfig {
            auth_failures_per_ip: RateLimit {
                per_second: 1,
                burst: 5,
            },
            ..roomy_limits()
        })
        .tenant("acme")
        .start()
        .await;
    let forged = forged_admin(&served);
    let (refused, before) = until_refused(|| list_agents(&served, "127.0.0.2", &forged)).await;
    assert!(
        before.len() >= 5 && before.iter().all(|s| *s == 401),
        "{before:?}"
    );
    assert_rate_limited(refused, "a failure past the address's burst").await;
    // While over the limit, further bad credentials from the address wait...
    assert_rate_limited(
        list_agents(&served, "127.0.0.2", &forged).await,
        "another bad credential from a throttled address",
    )
    .await;
    // ...but a credential that verifies passes: garbage from a neighbour sharing the address
    // (one egress NAT, agents beside a sidecar) must not lock the sidecars and operators out.
    assert_eq!(
        list_agents(&served, "127.0.0.2", served.admin())
            .await
            .status(),
        200,
        "a valid key from a throttled address"
    );
    // Another address is unaffected.
    assert_eq!(
        list_agents(&served, "127.0.0.3", served.admin())
            .await
            .status(),
        200
    );
    assert!(served.metric("rate_limited_total{limit=\"auth_failures_per_ip\"}") >= 2.0);
    assert_eq!(
        served.metric("auth_failures_total"),
        before.len() as f64 + 1.0,
        "every refused credential is counted, and none while the address waits"
    );
    let alerts = alerts_for(&served, "auth_failures_per_ip").await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["ip"], "127.0.0.2");
    served.stop().await;
}

/// How many failures an `auth.failed` event stands for: 1, or 1 + N for a burst summary.
fn failures_in(event: &Value) -> u64 {
    let reason = event["reason"].as_str().unwrap();
    match reason.strip_prefix("invalid_credential: ") {
        None => {
            assert_eq!(reason, "invalid_credential");
            1
        }
        Some(summary) => {
            let (n, rest) = summary.split_once(' ').unwrap();
            assert!(
                rest.starts_with("more failed authentications from this address in "),
                "{reason}"
            );
            n.parse::<u64>().unwrap()
        }
    }
}

#[tokio::test]
async fn a_burst_of_failed_authentications_is_audited_as_few_events_with_its_count() {
    let served = Served::builder()
        .server(roomy_server())
        .rate_limits(RateLimitsConfig {
            alert_window_seconds: 3,
            ..RateLimitsConfig::default()
        })
        .tenant("acme")
        .start()
        .await;
    let forged = forged_admin(&served);
    let client = served.client_from("127.0.0.2");
    for _ in 0..50 {
        let r = client
            .get(served.url("/v1/agents"))
            .bearer_auth(&forged)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    // Each window's summary is written by the server itself once the window closes.
    let mut events = Vec::new();
    for _ in 0..400 {
        events = served.audit("auth.failed").await;
        if events.iter().map(failures_in).sum::<u64>() >= 50 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        events.iter().map(failures_in).sum::<u64>(),
        50,
        "every failure is accounted for: {events:?}"
    );
    assert!(
        events.len() <= 6,
        "50 failures in a few windows must be a few events, not {}: {events:?}",
        events.len()
    );
    assert!(
        events.iter().any(|e| failures_in(e) > 1),
        "no summary event carries a count: {events:?}"
    );
    for event in &events {
        assert_eq!(event["ip"], "127.0.0.2");
        assert_eq!(event["success"], false);
        assert!(
            !event.to_string().contains(&forged),
            "credential in an event"
        );
    }
    served.stop().await;
}

#[tokio::test]
async fn csv_export_neutralises_formulas_from_a_sidecar_user_agent() {
    let served = Served::builder()
        .server(roomy_server())
        .rate_limits(roomy_limits())
        .tenant("acme")
        .start()
        .await;
    let (_, sidecar) = served.sidecar("host-1").await;
    let formula = r#"=HYPERLINK("http://x","y")"#;
    let event = SidecarAuditEvent {
        kind: Default::default(),
        token_id: None,
        client_ip: Some("10.0.0.1".into()),
        user_agent: Some(formula.into()),
        path: Some("app/key".into()),
        destination_host: Some("api.example.com".into()),
        success: true,
        reason: None,
        occurred_at: chrono::Utc::now(),
    };
    let r = served
        .client_from("127.0.0.1")
        .post(served.url("/v1/sidecar/audit"))
        .bearer_auth(&sidecar)
        .json(&SidecarAuditBatch {
            events: vec![event],
        })
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    let csv = served
        .client_from("127.0.0.1")
        .get(served.url("/v1/audit?format=csv"))
        .bearer_auth(served.admin())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let headers = reader.headers().unwrap().clone();
    let ua = headers.iter().position(|h| h == "user_agent").unwrap();
    let cells: Vec<String> = reader
        .records()
        .map(|r| r.unwrap()[ua].to_owned())
        .filter(|cell| cell.contains("HYPERLINK"))
        .collect();
    assert_eq!(cells, vec![format!("'{formula}")], "{csv}");
    // JSON keeps the value as recorded.
    let json = served.audit("secret.read").await;
    assert!(json.iter().any(|e| e["user_agent"] == formula));
    served.stop().await;
}

#[test]
fn limits_come_from_toml_and_environment_with_documented_defaults() {
    let defaults = Config::load(None, &|_| None).unwrap();
    assert_eq!(
        defaults.rate_limits.resolve_per_sidecar,
        RateLimit {
            per_second: 10_000,
            burst: 20_000
        }
    );
    assert_eq!(defaults.server.max_connections_per_ip, 256);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cp.toml");
    std::fs::write(
        &file,
        "[rate_limits]\ntokens_per_agent = { per_second = 5, burst = 7 }\n[server]\nheader_read_timeout_seconds = 3\n",
    )
    .unwrap();
    let env = |name: &str| match name {
        "AGENT_SECRET_RATE_LIMITS_TOKENS_PER_AGENT_BURST" => Some("9".to_owned()),
        "AGENT_SECRET_SERVER_MAX_CONNECTIONS_PER_IP" => Some("12".to_owned()),
        _ => None,
    };
    let config = Config::load(Some(&file), &env).unwrap();
    assert_eq!(
        config.rate_limits.tokens_per_agent,
        RateLimit {
            per_second: 5,
            burst: 9
        }
    );
    assert_eq!(config.server.header_read_timeout_seconds, 3);
    assert_eq!(config.server.max_connections_per_ip, 12);

    let bad = |name: &'static str, value: &'static str| {
        move |n: &str| (n == name).then(|| value.to_owned())
    };
    let err = Config::load(
        None,
        &bad("AGENT_SECRET_RATE_LIMITS_RESOLVE_PER_IP_PER_SECOND", "0"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("rate_limits.resolve_per_ip"), "{err}");
    let err = Config::load(None, &bad("AGENT_SECRET_SERVER_MAX_HEADER_BYTES", "100"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("server.max_header_bytes"), "{err}");
}
