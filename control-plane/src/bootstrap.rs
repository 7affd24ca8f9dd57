//! Turns a [`Config`] into a running [`App`]: database (migrated), KMS, pepper and policy.
//!
//! `serve`, `tenant create` and `init` all start here, so start-up is the same whichever command
//! opens the store. Migrations run at every start (they are idempotent), through the owner
//! connection when `database.owner_url` is set so the service role never needs DDL rights.
//! The helpers that create missing key files are used by `init` (and `dev`): they write with
//! mode 0600 and refuse to replace an existing file, because overwriting a pepper or master key
//! would orphan every stored credential or the whole keyring.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use agent_secret_core::credential::{Pepper, MIN_PEPPER_LEN};
use agent_secret_core::kms::local::{LocalKms, MasterKey};
use agent_secret_core::kms::{self, KeyringAccess, Kms};
use agent_secret_core::secret_file::create_private_parent;
use anyhow::{bail, Context as _};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rand::TryRngCore as _;
use zeroize::Zeroizing;

use crate::config::{Config, DatabaseUrl, KmsRole};
use crate::db::{Db, DEFAULT_MAX_CONNECTIONS};
use crate::service::{App, Policy};
use crate::store::sql::SqlStore;
use crate::store::Store;

/// Mode of every file holding key material.
const SECRET_FILE_MODE: u32 = 0o600;

/// What [`ensure_pepper_file`] / [`ensure_master_key_file`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyFile {
    /// A new file was written at this path.
    Created(PathBuf),
    /// The file already existed and was left untouched.
    Existing(PathBuf),
    /// The key comes from an environment variable; no file is involved.
    FromEnv(&'static str),
}

/// Opens everything the service needs: migrated database, KMS, pepper and policy.
pub async fn open_app(config: &Config) -> anyhow::Result<App> {
    let kms = open_kms(config, KmsRole::Service).await?;
    app_with_kms(config, kms).await
}

/// The configured KMS backend, through the opener the sidecar uses too; the control plane
/// may create a missing local keyring. `role` picks the Cloud KMS credentials: the server's
/// encrypt-only identity, or the privileged one of the `kms` maintenance commands.
pub async fn open_kms(config: &Config, role: KmsRole) -> anyhow::Result<Arc<dyn Kms>> {
    let settings = config.kms_settings(role)?;
    kms::open(settings, KeyringAccess::Create)
        .await
        .context("kms")
}

/// [`open_app`] with an already opened KMS (`init` inspects the keyring first).
pub async fn app_with_kms(config: &Config, kms: Arc<dyn Kms>) -> anyhow::Result<App> {
    let pepper = config.pepper()?;
    let db = open_database(config).await?;
    let events = event_hub(&db);
    let store: Arc<dyn Store> = Arc::new(SqlStore::new(db));
    let mut policy = policy(config);
    policy.audit_sinks = audit_sinks(config)?;
    policy.alerts = alerts(config)?;
    let mut app = App::new(store, kms, Arc::new(pepper), policy)
        .with_events(events)
        .with_limits(crate::limits::Limits::new(
            &config.server,
            &config.rate_limits,
        ))
        .with_sessions(crate::service::sessions::SessionSettings::from_config(
            &config.sessions,
        ));
    if let Some(webhook) = trust_tier_webhook(config)? {
        app = app.with_trust_tiers(webhook);
    }
    if let Some(settings) = config.kubernetes.injector_settings()? {
        app = app.with_injector(crate::kubernetes::Injector::new(settings));
    }
    if let Some(identity) = config.kubernetes.workload_identity()? {
        app = app.with_workload_identity(identity);
    }
    if let Some(settings) = config.notifications.settings(config.listen)? {
        if config.notifications.dashboard_url.is_none() && config.listen.ip().is_unspecified() {
            tracing::warn!(
                listen = %config.listen,
                "notifications.dashboard_url is not set and the server listens on every \
                 interface: links in approval notifications will not open; set it to the \
                 dashboard's public URL"
            );
        }
        app = app.with_notifications(settings)?;
    }
    Ok(app)
}

/// The store connected as the tables' owner (`database.owner_url`, else `database.url`),
/// migrated: for the owner's own maintenance (`audit archive`), never for serving.
pub async fn open_owner_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let url = config
        .database
        .owner_url
        .as_ref()
        .unwrap_or(&config.database.url);
    let db = connect(url, "database.owner_url", DEFAULT_MAX_CONNECTIONS).await?;
    migrate_db(&db, url).await?;
    Ok(Arc::new(SqlStore::new(db)))
}

/// Watch events cross replicas through PostgreSQL `NOTIFY`; SQLite has one replica.
pub fn event_hub(db: &crate::db::Db) -> crate::events::EventHub {
    match db {
        crate::db::Db::Postgres(pool) => crate::events::EventHub::postgres(pool.clone()),
        crate::db::Db::Sqlite(_) => crate::events::EventHub::local(),
    }
}

/// The KEK rotation scheduler's settings, from `[kms]`.
pub fn rotation_schedule(config: &Config) -> crate::rotation::RotationSchedule {
    crate::rotation::RotationSchedule {
        period: config.kms.rotation_period(),
        check_interval: std::time::Duration::from_secs(config.kms.rotation_check_interval_seconds),
    }
}

/// The token policy the service enforces, from `[tokens]`.
pub fn policy(config: &Config) -> Policy {
    Policy {
        max_token_ttl_seconds: config.tokens.max_ttl_seconds,
        grant_cache_ttl_seconds: config.tokens.grant_cache_ttl_seconds,
        use_reservation_seconds: config.tokens.use_reservation_seconds,
        sidecar_auth_cache: std::time::Duration::from_secs(
            config.security.sidecar_auth_cache_seconds,
        ),
        token_expiry_sweep: std::time::Duration::from_secs(config.tokens.expiry_sweep_seconds),
        audit_sinks: Vec::new(),
        checkpoints: crate::service::checkpoints::CheckpointSettings {
            every_events: config.audit.checkpoint_every_events,
            every: std::time::Duration::from_secs(config.audit.checkpoint_interval_seconds),
            check: std::time::Duration::from_secs(
                config.audit.checkpoint_interval_seconds.clamp(1, 10),
            ),
            file: config.audit.checkpoint_file.clone(),
        },
        approvals: config.approvals.settings(),
        alerts: crate::service::alerts::AlertSettings::off(),
    }
}

/// The SIEM sinks of `[[audit.sinks]]`, their token and CA files read.
pub fn audit_sinks(config: &Config) -> anyhow::Result<Vec<crate::service::siem::SinkSettings>> {
    config
        .audit
        .sinks
        .iter()
        .map(|sink| {
            let key = format!("audit.sinks.{}", sink.name);
            let token = match &sink.token_file {
                Some(path) => Some(read_token(path, &format!("{key}.token_file"))?),
                None => None,
            };
            let ca_pem = match &sink.ca_file {
                Some(path) => Some(
                    std::fs::read(path)
                        .with_context(|| format!("{key}.ca_file {}", path.display()))?,
                ),
                None => None,
            };
            Ok(crate::service::siem::SinkSettings {
                name: sink.name.clone(),
                kind: sink.kind,
                url: sink.url.clone(),
                token,
                ca_pem,
                batch_size: sink.batch_size,
                flush_interval: std::time::Duration::from_millis(sink.flush_interval_ms),
            })
        })
        .collect()
}

/// `[alerts]`, with the webhook's token and CA read from their files.
pub fn alerts(config: &Config) -> anyhow::Result<crate::service::alerts::AlertSettings> {
    use crate::service::alerts::{AlertSettings, AlertWebhook};
    let c = &config.alerts;
    let webhook = match &c.webhook_url {
        Some(url) => Some(AlertWebhook {
            url: url.clone(),
            token: match &c.webhook_token_file {
                Some(path) => Some(read_token(path, "alerts.webhook_token_file")?),
                None => None,
            },
            ca_pem: match &c.webhook_ca_file {
                Some(path) => Some(
                    std::fs::read(path)
                        .with_context(|| format!("alerts.webhook_ca_file {}", path.display()))?,
                ),
                None => None,
            },
        }),
        None => None,
    };
    Ok(AlertSettings {
        enabled: c.enabled,
        rules: c.rules()?,
        poll_interval: std::time::Duration::from_millis(c.poll_interval_ms),
        baseline: std::time::Duration::from_secs(c.baseline_hours.saturating_mul(3600)),
        baseline_max_events: c.baseline_max_events,
        webhook,
    })
}

/// A credential kept in a file, trimmed.
fn read_token(
    path: &std::path::Path,
    key: &str,
) -> anyhow::Result<agent_secret_core::secret::SecretString> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("{key} {}", path.display()))?;
    Ok(agent_secret_core::secret::SecretString::new(
        text.trim().to_owned(),
    ))
}

/// The trust-tier webhook of `[approvals.trust_tier_webhook]`, when configured.
pub fn trust_tier_webhook(
    config: &Config,
) -> anyhow::Result<Option<crate::service::trust_tiers::TrustTierWebhook>> {
    let Some(hook) = &config.approvals.trust_tier_webhook else {
        return Ok(None);
    };
    let ca =
        match &hook.ca_file {
            Some(path) => Some(std::fs::read(path).with_context(|| {
                format!("approvals.trust_tier_webhook.ca_file {}", path.display())
            })?),
            None => None,
        };
    let webhook = crate::service::trust_tiers::TrustTierWebhook::new(
        &hook.url,
        std::time::Duration::from_millis(hook.timeout_ms),
        hook.fallback_tier,
        ca.as_deref(),
    )?;
    Ok(Some(webhook))
}

/// Opens (creating if missing) the local keyring.
pub fn open_local_kms(config: &Config) -> anyhow::Result<LocalKms> {
    let master = config.master_key()?;
    kms::open_local(&config.kms.keyring, master, KeyringAccess::Create).context("kms.keyring")
}

/// Runs the migrations (through `owner_url` when set, then granting the service role on
/// PostgreSQL) and returns the service's own connection pool.
pub async fn open_database(config: &Config) -> anyhow::Result<Db> {
    let database = &config.database;
    match &database.owner_url {
        Some(owner_url) => {
            let owner = connect(owner_url, "database.owner_url", DEFAULT_MAX_CONNECTIONS).await?;
            migrate_db(&owner, owner_url).await?;
            if owner_url.is_postgres() {
                owner
                    .apply_grants(&database.service_role)
                    .await
                    .with_context(|| {
                        format!(
                            "granting rights to database.service_role {:?}",
                            database.service_role
                        )
                    })?;
            }
            drop(owner);
            connect(&database.url, "database.url", database.max_connections).await
        }
        None => {
            let db = connect(&database.url, "database.url", database.max_connections).await?;
            migrate_db(&db, &database.url).await?;
            Ok(db)
        }
    }
}

async fn connect(url: &DatabaseUrl, key: &str, max_connections: u32) -> anyhow::Result<Db> {
    if let Some(path) = sqlite_file(url) {
        create_private_parent(&path)?;
    }
    Db::connect_sized(url.expose(), max_connections)
        .await
        .with_context(|| format!("{key}: cannot connect to {url}"))
}

async fn migrate_db(db: &Db, url: &DatabaseUrl) -> anyhow::Result<()> {
    db.migrate()
        .await
        .with_context(|| format!("migrating {url}"))
}

/// The file behind a `sqlite://PATH[?opts]` URL, unless it is in memory.
pub fn sqlite_file(url: &DatabaseUrl) -> Option<PathBuf> {
    let rest = url.expose().strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path.contains(":memory:") || url.expose().contains("mode=memory") {
        return None;
    }
    Some(PathBuf::from(path))
}

/// Creates the pepper file with 32 fresh random bytes (base64) unless a pepper is configured
/// through the environment or the file already exists.
pub fn ensure_pepper_file(config: &Config) -> anyhow::Result<KeyFile> {
    if config.security.pepper.is_some() {
        return Ok(KeyFile::FromEnv("AGENT_SECRET_SECURITY_PEPPER"));
    }
    let path = &config.security.pepper_file;
    if path.exists() {
        return Ok(KeyFile::Existing(path.clone()));
    }
    let mut bytes = Zeroizing::new(vec![0u8; MIN_PEPPER_LEN]);
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .context("the OS random number generator failed")?;
    // Check the bytes are acceptable before they are written anywhere.
    Pepper::from_bytes(bytes.to_vec()).context("generated pepper refused")?;
    let encoded = Zeroizing::new(format!("{}\n", STANDARD.encode(&bytes[..])));
    write_new_secret_file(path, encoded.as_bytes())
        .with_context(|| format!("security.pepper_file: cannot create {}", path.display()))?;
    Ok(KeyFile::Created(path.clone()))
}

/// Creates the master key file with a fresh random key (base64) unless the key comes from the
/// environment or the file already exists.
pub fn ensure_master_key_file(config: &Config) -> anyhow::Result<KeyFile> {
    if config.kms.master_key.is_some() {
        return Ok(KeyFile::FromEnv("AGENT_SECRET_MASTER_KEY"));
    }
    let path = &config.kms.master_key_file;
    if path.exists() {
        return Ok(KeyFile::Existing(path.clone()));
    }
    if config.kms.keyring.exists() {
        bail!(
            "kms.master_key_file: {} is missing but the keyring {} exists; a new master key \
             could not open it. Restore the master key file (or point the config at it)",
            path.display(),
            config.kms.keyring.display()
        );
    }
    let encoded = Zeroizing::new(format!("{}\n", MasterKey::generate().to_base64().expose()));
    write_new_secret_file(path, encoded.as_bytes())
        .with_context(|| format!("kms.master_key_file: cannot create {}", path.display()))?;
    Ok(KeyFile::Created(path.clone()))
}

/// Writes `contents` to a new file with mode 0600 (creating private parent directories);
/// fails with `AlreadyExists` rather than replace an existing file.
pub fn write_new_secret_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    create_private_parent(path)?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(SECRET_FILE_MODE)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn sqlite_file_ignores_memory_databases() {
        assert_eq!(
            sqlite_file(&DatabaseUrl::new("sqlite://data/store.db?mode=rwc")),
            Some(PathBuf::from("data/store.db"))
        );
        assert_eq!(
            sqlite_file(&DatabaseUrl::new("sqlite:///tmp/x.db")),
            Some(PathBuf::from("/tmp/x.db"))
        );
        assert_eq!(sqlite_file(&DatabaseUrl::new("sqlite::memory:")), None);
        assert_eq!(sqlite_file(&DatabaseUrl::new("postgres://u@h/db")), None);
    }

    #[tokio::test]
    async fn the_pool_has_the_configured_size() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.database.url =
            DatabaseUrl::new(format!("sqlite://{}", dir.path().join("s.db").display()));
        config.database.max_connections = 3;
        let Db::Sqlite(pool) = open_database(&config).await.unwrap() else {
            unreachable!("a SQLite URL")
        };
        assert_eq!(pool.options().get_max_connections(), 3);
        // PostgreSQL too, when there is one to connect to.
        let Ok(url) = std::env::var("AGENT_SECRET_STORE_TEST_DATABASE_URL") else {
            return;
        };
        let Db::Postgres(pool) = Db::connect_sized(&url, 3).await.unwrap() else {
            unreachable!("a PostgreSQL URL")
        };
        assert_eq!(pool.options().get_max_connections(), 3);
        assert!(!pool.options().get_test_before_acquire());
    }
}
