//! A control plane served for real: SQLite in a temp dir, local KMS, a dev CA, TLS on
//! 127.0.0.1:0, with the limits a test chooses, plus clients that connect from a chosen
//! loopback address (127.0.0.0/8 is all local on Linux), so per-address limits can be told
//! apart in one process.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use agent_secret_core::credential::Pepper;
use agent_secret_core::ids::TenantId;
use agent_secret_core::kms::local::{LocalKms, MasterKey};
use agent_secret_store::config::{RateLimitsConfig, ServerConfig};
use agent_secret_store::db::Db;
use agent_secret_store::limits::Limits;
use agent_secret_store::service::{tenants, App, Policy};
use agent_secret_store::store::sql::SqlStore;
use agent_secret_store::{server, tls};
use serde_json::{json, Value};
use tokio::net::{TcpSocket, TcpStream};

pub struct Served {
    pub app: Arc<App>,
    pub addr: SocketAddr,
    pub ca_pem: Vec<u8>,
    pub admin: String,
    pub tenant: TenantId,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

impl Served {
    pub async fn start(server_config: ServerConfig, rates: RateLimitsConfig) -> Served {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!(
            "sqlite://{}",
            dir.path().join("store.db").display()
        ))
        .await
        .unwrap();
        db.migrate().await.unwrap();
        let kms =
            LocalKms::open_or_create(dir.path().join("keyring"), MasterKey::generate()).unwrap();
        let app = Arc::new(
            App::new(
                Arc::new(SqlStore::new(db)),
                Arc::new(kms),
                Arc::new(Pepper::generate()),
                Policy::default(),
            )
            .with_limits(Limits::new(&server_config, &rates)),
        );
        let created = tenants::create_tenant(&app, "acme").await.unwrap();
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
        Served {
            app,
            addr,
            ca_pem: std::fs::read(&cert.cert_path).unwrap(),
            admin: created.admin_token.expose().to_owned(),
            tenant: created.tenant_id,
            stop: Some(stop),
            handle: Some(handle),
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    /// An HTTPS client whose connections come from `local` (e.g. 127.0.0.2).
    pub fn client_from(&self, local: &str) -> reqwest::Client {
        self.builder().local_address(ip(local)).build().unwrap()
    }

    pub fn builder(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&self.ca_pem).unwrap())
            .no_proxy()
            .timeout(Duration::from_secs(30))
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

    pub async fn create(&self, what: &str, name: &str, key_field: &str) -> (String, String) {
        let r = self
            .client_from("127.0.0.1")
            .post(self.url(&format!("/v1/{what}")))
            .bearer_auth(&self.admin)
            .json(&json!({ "name": name }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let body: Value = r.json().await.unwrap();
        (
            body["id"].as_str().unwrap().to_owned(),
            body[key_field].as_str().unwrap().to_owned(),
        )
    }

    /// An agent's (id, key).
    pub async fn agent(&self, name: &str) -> (String, String) {
        self.create("agents", name, "agent_key").await
    }

    /// A sidecar's (id, key).
    pub async fn sidecar(&self, name: &str) -> (String, String) {
        self.create("sidecars", name, "sidecar_key").await
    }

    /// Audit events of `types` (comma-separated), as the admin sees them.
    pub async fn audit(&self, types: &str) -> Vec<Value> {
        let r = self
            .client_from("127.0.0.1")
            .get(self.url(&format!("/v1/audit?type={types}")))
            .bearer_auth(&self.admin)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        body["events"].as_array().unwrap().clone()
    }

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
        max_header_bytes: 16 * 1024,
        max_connections_per_ip: 1000,
        max_connections: 10_000,
    }
}
