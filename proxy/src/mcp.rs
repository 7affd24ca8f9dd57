//! The sidecar's MCP endpoint (`http://<mcp_listen>/mcp`, Streamable HTTP, the official `rmcp`
//! SDK; docs/mcp-notes.md): one tool, `http_request`, for agents whose host speaks MCP but cannot
//! set `HTTP_PROXY`.
//!
//! There is no second implementation of anything: the tool sends the request through this
//! sidecar's own proxy listener, in forward mode, with the caller's token as the proxy
//! password. Admission, rate limits, injection, the SSRF guard, destination binding, scrubbing
//! and the `secret.read` audit events are exactly a proxied request's. A refusal of the proxy
//! (it carries [`DENIAL_HEADER`]) comes back as a tool error with its code; an upstream's answer,
//! whatever its status, as the result, its body capped at [`MAX_RESPONSE_BODY_BYTES`].
//!
//! Each call is also an `mcp.tool_called` event (tool, outcome, the token's id, the caller's
//! address), reported through the same spool. Its room is reserved before anything is sent,
//! so a full spool refuses the call with `audit_unavailable`; a call refused for a bad token is
//! recorded only best effort, like any refusal of the proxy (`crate::audit`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use agent_secret_core::api::{
    ErrorCode, SidecarAuditEvent, SidecarEventKind, MAX_USER_AGENT_CHARS,
};
use agent_secret_core::credential::{CredentialKind, PresentedCredential};
use axum::extract::{ConnectInfo, Request};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{tool, tool_handler, tool_router, RoleServer, ServerHandler};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use zeroize::Zeroizing;

use crate::audit::Audit;
use crate::denial::DENIAL_HEADER;

/// An upstream body above this is cut (the result says so).
pub const MAX_RESPONSE_BODY_BYTES: usize = 1024 * 1024;
/// Largest JSON-RPC request (a request body travels base64- or text-encoded inside it).
pub const MAX_MCP_BODY_BYTES: usize = 2 * 1024 * 1024;

/// The caller's scoped token, from `Authorization: Bearer`, for the proxy password.
#[derive(Clone)]
struct CallerToken(Zeroizing<String>);

/// The router of the MCP listener, forwarding through the proxy at `proxy_addr` and auditing
/// into `audit`. Serve it with `into_make_service_with_connect_info::<SocketAddr>()`: events
/// name the caller's address.
pub fn router(proxy_addr: SocketAddr, audit: Audit) -> Result<axum::Router, reqwest::Error> {
    let proxy = reqwest::Proxy::http(format!("http://{proxy_addr}"))?;
    let client = reqwest::Client::builder()
        .proxy(proxy)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(120))
        .build()?;
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_max_request_body_bytes(MAX_MCP_BODY_BYTES);
    let service = StreamableHttpService::new(
        move || Ok(HttpTool::new(client.clone(), audit.clone())),
        std::sync::Arc::new(NeverSessionManager::default()),
        config,
    );
    Ok(axum::Router::new()
        .route_service("/mcp", service)
        .layer(middleware::from_fn(bearer)))
}

/// A request without a bearer token is refused before its body is read; the token itself is
/// judged by the proxy on every tool call.
async fn bearer(mut req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|t| !t.is_empty())
        .map(|t| CallerToken(Zeroizing::new(t.to_owned())));
    match token {
        Some(token) => {
            req.extensions_mut().insert(token);
            next.run(req).await
        }
        None => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
        )
            .into_response(),
    }
}

#[derive(Clone)]
pub struct HttpTool {
    client: reqwest::Client,
    audit: Audit,
    tool_router: ToolRouter<Self>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpRequestArguments {
    /// GET, POST, PUT, PATCH, DELETE, HEAD or OPTIONS.
    pub method: String,
    /// `https://api.example.com/v1/...` (the sidecar originates TLS; `http://` is the same).
    pub url: String,
    /// Header values may hold `{{secret:PATH}}` placeholders.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A text body.
    #[serde(default)]
    pub body: Option<String>,
    /// A binary body, base64 (instead of `body`).
    #[serde(default)]
    pub body_base64: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct HttpResponseOut {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    /// The body as text, when it is UTF-8 (scrubbed of injected values by the sidecar).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The body as base64, when it is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
    /// Whether the body was cut at the size cap.
    pub truncated: bool,
}

fn refusal(code: &str, message: &str) -> CallToolResult {
    CallToolResult::structured_error(json!({"error": {"code": code, "message": message}}))
}

const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

#[tool_router]
impl HttpTool {
    fn new(client: reqwest::Client, audit: Audit) -> Self {
        Self {
            client,
            audit,
            tool_router: Self::tool_router(),
        }
    }

    /// Send an HTTP request through the sidecar: `{{secret:PATH}}` placeholders in header
    /// values are replaced by the secrets (only for hosts each secret is bound to), and the
    /// response comes back with any injected value scrubbed. The value never reaches you.
    #[tool(name = "http_request")]
    async fn http_request(
        &self,
        Parameters(args): Parameters<HttpRequestArguments>,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let Some(parts) = ctx.extensions.get::<axum::http::request::Parts>() else {
            return refusal(ErrorCode::Unauthenticated.as_str(), "no bearer token");
        };
        let Some(token) = parts.extensions.get::<CallerToken>().cloned() else {
            return refusal(ErrorCode::Unauthenticated.as_str(), "no bearer token");
        };
        let Ok(permit) = self.audit.reserve(1) else {
            return refusal(
                ErrorCode::AuditUnavailable.as_str(),
                "the audit spool is full; nothing was sent",
            );
        };
        let mut event = SidecarAuditEvent {
            kind: SidecarEventKind::McpToolCalled,
            // Read from the presented token, unverified, as for the proxy's refusals: the
            // proxy's own `secret.read` events carry the id the control plane vouched for.
            token_id: PresentedCredential::id_of_kind(CredentialKind::Token, &token.0)
                .ok()
                .map(|id| id.hyphenated().to_string()),
            client_ip: parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip().to_string()),
            user_agent: parts
                .headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|ua| ua.chars().take(MAX_USER_AGENT_CHARS).collect()),
            path: None,
            destination_host: reqwest::Url::parse(&args.url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned)),
            success: false,
            reason: None,
            occurred_at: chrono::Utc::now(),
        };
        let result = match self.send(&token, args).await {
            Ok(result) => result,
            Err(refused) => refused,
        };
        let outcome = outcome(&result);
        event.success = outcome.starts_with("ok");
        event.reason = Some(format!("tool http_request; {outcome}"));
        if [ErrorCode::Unauthenticated, ErrorCode::TokenInvalid]
            .iter()
            .any(|code| outcome == code.as_str())
        {
            // Anyone on the host can present garbage: such calls share the refusals' part of
            // the spool instead of the room kept for calls that reached an upstream.
            drop(permit);
            let _ = self.audit.record_denial(&event);
        } else {
            permit.record([event.borrowed()]);
        }
        result
    }
}

/// `ok; HTTP <status>` for an upstream's answer, else the refusal's code.
fn outcome(result: &CallToolResult) -> String {
    let content = result.structured_content.as_ref();
    if result.is_error == Some(true) {
        return content
            .and_then(|v| v["error"]["code"].as_str())
            .unwrap_or("error")
            .to_owned();
    }
    match content.and_then(|v| v["status"].as_u64()) {
        Some(status) => format!("ok; HTTP {status}"),
        None => "ok".to_owned(),
    }
}

impl HttpTool {
    async fn send(
        &self,
        token: &CallerToken,
        args: HttpRequestArguments,
    ) -> Result<CallToolResult, CallToolResult> {
        let invalid = |m: &str| refusal(ErrorCode::InvalidRequest.as_str(), m);
        let method = args.method.to_ascii_uppercase();
        if !METHODS.contains(&method.as_str()) {
            return Err(invalid(
                "method must be one of GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS",
            ));
        }
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| invalid("unknown method"))?;
        let mut url = reqwest::Url::parse(&args.url).map_err(|_| invalid("url is not a URL"))?;
        match url.scheme() {
            // Forward mode: the agent names the destination over plain HTTP and the sidecar
            // originates TLS to it (README, "Using the sidecar").
            "https" => url
                .set_scheme("http")
                .map_err(|()| invalid("url cannot be sent"))?,
            "http" => {}
            _ => return Err(invalid("url must be http or https")),
        }
        let body = match (args.body, args.body_base64) {
            (Some(_), Some(_)) => return Err(invalid("give body or body_base64, not both")),
            (Some(text), None) => text.into_bytes(),
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map_err(|_| invalid("body_base64 is not base64"))?,
            (None, None) => Vec::new(),
        };
        let password = Zeroizing::new(format!("agent:{}", token.0.as_str()));
        let proxy_auth = Zeroizing::new(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(password.as_bytes())
        ));
        let mut request = self.client.request(method, url).body(body);
        for (name, value) in &args.headers {
            if name.eq_ignore_ascii_case("proxy-authorization") || name.eq_ignore_ascii_case("host")
            {
                return Err(invalid(
                    "the proxy-authorization and host headers are set by the sidecar",
                ));
            }
            request = request.header(name.as_str(), value.as_str());
        }
        let mut proxy_auth =
            reqwest::header::HeaderValue::from_str(proxy_auth.as_str()).map_err(|_| {
                refusal(
                    ErrorCode::Unauthenticated.as_str(),
                    "the token is malformed",
                )
            })?;
        proxy_auth.set_sensitive(true);
        let response = request
            .header(reqwest::header::PROXY_AUTHORIZATION, proxy_auth)
            .send()
            .await
            .map_err(|e| {
                tracing::warn!(error = %e.without_url(), "the MCP http_request could not reach the proxy");
                refusal(ErrorCode::UpstreamUnavailable.as_str(), "the request could not be sent")
            })?;
        let denial = response
            .headers()
            .get(DENIAL_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let status = response.status().as_u16();
        let headers: BTreeMap<String, String> = response
            .headers()
            .iter()
            .filter(|(name, _)| name.as_str() != DENIAL_HEADER)
            .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_owned())))
            .collect();
        let (bytes, truncated) = read_capped(response).await;
        if let Some(code) = denial {
            let message = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "refused by the sidecar".to_owned());
            return Err(refusal(&code, &message));
        }
        let (body, body_base64) = match String::from_utf8(bytes) {
            Ok(text) => (Some(text), None),
            Err(e) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(e.as_bytes())),
            ),
        };
        let out = HttpResponseOut {
            status,
            headers,
            body,
            body_base64,
            truncated,
        };
        Ok(serde_json::to_value(out)
            .map(CallToolResult::structured)
            .unwrap_or_else(|_| refusal(ErrorCode::Internal.as_str(), "internal error")))
    }
}

/// The body up to [`MAX_RESPONSE_BODY_BYTES`], and whether there was more.
async fn read_capped(mut response: reqwest::Response) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = MAX_RESPONSE_BODY_BYTES - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return (body, true);
        }
        body.extend_from_slice(&chunk);
    }
    (body, false)
}

#[tool_handler(router = self.tool_router, name = "agent-secret-store-sidecar", version = "0.1.0")]
impl ServerHandler for HttpTool {}
