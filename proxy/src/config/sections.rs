//! The sections of the sidecar's configuration (`[control_plane]`, `[kms]`, `[upstream]`,
//! `[[hosts]]`, `[[routes]]`, `[cache]`, `[audit]`), their defaults and in-code constructors.
//! `config/proxy.toml` documents every key.

use std::path::PathBuf;
use std::time::Duration;

use agent_secret_core::host::HostPattern;
use agent_secret_core::secret::SecretString;
use serde::Deserialize;

use super::error::{invalid, ConfigError};
use agent_secret_core::kms::KmsBackend;

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
    /// Instead of a sidecar key: a projected service-account token the control plane checks
    /// (`[kubernetes] identity` there, a binding naming this sidecar; docs/kubernetes.md).
    /// Re-read every minute, as the kubelet rotates it.
    #[serde(default)]
    pub service_account_token_file: Option<PathBuf>,
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

impl ControlPlaneConfig {
    /// The control plane at `url` with every other setting at its default; an embedder sets
    /// the key with `sidecar_key_file` or `sidecar_key`.
    pub fn new(url: impl Into<String>) -> ControlPlaneConfig {
        ControlPlaneConfig {
            url: url.into(),
            ca_file: None,
            sidecar_key_file: None,
            sidecar_key: None,
            service_account_token_file: None,
            connect_timeout_ms: default_connect_timeout_ms(),
            request_timeout_ms: default_request_timeout_ms(),
            retries: default_retries(),
            retry_backoff_ms: default_retry_backoff_ms(),
            watch: true,
            watch_idle_timeout_seconds: default_watch_idle_timeout_seconds(),
            watch_max_backoff_ms: default_watch_max_backoff_ms(),
        }
    }
}

impl KmsConfig {
    /// The local backend: the sealed keyring and the file holding its master key.
    pub fn local(keyring: PathBuf, master_key_file: PathBuf) -> KmsConfig {
        KmsConfig {
            keyring: Some(keyring),
            master_key_file: Some(master_key_file),
            ..KmsConfig::unset(KmsBackend::Local)
        }
    }

    /// Cloud KMS: the control plane's key ring `projects/{project}/locations/{location}/
    /// keyRings/{key_ring}`, Application Default Credentials unless `credentials_file` is set.
    pub fn cloud_kms(project: &str, location: &str, key_ring: &str) -> KmsConfig {
        KmsConfig {
            project: Some(project.to_owned()),
            location: Some(location.to_owned()),
            key_ring: Some(key_ring.to_owned()),
            ..KmsConfig::unset(KmsBackend::Gcp)
        }
    }

    fn unset(backend: KmsBackend) -> KmsConfig {
        KmsConfig {
            backend,
            keyring: None,
            master_key_file: None,
            master_key: None,
            project: None,
            location: None,
            key_ring: None,
            endpoint: None,
            credentials_file: None,
            timeout_ms: default_kms_timeout_ms(),
            max_attempts: default_kms_max_attempts(),
            _admin_credentials_file: None,
            _protection_level: None,
            _rotation_period_days: None,
            _rotation_check_interval_seconds: None,
            _retire_grace_hours: None,
        }
    }
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

impl HostRule {
    /// A rule for `name` that changes nothing yet: set the exceptions it grants on the result.
    pub fn new(name: HostPattern) -> HostRule {
        HostRule {
            name,
            plaintext: false,
            allow_private: false,
            pass_through: false,
            scrub: ScrubMode::Full,
        }
    }
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
