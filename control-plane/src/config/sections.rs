//! The sections of the control plane's configuration (`[tls]`, `[database]`, `[security]`,
//! `[tokens]`, `[kms]`, `[server]`, `[rate_limits]`, `[log]`) and their defaults.
//! `config/control-plane.toml` documents every key.

use std::path::PathBuf;

use serde::Deserialize;

use super::error::{invalid, ConfigError};
use super::secrets::DatabaseUrl;
use agent_secret_core::kms::KmsBackend;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// The service's connection (on PostgreSQL a non-owner role subject to row-level security).
    pub url: DatabaseUrl,
    /// When set, migrations run through this (owner) connection instead of `url`.
    pub owner_url: Option<DatabaseUrl>,
    /// PostgreSQL role that migrations grant table rights to.
    pub service_role: String,
    pub max_connections: u32,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// File holding the base64 server pepper (at least 32 bytes once decoded).
    pub pepper_file: PathBuf,
    /// Base64 pepper from `AGENT_SECRET_SECURITY_PEPPER`; never read from the TOML file.
    #[serde(skip)]
    pub pepper: Option<agent_secret_core::secret::SecretString>,
    /// How long a verified sidecar key is taken on trust (`service::verified_sidecars`).
    pub sidecar_auth_cache_seconds: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokensConfig {
    /// Cap on the TTL an agent may ask for.
    pub max_ttl_seconds: u64,
    /// How long a sidecar may cache a resolved grant.
    pub grant_cache_ttl_seconds: u64,
    /// How long a sidecar may give back a reserved use of a `max_uses` token it could not
    /// inject (0: no reservations, every use is spent at resolve).
    pub use_reservation_seconds: u64,
    /// How often the expiry sweeper writes `token.expired` for tokens that ran out.
    pub expiry_sweep_seconds: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KmsConfig {
    pub backend: KmsBackend,
    /// Local backend: the sealed keyring file.
    pub keyring: PathBuf,
    /// Local backend: file holding the base64 32-byte master key that seals the keyring.
    pub master_key_file: PathBuf,
    /// Base64 master key from `AGENT_SECRET_MASTER_KEY`; never read from the TOML file.
    #[serde(skip)]
    pub master_key: Option<agent_secret_core::secret::SecretString>,
    /// Cloud KMS: the key ring `projects/{project}/locations/{location}/keyRings/{key_ring}`
    /// that holds one CryptoKey per tenant. Operators create the key ring; the control plane
    /// creates the keys.
    pub project: Option<String>,
    pub location: Option<String>,
    pub key_ring: Option<String>,
    /// Cloud KMS endpoint; the default is Google's. Tests point it at a fake server.
    pub endpoint: Option<String>,
    /// Service-account key the server uses (encrypt-only rights suffice). Absent: Application
    /// Default Credentials (GKE workload identity). `"anonymous"`: test endpoints only.
    pub credentials_file: Option<PathBuf>,
    /// Credentials for the privileged `kms rewrap`, `kms rotate` and `kms retire-version`
    /// commands, which also decrypt and manage versions. Absent: `credentials_file`.
    pub admin_credentials_file: Option<PathBuf>,
    /// Protection level of new tenant keys: `hsm` (default) or `software`.
    pub protection_level: agent_secret_core::kms::gcp::GcpProtection,
    /// Deadline of one Cloud KMS call attempt.
    pub timeout_ms: u64,
    /// Attempts per Cloud KMS call; only UNAVAILABLE and DEADLINE_EXCEEDED are retried.
    pub max_attempts: u32,
    /// A KEK's primary version is replaced once it is this old. The local backend is rotated
    /// by the control plane; Cloud KMS keys are created with this rotation period.
    pub rotation_period_days: u32,
    /// How often the control plane checks for due rotations and observes new primaries.
    pub rotation_check_interval_seconds: u64,
    /// `kms retire-version` waits this long after the newest rotation: writes that wrapped
    /// under the old version may still be committing (Cloud KMS may keep encrypting under the
    /// previous primary for hours after a change).
    pub retire_grace_hours: u32,
}

/// Connection hygiene of the HTTPS listener: how long and how much a client may hold the
/// server before sending a complete request (slowloris), and how many connections it may keep.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// A TLS handshake not finished by then is dropped.
    pub tls_handshake_timeout_seconds: u64,
    /// An HTTP/1.1 request head not complete by then closes the connection. On HTTP/1.1 a
    /// kept-alive connection must also start its next request within this time.
    pub header_read_timeout_seconds: u64,
    /// A connection with no request in flight for this long is closed (HTTP/2: GOAWAY).
    pub idle_timeout_seconds: u64,
    /// A request body not fully received by then is abandoned (408): a client trickling a
    /// body holds a request "in flight", which the idle timeout does not cover.
    pub request_body_timeout_seconds: u64,
    /// Largest request head (HTTP/1.1 read buffer; HTTP/2 header list). At least 8192.
    pub max_header_bytes: usize,
    /// Concurrent connections from one client address (an IPv6 /64 counts as one address).
    pub max_connections_per_ip: usize,
    /// Concurrent connections in total.
    pub max_connections: usize,
}

/// One token bucket: `per_second` sustained, up to `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

/// Request rate limits of the API (429 `rate_limited` with `Retry-After`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitsConfig {
    /// `POST /v1/tokens` per agent key.
    pub tokens_per_agent: RateLimit,
    /// `POST /v1/tokens` per client address (all agents behind it together).
    pub tokens_per_ip: RateLimit,
    /// `POST /v1/sidecar/resolve` per sidecar key.
    pub resolve_per_sidecar: RateLimit,
    /// `POST /v1/sidecar/resolve` per client address of the sidecars.
    pub resolve_per_ip: RateLimit,
    /// Failed authentications per client address, on any endpoint; past it every
    /// authenticated request from that address is refused until the bucket refills.
    pub auth_failures_per_ip: RateLimit,
    /// Requests to `/mcp` per agent (its key and its tokens together).
    pub mcp_per_agent: RateLimit,
    /// `auth.failed` events of one address are aggregated over this window (the first is
    /// written at once, the rest as one event with their count), and a tripped limit raises
    /// one `alert.raised` event per subject per window.
    pub alert_window_seconds: u64,
}

/// `[audit]`: signed checkpoints of the chain (`crate::audit_checkpoint`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// A checkpoint after this many events since the last one...
    pub checkpoint_every_events: i64,
    /// ...or this long after it, if anything happened since.
    pub checkpoint_interval_seconds: u64,
    /// `[[audit.sinks]]`: SIEMs the log is pushed to.
    pub sinks: Vec<AuditSinkConfig>,
    /// A file outside the database each checkpoint is appended to.
    pub checkpoint_file: Option<PathBuf>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            checkpoint_every_events: 1000,
            checkpoint_interval_seconds: 300,
            sinks: Vec::new(),
            checkpoint_file: None,
        }
    }
}

/// The receivers an audit sink speaks to (`crate::service::siem`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    /// Splunk HTTP Event Collector (`.../services/collector/event`, `Authorization: Splunk`).
    SplunkHec,
    /// Datadog Logs intake (`https://http-intake.logs.<site>/api/v2/logs`, `DD-API-KEY`).
    Datadog,
    /// One JSON object per line, POSTed (`Authorization: Bearer` when a token is given).
    #[serde(rename = "jsonl")]
    JsonLines,
    /// RFC 5424 messages, octet-counted over TLS (RFC 5425) to `tls://host:port`.
    SyslogTls,
}

/// One `[[audit.sinks]]` entry (`crate::service::siem`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSinkConfig {
    /// `[a-z0-9_-]`, 1 to 32 characters, unique: names the sink's cursor and metrics.
    pub name: String,
    pub kind: SinkKind,
    /// `https://...`; plain `http://` only to a loopback address.
    pub url: String,
    /// File holding the HEC token, Datadog API key or bearer token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// CA certificates (PEM) of the receiver, added to the public roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Events per request, 1 to 1000.
    #[serde(default = "default_sink_batch")]
    pub batch_size: i64,
    /// How long a caught-up sink waits before looking again.
    #[serde(default = "default_sink_flush_ms")]
    pub flush_interval_ms: u64,
}

fn default_sink_batch() -> i64 {
    200
}

fn default_sink_flush_ms() -> u64 {
    1000
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter: `info`, `debug`, `agent_secret_control_plane=debug,sqlx=warn`, ...
    pub level: String,
    pub format: LogFormat,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}
impl Default for ServerConfig {
    /// Above the sidecar's 90 s pool idle time, so a sidecar drops idle connections first.
    fn default() -> Self {
        ServerConfig {
            tls_handshake_timeout_seconds: 10,
            header_read_timeout_seconds: 10,
            idle_timeout_seconds: 120,
            request_body_timeout_seconds: 30,
            max_header_bytes: 16 * 1024,
            max_connections_per_ip: 256,
            max_connections: 10_000,
        }
    }
}

impl Default for RateLimitsConfig {
    /// Generous next to real use (an agent asks for a token per task; a sidecar resolves at
    /// most once per agent request, less with its grant cache), tight next to abuse. The
    /// resolve limits sit above what one control plane commits (bench/README.md: about
    /// 4,000/s on SQLite), so they stop a runaway sidecar, never a busy one or the benchmark.
    fn default() -> Self {
        RateLimitsConfig {
            tokens_per_agent: RateLimit {
                per_second: 20,
                burst: 100,
            },
            tokens_per_ip: RateLimit {
                per_second: 100,
                burst: 500,
            },
            resolve_per_sidecar: RateLimit {
                per_second: 10_000,
                burst: 20_000,
            },
            resolve_per_ip: RateLimit {
                per_second: 20_000,
                burst: 40_000,
            },
            auth_failures_per_ip: RateLimit {
                per_second: 10,
                burst: 50,
            },
            mcp_per_agent: RateLimit {
                per_second: 20,
                burst: 100,
            },
            alert_window_seconds: 10,
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: DatabaseUrl::new("sqlite://data/store.db"),
            owner_url: None,
            service_role: "agent_secret_store_app".into(),
            max_connections: crate::db::DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            pepper_file: PathBuf::from("data/pepper"),
            pepper: None,
            sidecar_auth_cache_seconds: 5,
        }
    }
}

impl Default for TokensConfig {
    fn default() -> Self {
        TokensConfig {
            max_ttl_seconds: 86_400,
            grant_cache_ttl_seconds: 30,
            use_reservation_seconds: 60,
            expiry_sweep_seconds: 10,
        }
    }
}

impl Default for KmsConfig {
    fn default() -> Self {
        KmsConfig {
            backend: KmsBackend::Local,
            keyring: PathBuf::from("data/keyring.json"),
            master_key_file: PathBuf::from("data/master.key"),
            master_key: None,
            project: None,
            location: None,
            key_ring: None,
            endpoint: None,
            credentials_file: None,
            admin_credentials_file: None,
            protection_level: agent_secret_core::kms::gcp::GcpProtection::Hsm,
            timeout_ms: 10_000,
            max_attempts: 5,
            rotation_period_days: 90,
            rotation_check_interval_seconds: 3600,
            retire_grace_hours: 24,
        }
    }
}

/// Which credentials a Cloud KMS client is built with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KmsRole {
    /// The running server: creates tenant keys and encrypts.
    Service,
    /// `kms rewrap`, `kms rotate`, `kms retire-version`: also decrypts and manages versions.
    Admin,
}

impl KmsConfig {
    pub fn retire_grace(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.retire_grace_hours) * 3600)
    }

    pub fn rotation_period(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.rotation_period_days) * 86_400)
    }

    /// The Cloud KMS client settings, checked; `Err` names the missing or invalid key.
    pub fn gcp(
        &self,
        role: KmsRole,
    ) -> Result<agent_secret_core::kms::gcp::GcpKmsConfig, ConfigError> {
        let credentials = match (role, &self.admin_credentials_file) {
            (KmsRole::Admin, Some(file)) => ("kms.admin_credentials_file", Some(file.as_path())),
            _ => ("kms.credentials_file", self.credentials_file.as_deref()),
        };
        let mut gcp = agent_secret_core::kms::gcp::GcpKmsConfig::from_settings(
            self.project.as_deref(),
            self.location.as_deref(),
            self.key_ring.as_deref(),
            self.endpoint.as_deref(),
            credentials,
        )
        .map_err(|(key, message)| invalid(key, &message))?;
        gcp.protection = self.protection_level;
        gcp.rotation_period = self.rotation_period();
        gcp.attempt_timeout = std::time::Duration::from_millis(self.timeout_ms);
        gcp.max_attempts = self.max_attempts;
        Ok(gcp)
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}
