//! Issue 10, item 10: operator tokens can be listed and revoked (API and CLI), a revocation
//! takes effect on the very next call, and a tenant never loses its last active admin.
//!
//! Over the real HTTPS server on 127.0.0.1, on SQLite and (with
//! `AGENT_SECRET_STORE_TEST_DATABASE_URL`) PostgreSQL as the service role.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../control-plane/tests/served/mod.rs"]
mod served;
#[path = "../../control-plane/tests/support/mod.rs"]
mod support;

use std::process::Command;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use served::{code, Served, Tenant};

const BIN: &str = env!("CARGO_BIN_EXE_agent-secret-store");

/// `(id, operator_token)` of a new operator with `role`, created by `admin`.
async fn operator(cp: &Served, admin: &str, name: &str, role: &str) -> (String, String) {
    let body = cp
        .ok(
            Method::POST,
            "/v1/operators",
            admin,
            Some(json!({"name": name, "role": role})),
        )
        .await;
    (
        body["id"].as_str().unwrap().to_owned(),
        body["operator_token"].as_str().unwrap().to_owned(),
    )
}

async fn revoke(cp: &Served, admin: &str, id: &str) -> (StatusCode, Value) {
    cp.call(
        Method::POST,
        &format!("/v1/operators/{id}/revoke"),
        admin,
        None,
    )
    .await
}

async fn a_revoked_operator_is_refused_on_its_next_call(cp: &Served) {
    let t = Tenant::create(cp, "acme").await;
    let (auditor_id, auditor) = operator(cp, &t.admin, "auditor-1", "auditor").await;
    let (admin_2_id, admin_2) = operator(cp, &t.admin, "admin-2", "admin").await;
    let (status, body) = cp.call(Method::GET, "/v1/audit", &auditor, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Only admins revoke.
    let (status, body) = revoke(cp, &auditor, &admin_2_id).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    let (status, body) = revoke(cp, &admin_2, &auditor_id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["id"], json!(auditor_id));
    assert_eq!(body["role"], json!("auditor"));
    assert!(body["revoked_at"].is_string(), "{body}");

    // The very next call with the revoked token is refused: no cache in between.
    let (status, body) = cp.call(Method::GET, "/v1/audit", &auditor, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(code(&body), "unauthenticated");

    // Listed as revoked; revoking again or an unknown id is refused clearly.
    let list = cp.ok(Method::GET, "/v1/operators", &t.admin, None).await;
    let listed = list["operators"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["id"] == json!(auditor_id))
        .cloned()
        .unwrap();
    assert!(listed["revoked_at"].is_string(), "{list}");
    let (status, body) = revoke(cp, &t.admin, &auditor_id).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(code(&body), "conflict");
    for unknown in [uuid::Uuid::now_v7().to_string(), "not-an-id".to_owned()] {
        let (status, body) = revoke(cp, &t.admin, &unknown).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{unknown}: {body}");
    }

    let audit = t.audit_types(cp).await;
    let revoked: Vec<_> = audit
        .iter()
        .filter(|(ty, _)| ty == "operator.revoked")
        .collect();
    assert_eq!(revoked.len(), 1, "{audit:?}");
    assert!(
        revoked[0].1.as_deref().unwrap().contains(&auditor_id),
        "{revoked:?}"
    );
}

async fn the_last_active_admin_cannot_be_revoked(cp: &Served) {
    let t = Tenant::create(cp, "last-admin").await;
    let list = cp.ok(Method::GET, "/v1/operators", &t.admin, None).await;
    let first_id = list["operators"][0]["id"].as_str().unwrap().to_owned();

    // Alone, the first admin cannot revoke itself.
    let (status, body) = revoke(cp, &t.admin, &first_id).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(code(&body), "conflict");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("last active admin"),
        "{body}"
    );

    // A revoked admin does not count: after revoking the second, the first is last again.
    let (second_id, _) = operator(cp, &t.admin, "admin-2", "admin").await;
    let (status, body) = revoke(cp, &t.admin, &second_id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = revoke(cp, &t.admin, &first_id).await;
    assert_eq!(status, StatusCode::CONFLICT);
    // Non-admins do not count either.
    operator(cp, &t.admin, "approver-1", "approver").await;
    let (status, _) = revoke(cp, &t.admin, &first_id).await;
    assert_eq!(status, StatusCode::CONFLICT);

    // With another active admin, the first one can go (even by its own hand).
    let (_, third) = operator(cp, &t.admin, "admin-3", "admin").await;
    let (status, body) = revoke(cp, &t.admin, &first_id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = cp.call(Method::GET, "/v1/operators", &t.admin, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = cp.call(Method::GET, "/v1/operators", &third, None).await;
    assert_eq!(status, StatusCode::OK);
}

/// Two admins revoking each other at the same moment: exactly one wins, one admin remains.
async fn admins_revoking_each_other_at_once_leave_one_admin(cp: &Served) {
    for round in 0..5 {
        let t = Tenant::create(cp, &format!("race-{round}")).await;
        let list = cp.ok(Method::GET, "/v1/operators", &t.admin, None).await;
        let first_id = list["operators"][0]["id"].as_str().unwrap().to_owned();
        let (second_id, second) = operator(cp, &t.admin, "admin-2", "admin").await;
        let (a, b) = tokio::join!(
            revoke(cp, &t.admin, &second_id),
            revoke(cp, &second, &first_id)
        );
        let statuses = [a.0, b.0];
        assert_eq!(
            statuses.iter().filter(|s| **s == StatusCode::OK).count(),
            1,
            "round {round}: {a:?} {b:?}"
        );
        assert!(
            statuses.iter().all(|s| *s == StatusCode::OK
                || *s == StatusCode::CONFLICT
                || *s == StatusCode::UNAUTHORIZED),
            "round {round}: {a:?} {b:?}"
        );
    }
}

/// `operator list --json` and `operator revoke ID --json` print exactly one JSON document.
fn cli(cp: &Served, token: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN)
        .args(["--server", &cp.url(""), "--ca-cert"])
        .arg(&cp.ca_file)
        .args(args)
        .env("AGENT_SECRET_STORE_TOKEN", token)
        .env_remove("AGENT_SECRET_SERVER")
        .env_remove("AGENT_SECRET_CA_CERT")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

async fn cli_lists_and_revokes_operators(cp: &Served) {
    let t = Tenant::create(cp, "acme").await;
    let (approver_id, approver) = operator(cp, &t.admin, "approver-1", "approver").await;

    let (status, stdout, stderr) = cli(cp, &t.admin, &["operator", "list", "--json"]);
    assert_eq!(status, Some(0), "{stderr}");
    let list: Value = serde_json::from_str(&stdout).expect("exactly one JSON document");
    assert_eq!(list["operators"].as_array().unwrap().len(), 2, "{list}");
    assert!(!stdout.contains(&approver), "tokens are never listed");

    let (status, stdout, stderr) = cli(
        cp,
        &t.admin,
        &["operator", "revoke", &approver_id, "--json"],
    );
    assert_eq!(status, Some(0), "{stderr}");
    let revoked: Value = serde_json::from_str(&stdout).expect("exactly one JSON document");
    assert_eq!(revoked["id"], json!(approver_id));
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    let (status, _) = cp.call(Method::GET, "/v1/secrets", &approver, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Human mode shows the state; a refusal prints nothing on stdout and the code on stderr.
    let (status, stdout, _) = cli(cp, &t.admin, &["operator", "list"]);
    assert_eq!(status, Some(0));
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with(&approver_id) && l.ends_with("revoked")),
        "{stdout}"
    );
    let (status, stdout, stderr) = cli(
        cp,
        &t.admin,
        &["operator", "revoke", &approver_id, "--json"],
    );
    assert_eq!(status, Some(1), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("conflict"), "{stderr}");
    let (status, _, stderr) = cli(cp, &t.admin, &["operator", "revoke", "../x", "--json"]);
    assert_eq!(status, Some(2), "{stderr}");

    // `agent revoke ID --json` likewise.
    let (status, stdout, stderr) = cli(cp, &t.admin, &["agent", "revoke", &t.agent_id, "--json"]);
    assert_eq!(status, Some(0), "{stderr}");
    let revoked: Value = serde_json::from_str(&stdout).expect("exactly one JSON document");
    assert_eq!(revoked["id"], json!(t.agent_id));
    assert_eq!(revoked["tokens_revoked"], json!(0));
}

#[tokio::test]
async fn sqlite_a_revoked_operator_is_refused_on_its_next_call() {
    let cp = Served::builder().start().await;
    a_revoked_operator_is_refused_on_its_next_call(&cp).await;
    the_last_active_admin_cannot_be_revoked(&cp).await;
    admins_revoking_each_other_at_once_leave_one_admin(&cp).await;
}

#[tokio::test]
async fn postgres_a_revoked_operator_is_refused_on_its_next_call() {
    let Some(pg) = support::postgres_test_db().await else {
        return;
    };
    let cp = Served::builder().postgres(&pg).start().await;
    a_revoked_operator_is_refused_on_its_next_call(&cp).await;
    the_last_active_admin_cannot_be_revoked(&cp).await;
    admins_revoking_each_other_at_once_leave_one_admin(&cp).await;
}

// The CLI runs as a blocking child process: the server needs a thread of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_operator_list_and_revoke_print_one_json_document() {
    let cp = Served::builder().start().await;
    cli_lists_and_revokes_operators(&cp).await;
}
