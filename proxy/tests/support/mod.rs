//! Real parts for the sidecar's integration tests: a CA minted per run, echo upstreams (HTTP
//! and HTTPS) that record what they received, a fake control plane over TLS that seals real
//! envelopes with a real local KMS and answers resolve with the real access policy
//! (`agent_secret_core::policy`, as the control plane does), and a raw HTTP/1.1 client that
//! talks to the proxy exactly as an agent would.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_secret_core::api::{
    ErrorBody, ErrorCode, Grant, ResolveRequest, ResolveResponse, ResolvedSecret, Sensitivity,
    SidecarAuditAccepted, SidecarAuditBatch, SidecarAuditEvent, TokenStatus, WatchEvent,
};
use agent_secret_core::cidr::parse_cidr;
use agent_secret_core::credential::{issue, CredentialKind, Pepper};
use agent_secret_core::envelope::{seal, Envelope, SecretAad};
use agent_secret_core::host::{Destination, HostPattern};
use agent_secret_core::ids::TenantId;
use agent_secret_core::kms::local::{LocalKms, MasterKey};
use agent_secret_core::kms::Kms;
use agent_secret_core::path::SecretPath;
use agent_secret_core::policy::{self, GrantFacts, SecretFacts};
use agent_secret_core::scope::Scope;
use agent_secret_core::secret::SecretBytes;
use agent_secret_proxy::{ProxyConfig, RunningSidecar, Sidecar};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response as AxumResponse};
use axum::routing;
use axum::{Json, Router};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, Notify};
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::BroadcastStream;
use uuid::Uuid;

pub use agent_secret_testkit::pki::TestCa;
pub use agent_secret_testkit::{eventually, process::Spawned};

pub fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Serve hyper connections (optionally over TLS) on `listener` with `service`.
fn serve<S>(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    make: impl Fn() -> S + Send + 'static,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<BoxBody>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let acceptor = tls.map(TlsAcceptor::from);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let service = make();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let builder = auto::Builder::new(TokioExecutor::new());
                match acceptor {
                    Some(acceptor) => {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let _ = builder.serve_connection(TokioIo::new(tls), service).await;
                    }
                    None => {
                        let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                    }
                }
            });
        }
    });
}

pub type BoxBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn full(bytes: impl Into<Bytes>) -> BoxBody {
    Full::new(bytes.into()).boxed()
}

// ---------------------------------------------------------------------------------------------
// Echo upstream
// ---------------------------------------------------------------------------------------------

/// What an upstream received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn has_header_prefix(&self, prefix: &str) -> bool {
        self.headers
            .iter()
            .any(|(k, _)| k.to_ascii_lowercase().starts_with(prefix))
    }
}

#[derive(Default)]
pub struct UpstreamState {
    pub requests: Mutex<Vec<Recorded>>,
    /// `/sse` sends its second event once notified.
    pub sse_next: Notify,
}

pub struct Upstream {
    pub addr: SocketAddr,
    pub state: Arc<UpstreamState>,
}

impl Upstream {
    pub async fn http() -> Upstream {
        Upstream::start("127.0.0.1:0".parse().unwrap(), None).await
    }

    pub async fn https(ca: &TestCa) -> Upstream {
        Upstream::start("127.0.0.1:0".parse().unwrap(), Some(ca.loopback_tls13())).await
    }

    pub async fn start(addr: SocketAddr, tls: Option<Arc<rustls::ServerConfig>>) -> Upstream {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(UpstreamState::default());
        let s = state.clone();
        serve(listener, tls, move || {
            let s = s.clone();
            service_fn(move |req| echo(req, s.clone()))
        });
        Upstream { addr, state }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn last(&self) -> Recorded {
        self.requests()
            .pop()
            .expect("the upstream received a request")
    }
}

async fn echo(
    req: Request<Incoming>,
    state: Arc<UpstreamState>,
) -> Result<Response<BoxBody>, Infallible> {
    let recorded = Recorded {
        method: req.method().to_string(),
        target: req.uri().to_string(),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
    };
    state.requests.lock().unwrap().push(recorded.clone());
    let json = serde_json::json!({
        "method": recorded.method,
        "target": recorded.target,
        "headers": recorded.headers,
    })
    .to_string();
    let auth = recorded.header("authorization").unwrap_or("").to_owned();
    let mut builder = Response::builder().header("x-echo-authorization", auth.clone());
    let path = req.uri().path().to_owned();
    let body = match path.as_str() {
        "/redirect" => {
            builder = builder.status(302).header(
                "location",
                format!("https://elsewhere.example/cb?auth={auth}"),
            );
            full("")
        }
        "/gzip" => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(json.as_bytes()).unwrap();
            builder = builder
                .header("content-encoding", "gzip")
                .header("content-type", "application/json");
            full(encoder.finish().unwrap())
        }
        "/br" => {
            builder = builder.header("content-encoding", "br");
            full(&b"\x0b\x02\x80opaque\x03"[..])
        }
        "/zstd" => {
            builder = builder.header("content-encoding", "zstd");
            full(&b"\x28\xb5\x2f\xfdopaque"[..])
        }
        // Echoes the Authorization value transformed (base64url, upper-case hex, its last 12
        // characters), brotli-compressed and sent in 7-byte frames.
        "/br-echo" => {
            use base64::Engine;
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&auth);
            let hex: String = auth.bytes().map(|b| format!("{b:02X}")).collect();
            let tail = &auth[auth.len().saturating_sub(12)..];
            let echo = format!("{{\"b64\":\"{b64}\",\"hex\":\"{hex}\",\"tail\":\"{tail}\"}}");
            let mut compressed = Vec::new();
            {
                let mut w = brotli::CompressorWriter::new(&mut compressed, 4096, 9, 22);
                w.write_all(echo.as_bytes()).unwrap();
            }
            builder = builder
                .header("content-encoding", "br")
                .header("content-type", "application/json");
            let chunks: Vec<Result<Frame<Bytes>, Infallible>> = compressed
                .chunks(7)
                .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
                .collect();
            BodyExt::boxed(StreamBody::new(futures::stream::iter(chunks)))
        }
        "/chunked" => {
            let chunks: Vec<Result<Frame<Bytes>, Infallible>> = json
                .as_bytes()
                .chunks(5)
                .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
                .collect();
            BodyExt::boxed(StreamBody::new(futures::stream::iter(chunks)))
        }
        "/sse" => {
            builder = builder.header("content-type", "text/event-stream");
            let state = state.clone();
            let stream = futures::stream::unfold(0u8, move |step| {
                let state = state.clone();
                async move {
                    match step {
                        0 => Some((Ok(Frame::data(Bytes::from_static(b"data: one\n\n"))), 1)),
                        1 => {
                            state.sse_next.notified().await;
                            Some((Ok(Frame::data(Bytes::from_static(b"data: two\n\n"))), 2))
                        }
                        _ => None,
                    }
                }
            });
            BodyExt::boxed(StreamBody::new(stream))
        }
        _ => {
            builder = builder.header("content-type", "application/json");
            full(json)
        }
    };
    Ok(builder.body(body).unwrap())
}

// ---------------------------------------------------------------------------------------------
// Fake control plane
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
pub struct FakeToken {
    pub id: Uuid,
    pub agent_id: String,
    pub scopes: Vec<String>,
    pub max_uses: Option<i64>,
    pub uses: i64,
    /// Stored lifecycle state; `Active` unless a test says otherwise.
    pub status: TokenStatus,
    pub revoked: bool,
    pub expires_at: DateTime<Utc>,
    pub ip_allowlist: Vec<String>,
    pub approved: Sensitivity,
    pub cache_ttl_seconds: u64,
    /// Answer every resolve of this token with this denial.
    pub force: Option<ErrorCode>,
}

struct FakeSecret {
    version: i64,
    sensitivity: Sensitivity,
    allowed_hosts: Vec<String>,
    /// `allowed_hosts` parsed, for the policy.
    host_patterns: Vec<HostPattern>,
    envelope: Envelope,
}

#[derive(Default)]
struct CpInner {
    tokens: HashMap<String, FakeToken>,
    secrets: HashMap<String, FakeSecret>,
}

pub struct CpState {
    inner: Mutex<CpInner>,
    /// The one bearer credential accepted: the sidecar key, or what [`FakeCp::accept_bearer`]
    /// set (a service-account token).
    sidecar_key: Mutex<String>,
    tenant: TenantId,
    pub resolves: AtomicUsize,
    /// The paths each resolve asked for, in order (empty: a token check or grant renewal).
    pub resolved_paths: Mutex<Vec<Vec<String>>>,
    pub watch_connections: AtomicUsize,
    pub audits: Mutex<Vec<SidecarAuditEvent>>,
    /// Answer resolve with 503.
    pub unavailable: AtomicBool,
    /// Answer audit with 503.
    pub audit_unavailable: AtomicBool,
    events: Mutex<broadcast::Sender<WatchEvent>>,
}

pub struct FakeCp {
    pub url: String,
    pub state: Arc<CpState>,
    kms: Arc<LocalKms>,
    pub tenant: TenantId,
    pub keyring: PathBuf,
    pub master_key_file: PathBuf,
    pub sidecar_key_file: PathBuf,
    pepper: Pepper,
}

impl FakeCp {
    /// From now on accept `bearer` (e.g. a service-account token) instead of the sidecar key.
    pub fn accept_bearer(&self, bearer: &str) {
        *self.state.sidecar_key.lock().unwrap() = bearer.to_owned();
    }
}

/// A freshly issued scoped token.
#[derive(Clone)]
pub struct IssuedToken {
    pub id: Uuid,
    pub token: String,
}

impl FakeCp {
    pub async fn start(ca: &TestCa, dir: &Path) -> FakeCp {
        let master = MasterKey::generate();
        let master_key_file = dir.join("master.key");
        std::fs::write(&master_key_file, master.to_base64().expose()).unwrap();
        private(&master_key_file);
        let keyring = dir.join("keyring.json");
        let kms = Arc::new(LocalKms::open_or_create(&keyring, master).unwrap());
        let tenant = TenantId::new();
        kms.create_tenant_key(tenant).await.unwrap();
        let pepper = Pepper::generate();
        let sidecar_key = issue(CredentialKind::Sidecar, &pepper)
            .token
            .expose()
            .to_owned();
        let sidecar_key_file = dir.join("sidecar.key");
        std::fs::write(&sidecar_key_file, &sidecar_key).unwrap();
        private(&sidecar_key_file);
        let state = Arc::new(CpState {
            inner: Mutex::new(CpInner::default()),
            sidecar_key: Mutex::new(sidecar_key),
            tenant,
            resolves: AtomicUsize::new(0),
            resolved_paths: Mutex::new(Vec::new()),
            watch_connections: AtomicUsize::new(0),
            audits: Mutex::new(Vec::new()),
            unavailable: AtomicBool::new(false),
            audit_unavailable: AtomicBool::new(false),
            events: Mutex::new(broadcast::channel(64).0),
        });
        let router = Router::new()
            .route("/v1/sidecar/resolve", routing::post(resolve))
            .route("/v1/sidecar/watch", routing::get(watch))
            .route("/v1/sidecar/audit", routing::post(audit))
            .with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = TlsAcceptor::from(ca.loopback_tls13());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let service = TowerToHyperService::new(router.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        FakeCp {
            url: format!("https://127.0.0.1:{}", addr.port()),
            state,
            kms,
            tenant,
            keyring,
            master_key_file,
            sidecar_key_file,
            pepper,
        }
    }

    /// Store (a new version of) a secret; returns its version.
    pub async fn put_secret(&self, path: &str, value: &str, allowed_hosts: &[&str]) -> i64 {
        self.put_secret_with(path, value, allowed_hosts, Sensitivity::Standard)
            .await
    }

    pub async fn put_secret_with(
        &self,
        path: &str,
        value: &str,
        allowed_hosts: &[&str],
        sensitivity: Sensitivity,
    ) -> i64 {
        let version = self
            .state
            .inner
            .lock()
            .unwrap()
            .secrets
            .get(path)
            .map_or(1, |s| s.version + 1);
        let aad = SecretAad {
            tenant: self.tenant,
            path,
            version,
        };
        let envelope = seal(
            self.kms.as_ref(),
            &aad,
            &SecretBytes::new(value.as_bytes().to_vec()),
        )
        .await
        .unwrap();
        self.state.inner.lock().unwrap().secrets.insert(
            path.to_owned(),
            FakeSecret {
                version,
                sensitivity,
                allowed_hosts: allowed_hosts.iter().map(|h| h.to_string()).collect(),
                host_patterns: allowed_hosts
                    .iter()
                    .map(|h| HostPattern::parse(h).unwrap())
                    .collect(),
                envelope,
            },
        );
        version
    }

    pub fn issue_token(&self, scopes: &[&str]) -> IssuedToken {
        self.issue_token_with(scopes, |_| {})
    }

    pub fn issue_token_with(
        &self,
        scopes: &[&str],
        adjust: impl FnOnce(&mut FakeToken),
    ) -> IssuedToken {
        let issued = issue(CredentialKind::Token, &self.pepper);
        let mut token = FakeToken {
            id: issued.id,
            agent_id: "agent-1".into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            max_uses: None,
            uses: 0,
            status: TokenStatus::Active,
            revoked: false,
            expires_at: Utc::now() + chrono::Duration::hours(1),
            ip_allowlist: Vec::new(),
            approved: Sensitivity::Standard,
            cache_ttl_seconds: 300,
            force: None,
        };
        adjust(&mut token);
        let out = IssuedToken {
            id: issued.id,
            token: issued.token.expose().to_owned(),
        };
        self.state
            .inner
            .lock()
            .unwrap()
            .tokens
            .insert(out.token.clone(), token);
        out
    }

    /// Revoke at the store only (no event): a warm sidecar would not know.
    pub fn revoke_silently(&self, token: &IssuedToken) {
        if let Some(t) = self
            .state
            .inner
            .lock()
            .unwrap()
            .tokens
            .get_mut(&token.token)
        {
            t.revoked = true;
        }
    }

    pub fn push(&self, event: WatchEvent) {
        let _ = self.state.events.lock().unwrap().send(event);
    }

    /// End every open watch stream (as a control-plane restart would).
    pub fn disconnect_watchers(&self) {
        *self.state.events.lock().unwrap() = broadcast::channel(64).0;
    }

    pub fn resolves(&self) -> usize {
        self.state.resolves.load(Ordering::SeqCst)
    }

    /// The paths each resolve so far asked for.
    pub fn resolved_paths(&self) -> Vec<Vec<String>> {
        self.state.resolved_paths.lock().unwrap().clone()
    }

    pub fn watchers(&self) -> usize {
        self.state.watch_connections.load(Ordering::SeqCst)
    }

    pub fn audits(&self) -> Vec<SidecarAuditEvent> {
        self.state.audits.lock().unwrap().clone()
    }

    pub fn uses(&self, token: &IssuedToken) -> i64 {
        self.state.inner.lock().unwrap().tokens[&token.token].uses
    }
}

fn refuse(status: AxumStatus, code: ErrorCode, message: &str) -> AxumResponse {
    (status, Json(ErrorBody::new(code, message))).into_response()
}

fn authorized(state: &CpState, headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {}", state.sidecar_key.lock().unwrap()))
}

async fn resolve(
    State(state): State<Arc<CpState>>,
    headers: HeaderMap,
    Json(req): Json<ResolveRequest>,
) -> AxumResponse {
    if !authorized(&state, &headers) {
        return refuse(
            AxumStatus::UNAUTHORIZED,
            ErrorCode::Unauthenticated,
            "bad sidecar key",
        );
    }
    state.resolves.fetch_add(1, Ordering::SeqCst);
    state.resolved_paths.lock().unwrap().push(req.paths.clone());
    if state.unavailable.load(Ordering::SeqCst) {
        return refuse(
            AxumStatus::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "down",
        );
    }
    let forbidden = |code: ErrorCode| refuse(AxumStatus::FORBIDDEN, code, code.as_str());
    let mut inner = state.inner.lock().unwrap();
    let CpInner { tokens, secrets } = &mut *inner;
    let Some(token) = tokens.get_mut(&req.token) else {
        return forbidden(ErrorCode::TokenInvalid);
    };
    if let Some(code) = token.force {
        return forbidden(code);
    }
    let scopes: Vec<Scope> = token
        .scopes
        .iter()
        .map(|s| Scope::parse(s).unwrap())
        .collect();
    let ip_allowlist: Vec<ipnet::IpNet> = token
        .ip_allowlist
        .iter()
        .map(|n| parse_cidr(n).unwrap())
        .collect();
    let facts = GrantFacts {
        status: token.status,
        revoked: token.revoked,
        expires_at: token.expires_at,
        ip_allowlist: &ip_allowlist,
        scopes: &scopes,
        approved_sensitivity: token.approved,
        max_uses: token.max_uses,
        uses: token.uses,
    };
    let paths: Vec<SecretPath> = req
        .paths
        .iter()
        .map(|p| SecretPath::parse(p).unwrap())
        .collect();
    let destination = Destination::parse(&req.destination_host).unwrap();
    let request = policy::Request {
        paths: &paths,
        destination: &destination,
        client_ip: req.client_ip.parse().unwrap(),
        now: Utc::now(),
    };
    // The control plane's rule, in its order; the mutex makes the uses check exact here.
    let resolved = match policy::authorize(&facts, &request, |path| {
        let secret = secrets.get(path.as_str())?;
        let resolved = ResolvedSecret {
            path: path.to_string(),
            version: secret.version,
            sensitivity: secret.sensitivity,
            allowed_hosts: secret.allowed_hosts.clone(),
            envelope: secret.envelope.clone(),
        };
        let facts = SecretFacts {
            path,
            sensitivity: secret.sensitivity,
            allowed_hosts: &secret.host_patterns,
        };
        Some((resolved, facts))
    }) {
        Ok(resolved) => resolved,
        Err(denial) => {
            let status = if denial.error_code() == ErrorCode::SecretNotFound {
                AxumStatus::NOT_FOUND
            } else {
                AxumStatus::FORBIDDEN
            };
            return refuse(status, denial.error_code(), &denial.message());
        }
    };
    token.uses += 1;
    let grant = Grant {
        token_id: token.id.hyphenated().to_string(),
        tenant_id: state.tenant.to_string(),
        agent_id: token.agent_id.clone(),
        scopes: token.scopes.clone(),
        ip_allowlist: token.ip_allowlist.clone(),
        approved_sensitivity: token.approved,
        expires_at: token.expires_at,
        max_uses: token.max_uses,
        uses: token.uses,
        cache_ttl_seconds: if token.max_uses.is_some() {
            0
        } else {
            token.cache_ttl_seconds
        },
    };
    Json(ResolveResponse {
        grant,
        secrets: resolved,
        reservation: None,
    })
    .into_response()
}

async fn watch(State(state): State<Arc<CpState>>, headers: HeaderMap) -> AxumResponse {
    if !authorized(&state, &headers) {
        return refuse(
            AxumStatus::UNAUTHORIZED,
            ErrorCode::Unauthenticated,
            "bad sidecar key",
        );
    }
    let events = BroadcastStream::new(state.events.lock().unwrap().subscribe());
    state.watch_connections.fetch_add(1, Ordering::SeqCst);
    let stream = events.filter_map(|event| async move {
        let event = event.ok()?;
        let json = serde_json::to_value(&event).unwrap();
        let name = json["type"].as_str().unwrap().to_owned();
        Some(Ok::<_, Infallible>(
            Event::default().event(name).data(json.to_string()),
        ))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(5)))
        .into_response()
}

async fn audit(
    State(state): State<Arc<CpState>>,
    headers: HeaderMap,
    Json(batch): Json<SidecarAuditBatch>,
) -> AxumResponse {
    if !authorized(&state, &headers) {
        return refuse(
            AxumStatus::UNAUTHORIZED,
            ErrorCode::Unauthenticated,
            "bad sidecar key",
        );
    }
    if state.audit_unavailable.load(Ordering::SeqCst) {
        return refuse(
            AxumStatus::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "down",
        );
    }
    let accepted = batch.events.len();
    state.audits.lock().unwrap().extend(batch.events);
    Json(SidecarAuditAccepted { accepted }).into_response()
}

// ---------------------------------------------------------------------------------------------
// Sidecar configuration
// ---------------------------------------------------------------------------------------------

/// A config pointing at `cp`, trusting `ca` for the control plane and upstreams, on free ports.
/// `tables` is appended (e.g. `[[hosts]]`, `[[routes]]`, `[cache]`).
pub fn sidecar_config(cp: &FakeCp, ca_file: &Path, dir: &Path, tables: &str) -> ProxyConfig {
    sidecar_config_with_url(&cp.url, cp, ca_file, dir, tables)
}

pub fn sidecar_config_with_url(
    url: &str,
    cp: &FakeCp,
    ca_file: &Path,
    dir: &Path,
    tables: &str,
) -> ProxyConfig {
    let text = format!(
        r#"
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
shutdown_grace_seconds = 1
[control_plane]
url = "{url}"
ca_file = "{ca}"
sidecar_key_file = "{key}"
retries = 1
retry_backoff_ms = 10
watch_max_backoff_ms = 200
[kms]
keyring = "{keyring}"
master_key_file = "{master}"
[upstream]
extra_ca_file = "{ca}"
connect_timeout_ms = 1000
[audit]
spool_path = "{spool}"
flush_interval_ms = 50
{tables}
"#,
        ca = ca_file.display(),
        key = cp.sidecar_key_file.display(),
        keyring = cp.keyring.display(),
        master = cp.master_key_file.display(),
        spool = dir.join("spool").display(),
    );
    ProxyConfig::from_toml_str(&text).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.1 client
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// The `error.code` of a JSON refusal.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// `Proxy-Authorization: Bearer <token>`.
pub fn bearer(token: &IssuedToken) -> (String, String) {
    (
        "Proxy-Authorization".into(),
        format!("Bearer {}", token.token),
    )
}

/// Send `method url` through the proxy with `Connection: close`; `url` is absolute-form
/// (`http://host/x`, forward mode) or a path (`/route/x`, route mode).
pub async fn request(
    proxy: SocketAddr,
    method: &str,
    url: &str,
    headers: &[(String, String)],
) -> RawResponse {
    let host = match url.split_once("://") {
        Some((_, rest)) => rest.split('/').next().unwrap().to_owned(),
        None => proxy.to_string(),
    };
    let mut text = format!("{method} {url} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        text.push_str(&format!("Host: {host}\r\n"));
    }
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text.push_str("Connection: close\r\n\r\n");
    send_raw(proxy, text.as_bytes()).await
}

pub async fn get(proxy: SocketAddr, url: &str, headers: &[(String, String)]) -> RawResponse {
    request(proxy, "GET", url, headers).await
}

/// Write `bytes`, read the whole response until the server closes.
pub async fn send_raw(proxy: SocketAddr, bytes: &[u8]) -> RawResponse {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw))
        .await
        .expect("response within 30 s")
        .ok();
    parse_response(&raw)
}

pub fn parse_response(raw: &[u8]) -> RawResponse {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    RawResponse {
        status,
        headers,
        body,
    }
}

pub fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size =
            usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap_or(0);
        data = &data[line_end + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[(size + 2).min(data.len())..];
    }
    out
}

/// Secret files must be private to their owner (`agent_secret_core::secret_file`): mode 0600.
fn private(path: &Path) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The `agent-secret-proxy` binary running `config_file` against `cp` (its key files through
/// the environment), with its stderr collected; started once it logs its proxy address.
pub struct ProxyBinary {
    pub child: Spawned,
    pub addr: SocketAddr,
    log: std::thread::JoinHandle<Vec<String>>,
}

impl ProxyBinary {
    pub fn start(cp: &FakeCp, config_file: &Path, rust_log: &str) -> ProxyBinary {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_agent-secret-proxy"));
        command.arg("--config").arg(config_file);
        ProxyBinary::start_command(cp, command, rust_log)
    }

    /// [`start`](Self::start) of `command` (the binary, with its configuration given some way).
    pub fn start_command(
        cp: &FakeCp,
        mut command: std::process::Command,
        rust_log: &str,
    ) -> ProxyBinary {
        let mut child = Spawned::start(
            command
                .env("AGENT_SECRET_SIDECAR_KEY_FILE", &cp.sidecar_key_file)
                .env("AGENT_SECRET_MASTER_KEY_FILE", &cp.master_key_file)
                .env("RUST_LOG", rust_log)
                .env("NO_COLOR", "1")
                .stderr(std::process::Stdio::piped()),
        );
        let stderr = child.take_stderr();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = std::thread::spawn(move || {
            use std::io::BufRead as _;
            let mut all = Vec::new();
            for line in stderr.lines().map_while(Result::ok) {
                let _ = tx.send(line.clone());
                all.push(line);
            }
            all
        });
        let addr = loop {
            let line = rx
                .recv_timeout(Duration::from_secs(10))
                .expect("the binary logs its listening address");
            if let Some(rest) = line.split("proxy_addr=").nth(1) {
                let addr = rest.split_whitespace().next().unwrap();
                break addr.parse::<SocketAddr>().unwrap();
            }
        };
        ProxyBinary { child, addr, log }
    }

    /// Interrupts it (SIGINT) and returns its exit status and everything it logged.
    pub async fn stop(mut self) -> (std::process::ExitStatus, String) {
        self.child.interrupt();
        let exited = self.child.exited(Duration::from_secs(10)).await;
        let status = exited.expect("the sidecar did not exit after SIGINT");
        (status, self.log.join().unwrap().join("\n"))
    }
}

// ---------------------------------------------------------------------------------------------
// The world most sidecar tests start from: a fake control plane, an HTTP and an HTTPS echo
// upstream (test CA), and a secret bound to both.
// ---------------------------------------------------------------------------------------------

pub const SECRET: &str = "sk-live-0123456789abcdef";
pub const PATH: &str = "prod/api/key";
pub const PLACEHOLDER: &str = "Bearer {{secret:prod/api/key}}";
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A `[[hosts]]` table for a plain-HTTP upstream on loopback.
pub fn local_host_rule(port: u16) -> String {
    format!("\n[[hosts]]\nname = \"127.0.0.1:{port}\"\nplaintext = true\nallow_private = true\n")
}

pub struct World {
    pub dir: tempfile::TempDir,
    pub ca_file: PathBuf,
    pub ca: TestCa,
    pub cp: FakeCp,
    pub http: Upstream,
    pub https: Upstream,
}

impl World {
    pub async fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        init();
        let ca = TestCa::new();
        let ca_file = ca.write(dir.path());
        let cp = FakeCp::start(&ca, dir.path()).await;
        let http = Upstream::http().await;
        let https = Upstream::https(&ca).await;
        World {
            dir,
            ca_file,
            ca,
            cp,
            http,
            https,
        }
    }

    /// Host rules for both upstreams (they live on loopback, so the SSRF guard needs lifting).
    pub fn hosts(&self) -> String {
        format!(
            r#"
[[hosts]]
name = "127.0.0.1:{http}"
plaintext = true
allow_private = true
[[hosts]]
name = "127.0.0.1:{https}"
allow_private = true
"#,
            http = self.http.addr.port(),
            https = self.https.addr.port(),
        )
    }

    pub async fn sidecar(&self, tables: &str) -> RunningSidecar {
        self.start(self.config(tables)).await
    }

    /// This world's sidecar configuration with `tables` appended, to change before [`start`].
    ///
    /// [`start`]: World::start
    pub fn config(&self, tables: &str) -> ProxyConfig {
        sidecar_config(&self.cp, &self.ca_file, self.dir.path(), tables)
    }

    /// Starts a sidecar on `config` and waits for its watch stream.
    pub async fn start(&self, config: ProxyConfig) -> RunningSidecar {
        let sidecar = Sidecar::start(config).await.unwrap();
        // The first watch connection flushes the grant cache; let it happen before warming.
        eventually(
            "the sidecar never connected its watch stream",
            DEADLINE,
            async || sidecar.metrics().watch_connected.get() == 1,
        )
        .await;
        sidecar
    }

    /// A sidecar with `tables` plus the host rules for both upstreams.
    pub async fn sidecar_with(&self, tables: &str) -> RunningSidecar {
        self.sidecar(&format!("{tables}{}", self.hosts())).await
    }

    pub async fn default_sidecar(&self) -> RunningSidecar {
        self.sidecar(&self.hosts()).await
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http.addr.port())
    }

    pub fn https_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.https.addr.port())
    }

    /// A secret bound to both upstreams and a token that may read it.
    pub async fn secret_and_token(&self) -> IssuedToken {
        let http = format!("127.0.0.1:{}", self.http.addr.port());
        let https = format!("127.0.0.1:{}", self.https.addr.port());
        self.cp.put_secret(PATH, SECRET, &[&http, &https]).await;
        self.cp.issue_token(&["secrets:read:prod/**"])
    }
}

pub fn with_placeholder(token: &IssuedToken) -> Vec<(String, String)> {
    vec![bearer(token), ("Authorization".into(), PLACEHOLDER.into())]
}
