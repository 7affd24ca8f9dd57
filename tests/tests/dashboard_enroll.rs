//! Issue 13's self-service TOTP enrollment and account page over real HTTPS, as a browser's
//! form posts would send them (no session for enrollment: an approver cannot log in before
//! it): the password proven through the login's own checks and throttles, the QR code and
//! secret shown once, the signed ticket binding the confirmation, replays refused, the secret
//! kept out of the audit log; then the account page and a password change.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use agent_secret_testkit::harness::Harness;
use agent_secret_testkit::human::{Authenticator, HumanLogin, HUMAN_PASSWORD};
use reqwest::{header, redirect, Client, Method, Response, StatusCode};
use serde_json::json;

const CROSS_SITE: &str = "https://evil.example";

/// The harness's control plane seen from a browser that does not follow redirects (so the
/// `Set-Cookie` and `Location` of a form's answer are visible).
struct Browser {
    client: Client,
    base: String,
}

impl Browser {
    fn new(h: &Harness) -> Browser {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&h.cp.ca_file).unwrap()).unwrap();
        Browser {
            client: Client::builder()
                .add_root_certificate(ca)
                .no_proxy()
                .redirect(redirect::Policy::none())
                .build()
                .unwrap(),
            base: h.cp.url("").trim_end_matches('/').to_owned(),
        }
    }

    /// A form POST from `origin` (this site's own unless told otherwise).
    async fn post(
        &self,
        path: &str,
        origin: &str,
        cookie: &str,
        form: &[(&str, &str)],
    ) -> Response {
        let mut req = self
            .client
            .post(format!("{}{path}", self.base))
            .header(header::ORIGIN, origin)
            .form(form);
        if !cookie.is_empty() {
            req = req.header(header::COOKIE, cookie);
        }
        req.send().await.unwrap()
    }

    async fn get(&self, path: &str, cookie: &str) -> Response {
        self.client
            .get(format!("{}{path}", self.base))
            .header(header::COOKIE, cookie)
            .send()
            .await
            .unwrap()
    }

    async fn enroll(&self, tenant: &str, username: &str, password: &str) -> (StatusCode, String) {
        let res = self
            .post(
                "/ui/enroll",
                &self.base,
                "",
                &[
                    ("tenant", tenant),
                    ("username", username),
                    ("password", password),
                ],
            )
            .await;
        (res.status(), res.text().await.unwrap())
    }

    async fn confirm(&self, ticket: &str, code: &str, origin: &str) -> Response {
        self.post(
            "/ui/enroll/confirm",
            origin,
            "",
            &[("ticket", ticket), ("code", code)],
        )
        .await
    }

    /// The dashboard's login form: its status and the session cookie it set, if any.
    async fn login(
        &self,
        tenant: &str,
        username: &str,
        password: &str,
        code: &str,
    ) -> (StatusCode, String) {
        let res = self
            .post(
                "/ui/login",
                &self.base,
                "",
                &[
                    ("tenant", tenant),
                    ("username", username),
                    ("password", password),
                    ("totp_code", code),
                ],
            )
            .await;
        let cookie = res
            .headers()
            .get(header::SET_COOKIE)
            .map(|c| c.to_str().unwrap().split(';').next().unwrap().to_owned())
            .unwrap_or_default();
        (res.status(), cookie)
    }
}

/// The `value` of the hidden input `name` of `html`.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let at = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    html[at..].split('"').next().unwrap().to_owned()
}

/// The base32 secret the confirm page shows for typing.
fn shown_secret(html: &str) -> String {
    let marker = "id=\"totp-secret\">";
    let at = html.find(marker).expect("the secret is shown") + marker.len();
    html[at..].split('<').next().unwrap().trim().to_owned()
}

/// An operator with a password and no TOTP, created by the tenant's admin.
async fn operator_without_totp(h: &Harness, name: &str, role: &str) -> String {
    let created =
        h.cp.ok(
            Method::POST,
            "/v1/operators",
            &h.tenant.admin,
            Some(json!({"name": name, "role": role})),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    h.cp.ok(
        Method::POST,
        &format!("/v1/operators/{id}/password"),
        &h.tenant.admin,
        Some(json!({ "password": HUMAN_PASSWORD })),
    )
    .await;
    id
}

async fn audit_export(h: &Harness, format: &str) -> String {
    let res =
        h.cp.client
            .get(h.cp.url(&format!("/v1/audit?format={format}&limit=1000")))
            .bearer_auth(&h.tenant.admin)
            .send()
            .await
            .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_sets_up_their_own_authenticator_and_logs_in_with_it() {
    let h = Harness::builder().start().await;
    let b = Browser::new(&h);
    let tenant = h.tenant.id.as_str();
    let erin = operator_without_totp(&h, "erin", "approver").await;

    // Without TOTP the approver cannot log in; the login form leads to the setup.
    let (status, cookie) = b.login(tenant, "erin", HUMAN_PASSWORD, "").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "no login before enrollment");
    assert!(cookie.is_empty());
    let login_page = b.get("/ui/login", "").await.text().await.unwrap();
    assert!(login_page.contains("href=\"/ui/enroll\""), "{login_page}");
    let form = b.get("/ui/enroll", "").await;
    assert_eq!(form.status(), StatusCode::OK);
    assert!(form.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("img-src 'self' data:"));

    // Another site cannot start an enrollment.
    let res = b
        .post(
            "/ui/enroll",
            CROSS_SITE,
            "",
            &[
                ("tenant", tenant),
                ("username", "erin"),
                ("password", HUMAN_PASSWORD),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN, "cross-site enrollment");

    // A first enrollment, then a second one: the second voids the first one's ticket.
    let (status, first) = b.enroll(tenant, "erin", HUMAN_PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let voided_ticket = hidden(&first, "ticket");
    let voided = Authenticator::new(&shown_secret(&first));
    let (status, page) = b.enroll(tenant, "erin", HUMAN_PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains("src=\"data:image/svg+xml;base64,"),
        "the QR code is an SVG image: {page}"
    );
    let secret = shown_secret(&page);
    assert_eq!(secret.len(), 32, "160 bits of base32: {secret}");
    assert_ne!(secret, shown_secret(&first));
    let ticket = hidden(&page, "ticket");
    assert!(
        !ticket.contains(&secret),
        "the ticket never carries the secret"
    );
    let app = Authenticator::new(&secret);

    let res = b
        .confirm(&voided_ticket, &voided.next_code(), &b.base)
        .await;
    assert_eq!(
        res.status(),
        StatusCode::FORBIDDEN,
        "a re-enrollment voids the old ticket"
    );

    // A tampered ticket, and a confirmation from another site, are refused.
    let code = app.next_code();
    let mut tampered = ticket.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == '0' { '1' } else { '0' });
    let res = b.confirm(&tampered, &code, &b.base).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN, "tampered ticket");
    assert!(res.text().await.unwrap().contains("Start the setup again"));
    let res = b.confirm(&ticket, &code, CROSS_SITE).await;
    assert_eq!(
        res.status(),
        StatusCode::FORBIDDEN,
        "cross-site confirmation"
    );
    let res = b.confirm(&ticket, "000000", &b.base).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST, "a wrong code");
    let retry = res.text().await.unwrap();
    assert_eq!(
        hidden(&retry, "ticket"),
        ticket,
        "the form stays for the next code"
    );
    assert!(!retry.contains(&secret), "the secret is shown once");

    // The right code confirms and leads to the login form.
    let res = b.confirm(&ticket, &code, &b.base).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()[header::LOCATION], "/ui/login?enrolled=1");
    let notice = b
        .get("/ui/login?enrolled=1", "")
        .await
        .text()
        .await
        .unwrap();
    assert!(notice.contains("Authenticator set up. Log in with a code."));

    // The confirming code is spent: replayed at login it is refused; the next one logs in.
    let (status, cookie) = b.login(tenant, "erin", HUMAN_PASSWORD, &code).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a replayed code");
    assert!(cookie.is_empty());
    let (status, cookie) = b
        .login(tenant, "erin", HUMAN_PASSWORD, &app.next_code())
        .await;
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "logged in with password and code"
    );
    assert!(cookie.starts_with("__Host-ass_session="));
    let queue = b.get("/ui/approvals", &cookie).await;
    assert_eq!(queue.status(), StatusCode::OK);

    // Enrolled now: the setup is refused after the right password (clearly), and a wrong
    // password gets the login's generic answer.
    let (status, page) = b.enroll(tenant, "erin", HUMAN_PASSWORD).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        page.contains("already set up") && page.contains("ask an admin"),
        "{page}"
    );
    assert!(!page.contains("totp-secret"));
    let (status, page) = b.enroll(tenant, "erin", "not the password at all").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        page.contains("Wrong tenant, username or password."),
        "{page}"
    );
    let res = b.confirm(&ticket, "123456", &b.base).await;
    assert_eq!(
        res.status(),
        StatusCode::CONFLICT,
        "the ticket's enrollment is confirmed"
    );

    // The audit log: the enrollments by the operator, the confirmation, the refused attempts;
    // never the secret.
    let enrolled = h.audit("type=operator.totp_enrolled").await;
    assert_eq!(enrolled.len(), 2, "{enrolled:?}");
    for e in &enrolled {
        assert_eq!(
            e["actor"],
            format!("operator:{erin}"),
            "the operator enrolled itself"
        );
    }
    assert_eq!(h.audit("type=operator.totp_confirmed").await.len(), 1);
    let failed = h.audit("type=auth.failed").await;
    let reasons: Vec<&str> = failed.iter().filter_map(|e| e["reason"].as_str()).collect();
    for reason in [
        "totp_self_enrollment: already_enrolled",
        "totp_self_enrollment: bad_password",
        "login: totp_replayed",
    ] {
        assert!(reasons.contains(&reason), "{reason} in {reasons:?}");
    }
    for format in ["csv", "jsonl"] {
        let export = audit_export(&h, format).await;
        for s in [&secret, &shown_secret(&first)] {
            assert!(
                !export.contains(s.as_str()),
                "a TOTP secret in the {format} export"
            );
        }
        assert!(
            !export.contains(&ticket),
            "the ticket in the {format} export"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_at_the_setup_count_toward_the_login_lockout() {
    let h = Harness::builder().start().await;
    let b = Browser::new(&h);
    let tenant = h.tenant.id.as_str();
    operator_without_totp(&h, "frank", "approver").await;

    // Five failures lock the account (the default), whichever form they came through.
    for _ in 0..3 {
        let (status, page) = b.enroll(tenant, "frank", "a wrong password!").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{page}");
    }
    for _ in 0..2 {
        let (status, _) = b.login(tenant, "frank", "a wrong password!", "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, page) = b.enroll(tenant, "frank", HUMAN_PASSWORD).await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "locked, even with the right password"
    );
    assert!(page.contains("Too many failed attempts"), "{page}");
    assert!(!page.contains("totp-secret"));
    let (status, _) = b.login(tenant, "frank", HUMAN_PASSWORD, "").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);

    // An unknown user costs the same answer as a wrong password.
    let (status, page) = b.enroll(tenant, "nobody", HUMAN_PASSWORD).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{page}");

    let failed = h.audit("type=auth.failed").await;
    let at_setup = failed
        .iter()
        .filter(|e| e["reason"] == "totp_self_enrollment: bad_password")
        .count();
    assert_eq!(at_setup, 3, "{failed:?}");
    assert_eq!(h.audit("type=operator.totp_enrolled").await.len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_account_page_shows_the_operator_and_changes_the_password() {
    let h = Harness::builder().start().await;
    let b = Browser::new(&h);
    let grace = HumanLogin::create(&h.cp, &h.tenant.id, &h.tenant.admin, "grace", "approver").await;

    let res = b.get("/ui/account", "").await;
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "no session: to the login form"
    );
    let page = b.get("/ui/account", &grace.cookie).await;
    assert_eq!(page.status(), StatusCode::OK);
    let page = page.text().await.unwrap();
    assert!(
        page.contains("<dd>grace</dd>") && page.contains("<dd>approver</dd>"),
        "{page}"
    );
    assert!(
        page.contains("Authenticator (TOTP)</dt><dd>on</dd>"),
        "{page}"
    );
    assert!(
        page.contains("href=\"/ui/account\" aria-current=\"page\""),
        "in the nav"
    );
    let csrf = hidden(&page, "csrf");

    let change = |current: &'static str,
                  new: &'static str,
                  repeat: &'static str,
                  csrf: String,
                  origin: String| {
        let b = &b;
        let cookie = grace.cookie.clone();
        async move {
            let res = b
                .post(
                    "/ui/account/password",
                    &origin,
                    &cookie,
                    &[
                        ("csrf", csrf.as_str()),
                        ("current", current),
                        ("new", new),
                        ("repeat", repeat),
                    ],
                )
                .await;
            let status = res.status();
            let location = res
                .headers()
                .get(header::LOCATION)
                .map(|l| l.to_str().unwrap().to_owned());
            (status, location, res.text().await.unwrap())
        }
    };
    const NEW: &str = "a new and longer passphrase";
    let base = b.base.clone();
    let (status, ..) = change(HUMAN_PASSWORD, NEW, NEW, String::new(), base.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "no form token");
    let (status, ..) = change(HUMAN_PASSWORD, NEW, NEW, csrf.clone(), CROSS_SITE.into()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "cross-site");
    let (status, _, page) = change(
        HUMAN_PASSWORD,
        NEW,
        "something else entirely",
        csrf.clone(),
        base.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("differ"), "{page}");
    let (status, _, page) =
        change(HUMAN_PASSWORD, "short", "short", csrf.clone(), base.clone()).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "the operators' password rules apply: {page}"
    );
    let (status, _, page) = change("not my password!", NEW, NEW, csrf.clone(), base.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(page.contains("current password"), "{page}");

    let (status, location, _) = change(HUMAN_PASSWORD, NEW, NEW, csrf, base).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location.as_deref(), Some("/ui/login?password_changed=1"));
    let res = b.get("/ui/account", &grace.cookie).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "the old session ended");

    let (status, _) = b
        .login(&h.tenant.id, "grace", HUMAN_PASSWORD, "000000")
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the old password is gone");
    let (status, cookie) = b
        .login(&h.tenant.id, "grace", NEW, &grace.next_code())
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "the new password logs in");
    assert_eq!(b.get("/ui/account", &cookie).await.status(), StatusCode::OK);
    assert_eq!(h.audit("type=operator.password_set").await.len(), 2);
}
