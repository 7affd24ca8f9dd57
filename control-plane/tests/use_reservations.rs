//! Use counting on failure (issue 10 item 9), on every backend: a use of a `max_uses` token is
//! reserved at resolve (still exact under 100 parallel uses), the sidecar that resolved may
//! give it back once before its deadline, and nobody else ever can.
//!
//! The real router, driven in-process; on PostgreSQL the store connects as the service role.
//! Each behaviour is an `async fn(&World)`, run once per backend.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use agent_secret_control_plane::audit::{now_micros, Actor, AuditDraft, AuditEventType};
use agent_secret_control_plane::service::{tenants, App, Policy};
use agent_secret_control_plane::store::sql::SqlStore;
use agent_secret_control_plane::store::{AuditFilter, ReleaseResult};
use agent_secret_core::credential::Pepper;
use agent_secret_core::ids::{SidecarId, TenantId, TokenId};
use agent_secret_core::kms::local::{LocalKms, MasterKey};
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

const PATH: &str = "production/openai/api_key";
const HOST: &str = "api.openai.com";

struct World {
    app: Arc<App>,
    router: axum::Router,
    admin: String,
    tenant: TenantId,
    agent_key: String,
    _keep: Box<dyn std::any::Any + Send + Sync>,
}

struct Answer {
    status: StatusCode,
    body: Value,
}

impl Answer {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("<no code>")
    }
}

impl World {
    async fn sqlite() -> World {
        let (db, store) = support::sqlite_test_db().await;
        let dir = db.dir.path().to_owned();
        World::with(store, &dir, Box::new(db)).await
    }

    async fn postgres() -> Option<World> {
        let db = support::postgres_test_db().await?;
        let store = db.service_store().await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        Some(World::with(store, &path, Box::new((db, dir))).await)
    }

    async fn with(
        store: SqlStore,
        dir: &std::path::Path,
        keep: Box<dyn std::any::Any + Send + Sync>,
    ) -> World {
        let kms =
            LocalKms::open_or_create(dir.join("keyring.json"), MasterKey::generate()).unwrap();
        let app = Arc::new(App::new(
            Arc::new(store),
            Arc::new(kms),
            Arc::new(Pepper::generate()),
            Policy::default(),
        ));
        let created = tenants::create_tenant(&app, "acme").await.unwrap();
        let mut world = World {
            router: agent_secret_control_plane::api::app(app.clone()),
            admin: created.admin_token.expose().to_owned(),
            tenant: created.tenant_id,
            app,
            agent_key: String::new(),
            _keep: keep,
        };
        let agent = world
            .post(
                "/v1/agents",
                &world.admin,
                json!({"name": "billing-bot", "allow": ["secrets:read:**"]}),
            )
            .await;
        assert_eq!(agent.status, StatusCode::CREATED, "{}", agent.body);
        world.agent_key = agent.body["agent_key"].as_str().unwrap().to_owned();
        let put = world
            .call(
                Method::PUT,
                &format!("/v1/secrets/{PATH}"),
                &world.admin,
                json!({"value": "sk-live-0123456789abcdef", "allowed_hosts": [HOST]}),
            )
            .await;
        assert_eq!(put.status, StatusCode::OK, "{}", put.body);
        world
    }

    async fn call(&self, method: Method, uri: &str, auth: &str, body: Value) -> Answer {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {auth}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    async fn post(&self, uri: &str, auth: &str, body: Value) -> Answer {
        self.call(Method::POST, uri, auth, body).await
    }

    /// A new sidecar's key and id.
    async fn sidecar(&self, name: &str) -> (String, SidecarId) {
        let r = self
            .post("/v1/sidecars", &self.admin, json!({"name": name}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        (
            r.body["sidecar_key"].as_str().unwrap().to_owned(),
            r.body["id"].as_str().unwrap().parse().unwrap(),
        )
    }

    /// A token (and its id) for the secret, limited to `max_uses` if given.
    async fn token(&self, max_uses: Option<i64>) -> (String, TokenId) {
        let mut body = json!({"scopes": ["secrets:read:production/**"], "ttl_seconds": 600});
        if let Some(n) = max_uses {
            body["max_uses"] = json!(n);
        }
        let r = self.post("/v1/tokens", &self.agent_key, body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        (
            r.body["token"].as_str().unwrap().to_owned(),
            r.body["id"].as_str().unwrap().parse().unwrap(),
        )
    }

    async fn resolve(&self, sidecar_key: &str, token: &str) -> Answer {
        self.post(
            "/v1/sidecar/resolve",
            sidecar_key,
            json!({"token": token, "paths": [PATH], "destination_host": HOST, "client_ip": "10.0.0.1"}),
        )
        .await
    }

    async fn release(&self, sidecar_key: &str, reservation: &str) -> Answer {
        self.post(
            "/v1/sidecar/release",
            sidecar_key,
            json!({"reservation_id": reservation, "reason": "kms_unavailable"}),
        )
        .await
    }

    async fn uses(&self, token: TokenId) -> i64 {
        self.app
            .store
            .get_token(self.tenant, token)
            .await
            .unwrap()
            .unwrap()
            .uses
    }

    async fn events(&self, event_type: AuditEventType) -> Vec<AuditDraft> {
        self.app
            .store
            .list_audit(
                self.tenant,
                &AuditFilter {
                    types: vec![event_type],
                    ..AuditFilter::default()
                },
            )
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.draft)
            .collect()
    }
}

fn reservation_of(answer: &Answer) -> String {
    answer.body["reservation"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("a max_uses resolve carries a reservation: {}", answer.body))
        .to_owned()
}

/// 100 parallel uses of a 5-use token: exactly 5 are granted, each with its own reservation,
/// and the reservations count against max_uses while they are outstanding.
async fn parallel_uses_of_a_five_use_token_grant_exactly_five(w: &World) {
    let w = Arc::new(w.clone_handle());
    let (sidecar, _) = w.sidecar("host-1").await;
    let (token, token_id) = w.token(Some(5)).await;
    let mut racing = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let (w, sidecar, token) = (w.clone(), sidecar.clone(), token.clone());
        racing.spawn(async move {
            let r = w.resolve(&sidecar, &token).await;
            let reservation = r.body["reservation"]["id"].as_str().map(str::to_owned);
            (r.status, r.code().to_owned(), reservation)
        });
    }
    let (mut granted, mut exhausted) = (Vec::new(), 0);
    while let Some(done) = racing.join_next().await {
        match done.unwrap() {
            (StatusCode::OK, _, Some(reservation)) => granted.push(reservation),
            (StatusCode::FORBIDDEN, code, None) if code == "uses_exhausted" => exhausted += 1,
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!((granted.len(), exhausted), (5, 95));
    granted.sort();
    granted.dedup();
    assert_eq!(granted.len(), 5, "each granted use has its own reservation");
    assert_eq!(w.uses(token_id).await, 5);
}

/// A reserved use the sidecar gives back can be used again; the release is audited and
/// idempotent (a second one changes nothing).
async fn a_released_use_can_be_used_again(w: &World) {
    let (sidecar, _) = w.sidecar("host-1").await;
    let (token, token_id) = w.token(Some(1)).await;
    let first = w.resolve(&sidecar, &token).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let reservation = reservation_of(&first);
    let again = w.resolve(&sidecar, &token).await;
    assert_eq!(
        again.code(),
        "uses_exhausted",
        "an outstanding reservation counts against max_uses"
    );

    let released = w.release(&sidecar, &reservation).await;
    assert_eq!(released.status, StatusCode::OK, "{}", released.body);
    assert_eq!(released.body["outcome"], "released");
    assert_eq!(w.uses(token_id).await, 0);
    let twice = w.release(&sidecar, &reservation).await;
    assert_eq!(twice.status, StatusCode::OK, "{}", twice.body);
    assert_eq!(twice.body["outcome"], "already_released");
    assert_eq!(w.uses(token_id).await, 0, "a use is given back once");

    let retry = w.resolve(&sidecar, &token).await;
    assert_eq!(retry.status, StatusCode::OK, "{}", retry.body);
    assert_ne!(reservation_of(&retry), reservation);
    assert_eq!(
        w.resolve(&sidecar, &token).await.code(),
        "uses_exhausted",
        "the single use is spent by the retry"
    );

    let events = w.events(AuditEventType::TokenUseReleased).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].actor, Actor::new("token", token_id));
    let reason = events[0].reason.as_deref().unwrap();
    assert!(
        reason.starts_with("kms_unavailable") && reason.contains(&reservation),
        "{reason}"
    );
    assert_eq!(
        w.app
            .metrics
            .use_releases
            .with_label_values(&["released"])
            .get(),
        1
    );
}

/// Another sidecar of the same tenant cannot release the reservation (404, as for one that
/// does not exist), nor can the token itself or a malformed id.
async fn release_of_another_sidecars_reservation_is_refused(w: &World) {
    let (owner, _) = w.sidecar("host-1").await;
    let (other, _) = w.sidecar("host-2").await;
    let (token, token_id) = w.token(Some(1)).await;
    let granted = w.resolve(&owner, &token).await;
    let reservation = reservation_of(&granted);

    let stolen = w.release(&other, &reservation).await;
    assert_eq!(stolen.status, StatusCode::NOT_FOUND, "{}", stolen.body);
    assert_eq!(stolen.code(), "not_found");
    let unknown = w.release(&owner, &uuid::Uuid::new_v4().to_string()).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(
        stolen.body["error"]["message"], unknown.body["error"]["message"],
        "another sidecar's reservation looks like no reservation at all"
    );
    let as_token = w.release(&token, &reservation).await;
    assert_eq!(
        as_token.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        as_token.body
    );
    let as_admin = w.release(&w.admin, &reservation).await;
    assert_eq!(as_admin.status, StatusCode::FORBIDDEN, "{}", as_admin.body);
    let malformed = w.release(&owner, "not-a-uuid").await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    let bad_reason = w
        .post(
            "/v1/sidecar/release",
            &owner,
            json!({"reservation_id": reservation, "reason": "free text\n"}),
        )
        .await;
    assert_eq!(bad_reason.status, StatusCode::BAD_REQUEST);
    assert_eq!(w.uses(token_id).await, 1, "nothing was given back");
    assert_eq!(w.resolve(&owner, &token).await.code(), "uses_exhausted");

    let released = w.release(&owner, &reservation).await;
    assert_eq!(released.body["outcome"], "released", "{}", released.body);
}

/// After its deadline a reservation is spent for good: a late release is refused (409) and
/// changes nothing. Unlimited tokens carry no reservation at all.
async fn a_release_after_the_deadline_is_refused_and_the_use_stands(w: &World) {
    let (sidecar, sidecar_id) = w.sidecar("host-1").await;
    let (token, token_id) = w.token(Some(2)).await;
    let granted = w.resolve(&sidecar, &token).await;
    let reservation = reservation_of(&granted);
    let deadline: chrono::DateTime<chrono::Utc> = granted.body["reservation"]["expires_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let late = w
        .app
        .store
        .release_token_use(
            w.tenant,
            reservation.parse().unwrap(),
            sidecar_id,
            deadline,
            &|t| AuditDraft::new(AuditEventType::TokenUseReleased, Actor::new("token", t)),
        )
        .await
        .unwrap();
    assert_eq!(late, ReleaseResult::Expired);
    assert_eq!(w.uses(token_id).await, 1, "the use stands");
    let in_time = w
        .app
        .store
        .release_token_use(
            w.tenant,
            reservation.parse().unwrap(),
            sidecar_id,
            now_micros(),
            &|t| AuditDraft::new(AuditEventType::TokenUseReleased, Actor::new("token", t)),
        )
        .await
        .unwrap();
    assert_eq!(in_time, ReleaseResult::Released { token: token_id });

    let (free, _) = w.token(None).await;
    let unlimited = w.resolve(&sidecar, &free).await;
    assert_eq!(unlimited.status, StatusCode::OK, "{}", unlimited.body);
    assert!(
        unlimited.body.get("reservation").is_none(),
        "{}",
        unlimited.body
    );
}

/// Racing releases of one reservation give the use back exactly once.
async fn racing_releases_give_a_use_back_once(w: &World) {
    let w = Arc::new(w.clone_handle());
    let (sidecar, _) = w.sidecar("host-1").await;
    let (token, token_id) = w.token(Some(3)).await;
    let reservation = reservation_of(&w.resolve(&sidecar, &token).await);
    reservation_of(&w.resolve(&sidecar, &token).await);
    let mut racing = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let (w, sidecar, reservation) = (w.clone(), sidecar.clone(), reservation.clone());
        racing.spawn(async move {
            let r = w.release(&sidecar, &reservation).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            r.body["outcome"].as_str().unwrap().to_owned()
        });
    }
    let mut released = 0;
    while let Some(done) = racing.join_next().await {
        if done.unwrap() == "released" {
            released += 1;
        }
    }
    assert_eq!(released, 1);
    assert_eq!(w.uses(token_id).await, 1);
    assert_eq!(w.events(AuditEventType::TokenUseReleased).await.len(), 1);
}

impl World {
    /// A second handle on the same app and router, for tasks that need `'static` data.
    fn clone_handle(&self) -> World {
        World {
            app: self.app.clone(),
            router: self.router.clone(),
            admin: self.admin.clone(),
            tenant: self.tenant,
            agent_key: self.agent_key.clone(),
            _keep: Box::new(()),
        }
    }
}

macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(&super::World::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let Some(world) = super::World::postgres().await else { return };
                    super::$name(&world).await;
                }
            )*
        }
    };
}

on_every_backend!(
    parallel_uses_of_a_five_use_token_grant_exactly_five,
    a_released_use_can_be_used_again,
    release_of_another_sidecars_reservation_is_refused,
    a_release_after_the_deadline_is_refused_and_the_use_stands,
    racing_releases_give_a_use_back_once,
);
