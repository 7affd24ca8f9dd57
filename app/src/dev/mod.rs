//! `agent-secret-store dev`: the whole system on one machine in one command.
//!
//! Creates (or reuses) `./.agent-secret-store/` with a SQLite database, a local keyring under a
//! generated master key, a pepper, a dev CA and the demo identities; starts the control plane,
//! the sidecar (embedded: this is the one place the control-plane binary links the proxy
//! crate, behind the default `dev` feature) and a demo echo upstream; and prints a `curl` that
//! shows the injection and the scrubbing. `dev.json` tells scripts how to drive it.
//! Re-running reuses everything except the demo token, which is issued afresh.

mod echo;
mod state;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use agent_secret_core::api::{IssueTokenRequest, PutSecretRequest};
use agent_secret_core::secret::SecretString;
use serde_json::json;
use tokio::net::TcpListener;

use crate::cli::failure::Failure;
use crate::cli::output::Output;
use agent_secret_control_plane::bootstrap;
use agent_secret_control_plane::config::{Config, DatabaseUrl, NotificationsConfig};
use agent_secret_control_plane::service::auth::{
    authenticate, expect_agent, expect_operator, OperatorPrincipal,
};
use agent_secret_control_plane::service::{secrets, tokens, App, RequestContext};

pub use state::DevState;

/// The demo secret every dev install has.
pub const DEMO_PATH: &str = "demo/echo/api_key";

/// Where `dev` listens; defaults are the documented ports.
#[derive(Clone, Debug, clap::Args)]
pub struct DevArgs {
    /// Directory holding the dev install (created 0700 if missing).
    #[arg(long, default_value = ".agent-secret-store", value_name = "DIR")]
    pub dir: PathBuf,
    /// Control-plane HTTPS API.
    #[arg(long, default_value = "127.0.0.1:8200")]
    pub listen: SocketAddr,
    /// Sidecar proxy (where agents send requests).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub proxy_listen: SocketAddr,
    /// Sidecar admin (/metrics, /healthz).
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub admin_listen: SocketAddr,
    /// The sidecar's MCP endpoint (`http_request` tool) at `/mcp`.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub mcp_listen: SocketAddr,
    /// The demo echo upstream.
    #[arg(long, default_value = "127.0.0.1:18080")]
    pub echo_listen: SocketAddr,
}

fn failed(code: &'static str) -> impl Fn(anyhow::Error) -> Failure {
    move |e| Failure::failed(code, format!("{e:#}"))
}

/// Runs until Ctrl-C (or `shutdown` resolves), then stops everything.
pub async fn run(
    args: &DevArgs,
    out: Output,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Failure> {
    let dir =
        std::path::absolute(&args.dir).map_err(|e| Failure::failed("dev_failed", e.to_string()))?;
    state::create_private_dir(&dir).map_err(failed("dev_failed"))?;
    let mut config = dev_config(&dir, args.listen);
    write_config_file(&dir, &config).map_err(failed("dev_failed"))?;
    config.notifications = notifications_from_env().map_err(failed("dev_failed"))?;
    bootstrap::ensure_pepper_file(&config).map_err(failed("dev_failed"))?;
    bootstrap::ensure_master_key_file(&config).map_err(failed("dev_failed"))?;
    let app = Arc::new(
        bootstrap::open_app(&config)
            .await
            .map_err(failed("dev_failed"))?,
    );

    let echo_listener = bind(args.echo_listen, "echo upstream").await?;
    let echo_host = echo_listener
        .local_addr()
        .map_err(|e| Failure::failed("listen_failed", e.to_string()))?;
    let state = DevState::load_or_create(&app, &dir, echo_host).await?;
    let admin = operator(&app, &state.admin_token).await?;
    ensure_demo_secret(&app, admin, &state, echo_host).await?;
    let demo_token = issue_demo_token(&app, &state).await?;

    let tls = agent_secret_control_plane::tls::self_signed(&dir.join("tls"))
        .map_err(|e| Failure::failed("dev_failed", e.to_string()))?;
    let cp_listener = bind(args.listen, "control plane").await?;
    let cp_addr = cp_listener
        .local_addr()
        .map_err(|e| Failure::failed("listen_failed", e.to_string()))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let rotation = agent_secret_control_plane::rotation::spawn(
        app.clone(),
        bootstrap::rotation_schedule(&config),
    );
    let backups = agent_secret_control_plane::backup::schedule::start(&config, &app)
        .map_err(|e| Failure::failed(e.code(), e.to_string()))?;
    let cp_task = tokio::spawn(agent_secret_control_plane::server::serve(
        cp_listener,
        Arc::new(tls.config),
        app.clone(),
        stopped(stop_rx.clone()),
    ));
    let echo_task = tokio::spawn(echo::serve(
        echo_listener,
        SecretString::new(state.demo_value.clone()),
        stopped(stop_rx.clone()),
    ));

    let sidecar_config = sidecar::config(&dir, &tls.cert_path, cp_addr, args, echo_host)?;
    let sidecar = agent_secret_proxy::Sidecar::start(sidecar_config)
        .await
        .map_err(|e| Failure::failed("sidecar_failed", e.to_string()))?;

    let info = json!({
        "control_plane_url": format!("https://{cp_addr}"),
        "ca_cert": tls.cert_path,
        "ca_fingerprint_sha256": tls.fingerprint_sha256,
        "proxy_url": format!("http://{}", sidecar.proxy_addr()),
        "admin_url": format!("http://{}", sidecar.admin_addr()),
        "control_plane_mcp_url": format!("https://{cp_addr}/mcp"),
        "sidecar_mcp_url": sidecar.mcp_addr().map(|a| format!("http://{a}/mcp")),
        "admin_token": state.admin_token,
        "tenant_id": state.tenant_id,
        "keyring": config.kms.keyring,
        "master_key_file": config.kms.master_key_file,
        "agent_id": state.agent_id,
        "agent_key": state.agent_key,
        "demo_token": demo_token.expose(),
        "demo_placeholder": format!("{{{{secret:{DEMO_PATH}}}}}"),
        "echo_url": echo::url(echo_host),
    });
    state::write_private(
        &dir.join("dev.json"),
        &serde_json::to_vec_pretty(&info).unwrap_or_default(),
    )
    .map_err(failed("dev_failed"))?;
    out.note(&banner(
        &dir,
        &info,
        sidecar.proxy_addr(),
        echo_host,
        demo_token.expose(),
    ));
    out.emit(&info, |_| Ok(()))?;

    shutdown.await;
    out.note("stopping…");
    // The sidecar first, so its last audit events reach a control plane that is still up.
    sidecar.stop().await;
    let _ = stop_tx.send(true);
    let _ = cp_task.await;
    rotation.abort();
    if let Some(backups) = backups {
        backups.abort();
    }
    let _ = echo_task.await;
    Ok(())
}

mod sidecar {
    //! The embedded sidecar's configuration, built in code; `Sidecar::start` validates it as
    //! it validates a config file.

    use std::net::SocketAddr;
    use std::path::Path;

    use agent_secret_core::host::HostPattern;
    use agent_secret_proxy::config::{ControlPlaneConfig, HostRule, KmsConfig};
    use agent_secret_proxy::ProxyConfig;

    use super::DevArgs;
    use crate::cli::failure::Failure;

    pub fn config(
        dir: &Path,
        ca: &Path,
        control_plane: SocketAddr,
        args: &DevArgs,
        echo: SocketAddr,
    ) -> Result<ProxyConfig, Failure> {
        let mut cp = ControlPlaneConfig::new(format!("https://{control_plane}"));
        cp.ca_file = Some(ca.to_owned());
        cp.sidecar_key_file = Some(dir.join("sidecar.key"));
        let kms = KmsConfig::local(dir.join("keyring.json"), dir.join("master.key"));
        let mut config = ProxyConfig::new(cp, kms);
        config.listen = args.proxy_listen;
        config.admin_listen = args.admin_listen;
        config.mcp_listen = Some(args.mcp_listen);
        config.shutdown_grace_seconds = 1;
        config.audit.spool_path = dir.join("audit-spool");
        let echo = HostPattern::parse(&echo.to_string())
            .map_err(|e| Failure::failed("sidecar_failed", e.to_string()))?;
        config.hosts.push(HostRule {
            plaintext: true,
            allow_private: true,
            ..HostRule::new(echo)
        });
        Ok(config)
    }
}

fn dev_config(dir: &Path, listen: SocketAddr) -> Config {
    let mut config = Config {
        listen,
        ..Config::default()
    };
    config.database.url = DatabaseUrl::new(format!("sqlite://{}", dir.join("store.db").display()));
    config.security.pepper_file = dir.join("pepper");
    config.kms.keyring = dir.join("keyring.json");
    config.kms.master_key_file = dir.join("master.key");
    config.backup.directory = Some(dir.join("backups"));
    config
}

/// The same settings as a config file in the state directory, so the commands that run on
/// the control-plane host (`backup`, `restore`, `kms status`, `audit archive`) work on a dev
/// install with `-c .agent-secret-store/control-plane.toml`.
fn write_config_file(dir: &Path, config: &Config) -> anyhow::Result<()> {
    #[derive(serde::Serialize)]
    struct File {
        listen: String,
        database: serde_json::Value,
        security: serde_json::Value,
        kms: serde_json::Value,
        backup: serde_json::Value,
    }
    let text = toml::to_string(&File {
        listen: config.listen.to_string(),
        database: serde_json::json!({ "url": config.database.url.expose() }),
        security: serde_json::json!({ "pepper_file": config.security.pepper_file }),
        kms: serde_json::json!({
            "keyring": config.kms.keyring,
            "master_key_file": config.kms.master_key_file,
        }),
        backup: serde_json::json!({ "directory": config.backup.directory }),
    })?;
    let header =
        "# Written by `agent-secret-store dev` at each start: this state directory's control\n\
                  # plane, for host commands (backup, restore, kms, audit archive) with -c.\n";
    state::write_private(
        &dir.join("control-plane.toml"),
        format!("{header}{text}").as_bytes(),
    )?;
    Ok(())
}

/// `[notifications]` from `AGENT_SECRET_NOTIFICATIONS_*` alone: `dev` reads no config file and
/// fixes everything else, but approval notifications are worth trying against the demo.
fn notifications_from_env() -> anyhow::Result<NotificationsConfig> {
    let only_notifications = |name: &str| {
        name.starts_with("AGENT_SECRET_NOTIFICATIONS_")
            .then(|| std::env::var(name).ok())
            .flatten()
    };
    Ok(Config::load(None, &only_notifications)?.notifications)
}

async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, Failure> {
    TcpListener::bind(addr).await.map_err(|e| {
        Failure::failed(
            "listen_failed",
            format!("{what}: cannot listen on {addr}: {e} (is another `dev` running? pick other ports with --help)"),
        )
    })
}

async fn operator(app: &App, token: &str) -> Result<OperatorPrincipal, Failure> {
    let principal = authenticate(app, token, &RequestContext::default())
        .await
        .and_then(expect_operator)
        .map_err(|e| Failure::failed("dev_state_invalid", format!("the saved admin token no longer works ({e}); remove the dev directory to start over")))?;
    Ok(principal)
}

/// The demo secret, bound to the echo upstream's current address.
async fn ensure_demo_secret(
    app: &App,
    admin: OperatorPrincipal,
    state: &DevState,
    echo: SocketAddr,
) -> Result<(), Failure> {
    let current = secrets::get(app, admin, DEMO_PATH).await.ok();
    let host = echo.to_string();
    if current.is_some_and(|m| m.allowed_hosts == [host.clone()]) {
        return Ok(());
    }
    let request = PutSecretRequest {
        value: state.demo_value.clone(),
        sensitivity: None,
        allowed_hosts: vec![host],
    };
    secrets::put(app, admin, DEMO_PATH, request, &RequestContext::default())
        .await
        .map_err(|e| Failure::failed("dev_failed", e.to_string()))?;
    Ok(())
}

async fn issue_demo_token(app: &App, state: &DevState) -> Result<SecretString, Failure> {
    let agent = authenticate(app, &state.agent_key, &RequestContext::default())
        .await
        .and_then(expect_agent)
        .map_err(|e| Failure::failed("dev_state_invalid", e.to_string()))?;
    let request = IssueTokenRequest {
        scopes: vec!["secrets:read:demo/**".into()],
        ttl_seconds: app.policy.max_token_ttl_seconds,
        ip_allowlist: None,
        max_uses: None,
        request_access: false,
    };
    let issued = tokens::issue(app, agent, request, &RequestContext::default())
        .await
        .map_err(|e| Failure::failed("dev_failed", e.to_string()))?;
    Ok(SecretString::new(issued.token))
}

fn banner(
    dir: &Path,
    info: &serde_json::Value,
    proxy: SocketAddr,
    echo: SocketAddr,
    token: &str,
) -> String {
    let dir = dir.display();
    let cp = info["control_plane_url"].as_str().unwrap_or_default();
    let ca = info["ca_cert"].as_str().unwrap_or_default();
    let admin = info["admin_url"].as_str().unwrap_or_default();
    let sidecar_mcp = info["sidecar_mcp_url"].as_str().unwrap_or_default();
    [
        String::new(),
        format!("Agent Secret Store is running (data in {dir})."),
        String::new(),
        format!("  control plane  {cp}   (CA: {ca})"),
        format!("  dashboard      {cp}/ui   (an operator first: operator create NAME --role admin --password-file F)"),
        format!("  sidecar proxy  http://{proxy}"),
        format!("  sidecar admin  {admin}/metrics"),
        format!("  MCP            {cp}/mcp (agent key or token), {sidecar_mcp} (http_request)"),
        format!("  demo upstream  http://{echo}   (echoes what it receives)"),
        String::new(),
        "Try it: the agent sends a placeholder, the upstream receives the real key, and the".into(),
        "echo comes back to the agent scrubbed:".into(),
        String::new(),
        format!("  curl -x http://{proxy} --proxy-user agent:{token} \\"),
        format!("       -H 'Authorization: Bearer {{{{secret:{DEMO_PATH}}}}}' http://{echo}/hello"),
        String::new(),
        format!("Look for \"authorization\": \"Bearer [REDACTED:{DEMO_PATH}]\" and"),
        "\"authorization_matches_demo_secret\": true. The operator CLI:".into(),
        String::new(),
        format!("  export AGENT_SECRET_STORE_TOKEN=$(jq -r .admin_token {dir}/dev.json)"),
        format!(
            "  agent-secret-store --server {cp} --ca-cert {ca} audit export --type secret.read"
        ),
        String::new(),
        format!("Everything is in {dir}/dev.json. Ctrl-C stops."),
    ]
    .join("\n")
}
