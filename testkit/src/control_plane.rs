//! The real control plane, served over TLS 1.3 on 127.0.0.1, with the HTTP client an operator
//! or agent would use against it.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use agent_secret_control_plane::bootstrap::event_hub;
use agent_secret_control_plane::db::Db;
use agent_secret_control_plane::service::sessions::SessionSettings;
use agent_secret_control_plane::service::{tenants, App, Policy};
use agent_secret_control_plane::store::sql::SqlStore;
use agent_secret_control_plane::{server, tls};
use agent_secret_core::credential::Pepper;
use agent_secret_core::kms::gcp::{GcpCredentials, GcpKms, GcpKmsConfig};
use agent_secret_core::kms::local::{LocalKms, MasterKey};
use agent_secret_core::kms::Kms;
use agent_secret_proxy::config::KmsConfig;
use reqwest::Method;

use crate::api::Api;
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// The ceiling of the test agent: every action on every path.
pub const EVERYTHING: [&str; 4] = [
    "secrets:read:**",
    "secrets:write:**",
    "secrets:delete:**",
    "secrets:list:**",
];

/// Files a control plane and its sidecars share on one host.
pub struct Install {
    pub dir: PathBuf,
    pub keyring: PathBuf,
    pub master_key_file: PathBuf,
    pub tls_dir: PathBuf,
    pub pepper: Arc<Pepper>,
    pub db_url: String,
    /// When set, the control plane and sidecars use Cloud KMS (the suite's fake) instead of
    /// the local keyring.
    pub gcp: Option<GcpKmsConfig>,
}

impl Install {
    /// A fresh install in `dir` on `db_url` (SQLite file when `None`).
    pub async fn new(dir: &Path, db_url: Option<String>) -> Install {
        crate::init_crypto();
        let master_key_file = dir.join("master.key");
        let master = MasterKey::generate();
        std::fs::write(&master_key_file, master.to_base64().expose()).unwrap();
        // Secret files must be private to their owner (`agent_secret_core::secret_file`).
        std::fs::set_permissions(&master_key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let keyring = dir.join("keyring.json");
        LocalKms::open_or_create(&keyring, master).unwrap();
        let db_url =
            db_url.unwrap_or_else(|| format!("sqlite://{}", dir.join("store.db").display()));
        let db = Db::connect(&db_url).await.unwrap();
        db.migrate().await.unwrap();
        Install {
            dir: dir.to_owned(),
            keyring,
            master_key_file,
            tls_dir: dir.join("tls"),
            pepper: Arc::new(Pepper::generate()),
            db_url,
            gcp: None,
        }
    }

    /// This install with Cloud KMS at `fake` (key ring `p/l/r`, anonymous credentials, quick
    /// retries) instead of the local keyring.
    pub fn with_fake_gcp(mut self, fake: &crate::fake_gcp_kms::FakeGcpKms) -> Install {
        fake.add_key_ring("p", "l", "r");
        let mut gcp = GcpKmsConfig::new("p", "l", "r");
        gcp.endpoint = Some(fake.endpoint());
        gcp.credentials = GcpCredentials::Anonymous;
        gcp.initial_backoff = std::time::Duration::from_millis(5);
        gcp.max_backoff = std::time::Duration::from_millis(20);
        self.gcp = Some(gcp);
        self
    }

    pub async fn kms(&self) -> Arc<dyn Kms> {
        if let Some(gcp) = &self.gcp {
            return Arc::new(GcpKms::connect(gcp.clone()).await.unwrap());
        }
        let master =
            MasterKey::from_base64(&std::fs::read_to_string(&self.master_key_file).unwrap())
                .unwrap();
        Arc::new(LocalKms::open(&self.keyring, master).unwrap())
    }

    /// The sidecar's `[kms]` section for this install.
    pub fn sidecar_kms(&self) -> KmsConfig {
        match &self.gcp {
            Some(gcp) => {
                let mut kms = KmsConfig::cloud_kms(&gcp.project, &gcp.location, &gcp.key_ring);
                kms.endpoint = gcp.endpoint.clone();
                kms.credentials_file = Some("anonymous".into());
                kms.timeout_ms = 2000;
                kms.max_attempts = 3;
                kms
            }
            None => KmsConfig::local(self.keyring.clone(), self.master_key_file.clone()),
        }
    }

    pub async fn app(&self, policy: Policy) -> Arc<App> {
        self.app_with(policy, test_sessions()).await
    }

    /// [`Install::app`] with these human-session settings.
    pub async fn app_with(&self, policy: Policy, sessions: SessionSettings) -> Arc<App> {
        let db = Db::connect(&self.db_url).await.unwrap();
        let events = event_hub(&db);
        Arc::new(
            App::new(
                Arc::new(SqlStore::new(db)),
                self.kms().await,
                self.pepper.clone(),
                policy,
            )
            .with_events(events)
            .with_limits(harness_limits())
            .with_sessions(sessions),
        )
    }
}

/// The default session settings at bcrypt's minimum cost: test builds run it unoptimised.
pub fn test_sessions() -> SessionSettings {
    SessionSettings {
        bcrypt_cost: 4,
        ..Default::default()
    }
}

/// The default limits, except token issuance: the benchmark seeds 1,000 tokens with one agent
/// key, past the default per-agent burst. The limits themselves are tested in
/// `control-plane/tests/rate_limits.rs`.
fn harness_limits() -> agent_secret_control_plane::limits::Limits {
    use agent_secret_control_plane::config::{RateLimit, RateLimitsConfig, ServerConfig};
    let seeding = RateLimit {
        per_second: 100_000,
        burst: 100_000,
    };
    agent_secret_control_plane::limits::Limits::new(
        &ServerConfig::default(),
        &RateLimitsConfig {
            tokens_per_agent: seeding,
            tokens_per_ip: seeding,
            ..RateLimitsConfig::default()
        },
    )
}

/// One running control-plane replica.
pub struct ControlPlane {
    pub app: Arc<App>,
    pub addr: SocketAddr,
    pub url: String,
    pub ca_file: PathBuf,
    /// Calls to its API ([`Api::call`], [`Api::ok`]...) go through `Deref`.
    pub api: Api,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl ControlPlane {
    /// Serves `install` on `addr` (`127.0.0.1:0` for a fresh port).
    pub async fn serve(install: &Install, addr: SocketAddr, policy: Policy) -> ControlPlane {
        Self::serve_with(install, addr, policy, test_sessions()).await
    }

    /// [`ControlPlane::serve`] with these human-session settings.
    pub async fn serve_with(
        install: &Install,
        addr: SocketAddr,
        policy: Policy,
        sessions: SessionSettings,
    ) -> ControlPlane {
        let app = install.app_with(policy, sessions).await;
        let minted = tls::self_signed(&install.tls_dir).unwrap();
        let listener = bind_retrying(addr).await;
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server::serve(
            listener,
            Arc::new(minted.config),
            app.clone(),
            async {
                let _ = stopped.await;
            },
        ));
        let ca =
            reqwest::Certificate::from_pem(&std::fs::read(&minted.cert_path).unwrap()).unwrap();
        let client = reqwest::Client::builder()
            .add_root_certificate(ca)
            .no_proxy()
            .build()
            .unwrap();
        ControlPlane {
            app,
            addr,
            url: format!("https://127.0.0.1:{}", addr.port()),
            ca_file: minted.cert_path,
            api: Api {
                client,
                base: format!("https://127.0.0.1:{}", addr.port()),
            },
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Its `/metrics` page (Prometheus text).
    pub async fn metrics_text(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Stops serving (an outage, as far as sidecars can tell).
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl std::ops::Deref for ControlPlane {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

/// A control plane a test forgot to stop, or one whose test panicked, stops serving here.
impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn bind_retrying(addr: SocketAddr) -> TcpListener {
    // Re-binding a port just released by a stopped replica can race with its last sockets.
    for _ in 0..100 {
        if let Ok(l) = TcpListener::bind(addr).await {
            return l;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("cannot bind {addr}")
}

/// A tenant with an admin, a sidecar key and an agent: what an operator sets up first.
pub struct Tenant {
    /// The tenant's id (what `POST /v1/session/login` takes as `tenant`, like its name).
    pub id: String,
    pub admin: String,
    pub sidecar_key: String,
    pub agent_id: String,
    pub agent_key: String,
}

impl Tenant {
    pub async fn create(cp: &ControlPlane, name: &str) -> Tenant {
        let created = tenants::create_tenant(&cp.app, name).await.unwrap();
        let admin = created.admin_token.expose().to_owned();
        let sidecar = cp
            .ok(
                Method::POST,
                "/v1/sidecars",
                &admin,
                Some(json!({"name": "host-1"})),
            )
            .await;
        let agent = cp
            .ok(
                Method::POST,
                "/v1/agents",
                &admin,
                // Every action everywhere: ceilings have tests of their own.
                Some(json!({"name": "bot", "allow": EVERYTHING})),
            )
            .await;
        Tenant {
            id: created.tenant_id.to_string(),
            admin,
            sidecar_key: sidecar["sidecar_key"].as_str().unwrap().to_owned(),
            agent_id: agent["id"].as_str().unwrap().to_owned(),
            agent_key: agent["agent_key"].as_str().unwrap().to_owned(),
        }
    }

    pub async fn put_secret(&self, cp: &ControlPlane, path: &str, value: &str, hosts: &[&str]) {
        cp.ok(
            Method::PUT,
            &format!("/v1/secrets/{path}"),
            &self.admin,
            Some(json!({"value": value, "allowed_hosts": hosts})),
        )
        .await;
    }

    /// `(id, token)` for `scopes` with extra request fields merged in.
    pub async fn token(
        &self,
        cp: &ControlPlane,
        scopes: &[&str],
        extra: Value,
    ) -> (String, String) {
        let mut body = json!({"scopes": scopes, "ttl_seconds": 600});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let t = cp
            .ok(Method::POST, "/v1/tokens", &self.agent_key, Some(body))
            .await;
        (
            t["id"].as_str().unwrap().to_owned(),
            t["token"].as_str().unwrap().to_owned(),
        )
    }

    pub async fn revoke(&self, cp: &ControlPlane, token_id: &str) {
        cp.ok(
            Method::POST,
            &format!("/v1/tokens/{token_id}/revoke"),
            &self.admin,
            Some(json!({})),
        )
        .await;
    }

    pub async fn audit(&self, cp: &ControlPlane, query: &str) -> Vec<Value> {
        let body = cp
            .ok(
                Method::GET,
                &format!("/v1/audit?{query}"),
                &self.admin,
                None,
            )
            .await;
        body["events"].as_array().unwrap().clone()
    }
}
