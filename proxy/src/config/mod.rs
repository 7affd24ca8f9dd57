//! The sidecar's one typed configuration (`config/proxy.toml` documents every key).
//!
//! Layers: built-in defaults → the TOML file given with `--config` → environment variables for
//! the two secrets (`AGENT_SECRET_SIDECAR_KEY[_FILE]`, `AGENT_SECRET_MASTER_KEY[_FILE]`).
//! Unknown keys are an error everywhere, so a typo never silently falls back to a default, and
//! [`ProxyConfig::validate`] turns every cross-field mistake (an `http://` route to a host not
//! marked `plaintext`, a control plane reached over plain HTTP) into a start-up error naming the
//! key. Secrets are never plain fields: the sidecar key and the master key are read from files
//! or env straight into zeroizing types, and only when the sidecar starts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_secret_core::host::Destination;
use agent_secret_core::kms::local::MasterKey;
use agent_secret_core::kms::KmsSettings;
use agent_secret_core::secret::SecretString;
use serde::Deserialize;

/// `[kms] backend`: `local` or `gcp`, the values the control plane's `[kms]` takes too.
pub use agent_secret_core::kms::KmsBackend;

/// Looks up one environment variable by its full name; `None` when unset.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

pub use agent_secret_core::api::{ENV_MASTER_KEY, ENV_PROXY_CONFIG_TOML, ENV_SIDECAR_KEY};

/// The largest `max_agent_connections` accepted: far past what one host's file descriptors
/// allow, and well inside what the connection counter can hold.
pub const MAX_AGENT_CONNECTIONS: usize = 1 << 20;

/// Everything the sidecar reads at start-up.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// Where agents connect (HTTP; the agent side never leaves the host).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// `/healthz` and `/metrics`.
    #[serde(default = "default_admin_listen")]
    pub admin_listen: SocketAddr,
    /// The MCP endpoint (`http://<mcp_listen>/mcp`, tool `http_request`); off when absent.
    /// Keep it on loopback: it is the proxy's own front door in another protocol.
    #[serde(default)]
    pub mcp_listen: Option<SocketAddr>,
    /// How long in-flight requests may finish after SIGTERM/SIGINT or `stop()`.
    #[serde(default = "default_shutdown_grace_seconds")]
    pub shutdown_grace_seconds: u64,
    /// Agent connections served at once. Past it the sidecar stops accepting, so further
    /// connections wait in the kernel's listen backlog until one closes: an agent that opens
    /// connections without end exhausts its own queue, not the sidecar's memory or file
    /// descriptors (an idle one costs the sidecar ~3 KiB, bench/README.md).
    #[serde(default = "default_max_agent_connections")]
    pub max_agent_connections: usize,
    pub control_plane: ControlPlaneConfig,
    pub kms: KmsConfig,
    #[serde(default)]
    pub upstream: UpstreamConfig,
    #[serde(default)]
    pub hosts: Vec<HostRule>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    /// Placeholder caps per request and per header, header size after substitution.
    #[serde(default)]
    pub limits: crate::inject::Limits,
    /// Requests and injections per second, per token and per agent.
    #[serde(default)]
    pub rate_limits: crate::rate_limit::RateLimitConfig,
}

mod error;
mod sections;

use error::invalid;
pub use error::ConfigError;

/// How the sidecar authenticates to the control plane.
#[derive(Clone, Debug)]
pub enum Credential {
    /// Its sidecar key (`assc_...`).
    Key(SecretString),
    /// A projected service-account token file (Kubernetes), re-read as it rotates.
    TokenFile(PathBuf),
}
pub use sections::{
    AuditConfig, CacheConfig, ControlPlaneConfig, HostRule, KmsConfig, RouteConfig, ScrubMode,
    UpstreamConfig,
};

impl ProxyConfig {
    /// A configuration built in code (embedders, `dev`, tests): `control_plane` and `kms` are
    /// the two sections without defaults; every other setting starts at the default a config
    /// file would get, and the struct's fields are public to change. [`Sidecar::start`]
    /// validates it exactly as it validates a loaded file.
    ///
    /// [`Sidecar::start`]: crate::Sidecar::start
    pub fn new(control_plane: ControlPlaneConfig, kms: KmsConfig) -> ProxyConfig {
        ProxyConfig {
            listen: default_listen(),
            admin_listen: default_admin_listen(),
            mcp_listen: None,
            shutdown_grace_seconds: default_shutdown_grace_seconds(),
            max_agent_connections: default_max_agent_connections(),
            control_plane,
            kms,
            upstream: UpstreamConfig::default(),
            hosts: Vec::new(),
            routes: Vec::new(),
            cache: CacheConfig::default(),
            audit: AuditConfig::default(),
            limits: crate::inject::Limits::default(),
            rate_limits: crate::rate_limit::RateLimitConfig::default(),
        }
    }

    /// Reads `path`, then applies the environment (`lookup`) for the secrets, then validates.
    pub fn load(path: &Path, lookup: EnvLookup<'_>) -> Result<ProxyConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        ProxyConfig::load_text(&text, lookup)
    }

    /// [`load`](Self::load) of configuration text rather than a file: the TOML, then the
    /// environment, then every check.
    pub fn load_text(text: &str, lookup: EnvLookup<'_>) -> Result<ProxyConfig, ConfigError> {
        let mut config = ProxyConfig::from_toml_str(text)?;
        config.apply_env(lookup)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text (defaults for absent keys, unknown keys refused); no env, no checks
    /// beyond the types. Embedders call this, set secrets directly, and start the sidecar
    /// (which validates).
    pub fn from_toml_str(text: &str) -> Result<ProxyConfig, ConfigError> {
        // Never `e.to_string()`: it quotes the offending line, which may hold a secret.
        toml::from_str(text).map_err(|e| {
            ConfigError::Parse(agent_secret_core::diagnostics::located(
                e.message(),
                text,
                e.span().map(|s| s.start),
            ))
        })
    }

    /// `AGENT_SECRET_SIDECAR_KEY[_FILE]` and `AGENT_SECRET_MASTER_KEY[_FILE]`; setting both
    /// forms of one secret is an error, an empty variable counts as unset.
    pub fn apply_env(&mut self, lookup: EnvLookup<'_>) -> Result<(), ConfigError> {
        if let Some(key) = env_secret(lookup, ENV_SIDECAR_KEY)? {
            self.control_plane.sidecar_key = Some(key);
        }
        if let Some(key) = env_secret(lookup, ENV_MASTER_KEY)? {
            self.kms.master_key = Some(key);
        }
        Ok(())
    }

    /// Cross-field checks; every error names the key at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let url = &self.control_plane.url;
        let parsed: http::Uri = url
            .parse()
            .map_err(|e| invalid("control_plane.url", &format!("{e}")))?;
        if parsed.scheme_str() != Some("https") || parsed.authority().is_none() {
            return Err(invalid(
                "control_plane.url",
                "must be https://host[:port] (the control plane speaks TLS 1.3 only)",
            ));
        }
        let has_key = self.control_plane.sidecar_key.is_some()
            || self.control_plane.sidecar_key_file.is_some();
        match (has_key, &self.control_plane.service_account_token_file) {
            (false, None) => {
                return Err(invalid(
                    "control_plane.sidecar_key_file",
                    &format!("no sidecar key: set sidecar_key_file, {ENV_SIDECAR_KEY} or {ENV_SIDECAR_KEY}_FILE (or service_account_token_file on Kubernetes)"),
                ));
            }
            (true, Some(_)) => {
                return Err(invalid(
                    "control_plane.service_account_token_file",
                    "set either a sidecar key or a service-account token file, not both",
                ));
            }
            _ => {}
        }
        self.validate_kms()?;
        for (i, route) in self.routes.iter().enumerate() {
            let upstream = crate::route::grammar::RouteUpstream::parse(&route.upstream)
                .map_err(|e| invalid(&format!("routes[{i}].upstream"), &e))?;
            crate::route::grammar::check_prefix(&route.prefix)
                .map_err(|e| invalid(&format!("routes[{i}].prefix"), &e))?;
            if !upstream.tls
                && !self
                    .host_rule(&upstream.destination)
                    .is_some_and(|r| r.plaintext)
            {
                return Err(invalid(
                    &format!("routes[{i}].upstream"),
                    &format!(
                        "http:// upstream {} needs a [[hosts]] entry with plaintext = true",
                        upstream.destination
                    ),
                ));
            }
        }
        if !(1..=MAX_AGENT_CONNECTIONS).contains(&self.max_agent_connections) {
            return Err(invalid(
                "max_agent_connections",
                &format!("must be between 1 and {MAX_AGENT_CONNECTIONS}"),
            ));
        }
        if self.audit.batch_size == 0 {
            return Err(invalid("audit.batch_size", "must be at least 1"));
        }
        Ok(())
    }

    fn validate_kms(&self) -> Result<(), ConfigError> {
        match self.kms.backend {
            KmsBackend::Gcp => self.kms.gcp().map(|_| ()),
            KmsBackend::Local => {
                if self.kms.keyring.is_none() {
                    return Err(invalid(
                        "kms.keyring",
                        "the local backend needs a keyring file",
                    ));
                }
                if self.kms.master_key.is_none() && self.kms.master_key_file.is_none() {
                    return Err(invalid(
                        "kms.master_key_file",
                        &format!("no master key: set master_key_file, {ENV_MASTER_KEY} or {ENV_MASTER_KEY}_FILE"),
                    ));
                }
                Ok(())
            }
        }
    }

    /// The first `[[hosts]]` rule matching `dest`, in file order.
    pub fn host_rule(&self, dest: &Destination) -> Option<&HostRule> {
        self.hosts.iter().find(|rule| rule.name.matches(dest))
    }

    /// What the sidecar presents to the control plane: its key, or its service-account token.
    pub fn credential(&self) -> Result<Credential, ConfigError> {
        match &self.control_plane.service_account_token_file {
            Some(path) => Ok(Credential::TokenFile(path.clone())),
            None => self.sidecar_key().map(Credential::Key),
        }
    }

    /// The sidecar key, from the config, env or its file.
    pub fn sidecar_key(&self) -> Result<SecretString, ConfigError> {
        if let Some(key) = &self.control_plane.sidecar_key {
            return Ok(key.clone());
        }
        match &self.control_plane.sidecar_key_file {
            Some(path) => read_secret_file("control_plane.sidecar_key_file", path),
            None => Err(invalid(
                "control_plane.sidecar_key_file",
                "no sidecar key configured",
            )),
        }
    }

    /// The local keyring's master key, from the config, env or its file.
    pub fn master_key(&self) -> Result<MasterKey, ConfigError> {
        let text = match (&self.kms.master_key, &self.kms.master_key_file) {
            (Some(key), _) => key.clone(),
            (None, Some(path)) => read_secret_file("kms.master_key_file", path)?,
            (None, None) => return Err(invalid("kms.master_key_file", "no master key configured")),
        };
        MasterKey::from_base64(text.expose())
            .map_err(|e| invalid("kms.master_key_file", &e.to_string()))
    }

    /// What `agent_secret_core::kms::open` takes: the keyring and its master key (read only
    /// for the local backend) or the Cloud KMS client settings, checked.
    pub fn kms_settings(&self) -> Result<KmsSettings, ConfigError> {
        match self.kms.backend {
            KmsBackend::Local => {
                let keyring = self.kms.keyring.clone().ok_or_else(|| {
                    invalid("kms.keyring", "the local backend needs a keyring file")
                })?;
                Ok(KmsSettings::Local {
                    keyring,
                    master_key: self.master_key()?,
                })
            }
            KmsBackend::Gcp => Ok(KmsSettings::Gcp(self.kms.gcp()?)),
        }
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_seconds)
    }
}

fn env_secret(lookup: EnvLookup<'_>, name: &str) -> Result<Option<SecretString>, ConfigError> {
    let get = |n: &str| lookup(n).filter(|v| !v.is_empty());
    let file_name = format!("{name}_FILE");
    match (get(name), get(&file_name)) {
        (Some(_), Some(_)) => Err(invalid(
            name,
            &format!("set either {name} or {file_name}, not both"),
        )),
        (Some(value), None) => Ok(Some(SecretString::new(value.trim().to_owned()))),
        (None, Some(path)) => read_secret_file(&file_name, Path::new(&path)).map(Some),
        (None, None) => Ok(None),
    }
}

/// The trimmed content of a secret file (see `agent_secret_core::secret_file`, which refuses
/// files other users can read). Errors name the key and path, never the content.
fn read_secret_file(key: &str, path: &Path) -> Result<SecretString, ConfigError> {
    agent_secret_core::secret_file::read(path).map_err(|e| invalid(key, &e.to_string()))
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9090))
}
fn default_shutdown_grace_seconds() -> u64 {
    5
}
fn default_max_agent_connections() -> usize {
    16_384
}

#[cfg(test)]
mod tests;
