//! The dashboard in a real browser (headless Chromium, `testkit::browser`): two approvers log
//! in with password and TOTP through the login form, find the pending critical request in the
//! queue, review and approve it; after the test-shortened time lock the agent's token injects
//! through the real sidecar. Every page visited is screenshotted at both viewports and checked
//! with axe-core (no serious or critical violations). A second test watches the queue update
//! itself live and an idle session end on an open page.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use agent_secret_control_plane::service::Policy;
use agent_secret_testkit::browser::Browser;
use agent_secret_testkit::eventually;
use agent_secret_testkit::harness::{quick_approvals, Harness, Issued};
use agent_secret_testkit::human::{HumanLogin, HUMAN_PASSWORD};
use reqwest::{Method, StatusCode};
use serde_json::json;

const ROOT: &str = "root-credential-0123456789-browser";

fn policy() -> Policy {
    quick_approvals(Duration::from_secs(2))
}

/// The critical secret both tests unlock.
async fn store_critical_root(h: &Harness) {
    h.cp.ok(
        Method::PUT,
        "/v1/secrets/vault/root",
        &h.tenant.admin,
        Some(json!({"value": ROOT, "sensitivity": "critical", "allowed_hosts": [h.upstream.authority()]})),
    )
    .await;
}

/// Logs `human` in through the form and lands on the queue.
async fn log_in(b: &Browser, base: &str, tenant: &str, human: &HumanLogin) {
    b.goto(&format!("{base}/ui/login")).await;
    b.fill("#tenant", tenant).await;
    b.fill("#username", &human.username).await;
    b.fill("#password", HUMAN_PASSWORD).await;
    b.fill("#totp_code", &human.next_code()).await;
    b.click_through("form button[type=submit]").await;
    assert_eq!(b.path().await, "/ui/approvals", "{}", b.text().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_approvers_release_a_critical_secret_from_the_dashboard() {
    let Some(b) = Browser::start().await else {
        return;
    };
    let h = Harness::builder().policy(policy()).start().await;
    let base = h.cp.url("").trim_end_matches('/').to_owned();
    store_critical_root(&h).await;
    let issued =
        h.cp.ok(
            Method::POST,
            "/v1/tokens",
            &h.tenant.agent_key,
            Some(json!({"scopes": ["secrets:read:vault/*"], "ttl_seconds": 600})),
        )
        .await;
    assert_eq!(issued["status"], "pending_approval");
    let token = Issued {
        id: issued["id"].as_str().unwrap().to_owned(),
        token: issued["token"].as_str().unwrap().to_owned(),
    };
    let alice =
        HumanLogin::enrolled(&h.cp, &h.tenant.id, &h.tenant.admin, "alice", "approver").await;
    let bob = HumanLogin::enrolled(&h.cp, &h.tenant.id, &h.tenant.admin, "bob", "approver").await;
    let mut violations = Vec::new();

    // No session: the queue sends the browser to the login form, which links the setup of
    // an authenticator.
    b.goto(&format!("{base}/ui/approvals")).await;
    assert_eq!(b.path().await, "/ui/login");
    violations.extend(b.capture("login").await);
    b.click_through("a[href='/ui/enroll']").await;
    assert_eq!(b.path().await, "/ui/enroll");
    violations.extend(b.capture("enroll").await);

    for (human, approvals_after) in [(&alice, "1 of 2"), (&bob, "2 of 2")] {
        log_in(&b, &base, &h.tenant.id, human).await;
        let queue = b.text().await;
        assert!(
            queue.contains("vault/root") && queue.contains("critical"),
            "{queue}"
        );
        violations.extend(b.capture("approvals").await);
        b.click_through("a[href^='/ui/approvals/']").await;
        let detail = b.text().await;
        assert!(
            detail.contains("vault/root") && detail.contains("600 seconds"),
            "{detail}"
        );
        violations.extend(b.capture("approval").await);
        b.fill("#comment", "reviewed in the browser test").await;
        b.click("input[name=confirm]").await;
        b.click_through("button[value=approve]").await;
        let after = b.text().await;
        assert!(after.contains(approvals_after), "{after}");
        if human.username == "alice" {
            // The listings an approver may see, and the one it may not.
            for page in ["secrets", "agents"] {
                b.goto(&format!("{base}/ui/{page}")).await;
                violations.extend(b.capture(page).await);
            }
            assert!(
                b.text().await.contains("secrets:read:**"),
                "the agent's ceiling"
            );
            b.goto(&format!("{base}/ui/operators")).await;
            let refused = b.text().await;
            assert!(refused.contains("Not allowed"), "{refused}");
            assert_eq!(
                b.count("nav a[href='/ui/operators']").await,
                0,
                "no link for an approver"
            );
        }
        b.click_through("form.logout button").await;
        assert_eq!(b.path().await, "/ui/login");
    }
    // A page after logout sends the browser back to the login form.
    b.goto(&format!("{base}/ui/agents")).await;
    assert_eq!(b.path().await, "/ui/login");

    // An admin sees the operators, all three humans among them.
    let carol = HumanLogin::enrolled(&h.cp, &h.tenant.id, &h.tenant.admin, "carol", "admin").await;
    log_in(&b, &base, &h.tenant.id, &carol).await;
    b.goto(&format!("{base}/ui/operators")).await;
    let listed = b.text().await;
    for name in ["alice", "bob", "carol"] {
        assert!(listed.contains(name), "{listed}");
    }
    violations.extend(b.capture("operators").await);

    // The admin's pages: tokens (the approved one listed: still pending, or already active if
    // the time lock ran out on a slow machine), sidecars, the account, secrets with the write
    // form; an agent created from the form shows its key once, then its own page.
    b.goto(&format!("{base}/ui/tokens")).await;
    assert!(b.text().await.contains(&token.id));
    violations.extend(b.capture("tokens").await);
    b.goto(&format!("{base}/ui/sidecars")).await;
    violations.extend(b.capture("sidecars").await);
    b.goto(&format!("{base}/ui/account")).await;
    assert!(b.text().await.contains("carol"));
    violations.extend(b.capture("account").await);
    b.goto(&format!("{base}/ui/secret?path=vault/root")).await;
    assert!(b.text().await.contains("1 version(s)"));
    violations.extend(b.capture("secret").await);
    b.goto(&format!("{base}/ui/secrets")).await;
    b.click("details.card summary").await;
    violations.extend(b.capture("secrets-admin").await);
    b.goto(&format!("{base}/ui/agents")).await;
    b.click("details.card summary").await;
    b.fill("#name", "browser-bot").await;
    b.fill("#allow", "secrets:read:team/*").await;
    b.click_through("details.card button[type=submit]").await;
    assert!(b.text().await.contains("shown this once"));
    violations.extend(b.capture("agent-key").await);
    b.click("button[data-copy]").await;
    b.click_through("a.button").await;
    let agent_page = b.path().await;
    assert!(
        agent_page.len() > "/ui/agents/".len() && agent_page.starts_with("/ui/agents/"),
        "{agent_page}"
    );
    assert!(b.text().await.contains("secrets:read:team/*"));
    violations.extend(b.capture("agent").await);
    // The page's own script, posting without the form token, is refused.
    assert_eq!(b.post_status("/ui/agents", "name=no-token").await, 403);

    // The audit page shows both approvals, and its CSV export of that filter parses.
    b.goto(&format!("{base}/ui/audit?type=approval.approved&verify=1"))
        .await;
    let audit = b.text().await;
    assert!(audit.contains("Hash chain verified"), "{audit}");
    violations.extend(b.capture("audit").await);
    let csv = b
        .fetch_text("/ui/audit/export?format=csv&type=approval.approved")
        .await;
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let headers = reader.headers().unwrap().clone();
    let actor = headers.iter().position(|h| h == "actor").unwrap();
    let actors: Vec<String> = reader
        .records()
        .map(|r| r.unwrap()[actor].to_owned())
        .collect();
    assert_eq!(
        actors,
        vec![
            format!("operator:{}", alice.operator_id),
            format!("operator:{}", bob.operator_id)
        ],
        "{csv}"
    );
    assert!(
        violations.is_empty(),
        "accessibility:\n{}",
        violations.join("\n")
    );

    // After the time lock the same token injects through the sidecar.
    let agent = h.agent(&token);
    eventually(
        "the approved token injects",
        Duration::from_secs(30),
        || async {
            let res = agent
                .get(h.url("/echo"))
                .header("authorization", "Bearer {{secret:vault/root}}")
                .send()
                .await
                .unwrap();
            res.status() == StatusCode::OK
        },
    )
    .await;
    assert_eq!(
        h.upstream.last().header("authorization"),
        Some(format!("Bearer {ROOT}").as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_updates_live_and_an_idle_session_ends_on_an_open_page() {
    let Some(b) = Browser::start().await else {
        return;
    };
    let idle = Duration::from_secs(12);
    let h = Harness::builder()
        .policy(policy())
        .sessions(|s| s.idle_timeout = idle)
        .start()
        .await;
    let base = h.cp.url("").trim_end_matches('/').to_owned();
    store_critical_root(&h).await;
    let dana = HumanLogin::enrolled(&h.cp, &h.tenant.id, &h.tenant.admin, "dana", "approver").await;
    log_in(&b, &base, &h.tenant.id, &dana).await;
    assert!(b.text().await.contains("No approval requests yet"));
    assert_eq!(b.inner_text("#pending-count").await, "0");

    // A request made while the page is open appears without a reload.
    h.cp.ok(
        Method::POST,
        "/v1/tokens",
        &h.tenant.agent_key,
        Some(json!({"scopes": ["secrets:read:vault/*"], "ttl_seconds": 600})),
    )
    .await;
    eventually(
        "the badge counts the new request",
        Duration::from_secs(20),
        || async { b.inner_text("#pending-count").await == "1" },
    )
    .await;
    let queue = b.inner_text("#queue").await;
    assert!(
        queue.contains("vault/root") && queue.contains("0 of 2"),
        "{queue}"
    );
    assert_eq!(b.path().await, "/ui/approvals", "no navigation happened");

    // Left alone, the page does not keep the session alive: it ends, and the page says so.
    eventually(
        "the idle session ends the page",
        Duration::from_secs(40),
        || async { b.path().await == "/ui/login" },
    )
    .await;
    assert!(b.text().await.contains("Your session ended"));
    b.goto(&format!("{base}/ui/approvals")).await;
    assert_eq!(
        b.path().await,
        "/ui/login",
        "the session is over, not just the page"
    );
}
