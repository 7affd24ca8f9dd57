//! Starting the real sidecar against a test control plane.

use std::os::unix::fs::PermissionsExt as _;

use agent_secret_proxy::{ProxyConfig, RunningSidecar, Sidecar};

use crate::control_plane::{ControlPlane, Install};

/// Writes the sidecar key next to the install and starts a sidecar whose config is the
/// standard one plus `extra` TOML (hosts, routes, cache settings).
pub async fn start_sidecar(
    install: &Install,
    cp: &ControlPlane,
    sidecar_key: &str,
    extra: &str,
) -> RunningSidecar {
    let key_file = install
        .dir
        .join(format!("sidecar-{}.key", uuid::Uuid::new_v4()));
    std::fs::write(&key_file, sidecar_key).unwrap();
    // Secret files must be private to their owner (`agent_secret_core::secret_file`).
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let spool = install.dir.join(format!("spool-{}", uuid::Uuid::new_v4()));
    let toml = format!(
        r#"
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
shutdown_grace_seconds = 1

[control_plane]
url = "{url}"
ca_file = {ca:?}
sidecar_key_file = {key:?}
retries = 1
retry_backoff_ms = 50

{kms}
[audit]
spool_path = {spool:?}
flush_interval_ms = 100
{extra}
"#,
        url = cp.url,
        ca = cp.ca_file,
        key = key_file,
        kms = install.sidecar_kms_toml(),
    );
    let config = ProxyConfig::from_toml_str(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    let sidecar = Sidecar::start(config).await.unwrap();
    // The first watch connection flushes the grant cache: wait for it before tests warm up.
    crate::eventually(
        "the sidecar's watch stream connects",
        std::time::Duration::from_secs(10),
        || async { (sidecar.metrics().watch_connected.get() == 1).then_some(()) },
    )
    .await;
    sidecar
}
