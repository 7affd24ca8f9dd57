//! The agent's MCP tools. Each is a thin adapter over the service the API uses
//! (`service::agent_view`, `service::tokens`), so roles, limits, approvals and audit are the
//! API's. Refusals come back as tool errors (`isError`) carrying the documented denial code and
//! message, never a stack trace; every call lands in the audit log as `mcp.tool_called` with the
//! tool and its outcome, and a read whose event cannot be written returns nothing.

use std::sync::Arc;

use agent_secret_core::api::{ApprovalInfo, ErrorCode, IssueTokenRequest, IssuedToken};
use agent_secret_core::ids::ApprovalId;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolRequestParams, CallToolResponse, CallToolResult};
use rmcp::service::RequestContext;
use rmcp::{tool, tool_handler, tool_router, ErrorData as McpError, RoleServer, ServerHandler};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::McpCaller;
use crate::audit::{AuditDraft, AuditEventType};
use crate::service::agent_view::{self, SecretOffer};
use crate::service::{limits, tokens, App, ServiceError};

/// A tool's arguments above this many bytes (as JSON) are refused before anything runs.
const MAX_ARGUMENT_BYTES: usize = 16 * 1024;

#[derive(Clone)]
pub struct AgentTools {
    app: Arc<App>,
    tool_router: ToolRouter<Self>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArguments {}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SecretsOut {
    /// Secrets within this agent's ceiling, in path order. Values are never returned: put the
    /// placeholder in a request header sent through the sidecar.
    pub secrets: Vec<OfferOut>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct OfferOut {
    pub path: String,
    /// `{{secret:PATH}}`.
    pub placeholder: String,
    /// `standard`, `sensitive` or `critical`.
    pub sensitivity: String,
    /// The only hosts the sidecar injects it into.
    pub allowed_hosts: Vec<String>,
    /// Whether the token this call presented may use it now.
    pub usable_now: bool,
    /// Why not: `no_token`, or the denial code a request would get (`approval_pending`,
    /// `scope_denied`, `token_expired`, `token_revoked`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why_not: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenArguments {
    /// Scopes such as `secrets:read:production/openai/*`.
    pub scopes: Vec<String>,
    /// Lifetime in seconds.
    pub ttl_seconds: u64,
    /// Uses before it is spent (absent: unlimited within its lifetime).
    #[serde(default)]
    pub max_uses: Option<u32>,
    /// CIDRs the token may be used from.
    #[serde(default)]
    pub ip_allowlist: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessArguments {
    /// Secret paths (or path patterns such as `team/*`) to be allowed to read.
    pub paths: Vec<String>,
    /// Why, for the humans who decide (recorded in the audit log).
    pub reason: String,
    /// Lifetime of the token that waits for the decision (default 3600 s).
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct TokenOut {
    pub id: String,
    /// The scoped token: the proxy password for the sidecar. Keep it secret.
    pub token: String,
    /// `active`, or `pending_approval` until humans approve.
    pub status: String,
    pub expires_at: String,
    /// Poll it with `approval_status` while pending.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalArguments {
    pub approval_id: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ApprovalOut {
    pub id: String,
    /// `pending`, `approved`, `denied` or `expired`.
    pub status: String,
    pub approvals_counted: u8,
    pub required_approvals: u8,
    /// Once the quorum is met: when the token turns active.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_from: Option<String>,
    pub expires_at: String,
    /// What approval unlocks: path and sensitivity.
    pub unlocks: Vec<(String, String)>,
    /// Ceiling additions an access request asks for.
    pub ceiling_additions: Vec<String>,
}

/// A tool's refusal as the model reads it.
fn refusal(code: ErrorCode, message: &str) -> CallToolResult {
    CallToolResult::structured_error(json!({"error": {"code": code.as_str(), "message": message}}))
}

fn service_refusal(e: ServiceError) -> CallToolResult {
    let code = e.code();
    let message = match e {
        ServiceError::Store(_) | ServiceError::Kms(_) | ServiceError::Internal(_) => {
            "internal error; it is logged".to_owned()
        }
        other => other.to_string(),
    };
    refusal(code, &message)
}

fn token_out(t: IssuedToken) -> TokenOut {
    TokenOut {
        id: t.id,
        token: t.token,
        status: t.status.as_str().to_owned(),
        expires_at: t.expires_at.to_rfc3339(),
        approval_id: t.approval_id,
    }
}

fn approval_out(a: ApprovalInfo) -> ApprovalOut {
    ApprovalOut {
        status: a.status.as_str().to_owned(),
        approvals_counted: a.approvals_counted,
        required_approvals: a.required_approvals,
        active_from: a.time_lock_until.map(|t| t.to_rfc3339()),
        expires_at: a.expires_at.to_rfc3339(),
        unlocks: a
            .unlocks
            .secrets
            .into_iter()
            .map(|s| (s.path, s.sensitivity.as_str().to_owned()))
            .collect(),
        ceiling_additions: a.unlocks.ceiling_additions,
        id: a.id,
    }
}

fn offer_out(o: SecretOffer) -> OfferOut {
    OfferOut {
        path: o.path,
        placeholder: o.placeholder,
        sensitivity: o.sensitivity.as_str().to_owned(),
        allowed_hosts: o.allowed_hosts,
        usable_now: o.usable_now,
        why_not: o.why_not.map(str::to_owned),
    }
}

/// The caller the middleware authenticated (always there behind it).
fn caller(ctx: &RequestContext<RoleServer>) -> Option<McpCaller> {
    ctx.extensions
        .get::<axum::http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<McpCaller>().cloned())
}

/// A JSON value for a tool's structured output.
fn structured(value: impl Serialize) -> CallToolResult {
    match serde_json::to_value(value) {
        Ok(v) => CallToolResult::structured(v),
        Err(_) => refusal(ErrorCode::Internal, "internal error; it is logged"),
    }
}

#[tool_router]
impl AgentTools {
    pub fn new(app: Arc<App>) -> Self {
        Self {
            app,
            tool_router: Self::tool_router(),
        }
    }

    /// The secrets this agent may ask for, as placeholders with their sensitivity and bound
    /// hosts, and whether the presented token may use each now. Never a value.
    #[tool(name = "list_secrets", annotations(read_only_hint = true))]
    async fn list_secrets(
        &self,
        Parameters(_): Parameters<NoArguments>,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let Some(c) = caller(&ctx) else {
            return refusal(ErrorCode::Unauthenticated, "missing or invalid credentials");
        };
        match agent_view::offers(&self.app, &c.caller).await {
            Ok(offers) => structured(SecretsOut {
                secrets: offers.into_iter().map(offer_out).collect(),
            }),
            Err(e) => service_refusal(e),
        }
    }

    /// A scoped token for these scopes (agent key only). Sensitive or critical secrets make it
    /// `pending_approval` with an approval id to poll.
    #[tool(name = "request_token")]
    async fn request_token(
        &self,
        Parameters(args): Parameters<TokenArguments>,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let request = IssueTokenRequest {
            scopes: args.scopes,
            ttl_seconds: args.ttl_seconds,
            ip_allowlist: args.ip_allowlist,
            max_uses: args.max_uses,
            request_access: false,
        };
        self.issue(&ctx, request).await
    }

    /// Ask the operators for access to secrets outside this agent's ceiling (agent key only):
    /// a pending token and an approval request they decide on.
    #[tool(name = "request_access")]
    async fn request_access(
        &self,
        Parameters(args): Parameters<AccessArguments>,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        if args.reason.trim().is_empty() {
            return refusal(
                ErrorCode::InvalidRequest,
                "give a reason: the humans who decide read it",
            );
        }
        let request = IssueTokenRequest {
            scopes: args
                .paths
                .iter()
                .map(|p| format!("secrets:read:{p}"))
                .collect(),
            ttl_seconds: args.ttl_seconds.unwrap_or(3600),
            ip_allowlist: None,
            max_uses: None,
            request_access: true,
        };
        self.issue(&ctx, request).await
    }

    /// One of this agent's approval requests: approvals so far, the quorum, the time lock and
    /// the decision.
    #[tool(name = "approval_status", annotations(read_only_hint = true))]
    async fn approval_status(
        &self,
        Parameters(args): Parameters<ApprovalArguments>,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let Some(c) = caller(&ctx) else {
            return refusal(ErrorCode::Unauthenticated, "missing or invalid credentials");
        };
        let Ok(id) = args.approval_id.parse::<ApprovalId>() else {
            return refusal(ErrorCode::NotFound, "approval not found");
        };
        match agent_view::approval_status(&self.app, &c.caller, id).await {
            Ok(info) => structured(approval_out(info)),
            Err(e) => service_refusal(e),
        }
    }
}

impl AgentTools {
    async fn issue(
        &self,
        ctx: &RequestContext<RoleServer>,
        request: IssueTokenRequest,
    ) -> CallToolResult {
        let Some(c) = caller(ctx) else {
            return refusal(ErrorCode::Unauthenticated, "missing or invalid credentials");
        };
        if c.caller.token.is_some() {
            return refusal(
                ErrorCode::Forbidden,
                "tokens are issued to the agent key, not to another token",
            );
        }
        if let Err(e) = limits::admit_token_issue(&self.app, c.caller.agent, &c.ctx).await {
            return service_refusal(e);
        }
        match tokens::issue(&self.app, c.caller.agent, request, &c.ctx).await {
            Ok(issued) => structured(token_out(issued)),
            Err(e) => service_refusal(e),
        }
    }

    /// Writes `mcp.tool_called`. `false` if it could not be written.
    async fn audit(&self, c: &McpCaller, tool: &str, outcome: &str, detail: &str) -> bool {
        let draft = AuditDraft::new(AuditEventType::McpToolCalled, c.caller.agent.actor())
            .client(c.ctx.ip_string(), c.ctx.user_agent.clone())
            .reason(format!("tool {tool}; {outcome}{detail}"));
        match self
            .app
            .store
            .append_audit(c.caller.agent.tenant, draft)
            .await
        {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(error = %e, tool, "mcp.tool_called could not be written");
                false
            }
        }
    }
}

/// The outcome of a result for the audit log: `ok`, or the refusal's code.
fn outcome(result: &CallToolResult) -> String {
    if result.is_error != Some(true) {
        return "ok".to_owned();
    }
    result
        .structured_content
        .as_ref()
        .and_then(|v| v["error"]["code"].as_str())
        .unwrap_or("error")
        .to_owned()
}

/// A reason typed by the agent, as the audit log keeps it: one line, at most 200 characters.
fn reason_detail(arguments: Option<&serde_json::Map<String, Value>>) -> String {
    let Some(reason) = arguments
        .and_then(|a| a.get("reason"))
        .and_then(Value::as_str)
    else {
        return String::new();
    };
    let clean: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    format!("; reason: {clean}")
}

#[tool_handler(router = self.tool_router, name = "agent-secret-store", version = "0.1.0")]
impl ServerHandler for AgentTools {
    /// One gate for every call: argument size, the call itself, then its audit event.
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let size = request
            .arguments
            .as_ref()
            .map_or(0, |a| serde_json::to_vec(a).map_or(usize::MAX, |v| v.len()));
        let c = caller(&context);
        let tool = request.name.to_string();
        let detail = reason_detail(request.arguments.as_ref());
        let response = if size > MAX_ARGUMENT_BYTES {
            // A protocol error (invalid params), as for arguments that do not fit the schema;
            // its data carries the API's code.
            Err(McpError::invalid_params(
                format!("arguments exceed {MAX_ARGUMENT_BYTES} bytes"),
                Some(json!({"code": ErrorCode::PayloadTooLarge.as_str()})),
            ))
        } else {
            let call = ToolCallContext::new(self, request, context);
            self.tool_router.call(call).await
        };
        let Some(c) = c else {
            return response;
        };
        let logged = match &response {
            Ok(CallToolResponse::Complete(result)) => {
                self.audit(&c, &tool, &outcome(result), &detail).await
            }
            Ok(_) => self.audit(&c, &tool, "ok", &detail).await,
            Err(e) => {
                let code = e.data.as_ref().and_then(|d| d["code"].as_str());
                let outcome = match code {
                    Some(code) => format!("protocol error {}: {code}", e.code.0),
                    None => format!("protocol error {}", e.code.0),
                };
                self.audit(&c, &tool, &outcome, "").await
            }
        };
        if !logged {
            // Fail closed: nothing of a call whose audit event is missing leaves the server.
            return Ok(refusal(
                ErrorCode::AuditUnavailable,
                "the audit log could not record this call; nothing was returned",
            )
            .into());
        }
        response
    }
}
