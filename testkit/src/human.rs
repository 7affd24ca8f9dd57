//! A human operator logged in over real HTTPS, for end-to-end tests of the endpoints only a
//! password session may call (`POST /v1/approvals/{id}/approve` and `/deny`, `GET
//! /v1/session`): never an operator API token, never an agent key.
//!
//! [`HumanLogin::create`] does what an admin and a new approver would: the admin creates the
//! operator and sets its password, the TOTP secret is enrolled and confirmed with a first code
//! (computed here with `totp-rs` from the enrollment secret, as an authenticator app would),
//! and the operator logs in with password and code through `POST /v1/session/login`. The
//! result carries the `__Host-ass_session` cookie and the CSRF token, and [`HumanLogin::call`]
//! sends both (plus a same-origin `Origin`) with every request:
//!
//! ```ignore
//! let alice = HumanLogin::create(&h.cp, &h.tenant.id, &h.tenant.admin, "alice", "approver").await;
//! let (status, body) = alice.call(Method::POST, &format!("/v1/approvals/{id}/approve"), Some(json!({}))).await;
//! let bob = HumanLogin::create(&h.cp, &h.tenant.id, &h.tenant.admin, "bob", "approver").await;
//! ```
//!
//! A TOTP code is accepted once per 30-second step, so codes are taken from successive steps
//! (the server accepts one step of skew): `create` uses two (confirm, login) without waiting;
//! [`HumanLogin::login_again`] may wait for the next step. Several humans never wait on each
//! other: each has its own secret.

use std::sync::Mutex;

use reqwest::{header, Method, RequestBuilder, StatusCode};
use serde_json::{json, Value};

use crate::api::Api;

/// The password every human of the kit gets (long and uncommon enough for the rules).
pub const HUMAN_PASSWORD: &str = "correct horse battery staple";

/// A logged-in human operator: its ids, its session cookie and CSRF token (`Debug` shows the
/// ids only).
pub struct HumanLogin {
    api: Api,
    /// The tenant as given to `create` (name or id).
    pub tenant: String,
    pub username: String,
    pub operator_id: String,
    pub role: String,
    /// `__Host-ass_session=...`, as a `Cookie` header value.
    pub cookie: String,
    pub csrf_token: String,
    authenticator: Authenticator,
}

/// What an authenticator app does with one base32 TOTP secret (SHA-1, 6 digits, 30 s): a code
/// for a step after every code it already gave out, as the server accepts each step once.
pub struct Authenticator {
    secret: String,
    last_step: Mutex<u64>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authenticator([REDACTED])")
    }
}

impl std::fmt::Debug for HumanLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HumanLogin")
            .field("username", &self.username)
            .field("operator_id", &self.operator_id)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl HumanLogin {
    /// Creates operator `username` with `role` (`admin`, `approver`, `auditor`) as
    /// `admin_token`, gives it [`HUMAN_PASSWORD`] and a confirmed TOTP enrollment, and logs it
    /// in over HTTPS. `tenant` is the tenant's id or name (`Tenant::id` in the harness).
    pub async fn create(
        api: &Api,
        tenant: &str,
        admin_token: &str,
        username: &str,
        role: &str,
    ) -> HumanLogin {
        let mut human = HumanLogin::enrolled(api, tenant, admin_token, username, role).await;
        let (status, body) = human.login_again().await;
        assert_eq!(status, StatusCode::OK, "login of {username}: {body}");
        human
    }

    /// [`HumanLogin::create`] without the login: the operator exists with its password and a
    /// confirmed TOTP enrollment, and logs in elsewhere (a browser) with [`HumanLogin::next_code`].
    pub async fn enrolled(
        api: &Api,
        tenant: &str,
        admin_token: &str,
        username: &str,
        role: &str,
    ) -> HumanLogin {
        let created = api
            .ok(
                Method::POST,
                "/v1/operators",
                admin_token,
                Some(json!({"name": username, "role": role})),
            )
            .await;
        let id = created["id"].as_str().unwrap().to_owned();
        api.ok(
            Method::POST,
            &format!("/v1/operators/{id}/password"),
            admin_token,
            Some(json!({ "password": HUMAN_PASSWORD })),
        )
        .await;
        let enrolled = api
            .ok(
                Method::POST,
                &format!("/v1/operators/{id}/totp"),
                admin_token,
                None,
            )
            .await;
        let human = HumanLogin {
            api: api.clone(),
            tenant: tenant.to_owned(),
            username: username.to_owned(),
            operator_id: id.clone(),
            role: role.to_owned(),
            cookie: String::new(),
            csrf_token: String::new(),
            authenticator: Authenticator::new(enrolled["secret"].as_str().unwrap()),
        };
        let code = human.next_code();
        api.ok(
            Method::POST,
            &format!("/v1/operators/{id}/totp/confirm"),
            admin_token,
            Some(json!({ "code": code })),
        )
        .await;
        human
    }

    /// Logs in once more (a new session replaces this one's cookie and CSRF token).
    pub async fn login_again(&mut self) -> (StatusCode, Value) {
        let code = self.next_code();
        let res = self
            .api
            .client
            .post(self.api.url("/v1/session/login"))
            .header(header::ORIGIN, &self.api.base)
            .json(&json!({
                "tenant": self.tenant,
                "username": self.username,
                "password": HUMAN_PASSWORD,
                "totp_code": code,
            }))
            .send()
            .await
            .unwrap();
        let status = res.status();
        if let Some(cookie) = res.headers().get(header::SET_COOKIE) {
            let cookie = cookie.to_str().unwrap();
            self.cookie = cookie.split(';').next().unwrap().to_owned();
        }
        let body: Value = res.json().await.unwrap_or(Value::Null);
        if let Some(csrf) = body["csrf_token"].as_str() {
            self.csrf_token = csrf.to_owned();
        }
        (status, body)
    }

    /// A request with the session cookie, the CSRF token and a same-origin `Origin`.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.api
            .client
            .request(method, self.api.url(path))
            .header(header::COOKIE, &self.cookie)
            .header("x-csrf-token", &self.csrf_token)
            .header(header::ORIGIN, &self.api.base)
    }

    /// Status and JSON body (or the text as a JSON string) of one call with the session.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.request(method, path);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let text = res.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// A TOTP code for a step after every code this human already used
    /// ([`Authenticator::next_code`]).
    pub fn next_code(&self) -> String {
        self.authenticator.next_code()
    }
}

impl Authenticator {
    /// An authenticator holding `secret` (base32, as an enrollment shows it).
    pub fn new(secret: &str) -> Authenticator {
        Authenticator {
            secret: secret.to_owned(),
            last_step: Mutex::new(0),
        }
    }

    /// The current step's code, or the next one's (accepted with the server's one step of
    /// skew), waiting only if both are used up.
    pub fn next_code(&self) -> String {
        let totp = totp_rs::Builder::new()
            .with_algorithm(totp_rs::Algorithm::SHA1)
            .with_digits(6)
            .with_step_duration(30)
            .with_secret(totp_rs::Secret::try_from_base32(&self.secret).unwrap())
            .build()
            .unwrap();
        loop {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let mut last = self.last_step.lock().unwrap();
            let step = (now / 30).max(*last + 1);
            if step <= now / 30 + 1 {
                *last = step;
                return totp.generate(step * 30).to_string();
            }
            drop(last);
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    }
}
