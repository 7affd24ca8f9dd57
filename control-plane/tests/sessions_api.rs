//! Human operator accounts and sessions through the real router (in-process, `oneshot`):
//! password rules, login with password and TOTP, throttling per account and per address,
//! TOTP replay, CSRF and same-origin checks, bearer tokens refused where a session is needed,
//! idle and absolute expiry on a manual clock, and every way a session ends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use agent_secret_control_plane::api::extract::PeerAddr;
use agent_secret_control_plane::config::{RateLimit, RateLimitsConfig, ServerConfig};
use agent_secret_control_plane::db::Db;
use agent_secret_control_plane::limits::Limits;
use agent_secret_control_plane::service::sessions::{Clock, SessionSettings};
use agent_secret_control_plane::service::{tenants, App, Policy};
use agent_secret_control_plane::store::sql::SqlStore;
use agent_secret_control_plane::store::AuditFilter;
use agent_secret_core::cipher::Dek;
use agent_secret_core::credential::Pepper;
use agent_secret_core::ids::TenantId;
use agent_secret_core::kms::local::{LocalKms, MasterKey};
use agent_secret_core::kms::{KeyInfo, KeyRef, Kms, KmsError, WrappedDek};
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use chrono::{TimeZone, Utc};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

const PASSWORD: &str = "correct horse battery staple";
const HOST: &str = "cp.example.test";

struct Reply {
    status: StatusCode,
    body: Value,
    headers: axum::http::HeaderMap,
}

impl Reply {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("<no code>")
    }
}

/// A logged-in browser: its cookie and CSRF token.
#[derive(Clone)]
struct Browser {
    cookie: String,
    csrf: String,
}

struct TestApp {
    router: axum::Router,
    app: Arc<App>,
    admin: String,
    tenant: String,
    tenant_id: agent_secret_core::ids::TenantId,
    clock: Clock,
    db_url: String,
    dir: tempfile::TempDir,
}

fn settings(clock: &Clock) -> SessionSettings {
    SessionSettings {
        bcrypt_cost: 4,
        clock: clock.clone(),
        ..SessionSettings::default()
    }
}

async fn app_on(
    db_url: &str,
    dir: &std::path::Path,
    pepper: Arc<Pepper>,
    settings: SessionSettings,
    ip_limit: RateLimit,
) -> Arc<App> {
    let kms = LocalKms::open_or_create(dir.join("keyring"), MasterKey::generate()).unwrap();
    app_with_kms(db_url, Arc::new(kms), pepper, settings, ip_limit).await
}

async fn app_with_kms(
    db_url: &str,
    kms: Arc<dyn Kms>,
    pepper: Arc<Pepper>,
    settings: SessionSettings,
    ip_limit: RateLimit,
) -> Arc<App> {
    let db = Db::connect(db_url).await.unwrap();
    db.migrate().await.unwrap();
    let rates = RateLimitsConfig {
        auth_failures_per_ip: ip_limit,
        ..RateLimitsConfig::default()
    };
    Arc::new(
        App::new(Arc::new(SqlStore::new(db)), kms, pepper, Policy::default())
            .with_limits(Limits::new(&ServerConfig::default(), &rates))
            .with_sessions(settings),
    )
}

impl TestApp {
    async fn new() -> TestApp {
        TestApp::with(
            |s| s,
            RateLimit {
                per_second: 10,
                burst: 50,
            },
        )
        .await
    }

    async fn with(
        configure: impl FnOnce(SessionSettings) -> SessionSettings,
        ip_limit: RateLimit,
    ) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let db_url = format!("sqlite://{}", dir.path().join("store.db").display());
        // Mid-step, so a code stays valid while the clock is not moved.
        let clock = Clock::manual(Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 10).unwrap());
        let pepper = Arc::new(Pepper::generate());
        let app = app_on(
            &db_url,
            dir.path(),
            pepper,
            configure(settings(&clock)),
            ip_limit,
        )
        .await;
        let created = tenants::create_tenant(&app, "acme").await.unwrap();
        TestApp {
            router: agent_secret_control_plane::api::app(app.clone()),
            admin: created.admin_token.expose().to_owned(),
            tenant: "acme".into(),
            tenant_id: created.tenant_id,
            app,
            clock,
            db_url,
            dir,
        }
    }

    async fn send(
        &self,
        req: axum::http::request::Builder,
        body: Option<Value>,
        ip: &str,
    ) -> Reply {
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        };
        let mut req = req.unwrap();
        let peer: SocketAddr = format!("{ip}:50000").parse().unwrap();
        req.extensions_mut().insert(PeerAddr(peer));
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            headers,
        }
    }

    async fn bearer(&self, method: Method, uri: &str, body: Option<Value>) -> Reply {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.admin));
        self.send(req, body, "192.0.2.1").await
    }

    /// A request with the browser's cookie; `csrf` as given (None: no header).
    async fn session(
        &self,
        method: Method,
        uri: &str,
        b: &Browser,
        csrf: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, HOST)
            .header(header::ORIGIN, format!("https://{HOST}"))
            .header("sec-fetch-site", "same-origin")
            .header(header::COOKIE, &b.cookie);
        if let Some(csrf) = csrf {
            req = req.header("x-csrf-token", csrf);
        }
        self.send(req, body, "192.0.2.1").await
    }

    async fn operator(&self, name: &str, role: &str) -> String {
        let r = self
            .bearer(
                Method::POST,
                "/v1/operators",
                Some(json!({"name": name, "role": role})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let id = r.body["id"].as_str().unwrap().to_owned();
        let r = self
            .bearer(
                Method::POST,
                &format!("/v1/operators/{id}/password"),
                Some(json!({"password": PASSWORD})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        id
    }

    /// Enrolls and confirms TOTP for `id`; returns the base32 secret.
    async fn enroll(&self, id: &str) -> String {
        let r = self
            .bearer(Method::POST, &format!("/v1/operators/{id}/totp"), None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let secret = r.body["secret"].as_str().unwrap().to_owned();
        assert!(r.body["otpauth_url"]
            .as_str()
            .unwrap()
            .starts_with("otpauth://totp/"));
        let code = self.code(&secret);
        let r = self
            .bearer(
                Method::POST,
                &format!("/v1/operators/{id}/totp/confirm"),
                Some(json!({"code": code})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["totp_confirmed"], true);
        secret
    }

    fn code(&self, base32: &str) -> String {
        let bytes = totp_rs::Secret::try_from_base32(base32).unwrap();
        let totp = totp_rs::Builder::new()
            .with_algorithm(totp_rs::Algorithm::SHA1)
            .with_digits(6)
            .with_step_duration(30)
            .with_secret(bytes)
            .build()
            .unwrap();
        let now = u64::try_from(self.clock.now().timestamp()).unwrap();
        totp.generate(now).to_string()
    }

    async fn login_from(&self, user: &str, password: &str, code: Option<&str>, ip: &str) -> Reply {
        let mut body = json!({"tenant": self.tenant, "username": user, "password": password});
        if let Some(code) = code {
            body["totp_code"] = json!(code);
        }
        let req = Request::builder()
            .method(Method::POST)
            .uri("/v1/session/login")
            .header(header::HOST, HOST)
            .header(header::ORIGIN, format!("https://{HOST}"));
        self.send(req, Some(body), ip).await
    }

    async fn login(&self, user: &str, password: &str, code: Option<&str>) -> Reply {
        self.login_from(user, password, code, "192.0.2.1").await
    }

    async fn browser(&self, user: &str, code: Option<&str>) -> Browser {
        let r = self.login(user, PASSWORD, code).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        browser_of(&r)
    }

    async fn whoami(&self, b: &Browser) -> StatusCode {
        self.session(Method::GET, "/v1/session", b, None, None)
            .await
            .status
    }

    async fn audit_reasons(&self, ty: &str) -> Vec<String> {
        let tenant = self.tenant_id;
        let filter = AuditFilter {
            types: vec![ty.parse().unwrap()],
            ..AuditFilter::default()
        };
        self.app
            .store
            .list_audit(tenant, &filter)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.draft.reason.unwrap_or_default())
            .collect()
    }
}

/// A KMS identity like the control plane's on Cloud KMS: it may create keys and encrypt, and
/// every decrypt is refused (and counted).
struct EncryptOnlyKms {
    inner: LocalKms,
    decrypts: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl Kms for EncryptOnlyKms {
    async fn create_tenant_key(&self, tenant: TenantId) -> Result<KeyRef, KmsError> {
        self.inner.create_tenant_key(tenant).await
    }
    async fn primary_key(&self, tenant: TenantId) -> Result<KeyRef, KmsError> {
        self.inner.primary_key(tenant).await
    }
    async fn key_info(&self, tenant: TenantId) -> Result<KeyInfo, KmsError> {
        self.inner.key_info(tenant).await
    }
    async fn rotate(&self, tenant: TenantId) -> Result<KeyRef, KmsError> {
        self.inner.rotate(tenant).await
    }
    async fn disable_version(&self, tenant: TenantId, v: &str) -> Result<(), KmsError> {
        self.inner.disable_version(tenant, v).await
    }
    async fn enable_version(&self, tenant: TenantId, v: &str) -> Result<(), KmsError> {
        self.inner.enable_version(tenant, v).await
    }
    async fn wrap_dek(&self, t: TenantId, dek: &Dek, aad: &[u8]) -> Result<WrappedDek, KmsError> {
        self.inner.wrap_dek(t, dek, aad).await
    }
    async fn wrap_dek_under(
        &self,
        t: TenantId,
        dek: &Dek,
        aad: &[u8],
        v: &str,
    ) -> Result<WrappedDek, KmsError> {
        self.inner.wrap_dek_under(t, dek, aad, v).await
    }
    async fn unwrap_dek(&self, _: TenantId, _: &WrappedDek, _: &[u8]) -> Result<Dek, KmsError> {
        self.decrypts
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Err(KmsError::PermissionDenied(
            "cloudkms.cryptoKeyVersions.useToDecrypt".into(),
        ))
    }
}

fn browser_of(r: &Reply) -> Browser {
    let set_cookie = r.headers[header::SET_COOKIE].to_str().unwrap();
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    Browser {
        cookie,
        csrf: r.body["csrf_token"].as_str().unwrap().to_owned(),
    }
}

// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn passwords_that_break_the_rules_are_refused_at_the_api() {
    let t = TestApp::new().await;
    let r = t
        .bearer(
            Method::POST,
            "/v1/operators",
            Some(json!({"name": "bob", "role": "auditor"})),
        )
        .await;
    let id = r.body["id"].as_str().unwrap().to_owned();
    let uri = format!("/v1/operators/{id}/password");
    for (password, why) in [
        ("short-pw", "shorter than 12"),
        ("123456qwerty", "one of the 10k most common"),
        ("123456QWERTY", "common, in another case"),
    ] {
        let r = t
            .bearer(Method::POST, &uri, Some(json!({"password": password})))
            .await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::BAD_REQUEST, "invalid_password"),
            "{why}"
        );
        assert!(
            !r.body.to_string().contains(password),
            "the answer must not echo the password"
        );
    }
    let r = t
        .bearer(Method::POST, &uri, Some(json!({"password": PASSWORD})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["sessions_revoked"], 0);
}

#[tokio::test]
async fn an_approver_logs_in_with_password_and_totp_and_the_cookie_is_locked_down() {
    let t = TestApp::new().await;
    let id = t.operator("alice", "approver").await;
    // Approvers need a confirmed TOTP enrollment before any login.
    let r = t.login("alice", PASSWORD, None).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "forbidden"),
        "{}",
        r.body
    );
    let secret = t.enroll(&id).await;
    t.clock.advance(Duration::from_secs(30)); // the confirming code's step is used up
    let r = t.login("alice", PASSWORD, None).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "unauthenticated"),
        "no code"
    );
    let r = t.login("alice", PASSWORD, Some("000000")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "wrong code");
    let r = t.login("alice", PASSWORD, Some(&t.code(&secret))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        (r.body["operator_id"].as_str(), r.body["role"].as_str()),
        (Some(id.as_str()), Some("approver"))
    );
    let set_cookie = r.headers[header::SET_COOKIE].to_str().unwrap().to_owned();
    assert!(
        set_cookie.starts_with("__Host-ass_session="),
        "{set_cookie}"
    );
    for attribute in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(
            set_cookie.split("; ").any(|a| a == attribute),
            "cookie lacks {attribute}: {set_cookie}"
        );
    }
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
    let b = browser_of(&r);
    let me = t.session(Method::GET, "/v1/session", &b, None, None).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["operator_id"].as_str(), Some(id.as_str()));
    assert!(
        me.body.get("csrf_token").is_none(),
        "the CSRF token is given once, at login"
    );
    // The audit log says who logged in and why logins failed, never what was typed.
    let failed = t.audit_reasons("auth.failed").await;
    assert!(
        failed.iter().any(|r| r == "login: totp_missing"),
        "{failed:?}"
    );
    assert!(failed.iter().any(|r| r == "login: bad_totp"), "{failed:?}");
    let everything = t
        .app
        .store
        .list_audit(t.tenant_id, &AuditFilter::default())
        .await
        .unwrap();
    let dump = format!("{everything:?}");
    assert!(!dump.contains(PASSWORD) && !dump.contains(&secret) && !dump.contains(&b.csrf));
    assert_eq!(t.audit_reasons("session.created").await.len(), 1);
}

#[tokio::test]
async fn the_same_totp_code_twice_is_refused_the_second_time() {
    let t = TestApp::new().await;
    let id = t.operator("alice", "approver").await;
    let secret = t.enroll(&id).await;
    t.clock.advance(Duration::from_secs(30));
    let code = t.code(&secret);
    let first = t.login("alice", PASSWORD, Some(&code)).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let second = t.login("alice", PASSWORD, Some(&code)).await;
    assert_eq!(
        (second.status, second.code()),
        (StatusCode::UNAUTHORIZED, "unauthenticated")
    );
    assert!(t
        .audit_reasons("auth.failed")
        .await
        .iter()
        .any(|r| r == "login: totp_replayed"));
    t.clock.advance(Duration::from_secs(30));
    let next = t.login("alice", PASSWORD, Some(&t.code(&secret))).await;
    assert_eq!(next.status, StatusCode::OK, "the next step's code works");
}

#[tokio::test]
async fn unsafe_requests_need_the_csrf_token_and_the_same_origin() {
    let t = TestApp::new().await;
    t.operator("carol", "auditor").await;
    let b = t.browser("carol", None).await;
    let wrong = "A".repeat(43);
    for (csrf, what) in [(None, "missing"), (Some(wrong.as_str()), "wrong")] {
        let r = t
            .session(Method::POST, "/v1/session/logout", &b, csrf, None)
            .await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::FORBIDDEN, "csrf_failed"),
            "{what} X-CSRF-Token"
        );
    }
    for (name, value) in [
        ("origin", "https://evil.example"),
        ("origin", "null"),
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-site"),
    ] {
        let req = Request::builder()
            .method(Method::POST)
            .uri("/v1/session/logout")
            .header(header::HOST, HOST)
            .header(header::COOKIE, &b.cookie)
            .header("x-csrf-token", &b.csrf)
            .header(name, value);
        let r = t.send(req, None, "192.0.2.1").await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::FORBIDDEN, "csrf_failed"),
            "{name}: {value}"
        );
    }
    // A login posted from another site is refused too (login CSRF).
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/session/login")
        .header(header::HOST, HOST)
        .header(header::ORIGIN, "https://evil.example");
    let body = json!({"tenant": "acme", "username": "carol", "password": PASSWORD});
    assert_eq!(
        t.send(req, Some(body), "192.0.2.1").await.code(),
        "csrf_failed"
    );
    assert_eq!(
        t.whoami(&b).await,
        StatusCode::OK,
        "none of that logged the browser out"
    );
    let r = t
        .session(Method::POST, "/v1/session/logout", &b, Some(&b.csrf), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(r.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    assert_eq!(
        t.whoami(&b).await,
        StatusCode::UNAUTHORIZED,
        "logout revokes the session"
    );
}

#[tokio::test]
async fn a_bearer_token_is_not_a_session() {
    let t = TestApp::new().await;
    for (method, uri) in [
        (Method::GET, "/v1/session"),
        (Method::POST, "/v1/session/logout"),
    ] {
        let r = t.bearer(method, uri, None).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNAUTHORIZED, "unauthenticated"),
            "{uri}"
        );
    }
    // Nor is a cookie forged from a bearer token.
    t.operator("carol", "auditor").await;
    let forged = Browser {
        cookie: format!("__Host-ass_session={}.{}", t.tenant_id, t.admin),
        csrf: String::new(),
    };
    assert_eq!(t.whoami(&forged).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_account_locks_after_repeated_failures_and_unlocks_later() {
    let t = TestApp::new().await;
    t.operator("carol", "auditor").await;
    for _ in 0..5 {
        let r = t.login("carol", "wrong password!", None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let locked = t.login("carol", PASSWORD, None).await;
    assert_eq!(
        (locked.status, locked.code()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        "even the right password waits"
    );
    let retry: u64 = locked.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(retry, 900);
    // From another address too: the count is the account's, in the database.
    assert_eq!(
        t.login_from("carol", PASSWORD, None, "198.51.100.9")
            .await
            .status,
        StatusCode::TOO_MANY_REQUESTS
    );
    t.clock.advance(Duration::from_secs(901));
    assert_eq!(
        t.login("carol", PASSWORD, None).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_address_that_keeps_failing_is_throttled_whatever_the_account() {
    let t = TestApp::with(
        |s| s,
        RateLimit {
            per_second: 1,
            burst: 3,
        },
    )
    .await;
    t.operator("carol", "auditor").await;
    for user in ["nobody", "nobody-else", "carol"] {
        let r = t
            .login_from(user, "wrong password!", None, "203.0.113.5")
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{user}");
    }
    let r = t
        .login_from("someone", "wrong password!", None, "203.0.113.5")
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    let r = t.login_from("carol", PASSWORD, None, "203.0.113.5").await;
    assert_eq!(
        r.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the address waits, right password or not"
    );
    let r = t.login_from("carol", PASSWORD, None, "198.51.100.9").await;
    assert_eq!(r.status, StatusCode::OK, "another address is not affected");
}

#[tokio::test]
async fn totp_enrollment_and_login_work_with_a_kms_that_refuses_every_decrypt() {
    let t = TestApp::new().await;
    let kms = Arc::new(EncryptOnlyKms {
        inner: LocalKms::open_or_create(t.dir.path().join("keyring-2"), MasterKey::generate())
            .unwrap(),
        decrypts: Default::default(),
    });
    let app = app_with_kms(
        &t.db_url,
        kms.clone(),
        t.app.pepper.clone(),
        settings(&t.clock),
        RateLimit {
            per_second: 10,
            burst: 50,
        },
    )
    .await;
    let created = tenants::create_tenant(&app, "encrypt-only").await.unwrap();
    let t = TestApp {
        router: agent_secret_control_plane::api::app(app.clone()),
        admin: created.admin_token.expose().to_owned(),
        tenant: "encrypt-only".into(),
        tenant_id: created.tenant_id,
        app,
        ..t
    };
    let id = t.operator("alice", "approver").await;
    let secret = t.enroll(&id).await;
    t.clock.advance(Duration::from_secs(30));
    let b = t.browser("alice", Some(&t.code(&secret))).await;
    assert_eq!(t.whoami(&b).await, StatusCode::OK);
    let wrong = t.login("alice", PASSWORD, Some("000000")).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{}", wrong.body);
    assert_eq!(
        kms.decrypts.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "checking a TOTP code must not ask the KMS to decrypt"
    );
}

#[tokio::test]
async fn a_new_pepper_makes_every_password_fail() {
    let t = TestApp::new().await;
    t.operator("carol", "auditor").await;
    assert_eq!(
        t.login("carol", PASSWORD, None).await.status,
        StatusCode::OK
    );
    let elsewhere = t.dir.path().join("replica");
    std::fs::create_dir(&elsewhere).unwrap();
    let other = app_on(
        &t.db_url,
        &elsewhere,
        Arc::new(Pepper::generate()),
        settings(&t.clock),
        RateLimit {
            per_second: 10,
            burst: 50,
        },
    )
    .await;
    let router = agent_secret_control_plane::api::app(other);
    let body = json!({"tenant": "acme", "username": "carol", "password": PASSWORD});
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/session/login")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let res = router.oneshot(req).await.unwrap();
    assert_eq!(
        res.status(),
        StatusCode::UNAUTHORIZED,
        "bcrypt runs over HMAC(pepper, password)"
    );
}

#[tokio::test]
async fn a_new_pepper_voids_totp_enrollments_even_after_a_password_reset() {
    use agent_secret_control_plane::audit::{Actor, AuditDraft, AuditEventType};
    let t = TestApp::new().await;
    let id = t.operator("alice", "approver").await;
    let secret = t.enroll(&id).await;
    let elsewhere = t.dir.path().join("replica");
    std::fs::create_dir(&elsewhere).unwrap();
    let other = app_on(
        &t.db_url,
        &elsewhere,
        Arc::new(Pepper::generate()),
        settings(&t.clock),
        RateLimit {
            per_second: 10,
            burst: 50,
        },
    )
    .await;
    // The password is reset under the new pepper; the TOTP enrollment is not.
    let password = agent_secret_core::secret::SecretString::new(PASSWORD.into());
    let hash = other.sessions.hasher(&other).hash(&password).unwrap();
    other
        .store
        .set_password(
            t.tenant_id,
            id.parse().unwrap(),
            &hash,
            t.clock.now(),
            AuditDraft::new(AuditEventType::OperatorPasswordSet, Actor::system()),
        )
        .await
        .unwrap();
    t.clock.advance(Duration::from_secs(30));
    let t = TestApp {
        router: agent_secret_control_plane::api::app(other.clone()),
        app: other,
        ..t
    };
    let r = t.login("alice", PASSWORD, Some(&t.code(&secret))).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        "the old enrollment must not open under another pepper: {}",
        r.body
    );
    assert!(r.headers.get(header::SET_COOKIE).is_none(), "no session");
    assert!(!r.body.to_string().contains(&secret));
}

#[tokio::test]
async fn sessions_end_when_idle_and_at_their_absolute_end() {
    let t = TestApp::with(
        |s| SessionSettings {
            idle_timeout: Duration::from_secs(30 * 60),
            absolute_timeout: Duration::from_secs(2 * 3600),
            ..s
        },
        RateLimit {
            per_second: 10,
            burst: 50,
        },
    )
    .await;
    t.operator("carol", "auditor").await;
    let b = t.browser("carol", None).await;
    for _ in 0..2 {
        t.clock.advance(Duration::from_secs(29 * 60));
        assert_eq!(
            t.whoami(&b).await,
            StatusCode::OK,
            "each use restarts the idle timer"
        );
    }
    t.clock.advance(Duration::from_secs(31 * 60));
    assert_eq!(
        t.whoami(&b).await,
        StatusCode::UNAUTHORIZED,
        "idle for 31 minutes"
    );
    let b = t.browser("carol", None).await;
    for _ in 0..4 {
        t.clock.advance(Duration::from_secs(29 * 60));
        assert_eq!(t.whoami(&b).await, StatusCode::OK);
    }
    t.clock.advance(Duration::from_secs(5 * 60));
    assert_eq!(
        t.whoami(&b).await,
        StatusCode::UNAUTHORIZED,
        "past the 2 h absolute end"
    );
}

#[tokio::test]
async fn changing_the_password_needs_the_current_one_and_ends_every_session() {
    let t = TestApp::new().await;
    let id = t.operator("carol", "auditor").await;
    let b1 = t.browser("carol", None).await;
    let b2 = t.browser("carol", None).await;
    let uri = format!("/v1/operators/{id}/password");
    let new = "a brand new passphrase";
    let r = t
        .session(
            Method::POST,
            &uri,
            &b1,
            Some(&b1.csrf),
            Some(json!({"password": new, "current_password": "not it at all"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let r = t
        .session(
            Method::POST,
            &uri,
            &b1,
            Some(&b1.csrf),
            Some(json!({"password": new})),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "no current password");
    let r = t
        .session(
            Method::POST,
            &uri,
            &b1,
            Some(&b1.csrf),
            Some(json!({"password": new, "current_password": PASSWORD})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["sessions_revoked"], 2);
    assert_eq!(t.whoami(&b1).await, StatusCode::UNAUTHORIZED);
    assert_eq!(t.whoami(&b2).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        t.login("carol", PASSWORD, None).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(t.login("carol", new, None).await.status, StatusCode::OK);
    // Another operator's password is an admin's business only.
    let other = t.operator("dave", "auditor").await;
    let b = browser_of(&t.login("carol", new, None).await);
    let r = t
        .session(
            Method::POST,
            &format!("/v1/operators/{other}/password"),
            &b,
            Some(&b.csrf),
            Some(json!({"password": new})),
        )
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "forbidden"));
}

#[tokio::test]
async fn disabling_an_operator_ends_their_sessions_logins_and_token() {
    let t = TestApp::new().await;
    let id = t.operator("carol", "auditor").await;
    let b = t.browser("carol", None).await;
    let r = t
        .bearer(Method::POST, &format!("/v1/operators/{id}/disable"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body["disabled_at"].is_string());
    assert_eq!(t.whoami(&b).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        t.login("carol", PASSWORD, None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let again = t
        .bearer(Method::POST, &format!("/v1/operators/{id}/disable"), None)
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert!(t
        .audit_reasons("auth.failed")
        .await
        .iter()
        .any(|r| r == "login: account_disabled"));
}

#[tokio::test]
async fn the_session_endpoints_are_in_the_openapi_document() {
    let t = TestApp::new().await;
    let req = Request::builder().uri("/v1/openapi.json");
    let doc = t.send(req, None, "192.0.2.1").await.body;
    for path in [
        "/v1/session",
        "/v1/session/login",
        "/v1/session/logout",
        "/v1/operators/{id}/password",
        "/v1/operators/{id}/totp",
        "/v1/operators/{id}/totp/confirm",
        "/v1/operators/{id}/disable",
    ] {
        assert!(doc["paths"].get(path).is_some(), "openapi lacks {path}");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["session"]["in"],
        "cookie"
    );
}

#[tokio::test]
async fn no_password_totp_secret_session_id_or_csrf_token_reaches_the_database() {
    let t = TestApp::new().await;
    let id = t.operator("alice", "approver").await;
    let secret = t.enroll(&id).await;
    t.clock.advance(Duration::from_secs(30));
    let r = t.login("alice", PASSWORD, Some(&t.code(&secret))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let b = browser_of(&r);
    let session_secret = b.cookie.split_once('.').unwrap().1.to_owned();
    let raw_totp = totp_rs::Secret::try_from_base32(&secret).unwrap().to_vec();
    let mut stored = Vec::new();
    for file in ["store.db", "store.db-wal"] {
        if let Ok(bytes) = std::fs::read(t.dir.path().join(file)) {
            stored.extend(bytes);
        }
    }
    assert!(!stored.is_empty());
    let contains = |needle: &[u8]| stored.windows(needle.len()).any(|w| w == needle);
    for (what, needle) in [
        ("password", PASSWORD.as_bytes()),
        ("TOTP secret (base32)", secret.as_bytes()),
        ("TOTP secret (raw)", &raw_totp[..]),
        ("session secret", session_secret.as_bytes()),
        ("CSRF token", b.csrf.as_bytes()),
    ] {
        assert!(!contains(needle), "the database holds the {what}");
    }
}

/// `HumanSession` as the approval endpoints will use it, on a route of its own.
#[tokio::test]
async fn the_human_session_extractor_takes_only_a_session_with_its_csrf_token() {
    use agent_secret_control_plane::api::extract::HumanSession;
    let t = TestApp::new().await;
    let id = t.operator("carol", "auditor").await;
    let b = t.browser("carol", None).await;
    let probe = axum::Router::new()
        .route(
            "/probe",
            axum::routing::post(|HumanSession(human): HumanSession| async move {
                human
                    .require(&[agent_secret_core::api::Role::Auditor])
                    .unwrap();
                human.id.to_string()
            }),
        )
        .with_state(t.app.clone());
    let send = |req: Request<Body>| {
        let probe = probe.clone();
        async move { probe.oneshot(req).await.unwrap().status() }
    };
    let base = || {
        Request::builder()
            .method(Method::POST)
            .uri("/probe")
            .header(header::HOST, HOST)
    };
    let bearer = base()
        .header(header::AUTHORIZATION, format!("Bearer {}", t.admin))
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        send(bearer).await,
        StatusCode::UNAUTHORIZED,
        "an API token is no session"
    );
    let no_csrf = base()
        .header(header::COOKIE, &b.cookie)
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(no_csrf).await, StatusCode::FORBIDDEN);
    let ok = base()
        .header(header::COOKIE, &b.cookie)
        .header("x-csrf-token", &b.csrf)
        .body(Body::empty())
        .unwrap();
    let res = probe.clone().oneshot(ok).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(String::from_utf8_lossy(&body), id);
}

#[tokio::test]
async fn two_logins_racing_with_one_code_open_one_session() {
    let t = TestApp::new().await;
    let id = t.operator("alice", "approver").await;
    let secret = t.enroll(&id).await;
    t.clock.advance(Duration::from_secs(30));
    let code = t.code(&secret);
    let (a, b) = tokio::join!(
        t.login("alice", PASSWORD, Some(&code)),
        t.login_from("alice", PASSWORD, Some(&code), "198.51.100.9")
    );
    let ok = [a.status, b.status]
        .iter()
        .filter(|s| **s == StatusCode::OK)
        .count();
    assert_eq!(ok, 1, "{} {}", a.body, b.body);
}
