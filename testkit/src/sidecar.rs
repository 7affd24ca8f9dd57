//! Starting the real sidecar against a test control plane, configured in code.

use std::os::unix::fs::PermissionsExt as _;

use agent_secret_proxy::config::{ControlPlaneConfig, HostRule, RouteConfig};
use agent_secret_proxy::{ProxyConfig, RunningSidecar, Sidecar};

use crate::control_plane::{ControlPlane, Install};

/// The standard test sidecar's configuration: `cp` over TLS with its CA, `sidecar_key` in a
/// private file next to the install, the install's KMS, ports and spool of its own, one quick
/// retry. Change its public fields before [`start`].
pub fn config(install: &Install, cp: &ControlPlane, sidecar_key: &str) -> ProxyConfig {
    let unique = uuid::Uuid::new_v4();
    let key_file = install.dir.join(format!("sidecar-{unique}.key"));
    std::fs::write(&key_file, sidecar_key).unwrap();
    // Secret files must be private to their owner (`agent_secret_core::secret_file`).
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut control_plane = ControlPlaneConfig::new(cp.url.clone());
    control_plane.ca_file = Some(cp.ca_file.clone());
    control_plane.sidecar_key_file = Some(key_file);
    control_plane.retries = 1;
    control_plane.retry_backoff_ms = 50;
    let mut config = ProxyConfig::new(control_plane, install.sidecar_kms());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.admin_listen = "127.0.0.1:0".parse().unwrap();
    config.shutdown_grace_seconds = 1;
    config.audit.spool_path = install.dir.join(format!("spool-{unique}"));
    config.audit.flush_interval_ms = 100;
    config
}

/// Starts a sidecar from `config`; with the watch stream on, returns once it has connected
/// (its first connection flushes the grant cache, so tests warm up after it).
pub async fn start(config: ProxyConfig) -> RunningSidecar {
    let watch = config.control_plane.watch;
    let sidecar = Sidecar::start(config).await.unwrap();
    if watch {
        crate::eventually(
            "the sidecar's watch stream connects",
            std::time::Duration::from_secs(10),
            || async { (sidecar.metrics().watch_connected.get() == 1).then_some(()) },
        )
        .await;
    }
    sidecar
}

/// The standard sidecar ([`config`]) changed by `configure`, started.
pub async fn start_sidecar(
    install: &Install,
    cp: &ControlPlane,
    sidecar_key: &str,
    configure: impl FnOnce(&mut ProxyConfig),
) -> RunningSidecar {
    let mut config = config(install, cp, sidecar_key);
    configure(&mut config);
    start(config).await
}

/// A `[[hosts]]` rule for a test upstream on this machine: plain HTTP, private addresses
/// allowed.
pub fn local_host(authority: &str) -> HostRule {
    HostRule {
        plaintext: true,
        allow_private: true,
        ..HostRule::new(authority.parse().unwrap())
    }
}

/// A `[[routes]]` entry: `http://sidecar{prefix}rest` goes to `{upstream}rest`.
pub fn route(prefix: &str, upstream: &str) -> RouteConfig {
    RouteConfig {
        prefix: prefix.to_owned(),
        upstream: upstream.to_owned(),
    }
}
