//! A control plane served for real, in-process: the HTTPS server on 127.0.0.1:0 with a dev CA,
//! a local KMS keyring, over SQLite in a temp dir or a PostgreSQL test database (as the service
//! role), with the server and rate-limit settings a test chooses.
//!
//! Clients can connect from a chosen loopback address (127.0.0.0/8 is all local on Linux), so
//! per-address limits can be told apart in one process. [`Tenant`] sets a tenant up the way an
//! operator would and drives it as its admin, agent and sidecar.
//!
//! The database helpers come from `support`: a test file declares `mod support;` next to
//! `mod served;`.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agent_secret_control_plane::bootstrap::event_hub;
use agent_secret_control_plane::config::{RateLimitsConfig, ServerConfig};
use agent_secret_control_plane::db::Db;
use agent_secret_control_plane::limits::Limits;
use agent_secret_control_plane::service::{tenants, App, Policy};
use agent_secret_control_plane::store::sql::SqlStore;
use agent_secret_control_plane::{server, tls};
use agent_secret_core::credential::Pepper;
use agent_secret_core::kms::local::{LocalKms, MasterKey};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::net::{TcpSocket, TcpStream};

use agent_secret_testkit::api::Api;

use crate::support::{self, TestDb};

/// Where the served control plane keeps its data.
enum Backend {
    /// A fresh SQLite file in the server's temp dir.
    Sqlite,
    /// A PostgreSQL URL (a [`TestDb`]'s service role).
    Postgres(String),
}

/// Options of a [`Served`]; every one defaults to what production runs with.
pub struct ServedBuilder {
    server: ServerConfig,
    rate_limits: RateLimitsConfig,
    backend: Backend,
    tenant: Option<String>,
    injector: Option<agent_secret_control_plane::kubernetes::InjectorSettings>,
}

impl ServedBuilder {
    /// `[server]`: timeouts, header and connection caps.
    pub fn server(mut self, server: ServerConfig) -> Self {
        self.server = server;
        self
    }

    /// `[rate_limits]`.
    pub fn rate_limits(mut self, rate_limits: RateLimitsConfig) -> Self {
        self.rate_limits = rate_limits;
        self
    }

    /// Serves `db` connected as its service role, as production does (default: SQLite).
    pub fn postgres(mut self, db: &TestDb) -> Self {
        self.backend = Backend::Postgres(db.service_url.clone());
        self
    }

    /// Serves the sidecar injector webhook with `settings` (`[kubernetes] injector`).
    pub fn injector(
        mut self,
        settings: agent_secret_control_plane::kubernetes::InjectorSettings,
    ) -> Self {
        self.injector = Some(settings);
        self
    }

    /// Creates tenant `name` before serving; its admin token is [`Served::admin`].
    pub fn tenant(mut self, name: &str) -> Self {
        self.tenant = Some(name.to_owned());
        self
    }

    pub async fn start(self) -> Served {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (dir, store) = match self.backend {
            Backend::Sqlite => {
                let (sqlite, store) = support::sqlite_test_db().await;
                (sqlite.dir, store)
            }
            Backend::Postgres(url) => (
                tempfile::tempdir().unwrap(),
                SqlStore::new(Db::connect(&url).await.unwrap()),
            ),
        };
        let events = event_hub(store.db());
        let kms =
            LocalKms::open_or_create(dir.path().join("keyring"), MasterKey::generate()).unwrap();
        let mut app = App::new(
            Arc::new(store),
            Arc::new(kms),
            Arc::new(Pepper::generate()),
            Policy::default(),
        )
        .with_events(events)
        .with_limits(Limits::new(&self.server, &self.rate_limits))
        // bcrypt's minimum cost: test builds run it unoptimised.
        .with_sessions(
            agent_secret_control_plane::service::sessions::SessionSettings {
                bcrypt_cost: 4,
                ..Default::default()
            },
        );
        if let Some(settings) = self.injector {
            app = app.with_injector(agent_secret_control_plane::kubernetes::Injector::new(
                settings,
            ));
        }
        let app = Arc::new(app);
        let admin = match &self.tenant {
            Some(name) => {
                let created = tenants::create_tenant(&app, name).await.unwrap();
                Some(created.admin_token.expose().to_owned())
            }
            None => None,
        };
        let cert = tls::self_signed(&dir.path().join("tls")).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(server::serve(
            listener,
            Arc::new(cert.config.clone()),
            app.clone(),
            async {
                let _ = stopped.await;
            },
        ));
        let ca_pem = std::fs::read(&cert.cert_path).unwrap();
        let client = trusting(&ca_pem).build().unwrap();
        Served {
            app,
            addr,
            ca_pem,
            ca_file: cert.cert_path,
            api: Api {
                client,
                base: format!("https://127.0.0.1:{}", addr.port()),
            },
            admin,
            stop: Some(stop),
            handle: Some(handle),
            _dir: dir,
        }
    }
}

/// One running control plane. Dropping it stops the server; [`Served::stop`] also waits for it.
pub struct Served {
    pub app: Arc<App>,
    pub addr: SocketAddr,
    /// The dev CA clients trust, as PEM.
    pub ca_pem: Vec<u8>,
    /// The same CA as a file (what `--ca-cert` takes).
    pub ca_file: PathBuf,
    /// Calls to its API (`call`, `ok`, `url`...) through `Deref`; its client trusts the CA and
    /// keeps its connections open between calls.
    pub api: Api,
    /// The admin token of the tenant created at start ([`ServedBuilder::tenant`]).
    admin: Option<String>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for Served {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A client builder trusting `ca_pem` and nothing else, ignoring proxy settings. No overall
/// timeout: a watch stream stays open as long as a test reads it.
fn trusting(ca_pem: &[u8]) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem).unwrap())
        .no_proxy()
}

impl Served {
    /// Production settings on SQLite, no tenant; see [`ServedBuilder`] for the options.
    pub fn builder() -> ServedBuilder {
        ServedBuilder {
            server: ServerConfig::default(),
            rate_limits: RateLimitsConfig::default(),
            backend: Backend::Sqlite,
            tenant: None,
            injector: None,
        }
    }

    /// The admin token of the tenant created at start.
    pub fn admin(&self) -> &str {
        self.admin.as_deref().expect("built with .tenant(name)")
    }

    /// A client builder trusting the dev CA (requests time out after 30 s), for a client of
    /// other settings.
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        trusting(&self.ca_pem).timeout(Duration::from_secs(30))
    }

    /// A fresh HTTPS client whose connections come from `local` (e.g. 127.0.0.2).
    pub fn client_from(&self, local: &str) -> reqwest::Client {
        self.client_builder()
            .local_address(ip(local))
            .build()
            .unwrap()
    }

    /// A raw TCP connection to the server from `local`.
    pub async fn tcp_from(&self, local: &str) -> TcpStream {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(ip(local), 0)).unwrap();
        socket.connect(self.addr).await.unwrap()
    }

    /// A TLS client config trusting the dev CA, offering only `alpn`.
    pub fn tls_client(&self, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut self.ca_pem.as_slice()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }

    /// A finished TLS handshake from `local`, or the handshake's error.
    pub async fn tls_from(
        &self,
        local: &str,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = self.tcp_from(local).await;
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        self.tls_client(&[b"http/1.1"]).connect(name, tcp).await
    }

    /// The value of one sample of `/metrics`, e.g. `rate_limited_total{limit="tokens_per_ip"}`.
    pub fn metric(&self, sample: &str) -> f64 {
        let text = self.app.metrics.render();
        let name = format!("agent_secret_store_{sample} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&name))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    }

    /// `(id, key)` of a new `what` (`agents` or `sidecars`) named `name`, created by `admin`.
    /// Agents may be granted any read scope: ceilings are tested in `approvals.rs`.
    pub async fn create_as(
        &self,
        admin: &str,
        what: &str,
        name: &str,
        key_field: &str,
    ) -> (String, String) {
        let (status, body) = self
            .call(
                Method::POST,
                &format!("/v1/{what}"),
                admin,
                Some(if what == "agents" {
                    json!({ "name": name, "allow": ["secrets:read:**"] })
                } else {
                    json!({ "name": name })
                }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        (
            body["id"].as_str().unwrap().to_owned(),
            body[key_field].as_str().unwrap().to_owned(),
        )
    }

    /// An agent's (id, key), in the tenant created at start.
    pub async fn agent(&self, name: &str) -> (String, String) {
        self.create_as(self.admin(), "agents", name, "agent_key")
            .await
    }

    /// A sidecar's (id, key), in the tenant created at start.
    pub async fn sidecar(&self, name: &str) -> (String, String) {
        self.create_as(self.admin(), "sidecars", name, "sidecar_key")
            .await
    }

    /// Audit events of `types` (comma-separated) of the tenant created at start.
    pub async fn audit(&self, types: &str) -> Vec<Value> {
        let body = self
            .ok(
                Method::GET,
                &format!("/v1/audit?type={types}"),
                self.admin(),
                None,
            )
            .await;
        body["events"].as_array().unwrap().clone()
    }

    /// Stops serving and waits until the server has shut down cleanly.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle.await.unwrap().unwrap();
        }
    }
}

/// Settings that leave every limit far away, to be narrowed by a test.
pub fn roomy_server() -> ServerConfig {
    ServerConfig {
        tls_handshake_timeout_seconds: 30,
        header_read_timeout_seconds: 30,
        idle_timeout_seconds: 60,
        request_body_timeout_seconds: 30,
        max_header_bytes: 16 * 1024,
        max_connections_per_ip: 1000,
        max_connections: 10_000,
    }
}

/// A tenant set up as an operator would: admin token, sidecar key, one agent.
pub struct Tenant {
    pub admin: String,
    pub sidecar_key: String,
    pub agent_id: String,
    pub agent_key: String,
}

impl Tenant {
    pub async fn create(cp: &Served, name: &str) -> Tenant {
        let created = tenants::create_tenant(&cp.app, name).await.unwrap();
        let admin = created.admin_token.expose().to_owned();
        let (_, sidecar_key) = cp
            .create_as(&admin, "sidecars", "host-1", "sidecar_key")
            .await;
        let (agent_id, agent_key) = cp.create_as(&admin, "agents", "bot", "agent_key").await;
        Tenant {
            admin,
            sidecar_key,
            agent_id,
            agent_key,
        }
    }

    /// Stores `value` at `path` bound to api.example.com; returns the version written.
    pub async fn put(&self, cp: &Served, path: &str, value: &str) -> i64 {
        let body = json!({"value": value, "allowed_hosts": ["api.example.com"]});
        let put = cp
            .ok(
                Method::PUT,
                &format!("/v1/secrets/{path}"),
                &self.admin,
                Some(body),
            )
            .await;
        put["version"].as_i64().unwrap()
    }

    /// `(id, token)` of a fresh token with `scopes`.
    pub async fn token(&self, cp: &Served, scopes: &[&str]) -> (String, String) {
        let body = json!({"scopes": scopes, "ttl_seconds": 600});
        let t = cp
            .ok(Method::POST, "/v1/tokens", &self.agent_key, Some(body))
            .await;
        (
            t["id"].as_str().unwrap().to_owned(),
            t["token"].as_str().unwrap().to_owned(),
        )
    }

    /// What the sidecar would be told for `token` and `paths` going to api.example.com.
    pub async fn resolve(&self, cp: &Served, token: &str, paths: &[&str]) -> (StatusCode, Value) {
        let body = json!({
            "token": token,
            "paths": paths,
            "destination_host": "api.example.com",
            "client_ip": "127.0.0.1",
        });
        cp.call(
            Method::POST,
            "/v1/sidecar/resolve",
            &self.sidecar_key,
            Some(body),
        )
        .await
    }

    /// Event types of the tenant's audit log, in order.
    pub async fn audit_types(&self, cp: &Served) -> Vec<(String, Option<String>)> {
        let body = cp.ok(Method::GET, "/v1/audit", &self.admin, None).await;
        let events = body
            .get("events")
            .and_then(Value::as_array)
            .or_else(|| body.as_array())
            .cloned()
            .unwrap_or_default();
        events
            .iter()
            .map(|e| {
                (
                    e["event_type"]
                        .as_str()
                        .or_else(|| e["type"].as_str())
                        .unwrap_or_default()
                        .to_owned(),
                    e["reason"].as_str().map(str::to_owned),
                )
            })
            .collect()
    }
}

/// `code` of an error body.
pub fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no code>")
}
