//! A real control plane for the revocation and stale-state suites: the HTTPS server on
//! 127.0.0.1:0 (self-signed dev TLS) over SQLite or a PostgreSQL test database, and the
//! reqwest client an operator, agent or sidecar would use.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;

use agent_secret_core::credential::Pepper;
use agent_secret_core::kms::local::{LocalKms, MasterKey};
use agent_secret_store::bootstrap::event_hub;
use agent_secret_store::db::Db;
use agent_secret_store::service::{tenants, App, Policy};
use agent_secret_store::store::sql::SqlStore;
use agent_secret_store::{server, tls};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::net::TcpListener;

pub struct Served {
    pub app: Arc<App>,
    pub url: String,
    /// The certificate clients trust (`--ca-cert`).
    pub ca_file: std::path::PathBuf,
    pub client: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A migrated SQLite database in `dir`.
pub async fn sqlite(dir: &Path) -> Db {
    let db = Db::connect(&format!("sqlite://{}", dir.join("store.db").display()))
        .await
        .unwrap();
    db.migrate().await.unwrap();
    db
}

impl Served {
    /// Serves `db` (already migrated) with a fresh keyring and pepper in `dir`.
    pub async fn start(db: Db, dir: &Path) -> Served {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let kms = LocalKms::open_or_create(dir.join("keyring"), MasterKey::generate()).unwrap();
        let events = event_hub(&db);
        let app = Arc::new(
            App::new(
                Arc::new(SqlStore::new(db)),
                Arc::new(kms),
                Arc::new(Pepper::generate()),
                Policy::default(),
            )
            .with_events(events),
        );
        let cert = tls::self_signed(&dir.join("tls")).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server::serve(
            listener,
            Arc::new(cert.config.clone()),
            app.clone(),
            async {
                let _ = stopped.await;
            },
        ));
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&cert.cert_path).unwrap()).unwrap();
        let client = reqwest::Client::builder()
            .add_root_certificate(ca)
            .no_proxy()
            .build()
            .unwrap();
        Served {
            app,
            url: format!("https://127.0.0.1:{}", addr.port()),
            ca_file: cert.cert_path.clone(),
            client,
            stop: Some(stop),
        }
    }

    pub fn request(&self, method: Method, path: &str, credential: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(credential)
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        credential: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.request(method, path, credential);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let text = res.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn ok(
        &self,
        method: Method,
        path: &str,
        credential: &str,
        body: Option<Value>,
    ) -> Value {
        let (status, body) = self.call(method.clone(), path, credential, body).await;
        assert!(status.is_success(), "{method} {path}: {status} {body}");
        body
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
                Some(json!({"name": "bot"})),
            )
            .await;
        Tenant {
            admin,
            sidecar_key: sidecar["sidecar_key"].as_str().unwrap().to_owned(),
            agent_id: agent["id"].as_str().unwrap().to_owned(),
            agent_key: agent["agent_key"].as_str().unwrap().to_owned(),
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
