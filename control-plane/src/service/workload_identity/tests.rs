#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use agent_secret_core::api::{ErrorCode, KubernetesTokenRequest, Role, TokenStatus};
use agent_secret_core::credential::Pepper;
use agent_secret_core::kms::local::{LocalKms, MasterKey};

use super::*;
use crate::audit::AuditEventType;
use crate::db::Db;
use crate::kubernetes::identity::tests::{fake_api_server, token_review_verifier};
use crate::service::auth::{OperatorPrincipal, SidecarPrincipal};
use crate::service::{agents, tenants, Policy};
use crate::store::sql::SqlStore;
use crate::store::AuditFilter;

/// A control plane on SQLite with a tenant and an agent allowed `secrets:read:production/**`.
async fn app(dir: &std::path::Path) -> (App, TenantId, AgentId) {
    let (app, tenant, agent, _) = app_with_admin(dir).await;
    (app, tenant, agent)
}

async fn app_with_admin(dir: &std::path::Path) -> (App, TenantId, AgentId, OperatorPrincipal) {
    let db = Db::connect(&format!("sqlite://{}", dir.join("store.db").display()))
        .await
        .unwrap();
    db.migrate().await.unwrap();
    let kms = LocalKms::open_or_create(dir.join("keyring"), MasterKey::generate()).unwrap();
    let app = App::new(
        Arc::new(SqlStore::new(db)),
        Arc::new(kms),
        Arc::new(Pepper::generate()),
        Policy::default(),
    );
    let tenant = tenants::create_tenant(&app, "acme").await.unwrap();
    let admin = OperatorPrincipal {
        tenant: tenant.tenant_id,
        id: tenant.admin_operator_id,
        role: Role::Admin,
    };
    let agent = agents::create(
        &app,
        admin,
        "research",
        None,
        &["secrets:read:production/**".to_owned()],
        &RequestContext::default(),
    )
    .await
    .unwrap();
    (app, tenant.tenant_id, agent.id.parse().unwrap(), admin)
}

/// A verifier of the fake API server, its review count, and the directory of its own token.
async fn verifier() -> (
    crate::kubernetes::identity::Verifier,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    tempfile::TempDir,
) {
    let (url, reviews) = fake_api_server(false).await;
    let (verifier, dir) =
        token_review_verifier(&url, crate::kubernetes::identity::tests::OWN_TOKEN);
    (verifier, reviews, dir)
}

fn binding(namespace: &str, service_account: &str, tenant: TenantId, agent: AgentId) -> Binding {
    Binding {
        namespace: namespace.into(),
        service_account: service_account.into(),
        tenant: tenant.to_string(),
        agent: Some(agent.to_string()),
        sidecar: None,
        max_ttl_seconds: 900,
    }
}

async fn issued_events(app: &App, tenant: TenantId) -> Vec<crate::audit::AuditEvent> {
    let only_issued = AuditFilter {
        types: vec![AuditEventType::TokenIssued],
        ..AuditFilter::default()
    };
    app.store.list_audit(tenant, &only_issued).await.unwrap()
}

fn request(token: &str, scope: &str, ttl_seconds: u64) -> KubernetesTokenRequest {
    KubernetesTokenRequest {
        token: token.into(),
        scopes: vec![scope.into()],
        ttl_seconds,
        ip_allowlist: None,
        max_uses: None,
        request_access: false,
    }
}

#[tokio::test]
async fn a_bound_service_account_gets_its_agents_token_audited_with_the_service_account_as_actor() {
    let dir = tempfile::tempdir().unwrap();
    let (app, tenant, agent) = app(dir.path()).await;
    let (verifier, _, _token_dir) = verifier().await;
    let app = app.with_workload_identity(WorkloadIdentity {
        verifier,
        bindings: vec![binding("agents", "research-agent", tenant, agent)],
    });
    let ctx = RequestContext::default();

    let issued = exchange(
        &app,
        request("valid", "secrets:read:production/openai/*", 600),
        &ctx,
    )
    .await
    .unwrap();
    assert_eq!(issued.status, TokenStatus::Active);
    assert!(issued.token.starts_with("asst_"), "a scoped token");

    let events = issued_events(&app, tenant).await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].draft.actor.0,
        "k8s:system:serviceaccount:agents:research-agent"
    );
    assert!(events[0]
        .draft
        .reason
        .as_deref()
        .unwrap()
        .contains(&issued.id));

    // The binding caps the TTL, and the agent's ceiling still bounds the scopes.
    let err = exchange(
        &app,
        request("valid", "secrets:read:production/openai/*", 901),
        &ctx,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidTtl);
    let err = exchange(&app, request("valid", "secrets:read:staging/**", 600), &ctx)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::ScopeNotPermitted);
}

#[tokio::test]
async fn invalid_expired_or_foreign_audience_tokens_and_unbound_accounts_get_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (app, tenant, agent) = app(dir.path()).await;
    let (verifier, _, _token_dir) = verifier().await;
    let app = app.with_workload_identity(WorkloadIdentity {
        verifier,
        bindings: vec![
            binding("agents", "summariser", tenant, agent),
            binding("batch", "research-agent", tenant, agent),
        ],
    });
    let ctx = RequestContext::default();
    let scope = "secrets:read:production/openai/*";
    for token in [
        "tok-forged-7f3a",
        "tok-expired-7f3a",
        "tok-other-aud-7f3a",
        "a-person",
    ] {
        let err = exchange(&app, request(token, scope, 600), &ctx)
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::Unauthenticated, "{token}");
    }
    // Valid, but its service account is bound only in another namespace.
    let err = exchange(&app, request("valid", scope, 600), &ctx)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Forbidden);
    assert!(err.to_string().contains("batch"), "{err}");

    // Nothing was issued, so nothing was audited as issued.
    let issued = issued_events(&app, tenant).await;
    assert!(issued.is_empty());
}

#[tokio::test]
async fn without_workload_identity_the_exchange_does_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let (app, _, _) = app(dir.path()).await;
    let err = exchange(
        &app,
        request("valid", "secrets:read:production/openai/*", 600),
        &RequestContext::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound);
}

#[tokio::test]
async fn an_address_that_keeps_presenting_bad_tokens_is_throttled_before_the_api_server_is_asked() {
    use crate::config::{RateLimit, RateLimitsConfig, ServerConfig};
    let dir = tempfile::tempdir().unwrap();
    let (app, tenant, agent) = app(dir.path()).await;
    let (verifier, reviews, _token_dir) = verifier().await;
    let rates = RateLimitsConfig {
        auth_failures_per_ip: RateLimit {
            per_second: 1,
            burst: 3,
        },
        ..RateLimitsConfig::default()
    };
    let app = app
        .with_limits(crate::limits::Limits::new(&ServerConfig::default(), &rates))
        .with_workload_identity(WorkloadIdentity {
            verifier,
            bindings: vec![binding("agents", "research-agent", tenant, agent)],
        });
    let ctx = RequestContext {
        ip: Some("203.0.113.7".parse().unwrap()),
        user_agent: None,
    };
    let scope = "secrets:read:production/openai/*";
    let mut codes = Vec::new();
    for _ in 0..6 {
        let err = exchange(&app, request("tok-forged-7f3a", scope, 600), &ctx)
            .await
            .unwrap_err();
        codes.push(err.code());
    }
    assert_eq!(&codes[..3], [ErrorCode::Unauthenticated; 3]);
    assert!(
        codes[3..].iter().all(|c| *c == ErrorCode::RateLimited),
        "{codes:?}"
    );
    assert_eq!(
        reviews.load(std::sync::atomic::Ordering::SeqCst),
        4,
        "the API server is not asked once the address is throttled"
    );
}

#[tokio::test]
async fn a_sidecar_authenticates_with_its_projected_token_while_its_sidecar_is_live() {
    use crate::kubernetes::identity::tests::SIDECAR_JWT;
    use crate::service::auth::{authenticate, Principal};
    use crate::service::sidecars;
    let dir = tempfile::tempdir().unwrap();
    let (app, tenant, agent, admin) = app_with_admin(dir.path()).await;
    let ctx = RequestContext::default();
    let sidecar = sidecars::create(&app, admin, "agents-ns", &ctx)
        .await
        .unwrap();
    let sidecar_id: agent_secret_core::ids::SidecarId = sidecar.id.parse().unwrap();
    let (verifier, reviews, _token_dir) = verifier().await;
    let mut bound = binding("agents", "research-agent", tenant, agent);
    bound.sidecar = Some(sidecar_id.to_string());
    let app = app.with_workload_identity(WorkloadIdentity {
        verifier,
        bindings: vec![bound],
    });

    let principal = authenticate(&app, SIDECAR_JWT, &ctx).await.unwrap();
    assert_eq!(
        principal,
        Principal::Sidecar(SidecarPrincipal {
            tenant,
            id: sidecar_id
        })
    );
    // Not JWT-shaped, or unknown to the API server: refused, and only the latter is reviewed.
    let before = reviews.load(std::sync::atomic::Ordering::SeqCst);
    for bearer in [
        "valid",
        "not-a-token",
        "eyJhbGciOiJSUzI1NiJ9.eyJ4Ijp9.Zm9yZ2Vk",
    ] {
        let err = authenticate(&app, bearer, &ctx).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::Unauthenticated, "{bearer}");
    }
    assert_eq!(
        reviews.load(std::sync::atomic::Ordering::SeqCst),
        before + 1
    );

    // The sidecar revoked: its service account's token no longer authenticates (revocation
    // also drops the sidecar's cached verifications).
    sidecars::revoke(&app, admin, sidecar_id, &ctx)
        .await
        .unwrap();
    let err = authenticate(&app, SIDECAR_JWT, &ctx).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unauthenticated);
}

#[tokio::test]
async fn a_binding_without_a_sidecar_does_not_authenticate_one() {
    use crate::kubernetes::identity::tests::SIDECAR_JWT;
    let dir = tempfile::tempdir().unwrap();
    let (app, tenant, agent) = app(dir.path()).await;
    let (verifier, _, _token_dir) = verifier().await;
    let app = app.with_workload_identity(WorkloadIdentity {
        verifier,
        bindings: vec![binding("agents", "research-agent", tenant, agent)],
    });
    let err = crate::service::auth::authenticate(&app, SIDECAR_JWT, &RequestContext::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unauthenticated);
}
