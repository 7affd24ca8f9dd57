//! API tests: the real router, store (SQLite in a temp dir) and local KMS, driven in-process
//! with `oneshot` — every status, error code and auth rule an API user relies on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use agent_secret_control_plane::audit::{Actor, AuditDraft, AuditEventType, ChainVerifier};
use agent_secret_control_plane::db::Db;
use agent_secret_control_plane::service::{tenants, App, Policy};
use agent_secret_control_plane::store::sql::SqlStore;
use agent_secret_control_plane::store::{AuditFilter, TokenRecord};
use agent_secret_core::api::{Sensitivity, TokenStatus};
use agent_secret_core::credential::{issue_with_id, CredentialKind, Pepper, PresentedCredential};
use agent_secret_core::envelope::{open, Envelope, SecretAad};
use agent_secret_core::ids::{AgentId, TenantId, TokenId};
use agent_secret_core::kms::local::{LocalKms, MasterKey};
use agent_secret_core::scope::Scope;
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use chrono::{Duration, Utc};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

const VALUE: &str = "sk-live-THE-REAL-KEY-0123456789";

struct TestApp {
    app: Arc<App>,
    router: axum::Router,
    admin: String,
    tenant: TenantId,
    _dir: tempfile::TempDir,
}

struct Response {
    status: StatusCode,
    body: Value,
    text: String,
}

impl Response {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("<no code>")
    }
}

impl TestApp {
    async fn new() -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("store.db").display());
        let db = Db::connect(&url).await.unwrap();
        db.migrate().await.unwrap();
        let kms =
            LocalKms::open_or_create(dir.path().join("keyring"), MasterKey::generate()).unwrap();
        let policy = Policy {
            max_token_ttl_seconds: 3600,
            grant_cache_ttl_seconds: 30,
            ..Policy::default()
        };
        let app = Arc::new(App::new(
            Arc::new(SqlStore::new(db)),
            Arc::new(kms),
            Arc::new(Pepper::generate()),
            policy,
        ));
        let created = tenants::create_tenant(&app, "acme").await.unwrap();
        TestApp {
            router: agent_secret_control_plane::api::app(app.clone()),
            admin: created.admin_token.expose().to_owned(),
            tenant: created.tenant_id,
            app,
            _dir: dir,
        }
    }

    async fn call(
        &self,
        method: Method,
        uri: &str,
        auth: Option<&str>,
        body: Option<Value>,
    ) -> Response {
        let body = body.map(|b| b.to_string());
        self.raw(method, uri, auth, body.as_deref(), "application/json")
            .await
    }

    async fn raw(
        &self,
        method: Method,
        uri: &str,
        auth: Option<&str>,
        body: Option<&str>,
        content_type: &str,
    ) -> Response {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(auth) = auth {
            req = req.header(header::AUTHORIZATION, format!("Bearer {auth}"));
        }
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, content_type)
                .body(Body::from(b.to_owned())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Response {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        }
    }

    async fn post(&self, uri: &str, auth: &str, body: Value) -> Response {
        self.call(Method::POST, uri, Some(auth), Some(body)).await
    }

    async fn get(&self, uri: &str, auth: &str) -> Response {
        self.call(Method::GET, uri, Some(auth), None).await
    }

    async fn agent(&self) -> (String, String) {
        let r = self
            .post(
                "/v1/agents",
                &self.admin,
                json!({"name": "billing-bot", "allow": ["secrets:read:**"]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        (
            r.body["id"].as_str().unwrap().into(),
            r.body["agent_key"].as_str().unwrap().into(),
        )
    }

    async fn sidecar(&self) -> String {
        let r = self
            .post("/v1/sidecars", &self.admin, json!({"name": "host-1"}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.body["sidecar_key"].as_str().unwrap().into()
    }

    async fn put_secret(&self, path: &str, hosts: &[&str], sensitivity: Option<&str>) -> Response {
        let mut body = json!({"value": VALUE, "allowed_hosts": hosts});
        if let Some(s) = sensitivity {
            body["sensitivity"] = json!(s);
        }
        self.call(
            Method::PUT,
            &format!("/v1/secrets/{path}"),
            Some(&self.admin),
            Some(body),
        )
        .await
    }

    async fn token(&self, agent_key: &str, body: Value) -> Response {
        self.post("/v1/tokens", agent_key, body).await
    }

    async fn resolve(
        &self,
        sidecar_key: &str,
        token: &str,
        paths: &[&str],
        host: &str,
        ip: &str,
    ) -> Response {
        self.post(
            "/v1/sidecar/resolve",
            sidecar_key,
            json!({"token": token, "paths": paths, "destination_host": host, "client_ip": ip}),
        )
        .await
    }

    /// Agent, sidecar, a secret bound to api.openai.com and a token for `production/openai/*`.
    async fn scenario(&self) -> Scenario {
        let (agent_id, agent_key) = self.agent().await;
        let sidecar_key = self.sidecar().await;
        let r = self
            .put_secret("production/openai/api_key", &["api.openai.com"], None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let t = self
            .token(
                &agent_key,
                json!({"scopes": ["secrets:read:production/openai/*"], "ttl_seconds": 600}),
            )
            .await;
        assert_eq!(t.status, StatusCode::CREATED, "{}", t.text);
        Scenario {
            agent_id,
            agent_key,
            sidecar_key,
            token: t.body["token"].as_str().unwrap().into(),
            token_id: t.body["id"].as_str().unwrap().into(),
        }
    }

    /// Writes a token row directly, for states the API cannot produce on demand.
    async fn insert_token(&self, agent_id: &str, mutate: impl FnOnce(&mut TokenRecord)) -> String {
        let id = TokenId::new();
        let cred = issue_with_id(CredentialKind::Token, id.0, &self.app.pepper);
        let mut record = TokenRecord {
            id,
            tenant_id: self.tenant,
            agent_id: agent_id.parse::<AgentId>().unwrap(),
            scopes: vec![Scope::parse("secrets:read:production/**").unwrap()],
            key_hash: cred.hash.to_vec(),
            status: TokenStatus::Active,
            approved_sensitivity: Sensitivity::Standard,
            ip_allowlist: vec![],
            max_uses: None,
            uses: 0,
            expires_at: Utc::now() + Duration::minutes(10),
            created_at: Utc::now(),
            revoked_at: None,
        };
        mutate(&mut record);
        self.app
            .store
            .insert_token(
                &record,
                AuditDraft::new(AuditEventType::TokenIssued, Actor::system()),
            )
            .await
            .unwrap();
        cred.token.expose().to_owned()
    }
}

struct Scenario {
    agent_id: String,
    agent_key: String,
    sidecar_key: String,
    token: String,
    token_id: String,
}

/// Concurrent resolves share transactions (group commit), yet each is granted or refused as if
/// alone: a 5-use token grants exactly 5 of 60 racing resolves, unlimited tokens grant every
/// one, and each grant has exactly one `secret.read` event in a valid chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_resolves_are_batched_but_each_counted_and_audited_once() {
    let t = Arc::new(TestApp::new().await);
    let s = t.scenario().await;
    let limited = t
        .token(
            &s.agent_key,
            json!({"scopes": ["secrets:read:production/**"], "ttl_seconds": 600, "max_uses": 5}),
        )
        .await;
    let limited = limited.body["token"].as_str().unwrap().to_owned();
    let mut racing = tokio::task::JoinSet::new();
    for i in 0..120 {
        let (t, sidecar) = (t.clone(), s.sidecar_key.clone());
        let token = if i % 2 == 0 {
            limited.clone()
        } else {
            s.token.clone()
        };
        racing.spawn(async move {
            let r = t
                .resolve(
                    &sidecar,
                    &token,
                    &["production/openai/api_key"],
                    "api.openai.com",
                    "10.0.0.1",
                )
                .await;
            (token, r.status, r.code().to_owned())
        });
    }
    let (mut limited_ok, mut limited_exhausted, mut free_ok) = (0, 0, 0);
    while let Some(done) = racing.join_next().await {
        let (token, status, code) = done.unwrap();
        match (token == limited, status) {
            (true, StatusCode::OK) => limited_ok += 1,
            (true, StatusCode::FORBIDDEN) if code == "uses_exhausted" => limited_exhausted += 1,
            (false, StatusCode::OK) => free_ok += 1,
            other => panic!("unexpected outcome {other:?} {code}"),
        }
    }
    assert_eq!((limited_ok, limited_exhausted, free_ok), (5, 55, 60));
    let events = t
        .app
        .store
        .list_audit(t.tenant, &AuditFilter::default())
        .await
        .unwrap();
    let reads = events
        .iter()
        .filter(|e| e.draft.event_type == AuditEventType::SecretRead && e.draft.success)
        .count();
    assert_eq!(reads, 65, "one secret.read per grant");
    let mut verifier = ChainVerifier::default();
    events.iter().for_each(|e| verifier.push(e));
    let report = verifier.finish(t.app.store.audit_head(t.tenant).await.unwrap());
    assert!(report.valid, "{report:?}");
}

/// Concurrent resolves also share read transactions (group read), yet each token is admitted
/// or refused on its own: racing resolves of a token whose scope covers the path, one whose
/// scope does not, and one whose id exists but whose secret part does not verify each get
/// their own answer, and only the admitted ones get an envelope.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_resolves_are_read_together_but_admitted_each_alone() {
    let t = Arc::new(TestApp::new().await);
    let s = t.scenario().await;
    let elsewhere = t
        .token(
            &s.agent_key,
            json!({"scopes": ["secrets:read:staging/**"], "ttl_seconds": 600}),
        )
        .await;
    let elsewhere = elsewhere.body["token"].as_str().unwrap().to_owned();
    let forged = t
        .insert_token(&s.agent_id, |r| r.key_hash = vec![0; 32])
        .await;
    let mut racing = tokio::task::JoinSet::new();
    for i in 0..90 {
        let (t, sidecar) = (t.clone(), s.sidecar_key.clone());
        let token = [&s.token, &elsewhere, &forged][i % 3].clone();
        racing.spawn(async move {
            let r = t
                .resolve(
                    &sidecar,
                    &token,
                    &["production/openai/api_key"],
                    "api.openai.com",
                    "10.0.0.1",
                )
                .await;
            let envelopes = r.body["secrets"].as_array().map_or(0, Vec::len);
            (i % 3, r.status, r.code().to_owned(), envelopes)
        });
    }
    let mut seen = [0; 3];
    while let Some(done) = racing.join_next().await {
        let (kind, status, code, envelopes) = done.unwrap();
        match (kind, status, code.as_str(), envelopes) {
            (0, StatusCode::OK, _, 1)
            | (1, StatusCode::FORBIDDEN, "scope_denied", 0)
            | (2, StatusCode::FORBIDDEN, "token_invalid", 0) => seen[kind] += 1,
            other => panic!("resolve {kind} answered {other:?}"),
        }
    }
    assert_eq!(seen, [30, 30, 30]);
}

#[tokio::test]
async fn resolve_returns_an_envelope_that_opens_to_the_stored_value() {
    let t = TestApp::new().await;
    let s = t.scenario().await;
    let r = t
        .resolve(
            &s.sidecar_key,
            &s.token,
            &["production/openai/api_key"],
            "api.openai.com",
            "127.0.0.1",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(
        !r.text.contains(VALUE),
        "resolve must return ciphertext only"
    );
    assert_eq!(r.body["grant"]["tenant_id"], t.tenant.to_string());
    assert_eq!(r.body["grant"]["cache_ttl_seconds"], 30);
    let secret = &r.body["secrets"][0];
    let envelope: Envelope = serde_json::from_value(secret["envelope"].clone()).unwrap();
    let aad = SecretAad {
        tenant: t.tenant,
        path: "production/openai/api_key",
        version: secret["version"].as_i64().unwrap(),
    };
    let plaintext = open(t.app.kms.as_ref(), &aad, &envelope).await.unwrap();
    assert_eq!(plaintext.expose(), VALUE.as_bytes());
}

#[tokio::test]
async fn no_endpoint_ever_returns_the_secret_value() {
    let t = TestApp::new().await;
    let s = t.scenario().await;
    let mut bodies = vec![
        t.get("/v1/secrets/production/openai/api_key", &t.admin)
            .await
            .text,
        t.get("/v1/secrets?prefix=production", &t.admin).await.text,
        t.get("/v1/audit?format=json", &t.admin).await.text,
        t.get("/v1/audit?format=csv", &t.admin).await.text,
        t.get(&format!("/v1/tokens/{}", s.token_id), &t.admin)
            .await
            .text,
        t.get("/metrics", &t.admin).await.text,
    ];
    bodies.push(
        t.resolve(
            &s.sidecar_key,
            &s.token,
            &["production/openai/api_key"],
            "api.openai.com",
            "10.0.0.1",
        )
        .await
        .text,
    );
    for body in bodies {
        assert!(
            !body.contains(VALUE),
            "a response leaked the secret value: {body}"
        );
    }
}

#[tokio::test]
async fn each_resolve_denial_has_its_stable_code() {
    let t = TestApp::new().await;
    let s = t.scenario().await;
    let path = ["production/openai/api_key"];
    let host = "api.openai.com";

    let r = t
        .resolve(&s.sidecar_key, "asst_not-a-token", &path, host, "10.0.0.1")
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "token_invalid")
    );

    let r = t
        .resolve(
            &s.sidecar_key,
            &s.token,
            &path,
            "evil.example.com",
            "10.0.0.1",
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "destination_not_allowed")
    );

    // Outside the scope: the same answer whether the path exists or not.
    t.put_secret("production/anthropic/api_key", &[host], None)
        .await;
    for p in [
        "production/anthropic/api_key",
        "production/anthropic/missing",
        "production/openai/org/key",
    ] {
        let r = t
            .resolve(&s.sidecar_key, &s.token, &[p], host, "10.0.0.1")
            .await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::FORBIDDEN, "scope_denied"),
            "{p}"
        );
    }

    let r = t
        .resolve(
            &s.sidecar_key,
            &s.token,
            &["production/openai/missing"],
            host,
            "10.0.0.1",
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "secret_not_found")
    );

    let ip_token = t
        .token(&s.agent_key, json!({"scopes": ["secrets:read:production/openai/*"], "ttl_seconds": 60, "ip_allowlist": ["10.1.0.0/16", "2001:db8::/32"]}))
        .await
        .body["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = t
        .resolve(&s.sidecar_key, &ip_token, &path, host, "10.2.0.1")
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "ip_not_allowed")
    );
    assert_eq!(
        t.resolve(&s.sidecar_key, &ip_token, &path, host, "10.1.2.3")
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        t.resolve(&s.sidecar_key, &ip_token, &path, host, "2001:db8::7")
            .await
            .status,
        StatusCode::OK
    );

    let once = t
        .token(&s.agent_key, json!({"scopes": ["secrets:read:production/openai/*"], "ttl_seconds": 60, "max_uses": 1}))
        .await
        .body["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let first = t
        .resolve(&s.sidecar_key, &once, &path, host, "10.0.0.1")
        .await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(
        first.body["grant"]["cache_ttl_seconds"], 0,
        "counted tokens must never be cached"
    );
    let r = t
        .resolve(&s.sidecar_key, &once, &path, host, "10.0.0.1")
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "uses_exhausted")
    );

    let expired = t
        .insert_token(&s.agent_id, |tok| {
            tok.expires_at = Utc::now() - Duration::seconds(1)
        })
        .await;
    let r = t
        .resolve(&s.sidecar_key, &expired, &path, host, "10.0.0.1")
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "token_expired")
    );

    let pending = t
        .insert_token(&s.agent_id, |tok| tok.status = TokenStatus::PendingApproval)
        .await;
    let r = t
        .resolve(&s.sidecar_key, &pending, &path, host, "10.0.0.1")
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "approval_pending")
    );

    let denied = t
        .insert_token(&s.agent_id, |tok| tok.status = TokenStatus::Denied)
        .await;
    let r = t
        .resolve(&s.sidecar_key, &denied, &path, host, "10.0.0.1")
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "approval_denied")
    );

    // A token of the right tenant with a forged secret part is simply invalid.
    let forged_id = PresentedCredential::parse(&s.token).unwrap().id;
    let forged = issue_with_id(CredentialKind::Token, forged_id, &Pepper::generate());
    let r = t
        .resolve(
            &s.sidecar_key,
            forged.token.expose(),
            &path,
            host,
            "10.0.0.1",
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "token_invalid")
    );
    t.put_secret("production/openai/admin_key", &[host], Some("sensitive"))
        .await;
    let r = t
        .resolve(
            &s.sidecar_key,
            &s.token,
            &["production/openai/admin_key"],
            host,
            "10.0.0.1",
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "approval_pending"),
        "sensitive needs approval"
    );

    let r = t
        .post(
            &format!("/v1/tokens/{}/revoke", s.token_id),
            &s.agent_key,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["status"], "revoked");
    let r = t
        .resolve(&s.sidecar_key, &s.token, &path, host, "10.0.0.1")
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "token_revoked")
    );
}

#[tokio::test]
async fn resolve_without_paths_validates_the_token_and_counts_nothing() {
    let t = TestApp::new().await;
    let s = t.scenario().await;
    let once = t
        .token(
            &s.agent_key,
            json!({"scopes": ["secrets:read:production/openai/*"], "ttl_seconds": 60, "max_uses": 1}),
        )
        .await;
    let (once_id, once) = (
        once.body["id"].as_str().unwrap().to_owned(),
        once.body["token"].as_str().unwrap().to_owned(),
    );
    for _ in 0..3 {
        let r = t
            .resolve(&s.sidecar_key, &once, &[], "example.com", "10.0.0.1")
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.body["secrets"], json!([]));
        assert_eq!(r.body["grant"]["cache_ttl_seconds"], 0);
    }
    let info = t.get(&format!("/v1/tokens/{once_id}"), &t.admin).await;
    assert_eq!(info.body["uses"], 0, "validation must not consume a use");

    t.post(
        &format!("/v1/tokens/{}/revoke", s.token_id),
        &t.admin,
        json!({}),
    )
    .await;
    let r = t
        .resolve(&s.sidecar_key, &s.token, &[], "example.com", "10.0.0.1")
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "token_revoked")
    );
    let r = t
        .resolve(
            &s.sidecar_key,
            "asst_forged",
            &[],
            "example.com",
            "10.0.0.1",
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "token_invalid")
    );
    let failed = t.get("/v1/audit?type=auth.failed", &t.admin).await;
    assert_eq!(
        failed.body["events"].as_array().unwrap().len(),
        2,
        "{}",
        failed.text
    );
    let reads = t.get("/v1/audit?type=secret.read", &t.admin).await;
    assert_eq!(reads.body["events"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn a_sidecar_resolves_only_its_own_tenants_tokens() {
    let t = TestApp::new().await;
    let s = t.scenario().await;
    let other = tenants::create_tenant(&t.app, "other").await.unwrap();
    let r = t
        .post(
            "/v1/sidecars",
            other.admin_token.expose(),
            json!({"name": "foreign"}),
        )
        .await;
    let foreign_sidecar = r.body["sidecar_key"].as_str().unwrap().to_owned();
    let r = t
        .resolve(
            &foreign_sidecar,
            &s.token,
            &["production/openai/api_key"],
            "api.openai.com",
            "10.0.0.1",
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "token_invalid")
    );
    // And the other tenant's admin sees none of this tenant's secrets.
    let r = t.get("/v1/secrets", other.admin_token.expose()).await;
    assert_eq!(r.body["secrets"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn rotating_an_agent_key_kills_the_old_key_and_its_tokens() {
    let t = TestApp::new().await;
    let s = t.scenario().await;
    let r = t
        .post(
            &format!("/v1/agents/{}/rotate-key", s.agent_id),
            &t.admin,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["tokens_revoked"], 1);
    let new_key = r.body["agent_key"].as_str().unwrap().to_owned();

    let r = t
        .resolve(
            &s.sidecar_key,
            &s.token,
            &["production/openai/api_key"],
            "api.openai.com",
            "10.0.0.1",
        )
        .await;
    assert_eq!(r.code(), "token_revoked");
    let r = t
        .token(
            &s.agent_key,
            json!({"scopes": ["secrets:read:a"], "ttl_seconds": 60}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "unauthenticated")
    );
    let r = t
        .token(
            &new_key,
            json!({"scopes": ["secrets:read:a"], "ttl_seconds": 60}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
}

#[tokio::test]
async fn bad_input_gets_a_4xx_with_a_stable_code() {
    let t = TestApp::new().await;
    let (_, agent_key) = t.agent().await;
    let cases: Vec<(Response, StatusCode, &str)> = vec![
        (t.raw(Method::POST, "/v1/agents", Some(&t.admin), Some("{not json"), "application/json").await, StatusCode::BAD_REQUEST, "invalid_json"),
        (t.post("/v1/agents", &t.admin, json!({"name": "x", "colour": "red"})).await, StatusCode::BAD_REQUEST, "invalid_json"),
        (t.post("/v1/agents", &t.admin, json!({"name": ""})).await, StatusCode::BAD_REQUEST, "invalid_request"),
        (t.raw(Method::POST, "/v1/agents", Some(&t.admin), Some("{\"name\":\"x\"}"), "text/plain").await, StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_json"),
        (t.put_secret("bad//path", &["a.example.com"], None).await, StatusCode::BAD_REQUEST, "invalid_path"),
        (t.put_secret("bad%20path", &["a.example.com"], None).await, StatusCode::BAD_REQUEST, "invalid_path"),
        (t.put_secret("ok/path", &["not a host"], None).await, StatusCode::BAD_REQUEST, "invalid_host"),
        (t.put_secret("ok/path", &[], None).await, StatusCode::BAD_REQUEST, "invalid_host"),
        (t.call(Method::PUT, "/v1/secrets/ok/path", Some(&t.admin), Some(json!({"value": "a\r\nX-Evil: 1", "allowed_hosts": ["a.example.com"]}))).await, StatusCode::BAD_REQUEST, "invalid_secret_value"),
        (t.call(Method::PUT, "/v1/secrets/ok/path", Some(&t.admin), Some(json!({"value": "a\u{0}b", "allowed_hosts": ["a.example.com"]}))).await, StatusCode::BAD_REQUEST, "invalid_secret_value"),
        (t.call(Method::PUT, "/v1/secrets/ok/path", Some(&t.admin), Some(json!({"value": "x".repeat(70 * 1024), "allowed_hosts": ["a.example.com"]}))).await, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        (t.token(&agent_key, json!({"scopes": ["secrets:reed:a"], "ttl_seconds": 60})).await, StatusCode::BAD_REQUEST, "invalid_scope"),
        (t.token(&agent_key, json!({"scopes": ["secrets:read:a/**/b"], "ttl_seconds": 60})).await, StatusCode::BAD_REQUEST, "invalid_scope"),
        (t.token(&agent_key, json!({"scopes": ["secrets:read:a"], "ttl_seconds": 60, "ip_allowlist": ["10.0.0.0/33"]})).await, StatusCode::BAD_REQUEST, "invalid_cidr"),
        (t.token(&agent_key, json!({"scopes": ["secrets:read:a"], "ttl_seconds": 7200})).await, StatusCode::BAD_REQUEST, "invalid_ttl"),
        (t.token(&agent_key, json!({"scopes": ["secrets:read:a"], "ttl_seconds": 0})).await, StatusCode::BAD_REQUEST, "invalid_ttl"),
        (t.token(&agent_key, json!({"scopes": ["secrets:read:a"]})).await, StatusCode::BAD_REQUEST, "invalid_json"),
        (t.token(&agent_key, json!({"scopes": ["secrets:read:a"], "ttl_seconds": 60, "max_uses": 0})).await, StatusCode::BAD_REQUEST, "invalid_request"),
        (t.get("/v1/tokens/not-a-uuid", &agent_key).await, StatusCode::NOT_FOUND, "not_found"),
        (t.get("/v1/audit?format=xml", &t.admin).await, StatusCode::BAD_REQUEST, "invalid_request"),
        (t.get("/v1/audit?since=yesterday", &t.admin).await, StatusCode::BAD_REQUEST, "invalid_request"),
        (t.get("/v1/audit?type=secret.bogus", &t.admin).await, StatusCode::BAD_REQUEST, "invalid_request"),
        (t.get("/v1/nope", &t.admin).await, StatusCode::NOT_FOUND, "not_found"),
        (t.call(Method::DELETE, "/v1/agents", Some(&t.admin), None).await, StatusCode::METHOD_NOT_ALLOWED, "invalid_request"),
    ];
    for (i, (r, status, code)) in cases.iter().enumerate() {
        assert_eq!(
            (r.status, r.code()),
            (*status, *code),
            "case {i}: {}",
            r.text
        );
    }
}

#[tokio::test]
async fn callers_are_authenticated_and_roles_enforced() {
    let t = TestApp::new().await;
    let (_, agent_key) = t.agent().await;
    let sidecar_key = t.sidecar().await;

    let r = t.call(Method::GET, "/v1/agents", None, None).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "unauthenticated")
    );
    let mut mistyped = t.admin.clone();
    mistyped.replace_range(40..41, if &mistyped[40..41] == "a" { "b" } else { "a" });
    assert_eq!(
        t.get("/v1/agents", &mistyped).await.status,
        StatusCode::UNAUTHORIZED
    );
    // Well-formed, right id, wrong secret: refused, and worth an audit event.
    let admin_id = PresentedCredential::parse(&t.admin).unwrap().id;
    let forged = issue_with_id(CredentialKind::Operator, admin_id, &Pepper::generate());
    let r = t.get("/v1/agents", forged.token.expose()).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "unauthenticated")
    );

    // A credential of the wrong kind is refused even though it is valid.
    assert_eq!(t.get("/v1/agents", &agent_key).await.code(), "forbidden");
    assert_eq!(t.get("/v1/agents", &sidecar_key).await.code(), "forbidden");
    assert_eq!(
        t.post("/v1/sidecars", &agent_key, json!({"name": "x"}))
            .await
            .code(),
        "forbidden"
    );
    let r = t
        .token(
            &t.admin,
            json!({"scopes": ["secrets:read:a"], "ttl_seconds": 60}),
        )
        .await;
    assert_eq!(r.code(), "forbidden");

    let auditor = t
        .post(
            "/v1/operators",
            &t.admin,
            json!({"name": "carol", "role": "auditor"}),
        )
        .await;
    assert_eq!(auditor.status, StatusCode::CREATED, "{}", auditor.text);
    let auditor = auditor.body["operator_token"].as_str().unwrap().to_owned();
    let r = t
        .call(
            Method::PUT,
            "/v1/secrets/a/b",
            Some(&auditor),
            Some(json!({"value": "v", "allowed_hosts": ["a.example.com"]})),
        )
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "forbidden"));
    assert_eq!(
        t.get("/v1/audit/verify", &auditor).await.status,
        StatusCode::OK
    );

    let approver = t
        .post(
            "/v1/operators",
            &t.admin,
            json!({"name": "dave", "role": "approver"}),
        )
        .await;
    let approver = approver.body["operator_token"].as_str().unwrap().to_owned();
    assert_eq!(t.get("/v1/audit", &approver).await.code(), "forbidden");
    assert_eq!(
        t.post("/v1/agents", &approver, json!({"name": "x"}))
            .await
            .code(),
        "forbidden"
    );

    // The forged attempt is in the audit log (the mistyped one never reached the database).
    let r = t.get("/v1/audit?type=auth.failed", &t.admin).await;
    assert_eq!(r.body["events"].as_array().unwrap().len(), 1, "{}", r.text);
}

#[tokio::test]
async fn revoked_sidecars_can_no_longer_resolve() {
    let t = TestApp::new().await;
    let s = t.scenario().await;
    // A resolve first: the sidecar's key is now taken on trust for a few seconds
    // (`service::verified_sidecars`), and revoking must end that at once.
    let r = t
        .resolve(
            &s.sidecar_key,
            &s.token,
            &["production/openai/api_key"],
            "api.openai.com",
            "10.0.0.1",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let list = t.get("/v1/sidecars", &t.admin).await;
    let id = list.body["sidecars"][0]["id"].as_str().unwrap().to_owned();
    let r = t
        .post(&format!("/v1/sidecars/{id}/revoke"), &t.admin, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.body["revoked_at"].is_string());
    let r = t
        .resolve(
            &s.sidecar_key,
            &s.token,
            &["production/openai/api_key"],
            "api.openai.com",
            "10.0.0.1",
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn every_operation_lands_in_a_verifiable_audit_chain() {
    let t = TestApp::new().await;
    let s = t.scenario().await;
    t.resolve(
        &s.sidecar_key,
        &s.token,
        &["production/openai/api_key"],
        "api.openai.com",
        "10.0.0.9",
    )
    .await;
    t.resolve(
        &s.sidecar_key,
        &s.token,
        &["production/openai/api_key"],
        "evil.example.com",
        "10.0.0.9",
    )
    .await;
    t.call(
        Method::DELETE,
        "/v1/secrets/production/openai/api_key",
        Some(&t.admin),
        None,
    )
    .await;

    let r = t.get("/v1/audit", &t.admin).await;
    let types: Vec<&str> = r.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    for expected in [
        "tenant.created",
        "agent.created",
        "sidecar.created",
        "secret.write",
        "token.issued",
        "secret.read",
        "secret.delete",
    ] {
        assert!(types.contains(&expected), "missing {expected} in {types:?}");
    }
    let reads: Vec<&Value> = r.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "secret.read")
        .collect();
    assert_eq!(reads.len(), 2);
    assert_eq!(reads[0]["success"], true);
    assert_eq!(reads[0]["ip"], "10.0.0.9");
    assert_eq!(reads[0]["destination_host"], "api.openai.com");
    assert_eq!(reads[1]["success"], false);
    assert_eq!(reads[1]["reason"], "destination_not_allowed");
    let ts = reads[0]["timestamp"].as_str().unwrap();
    assert_eq!(
        ts.len(),
        "2026-01-01T00:00:00.000000Z".len(),
        "µs UTC timestamps: {ts}"
    );

    let v = t.get("/v1/audit/verify", &t.admin).await;
    assert_eq!(v.body["valid"], true, "{}", v.text);
    assert_eq!(
        v.body["events_checked"].as_i64().unwrap(),
        types.len() as i64
    );

    let csv = t
        .get("/v1/audit?format=csv&type=secret.read", &t.admin)
        .await;
    assert_eq!(
        csv.text.lines().count(),
        3,
        "header + 2 reads:\n{}",
        csv.text
    );
    assert!(csv.text.starts_with("id,tenant_id,seq,type"));
    let jsonl = t
        .get(
            "/v1/audit?format=jsonl&type=secret.read,secret.delete",
            &t.admin,
        )
        .await;
    assert_eq!(jsonl.text.lines().count(), 3);
}

#[tokio::test]
async fn secret_versions_increase_and_metadata_keeps_sensitivity() {
    let t = TestApp::new().await;
    let r = t
        .put_secret("prod/db/password", &["db.internal:5432"], Some("sensitive"))
        .await;
    assert_eq!(r.body["version"], 1);
    let r = t
        .put_secret("prod/db/password", &["db.internal:5432"], None)
        .await;
    assert_eq!(r.body["version"], 2);
    let m = t.get("/v1/secrets/prod/db/password", &t.admin).await;
    assert_eq!(m.body["version"], 2);
    assert_eq!(
        m.body["sensitivity"], "sensitive",
        "an update without sensitivity must not downgrade"
    );
    assert_eq!(m.body["allowed_hosts"], json!(["db.internal:5432"]));
    let r = t
        .call(
            Method::DELETE,
            "/v1/secrets/prod/db/password",
            Some(&t.admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        t.get("/v1/secrets/prod/db/password", &t.admin).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn health_metrics_and_openapi_are_served() {
    let t = TestApp::new().await;
    t.scenario().await;
    assert_eq!(
        t.call(Method::GET, "/healthz", None, None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        t.call(Method::GET, "/readyz", None, None).await.status,
        StatusCode::OK
    );
    let m = t.call(Method::GET, "/metrics", None, None).await;
    assert!(
        m.text.contains("agent_secret_store_tokens_issued_total 1"),
        "{}",
        m.text
    );
    assert!(
        m.text.contains("route=\"/v1/secrets/{*path}\""),
        "{}",
        m.text
    );
    let doc = t.call(Method::GET, "/v1/openapi.json", None, None).await;
    let paths = doc.body["paths"].as_object().unwrap();
    for p in [
        "/v1/sidecars",
        "/v1/agents",
        "/v1/agents/{id}/rotate-key",
        "/v1/secrets/{path}",
        "/v1/tokens",
        "/v1/tokens/{id}/revoke",
        "/v1/audit",
        "/v1/audit/verify",
        "/v1/sidecar/resolve",
        "/v1/agents/{id}/ceiling/allow",
        "/v1/agents/{id}/ceiling/deny",
        "/v1/approvals",
        "/v1/approvals/{id}",
        "/v1/approvals/{id}/approve",
        "/v1/approvals/{id}/deny",
    ] {
        assert!(paths.contains_key(p), "openapi lacks {p}");
    }
}
