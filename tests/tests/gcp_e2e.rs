//! The whole system on Cloud KMS: the real control plane and the real sidecar, each with its
//! own `google-cloud-kms-v1` client, against the suite's fake Cloud KMS server; agents' HTTP
//! goes through real sockets to a real upstream.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use agent_secret_control_plane::audit::Actor;
use agent_secret_control_plane::service::kms;
use agent_secret_control_plane::service::Policy;
use agent_secret_core::ids::TenantId;
use agent_secret_testkit::fake_gcp_kms::{FakeGcpKms, Fault};
use agent_secret_testkit::sidecar::{local_host, start_sidecar};
use agent_secret_testkit::{control_plane::Install, control_plane::Tenant, ControlPlane, Upstream};
use google_cloud_kms_v1::model::ProtectionLevel;
use reqwest::StatusCode;
use serde_json::{json, Value};

const VALUE: &str = "sk-gcp-wrapped-0123456789abcdef";

struct World {
    _dir: tempfile::TempDir,
    fake: FakeGcpKms,
    install: Install,
    cp: ControlPlane,
    tenant: Tenant,
    tenant_id: TenantId,
    upstream: Upstream,
}

impl World {
    async fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeGcpKms::start().await;
        let install = Install::new(dir.path(), None).await.with_fake_gcp(&fake);
        let cp =
            ControlPlane::serve(&install, "127.0.0.1:0".parse().unwrap(), Policy::default()).await;
        let tenant = Tenant::create(&cp, "acme").await;
        let tenant_id = cp.app.store.list_tenant_ids().await.unwrap()[0];
        let upstream = Upstream::http().await;
        tenant
            .put_secret(&cp, "prod/api/key", VALUE, &[&upstream.authority()])
            .await;
        World {
            _dir: dir,
            fake,
            install,
            cp,
            tenant,
            tenant_id,
            upstream,
        }
    }

    fn key_name(&self) -> String {
        format!(
            "projects/p/locations/l/keyRings/r/cryptoKeys/tenant-{}",
            self.tenant_id
        )
    }

    async fn sidecar(&self) -> agent_secret_proxy::RunningSidecar {
        let host = self.upstream.authority();
        start_sidecar(&self.install, &self.cp, &self.tenant.sidecar_key, |c| {
            c.hosts.push(local_host(&host))
        })
        .await
    }

    async fn call(&self, sidecar: &agent_secret_proxy::RunningSidecar) -> (StatusCode, String) {
        let (_, token) = self
            .tenant
            .token(&self.cp, &["secrets:read:prod/api/*"], json!({}))
            .await;
        let proxy = reqwest::Proxy::http(format!("http://{}", sidecar.proxy_addr()))
            .unwrap()
            .basic_auth("agent", &token);
        let client = reqwest::Client::builder().proxy(proxy).build().unwrap();
        let res = client
            .get(format!("http://{}/echo", self.upstream.authority()))
            .header("authorization", "Bearer {{secret:prod/api/key}}")
            .send()
            .await
            .unwrap();
        (res.status(), res.text().await.unwrap())
    }
}

#[tokio::test]
async fn secrets_are_wrapped_by_the_tenants_cloud_kms_key_and_injected_by_the_sidecar() {
    let w = World::new().await;
    let key = w
        .fake
        .crypto_key(&w.key_name())
        .expect("the tenant's CryptoKey exists");
    assert_eq!(key.protection_level, ProtectionLevel::Hsm);
    assert_eq!(key.rotation_period, Some(Duration::from_secs(90 * 86_400)));
    assert_eq!(key.primary_version.as_deref(), Some("1"));
    let encrypts = w.fake.calls("encrypt");
    assert!(
        encrypts >= 1,
        "the control plane wrapped the DEK in Cloud KMS"
    );
    assert_eq!(
        w.fake.calls("decrypt"),
        0,
        "the control plane never decrypts"
    );

    let sidecar = w.sidecar().await;
    let (status, body) = w.call(&sidecar).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        w.upstream.last().header("authorization"),
        Some(format!("Bearer {VALUE}").as_str())
    );
    assert!(!body.contains(VALUE));
    assert_eq!(
        w.fake.calls("decrypt"),
        1,
        "the sidecar unwrapped the DEK once"
    );
    assert_eq!(
        w.fake.calls("encrypt"),
        encrypts,
        "the sidecar never encrypts"
    );

    // Warm: the value is cached, Cloud KMS is not called again.
    let (status, _) = w.call(&sidecar).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(w.fake.calls("decrypt"), 1);
    sidecar.stop().await;
}

#[tokio::test]
async fn an_unavailable_kms_is_a_503_at_the_sidecar_and_nothing_wrong_is_cached() {
    let w = World::new().await;
    let sidecar = w.sidecar().await;
    let before = w.upstream.received().len();
    w.fake.set_fault(Fault::Unavailable { times: 1_000 });
    let (status, body) = w.call(&sidecar).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "kms_unavailable", "{body}");
    assert!(w.fake.calls("decrypt") >= 3, "retried before giving up");
    assert_eq!(w.upstream.received().len(), before, "nothing was forwarded");

    // Cloud KMS is back: the very next request decrypts and succeeds; no failure was cached.
    w.fake.clear_faults();
    let (status, body) = w.call(&sidecar).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        w.upstream.last().header("authorization"),
        Some(format!("Bearer {VALUE}").as_str())
    );
    sidecar.stop().await;
}

#[tokio::test]
async fn an_automatic_rotation_is_observed_announced_and_rewrapped() {
    let w = World::new().await;
    let sidecar = w.sidecar().await;
    let (status, _) = w.call(&sidecar).await;
    assert_eq!(status, StatusCode::OK);

    // Cloud KMS rotates the key on its schedule; the control plane's next check notices.
    assert_eq!(w.fake.rotate(&w.key_name()), "2");
    agent_secret_control_plane::rotation::check_all(
        &w.cp.app,
        Duration::from_secs(90 * 86_400),
        &mut HashMap::new(),
    )
    .await;
    let rotated = w.tenant.audit(&w.cp, "type=kms.rotated").await;
    assert_eq!(rotated.len(), 1, "{rotated:?}");
    agent_secret_testkit::eventually(
        "the sidecar hears kek_rotated",
        Duration::from_secs(5),
        || async {
            (sidecar
                .metrics()
                .watch_events
                .with_label_values(&["kek_rotated"])
                .get()
                == 1)
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        w.cp.app.metrics.deks_not_on_primary.get(),
        1,
        "the gauge counts the DEK still under version 1"
    );

    // Cloud KMS may still encrypt under version 1 for a while: rewrap must not be fooled.
    w.fake.set_fault(Fault::StalePrimaryForEncrypt);
    let report = kms::rewrap(&w.cp.app, w.tenant_id, 100, &Actor::system(), &|_| {})
        .await
        .unwrap();
    assert_eq!((report.rewrapped, report.failed), (1, 0));
    let status = kms::status(&w.cp.app, w.tenant_id).await.unwrap();
    assert_eq!(status.primary_version, "2");
    assert_eq!(status.deks_not_on_primary, 0, "{status:?}");
    kms::retire_version(
        &w.cp.app,
        w.tenant_id,
        "1",
        Duration::ZERO,
        &Actor::system(),
    )
    .await
    .unwrap();

    // A fresh sidecar (cold cache) decrypts the re-wrapped DEK under version 2.
    sidecar.stop().await;
    let fresh = w.sidecar().await;
    let (status, body) = w.call(&fresh).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        w.upstream.last().header("authorization"),
        Some(format!("Bearer {VALUE}").as_str())
    );
    fresh.stop().await;
}
