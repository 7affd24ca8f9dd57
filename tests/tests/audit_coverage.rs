//! What the audit log records, end to end through the real sidecar and control plane.
//!
//! An injection is one `secret.read`: a cold one is recorded by the control plane in the
//! transaction that resolved it (with the agent's User-Agent, which the sidecar passes on), a
//! warm one, served from the sidecar's cache, by the sidecar's report. Never both.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use agent_secret_testkit::eventually;
use agent_secret_testkit::harness::{agent, Harness, Issued};
use reqwest::StatusCode;

const VALUE: &str = "sk-coverage-0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_and_a_warm_injection_are_one_secret_read_each() {
    let h = Harness::builder()
        .secret("demo/echo/api_key", VALUE)
        .start()
        .await;
    let token = h.issue(agent().scope("secrets:read:demo/**")).await;
    let send = |user_agent: &'static str| {
        let client = h.agent(&token);
        let url = h.url("/echo");
        async move {
            client
                .get(url)
                .header("authorization", "Bearer {{secret:demo/echo/api_key}}")
                .header("user-agent", user_agent)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(send("cold-agent/1").await, StatusCode::OK);
    assert_eq!(send("warm-agent/1").await, StatusCode::OK);
    let reads = eventually(
        "both injections are in the log",
        Duration::from_secs(20),
        || async {
            let reads = h.audit("type=secret.read").await;
            let agents: Vec<String> = reads
                .iter()
                .filter_map(|e| e["user_agent"].as_str().map(str::to_owned))
                .collect();
            // The sidecar counts an event as sent only once the control plane's answer is
            // back, which may be after the event is visible in the log: wait for both. Once
            // its spool has drained, nothing else is on its way.
            let stats = h.sidecar.audit().unwrap().stats();
            let drained = (stats.spooled, stats.queued) == (0, 0);
            (drained && agents.iter().any(|a| a == "warm-agent/1")).then_some(reads)
        },
    )
    .await;
    assert_eq!(reads.len(), 2, "one event per injection: {reads:#?}");
    let cold = &reads[0];
    assert_eq!(cold["user_agent"], "cold-agent/1");
    assert_eq!(cold["actor"], format!("token:{}", token.id));
    assert_eq!(cold["path"], "demo/echo/api_key");
    assert_eq!(cold["destination_host"], h.upstream.authority());
    assert!(
        cold["reason"].as_str().unwrap().starts_with("version "),
        "recorded by the control plane as it resolved: {cold}"
    );
    let warm = &reads[1];
    assert_eq!(warm["user_agent"], "warm-agent/1");
    assert_eq!(warm["actor"], format!("token:{}", token.id));
    assert!(
        warm["reason"]
            .as_str()
            .unwrap()
            .contains("reported by sidecar"),
        "{warm}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_is_one_event_and_a_forged_token_is_an_auth_failure() {
    use agent_secret_core::credential::{issue_with_id, CredentialKind, Pepper};

    let h = Harness::builder()
        .secret("demo/echo/api_key", VALUE)
        .start()
        .await;
    let token = h.issue(agent().scope("secrets:read:demo/**")).await;
    // Decided by the control plane (nothing is cached yet) and written there; the sidecar
    // does not report it again.
    let refused = h
        .agent(&token)
        .get(h.url("/echo"))
        .header("authorization", "Bearer {{secret:other/api_key}}")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    // A token with a real id and a wrong secret part.
    let forged = Issued {
        id: token.id.clone(),
        token: issue_with_id(
            CredentialKind::Token,
            token.id.parse().unwrap(),
            &Pepper::generate(),
        )
        .token
        .expose()
        .to_owned(),
    };
    let res = h
        .agent(&forged)
        .get(h.url("/echo"))
        .header("authorization", "Bearer {{secret:demo/echo/api_key}}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PROXY_AUTHENTICATION_REQUIRED);
    eventually("both are in the log", Duration::from_secs(20), || async {
        let stats = h.sidecar.audit().unwrap().stats();
        (stats.spooled, stats.queued) == (0, 0) && !h.audit("type=auth.failed").await.is_empty()
    })
    .await;

    let reads = h.audit("type=secret.read").await;
    assert_eq!(reads.len(), 1, "one event for one refusal: {reads:#?}");
    assert_eq!(reads[0]["reason"], "scope_denied");
    assert_eq!(reads[0]["path"], "other/api_key");
    let failed = h.audit("type=auth.failed").await;
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(failed[0]["actor"], format!("token:{}", token.id));
    assert_eq!(failed[0]["reason"], "token_invalid");
    let text = serde_json::to_string(&failed).unwrap();
    assert!(!text.contains(&forged.token), "never the credential itself");
}
