//! Every audit event type the docs name comes from a real flow: one system (control plane over
//! HTTPS, the real sidecar, a real upstream) driven the way its users drive it — an admin's
//! API calls, humans logged in with password and TOTP, agents' requests through the sidecar,
//! the MCP endpoint, the background tasks (expiry sweeper, approval expiry, checkpoints,
//! anomaly alerts) and the key administration the CLI runs — and the log must then hold each
//! of `AuditEventType::ALL`. A type added without a flow that writes it fails here.
//!
//! Two steps speak the sidecar protocol directly, as a sidecar does: the release of a reserved
//! use (the sidecar releases when it could not inject; here the value is simply not used) and
//! the report of dead-lettered events (the full dead-letter path is
//! `audit_spool_e2e.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use agent_secret_control_plane::audit::{Actor, AuditEventType};
use agent_secret_control_plane::service::alerts::AlertSettings;
use agent_secret_control_plane::service::{audit_archive, kms};
use agent_secret_core::credential::{issue_with_id, CredentialKind, Pepper, PresentedCredential};
use agent_secret_core::ids::TenantId;
use agent_secret_testkit::harness::{agent, quick_approvals, Harness, Issued};
use agent_secret_testkit::human::HumanLogin;
use agent_secret_testkit::sidecar::local_host;
use agent_secret_testkit::upstream::Upstream;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const VALUE: &str = "sk-event-types-0123456789abcdef";
const ROOT: &str = "root-event-types-0123456789abcdef";

/// Every event type in the tenant's log.
async fn types_in_log(h: &Harness) -> BTreeSet<String> {
    let mut types = BTreeSet::new();
    let mut cursor = String::new();
    loop {
        let page =
            h.cp.ok(
                Method::GET,
                &format!("/v1/audit?limit=1000&cursor={cursor}"),
                &h.tenant.admin,
                None,
            )
            .await;
        for e in page["events"].as_array().unwrap() {
            types.insert(e["type"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => return types,
        }
    }
}

/// A token for a critical secret: pending, with its approval request.
async fn pending(h: &Harness) -> (Issued, String) {
    let t = h.request_token(agent().scope("secrets:read:vault/*")).await;
    assert_eq!(t["status"], "pending_approval", "{t}");
    let issued = Issued {
        id: t["id"].as_str().unwrap().to_owned(),
        token: t["token"].as_str().unwrap().to_owned(),
    };
    (issued, t["approval_id"].as_str().unwrap().to_owned())
}

/// One JSON-RPC exchange with the control plane's MCP endpoint.
async fn mcp(h: &Harness, session: Option<&str>, body: Value) -> reqwest::Response {
    let mut req =
        h.cp.client
            .post(h.cp.url("/mcp"))
            .bearer_auth(&h.tenant.agent_key)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-06-18")
            .json(&body);
    if let Some(session) = session {
        req = req.header("mcp-session-id", session);
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_type_comes_from_a_real_flow() {
    let mut policy = quick_approvals(Duration::from_millis(200));
    policy.approvals.request_ttl = Duration::from_secs(6);
    policy.token_expiry_sweep = Duration::from_millis(200);
    policy.checkpoints.every_events = 25;
    policy.checkpoints.check = Duration::from_millis(200);
    let mut alerts = AlertSettings::on(Default::default());
    alerts.poll_interval = Duration::from_millis(50);
    policy.alerts = alerts;
    let elsewhere = Upstream::http().await;
    let other = elsewhere.authority();
    // tenant.created, agent.created, sidecar.created, secret.write.
    let h = Harness::builder()
        .secret("demo/echo/api_key", VALUE)
        .policy(policy)
        .sidecar(move |config| config.hosts.push(local_host(&other)))
        .start()
        .await;
    let tenant: TenantId = h.tenant.id.parse().unwrap();
    let admin = &h.tenant.admin;
    let host = h.upstream.authority();
    let header = "Bearer {{secret:demo/echo/api_key}}";

    // operator.created, operator.password_set, operator.totp_enrolled, operator.totp_confirmed,
    // session.created: two approvers, logged in.
    let alice = HumanLogin::create(&h.cp, &h.tenant.id, admin, "alice", "approver").await;
    let bob = HumanLogin::create(&h.cp, &h.tenant.id, admin, "bob", "approver").await;

    // token.issued, secret.read: a token injects through the sidecar.
    let reader = h.issue(agent().scope("secrets:read:demo/**")).await;
    let res = h
        .agent(&reader)
        .get(h.url("/echo"))
        .header("authorization", header)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    // approval.requested, approval.approved, approval.denied, approval.expired.
    h.cp.ok(
        Method::PUT,
        "/v1/secrets/vault/root",
        admin,
        Some(json!({"value": ROOT, "sensitivity": "critical", "allowed_hosts": [host]})),
    )
    .await;
    let (_, approved) = pending(&h).await;
    let (_, denied) = pending(&h).await;
    let (_, _expiring) = pending(&h).await;
    for human in [&alice, &bob] {
        let (status, body) = human
            .call(
                Method::POST,
                &format!("/v1/approvals/{approved}/approve"),
                Some(json!({})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, body) = alice
        .call(
            Method::POST,
            &format!("/v1/approvals/{denied}/deny"),
            Some(json!({"comment": "not today"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // token.expired: a one-second token, swept.
    h.issue(agent().scope("secrets:read:demo/**").ttl(1)).await;

    // token.revoked by an admin; alert.raised (and another token.revoked) by the exfiltration
    // rule when a placeholder heads for a host its secret is not bound to.
    let doomed = h.issue(agent().scope("secrets:read:demo/**")).await;
    h.tenant.revoke(&h.cp, &doomed.id).await;
    let exfiltrating = h.issue(agent().scope("secrets:read:demo/**")).await;
    let res = h
        .agent(&exfiltrating)
        .get(format!("http://{}/collect", elsewhere.authority()))
        .header("authorization", header)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);

    // auth.failed: an operator credential with a real id and a wrong secret.
    let admin_id = PresentedCredential::parse(admin).unwrap().id;
    let forged = issue_with_id(CredentialKind::Operator, admin_id, &Pepper::generate());
    let (status, _) =
        h.cp.call(Method::GET, "/v1/secrets", forged.token.expose(), None)
            .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // token.use_released: the sidecar protocol's reserve-then-release of a max_uses token.
    let limited = h
        .issue(agent().scope("secrets:read:demo/**").max_uses(2))
        .await;
    let resolved =
        h.cp.ok(
            Method::POST,
            "/v1/sidecar/resolve",
            &h.tenant.sidecar_key,
            Some(json!({
                "token": limited.token,
                "paths": ["demo/echo/api_key"],
                "destination_host": host,
                "client_ip": "127.0.0.1",
            })),
        )
        .await;
    let reservation = resolved["reservation"]["id"].as_str().unwrap().to_owned();
    h.cp.ok(
        Method::POST,
        "/v1/sidecar/release",
        &h.tenant.sidecar_key,
        Some(json!({"reservation_id": reservation, "reason": "header_too_large"})),
    )
    .await;

    // audit.dropped: a sidecar's report of events moved to its dead-letter file.
    h.cp.ok(
        Method::POST,
        "/v1/sidecar/audit",
        &h.tenant.sidecar_key,
        Some(json!({"events": [{
            "token_id": null, "client_ip": null, "user_agent": null, "path": null,
            "destination_host": null, "success": false, "reason": "audit_dropped:3",
            "occurred_at": chrono::Utc::now(),
        }]})),
    )
    .await;

    // mcp.tool_called: the agent lists its secrets over MCP.
    let init = mcp(
        &h,
        None,
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "event-types", "version": "1"}}}),
    )
    .await;
    assert_eq!(init.status(), StatusCode::OK);
    let session = init
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_owned());
    let notified = mcp(
        &h,
        session.as_deref(),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    assert!(notified.status().is_success(), "{}", notified.status());
    let called = mcp(
        &h,
        session.as_deref(),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
               "params": {"name": "list_secrets", "arguments": {}}}),
    )
    .await;
    assert_eq!(called.status(), StatusCode::OK);
    let called: Value = called.json().await.unwrap();
    assert!(called["result"].is_object(), "{called}");

    // agent.ceiling_changed, agent.trust_tier_set, agent.key_rotated (which also revokes the
    // agent's tokens), agent.revoked, sidecar.revoked, operator.revoked, operator.disabled,
    // secret.delete, session.revoked.
    // Rotating the agent's key revokes its tokens; the short one must have run out first.
    agent_secret_testkit::eventually(
        "the one-second token is swept",
        Duration::from_secs(20),
        || async { !h.audit("type=token.expired").await.is_empty() },
    )
    .await;
    let agent_id = &h.tenant.agent_id;
    let spare_agent = h
        .cp
        .ok(
            Method::POST,
            "/v1/agents",
            admin,
            Some(json!({"name": "spare", "allow": ["secrets:read:demo/**", "secrets:read:attic/**"]})),
        )
        .await;
    let spare_id = spare_agent["id"].as_str().unwrap();
    h.cp.ok(
        Method::POST,
        &format!("/v1/agents/{spare_id}/ceiling/deny"),
        admin,
        Some(json!({"scopes": ["secrets:read:attic/**"]})),
    )
    .await;
    h.cp.ok(
        Method::PUT,
        &format!("/v1/agents/{agent_id}/trust-tier"),
        admin,
        Some(json!({"trust_tier": 2})),
    )
    .await;
    h.cp.ok(
        Method::POST,
        &format!("/v1/agents/{agent_id}/rotate-key"),
        admin,
        Some(json!({})),
    )
    .await;
    h.cp.ok(
        Method::POST,
        &format!("/v1/agents/{spare_id}/revoke"),
        admin,
        Some(json!({})),
    )
    .await;
    let spare_sidecar =
        h.cp.ok(
            Method::POST,
            "/v1/sidecars",
            admin,
            Some(json!({"name": "spare"})),
        )
        .await;
    h.cp.ok(
        Method::POST,
        &format!(
            "/v1/sidecars/{}/revoke",
            spare_sidecar["id"].as_str().unwrap()
        ),
        admin,
        Some(json!({})),
    )
    .await;
    let carol =
        h.cp.ok(
            Method::POST,
            "/v1/operators",
            admin,
            Some(json!({"name": "carol", "role": "auditor"})),
        )
        .await;
    h.cp.ok(
        Method::POST,
        &format!("/v1/operators/{}/revoke", carol["id"].as_str().unwrap()),
        admin,
        Some(json!({})),
    )
    .await;
    h.cp.ok(
        Method::POST,
        &format!("/v1/operators/{}/disable", bob.operator_id),
        admin,
        Some(json!({})),
    )
    .await;
    h.cp.ok(Method::DELETE, "/v1/secrets/vault/root", admin, None)
        .await;
    let (status, body) = alice
        .call(Method::POST, "/v1/session/logout", Some(json!({})))
        .await;
    assert!(status.is_success(), "{status} {body}");

    // kms.rotated, kms.rewrapped, kms.version_retired: what `agent-secret-store kms rotate`,
    // `kms rewrap` and `kms retire` run.
    let app = h.cp.app.clone();
    let operator = Actor::new("operator", admin_id);
    let old = kms::status(&app, tenant).await.unwrap().primary_version;
    kms::rotate(&app, tenant, &operator).await.unwrap();
    kms::rewrap(&app, tenant, 100, &operator, &|_| {})
        .await
        .unwrap();
    kms::retire_version(&app, tenant, &old, Duration::ZERO, &operator)
        .await
        .unwrap();

    // audit.archived: the owner's retention run moves the oldest events to a file (here just
    // the tenant's creation); the types it took are counted from the file.
    let first = h.audit("limit=1").await;
    let after_first: chrono::DateTime<chrono::Utc> =
        first[0]["timestamp"].as_str().unwrap().parse().unwrap();
    let mut archived = Vec::new();
    let report = audit_archive::archive(
        app.store.as_ref(),
        tenant,
        after_first + chrono::Duration::microseconds(1),
        Actor("cli:test".into()),
        &mut archived,
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(report.first_seq, 1);
    let archived_types: BTreeSet<String> = archived
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| {
            let event: Value = serde_json::from_slice(line).unwrap();
            event["type"].as_str().unwrap().to_owned()
        })
        .collect();

    // The background tasks' events arrive on their own: token.expired, approval.expired,
    // audit.checkpoint, alert.raised.
    let expected: BTreeSet<String> = AuditEventType::ALL
        .iter()
        .map(|t| t.as_str().to_owned())
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let seen = loop {
        let mut seen = types_in_log(&h).await;
        seen.extend(archived_types.iter().cloned());
        if seen == expected || std::time::Instant::now() > deadline {
            break seen;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let missing: Vec<_> = expected.difference(&seen).collect();
    let unknown: Vec<_> = seen.difference(&expected).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "missing from the log: {missing:?}; not in AuditEventType::ALL: {unknown:?}"
    );
}
