//! The sidecar's side channels: the watch stream (also across replicas sharing PostgreSQL)
//! and batched audit ingestion.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use agent_secret_control_plane::bootstrap::event_hub;
use agent_secret_control_plane::db::Db;
use agent_secret_control_plane::service::auth::{authenticate, expect_sidecar, SidecarPrincipal};
use agent_secret_control_plane::service::{
    agents, sidecars, tenants, tokens, watch, App, Policy, RequestContext,
};
use agent_secret_control_plane::store::sql::SqlStore;
use agent_secret_core::api::{SidecarAuditBatch, SidecarAuditEvent, WatchEvent};
use agent_secret_core::credential::Pepper;
use agent_secret_core::kms::local::{LocalKms, MasterKey};
use agent_secret_core::kms::Kms;
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use futures::StreamExt;
use http_body_util::BodyExt;
use tower::ServiceExt;

fn app_on(db: Db, kms: Arc<dyn Kms>, pepper: Arc<Pepper>) -> Arc<App> {
    let events = event_hub(&db);
    Arc::new(
        App::new(Arc::new(SqlStore::new(db)), kms, pepper, Policy::default()).with_events(events),
    )
}

struct Tenant {
    admin: agent_secret_control_plane::service::auth::OperatorPrincipal,
    sidecar: SidecarPrincipal,
    sidecar_key: String,
    agent: agent_secret_control_plane::service::auth::AgentPrincipal,
}

async fn tenant(app: &App, name: &str) -> Tenant {
    let ctx = RequestContext::default();
    let created = tenants::create_tenant(app, name).await.unwrap();
    let admin = agent_secret_control_plane::service::auth::expect_operator(
        authenticate(app, created.admin_token.expose(), &ctx)
            .await
            .unwrap(),
    )
    .unwrap();
    let sc = sidecars::create(app, admin, "host", &ctx).await.unwrap();
    let sidecar = expect_sidecar(authenticate(app, &sc.sidecar_key, &ctx).await.unwrap()).unwrap();
    let everything = ["secrets:read:**".to_owned()];
    let agent = agents::create(app, admin, "bot", None, &everything, &ctx)
        .await
        .unwrap();
    let agent = agent_secret_control_plane::service::auth::expect_agent(
        authenticate(app, &agent.agent_key, &ctx).await.unwrap(),
    )
    .unwrap();
    Tenant {
        admin,
        sidecar,
        sidecar_key: sc.sidecar_key,
        agent,
    }
}

async fn issue(app: &App, t: &Tenant) -> String {
    let req = serde_json::from_value(
        serde_json::json!({"scopes": ["secrets:read:a/*"], "ttl_seconds": 60}),
    )
    .unwrap();
    tokens::issue(app, t.agent, req, &RequestContext::default())
        .await
        .unwrap()
        .id
}

async fn next_event(stream: &mut (impl futures::Stream<Item = WatchEvent> + Unpin)) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an event within 10 s")
        .expect("the stream stays open")
}

async fn sqlite_app(dir: &std::path::Path) -> Arc<App> {
    let db = Db::connect(&format!("sqlite://{}", dir.join("s.db").display()))
        .await
        .unwrap();
    db.migrate().await.unwrap();
    let kms = LocalKms::open_or_create(dir.join("keyring"), MasterKey::generate()).unwrap();
    app_on(db, Arc::new(kms), Arc::new(Pepper::generate()))
}

#[tokio::test]
async fn revocations_reach_watchers_of_the_same_tenant_only() {
    let dir = tempfile::tempdir().unwrap();
    let app = sqlite_app(dir.path()).await;
    let a = tenant(&app, "a").await;
    let b = tenant(&app, "b").await;
    let mut watch_a = Box::pin(watch::subscribe(&app, a.sidecar));
    let mut watch_b = Box::pin(watch::subscribe(&app, b.sidecar));

    let token_b = issue(&app, &b).await;
    let token_a = issue(&app, &a).await;
    let ctx = RequestContext::default();
    use agent_secret_control_plane::service::auth::Principal;
    tokens::revoke(
        &app,
        Principal::Agent(a.agent),
        token_a.parse().unwrap(),
        &ctx,
    )
    .await
    .unwrap();
    tokens::revoke(
        &app,
        Principal::Agent(b.agent),
        token_b.parse().unwrap(),
        &ctx,
    )
    .await
    .unwrap();

    assert_eq!(
        next_event(&mut watch_a).await,
        WatchEvent::TokenRevoked {
            token_id: token_a.clone()
        }
    );
    assert_eq!(
        next_event(&mut watch_b).await,
        WatchEvent::TokenRevoked { token_id: token_b }
    );

    agents::rotate_key(&app, a.admin, a.agent.id, &ctx)
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut watch_a).await,
        WatchEvent::AgentKeyRotated {
            agent_id: a.agent.id.to_string()
        }
    );
}

#[tokio::test]
async fn revoking_a_sidecar_ends_its_watch_stream() {
    let dir = tempfile::tempdir().unwrap();
    let app = sqlite_app(dir.path()).await;
    let a = tenant(&app, "a").await;
    let mut watch_a = Box::pin(watch::subscribe(&app, a.sidecar));
    sidecars::revoke(&app, a.admin, a.sidecar.id, &RequestContext::default())
        .await
        .unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), watch_a.next())
        .await
        .expect("the stream ends promptly");
    assert_eq!(end, None, "a revoked sidecar hears nothing more");
}

#[tokio::test]
async fn watch_endpoint_streams_server_sent_events() {
    let dir = tempfile::tempdir().unwrap();
    let app = sqlite_app(dir.path()).await;
    let a = tenant(&app, "a").await;
    let router = agent_secret_control_plane::api::app(app.clone());
    let req = Request::get("/v1/sidecar/watch")
        .header(header::AUTHORIZATION, format!("Bearer {}", a.sidecar_key))
        .body(Body::empty())
        .unwrap();
    let res = router.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut body = res.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b": watching\n\n");

    let put = serde_json::from_value(
        serde_json::json!({"value": "v-123456789", "allowed_hosts": ["x.example.com"]}),
    )
    .unwrap();
    agent_secret_control_plane::service::secrets::put(
        &app,
        a.admin,
        "a/b",
        put,
        &RequestContext::default(),
    )
    .await
    .unwrap();
    let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let text = String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap();
    assert!(text.starts_with("event: secret_updated\ndata: "), "{text}");
    assert!(
        text.contains(r#""path":"a/b""#) && text.contains(r#""version":1"#),
        "{text}"
    );
    assert!(!text.contains("v-123456789"), "events never carry values");
}

#[tokio::test]
async fn sidecar_audit_batches_land_in_the_chain_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let app = sqlite_app(dir.path()).await;
    let a = tenant(&app, "a").await;
    let event = |path: &str, ok: bool| SidecarAuditEvent {
        kind: Default::default(),
        token_id: Some("0190c0de-0000-7000-8000-000000000001".into()),
        client_ip: Some("127.0.0.1".into()),
        user_agent: Some("python-requests/2.32".into()),
        path: Some(path.into()),
        destination_host: Some("api.openai.com".into()),
        success: ok,
        reason: (!ok).then(|| "scope_denied".into()),
        occurred_at: chrono::Utc::now(),
    };
    let batch = SidecarAuditBatch {
        events: vec![event("a/b", true), event("a/c", false)],
    };
    let accepted = watch::ingest_audit(&app, a.sidecar, batch).await.unwrap();
    assert_eq!(accepted.accepted, 2);

    let too_big = SidecarAuditBatch {
        events: (0..501).map(|_| event("a/b", true)).collect(),
    };
    assert!(watch::ingest_audit(&app, a.sidecar, too_big).await.is_err());

    let query = agent_secret_control_plane::service::audit_log::AuditQuery {
        types: vec!["secret.read".into()],
        ..Default::default()
    };
    let events = agent_secret_control_plane::service::audit_log::export_page(&app, a.admin, query)
        .await
        .unwrap()
        .events;
    assert_eq!(events.len(), 2, "the oversized batch wrote nothing");
    assert_eq!(
        events[0].actor,
        "token:0190c0de-0000-7000-8000-000000000001"
    );
    assert_eq!(
        events[0].user_agent.as_deref(),
        Some("python-requests/2.32")
    );
    assert!(events[1]
        .reason
        .as_deref()
        .unwrap()
        .starts_with("scope_denied; reported by sidecar"));
    let report = agent_secret_control_plane::service::audit_log::verify(&app, a.admin)
        .await
        .unwrap();
    assert!(report.valid, "{report:?}");
}

#[tokio::test]
async fn an_event_raised_on_one_replica_reaches_watchers_of_another() {
    let Some(pg) = support::postgres_test_db().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let kms: Arc<dyn Kms> = Arc::new(
        LocalKms::open_or_create(dir.path().join("keyring"), MasterKey::generate()).unwrap(),
    );
    let pepper = Arc::new(Pepper::generate());
    let replica_a = app_on(
        Db::connect(&pg.service_url).await.unwrap(),
        kms.clone(),
        pepper.clone(),
    );
    let replica_b = app_on(Db::connect(&pg.service_url).await.unwrap(), kms, pepper);
    let t = tenant(&replica_a, "multi").await;
    let mut watch_on_b = Box::pin(watch::subscribe(&replica_b, t.sidecar));
    // LISTEN is asynchronous: keep revoking fresh tokens until one event arrives on B.
    let ctx = RequestContext::default();
    use agent_secret_control_plane::service::auth::Principal;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let token = issue(&replica_a, &t).await;
        tokens::revoke(
            &replica_a,
            Principal::Agent(t.agent),
            token.parse().unwrap(),
            &ctx,
        )
        .await
        .unwrap();
        match tokio::time::timeout(Duration::from_millis(500), watch_on_b.next()).await {
            Ok(Some(WatchEvent::TokenRevoked { token_id })) => {
                assert_eq!(token_id.len(), 36);
                break;
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => assert!(
                tokio::time::Instant::now() < deadline,
                "no event crossed replicas"
            ),
        }
    }
}

/// Ceiling changes and approvals reach watching sidecars like revocations: narrowing revokes
/// the tokens left outside (each announced) and announces the change; an approval announces
/// the token it activates.
#[tokio::test]
async fn ceiling_changes_and_approvals_reach_watchers() {
    use agent_secret_control_plane::service::decisions::{self, Decider};
    use agent_secret_control_plane::service::{ceilings, operators, secrets};
    use agent_secret_core::api::{DecideApproval, PutSecretRequest, Role, Sensitivity};
    let dir = tempfile::tempdir().unwrap();
    let app = sqlite_app(dir.path()).await;
    let t = tenant(&app, "a").await;
    let ctx = RequestContext::default();
    let mut watching = Box::pin(watch::subscribe(&app, t.sidecar));
    let token = issue(&app, &t).await;

    ceilings::deny(
        &app,
        t.admin,
        t.agent.id,
        &["secrets:read:**".to_owned()],
        &ctx,
    )
    .await
    .unwrap();
    assert_eq!(
        next_event(&mut watching).await,
        WatchEvent::TokenRevoked { token_id: token }
    );
    assert_eq!(
        next_event(&mut watching).await,
        WatchEvent::AgentCeilingChanged {
            agent_id: t.agent.id.to_string()
        }
    );
    ceilings::allow(
        &app,
        t.admin,
        t.agent.id,
        &["secrets:read:a/*".to_owned()],
        &ctx,
    )
    .await
    .unwrap();
    next_event(&mut watching).await;

    let put = PutSecretRequest {
        value: "a-sensitive-value-0123456789".into(),
        sensitivity: Some(Sensitivity::Sensitive),
        allowed_hosts: vec!["api.example.com".into()],
    };
    secrets::put(&app, t.admin, "a/pay", put, &ctx)
        .await
        .unwrap();
    next_event(&mut watching).await; // secret_updated
    let req = serde_json::from_value(
        serde_json::json!({"scopes": ["secrets:read:a/*"], "ttl_seconds": 60}),
    )
    .unwrap();
    let pending = tokens::issue(&app, t.agent, req, &ctx).await.unwrap();
    let approver = operators::create(&app, t.admin, "alice", Role::Approver, &ctx)
        .await
        .unwrap();
    let approver = agent_secret_control_plane::service::auth::expect_operator(
        authenticate(&app, &approver.operator_token, &ctx)
            .await
            .unwrap(),
    )
    .unwrap();
    let decider = Decider {
        tenant: approver.tenant,
        operator: approver.id,
        role: Role::Approver,
        human_session: true,
    };
    let id = pending.approval_id.unwrap().parse().unwrap();
    decisions::decide(&app, decider, id, true, &DecideApproval::default(), &ctx)
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut watching).await,
        WatchEvent::TokenApproved {
            token_id: pending.id
        }
    );
}
