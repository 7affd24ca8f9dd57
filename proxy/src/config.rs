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

use agent_secret_core::host::{Destination, HostPattern};
use agent_secret_core::kms::local::MasterKey;
use agent_secret_core::kms::KmsSettings;
use agent_secret_core::secret::SecretString;
use serde::Deserialize;

/// `[kms] backend`: `local` or `gcp`, the values the control plane's `[kms]` takes too.
pub use agent_secret_core::kms::KmsBackend;

/// Looks up one environment variable by its full name; `None` when unset.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Env var holding the sidecar key itself.
pub const ENV_SIDECAR_KEY: &str = "AGENT_SECRET_SIDECAR_KEY";
/// Env var holding the base64 master key of the local keyring.
pub const ENV_MASTER_KEY: &str = "AGENT_SECRET_MASTER_KEY";

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
    /// How long in-flight requests may finish after SIGTERM/SIGINT or `stop()`.
    #[serde(default = "default_shutdown_grace_seconds")]
    pub shutdown_grace_seconds: u64,
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

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlPlaneConfig {
    /// `https://host[:port]`; plain HTTP is refused.
    pub url: String,
    /// PEM CA bundle the control plane's certificate chains to; absent = system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// File holding the sidecar key (`assc_...`).
    #[serde(default)]
    pub sidecar_key_file: Option<PathBuf>,
    /// The sidecar key itself, from `AGENT_SECRET_SIDECAR_KEY[_FILE]` or set by an embedder;
    /// never read from the TOML file.
    #[serde(skip)]
    pub sidecar_key: Option<SecretString>,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Per call of resolve and audit (not the long-lived watch stream).
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Extra attempts after a connection error or a 502/503/504.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// First retry delay; doubles per attempt.
    #[serde(default = "default_retry_backoff_ms")]
    pub retry_backoff_ms: u64,
    /// Keep `GET /v1/sidecar/watch` open to drop revoked grants at once.
    #[serde(default = "default_true")]
    pub watch: bool,
    /// Reconnect the watch stream when nothing (not even a keep-alive) arrived for this long;
    /// 0 = never.
    #[serde(default = "default_watch_idle_timeout_seconds")]
    pub watch_idle_timeout_seconds: u64,
    /// Longest delay between watch reconnection attempts.
    #[serde(default = "default_watch_max_backoff_ms")]
    pub watch_max_backoff_ms: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmsConfig {
    #[serde(default)]
    pub backend: KmsBackend,
    /// Local backend: the sealed keyring file (opened read-only, reloaded on an unknown version).
    #[serde(default)]
    pub keyring: Option<PathBuf>,
    /// Local backend: file holding the base64 master key.
    #[serde(default)]
    pub master_key_file: Option<PathBuf>,
    /// The base64 master key from `AGENT_SECRET_MASTER_KEY[_FILE]` or an embedder; never read
    /// from the TOML file.
    #[serde(skip)]
    pub master_key: Option<SecretString>,
    /// Cloud KMS: the control plane's key ring, `projects/{project}/locations/{location}/
    /// keyRings/{key_ring}`. The sidecar only ever calls decrypt.
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default)]
    pub key_ring: Option<String>,
    /// Cloud KMS endpoint; the default is Google's. Tests point it at a fake server.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// A service-account key with decrypt-only rights (`roles/cloudkms.cryptoKeyDecrypter`).
    /// Absent: Application Default Credentials (GKE workload identity). `"anonymous"`: test
    /// endpoints only.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// Deadline of one Cloud KMS call attempt.
    #[serde(default = "default_kms_timeout_ms")]
    pub timeout_ms: u64,
    /// Attempts per Cloud KMS call; only UNAVAILABLE and DEADLINE_EXCEEDED are retried.
    #[serde(default = "default_kms_max_attempts")]
    pub max_attempts: u32,
    /// Control-plane settings, accepted and ignored so that one `[kms]` section can serve both
    /// (`config/proxy.toml` documents which).
    #[serde(default, rename = "admin_credentials_file")]
    _admin_credentials_file: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "protection_level")]
    _protection_level: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "rotation_period_days")]
    _rotation_period_days: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "rotation_check_interval_seconds")]
    _rotation_check_interval_seconds: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "retire_grace_hours")]
    _retire_grace_hours: Option<serde::de::IgnoredAny>,
}

fn default_kms_timeout_ms() -> u64 {
    5_000
}

fn default_kms_max_attempts() -> u32 {
    3
}

impl KmsConfig {
    /// The Cloud KMS client settings, checked; `Err` names the missing or invalid key.
    pub fn gcp(&self) -> Result<agent_secret_core::kms::gcp::GcpKmsConfig, ConfigError> {
        let mut gcp = agent_secret_core::kms::gcp::GcpKmsConfig::from_settings(
            self.project.as_deref(),
            self.location.as_deref(),
            self.key_ring.as_deref(),
            self.endpoint.as_deref(),
            ("kms.credentials_file", self.credentials_file.as_deref()),
        )
        .map_err(|(key, message)| invalid(key, &message))?;
        if self.timeout_ms == 0 || self.max_attempts == 0 {
            return Err(invalid(
                "kms.max_attempts",
                "kms.max_attempts and kms.timeout_ms must be at least 1",
            ));
        }
        gcp.attempt_timeout = Duration::from_millis(self.timeout_ms);
        gcp.max_attempts = self.max_attempts;
        // Requests wait on decrypt: back off briefly rather than hold an agent for seconds.
        gcp.initial_backoff = Duration::from_millis(50);
        gcp.max_backoff = Duration::from_millis(500);
        Ok(gcp)
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// PEM CA bundle trusted for upstream TLS in addition to the system roots.
    #[serde(default)]
    pub extra_ca_file: Option<PathBuf>,
    #[serde(default = "default_upstream_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
}

/// Per-destination exceptions, matched against the host and port the sidecar dials.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostRule {
    /// A host pattern as in `allowed_hosts`: `127.0.0.1:18080`, `api.example.com`,
    /// `*.internal.example.com`. A pattern without a port matches ports 80 and 443 only.
    pub name: HostPattern,
    /// `http://` absolute-form requests to this host go out as plain HTTP.
    #[serde(default)]
    pub plaintext: bool,
    /// Lift the SSRF guard (loopback, private, link-local... addresses) for this host.
    #[serde(default)]
    pub allow_private: bool,
    /// Requests carrying no placeholder may be forwarded to this host.
    #[serde(default)]
    pub pass_through: bool,
    /// Response scrubbing: `full` (headers and body) or `headers` (for binary streams).
    #[serde(default)]
    pub scrub: ScrubMode,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScrubMode {
    #[default]
    Full,
    Headers,
}

/// Route mode: `http://127.0.0.1:8080{prefix}rest` goes to `{upstream}rest`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Starts and ends with `/`, e.g. `/openai/`.
    pub prefix: String,
    /// `https://host[:port]/[base/]`; `http://` only for hosts marked `plaintext = true`.
    pub upstream: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Cap on how long a grant is served from cache (the control plane's TTL and the token's
    /// expiry cap it further); 0 disables the grant cache.
    #[serde(default = "default_grant_ttl_seconds")]
    pub grant_ttl_seconds: u64,
    /// How long a decrypted value stays cached; 0 disables the value cache.
    #[serde(default = "default_value_ttl_seconds")]
    pub value_ttl_seconds: u64,
    /// Entries per cache; 0 disables both caches.
    #[serde(default = "default_max_entries")]
    pub max_entries: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The local spool file holding events the control plane has not accepted yet (or an
    /// existing directory to hold `audit-spool.jsonl`).
    #[serde(default = "default_spool_path")]
    pub spool_path: PathBuf,
    /// When the spool holds this much, new injections are refused (503 `audit_unavailable`).
    #[serde(default = "default_max_spool_bytes")]
    pub max_spool_bytes: u64,
    /// Events per `POST /v1/sidecar/audit`.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Longest wait before a partial batch is sent.
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
}

/// Why the configuration cannot be used. Names the key or file; never a secret's content.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Parse(String),
    #[error("invalid `{key}`: {message}")]
    Invalid { key: String, message: String },
}

impl ProxyConfig {
    /// Reads `path`, then applies the environment (`lookup`) for the secrets, then validates.
    pub fn load(path: &Path, lookup: EnvLookup<'_>) -> Result<ProxyConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = ProxyConfig::from_toml_str(&text)?;
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
        if self.control_plane.sidecar_key.is_none() && self.control_plane.sidecar_key_file.is_none()
        {
            return Err(invalid(
                "control_plane.sidecar_key_file",
                &format!("no sidecar key: set sidecar_key_file, {ENV_SIDECAR_KEY} or {ENV_SIDECAR_KEY}_FILE"),
            ));
        }
        self.validate_kms()?;
        for (i, route) in self.routes.iter().enumerate() {
            let upstream = crate::route::RouteUpstream::parse(&route.upstream)
                .map_err(|e| invalid(&format!("routes[{i}].upstream"), &e))?;
            crate::route::check_prefix(&route.prefix)
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

fn invalid(key: &str, message: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message: message.to_owned(),
    }
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
fn default_connect_timeout_ms() -> u64 {
    2_000
}
fn default_request_timeout_ms() -> u64 {
    5_000
}
fn default_retries() -> u32 {
    2
}
fn default_retry_backoff_ms() -> u64 {
    100
}
fn default_true() -> bool {
    true
}
fn default_watch_idle_timeout_seconds() -> u64 {
    45
}
fn default_watch_max_backoff_ms() -> u64 {
    10_000
}
fn default_upstream_connect_timeout_ms() -> u64 {
    10_000
}
fn default_grant_ttl_seconds() -> u64 {
    60
}
fn default_value_ttl_seconds() -> u64 {
    300
}
fn default_max_entries() -> u64 {
    10_000
}
fn default_spool_path() -> PathBuf {
    PathBuf::from("data/audit-spool.jsonl")
}
fn default_max_spool_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_batch_size() -> usize {
    100
}
fn default_flush_interval_ms() -> u64 {
    1_000
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            extra_ca_file: None,
            connect_timeout_ms: default_upstream_connect_timeout_ms(),
        }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            grant_ttl_seconds: default_grant_ttl_seconds(),
            value_ttl_seconds: default_value_ttl_seconds(),
            max_entries: default_max_entries(),
        }
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            spool_path: default_spool_path(),
            max_spool_bytes: default_max_spool_bytes(),
            batch_size: default_batch_size(),
            flush_interval_ms: default_flush_interval_ms(),
        }
    }
}

#[cfg(test)]
mod tests;
