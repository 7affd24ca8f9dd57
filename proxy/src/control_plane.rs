//! The HTTPS client for the control plane's `/v1/sidecar/*` endpoints.
//!
//! One pooled keep-alive client (TLS 1.3 only, the CA from `ca_file` or the system roots, no
//! environment proxy: the agent's own `HTTP_PROXY` may point at this very sidecar) carries
//! resolve, audit and the long-lived watch stream. Retries are bounded and only for failures
//! where the request cannot have been acted on or the server says "try again" — connection
//! errors and 502/503/504 — because a resolve of a `max_uses` token consumes a use and must
//! not be repeated blindly after a timeout or a 500. Release (giving such a use back) is
//! idempotent, so it is retried on the same failures without that worry.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_secret_core::api::{
    ErrorBody, ReleaseUseRequest, ReleasedUse, ResolveRequest, ResolveResponse,
};
use http::{HeaderValue, StatusCode};
use reqwest::{Certificate, RequestBuilder, Response};

use crate::config::{ControlPlaneConfig, Credential};
use crate::metrics::Metrics;

/// The `Authorization` header of every call.
#[derive(Clone)]
enum Auth {
    /// `Bearer <sidecar key>`, marked sensitive.
    Key(HeaderValue),
    /// `Bearer <projected service-account token>`, read again once it is [`TOKEN_REREAD`]
    /// old: the kubelet writes a new token before the old one expires.
    TokenFile {
        path: PathBuf,
        current: Arc<Mutex<(Instant, HeaderValue)>>,
    },
}

/// How long a read service-account token is used before the file is read again.
const TOKEN_REREAD: Duration = Duration::from_secs(60);
/// Largest token file read (projected tokens are ~1 KiB).
const MAX_TOKEN_FILE_BYTES: u64 = 16 * 1024;

impl Auth {
    fn header(&self) -> HeaderValue {
        match self {
            Auth::Key(value) => value.clone(),
            Auth::TokenFile { path, current } => {
                let mut current = current.lock().unwrap_or_else(|p| p.into_inner());
                if current.0.elapsed() >= TOKEN_REREAD {
                    match read_token(path) {
                        Ok(value) => *current = (Instant::now(), value),
                        // The old token may still be valid: keep it, and try again next call.
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot re-read the service-account token")
                        }
                    }
                }
                current.1.clone()
            }
        }
    }

    /// After a 401: read the token file now (a key never changes).
    fn refresh(&self) {
        let Auth::TokenFile { path, current } = self else {
            return;
        };
        if let Ok(value) = read_token(path) {
            *current.lock().unwrap_or_else(|p| p.into_inner()) = (Instant::now(), value);
        }
    }
}

/// `Bearer <token>` from the token file; the error names the file, never its content.
fn read_token(path: &Path) -> Result<HeaderValue, String> {
    use std::io::Read as _;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_TOKEN_FILE_BYTES).read_to_string(&mut text))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    bearer(token).ok_or_else(|| format!("{} is not a token", path.display()))
}

fn bearer(token: &str) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// A client of one control plane.
#[derive(Clone)]
pub struct ControlPlane {
    http: reqwest::Client,
    /// `https://host:port`, no trailing slash.
    base: String,
    /// The `Authorization` header this sidecar sends.
    auth: Auth,
    request_timeout: Duration,
    retries: u32,
    backoff: Duration,
    metrics: Metrics,
}

/// Why a control-plane call did not succeed. Never contains the sidecar key or a token.
#[derive(Debug, thiserror::Error)]
pub enum CpError {
    /// A denial or request error with its JSON body (403, 404, 400).
    #[error("control plane answered {status}: {}", body.error.code)]
    Refused { status: StatusCode, body: ErrorBody },
    #[error("control plane rejected this sidecar's key ({0})")]
    Unauthorized(StatusCode),
    #[error("control plane unavailable: {0}")]
    Unavailable(String),
    #[error("unexpected control plane response: {0}")]
    Protocol(String),
    /// A refusal without the JSON error body (e.g. from a proxy in front of the control plane).
    #[error("control plane answered {0} without an error body")]
    Status(StatusCode),
}

impl CpError {
    /// The HTTP status of a refusal, when the control plane (or a proxy) answered one.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            CpError::Refused { status, .. } | CpError::Unauthorized(status) => Some(*status),
            CpError::Status(status) => Some(*status),
            CpError::Unavailable(_) | CpError::Protocol(_) => None,
        }
    }
}

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid control_plane.ca_file: {0}")]
    CaFile(#[from] agent_secret_core::pem::PemError),
    #[error("the sidecar key is not a valid header value")]
    BadKey,
    #[error("cannot read control_plane.service_account_token_file: {0}")]
    TokenFile(String),
    #[error("cannot build the control-plane client: {0}")]
    Build(String),
}

impl ControlPlane {
    pub fn new(
        config: &ControlPlaneConfig,
        credential: &Credential,
        metrics: Metrics,
    ) -> Result<ControlPlane, ClientError> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .min_tls_version(reqwest::tls::Version::TLS_1_3)
            .tls_built_in_root_certs(false)
            .no_proxy()
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_keepalive(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            // The control plane lists the version each sidecar last reported.
            .user_agent(concat!("agent-secret-sidecar/", env!("CARGO_PKG_VERSION")));
        for cert in root_certificates(config)? {
            builder = builder.add_root_certificate(cert);
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Build(e.to_string()))?;
        let auth = match credential {
            Credential::Key(key) => Auth::Key(bearer(key.expose()).ok_or(ClientError::BadKey)?),
            Credential::TokenFile(path) => {
                let current = read_token(path).map_err(ClientError::TokenFile)?;
                Auth::TokenFile {
                    path: path.clone(),
                    current: Arc::new(Mutex::new((Instant::now(), current))),
                }
            }
        };
        Ok(ControlPlane {
            http,
            base: config.url.trim_end_matches('/').to_owned(),
            auth,
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            retries: config.retries,
            backoff: Duration::from_millis(config.retry_backoff_ms),
            metrics,
        })
    }

    /// `POST /v1/sidecar/resolve`.
    pub async fn resolve(&self, request: &ResolveRequest) -> Result<ResolveResponse, CpError> {
        self.post_json("resolve", request).await
    }

    /// `POST /v1/sidecar/release`: give back a reserved use whose value was never injected.
    pub async fn release(&self, request: &ReleaseUseRequest) -> Result<ReleasedUse, CpError> {
        self.post_json("release", request).await
    }

    /// `POST /v1/sidecar/{op}` with retries, timed as `op`, answered with JSON or a refusal.
    async fn post_json<T: serde::de::DeserializeOwned>(
        &self,
        op: &'static str,
        request: &(impl serde::Serialize + Sync),
    ) -> Result<T, CpError> {
        let url = format!("{}/v1/sidecar/{op}", self.base);
        let started = Instant::now();
        let result = self
            .send(|| {
                self.http
                    .post(&url)
                    .json(request)
                    .timeout(self.request_timeout)
            })
            .await;
        self.observe(op, started);
        json_or_refusal(result?).await
    }

    /// `POST /v1/sidecar/audit`; success means the batch is durably accepted. A refusal keeps
    /// its status ([`CpError::status`]): the audit spool splits, dead-letters or retries by it.
    ///
    /// `body` is a [`SidecarAuditBatch`](agent_secret_core::api::SidecarAuditBatch), already
    /// encoded (`crate::spool::AuditBody`).
    pub async fn post_audit(&self, body: bytes::Bytes) -> Result<(), CpError> {
        let url = format!("{}/v1/sidecar/audit", self.base);
        let started = Instant::now();
        let result = self
            .send(|| {
                self.http
                    .post(&url)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(body.clone())
                    .timeout(self.request_timeout)
            })
            .await;
        self.observe("audit", started);
        let response = result?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        Err(match refusal(response).await {
            CpError::Protocol(_) => CpError::Status(status),
            other => other,
        })
    }

    /// `GET /v1/sidecar/watch`: the open event stream (no overall timeout).
    pub async fn watch(&self) -> Result<Response, CpError> {
        let url = format!("{}/v1/sidecar/watch", self.base);
        let started = Instant::now();
        let result = self
            .http
            .get(&url)
            .header(http::header::AUTHORIZATION, self.auth.header())
            .header(http::header::ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(|e| CpError::Unavailable(e.to_string()));
        self.observe("watch_connect", started);
        let response = result?;
        if response.status().is_success() {
            Ok(response)
        } else {
            if response.status() == StatusCode::UNAUTHORIZED {
                // The next connection presents a rotated token at once.
                self.auth.refresh();
            }
            Err(refusal(response).await)
        }
    }

    async fn send(&self, build: impl Fn() -> RequestBuilder) -> Result<Response, CpError> {
        let mut attempt = 0;
        let mut refreshed = false;
        loop {
            let sent = self.auth.header();
            let result = build()
                .header(http::header::AUTHORIZATION, sent.clone())
                .send()
                .await;
            // A rotated service-account token: the file already holds the new one (or another
            // call has read it since this one was sent). One more try with it.
            let unauthorized = matches!(&result, Ok(r) if r.status() == StatusCode::UNAUTHORIZED);
            if unauthorized && !refreshed {
                self.auth.refresh();
                if self.auth.header() != sent {
                    refreshed = true;
                    continue;
                }
            }
            let retryable = match &result {
                Ok(r) => matches!(
                    r.status(),
                    StatusCode::BAD_GATEWAY
                        | StatusCode::SERVICE_UNAVAILABLE
                        | StatusCode::GATEWAY_TIMEOUT
                ),
                Err(e) => e.is_connect(),
            };
            if !retryable || attempt >= self.retries {
                return result.map_err(|e| CpError::Unavailable(e.to_string()));
            }
            tokio::time::sleep(self.backoff * 2u32.saturating_pow(attempt)).await;
            attempt += 1;
        }
    }

    fn observe(&self, op: &str, started: Instant) {
        self.metrics
            .control_plane_seconds
            .with_label_values(&[op])
            .observe(started.elapsed().as_secs_f64());
    }
}

/// The CA bundle of `ca_file`, or the system roots when none is configured.
fn root_certificates(config: &ControlPlaneConfig) -> Result<Vec<Certificate>, ClientError> {
    match &config.ca_file {
        Some(path) => agent_secret_core::pem::certificates(path)?
            .iter()
            .map(|der| {
                Certificate::from_der(der.as_ref()).map_err(|e| {
                    ClientError::Build(format!("control_plane.ca_file {}: {e}", path.display()))
                })
            })
            .collect(),
        None => {
            let native = pingora::tls::load_native_certs()
                .map_err(|e| ClientError::Build(format!("cannot load system roots: {e}")))?;
            Ok(native
                .iter()
                .filter_map(|der| Certificate::from_der(der.as_ref()).ok())
                .collect())
        }
    }
}

async fn json_or_refusal<T: serde::de::DeserializeOwned>(response: Response) -> Result<T, CpError> {
    if response.status().is_success() {
        response
            .json::<T>()
            .await
            .map_err(|e| CpError::Protocol(e.to_string()))
    } else {
        Err(refusal(response).await)
    }
}

async fn refusal(response: Response) -> CpError {
    let status = response.status();
    if status == StatusCode::UNAUTHORIZED {
        return CpError::Unauthorized(status);
    }
    if status.is_server_error() {
        return CpError::Unavailable(format!("status {status}"));
    }
    match response.json::<ErrorBody>().await {
        Ok(body) => CpError::Refused { status, body },
        Err(_) => CpError::Protocol(format!("status {status} without an error body")),
    }
}
