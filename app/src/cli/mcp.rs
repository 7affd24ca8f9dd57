//! `agent-secret-store mcp`: an MCP server over stdio for hosts that launch MCP servers as
//! commands (desktop assistants, IDE agents). It offers the tools of the control plane's MCP
//! server (`list_secrets`, `request_token`, `request_access`, `approval_status`) and, with
//! `--sidecar`, the sidecar's `http_request`, forwarding each call to the server that has it
//! over Streamable HTTP (docs/mcp-notes.md). It holds no secret values: the sidecar injects
//! them, and what comes back is scrubbed.
//!
//! Credentials come from the environment, never argv: `AGENT_SECRET_STORE_AGENT_KEY` (the agent
//! key, or a scoped token) for the control plane, `AGENT_SECRET_STORE_AGENT_TOKEN` (a scoped
//! token) for the sidecar. stdout carries the protocol only; logs go to stderr.

use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ResultType, ServerCapabilities, ServerConfig,
};
use rmcp::service::{RequestContext, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{
    ErrorData as McpError, Peer, RoleClient, RoleServer, ServerHandler, ServiceError, ServiceExt,
};
use zeroize::Zeroizing;

use super::failure::Failure;
use super::GlobalArgs;

/// The control plane's credential for the bridge.
pub const ENV_AGENT_KEY: &str = "AGENT_SECRET_STORE_AGENT_KEY";
/// The sidecar's credential for the bridge.
pub const ENV_AGENT_TOKEN: &str = "AGENT_SECRET_STORE_AGENT_TOKEN";

#[derive(Debug, clap::Args)]
pub struct McpArgs {
    /// The sidecar's MCP endpoint, e.g. http://127.0.0.1:8081/mcp (its `mcp_listen`); without
    /// it only the control plane's tools are offered.
    #[arg(long, env = "AGENT_SECRET_SIDECAR_MCP", value_name = "URL")]
    pub sidecar: Option<String>,
}

/// One upstream MCP server and the tools it offered when the bridge connected.
struct Upstream {
    name: &'static str,
    peer: Peer<RoleClient>,
    tools: Vec<String>,
}

#[derive(Clone)]
struct Bridge {
    upstreams: Arc<Vec<Upstream>>,
}

pub async fn run(global: &GlobalArgs, args: McpArgs) -> Result<(), Failure> {
    let key = credential(ENV_AGENT_KEY)?;
    let ca = match &global.ca_cert {
        Some(path) => Some(std::fs::read(path).map_err(|e| {
            Failure::invalid_argument(format!("cannot read --ca-cert {}: {e}", path.display()))
        })?),
        None => None,
    };
    let control_plane_url = format!("{}/mcp", global.server.trim_end_matches('/'));
    let mut running = Vec::new();
    let mut upstreams = Vec::new();
    let cp = connect(&control_plane_url, ca.as_deref(), &key).await?;
    upstreams.push(upstream("control plane", &cp).await?);
    running.push(cp);
    if let Some(url) = &args.sidecar {
        let token = credential(ENV_AGENT_TOKEN)?;
        let sidecar = connect(url, None, &token).await?;
        upstreams.push(upstream("sidecar", &sidecar).await?);
        running.push(sidecar);
    }
    let bridge = Bridge {
        upstreams: Arc::new(upstreams),
    };
    let server = bridge
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| Failure::failed("mcp_failed", format!("stdio: {e}")))?;
    let ended = server.waiting().await;
    // The upstream connections live as long as the stdio session.
    drop(running);
    ended
        .map(drop)
        .map_err(|e| Failure::failed("mcp_failed", e.to_string()))
}

fn credential(var: &str) -> Result<Zeroizing<String>, Failure> {
    std::env::var(var)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(|v| Zeroizing::new(v.trim().to_owned()))
        .ok_or_else(|| {
            Failure::missing_credential(format!(
                "set {var} (it is never read from the command line)"
            ))
        })
}

async fn connect(
    url: &str,
    ca_pem: Option<&[u8]>,
    bearer: &str,
) -> Result<RunningService<RoleClient, ()>, Failure> {
    let mut http = reqwest013::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest013::redirect::Policy::none());
    if let Some(pem) = ca_pem {
        let certs = reqwest013::Certificate::from_pem_bundle(pem)
            .map_err(|e| Failure::invalid_argument(format!("--ca-cert: {e}")))?;
        http = http.tls_certs_only(certs);
    }
    let http = http
        .build()
        .map_err(|e| Failure::failed("mcp_failed", e.to_string()))?;
    let config = StreamableHttpClientTransportConfig::with_uri(url).auth_header(bearer);
    let transport = StreamableHttpClientTransport::with_client(http, config);
    ().serve(transport)
        .await
        .map_err(|e| Failure::connection_failed(format!("{url}: {e}")))
}

async fn upstream(
    name: &'static str,
    running: &RunningService<RoleClient, ()>,
) -> Result<Upstream, Failure> {
    let peer = running.peer().clone();
    let tools = peer
        .list_all_tools()
        .await
        .map_err(|e| Failure::connection_failed(format!("{name}: {e}")))?
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    Ok(Upstream { name, peer, tools })
}

impl ServerHandler for Bridge {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build()).with_server_info(
            Implementation::new("agent-secret-store", env!("CARGO_PKG_VERSION")),
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let mut tools = Vec::new();
        for upstream in self.upstreams.iter() {
            let listed = upstream.peer.list_all_tools().await.map_err(|e| {
                McpError::internal_error(format!("{} unreachable: {e}", upstream.name), None)
            })?;
            tools.extend(listed);
        }
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let name = request.name.to_string();
        let Some(upstream) = self.upstreams.iter().find(|u| u.tools.contains(&name)) else {
            return Err(McpError::invalid_params(
                format!("tool not found: {name}"),
                None,
            ));
        };
        let mut forwarded = CallToolRequestParams::new(name);
        if let Some(arguments) = request.arguments {
            forwarded = forwarded.with_arguments(arguments);
        }
        match upstream.peer.call_tool(forwarded).await {
            Ok(mut result) => {
                // The upstream session speaks an older protocol revision, whose results carry
                // no `resultType`; a current client needs it (docs/mcp-notes.md, section 4).
                result.result_type = Some(ResultType::COMPLETE);
                Ok(result.into())
            }
            Err(ServiceError::McpError(e)) => Err(e),
            Err(e) => Ok(CallToolResult::error(vec![ContentBlock::text(format!(
                "the {} could not be reached: {e}",
                upstream.name
            ))])
            .into()),
        }
    }
}
