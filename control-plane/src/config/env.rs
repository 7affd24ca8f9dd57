//! The environment layer: `AGENT_SECRET_<SECTION>_<KEY>` overrides the TOML file.
//!
//! Secrets also come as `*_FILE` (a path whose content is the value), the form container
//! platforms mount secrets in. Setting both forms of one secret is an error rather than a silent
//! precedence rule. An empty variable counts as unset.
//!
//! Over 400 lines: every variable of every section is mapped here, one short stanza each, so
//! the whole environment surface reads in one place next to `config/control-plane.toml`.

use std::path::PathBuf;
use std::str::FromStr;

use agent_secret_core::kms::gcp::GcpProtection;
use agent_secret_core::secret::SecretString;

use super::error::{invalid, ConfigError};
use super::secrets::read_secret_file;
use super::secrets::DatabaseUrl;
use super::sections::LogFormat;
use super::{Config, EnvLookup, ENV_PREFIX};
use crate::service::notify::NotificationFormat;
use agent_secret_core::kms::KmsBackend;

/// Reads `AGENT_SECRET_*` variables through an injected lookup.
struct Env<'a> {
    lookup: EnvLookup<'a>,
}

impl Env<'_> {
    fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(&format!("{ENV_PREFIX}{name}")).filter(|v| !v.is_empty())
    }

    fn path(&self, name: &str) -> Option<PathBuf> {
        self.get(name).map(PathBuf::from)
    }

    fn parse<T: FromStr>(&self, name: &str, expected: &str) -> Result<Option<T>, ConfigError> {
        match self.get(name) {
            None => Ok(None),
            Some(raw) => raw.trim().parse().map(Some).map_err(|_| {
                invalid(
                    &format!("{ENV_PREFIX}{name}"),
                    &format!("invalid value {raw:?}: expected {expected}"),
                )
            }),
        }
    }

    /// `NAME` or the content of the file named by `NAME_FILE` (one trailing newline and
    /// surrounding whitespace dropped); both set is an error.
    fn secret(&self, name: &str) -> Result<Option<SecretString>, ConfigError> {
        let file_name = format!("{name}_FILE");
        match (self.get(name), self.path(&file_name)) {
            (Some(_), Some(_)) => Err(both_set(name, &file_name)),
            (Some(value), None) => Ok(Some(SecretString::new(value))),
            (None, Some(path)) => {
                let key = format!("{ENV_PREFIX}{file_name}");
                read_secret_file(&key, &path).map(Some)
            }
            (None, None) => Ok(None),
        }
    }
}

/// Applies every variable that is set on top of `config`.
pub(super) fn apply(config: &mut Config, lookup: EnvLookup<'_>) -> Result<(), ConfigError> {
    let env = Env { lookup };
    if let Some(listen) = env.parse("LISTEN", "an address like 127.0.0.1:8200")? {
        config.listen = listen;
    }

    let tls = &mut config.tls;
    tls.cert_file = env.path("TLS_CERT_FILE").or(tls.cert_file.take());
    tls.key_file = env.path("TLS_KEY_FILE").or(tls.key_file.take());

    let db = &mut config.database;
    if let Some(url) = env.secret("DATABASE_URL")? {
        db.url = DatabaseUrl::new(url.expose());
    }
    if let Some(url) = env.secret("DATABASE_OWNER_URL")? {
        db.owner_url = Some(DatabaseUrl::new(url.expose()));
    }
    if let Some(role) = env.get("DATABASE_SERVICE_ROLE") {
        db.service_role = role;
    }
    if let Some(n) = env.parse("DATABASE_MAX_CONNECTIONS", "a positive integer")? {
        db.max_connections = n;
    }

    // The pepper file variable doubles as the `_FILE` form of the inline pepper.
    let security = &mut config.security;
    match (env.get("SECURITY_PEPPER"), env.path("SECURITY_PEPPER_FILE")) {
        (Some(_), Some(_)) => return Err(both_set("SECURITY_PEPPER", "SECURITY_PEPPER_FILE")),
        (Some(pepper), None) => security.pepper = Some(SecretString::new(pepper)),
        (None, Some(path)) => security.pepper_file = path,
        (None, None) => {}
    }

    if let Some(n) = env.parse("TOKENS_MAX_TTL_SECONDS", "a number of seconds")? {
        config.tokens.max_ttl_seconds = n;
    }
    if let Some(n) = env.parse("TOKENS_GRANT_CACHE_TTL_SECONDS", "a number of seconds")? {
        config.tokens.grant_cache_ttl_seconds = n;
    }
    if let Some(n) = env.parse("TOKENS_USE_RESERVATION_SECONDS", "a number of seconds")? {
        config.tokens.use_reservation_seconds = n;
    }
    if let Some(n) = env.parse("TOKENS_EXPIRY_SWEEP_SECONDS", "a number of seconds")? {
        config.tokens.expiry_sweep_seconds = n;
    }
    if let Some(n) = env.parse("AUDIT_CHECKPOINT_EVERY_EVENTS", "a positive number")? {
        config.audit.checkpoint_every_events = n;
    }
    if let Some(n) = env.parse("AUDIT_CHECKPOINT_INTERVAL_SECONDS", "a number of seconds")? {
        config.audit.checkpoint_interval_seconds = n;
    }
    config.audit.checkpoint_file = env
        .path("AUDIT_CHECKPOINT_FILE")
        .or(config.audit.checkpoint_file.take());
    if let Some(on) = env.parse("ALERTS_ENABLED", "true or false")? {
        config.alerts.enabled = on;
    }
    if let Some(url) = env.get("ALERTS_WEBHOOK_URL") {
        config.alerts.webhook_url = Some(url);
    }
    config.alerts.webhook_token_file = env
        .path("ALERTS_WEBHOOK_TOKEN_FILE")
        .or(config.alerts.webhook_token_file.take());

    apply_kubernetes(config, &env)?;
    apply_backup(config, &env)?;
    apply_kms(config, &env)?;
    apply_limits(config, &env)?;
    apply_approvals(config, &env)?;
    apply_sessions(config, &env)?;
    apply_notifications(config, &env)?;

    if let Some(level) = env.get("LOG_LEVEL") {
        config.log.level = level;
    }
    if let Some(format) = env.get("LOG_FORMAT") {
        config.log.format = match format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(invalid(
                    "AGENT_SECRET_LOG_FORMAT",
                    &format!("invalid value {other:?}: expected \"text\" or \"json\""),
                ))
            }
        };
    }
    Ok(())
}

fn apply_backup(config: &mut Config, env: &Env<'_>) -> Result<(), ConfigError> {
    let b = &mut config.backup;
    b.directory = env.path("BACKUP_DIRECTORY").or(b.directory.take());
    if let Some(n) = env.parse("BACKUP_INTERVAL_SECONDS", "a number of seconds")? {
        b.interval_seconds = n;
    }
    if let Some(n) = env.parse("BACKUP_RETENTION_DAYS", "a number of days")? {
        b.retention_days = n;
    }
    if let Some(list) = env.get("BACKUP_RECIPIENTS") {
        b.recipients = list.split(',').map(|r| r.trim().to_owned()).collect();
    }
    if let Some(url) = env.secret("BACKUP_POSTGRES_URL")? {
        b.postgres_url = Some(DatabaseUrl::new(url.expose()));
    }
    if let Some(path) = env.path("BACKUP_PG_DUMP") {
        b.pg_dump = path;
    }
    if let Some(path) = env.path("BACKUP_PG_RESTORE") {
        b.pg_restore = path;
    }
    Ok(())
}

fn apply_kubernetes(config: &mut Config, env: &Env<'_>) -> Result<(), ConfigError> {
    let k = &mut config.kubernetes;
    if let Some(on) = env.parse("KUBERNETES_INJECTOR", "true or false")? {
        k.injector = on;
    }
    if let Some(image) = env.get("KUBERNETES_SIDECAR_IMAGE") {
        k.sidecar_image = image;
    }
    k.sidecar_template = env
        .path("KUBERNETES_SIDECAR_TEMPLATE")
        .or(k.sidecar_template.take());
    if let Some(name) = env.get("KUBERNETES_SIDECAR_CREDENTIALS_SECRET") {
        k.sidecar_credentials_secret = name;
    }
    if let Some(audience) = env.get("KUBERNETES_TOKEN_AUDIENCE") {
        k.token_audience = audience;
    }
    if let Some(port) = env.parse("KUBERNETES_SIDECAR_PORT", "a port number")? {
        k.sidecar_port = port;
    }
    Ok(())
}

fn apply_approvals(config: &mut Config, env: &Env<'_>) -> Result<(), ConfigError> {
    let a = &mut config.approvals;
    let counts = [
        ("APPROVALS_SENSITIVE_APPROVALS", &mut a.sensitive_approvals),
        ("APPROVALS_CRITICAL_APPROVALS", &mut a.critical_approvals),
        ("APPROVALS_TRUSTED_TIER", &mut a.trusted_tier),
    ];
    for (name, field) in counts {
        if let Some(n) = env.parse(name, "a number from 0 to 255")? {
            *field = n;
        }
    }
    let seconds = [
        (
            "APPROVALS_SENSITIVE_DELAY_SECONDS",
            &mut a.sensitive_delay_seconds,
        ),
        (
            "APPROVALS_CRITICAL_DELAY_SECONDS",
            &mut a.critical_delay_seconds,
        ),
        ("APPROVALS_REQUEST_TTL_SECONDS", &mut a.request_ttl_seconds),
        (
            "APPROVALS_ACTIVATION_INTERVAL_SECONDS",
            &mut a.activation_interval_seconds,
        ),
    ];
    for (name, field) in seconds {
        if let Some(n) = env.parse(name, "a number of seconds")? {
            *field = n;
        }
    }
    if let Some(b) = env.parse("APPROVALS_ALLOW_CREATOR_APPROVAL", "true or false")? {
        a.allow_creator_approval = b;
    }
    if let Some(roles) = env.get("APPROVALS_TOKEN_APPROVER_ROLES") {
        a.token_approver_roles = roles
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(|r| {
                agent_secret_core::api::Role::parse(r).ok_or_else(|| {
                    invalid(
                        "AGENT_SECRET_APPROVALS_TOKEN_APPROVER_ROLES",
                        &format!("unknown role {r:?}: expected approver or admin, comma-separated"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
    }
    if let Some(url) = env.get("APPROVALS_TRUST_TIER_WEBHOOK_URL") {
        a.trust_tier_webhook = Some(super::TrustTierWebhookConfig {
            url,
            timeout_ms: env
                .parse("APPROVALS_TRUST_TIER_WEBHOOK_TIMEOUT_MS", "milliseconds")?
                .unwrap_or(2000),
            fallback_tier: env
                .parse("APPROVALS_TRUST_TIER_WEBHOOK_FALLBACK_TIER", "a tier 0-4")?
                .unwrap_or(0),
            ca_file: env.path("APPROVALS_TRUST_TIER_WEBHOOK_CA_FILE"),
        });
    }
    Ok(())
}

/// `[notifications]`: `AGENT_SECRET_NOTIFICATIONS_<KEY>`; the webhook URL (a credential for
/// Slack and Teams) also as `AGENT_SECRET_NOTIFICATIONS_WEBHOOK_URL_FILE`.
fn apply_notifications(config: &mut Config, env: &Env<'_>) -> Result<(), ConfigError> {
    let n = &mut config.notifications;
    if let Some(url) = env.secret("NOTIFICATIONS_WEBHOOK_URL")? {
        n.webhook_url = Some(super::WebhookUrl::new(url.expose().trim()));
    }
    if let Some(raw) = env.get("NOTIFICATIONS_FORMAT") {
        n.format = NotificationFormat::parse(raw.trim()).ok_or_else(|| {
            invalid(
                "AGENT_SECRET_NOTIFICATIONS_FORMAT",
                &format!("invalid value {raw:?}: expected \"slack\", \"teams\" or \"json\""),
            )
        })?;
    }
    if let Some(url) = env.get("NOTIFICATIONS_DASHBOARD_URL") {
        n.dashboard_url = Some(url);
    }
    if let Some(s) = env.parse("NOTIFICATIONS_TIMEOUT_SECONDS", "a number of seconds")? {
        n.timeout_seconds = s;
    }
    if let Some(a) = env.parse("NOTIFICATIONS_MAX_ATTEMPTS", "a positive integer")? {
        n.max_attempts = a;
    }
    if let Some(path) = env.path("NOTIFICATIONS_CA_FILE") {
        n.ca_file = Some(path);
    }
    if let Some(q) = env.parse("NOTIFICATIONS_QUEUE", "a positive integer")? {
        n.queue = q;
    }
    Ok(())
}

fn apply_sessions(config: &mut Config, env: &Env<'_>) -> Result<(), ConfigError> {
    let sessions = &mut config.sessions;
    for (name, field) in [
        (
            "SESSIONS_IDLE_TIMEOUT_SECONDS",
            &mut sessions.idle_timeout_seconds,
        ),
        (
            "SESSIONS_ABSOLUTE_TIMEOUT_SECONDS",
            &mut sessions.absolute_timeout_seconds,
        ),
        ("SESSIONS_LOCKOUT_SECONDS", &mut sessions.lockout_seconds),
        (
            "SESSIONS_MAX_LOCKOUT_SECONDS",
            &mut sessions.max_lockout_seconds,
        ),
    ] {
        if let Some(n) = env.parse(name, "a number of seconds")? {
            *field = n;
        }
    }
    if let Some(n) = env.parse("SESSIONS_MAX_FAILED_LOGINS", "a positive integer")? {
        sessions.max_failed_logins = n;
    }
    if let Some(n) = env.parse("SESSIONS_MIN_PASSWORD_CHARS", "a positive integer")? {
        sessions.min_password_chars = n;
    }
    if let Some(raw) = env.get("SESSIONS_REQUIRE_TOTP_ROLES") {
        sessions.require_totp_roles = super::sessions::parse_roles(&raw).ok_or_else(|| {
            invalid(
                "AGENT_SECRET_SESSIONS_REQUIRE_TOTP_ROLES",
                &format!(
                    "invalid value {raw:?}: expected roles like \"admin,approver\" or \"none\""
                ),
            )
        })?;
    }
    Ok(())
}

fn apply_kms(config: &mut Config, env: &Env<'_>) -> Result<(), ConfigError> {
    let kms = &mut config.kms;
    if let Some(backend) = env.get("KMS_BACKEND") {
        kms.backend = match backend.as_str() {
            "local" => KmsBackend::Local,
            "gcp" => KmsBackend::Gcp,
            other => {
                return Err(invalid(
                    "AGENT_SECRET_KMS_BACKEND",
                    &format!("invalid value {other:?}: expected \"local\" or \"gcp\""),
                ))
            }
        };
    }
    if let Some(path) = env.path("KMS_KEYRING") {
        kms.keyring = path;
    }
    // `AGENT_SECRET_MASTER_KEY[_FILE]` is the name the sidecar shares; the sectioned
    // `AGENT_SECRET_KMS_MASTER_KEY_FILE` also works, and the short form wins over it.
    if let Some(path) = env.path("KMS_MASTER_KEY_FILE") {
        kms.master_key_file = path;
    }
    match (env.get("MASTER_KEY"), env.path("MASTER_KEY_FILE")) {
        (Some(_), Some(_)) => return Err(both_set("MASTER_KEY", "MASTER_KEY_FILE")),
        (Some(key), None) => kms.master_key = Some(SecretString::new(key)),
        (None, Some(path)) => kms.master_key_file = path,
        (None, None) => {}
    }
    for (name, field) in [
        ("KMS_PROJECT", &mut kms.project),
        ("KMS_LOCATION", &mut kms.location),
        ("KMS_KEY_RING", &mut kms.key_ring),
        ("KMS_ENDPOINT", &mut kms.endpoint),
    ] {
        if let Some(value) = env.get(name) {
            *field = Some(value);
        }
    }
    if let Some(path) = env.path("KMS_CREDENTIALS_FILE") {
        kms.credentials_file = Some(path);
    }
    if let Some(path) = env.path("KMS_ADMIN_CREDENTIALS_FILE") {
        kms.admin_credentials_file = Some(path);
    }
    if let Some(level) = env.get("KMS_PROTECTION_LEVEL") {
        kms.protection_level = match level.as_str() {
            "hsm" => GcpProtection::Hsm,
            "software" => GcpProtection::Software,
            other => {
                return Err(invalid(
                    "AGENT_SECRET_KMS_PROTECTION_LEVEL",
                    &format!("invalid value {other:?}: expected \"hsm\" or \"software\""),
                ))
            }
        };
    }
    if let Some(n) = env.parse("KMS_TIMEOUT_MS", "a number of milliseconds")? {
        kms.timeout_ms = n;
    }
    if let Some(n) = env.parse("KMS_MAX_ATTEMPTS", "a positive integer")? {
        kms.max_attempts = n;
    }
    if let Some(n) = env.parse("KMS_ROTATION_PERIOD_DAYS", "a number of days")? {
        kms.rotation_period_days = n;
    }
    if let Some(n) = env.parse("KMS_ROTATION_CHECK_INTERVAL_SECONDS", "a number of seconds")? {
        kms.rotation_check_interval_seconds = n;
    }
    if let Some(n) = env.parse("KMS_RETIRE_GRACE_HOURS", "a number of hours")? {
        kms.retire_grace_hours = n;
    }
    Ok(())
}

/// `[server]` and `[rate_limits]`: `AGENT_SECRET_SERVER_<KEY>` and
/// `AGENT_SECRET_RATE_LIMITS_<LIMIT>_PER_SECOND` / `_BURST`.
fn apply_limits(config: &mut Config, env: &Env<'_>) -> Result<(), ConfigError> {
    let server = &mut config.server;
    for (name, field) in [
        (
            "SERVER_TLS_HANDSHAKE_TIMEOUT_SECONDS",
            &mut server.tls_handshake_timeout_seconds,
        ),
        (
            "SERVER_HEADER_READ_TIMEOUT_SECONDS",
            &mut server.header_read_timeout_seconds,
        ),
        (
            "SERVER_IDLE_TIMEOUT_SECONDS",
            &mut server.idle_timeout_seconds,
        ),
        (
            "SERVER_REQUEST_BODY_TIMEOUT_SECONDS",
            &mut server.request_body_timeout_seconds,
        ),
    ] {
        if let Some(n) = env.parse(name, "a number of seconds")? {
            *field = n;
        }
    }
    for (name, field) in [
        ("SERVER_MAX_HEADER_BYTES", &mut server.max_header_bytes),
        (
            "SERVER_MAX_CONNECTIONS_PER_IP",
            &mut server.max_connections_per_ip,
        ),
        ("SERVER_MAX_CONNECTIONS", &mut server.max_connections),
    ] {
        if let Some(n) = env.parse(name, "a positive integer")? {
            *field = n;
        }
    }
    let limits = &mut config.rate_limits;
    for (name, limit) in [
        ("TOKENS_PER_AGENT", &mut limits.tokens_per_agent),
        ("TOKENS_PER_IP", &mut limits.tokens_per_ip),
        ("RESOLVE_PER_SIDECAR", &mut limits.resolve_per_sidecar),
        ("RESOLVE_PER_IP", &mut limits.resolve_per_ip),
        ("AUTH_FAILURES_PER_IP", &mut limits.auth_failures_per_ip),
        ("MCP_PER_AGENT", &mut limits.mcp_per_agent),
    ] {
        let rate = format!("RATE_LIMITS_{name}_PER_SECOND");
        if let Some(n) = env.parse(&rate, "a positive integer")? {
            limit.per_second = n;
        }
        if let Some(n) = env.parse(&format!("RATE_LIMITS_{name}_BURST"), "a positive integer")? {
            limit.burst = n;
        }
    }
    if let Some(n) = env.parse("RATE_LIMITS_ALERT_WINDOW_SECONDS", "a number of seconds")? {
        limits.alert_window_seconds = n;
    }
    Ok(())
}

fn both_set(name: &str, other: &str) -> ConfigError {
    invalid(
        &format!("{ENV_PREFIX}{name}"),
        &format!("set either {ENV_PREFIX}{name} or {ENV_PREFIX}{other}, not both"),
    )
}
