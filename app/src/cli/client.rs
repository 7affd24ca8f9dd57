//! The HTTPS client the remote commands use to call the control-plane API.
//!
//! It trusts exactly the CA given with `--ca-cert` (this build carries no built-in roots, so a
//! control plane with a private CA cannot be impersonated by any public one), speaks TLS 1.3
//! only, ignores `HTTP(S)_PROXY` (an agent's environment points those at its sidecar, which is
//! not the way to the control plane), and turns the API's `{"error":{"code","message"}}` into a
//! [`Failure`] carrying the same code.

use std::path::Path;
use std::time::Duration;

use agent_secret_core::secret::SecretString;
use reqwest::header::{HeaderValue, AUTHORIZATION};
use reqwest::{Method, RequestBuilder, Url};
use serde::{Deserialize, Serialize};

use super::failure::{error_chain, Failure, EXIT_FAILED, EXIT_USAGE};

/// How long to wait for the TCP and TLS handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest slice of a non-JSON error body quoted in a message.
const QUOTED_BODY_LEN: usize = 200;

/// A configured client for one control plane.
pub struct ApiClient {
    base: Url,
    http: reqwest::Client,
}

/// One request being built; send it with [`ApiRequest::json`] or [`ApiRequest::text`].
pub struct ApiRequest {
    builder: RequestBuilder,
    /// `METHOD URL`, for error messages.
    what: String,
}

#[derive(Deserialize)]
struct ApiErrorBody {
    error: ApiErrorDetail,
}

/// Like `agent_secret_core::api::ErrorDetail`, with the code as a plain string so a code this
/// CLI does not know yet is still passed through.
#[derive(Deserialize)]
struct ApiErrorDetail {
    code: String,
    message: String,
}

impl ApiClient {
    /// A client for `server` (must be `https://`) trusting only the CA certificates in `ca_cert`.
    pub fn new(server: &str, ca_cert: Option<&Path>) -> Result<ApiClient, Failure> {
        // The URL is not echoed: it could carry `user:password@`.
        let base = Url::parse(server)
            .map_err(|e| Failure::invalid_argument(format!("--server is not a URL: {e}")))?;
        if base.scheme() != "https" {
            return Err(Failure::invalid_argument(
                "--server: the control plane is only reached over https://",
            ));
        }
        let ca_path = ca_cert.ok_or_else(|| {
            Failure::new(
                "missing_ca_cert",
                "the control plane's CA certificate is needed: pass --ca-cert FILE or set \
                 AGENT_SECRET_CA_CERT (this client trusts no built-in roots)",
                EXIT_USAGE,
            )
        })?;
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .min_tls_version(reqwest::tls::Version::TLS_1_3)
            .https_only(true)
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!(
                "agent-secret-store-cli/",
                env!("CARGO_PKG_VERSION")
            ));
        for cert in read_ca_bundle(ca_path)? {
            builder = builder.add_root_certificate(cert);
        }
        let http = builder.build().map_err(|e| {
            Failure::new(
                "tls_config",
                format!("cannot set up TLS: {}", error_chain(&e)),
                EXIT_USAGE,
            )
        })?;
        Ok(ApiClient { base, http })
    }

    /// `METHOD {server}/v1/{segments...}` with `Authorization: Bearer {credential}`. Each
    /// segment is percent-encoded, so a secret path or an id cannot change the route.
    pub fn request(
        &self,
        method: Method,
        segments: &[&str],
        credential: &SecretString,
    ) -> Result<ApiRequest, Failure> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| {
                Failure::invalid_argument("--server must be a base URL like https://host:8200")
            })?
            .pop_if_empty()
            .push("v1")
            .extend(segments);
        let mut auth =
            HeaderValue::from_str(&format!("Bearer {}", credential.expose())).map_err(|_| {
                Failure::invalid_argument(
                    "the credential contains characters not allowed in an HTTP header",
                )
            })?;
        auth.set_sensitive(true);
        let what = format!("{method} {url}");
        let builder = self.http.request(method, url).header(AUTHORIZATION, auth);
        Ok(ApiRequest { builder, what })
    }
}

impl ApiRequest {
    /// Adds query parameters, skipping those whose value is `None`.
    pub fn query(mut self, pairs: &[(&str, Option<&str>)]) -> ApiRequest {
        let present: Vec<(&str, &str)> = pairs
            .iter()
            .filter_map(|(k, v)| v.map(|v| (*k, v)))
            .collect();
        if !present.is_empty() {
            self.builder = self.builder.query(&present);
        }
        self
    }

    /// Sends `body` as JSON.
    pub fn body<T: Serialize + ?Sized>(mut self, body: &T) -> ApiRequest {
        self.builder = self.builder.json(body);
        self
    }

    /// Sends the request and parses a successful answer as JSON.
    pub async fn json(self) -> Result<serde_json::Value, Failure> {
        let what = self.what.clone();
        let text = self.text().await?;
        if text.trim().is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_str(&text)
            .map_err(|e| Failure::invalid_response(format!("{what}: the answer is not JSON: {e}")))
    }

    /// Sends the request and copies a successful answer's body into `sink` as it arrives,
    /// calling `progress` with each chunk; returns the bytes copied. A body that breaks off
    /// (the server failed mid-stream) is an error, never a silently short copy.
    pub async fn copy_to(
        self,
        sink: &mut dyn std::io::Write,
        mut progress: impl FnMut(&[u8]),
    ) -> Result<u64, Failure> {
        let mut response = self.builder.send().await.map_err(|e| {
            Failure::connection_failed(format!("{}: {}", self.what, error_chain(&e)))
        })?;
        if !response.status().is_success() {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            return Err(refusal(&self.what, status, &text));
        }
        let mut copied = 0u64;
        loop {
            let chunk = response.chunk().await.map_err(|e| {
                Failure::connection_failed(format!(
                    "{}: the answer broke off after {copied} bytes: {}",
                    self.what,
                    error_chain(&e)
                ))
            })?;
            let Some(chunk) = chunk else {
                return Ok(copied);
            };
            sink.write_all(&chunk)
                .map_err(|e| Failure::failed("write_failed", format!("writing the output: {e}")))?;
            progress(&chunk);
            copied += chunk.len() as u64;
        }
    }

    /// Sends the request and returns a successful answer's body as text.
    pub async fn text(self) -> Result<String, Failure> {
        let response = self.builder.send().await.map_err(|e| {
            Failure::connection_failed(format!("{}: {}", self.what, error_chain(&e)))
        })?;
        let status = response.status();
        let text = response.text().await.map_err(|e| {
            Failure::connection_failed(format!(
                "{}: reading the answer: {}",
                self.what,
                error_chain(&e)
            ))
        })?;
        if status.is_success() {
            return Ok(text);
        }
        Err(refusal(&self.what, status, &text))
    }
}

/// The failure an unsuccessful answer stands for: the API's error code and message, or the
/// start of whatever else came back.
fn refusal(what: &str, status: reqwest::StatusCode, text: &str) -> Failure {
    match serde_json::from_str::<ApiErrorBody>(text) {
        Ok(body) => Failure::new(body.error.code, body.error.message, EXIT_FAILED),
        Err(_) => {
            let quoted: String = text.chars().take(QUOTED_BODY_LEN).collect();
            Failure::new(
                format!("http_{}", status.as_u16()),
                format!("{what}: {status}: {}", quoted.trim()),
                EXIT_FAILED,
            )
        }
    }
}

fn read_ca_bundle(path: &Path) -> Result<Vec<reqwest::Certificate>, Failure> {
    let pem = std::fs::read(path).map_err(|e| {
        Failure::invalid_argument(format!("--ca-cert {}: cannot read: {e}", path.display()))
    })?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
        Failure::invalid_argument(format!(
            "--ca-cert {}: not PEM certificates: {e}",
            path.display()
        ))
    })?;
    if certs.is_empty() {
        return Err(Failure::invalid_argument(format!(
            "--ca-cert {}: no certificate found in the file",
            path.display()
        )));
    }
    Ok(certs)
}
