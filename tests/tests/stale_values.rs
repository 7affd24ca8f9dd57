//! Issue 10, item 7, end to end (the real control plane, the real sidecar and a real upstream
//! on 127.0.0.1):
//! * a sidecar that missed a secret's deletion and still caches the old value never injects it
//!   for a secret re-created at the same path;
//! * a revocation whose NOTIFY was lost (the control plane's LISTEN connection was cut) still
//!   reaches a warm sidecar: the control plane sends `resync` once it listens again, and the
//!   sidecar flushes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use agent_secret_control_plane::service::Policy;
use agent_secret_proxy::RunningSidecar;
use std::time::Duration;

use agent_secret_testkit::control_plane::{ControlPlane, Install, Tenant};
use agent_secret_testkit::pg::postgres_url;
use agent_secret_testkit::sidecar::{local_host, start_sidecar};
use agent_secret_testkit::{eventually, Upstream};
use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::Connection;

/// A sidecar that hears no watch events, as one whose stream is down would be.
async fn unwatched_sidecar(
    install: &Install,
    cp: &ControlPlane,
    sidecar_key: &str,
    upstream: &Upstream,
) -> RunningSidecar {
    start_sidecar(install, cp, sidecar_key, |c| {
        c.control_plane.watch = false;
        c.hosts.push(local_host(&upstream.authority()));
    })
    .await
}

#[tokio::test]
async fn a_recreated_secret_is_never_served_from_the_old_cached_value() {
    let dir = tempfile::tempdir().unwrap();
    let install = Install::new(dir.path(), None).await;
    let cp = ControlPlane::serve(&install, "127.0.0.1:0".parse().unwrap(), Policy::default()).await;
    let tenant = Tenant::create(&cp, "acme").await;
    let upstream = Upstream::http().await;
    let host = upstream.authority();
    let path = "prod/api/key";
    tenant
        .put_secret(&cp, path, "sk-first-life-0123456789", &[&host])
        .await;
    let sidecar = unwatched_sidecar(&install, &cp, &tenant.sidecar_key, &upstream).await;
    let send = |token: String| {
        let client = reqwest::Client::builder()
            .proxy(
                reqwest::Proxy::http(format!("http://{}", sidecar.proxy_addr()))
                    .unwrap()
                    .basic_auth("agent", &token),
            )
            .build()
            .unwrap();
        let url = format!("http://{host}/echo");
        async move {
            client
                .get(url)
                .header("authorization", format!("Bearer {{{{secret:{path}}}}}"))
                .send()
                .await
                .unwrap()
                .status()
        }
    };

    // The sidecar caches the first value under (path, its version).
    let (_, first) = tenant
        .token(&cp, &["secrets:read:prod/**"], json!({}))
        .await;
    assert_eq!(send(first).await, StatusCode::OK);
    assert_eq!(
        upstream.last().header("authorization"),
        Some("Bearer sk-first-life-0123456789")
    );

    // Deleted and created again; the sidecar hears nothing of it.
    cp.ok(
        Method::DELETE,
        &format!("/v1/secrets/{path}"),
        &tenant.admin,
        None,
    )
    .await;
    tenant
        .put_secret(&cp, path, "sk-second-life-0123456789", &[&host])
        .await;

    // A new token's grant is not cached, so the sidecar resolves the path: the control plane
    // answers with a version the old value never had, and the sidecar opens the new envelope
    // instead of reusing its cached value.
    let (_, second) = tenant
        .token(&cp, &["secrets:read:prod/**"], json!({}))
        .await;
    assert_eq!(send(second).await, StatusCode::OK);
    assert_eq!(
        upstream.last().header("authorization"),
        Some("Bearer sk-second-life-0123456789"),
        "the old value must never be injected for the new secret"
    );
    sidecar.stop().await;
}

#[tokio::test]
async fn a_revocation_whose_notify_was_lost_reaches_a_warm_sidecar_through_resync() {
    let Some(admin_url) = postgres_url() else {
        return;
    };
    let name = format!("ass_e2e_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let base = admin_url.rsplit_once('/').map(|(b, _)| b).unwrap();
    let url = format!("{base}/{name}");

    let dir = tempfile::tempdir().unwrap();
    let install = Install::new(dir.path(), Some(url.clone())).await;
    let cp = ControlPlane::serve(&install, "127.0.0.1:0".parse().unwrap(), Policy::default()).await;
    let tenant = Tenant::create(&cp, "acme").await;
    let upstream = Upstream::http().await;
    let host = upstream.authority();
    tenant
        .put_secret(&cp, "prod/api/key", "sk-resync-0123456789", &[&host])
        .await;
    let sidecar = start_sidecar(&install, &cp, &tenant.sidecar_key, |c| {
        c.hosts.push(local_host(&host))
    })
    .await;
    let (id, token) = tenant
        .token(&cp, &["secrets:read:prod/**"], json!({}))
        .await;
    let client = reqwest::Client::builder()
        .proxy(
            reqwest::Proxy::http(format!("http://{}", sidecar.proxy_addr()))
                .unwrap()
                .basic_auth("agent", &token),
        )
        .build()
        .unwrap();
    let send = || async {
        client
            .get(format!("http://{host}/echo"))
            .header("authorization", "Bearer {{secret:prod/api/key}}")
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(send().await, StatusCode::OK, "warm the caches");

    // The token is revoked in the store but its NOTIFY never arrives (as when it is sent while
    // the listener is reconnecting): the warm sidecar still serves it from cache.
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    let admin_pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query("UPDATE tokens SET status = 'revoked', revoked_at = 1 WHERE id = $1")
        .bind(&id)
        .execute(&mut db)
        .await
        .unwrap();
    assert_eq!(send().await, StatusCode::OK, "no event, no flush");

    // Cut the control plane's LISTEN connection (set up asynchronously: wait for it). The
    // grant cache holds the token for 30 s, longer than the deadline below.
    eventually(
        "the control plane's LISTEN connection is cut",
        Duration::from_secs(10),
        || async {
            let killed: Vec<bool> = sqlx::query_scalar(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = $1 AND query LIKE 'LISTEN%'",
            )
            .bind(&name)
            .fetch_all(&admin_pool)
            .await
            .unwrap();
            killed.iter().any(|k| *k).then_some(())
        },
    )
    .await;

    // Once it listens again it sends `resync`, the sidecar flushes and asks again: refused.
    eventually(
        "the sidecar refuses the token after the resync",
        Duration::from_secs(20),
        || async { (send().await == StatusCode::PROXY_AUTHENTICATION_REQUIRED).then_some(()) },
    )
    .await;
    assert!(
        sidecar
            .metrics()
            .watch_events
            .with_label_values(&["resync"])
            .get()
            >= 1
    );
    sidecar.stop().await;
    drop(cp);
    db.close().await.ok();
    admin_pool.close().await;
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await;
}
