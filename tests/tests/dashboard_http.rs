//! Issue 13's first slice over real HTTPS (no browser yet): the dashboard's security headers,
//! its session gate, the approval queue and detail pages, and the decision form with its
//! per-session token and same-origin check. Browser tests come with the rest of the dashboard.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use agent_secret_testkit::harness::Harness;
use agent_secret_testkit::human::HumanLogin;
use reqwest::{header, Method, StatusCode};
use serde_json::json;

/// The `value` of the first `name="csrf"` input of `html`.
fn form_token(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a form token") + 19;
    html[at..].split('"').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_gates_pages_renders_the_queue_and_takes_a_decision() {
    let h = Harness::builder().start().await;
    let host = h.upstream.authority();
    h.cp.ok(
        Method::PUT,
        "/v1/secrets/vault/root",
        &h.tenant.admin,
        Some(json!({"value": "root-credential-0123456789", "sensitivity": "critical", "allowed_hosts": [host]})),
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
    let approval = issued["approval_id"].as_str().unwrap().to_owned();

    // No session: every page leads to the login form, which carries the security headers.
    let res =
        h.cp.client
            .get(h.cp.url("/ui/approvals"))
            .send()
            .await
            .unwrap();
    assert_eq!(res.url().path(), "/ui/login");
    assert_eq!(res.status(), StatusCode::OK);
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(res.headers()["referrer-policy"], "no-referrer");
    assert!(res.headers().contains_key("strict-transport-security"));
    assert!(res.text().await.unwrap().contains("Authenticator code"));

    let alice = HumanLogin::create(&h.cp, &h.tenant.id, &h.tenant.admin, "alice", "approver").await;
    let page = |path: String| alice.request(Method::GET, &path).send();
    let queue = page("/ui/approvals".into()).await.unwrap();
    assert_eq!(queue.status(), StatusCode::OK);
    let queue = queue.text().await.unwrap();
    assert!(
        queue.contains("vault/root") && queue.contains("critical"),
        "{queue}"
    );
    assert!(queue.contains(&approval));

    let detail = page(format!("/ui/approvals/{approval}"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let digest =
        h.cp.ok(
            Method::GET,
            &format!("/v1/approvals/{approval}"),
            &h.tenant.admin,
            None,
        )
        .await["digest"]
            .as_str()
            .unwrap()
            .to_owned();
    assert!(detail.contains(&digest), "the digest is shown");
    let token = form_token(&detail);
    // A browser's form post: the session cookie, an Origin, no CSRF header.
    let post = |path: String, origin: &str| {
        h.cp.client
            .post(h.cp.url(&path))
            .header(header::COOKIE, &alice.cookie)
            .header(header::ORIGIN, origin)
    };
    let decide = |csrf: &str, origin: &str| {
        post(format!("/ui/approvals/{approval}/decide"), origin)
            .form(&[
                ("csrf", csrf),
                ("decision", "approve"),
                ("digest", digest.as_str()),
                ("confirm", "yes"),
                ("comment", "checked the path"),
            ])
            .send()
    };
    let base = h.cp.url("");
    let base = base.trim_end_matches('/');
    assert_eq!(
        decide("", base).await.unwrap().status(),
        StatusCode::FORBIDDEN,
        "no form token"
    );
    assert_eq!(
        decide(&token, "https://evil.example")
            .await
            .unwrap()
            .status(),
        StatusCode::FORBIDDEN,
        "cross-site"
    );
    let done = decide(&token, base).await.unwrap();
    assert_eq!(
        done.status(),
        StatusCode::OK,
        "redirected back to the request"
    );
    let after = done.text().await.unwrap();
    assert!(after.contains("1 of 2"), "{after}");
    assert!(after.contains("checked the path"));

    // Logging out ends the session: the next page is the login form again.
    let logout = post("/ui/logout".into(), base)
        .form(&[("csrf", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(logout.url().path(), "/ui/login");
    let again = page("/ui/approvals".into()).await.unwrap();
    assert_eq!(again.url().path(), "/ui/login");
}
