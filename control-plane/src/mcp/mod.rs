//! The control plane's MCP server at `/mcp` (Streamable HTTP, the official `rmcp` SDK; what it
//! relies on is in docs/mcp-notes.md): agents that talk MCP instead of HTTP discover the secrets
//! they may use (as placeholders, never values), ask for tokens and for access, and follow their
//! approval requests.
//!
//! Stateless: every POST stands alone and is authenticated by the middleware here with an agent
//! key or a scoped token (`Authorization: Bearer`), with the API's throttling and auditing of
//! failures, and a per-agent request limit (`rate_limits.mcp_per_agent`); the tools then read the caller from the request (`tools`). Bodies are capped by
//! rmcp itself (a limit layer in front would turn chunked overflows into 500s).

mod tools;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};

use crate::api::extract::request_context;
use crate::service::agent_view::{self, AgentCaller};
use crate::service::{limits, App, RequestContext};

/// Largest JSON-RPC request body; a tool's arguments are far smaller.
pub const MAX_MCP_BODY_BYTES: usize = 64 * 1024;

/// Who called, as the middleware authenticated them, for the tools.
#[derive(Clone, Debug)]
pub struct McpCaller {
    pub caller: AgentCaller,
    pub ctx: RequestContext,
}

/// `/mcp`, to merge into the API's router (its state is applied there).
pub fn router(app: Arc<App>) -> Router<Arc<App>> {
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(Some(Duration::from_secs(15)))
        .with_max_request_body_bytes(MAX_MCP_BODY_BYTES)
        // The Host is the TLS listener's business (its certificate names it); any name that
        // reached us over TLS is acceptable here.
        .disable_allowed_hosts();
    let tools_app = app.clone();
    let service = StreamableHttpService::new(
        move || Ok(tools::AgentTools::new(tools_app.clone())),
        Arc::new(NeverSessionManager::default()),
        config,
    );
    Router::new()
        .route_service("/mcp", service)
        .layer(middleware::from_fn_with_state(app, authenticate))
}

/// Every request to `/mcp` carries an agent key or a scoped token; anything else is 401 before
/// the body is read.
async fn authenticate(
    axum::extract::State(app): axum::extract::State<Arc<App>>,
    mut req: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = req.into_parts();
    let ctx = request_context(&parts);
    let bearer = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let Some(bearer) = bearer else {
        return unauthorized();
    };
    let admitted = match agent_view::authenticate_agent(&app, &bearer, &ctx).await {
        Ok(caller) => limits::admit_mcp(&app, caller.agent, &ctx)
            .await
            .map(|()| caller),
        Err(e) => Err(e),
    };
    match admitted {
        Ok(caller) => {
            parts.extensions.insert(McpCaller { caller, ctx });
            req = Request::from_parts(parts, body);
            next.run(req).await
        }
        // The API's error body and status: 401 `unauthenticated`, 429 `rate_limited` with
        // Retry-After, 403 `forbidden` for an operator's or a sidecar's credential.
        Err(e) => {
            let mut refused = crate::api::error::ApiError::from(e).into_response();
            refused.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
            refused
        }
    }
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
    )
        .into_response()
}
