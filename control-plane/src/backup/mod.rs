//! Database backups and their restore (docs/operations.md "Backups" and "Restore").
//!
//! A backup is one file, `agent-secret-store-backup-<UTC time>.tar.zst[.age]`: a tar of
//! `manifest.json`, `manifest.mac` and the database itself (`database.sqlite`, a consistent
//! copy made with `VACUUM INTO` while the server runs; or `database.pgdump`, `pg_dump`'s custom
//! format from an exported snapshot), compressed with zstd and, with `[backup] recipients`,
//! encrypted to age X25519 recipients so a stolen file reveals not even its row counts.
//!
//! The manifest records what a restore must find again: schema version, every table's row
//! count and a SHA-256 over its rows in a canonical order, and each tenant's audit chain head,
//! all read from exactly the data that was dumped. It is authenticated with an HMAC keyed by
//! the installation's pepper, which never enters a backup: an edited row fails its table's
//! digest, and a manifest rewritten to match fails the MAC. The keyring, master key and
//! pepper are not in a database backup (`backup --keys` writes them to a separate, encrypted
//! file).

mod archive;
mod keys;
mod manifest;
mod restore;
mod retention;
pub mod schedule;
mod snapshot;
mod summary;

use std::path::PathBuf;

pub use archive::{read_archive, write_archive, Contents, Payload};
pub use keys::{export_keys, import_keys, KeyExport};
pub use manifest::{AuditHead, Manifest, TableSummary, FORMAT};
pub use restore::{restore, verify_restored, RestoreOptions, RestoreReport, Restored};
pub use retention::{backup_file_name, expired, parse_backup_name, prune};
pub use snapshot::{create, BackupOptions, BackupReport};
pub use summary::{summarize_postgres, summarize_sqlite};

use crate::store::StoreError;

/// Where the database is, as backup and restore need to reach it.
#[derive(Clone, Debug)]
pub enum Source {
    /// The SQLite file (`database.url`).
    Sqlite { path: PathBuf },
    /// PostgreSQL through a role that reads every row (`[backup] postgres_url`), and the
    /// client tools.
    Postgres {
        url: crate::config::DatabaseUrl,
        pg_dump: PathBuf,
        pg_restore: PathBuf,
    },
}

impl Source {
    /// The source `[database]` and `[backup]` describe.
    pub fn from_config(config: &crate::config::Config) -> Result<Source, BackupError> {
        let url = &config.database.url;
        if url.is_postgres() {
            let Some(backup_url) = config.backup.postgres_url.clone() else {
                return Err(BackupError::Config(
                    "backup.postgres_url is required for PostgreSQL: a role that bypasses \
                     row-level security, connected to the service's database"
                        .into(),
                ));
            };
            return Ok(Source::Postgres {
                url: backup_url,
                pg_dump: config.backup.pg_dump.clone(),
                pg_restore: config.backup.pg_restore.clone(),
            });
        }
        match crate::bootstrap::sqlite_file(url) {
            Some(path) => Ok(Source::Sqlite { path }),
            None => Err(BackupError::Config(
                "an in-memory SQLite database cannot be backed up".into(),
            )),
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Source::Sqlite { .. } => "sqlite",
            Source::Postgres { .. } => "postgres",
        }
    }
}

/// Why a backup or restore did not happen. Never holds a secret value, a password or a key.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0}")]
    Config(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{tool} failed ({status}): {stderr}")]
    Tool {
        tool: &'static str,
        status: String,
        stderr: String,
    },
    #[error("not a backup this tool wrote: {0}")]
    Format(String),
    #[error(
        "the backup is encrypted: pass --identity with an age identity of one of its recipients"
    )]
    NeedsIdentity,
    #[error("cannot decrypt the backup: {0}")]
    Decrypt(String),
    #[error("the manifest's MAC does not verify: the file was altered, or the pepper is not the one it was made with")]
    ManifestMac,
    #[error("the target database is not empty ({0}); restore into an empty one, or pass --force to replace it")]
    NotEmpty(String),
    #[error("verification failed: {}", .0.join("; "))]
    Verification(Vec<String>),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

impl BackupError {
    /// The stable code the CLI prints (`error: <code>: ...`).
    pub fn code(&self) -> &'static str {
        match self {
            BackupError::Config(_) => "invalid_config",
            BackupError::Io { .. } => "backup_io_failed",
            BackupError::Database(_) | BackupError::Store(_) => "database_failed",
            BackupError::Tool { .. } => "backup_tool_failed",
            BackupError::Format(_) => "invalid_backup",
            BackupError::NeedsIdentity => "identity_required",
            BackupError::Decrypt(_) => "decrypt_failed",
            BackupError::ManifestMac => "backup_tampered",
            BackupError::NotEmpty(_) => "target_not_empty",
            BackupError::Verification(_) => "restore_verification_failed",
        }
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackupError {
        let context = context.into();
        move |source| BackupError::Io { context, source }
    }
}

/// A new file, mode 0600, never one that exists already (backups, extracted databases, key
/// exports).
pub(crate) fn create_private(path: &std::path::Path) -> Result<std::fs::File, BackupError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(BackupError::io(format!("cannot create {}", path.display())))
}
