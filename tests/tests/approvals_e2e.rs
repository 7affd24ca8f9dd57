//! Issue 12 end to end: a critical secret behind two humans and a time lock, through the real
//! sidecar, the real control plane over HTTPS and a real upstream. The agent's token is refused
//! `approval_pending`; two approvers, each logged in with password and TOTP, approve through
//! the session API; once the (test-shortened) time lock has run out, the same token injects.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use agent_secret_control_plane::service::approvals::ApprovalSettings;
use agent_secret_control_plane::service::Policy;
use agent_secret_core::policy::approval::{ApprovalPolicy, Requirement};
use agent_secret_testkit::eventually;
use agent_secret_testkit::harness::Harness;
use agent_secret_testkit::human::HumanLogin;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const ROOT: &str = "root-credential-0123456789-abcdef";
const DELAY: Duration = Duration::from_secs(3);

fn policy() -> Policy {
    let defaults = ApprovalPolicy::default();
    Policy {
        approvals: ApprovalSettings {
            policy: ApprovalPolicy {
                critical: Requirement {
                    approvals: 2,
                    delay: DELAY,
                },
                ..defaults
            },
            // The activation task need not be the one that notices: the resolve does.
            activation_interval: Duration::from_secs(3600),
            ..ApprovalSettings::default()
        },
        ..Policy::default()
    }
}

/// The system with a critical secret at `vault/root`, and the agent's token for it as the API
/// answered it.
async fn critical_behind_approval() -> (Harness, Value) {
    let h = Harness::builder().policy(policy()).start().await;
    let host = h.upstream.authority();
    h.cp.ok(
        Method::PUT,
        "/v1/secrets/vault/root",
        &h.tenant.admin,
        Some(json!({"value": ROOT, "sensitivity": "critical", "allowed_hosts": [host]})),
    )
    .await;
    let issued =
        h.cp.ok(
            Method::POST,
            "/v1/tokens",
            &h.tenant.agent_key,
            Some(json!({"scopes": ["secrets:read:vault/*"], "ttl_seconds": 600})),
        )
        .await;
    (h, issued)
}

/// What the agent sees when it sends `{{secret:vault/root}}` upstream: the status and the
/// error code (empty when the request went through).
async fn send(h: &Harness, agent: &reqwest::Client) -> (StatusCode, String) {
    let res = agent
        .get(h.url("/echo"))
        .header("authorization", "Bearer {{secret:vault/root}}")
        .send()
        .await
        .unwrap();
    let status = res.status();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (status, code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_humans_and_the_time_lock_release_a_critical_secret_to_the_same_token() {
    let (h, issued) = critical_behind_approval().await;
    assert_eq!(issued["status"], "pending_approval", "{issued}");
    let approval = issued["approval_id"].as_str().unwrap().to_owned();
    let token = agent_secret_testkit::harness::Issued {
        id: issued["id"].as_str().unwrap().to_owned(),
        token: issued["token"].as_str().unwrap().to_owned(),
    };
    let agent = h.agent(&token);
    assert_eq!(
        send(&h, &agent).await,
        (StatusCode::FORBIDDEN, "approval_pending".to_owned())
    );

    let alice = HumanLogin::create(&h.cp, &h.tenant.id, &h.tenant.admin, "alice", "approver").await;
    let bob = HumanLogin::create(&h.cp, &h.tenant.id, &h.tenant.admin, "bob", "approver").await;
    // The approvers review what it would unlock and approve that digest.
    let (status, shown) = alice
        .call(Method::GET, &format!("/v1/approvals/{approval}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(
        shown["unlocks"]["secrets"],
        json!([{"path": "vault/root", "sensitivity": "critical"}])
    );
    let digest = shown["digest"].as_str().unwrap().to_owned();
    let uri = format!("/v1/approvals/{approval}/approve");
    let (status, first) = alice
        .call(
            Method::POST,
            &uri,
            Some(json!({"digest": digest, "comment": "on call"})),
        )
        .await;
    assert_eq!(
        (status, first["approvals_counted"].as_u64()),
        (StatusCode::OK, Some(1)),
        "{first}"
    );
    assert_eq!(
        send(&h, &agent).await.1,
        "approval_pending",
        "one human is not enough"
    );

    let (status, second) = bob
        .call(Method::POST, &uri, Some(json!({"digest": digest})))
        .await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["approvals_counted"], 2);
    let until: chrono::DateTime<chrono::Utc> =
        second["time_lock_until"].as_str().unwrap().parse().unwrap();
    // Refused while the lock holds (asserted only if the answer surely came before its end).
    let (status, code) = send(&h, &agent).await;
    if chrono::Utc::now() < until {
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::FORBIDDEN, "approval_pending")
        );
    }

    // After the delay the same token injects: the next resolve activates it.
    eventually(
        "the time lock runs out and the token injects",
        Duration::from_secs(30),
        || async { send(&h, &agent).await.0 == StatusCode::OK },
    )
    .await;
    assert!(chrono::Utc::now() >= until);
    let received = h.upstream.last();
    assert_eq!(
        received.header("authorization"),
        Some(format!("Bearer {ROOT}").as_str())
    );

    let approved = h.audit("type=approval.approved").await;
    assert_eq!(approved.len(), 2, "{approved:?}");
    let actors: Vec<&str> = approved
        .iter()
        .map(|e| e["actor"].as_str().unwrap())
        .collect();
    assert!(
        actors.contains(&format!("operator:{}", alice.operator_id).as_str()),
        "{actors:?}"
    );
    assert!(
        actors.contains(&format!("operator:{}", bob.operator_id).as_str()),
        "{actors:?}"
    );
    let activated = h.audit("type=token.issued").await;
    assert!(
        activated.iter().any(|e| e["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("activated by approval")),
        "{activated:?}"
    );
}

/// The admin's API token and the agent's key never approve, even over the real front door.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_api_tokens_cannot_approve_over_https() {
    let (h, issued) = critical_behind_approval().await;
    let uri = format!(
        "/v1/approvals/{}/approve",
        issued["approval_id"].as_str().unwrap()
    );
    for key in [&h.tenant.admin, &h.tenant.agent_key] {
        let (status, body) = h.cp.call(Method::POST, &uri, key, Some(json!({}))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    }
    let (status, body) =
        h.cp.call(
            Method::GET,
            &uri.replace("/approve", ""),
            &h.tenant.admin,
            None,
        )
        .await;
    assert_eq!(
        (status, body["approvals_counted"].as_u64()),
        (StatusCode::OK, Some(0))
    );
}
