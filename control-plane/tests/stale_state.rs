//! Issue 10, item 7: no stale state after missed events.
//!
//! * A control plane whose PostgreSQL listener lost its connection tells every watching
//!   sidecar to `resync` once LISTEN is back (NOTIFYs sent meanwhile are gone).
//! * Revoking an agent revokes every token it holds in the store: resolve refuses them.
//! * Deleting and re-creating a secret never reuses a (path, version) pair.
//!
//! Over the real HTTPS server on 127.0.0.1, on SQLite and (with
//! `AGENT_SECRET_STORE_TEST_DATABASE_URL`) PostgreSQL as the service role.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod served;
mod support;

use std::time::Duration;

use agent_secret_control_plane::service::auth::{authenticate, expect_sidecar};
use agent_secret_control_plane::service::{watch, RequestContext};
use agent_secret_core::api::WatchEvent;
use agent_secret_core::envelope::{open, Envelope, SecretAad};
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use served::{code, Served, Tenant};

/// Reads server-sent events from `res` until one named `name` arrives; returns its data.
async fn wait_for_event(res: &mut reqwest::Response, name: &str, within: Duration) -> String {
    let deadline = tokio::time::Instant::now() + within;
    let mut buffer = String::new();
    loop {
        if let Some(at) = buffer.find(&format!("event: {name}\n")) {
            let rest = &buffer[at..];
            if let Some(end) = rest.find("\n\n") {
                let block = &rest[..end];
                let data = block
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .unwrap_or_default();
                return data.to_owned();
            }
        }
        let chunk = tokio::time::timeout_at(deadline, res.chunk())
            .await
            .unwrap_or_else(|_| panic!("no `{name}` event in time; the stream said: {buffer}"))
            .unwrap()
            .expect("the watch stream stays open");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
    }
}

async fn open_watch(cp: &Served, t: &Tenant) -> reqwest::Response {
    let mut res = cp
        .request(Method::GET, "/v1/sidecar/watch", &t.sidecar_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let first = res.chunk().await.unwrap().unwrap();
    assert!(first.starts_with(b": watching"), "{first:?}");
    res
}

#[tokio::test]
async fn a_listener_reconnect_sends_resync_to_every_watcher() {
    let Some(pg) = support::postgres_test_db().await else {
        return;
    };
    let cp = Served::builder().postgres(&pg).start().await;
    let a = Tenant::create(&cp, "a").await;
    let b = Tenant::create(&cp, "b").await;
    let mut watch_a = open_watch(&cp, &a).await;
    let mut watch_b = open_watch(&cp, &b).await;

    // Kill the replica's LISTEN backend, as a failover or a network cut would. LISTEN is set
    // up asynchronously: wait until the backend exists.
    let admin = pg.admin_pool().await;
    let kill = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                WHERE datname = $1 AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let killed: Vec<bool> = sqlx::query_scalar(kill)
            .bind(&pg.name)
            .fetch_all(&admin)
            .await
            .unwrap();
        if killed.iter().any(|k| *k) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no LISTEN backend appeared"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let data = wait_for_event(&mut watch_a, "resync", Duration::from_secs(30)).await;
    assert_eq!(
        serde_json::from_str::<WatchEvent>(&data).unwrap(),
        WatchEvent::Resync
    );
    // Every tenant's watchers hear it: the lost NOTIFYs could have been anyone's.
    wait_for_event(&mut watch_b, "resync", Duration::from_secs(30)).await;

    // The resync is raised only once LISTEN is back: events flow again right away.
    a.put(&cp, "after/reconnect", "v-after-reconnect-0123")
        .await;
    let data = wait_for_event(&mut watch_a, "secret_updated", Duration::from_secs(10)).await;
    assert!(data.contains(r#""path":"after/reconnect""#), "{data}");
}

#[tokio::test]
async fn a_resync_reaches_watchers_of_every_tenant_and_keeps_their_streams_open() {
    let cp = Served::builder().start().await;
    let a = Tenant::create(&cp, "a").await;
    let b = Tenant::create(&cp, "b").await;
    let ctx = RequestContext::default();
    let sidecar_a =
        expect_sidecar(authenticate(&cp.app, &a.sidecar_key, &ctx).await.unwrap()).unwrap();
    let sidecar_b =
        expect_sidecar(authenticate(&cp.app, &b.sidecar_key, &ctx).await.unwrap()).unwrap();
    let mut watch_a = Box::pin(watch::subscribe(&cp.app, sidecar_a));
    let mut watch_b = Box::pin(watch::subscribe(&cp.app, sidecar_b));
    cp.app.events.request_resync();
    for stream in [&mut watch_a, &mut watch_b] {
        let event = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap();
        assert_eq!(event, Some(WatchEvent::Resync));
    }
    // The stream goes on after a resync.
    a.put(&cp, "still/open", "v-still-open-0123456").await;
    let event = tokio::time::timeout(Duration::from_secs(10), watch_a.next())
        .await
        .unwrap();
    assert!(
        matches!(event, Some(WatchEvent::SecretUpdated { ref path, .. }) if path == "still/open"),
        "{event:?}"
    );
}

async fn revoking_an_agent_revokes_every_token_it_holds(cp: &Served) {
    let t = Tenant::create(cp, "acme").await;
    t.put(cp, "prod/api/key", "sk-agent-revocation-0123456789")
        .await;
    let (id_1, token_1) = t.token(cp, &["secrets:read:prod/**"]).await;
    let (id_2, token_2) = t.token(cp, &["secrets:read:prod/**"]).await;
    let (status, body) = t.resolve(cp, &token_1, &["prod/api/key"]).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let ctx = RequestContext::default();
    let sidecar =
        expect_sidecar(authenticate(&cp.app, &t.sidecar_key, &ctx).await.unwrap()).unwrap();
    let mut events = Box::pin(watch::subscribe(&cp.app, sidecar));

    let revoked = cp
        .ok(
            Method::POST,
            &format!("/v1/agents/{}/revoke", t.agent_id),
            &t.admin,
            None,
        )
        .await;
    assert_eq!(revoked["id"], json!(t.agent_id));
    assert_eq!(revoked["tokens_revoked"], json!(2));
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    let info = cp
        .ok(
            Method::GET,
            &format!("/v1/agents/{}", t.agent_id),
            &t.admin,
            None,
        )
        .await;
    assert_eq!(info["revoked_at"], revoked["revoked_at"], "{info}");

    // In the store, not only in caches: resolve refuses both tokens from now on.
    for token in [&token_1, &token_2] {
        let (status, body) = t.resolve(cp, token, &["prod/api/key"]).await;
        assert!(!status.is_success(), "{status} {body}");
        assert_eq!(code(&body), "token_revoked", "{body}");
    }
    for id in [&id_1, &id_2] {
        let info = cp
            .ok(Method::GET, &format!("/v1/tokens/{id}"), &t.admin, None)
            .await;
        assert_eq!(info["status"], json!("revoked"), "{info}");
    }
    // Sidecars hear it at once.
    let event = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .unwrap();
    assert_eq!(
        event,
        Some(WatchEvent::AgentRevoked {
            agent_id: t.agent_id.clone()
        })
    );
    // The agent key is dead: no new token, and it cannot be brought back by a rotation.
    let (status, body) = cp
        .call(
            Method::POST,
            "/v1/tokens",
            &t.agent_key,
            Some(json!({"scopes": ["secrets:read:prod/**"], "ttl_seconds": 60})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    for action in ["rotate-key", "revoke"] {
        let (status, body) = cp
            .call(
                Method::POST,
                &format!("/v1/agents/{}/{action}", t.agent_id),
                &t.admin,
                None,
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{action}: {body}");
        assert_eq!(code(&body), "conflict");
    }
    let (status, body) = cp
        .call(
            Method::POST,
            &format!("/v1/agents/{}/revoke", uuid::Uuid::now_v7()),
            &t.admin,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // Audited: the agent, and each token by id, in the same chain.
    let audit = t.audit_types(cp).await;
    assert_eq!(
        audit.iter().filter(|(ty, _)| ty == "agent.revoked").count(),
        1,
        "{audit:?}"
    );
    for id in [&id_1, &id_2] {
        assert!(
            audit.iter().any(|(ty, reason)| ty == "token.revoked"
                && reason.as_deref().is_some_and(|r| r.contains(id.as_str()))),
            "no token.revoked for {id}: {audit:?}"
        );
    }
    let verify = cp.ok(Method::GET, "/v1/audit/verify", &t.admin, None).await;
    assert_eq!(verify["valid"], json!(true), "{verify}");
}

#[tokio::test]
async fn revoking_an_agent_revokes_every_token_it_holds_sqlite() {
    let cp = Served::builder().start().await;
    revoking_an_agent_revokes_every_token_it_holds(&cp).await;
}

#[tokio::test]
async fn revoking_an_agent_revokes_every_token_it_holds_postgres() {
    let Some(pg) = support::postgres_test_db().await else {
        return;
    };
    let cp = Served::builder().postgres(&pg).start().await;
    revoking_an_agent_revokes_every_token_it_holds(&cp).await;
}

/// Opens the envelope a resolve returned for `path`, as a sidecar would.
async fn resolved_value(cp: &Served, tenant_id: &str, secret: &Value) -> String {
    let envelope: Envelope = serde_json::from_value(secret["envelope"].clone()).unwrap();
    let aad = SecretAad {
        tenant: tenant_id.parse().unwrap(),
        path: secret["path"].as_str().unwrap(),
        version: secret["version"].as_i64().unwrap(),
    };
    let value = open(cp.app.kms.as_ref(), &aad, &envelope).await.unwrap();
    String::from_utf8(value.expose().to_vec()).unwrap()
}

async fn a_recreated_secret_never_reuses_a_version(cp: &Served) {
    let t = Tenant::create(cp, "acme").await;
    let other = Tenant::create(cp, "other").await;
    let path = "prod/api/key";
    assert_eq!(t.put(cp, path, "sk-first-life-v1-0123456789").await, 1);
    assert_eq!(t.put(cp, path, "sk-first-life-v2-0123456789").await, 2);
    let (_, token) = t.token(cp, &["secrets:read:prod/**"]).await;
    let (_, body) = t.resolve(cp, &token, &[path]).await;
    let tenant_id = body["grant"]["tenant_id"].as_str().unwrap().to_owned();
    assert_eq!(body["secrets"][0]["version"], json!(2), "{body}");

    cp.ok(
        Method::DELETE,
        &format!("/v1/secrets/{path}"),
        &t.admin,
        None,
    )
    .await;
    let (status, _) = cp
        .call(Method::GET, &format!("/v1/secrets/{path}"), &t.admin, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The second life continues after the first: (path, 1) and (path, 2) stay the old values'.
    assert_eq!(t.put(cp, path, "sk-second-life-0123456789").await, 3);
    let meta = cp
        .ok(Method::GET, &format!("/v1/secrets/{path}"), &t.admin, None)
        .await;
    assert_eq!(meta["version"], json!(3), "{meta}");
    let (status, body) = t.resolve(cp, &token, &[path]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let secret = &body["secrets"][0];
    assert_eq!(secret["version"], json!(3), "{body}");
    assert_eq!(
        resolved_value(cp, &tenant_id, secret).await,
        "sk-second-life-0123456789"
    );

    // Again, and tombstones are per tenant: another tenant's same path starts at 1.
    cp.ok(
        Method::DELETE,
        &format!("/v1/secrets/{path}"),
        &t.admin,
        None,
    )
    .await;
    assert_eq!(t.put(cp, path, "sk-third-life-0123456789").await, 4);
    assert_eq!(other.put(cp, path, "sk-other-tenant-0123456789").await, 1);
}

#[tokio::test]
async fn a_recreated_secret_never_reuses_a_version_sqlite() {
    let cp = Served::builder().start().await;
    a_recreated_secret_never_reuses_a_version(&cp).await;
}

#[tokio::test]
async fn a_recreated_secret_never_reuses_a_version_postgres() {
    let Some(pg) = support::postgres_test_db().await else {
        return;
    };
    let cp = Served::builder().postgres(&pg).start().await;
    a_recreated_secret_never_reuses_a_version(&cp).await;
}
