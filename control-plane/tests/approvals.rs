//! Issue 12's rules at the service and API: ceilings, access requests, sensitivity × tier,
//! quorum of distinct humans, time lock, digest invalidation, denial, expiry, who may decide,
//! and activation by the next resolve and by the activation task. Each behaviour runs on
//! SQLite and (when configured) PostgreSQL as the service role.
//!
//! Human decisions are made through `service::decisions::decide` with a `Decider` that is a
//! session (the session API itself is tested where it lives); the end-to-end test through the
//! real sidecar is `tests/tests/approvals_e2e.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agent_secret_control_plane::api;
use agent_secret_control_plane::audit::AuditEventType;
use agent_secret_control_plane::service::activation;
use agent_secret_control_plane::service::approvals::{self, ApprovalSettings};
use agent_secret_control_plane::service::auth::{authenticate, expect_operator, OperatorPrincipal};
use agent_secret_control_plane::service::decisions::{self, Decider};
use agent_secret_control_plane::service::notify::{NotificationFormat, NotifierSettings};
use agent_secret_control_plane::service::trust_tiers::TrustTierWebhook;
use agent_secret_control_plane::service::{
    agents, ceilings, operators, secrets, sidecars, tenants, App, Policy, RequestContext,
};
use agent_secret_control_plane::store::sql::SqlStore;
use agent_secret_control_plane::store::{AuditFilter, Store};
use agent_secret_core::api::{
    ApprovalInfo, ApprovalStatus, DecideApproval, PutSecretRequest, Role, Sensitivity,
};
use agent_secret_core::credential::Pepper;
use agent_secret_core::ids::{ApprovalId, TenantId};
use agent_secret_core::kms::local::{LocalKms, MasterKey};
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

const HOST: &str = "api.example.com";

/// One database (and keyring) per test; apps with different `[approvals]` settings share it.
struct Fixture {
    store: Arc<dyn Store>,
    kms: Arc<LocalKms>,
    pepper: Arc<Pepper>,
    _dir: tempfile::TempDir,
    _pg: Option<support::TestDb>,
}

impl Fixture {
    async fn sqlite() -> Fixture {
        let (db, store) = support::sqlite_test_db().await;
        Fixture::with(Arc::new(store), db.dir, None)
    }

    async fn postgres() -> Option<Fixture> {
        let db = support::postgres_test_db().await?;
        let store = db.service_store().await;
        Some(Fixture::with(
            Arc::new(store),
            tempfile::tempdir().unwrap(),
            Some(db),
        ))
    }

    fn with(store: Arc<SqlStore>, dir: tempfile::TempDir, pg: Option<support::TestDb>) -> Fixture {
        let kms =
            LocalKms::open_or_create(dir.path().join("keyring"), MasterKey::generate()).unwrap();
        Fixture {
            store,
            kms: Arc::new(kms),
            pepper: Arc::new(Pepper::generate()),
            _dir: dir,
            _pg: pg,
        }
    }

    /// An app with these approval settings and a fresh tenant.
    async fn tenant(&self, settings: ApprovalSettings) -> Tenant {
        self.tenant_with(settings, None).await
    }

    async fn tenant_with(
        &self,
        settings: ApprovalSettings,
        webhook: Option<TrustTierWebhook>,
    ) -> Tenant {
        self.tenant_built(settings, |app| match webhook {
            Some(webhook) => app.with_trust_tiers(webhook),
            None => app,
        })
        .await
    }

    /// An app with these approval settings, finished by `build`, and a fresh tenant.
    async fn tenant_built(
        &self,
        settings: ApprovalSettings,
        build: impl FnOnce(App) -> App,
    ) -> Tenant {
        let policy = Policy {
            approvals: settings,
            ..Policy::default()
        };
        let app = App::new(
            self.store.clone(),
            self.kms.clone(),
            self.pepper.clone(),
            policy,
        );
        let app = Arc::new(build(app));
        let name = format!("t-{}", uuid::Uuid::new_v4().simple());
        let created = tenants::create_tenant(&app, &name).await.unwrap();
        let admin_token = created.admin_token.expose().to_owned();
        let admin = principal(&app, &admin_token).await;
        let sidecar = sidecars::create(&app, admin, "host", &ctx()).await.unwrap();
        Tenant {
            router: api::app(app.clone()),
            app,
            id: created.tenant_id,
            admin,
            admin_token,
            sidecar_key: sidecar.sidecar_key,
        }
    }
}

struct Tenant {
    app: Arc<App>,
    router: axum::Router,
    id: TenantId,
    admin: OperatorPrincipal,
    admin_token: String,
    sidecar_key: String,
}

struct Agent {
    id: String,
    key: String,
}

struct Issued {
    token: String,
    status: String,
    approval: Option<ApprovalId>,
}

fn ctx() -> RequestContext {
    RequestContext::default()
}

async fn principal(app: &App, token: &str) -> OperatorPrincipal {
    expect_operator(authenticate(app, token, &ctx()).await.unwrap()).unwrap()
}

fn fast(f: impl FnOnce(&mut ApprovalSettings)) -> ApprovalSettings {
    let mut s = ApprovalSettings::default();
    f(&mut s);
    s
}

impl Tenant {
    async fn call(
        &self,
        method: Method,
        uri: &str,
        bearer: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {bearer}"));
        let body = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        let resp = self
            .router
            .clone()
            .oneshot(req.body(body).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn human(&self, role: Role) -> (Decider, String) {
        let created = operators::create(
            &self.app,
            self.admin,
            &format!("{}-{}", role.as_str(), uuid::Uuid::new_v4().simple()),
            role,
            &ctx(),
        )
        .await
        .unwrap();
        let p = principal(&self.app, &created.operator_token).await;
        (
            Decider {
                tenant: self.id,
                operator: p.id,
                role,
                human_session: true,
            },
            created.operator_token,
        )
    }

    fn admin_human(&self) -> Decider {
        Decider {
            tenant: self.id,
            operator: self.admin.id,
            role: Role::Admin,
            human_session: true,
        }
    }

    async fn agent(&self, allow: &[&str], tier: i32) -> Agent {
        let allow: Vec<String> = allow.iter().map(|s| (*s).to_owned()).collect();
        let a = agents::create(&self.app, self.admin, "bot", Some(tier), &allow, &ctx())
            .await
            .unwrap();
        Agent {
            id: a.id,
            key: a.agent_key,
        }
    }

    async fn secret(&self, path: &str, sensitivity: Sensitivity) {
        let req = PutSecretRequest {
            value: format!("value-of-{path}-0123456789"),
            sensitivity: Some(sensitivity),
            allowed_hosts: vec![HOST.into()],
        };
        secrets::put(&self.app, self.admin, path, req, &ctx())
            .await
            .unwrap();
    }

    async fn try_issue(
        &self,
        agent: &Agent,
        scopes: &[&str],
        request_access: bool,
    ) -> (StatusCode, Value) {
        let body = json!({"scopes": scopes, "ttl_seconds": 600, "request_access": request_access});
        self.call(Method::POST, "/v1/tokens", &agent.key, Some(body))
            .await
    }

    async fn issue(&self, agent: &Agent, scopes: &[&str]) -> Issued {
        self.issue_with(agent, scopes, false).await
    }

    async fn issue_with(&self, agent: &Agent, scopes: &[&str], request_access: bool) -> Issued {
        let (status, body) = self.try_issue(agent, scopes, request_access).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        Issued {
            token: body["token"].as_str().unwrap().to_owned(),
            status: body["status"].as_str().unwrap().to_owned(),
            approval: body["approval_id"].as_str().map(|s| s.parse().unwrap()),
        }
    }

    /// The sidecar's question for one path; `Ok(())` when granted, else the denial code.
    async fn resolve(&self, token: &str, path: &str) -> Result<(), String> {
        let body = json!({"token": token, "paths": [path], "destination_host": HOST, "client_ip": "127.0.0.1"});
        let (status, body) = self
            .call(
                Method::POST,
                "/v1/sidecar/resolve",
                &self.sidecar_key,
                Some(body),
            )
            .await;
        if status == StatusCode::OK {
            return Ok(());
        }
        Err(body["error"]["code"].as_str().unwrap_or("?").to_owned())
    }

    async fn decide(
        &self,
        who: Decider,
        id: ApprovalId,
        approve: bool,
    ) -> Result<ApprovalInfo, String> {
        decisions::decide(
            &self.app,
            who,
            id,
            approve,
            &DecideApproval::default(),
            &ctx(),
        )
        .await
        .map_err(|e| e.code().as_str().to_owned())
    }

    async fn show(&self, id: ApprovalId) -> ApprovalInfo {
        approvals::show(&self.app, self.id, id).await.unwrap()
    }

    async fn events(&self, t: AuditEventType) -> Vec<String> {
        let filter = AuditFilter {
            types: vec![t],
            ..AuditFilter::default()
        };
        self.app
            .store
            .list_audit(self.id, &filter)
            .await
            .unwrap()
            .into_iter()
            .map(|e| {
                format!(
                    "{} {} {}",
                    e.draft.actor.0,
                    e.draft.success,
                    e.draft.reason.unwrap_or_default()
                )
            })
            .collect()
    }
}

async fn ceiling_bounds_every_token_request(f: &Fixture) {
    let t = f.tenant(ApprovalSettings::default()).await;
    t.secret("prod/api", Sensitivity::Standard).await;
    let empty = t.agent(&[], 0).await;
    let (status, body) = t.try_issue(&empty, &["secrets:read:prod/api"], false).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("scope_not_permitted")),
        "{body}"
    );

    let bounded = t.agent(&["secrets:read:prod/*"], 0).await;
    assert_eq!(
        t.issue(&bounded, &["secrets:read:prod/api"]).await.status,
        "active"
    );
    assert_eq!(
        t.issue(&bounded, &["secrets:read:prod/*"]).await.status,
        "active"
    );
    for outside in [
        "secrets:read:prod/**",
        "secrets:write:prod/api",
        "secrets:read:staging/api",
    ] {
        let (status, body) = t.try_issue(&bounded, &[outside], false).await;
        assert_eq!(
            body["error"]["code"], "scope_not_permitted",
            "{outside}: {status} {body}"
        );
        assert!(
            body["error"]["message"].as_str().unwrap().contains(outside),
            "{body}"
        );
    }
    let refused = t.events(AuditEventType::TokenIssued).await;
    assert!(
        refused
            .iter()
            .any(|e| e.contains("false scope_not_permitted")),
        "{refused:?}"
    );
}

async fn narrowing_a_ceiling_revokes_the_tokens_it_leaves_outside(f: &Fixture) {
    let t = f.tenant(ApprovalSettings::default()).await;
    t.secret("prod/api", Sensitivity::Standard).await;
    t.secret("ops/api", Sensitivity::Standard).await;
    let agent = t
        .agent(&["secrets:read:prod/**", "secrets:read:ops/**"], 0)
        .await;
    let prod = t.issue(&agent, &["secrets:read:prod/api"]).await;
    let ops = t.issue(&agent, &["secrets:read:ops/api"]).await;
    assert_eq!(t.resolve(&prod.token, "prod/api").await, Ok(()));
    let (status, body) = t
        .call(
            Method::POST,
            &format!("/v1/agents/{}/ceiling/deny", agent.id),
            &t.admin_token,
            Some(json!({"scopes": ["secrets:read:prod/**"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["tokens_revoked"], 1);
    assert_eq!(body["ceiling"], json!(["secrets:read:ops/**"]));
    assert_eq!(
        t.resolve(&prod.token, "prod/api").await,
        Err("token_revoked".into())
    );
    assert_eq!(t.resolve(&ops.token, "ops/api").await, Ok(()));
    let (_, body) = t.try_issue(&agent, &["secrets:read:prod/api"], false).await;
    assert_eq!(body["error"]["code"], "scope_not_permitted");
    // An agent key cannot change its own ceiling.
    let (status, _) = t
        .call(
            Method::POST,
            &format!("/v1/agents/{}/ceiling/allow", agent.id),
            &agent.key,
            Some(json!({"scopes": ["secrets:read:**"]})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

async fn sensitivity_and_tier_decide_what_needs_approval(f: &Fixture) {
    let t = f.tenant(ApprovalSettings::default()).await;
    t.secret("prod/api", Sensitivity::Standard).await;
    t.secret("prod/pay", Sensitivity::Sensitive).await;
    t.secret("vault/root", Sensitivity::Critical).await;
    let all = ["secrets:read:**"];
    for (tier, scope, status, need) in [
        (0, "secrets:read:prod/api", "active", None),
        (0, "secrets:read:prod/*", "pending_approval", Some(1)),
        (3, "secrets:read:prod/*", "active", None),
        (4, "secrets:read:prod/*", "active", None),
        (0, "secrets:read:vault/*", "pending_approval", Some(2)),
        (4, "secrets:read:vault/*", "pending_approval", Some(2)),
    ] {
        let agent = t.agent(&all, tier).await;
        let issued = t.issue(&agent, &[scope]).await;
        assert_eq!(issued.status, status, "tier {tier} {scope}");
        match need {
            None => assert!(issued.approval.is_none()),
            Some(n) => {
                let a = t.show(issued.approval.unwrap()).await;
                assert_eq!(a.required_approvals, n, "tier {tier} {scope}");
                assert_eq!(a.unlocks.trust_tier, u8::try_from(tier).unwrap());
                assert_eq!(
                    t.resolve(&issued.token, "prod/api").await.unwrap_err(),
                    "approval_pending"
                );
            }
        }
    }
    // A tier-3 token is approved for sensitive at once, and reads it.
    let trusted = t.agent(&all, 3).await;
    let issued = t.issue(&trusted, &["secrets:read:prod/*"]).await;
    assert_eq!(t.resolve(&issued.token, "prod/pay").await, Ok(()));
    // An active standard token meets a sensitive secret created later under its wildcard.
    let agent = t.agent(&all, 0).await;
    let early = t.issue(&agent, &["secrets:read:later/*"]).await;
    assert_eq!(early.status, "active");
    t.secret("later/key", Sensitivity::Sensitive).await;
    assert_eq!(
        t.resolve(&early.token, "later/key").await,
        Err("approval_pending".into())
    );
}

async fn one_human_activates_a_sensitive_token(f: &Fixture) {
    let t = f.tenant(ApprovalSettings::default()).await;
    t.secret("prod/pay", Sensitivity::Sensitive).await;
    let agent = t.agent(&["secrets:read:prod/**"], 0).await;
    let issued = t.issue(&agent, &["secrets:read:prod/pay"]).await;
    let id = issued.approval.unwrap();
    assert_eq!(
        t.resolve(&issued.token, "prod/pay").await,
        Err("approval_pending".into())
    );
    let (approver, _) = t.human(Role::Approver).await;
    let after = t.decide(approver, id, true).await.unwrap();
    assert_eq!(after.status, ApprovalStatus::Approved);
    assert_eq!(t.resolve(&issued.token, "prod/pay").await, Ok(()));
    let requested = t.events(AuditEventType::ApprovalRequested).await;
    assert!(
        requested
            .iter()
            .any(|e| e.starts_with("agent:") && e.contains("0 of 1")),
        "{requested:?}"
    );
    let approved = t.events(AuditEventType::ApprovalApproved).await;
    assert!(
        approved
            .iter()
            .any(|e| e.contains(&approver.operator.to_string()) && e.contains("1 of 1")),
        "{approved:?}"
    );
    let issued_events = t.events(AuditEventType::TokenIssued).await;
    assert!(
        issued_events
            .iter()
            .any(|e| e.contains("activated by approval")),
        "{issued_events:?}"
    );
}

async fn critical_needs_two_distinct_humans_then_the_time_lock(f: &Fixture) {
    let t = f.tenant(ApprovalSettings::default()).await;
    t.secret("vault/root", Sensitivity::Critical).await;
    let agent = t.agent(&["secrets:read:vault/*"], 0).await;
    let issued = t.issue(&agent, &["secrets:read:vault/root"]).await;
    let id = issued.approval.unwrap();
    let (alice, _) = t.human(Role::Approver).await;
    let (bob, _) = t.human(Role::Admin).await;
    assert_eq!(
        t.decide(alice, id, true).await.unwrap().approvals_counted,
        1
    );
    assert_eq!(
        t.decide(alice, id, true).await.unwrap_err(),
        "conflict",
        "the same human counts once"
    );
    let after = t.decide(bob, id, true).await.unwrap();
    assert_eq!(
        (after.status, after.approvals_counted),
        (ApprovalStatus::Pending, 2)
    );
    let until = after.time_lock_until.expect("time-locked for 15 minutes");
    assert!(
        until > chrono::Utc::now() + chrono::Duration::minutes(14),
        "{until}"
    );
    assert_eq!(
        t.resolve(&issued.token, "vault/root").await,
        Err("approval_pending".into())
    );
    activation::activate_due(&t.app).await;
    assert_eq!(
        t.show(id).await.status,
        ApprovalStatus::Pending,
        "the task respects the lock"
    );
}

/// The delay runs out: the next resolve activates one token, the activation task the other.
async fn the_time_lock_ends_by_resolve_or_by_the_task(f: &Fixture) {
    let t = f
        .tenant(fast(|s| s.policy.critical.delay = Duration::from_secs(1)))
        .await;
    t.secret("vault/root", Sensitivity::Critical).await;
    let agent = t.agent(&["secrets:read:vault/*"], 0).await;
    let (alice, _) = t.human(Role::Approver).await;
    let (bob, _) = t.human(Role::Approver).await;
    let by_resolve = t.issue(&agent, &["secrets:read:vault/root"]).await;
    let by_task = t.issue(&agent, &["secrets:read:vault/root"]).await;
    for issued in [&by_resolve, &by_task] {
        t.decide(alice, issued.approval.unwrap(), true)
            .await
            .unwrap();
        t.decide(bob, issued.approval.unwrap(), true).await.unwrap();
    }
    assert_eq!(
        t.resolve(&by_resolve.token, "vault/root").await,
        Err("approval_pending".into())
    );
    agent_secret_testkit::eventually(
        "the next resolve activates",
        Duration::from_secs(10),
        || async { t.resolve(&by_resolve.token, "vault/root").await.is_ok() },
    )
    .await;
    let id = by_task.approval.unwrap();
    agent_secret_testkit::eventually("the task activates", Duration::from_secs(10), || async {
        activation::activate_due(&t.app).await;
        let (_, body) = t
            .call(
                Method::GET,
                &format!("/v1/approvals/{id}"),
                &t.admin_token,
                None,
            )
            .await;
        body["status"] == "approved"
    })
    .await;
    let token = t
        .app
        .store
        .get_approval(t.id, id)
        .await
        .unwrap()
        .unwrap()
        .0
        .token_id;
    let row = t
        .app
        .store
        .get_token(t.id, token.unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.approved_sensitivity, Sensitivity::Critical);
}

async fn a_new_secret_or_a_raised_sensitivity_voids_approvals(f: &Fixture) {
    let t = f.tenant(ApprovalSettings::default()).await;
    t.secret("vault/a", Sensitivity::Critical).await;
    t.secret("vault/b", Sensitivity::Standard).await;
    let agent = t.agent(&["secrets:read:vault/*"], 0).await;
    let (alice, _) = t.human(Role::Approver).await;
    let (bob, _) = t.human(Role::Approver).await;

    let issued = t.issue(&agent, &["secrets:read:vault/*"]).await;
    let id = issued.approval.unwrap();
    let before = t.decide(alice, id, true).await.unwrap();
    assert_eq!(before.approvals_counted, 1);
    t.secret("vault/new", Sensitivity::Standard).await;
    let after = t.decide(bob, id, true).await.unwrap();
    assert_ne!(after.digest, before.digest);
    assert_eq!(
        (after.status, after.approvals_counted),
        (ApprovalStatus::Pending, 1),
        "alice approved another digest"
    );
    assert!(after.unlocks.secrets.iter().any(|s| s.path == "vault/new"));

    let issued = t.issue(&agent, &["secrets:read:vault/*"]).await;
    let id = issued.approval.unwrap();
    t.decide(alice, id, true).await.unwrap();
    t.secret("vault/b", Sensitivity::Sensitive).await;
    assert_eq!(
        t.show(id).await.approvals_counted,
        0,
        "a raised sensitivity voids it too"
    );
    // Deciding on the digest one reviewed, after it changed, is refused.
    let stale = DecideApproval {
        comment: None,
        digest: Some(before.digest.clone()),
    };
    let err = decisions::decide(&t.app, bob, id, true, &stale, &ctx())
        .await
        .unwrap_err();
    assert_eq!(err.code().as_str(), "conflict");
    let changed = t.events(AuditEventType::ApprovalRequested).await;
    assert!(
        changed.iter().any(|e| e.contains("no longer count")),
        "{changed:?}"
    );
}

async fn one_denial_denies(f: &Fixture) {
    let t = f.tenant(ApprovalSettings::default()).await;
    t.secret("vault/root", Sensitivity::Critical).await;
    let agent = t.agent(&["secrets:read:vault/*"], 0).await;
    let issued = t.issue(&agent, &["secrets:read:vault/root"]).await;
    let id = issued.approval.unwrap();
    let (alice, _) = t.human(Role::Approver).await;
    let (bob, _) = t.human(Role::Approver).await;
    t.decide(alice, id, true).await.unwrap();
    assert_eq!(
        t.decide(bob, id, false).await.unwrap().status,
        ApprovalStatus::Denied
    );
    assert_eq!(
        t.resolve(&issued.token, "vault/root").await,
        Err("approval_denied".into())
    );
    let (carol, _) = t.human(Role::Approver).await;
    assert_eq!(t.decide(carol, id, true).await.unwrap_err(), "conflict");
    assert_eq!(t.events(AuditEventType::ApprovalDenied).await.len(), 1);
}

async fn an_undecided_request_expires_and_denies_its_token(f: &Fixture) {
    let t = f
        .tenant(fast(|s| s.request_ttl = Duration::from_secs(1)))
        .await;
    t.secret("prod/pay", Sensitivity::Sensitive).await;
    let agent = t.agent(&["secrets:read:prod/*"], 0).await;
    let issued = t.issue(&agent, &["secrets:read:prod/pay"]).await;
    let id = issued.approval.unwrap();
    agent_secret_testkit::eventually("the request expires", Duration::from_secs(10), || async {
        activation::activate_due(&t.app).await;
        t.show(id).await.status == ApprovalStatus::Expired
    })
    .await;
    assert_eq!(
        t.resolve(&issued.token, "prod/pay").await,
        Err("approval_denied".into())
    );
    let (approver, _) = t.human(Role::Approver).await;
    assert_eq!(t.decide(approver, id, true).await.unwrap_err(), "conflict");
    assert_eq!(t.events(AuditEventType::ApprovalExpired).await.len(), 1);
}

async fn only_human_approvers_who_did_not_create_the_agent_decide(f: &Fixture) {
    let t = f.tenant(ApprovalSettings::default()).await;
    t.secret("prod/pay", Sensitivity::Sensitive).await;
    let agent = t.agent(&["secrets:read:prod/*"], 0).await; // created by the admin
    let issued = t.issue(&agent, &["secrets:read:prod/pay"]).await;
    let id = issued.approval.unwrap();
    assert_eq!(
        t.decide(t.admin_human(), id, true).await.unwrap_err(),
        "forbidden",
        "creator"
    );
    let (auditor, _) = t.human(Role::Auditor).await;
    assert_eq!(
        t.decide(auditor, id, true).await.unwrap_err(),
        "forbidden",
        "auditor"
    );
    let (approver, approver_token) = t.human(Role::Approver).await;
    let api_token = Decider {
        human_session: false,
        ..approver
    };
    assert_eq!(
        t.decide(api_token, id, true).await.unwrap_err(),
        "forbidden",
        "API token"
    );
    // Over HTTP: neither the agent's key nor an operator API token may approve.
    let uri = format!("/v1/approvals/{id}/approve");
    for bearer in [&agent.key, &approver_token, &t.admin_token] {
        let (status, body) = t.call(Method::POST, &uri, bearer, Some(json!({}))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    }
    assert_eq!(t.show(id).await.approvals_counted, 0);
    assert_eq!(
        t.decide(approver, id, true).await.unwrap().status,
        ApprovalStatus::Approved
    );

    // Configuration may allow the creator, and API tokens of a role.
    let t = f
        .tenant(fast(|s| {
            s.allow_creator_approval = true;
            s.token_approver_roles = vec![Role::Approver];
        }))
        .await;
    t.secret("prod/pay", Sensitivity::Sensitive).await;
    let agent = t.agent(&["secrets:read:prod/*"], 0).await;
    let first = t.issue(&agent, &["secrets:read:prod/pay"]).await;
    assert_eq!(
        t.decide(t.admin_human(), first.approval.unwrap(), true)
            .await
            .unwrap()
            .status,
        ApprovalStatus::Approved
    );
    let second = t.issue(&agent, &["secrets:read:prod/pay"]).await;
    let (_, approver_token) = t.human(Role::Approver).await;
    let uri = format!("/v1/approvals/{}/approve", second.approval.unwrap());
    let (status, body) = t
        .call(
            Method::POST,
            &uri,
            &approver_token,
            Some(json!({"comment": "ok"})),
        )
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("approved")),
        "{body}"
    );
    let (status, _) = t
        .call(Method::POST, &uri, &agent.key, Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "an agent key never decides");
}

async fn an_approved_access_request_widens_the_ceiling(f: &Fixture) {
    let t = f.tenant(ApprovalSettings::default()).await;
    t.secret("ops/api", Sensitivity::Standard).await;
    let agent = t.agent(&["secrets:read:prod/**"], 4).await;
    let issued = t.issue_with(&agent, &["secrets:read:ops/*"], true).await;
    assert_eq!(issued.status, "pending_approval");
    let id = issued.approval.unwrap();
    let shown = t.show(id).await;
    assert_eq!(
        shown.unlocks.ceiling_additions,
        vec!["secrets:read:ops/*".to_owned()]
    );
    assert_eq!(
        shown.required_approvals, 1,
        "widening always needs a human, even at tier 4"
    );
    let (approver, _) = t.human(Role::Approver).await;
    t.decide(approver, id, true).await.unwrap();
    assert_eq!(t.resolve(&issued.token, "ops/api").await, Ok(()));
    let (_, body) = t
        .call(
            Method::GET,
            &format!("/v1/agents/{}", agent.id),
            &t.admin_token,
            None,
        )
        .await;
    assert_eq!(
        body["ceiling"],
        json!(["secrets:read:prod/**", "secrets:read:ops/*"]),
        "{body}"
    );
    assert_eq!(
        t.issue(&agent, &["secrets:read:ops/api"]).await.status,
        "active"
    );
    assert_eq!(t.events(AuditEventType::AgentCeilingChanged).await.len(), 1);
}

/// The webhook's answer decides the tier (and so the approvals); any failure gives the
/// fallback tier. The webhook is a real HTTP server; it answers by the agent's name prefix.
#[tokio::test]
async fn the_trust_tier_webhook_decides_the_tier_and_fails_to_the_fallback() {
    use axum::routing::post;
    let f = Fixture::sqlite().await;
    let names: Arc<std::sync::Mutex<std::collections::HashMap<String, &'static str>>> =
        Arc::default();
    let seen = names.clone();
    let hook = axum::Router::new().route(
        "/tier",
        post(move |axum::Json(asked): axum::Json<Value>| {
            let seen = seen.clone();
            async move {
                let agent = asked["agent_id"].as_str().unwrap_or_default().to_owned();
                let answer = seen.lock().unwrap().get(&agent).copied().unwrap_or("fail");
                match answer {
                    "trusted" => (StatusCode::OK, r#"{"tier": 4}"#.to_owned()),
                    "nonsense" => (StatusCode::OK, r#"{"tier": 99}"#.to_owned()),
                    "slow" => {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        (StatusCode::OK, r#"{"tier": 4}"#.to_owned())
                    }
                    _ => (StatusCode::INTERNAL_SERVER_ERROR, String::new()),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/tier", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, hook).await });
    let webhook = TrustTierWebhook::new(&url, Duration::from_millis(500), 0, None).unwrap();
    let t = f
        .tenant_with(ApprovalSettings::default(), Some(webhook))
        .await;
    t.secret("prod/pay", Sensitivity::Sensitive).await;
    for (answer, status) in [
        ("trusted", "active"),
        ("nonsense", "pending_approval"),
        ("slow", "pending_approval"),
        ("fail", "pending_approval"),
    ] {
        // Stored tier 0 for all: only the webhook can make one trusted.
        let agent = t.agent(&["secrets:read:prod/*"], 0).await;
        names.lock().unwrap().insert(agent.id.clone(), answer);
        let issued = t.issue(&agent, &["secrets:read:prod/pay"]).await;
        assert_eq!(issued.status, status, "{answer}");
        if let Some(id) = issued.approval {
            assert_eq!(
                t.show(id).await.unlocks.trust_tier,
                0,
                "{answer}: the fallback tier"
            );
        }
    }
}

/// An approver asks for an agent's ceiling to widen: never approved by themselves, approved by
/// another human, and then the agent may be granted it.
async fn an_operator_never_approves_their_own_access_request(f: &Fixture) {
    let t = f.tenant(ApprovalSettings::default()).await;
    t.secret("ops/api", Sensitivity::Standard).await;
    let agent = t.agent(&["secrets:read:prod/**"], 0).await;
    let (alice, alice_token) = t.human(Role::Approver).await;
    let uri = format!("/v1/agents/{}/access-requests", agent.id);
    let (status, filed) = t
        .call(
            Method::POST,
            &uri,
            &alice_token,
            Some(json!({"scopes": ["secrets:read:ops/*"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{filed}");
    assert_eq!(filed["token_id"], Value::Null);
    assert_eq!(
        filed["requested_by"],
        format!("operator:{}", alice.operator)
    );
    let id: ApprovalId = filed["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        t.decide(alice, id, true).await.unwrap_err(),
        "forbidden",
        "self-approval"
    );
    assert_eq!(t.show(id).await.approvals_counted, 0);
    let (_, body) = t.try_issue(&agent, &["secrets:read:ops/api"], false).await;
    assert_eq!(body["error"]["code"], "scope_not_permitted");
    let (bob, _) = t.human(Role::Approver).await;
    assert_eq!(
        t.decide(bob, id, true).await.unwrap().status,
        ApprovalStatus::Approved
    );
    assert_eq!(
        t.issue(&agent, &["secrets:read:ops/api"]).await.status,
        "active"
    );
    // Within the ceiling already: nothing to file. An auditor and an agent may not file.
    let (status, _) = t
        .call(
            Method::POST,
            &uri,
            &alice_token,
            Some(json!({"scopes": ["secrets:read:ops/*"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (_, auditor_token) = t.human(Role::Auditor).await;
    for bearer in [&auditor_token, &agent.key] {
        let (status, _) = t
            .call(
                Method::POST,
                &uri,
                bearer,
                Some(json!({"scopes": ["secrets:read:x/*"]})),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
}

/// The tier is an admin's to set; a pending request sees it at its next evaluation (its digest
/// names the tier, so approvals given under the old tier stop counting).
async fn an_admin_sets_the_tier_and_pending_requests_follow(f: &Fixture) {
    let t = f.tenant(ApprovalSettings::default()).await;
    t.secret("prod/pay", Sensitivity::Sensitive).await;
    t.secret("vault/root", Sensitivity::Critical).await;
    let agent = t.agent(&["secrets:read:**"], 0).await;
    let sensitive = t.issue(&agent, &["secrets:read:prod/pay"]).await;
    let critical = t.issue(&agent, &["secrets:read:vault/root"]).await;
    let (alice, approver_token) = t.human(Role::Approver).await;
    t.decide(alice, critical.approval.unwrap(), true)
        .await
        .unwrap();
    let uri = format!("/v1/agents/{}/trust-tier", agent.id);
    let (status, _) = t
        .call(
            Method::PUT,
            &uri,
            &approver_token,
            Some(json!({"trust_tier": 4})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "admins only");
    let (status, body) = t
        .call(
            Method::PUT,
            &uri,
            &t.admin_token,
            Some(json!({"trust_tier": 7})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
    let (status, body) = t
        .call(
            Method::PUT,
            &uri,
            &t.admin_token,
            Some(json!({"trust_tier": 3})),
        )
        .await;
    assert_eq!(
        (status, body["trust_tier"].as_i64()),
        (StatusCode::OK, Some(3)),
        "{body}"
    );
    // Sensitive needs nobody at tier 3: the next evaluation activates the token.
    assert_eq!(t.resolve(&sensitive.token, "prod/pay").await, Ok(()));
    let after = t.show(critical.approval.unwrap()).await;
    assert_eq!(
        (
            after.required_approvals,
            after.approvals_counted,
            after.unlocks.trust_tier
        ),
        (2, 0, 3)
    );
    assert_eq!(t.events(AuditEventType::AgentTrustTierSet).await.len(), 1);
}

/// A real webhook on 127.0.0.1:0: answers the first `failures` POSTs 503 and the rest 200,
/// and hands over each body it accepted with its `Content-Type`.
struct WebhookSink {
    url: String,
    posts: Arc<AtomicUsize>,
    accepted: tokio::sync::mpsc::UnboundedReceiver<(String, Value)>,
}

impl WebhookSink {
    async fn start(failures: usize) -> WebhookSink {
        use axum::routing::post;
        let posts = Arc::new(AtomicUsize::new(0));
        let (tx, accepted) = tokio::sync::mpsc::unbounded_channel();
        let count = posts.clone();
        let hook = axum::Router::new().route(
            "/services/T0/B0/webhook-credential",
            post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let (count, tx) = (count.clone(), tx.clone());
                    async move {
                        if count.fetch_add(1, Ordering::SeqCst) < failures {
                            return StatusCode::SERVICE_UNAVAILABLE;
                        }
                        let content_type = headers
                            .get(header::CONTENT_TYPE)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        let _ = tx.send((content_type, body));
                        StatusCode::OK
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/services/T0/B0/webhook-credential",
            listener.local_addr().unwrap()
        );
        tokio::spawn(async move { axum::serve(listener, hook).await });
        WebhookSink {
            url,
            posts,
            accepted,
        }
    }

    /// The next accepted body. The deadline only turns a notifier that never sends into a
    /// failure instead of a hang; nothing here measures time.
    async fn next(&mut self) -> Value {
        let (content_type, body) =
            tokio::time::timeout(Duration::from_secs(60), self.accepted.recv())
                .await
                .expect("a notification reaches the webhook")
                .expect("the webhook is running");
        assert_eq!(content_type, "application/json");
        body
    }

    fn posts(&self) -> usize {
        self.posts.load(Ordering::SeqCst)
    }
}

/// Notifier settings for tests: retries a few milliseconds apart instead of seconds.
fn notifier(url: &str, format: NotificationFormat) -> NotifierSettings {
    let mut settings = NotifierSettings::new(url, format, "https://secrets.example.com/");
    settings.first_backoff = Duration::from_millis(20);
    settings.max_backoff = Duration::from_millis(100);
    settings
}

impl Tenant {
    fn notifications(&self, outcome: &str) -> u64 {
        self.app
            .metrics
            .notifications
            .with_label_values(&[outcome])
            .get()
    }

    /// Waits until `approval_notifications_total{outcome}` reaches `n` (see `WebhookSink::next`
    /// for the deadline).
    async fn notifications_reach(&self, outcome: &str, n: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while self.notifications(outcome) < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "approval_notifications_total{{outcome={outcome}}} never reached {n}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A new request is posted to a Slack webhook that fails twice with 503 before it accepts:
/// the third POST arrives, Slack-shaped, linking to the request's page and naming the secret
/// and its sensitivity, with no secret value and no credential in it.
async fn a_new_request_reaches_slack_after_two_503s(f: &Fixture) {
    let mut sink = WebhookSink::start(2).await;
    let settings = notifier(&sink.url, NotificationFormat::Slack);
    let t = f
        .tenant_built(ApprovalSettings::default(), |app| {
            app.with_notifications(settings).unwrap()
        })
        .await;
    t.secret("prod/pay", Sensitivity::Critical).await;
    let agent = t.agent(&["secrets:read:prod/*"], 0).await;
    let issued = t.issue(&agent, &["secrets:read:prod/pay"]).await;
    assert_eq!(issued.status, "pending_approval");
    let id = issued.approval.unwrap();

    let body = sink.next().await;
    assert_eq!(sink.posts(), 3, "two 503s, then accepted");
    let link = format!("https://secrets.example.com/ui/approvals/{id}");
    assert!(body["text"].as_str().unwrap().contains(&link), "{body}");
    let section = &body["blocks"][0];
    assert_eq!(section["type"], "section", "{body}");
    assert_eq!(section["text"]["type"], "mrkdwn", "{body}");
    let text = section["text"]["text"].as_str().unwrap();
    assert!(text.contains("`prod/pay` (critical)"), "{text}");
    assert!(text.contains("Agent bot"), "{text}");
    assert!(text.contains("2 approvals required"), "{text}");
    let button = &body["blocks"][1]["elements"][0];
    assert_eq!(
        (&button["type"], &button["url"]),
        (&json!("button"), &json!(link))
    );
    let raw = body.to_string();
    assert!(!raw.contains("value-of-prod/pay"), "a secret value: {raw}");
    assert!(!raw.contains(&issued.token), "the token: {raw}");
    assert!(!raw.contains(&agent.key), "the agent key: {raw}");
    assert!(
        !raw.contains("webhook-credential"),
        "the webhook URL: {raw}"
    );
    // The sink hands the body over before its 200 reaches the notifier.
    t.notifications_reach("sent", 1).await;
    assert_eq!(
        (
            t.notifications("sent"),
            t.notifications("retried"),
            t.notifications("failed")
        ),
        (1, 2, 0)
    );
}

/// All three ways a request comes to need humans are announced, each only after its write
/// committed: a token request, a change in what a pending request unlocks, and an access
/// request (one refused by the store first, which is never announced).
async fn every_new_or_changed_request_is_announced_once_committed(f: &Fixture) {
    let mut sink = WebhookSink::start(0).await;
    let settings = notifier(&sink.url, NotificationFormat::Json);
    let t = f
        .tenant_built(ApprovalSettings::default(), |app| {
            app.with_notifications(settings).unwrap()
        })
        .await;
    t.secret("prod/pay", Sensitivity::Critical).await;
    t.secret("prod/www", Sensitivity::Standard).await;
    let agent = t.agent(&["secrets:read:prod/*"], 1).await;

    let issued = t.issue(&agent, &["secrets:read:prod/*"]).await;
    let id = issued.approval.unwrap();
    let first = sink.next().await;
    assert_eq!(first["event"], "approval.requested");
    assert_eq!(first["reason"], "token_requested");
    assert_eq!(first["approval_id"], id.to_string());
    assert_eq!(
        first["url"],
        format!("https://secrets.example.com/ui/approvals/{id}")
    );
    assert_eq!(
        first["agent"],
        json!({"id": agent.id, "name": "bot", "trust_tier": 1})
    );
    assert_eq!(first["required_approvals"], 2);
    assert_eq!(first["highest_sensitivity"], "critical");
    assert_eq!(
        first["secrets"],
        json!([{"path": "prod/pay", "sensitivity": "critical"},
               {"path": "prod/www", "sensitivity": "standard"}])
    );
    assert!(first["token_id"].is_string(), "{first}");

    // A secret created under the wildcard changes what the request unlocks.
    t.secret("prod/new", Sensitivity::Sensitive).await;
    t.show(id).await;
    let changed = sink.next().await;
    assert_eq!(changed["reason"], "unlocks_changed");
    assert_eq!(changed["approval_id"], id.to_string());
    assert_eq!(changed["secrets_total"], 3);
    assert_eq!(changed["requested_by"], format!("agent:{}", agent.id));
    t.show(id).await; // nothing changed: nothing to say

    // The store refuses an access request for a revoked agent: no notice.
    let revoked = t.agent(&[], 0).await;
    agents::revoke(&t.app, t.admin, revoked.id.parse().unwrap(), &ctx())
        .await
        .unwrap();
    let scopes = ["secrets:read:ops/*".to_owned()];
    let refused = ceilings::request_access(
        &t.app,
        t.admin,
        revoked.id.parse().unwrap(),
        &scopes,
        &ctx(),
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code().as_str(), "conflict");
    let filed =
        ceilings::request_access(&t.app, t.admin, agent.id.parse().unwrap(), &scopes, &ctx())
            .await
            .unwrap();
    let access = sink.next().await;
    assert_eq!(access["reason"], "access_requested", "{access}");
    assert_eq!(access["approval_id"], filed.id);
    assert_eq!(access["ceiling_additions"], json!(["secrets:read:ops/*"]));
    assert_eq!(access["token_id"], Value::Null);
    assert_eq!(sink.posts(), 3, "one POST per announced request");
}

/// The Teams format is an Adaptive Card in a `message`, as Teams incoming webhooks take it.
#[tokio::test]
async fn teams_notifications_are_adaptive_cards_linking_to_the_request() {
    let f = Fixture::sqlite().await;
    let mut sink = WebhookSink::start(0).await;
    let settings = notifier(&sink.url, NotificationFormat::Teams);
    let t = f
        .tenant_built(ApprovalSettings::default(), |app| {
            app.with_notifications(settings).unwrap()
        })
        .await;
    t.secret("prod/pay", Sensitivity::Sensitive).await;
    let agent = t.agent(&["secrets:read:prod/*"], 0).await;
    let id = t
        .issue(&agent, &["secrets:read:prod/pay"])
        .await
        .approval
        .unwrap();

    let body = sink.next().await;
    assert_eq!(body["type"], "message", "{body}");
    let attachment = &body["attachments"][0];
    assert_eq!(
        attachment["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    let card = &attachment["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert_eq!(
        card["$schema"],
        "http://adaptivecards.io/schemas/adaptive-card.json"
    );
    assert!(card["version"].is_string());
    let blocks = card["body"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "TextBlock");
    let facts: Vec<(String, String)> = blocks
        .iter()
        .filter(|b| b["type"] == "FactSet")
        .flat_map(|b| b["facts"].as_array().unwrap().clone())
        .map(|f| {
            (
                f["title"].as_str().unwrap().to_owned(),
                f["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        facts.contains(&("prod/pay".into(), "sensitive".into())),
        "{facts:?}"
    );
    assert!(
        facts.contains(&("Agent".into(), format!("bot ({})", agent.id))),
        "{facts:?}"
    );
    let action = &card["actions"][0];
    assert_eq!(action["type"], "Action.OpenUrl");
    assert_eq!(
        action["url"],
        format!("https://secrets.example.com/ui/approvals/{id}")
    );
}

/// A webhook nobody listens on never holds up or fails the token request; the notifier
/// retries, gives up, and counts it.
#[tokio::test]
async fn an_unreachable_webhook_never_fails_the_request_and_is_counted() {
    let f = Fixture::sqlite().await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let mut settings = notifier(&format!("http://{closed}/hook"), NotificationFormat::Slack);
    settings.max_attempts = 2;
    let t = f
        .tenant_built(ApprovalSettings::default(), |app| {
            app.with_notifications(settings).unwrap()
        })
        .await;
    t.secret("prod/pay", Sensitivity::Sensitive).await;
    let agent = t.agent(&["secrets:read:prod/*"], 0).await;
    let issued = t.issue(&agent, &["secrets:read:prod/pay"]).await;
    assert_eq!(issued.status, "pending_approval");
    t.notifications_reach("failed", 1).await;
    assert_eq!(
        (t.notifications("retried"), t.notifications("sent")),
        (1, 0)
    );
    let metrics = t.app.metrics.render();
    assert!(
        metrics.contains(r#"agent_secret_store_approval_notifications_total{outcome="failed"} 1"#),
        "{metrics}"
    );
}

/// With the worker stuck on a webhook that never answers, a full queue drops further notices
/// (counted) and every request still succeeds at once.
#[tokio::test]
async fn a_full_queue_drops_notices_instead_of_blocking_requests() {
    let f = Fixture::sqlite().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket); // accepted, never answered
        }
    });
    let mut settings = notifier(&url, NotificationFormat::Slack);
    settings.queue = 1;
    settings.timeout = Duration::from_secs(600);
    let t = f
        .tenant_built(ApprovalSettings::default(), |app| {
            app.with_notifications(settings).unwrap()
        })
        .await;
    t.secret("prod/pay", Sensitivity::Sensitive).await;
    let agent = t.agent(&["secrets:read:prod/*"], 0).await;
    for _ in 0..3 {
        let issued = t.issue(&agent, &["secrets:read:prod/pay"]).await;
        assert_eq!(issued.status, "pending_approval");
    }
    // One in flight at most, one queued: the third can only have been dropped.
    assert!(t.notifications("dropped") >= 1);
    assert_eq!(t.notifications("sent"), 0);
}

/// The domain side of the MCP tools: an agent sees the secrets within its ceiling as
/// placeholders (never values), which of them the token it presents may use now, and only
/// its own approval requests; a wrong token is refused.
async fn an_agent_sees_its_ceiling_as_placeholders_and_its_own_approvals(f: &Fixture) {
    use agent_secret_control_plane::service::agent_view::{self, AgentCaller};
    let t = f.tenant(ApprovalSettings::default()).await;
    t.secret("team/db", Sensitivity::Standard).await;
    t.secret("team/pay", Sensitivity::Sensitive).await;
    t.secret("other/x", Sensitivity::Standard).await;
    let agent = t.agent(&["secrets:read:team/*"], 0).await;
    let stranger = t.agent(&["secrets:read:team/*"], 0).await;
    let issued = t.issue(&agent, &["secrets:read:team/*"]).await;
    let approval = issued.approval.expect("team/pay is sensitive");

    let by_key = agent_view::authenticate_agent(&t.app, &agent.key, &ctx())
        .await
        .unwrap();
    assert!(by_key.token.is_none());
    let offers = agent_view::offers(&t.app, &by_key).await.unwrap();
    let seen: Vec<(&str, bool, Option<&str>)> = offers
        .iter()
        .map(|o| (o.path.as_str(), o.usable_now, o.why_not))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("team/db", false, Some("no_token")),
            ("team/pay", false, Some("no_token"))
        ],
        "only the ceiling, in path order"
    );
    assert_eq!(offers[0].placeholder, "{{secret:team/db}}");
    let text = serde_json::to_string(&offers).unwrap();
    assert!(!text.contains("value-of-"), "never a value: {text}");

    let by_token = agent_view::authenticate_agent(&t.app, &issued.token, &ctx())
        .await
        .unwrap();
    let offers = agent_view::offers(&t.app, &by_token).await.unwrap();
    let seen: Vec<(&str, Option<&str>)> = offers
        .iter()
        .map(|o| (o.path.as_str(), o.why_not))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("team/db", Some("approval_pending")),
            ("team/pay", Some("approval_pending"))
        ],
        "a pending token can use nothing yet"
    );
    let (approver, _) = t.human(Role::Approver).await;
    t.decide(approver, approval, true).await.unwrap();
    // Each call authenticates afresh (as each MCP request does) and sees the token active.
    let by_token = agent_view::authenticate_agent(&t.app, &issued.token, &ctx())
        .await
        .unwrap();
    let offers = agent_view::offers(&t.app, &by_token).await.unwrap();
    assert!(offers.iter().all(|o| o.usable_now), "{offers:?}");

    // A narrower token: the rest is refused with the code a request would get.
    let narrow = t.issue(&agent, &["secrets:read:team/db"]).await;
    let by_narrow = agent_view::authenticate_agent(&t.app, &narrow.token, &ctx())
        .await
        .unwrap();
    let seen: Vec<(String, Option<&str>)> = agent_view::offers(&t.app, &by_narrow)
        .await
        .unwrap()
        .into_iter()
        .map(|o| (o.path, o.why_not))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("team/db".to_owned(), None),
            ("team/pay".to_owned(), Some("scope_denied"))
        ]
    );

    let mine = agent_view::approval_status(&t.app, &by_token, approval)
        .await
        .unwrap();
    assert_eq!(mine.status, ApprovalStatus::Approved);
    let other = AgentCaller {
        agent: agent_view::authenticate_agent(&t.app, &stranger.key, &ctx())
            .await
            .unwrap()
            .agent,
        token: None,
    };
    assert!(agent_view::approval_status(&t.app, &other, approval)
        .await
        .is_err());

    let mut forged = issued.token.clone();
    forged.pop();
    forged.push(if issued.token.ends_with('A') {
        'B'
    } else {
        'A'
    });
    assert!(agent_view::authenticate_agent(&t.app, &forged, &ctx())
        .await
        .is_err());
    assert!(
        agent_view::authenticate_agent(&t.app, &t.admin_token, &ctx())
            .await
            .is_err()
    );
}

agent_secret_testkit::backend_suite!(
    Fixture:
    an_admin_sets_the_tier_and_pending_requests_follow,
    an_operator_never_approves_their_own_access_request,
    ceiling_bounds_every_token_request,
    narrowing_a_ceiling_revokes_the_tokens_it_leaves_outside,
    sensitivity_and_tier_decide_what_needs_approval,
    one_human_activates_a_sensitive_token,
    critical_needs_two_distinct_humans_then_the_time_lock,
    the_time_lock_ends_by_resolve_or_by_the_task,
    a_new_secret_or_a_raised_sensitivity_voids_approvals,
    one_denial_denies,
    an_undecided_request_expires_and_denies_its_token,
    only_human_approvers_who_did_not_create_the_agent_decide,
    an_approved_access_request_widens_the_ceiling,
    a_new_request_reaches_slack_after_two_503s,
    every_new_or_changed_request_is_announced_once_committed,
    an_agent_sees_its_ceiling_as_placeholders_and_its_own_approvals,
);
