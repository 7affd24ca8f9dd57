//! Issue 12, item 5 end to end: a human approver created with password and TOTP logs in over
//! the real HTTPS control plane (`testkit::human::HumanLogin`), uses the session with its
//! cookie and CSRF token, and logs out; an operator API token is never a session.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use agent_secret_testkit::harness::Harness;
use agent_secret_testkit::human::HumanLogin;
use reqwest::{Method, StatusCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_logs_in_over_https_uses_the_session_and_logs_out() {
    let h = Harness::builder().start().await;
    let mut alice =
        HumanLogin::create(&h.cp, &h.tenant.id, &h.tenant.admin, "alice", "approver").await;
    let (status, me) = alice.call(Method::GET, "/v1/session", None).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["operator_id"].as_str(), Some(alice.operator_id.as_str()));
    assert_eq!(me["role"], "approver");

    // The admin's API token is no session, and a session without its CSRF token cannot POST.
    let (status, _) =
        h.cp.call(Method::GET, "/v1/session", &h.tenant.admin, None)
            .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let bare =
        h.cp.client
            .post(h.cp.url("/v1/session/logout"))
            .header("cookie", &alice.cookie)
            .send()
            .await
            .unwrap();
    assert_eq!(bare.status(), StatusCode::FORBIDDEN);

    let (status, _) = alice.call(Method::POST, "/v1/session/logout", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = alice.call(Method::GET, "/v1/session", None).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "logout revoked the session"
    );

    // A second session of the same human needs a fresh TOTP step (the helper waits for one).
    let (status, body) = alice.login_again().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = alice.call(Method::GET, "/v1/session", None).await;
    assert_eq!(status, StatusCode::OK);
    let audit = h.audit("type=session.created").await;
    assert_eq!(audit.len(), 2, "{audit:?}");
}
