//! Two control-plane replicas on one PostgreSQL database: a revocation sent to one replica
//! reaches a sidecar watching the other, and the warm sidecar refuses the token within 1 s.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use agent_secret_control_plane::service::Policy;
use agent_secret_testkit::control_plane::{ControlPlane, Install, Tenant};
use agent_secret_testkit::pg::postgres_url;
use agent_secret_testkit::sidecar::{local_host, start_sidecar};
use agent_secret_testkit::{eventually, Upstream};
use reqwest::StatusCode;
use serde_json::json;
use sqlx::Connection;

/// A fresh database, migrated; the replicas connect as the superuser here (RLS itself is
/// proven in the control-plane suites as the service role).
async fn fresh_database(admin_url: &str) -> (String, String) {
    let name = format!("ass_e2e_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(admin_url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let base = admin_url.rsplit_once('/').map(|(b, _)| b).unwrap();
    (name.clone(), format!("{base}/{name}"))
}

async fn drop_database(admin_url: &str, name: &str) {
    if let Ok(mut conn) = sqlx::PgConnection::connect(admin_url).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await;
    }
}

#[tokio::test]
async fn a_revocation_on_one_replica_reaches_a_sidecar_watching_another() {
    let Some(admin_url) = postgres_url() else {
        return;
    };
    let (name, url) = fresh_database(&admin_url).await;
    let dir = tempfile::tempdir().unwrap();
    let install = Install::new(dir.path(), Some(url)).await;
    let replica_a =
        ControlPlane::serve(&install, "127.0.0.1:0".parse().unwrap(), Policy::default()).await;
    let replica_b =
        ControlPlane::serve(&install, "127.0.0.1:0".parse().unwrap(), Policy::default()).await;
    let tenant = Tenant::create(&replica_a, "acme").await;
    let upstream = Upstream::http().await;
    tenant
        .put_secret(
            &replica_a,
            "prod/api/key",
            "sk-replicated-0123456789",
            &[&upstream.authority()],
        )
        .await;
    let host = upstream.authority();
    // The sidecar talks only to replica B.
    let sidecar = start_sidecar(&install, &replica_b, &tenant.sidecar_key, |c| {
        c.hosts.push(local_host(&host))
    })
    .await;
    let (id, token) = tenant
        .token(&replica_a, &["secrets:read:prod/**"], json!({}))
        .await;
    let client = reqwest::Client::builder()
        .proxy(
            reqwest::Proxy::http(format!("http://{}", sidecar.proxy_addr()))
                .unwrap()
                .basic_auth("a", &token),
        )
        .build()
        .unwrap();
    let url = format!("http://{}/echo", upstream.authority());
    let send = || {
        client
            .get(&url)
            .header("authorization", "Bearer {{secret:prod/api/key}}")
            .send()
    };
    assert_eq!(
        send().await.unwrap().status(),
        StatusCode::OK,
        "warm the caches"
    );
    assert_eq!(send().await.unwrap().status(), StatusCode::OK);

    tenant.revoke(&replica_a, &id).await;
    eventually(
        "replica B's sidecar refuses the token revoked on replica A",
        Duration::from_secs(1),
        || async {
            let res = send().await.unwrap();
            (res.status() == StatusCode::PROXY_AUTHENTICATION_REQUIRED).then_some(())
        },
    )
    .await;
    sidecar.stop().await;
    drop(replica_a);
    drop(replica_b);
    drop_database(&admin_url, &name).await;
}

/// Both replicas sweep every 100 ms: each token that runs out gets exactly one `token.expired`
/// (in its own name, with its expiry in the reason), a token still live none.
#[tokio::test]
async fn two_replicas_record_each_token_expiry_exactly_once() {
    let Some(admin_url) = postgres_url() else {
        return;
    };
    let (name, url) = fresh_database(&admin_url).await;
    let dir = tempfile::tempdir().unwrap();
    let install = Install::new(dir.path(), Some(url)).await;
    let policy = || Policy {
        token_expiry_sweep: Duration::from_millis(100),
        ..Policy::default()
    };
    let mut replica_a =
        ControlPlane::serve(&install, "127.0.0.1:0".parse().unwrap(), policy()).await;
    let mut replica_b =
        ControlPlane::serve(&install, "127.0.0.1:0".parse().unwrap(), policy()).await;
    let tenant = Tenant::create(&replica_a, "acme").await;
    let mut short = Vec::new();
    for i in 0..12 {
        let replica = if i % 2 == 0 { &replica_a } else { &replica_b };
        let (id, _) = tenant
            .token(
                replica,
                &["secrets:read:prod/**"],
                json!({"ttl_seconds": 1}),
            )
            .await;
        short.push(id);
    }
    let (live, _) = tenant
        .token(&replica_a, &["secrets:read:prod/**"], json!({}))
        .await;
    let expired = eventually(
        "every short token's expiry is recorded",
        Duration::from_secs(30),
        || async {
            let events = tenant.audit(&replica_b, "type=token.expired").await;
            (events.len() >= short.len()).then_some(events)
        },
    )
    .await;
    // A few more sweeps of both replicas: nothing is recorded twice.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let expired_now = tenant.audit(&replica_a, "type=token.expired").await;
    assert_eq!(expired_now.len(), expired.len(), "{expired_now:?}");
    let mut actors: Vec<String> = expired_now
        .iter()
        .map(|e| e["actor"].as_str().unwrap().to_owned())
        .collect();
    actors.sort();
    let mut want: Vec<String> = short.iter().map(|id| format!("token:{id}")).collect();
    want.sort();
    assert_eq!(actors, want);
    assert!(expired_now[0]["reason"]
        .as_str()
        .unwrap()
        .contains("active until"));
    assert!(!actors.contains(&format!("token:{live}")));
    let verify = replica_a
        .ok(
            reqwest::Method::GET,
            "/v1/audit/verify",
            &tenant.admin,
            None,
        )
        .await;
    assert_eq!(verify["valid"], true, "{verify}");
    replica_a.stop().await;
    replica_b.stop().await;
    drop_database(&admin_url, &name).await;
}

/// Both replicas judge every event; the `.alerts` cursor lets only one act on each hit. Many
/// exfiltration attempts by many tokens, reported to either replica: one alert per token, one
/// revocation each.
#[tokio::test]
async fn two_replicas_raise_each_alert_once() {
    use agent_secret_control_plane::service::alerts::AlertSettings;
    let Some(admin_url) = postgres_url() else {
        return;
    };
    let (name, url) = fresh_database(&admin_url).await;
    let dir = tempfile::tempdir().unwrap();
    let install = Install::new(dir.path(), Some(url)).await;
    let policy = || {
        let mut alerts = AlertSettings::on(Default::default());
        alerts.poll_interval = Duration::from_millis(20);
        Policy {
            alerts,
            ..Policy::default()
        }
    };
    let replica_a = ControlPlane::serve(&install, "127.0.0.1:0".parse().unwrap(), policy()).await;
    let replica_b = ControlPlane::serve(&install, "127.0.0.1:0".parse().unwrap(), policy()).await;
    let tenant = Tenant::create(&replica_a, "acme").await;
    let mut tokens = Vec::new();
    for _ in 0..8 {
        let (id, _) = tenant
            .token(&replica_a, &["secrets:read:prod/**"], json!({}))
            .await;
        tokens.push(id);
    }
    // The sidecar's reports of placeholders sent toward an unbound host, to both replicas.
    for (i, id) in tokens.iter().enumerate() {
        let replica = if i % 2 == 0 { &replica_a } else { &replica_b };
        replica
            .ok(
                reqwest::Method::POST,
                "/v1/sidecar/audit",
                &tenant.sidecar_key,
                Some(json!({"events": [{
                    "token_id": id, "client_ip": "10.0.0.7", "user_agent": null,
                    "path": "prod/api/key", "destination_host": "evil.example",
                    "success": false, "reason": "destination_not_allowed",
                    "occurred_at": chrono::Utc::now(),
                }]})),
            )
            .await;
    }
    eventually(
        "every token is revoked",
        Duration::from_secs(30),
        || async {
            let revoked = tenant.audit(&replica_b, "type=token.revoked").await;
            revoked.len() >= tokens.len()
        },
    )
    .await;
    // Both replicas have looked well past the last report.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let alerts: Vec<_> = tenant
        .audit(&replica_a, "type=alert.raised")
        .await
        .into_iter()
        .filter(|e| e["reason"].as_str().unwrap().starts_with("exfiltration:"))
        .collect();
    assert_eq!(alerts.len(), tokens.len(), "{alerts:#?}");
    let revoked = tenant.audit(&replica_a, "type=token.revoked").await;
    assert_eq!(revoked.len(), tokens.len(), "{revoked:#?}");
    for id in &tokens {
        let actor = format!("token:{id}");
        assert_eq!(
            alerts
                .iter()
                .filter(|a| a["actor"] == actor.as_str())
                .count(),
            1
        );
    }
    drop_database(&admin_url, &name).await;
}
