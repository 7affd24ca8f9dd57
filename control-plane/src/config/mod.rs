//! The control plane's one typed configuration, loaded once at start-up.
//!
//! Layers, each overriding the one before: built-in defaults → the TOML file given with
//! `--config` → `AGENT_SECRET_<SECTION>_<KEY>` environment variables. Unknown TOML keys are an
//! error (a typo must never silently fall back to a default), and every error names the key or
//! variable at fault. Secrets never sit in plain fields: the database URLs are [`DatabaseUrl`]
//! (its `Debug` hides the password), the pepper and master key are read from files, or from
//! `*_FILE` / base64 env vars, only when [`Config::pepper`] / [`Config::master_key`] is called.
//!
//! The environment is read through an injected lookup function so tests pass a map instead of
//! mutating the process environment. See `config/control-plane.toml` for every key.

mod alerts;
mod approvals;
mod backup;
mod env;
mod secrets;

mod error;
mod kubernetes;
mod notifications;
mod sections;
mod sessions;

use error::invalid;
pub use error::ConfigError;

use std::net::SocketAddr;
use std::path::Path;

use agent_secret_core::kms::KmsSettings;
use serde::Deserialize;

pub use agent_secret_core::kms::KmsBackend;
pub use alerts::{AlertsConfig, RuleTable};
pub use approvals::{ApprovalsConfig, TrustTierWebhookConfig};
pub use backup::{parse_recipients, BackupConfig};
pub use kubernetes::{IdentityMode, KubernetesConfig};
pub use notifications::{NotificationsConfig, WebhookUrl};
pub use secrets::DatabaseUrl;
/// `[kms] backend`: `local` or `gcp`, the values the sidecar's `[kms]` takes too.
pub use sections::{
    AuditConfig, AuditSinkConfig, DatabaseConfig, KmsConfig, KmsRole, LogConfig, LogFormat,
    RateLimit, RateLimitsConfig, SecurityConfig, ServerConfig, SinkKind, TlsConfig, TokensConfig,
};
pub use sessions::SessionsConfig;

/// Prefix of every configuration environment variable.
pub const ENV_PREFIX: &str = "AGENT_SECRET_";

/// Looks up one environment variable by its full name; `None` when unset.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Everything the control plane reads at start-up.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTPS API listens on.
    pub listen: SocketAddr,
    pub tls: TlsConfig,
    pub database: DatabaseConfig,
    pub security: SecurityConfig,
    pub tokens: TokensConfig,
    pub kms: KmsConfig,
    pub log: LogConfig,
    pub server: ServerConfig,
    pub rate_limits: RateLimitsConfig,
    pub approvals: ApprovalsConfig,
    pub sessions: SessionsConfig,
    pub notifications: NotificationsConfig,
    pub audit: AuditConfig,
    pub alerts: AlertsConfig,
    pub kubernetes: KubernetesConfig,
    pub backup: BackupConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8200)),
            tls: TlsConfig::default(),
            database: DatabaseConfig::default(),
            security: SecurityConfig::default(),
            tokens: TokensConfig::default(),
            kms: KmsConfig::default(),
            log: LogConfig::default(),
            server: ServerConfig::default(),
            rate_limits: RateLimitsConfig::default(),
            approvals: ApprovalsConfig::default(),
            sessions: SessionsConfig::default(),
            notifications: NotificationsConfig::default(),
            audit: AuditConfig::default(),
            alerts: AlertsConfig::default(),
            kubernetes: KubernetesConfig::default(),
            backup: BackupConfig::default(),
        }
    }
}

impl Config {
    /// What `agent_secret_core::kms::open` takes: the keyring and its master key (read only
    /// for the local backend), or the Cloud KMS client settings with `role`'s credentials.
    pub fn kms_settings(&self, role: KmsRole) -> Result<KmsSettings, ConfigError> {
        match self.kms.backend {
            KmsBackend::Local => Ok(KmsSettings::Local {
                keyring: self.kms.keyring.clone(),
                master_key: self.master_key()?,
            }),
            KmsBackend::Gcp => Ok(KmsSettings::Gcp(self.kms.gcp(role)?)),
        }
    }
}

/// An `https://` URL, or `http://` to a loopback address only: what it carries (audit events,
/// alerts, a token) must not cross a network in the clear.
pub(super) fn check_https_url(key: &str, url: &str) -> Result<(), ConfigError> {
    let url = reqwest::Url::parse(url).map_err(|e| invalid(key, &e.to_string()))?;
    let host = url.host_str().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if url.scheme() == "https" || (url.scheme() == "http" && loopback) {
        return Ok(());
    }
    Err(invalid(
        key,
        "must be https (http only to a loopback address): the token travels in it",
    ))
}

impl Config {
    fn validate_sinks(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        for sink in &self.audit.sinks {
            let key = format!("audit.sinks.{}", sink.name);
            let name_ok = (1..=32).contains(&sink.name.len())
                && sink.name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                });
            if !name_ok || !names.insert(sink.name.as_str()) {
                return Err(invalid(
                    "audit.sinks.name",
                    "names are unique, 1 to 32 of [a-z0-9_-]",
                ));
            }
            if sink.kind == SinkKind::SyslogTls {
                let url = reqwest::Url::parse(&sink.url)
                    .map_err(|e| invalid(&format!("{key}.url"), &e.to_string()))?;
                if url.scheme() != "tls" {
                    return Err(invalid(
                        &format!("{key}.url"),
                        "a syslog_tls sink's url is tls://host:port",
                    ));
                }
            } else {
                check_https_url(&format!("{key}.url"), &sink.url)?;
            }
            if !(1..=1000).contains(&sink.batch_size) {
                return Err(invalid(&format!("{key}.batch_size"), "must be 1 to 1000"));
            }
            if sink.flush_interval_ms < 10 {
                return Err(invalid(
                    &format!("{key}.flush_interval_ms"),
                    "must be at least 10",
                ));
            }
        }
        Ok(())
    }
}

impl Config {
    /// Defaults, then `file` (if any), then the environment seen through `env`; then validated.
    pub fn load(file: Option<&Path>, env: EnvLookup<'_>) -> Result<Config, ConfigError> {
        let mut config = match file {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        env::apply(&mut config, env)?;
        config.validate()?;
        Ok(config)
    }

    /// [`Config::load`] with the process environment.
    pub fn load_from_process_env(file: Option<&Path>) -> Result<Config, ConfigError> {
        Config::load(file, &|name| std::env::var(name).ok())
    }

    fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.to_path_buf(),
            source,
        })?;
        // Never `e.to_string()`: it quotes the offending line, which may hold a password.
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: agent_secret_core::diagnostics::located(
                e.message(),
                &text,
                e.span().map(|s| s.start),
            ),
        })
    }

    /// Cross-key checks that serde cannot express.
    fn validate(&self) -> Result<(), ConfigError> {
        match (&self.tls.cert_file, &self.tls.key_file) {
            (Some(_), None) => {
                return Err(invalid(
                    "tls.key_file",
                    "required when tls.cert_file is set",
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "tls.cert_file",
                    "required when tls.key_file is set",
                ))
            }
            _ => {}
        }
        self.database.url.check_scheme("database.url")?;
        if let Some(owner) = &self.database.owner_url {
            owner.check_scheme("database.owner_url")?;
        }
        if self.database.max_connections == 0 {
            return Err(invalid("database.max_connections", "must be at least 1"));
        }
        if self.database.service_role.is_empty() {
            return Err(invalid("database.service_role", "must not be empty"));
        }
        if self.tokens.max_ttl_seconds == 0 {
            return Err(invalid("tokens.max_ttl_seconds", "must be at least 1"));
        }
        if self.kms.rotation_period_days == 0 {
            return Err(invalid("kms.rotation_period_days", "must be at least 1"));
        }
        if self.kms.rotation_check_interval_seconds == 0 {
            return Err(invalid(
                "kms.rotation_check_interval_seconds",
                "must be at least 1",
            ));
        }
        if self.kms.max_attempts == 0 || self.kms.timeout_ms == 0 {
            return Err(invalid(
                "kms.max_attempts",
                "kms.max_attempts and kms.timeout_ms must be at least 1",
            ));
        }
        if self.kms.backend == KmsBackend::Gcp {
            self.kms.gcp(KmsRole::Service)?;
            self.kms.gcp(KmsRole::Admin)?;
        }
        self.validate_limits()?;
        self.approvals.validate()?;
        self.sessions.validate()?;
        self.notifications.validate()?;
        self.alerts.validate()?;
        self.kubernetes.validate(self.tokens.max_ttl_seconds)?;
        self.backup.validate(&self.database.url)?;
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(invalid(
                "log.level",
                &format!("not a valid log filter: {e}"),
            ));
        }
        Ok(())
    }
}

impl Config {
    fn validate_limits(&self) -> Result<(), ConfigError> {
        let server = &self.server;
        for (key, value) in [
            (
                "server.tls_handshake_timeout_seconds",
                server.tls_handshake_timeout_seconds,
            ),
            (
                "server.header_read_timeout_seconds",
                server.header_read_timeout_seconds,
            ),
            ("server.idle_timeout_seconds", server.idle_timeout_seconds),
            (
                "server.request_body_timeout_seconds",
                server.request_body_timeout_seconds,
            ),
            (
                "rate_limits.alert_window_seconds",
                self.rate_limits.alert_window_seconds,
            ),
            (
                "tokens.expiry_sweep_seconds",
                self.tokens.expiry_sweep_seconds,
            ),
            (
                "audit.checkpoint_interval_seconds",
                self.audit.checkpoint_interval_seconds,
            ),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        self.validate_sinks()?;
        if self.audit.checkpoint_every_events < 1 {
            return Err(invalid(
                "audit.checkpoint_every_events",
                "must be at least 1",
            ));
        }
        // hyper refuses (panics on) read buffers below 8 KiB.
        if !(8192..=1024 * 1024).contains(&server.max_header_bytes) {
            return Err(invalid(
                "server.max_header_bytes",
                "must be between 8192 and 1048576",
            ));
        }
        if server.max_connections_per_ip == 0 || server.max_connections == 0 {
            return Err(invalid(
                "server.max_connections_per_ip",
                "server.max_connections_per_ip and server.max_connections must be at least 1",
            ));
        }
        let limits = &self.rate_limits;
        for (key, limit) in [
            ("rate_limits.tokens_per_agent", limits.tokens_per_agent),
            ("rate_limits.tokens_per_ip", limits.tokens_per_ip),
            (
                "rate_limits.resolve_per_sidecar",
                limits.resolve_per_sidecar,
            ),
            ("rate_limits.resolve_per_ip", limits.resolve_per_ip),
            (
                "rate_limits.auth_failures_per_ip",
                limits.auth_failures_per_ip,
            ),
            ("rate_limits.mcp_per_agent", limits.mcp_per_agent),
        ] {
            if limit.per_second == 0 || limit.burst == 0 {
                return Err(invalid(key, "per_second and burst must be at least 1"));
            }
        }
        Ok(())
    }
}
