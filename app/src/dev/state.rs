//! What a dev install remembers between runs: its tenant and the demo identities' credentials,
//! in a 0600 file inside the (0700) dev directory. Development only.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use agent_secret_core::credential::Pepper;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::cli::failure::Failure;
use agent_secret_control_plane::service::auth::expect_operator;
use agent_secret_control_plane::service::{agents, sidecars, tenants, App, RequestContext};

#[derive(Clone, Serialize, Deserialize)]
pub struct DevState {
    pub tenant_id: String,
    pub admin_token: String,
    pub sidecar_key: String,
    pub agent_id: String,
    pub agent_key: String,
    /// The demo secret's value (a random string; the echo upstream compares against it).
    pub demo_value: String,
}

impl std::fmt::Debug for DevState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevState")
            .field("tenant_id", &self.tenant_id)
            .finish_non_exhaustive()
    }
}

impl DevState {
    pub async fn load_or_create(
        app: &App,
        dir: &Path,
        _echo: SocketAddr,
    ) -> Result<DevState, Failure> {
        let path = dir.join("state.json");
        let state = match std::fs::read(&path) {
            // Only the place: serde's message can quote a value, and this file holds keys.
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                Failure::failed(
                    "dev_state_invalid",
                    format!(
                        "{}: not a valid dev state file (line {}, column {})",
                        path.display(),
                        e.line(),
                        e.column()
                    ),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let state = create(app).await?;
                let bytes = serde_json::to_vec_pretty(&state).unwrap_or_default();
                write_private(&path, &bytes)
                    .map_err(|e| Failure::failed("dev_failed", format!("{e:#}")))?;
                state
            }
            Err(e) => {
                return Err(Failure::failed(
                    "dev_failed",
                    format!("{}: {e}", path.display()),
                ))
            }
        };
        write_private(&dir.join("sidecar.key"), state.sidecar_key.as_bytes())
            .map_err(|e| Failure::failed("dev_failed", format!("{e:#}")))?;
        Ok(state)
    }
}

async fn create(app: &App) -> Result<DevState, Failure> {
    let fail = |e: agent_secret_control_plane::service::ServiceError| {
        Failure::failed("dev_failed", e.to_string())
    };
    let ctx = RequestContext::default();
    let tenant = tenants::create_tenant(app, "dev").await.map_err(fail)?;
    let admin = agent_secret_control_plane::service::auth::authenticate(
        app,
        tenant.admin_token.expose(),
        &ctx,
    )
    .await
    .and_then(expect_operator)
    .map_err(fail)?;
    let sidecar = sidecars::create(app, admin, "dev-sidecar", &ctx)
        .await
        .map_err(fail)?;
    // The demo agent may read everything under demo/ and nothing else.
    let ceiling = [String::from("secrets:read:demo/**")];
    let agent = agents::create(app, admin, "demo-agent", None, &ceiling, &ctx)
        .await
        .map_err(fail)?;
    // Random, recognisable, and never printed: the demo shows it only as [REDACTED:...].
    let random = Pepper::generate();
    let demo_value = format!(
        "sk-demo-{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&random.mac(b"demo")[..18])
    );
    Ok(DevState {
        tenant_id: tenant.tenant_id.to_string(),
        admin_token: tenant.admin_token.expose().to_owned(),
        sidecar_key: sidecar.sidecar_key,
        agent_id: agent.id,
        agent_key: agent.agent_key,
        demo_value,
    })
}

pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(())
}

/// Writes `bytes` to `path` (replacing it) with mode 0600.
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}
