//! `[backup]`: automatic database backups (`crate::backup`, docs/operations.md "Backups").

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use super::error::{invalid, ConfigError};
use super::secrets::DatabaseUrl;

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupConfig {
    /// Where `serve` writes a backup every `interval_seconds` (and `backup` by default).
    /// Unset: no automatic backups (`serve` says so at start).
    pub directory: Option<PathBuf>,
    pub interval_seconds: u64,
    /// Backups this scheduler made are deleted once older than this; the newest never is.
    pub retention_days: u32,
    /// age X25519 recipients (`age1...`): each backup is encrypted to all of them, so a stolen
    /// file reveals nothing, not even row counts. Restore then needs one identity.
    pub recipients: Vec<String>,
    /// PostgreSQL only: a role that reads every row (BYPASSRLS, e.g. with pg_read_all_data)
    /// connected to the service's database. `pg_dump` and `pg_restore` run as it. A secret:
    /// also `AGENT_SECRET_BACKUP_POSTGRES_URL(_FILE)`.
    pub postgres_url: Option<DatabaseUrl>,
    /// The PostgreSQL client tools, matching the server's major version.
    pub pg_dump: PathBuf,
    pub pg_restore: PathBuf,
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            directory: None,
            interval_seconds: 86_400,
            retention_days: 30,
            recipients: Vec::new(),
            postgres_url: None,
            pg_dump: "pg_dump".into(),
            pg_restore: "pg_restore".into(),
        }
    }
}

impl BackupConfig {
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_seconds)
    }

    pub fn retention(&self) -> Duration {
        Duration::from_secs(u64::from(self.retention_days) * 86_400)
    }

    /// The parsed recipients (checked at load, so this cannot fail afterwards in practice).
    pub fn age_recipients(&self) -> Result<Vec<age::x25519::Recipient>, ConfigError> {
        parse_recipients("backup.recipients", &self.recipients)
    }

    pub(super) fn validate(&self, database: &DatabaseUrl) -> Result<(), ConfigError> {
        if self.interval_seconds == 0 {
            return Err(invalid("backup.interval_seconds", "must be at least 1"));
        }
        if self.retention_days == 0 {
            return Err(invalid(
                "backup.retention_days",
                "must be at least 1 (the newest backup is always kept)",
            ));
        }
        self.age_recipients()?;
        if let Some(url) = &self.postgres_url {
            url.check_scheme("backup.postgres_url")?;
            if !url.is_postgres() {
                return Err(invalid(
                    "backup.postgres_url",
                    "must be a postgres:// URL (SQLite needs none)",
                ));
            }
        }
        if self.directory.is_some() && database.is_postgres() && self.postgres_url.is_none() {
            return Err(invalid(
                "backup.postgres_url",
                "required for backups of PostgreSQL: a role that bypasses row-level security \
                 (the service role sees one tenant at a time)",
            ));
        }
        Ok(())
    }
}

/// age X25519 recipients (`age1...`), each error naming `key` (a config key, or a flag).
pub fn parse_recipients(
    key: &str,
    recipients: &[String],
) -> Result<Vec<age::x25519::Recipient>, ConfigError> {
    recipients
        .iter()
        .map(|r| {
            age::x25519::Recipient::from_str(r.trim()).map_err(|_| {
                invalid(
                    key,
                    &format!("{r:?} is not an age X25519 recipient (age1...)"),
                )
            })
        })
        .collect()
}
