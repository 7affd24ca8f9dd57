//! Making a backup: a consistent copy of the database, its summary, one archive file.
//!
//! SQLite: `VACUUM INTO` writes a consistent, compacted copy from one read transaction while
//! the server goes on writing (WAL readers never block the writer). It is SQLite's own online
//! copy in SQL; the C backup API would give the same snapshot, but sqlx does not expose it and
//! reaching it would take `unsafe` FFI. The summary is then read from the copy itself.
//!
//! PostgreSQL: a REPEATABLE READ transaction exports its snapshot, the summary is read in it,
//! and `pg_dump --snapshot` dumps exactly that snapshot while the transaction stays open, so
//! the manifest and the dump describe the same instant however busy the server is.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use agent_secret_core::credential::Pepper;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, PgConnection, SqlitePool};

use super::archive::{write_archive, Payload};
use super::manifest::{Manifest, FORMAT};
use super::retention::{backup_file_name, PARTIAL_SUFFIX};
use super::summary::{summarize_postgres, summarize_sqlite, Summary};
use super::{BackupError, Source};

/// How one backup is made.
pub struct BackupOptions<'a> {
    /// Encrypt to these (none: compressed only).
    pub recipients: &'a [age::x25519::Recipient],
    /// Keys the manifest's MAC.
    pub pepper: &'a Pepper,
    pub now: DateTime<Utc>,
}

/// A backup written.
#[derive(Clone, Debug, Serialize)]
pub struct BackupReport {
    pub path: PathBuf,
    pub bytes: u64,
    /// SHA-256 (hex) of the whole file, to record beside it.
    pub sha256: String,
    pub encrypted: bool,
    pub manifest: Manifest,
}

/// Writes one backup of `source` into `dir` (created 0700 if missing).
pub async fn create(
    source: &Source,
    dir: &Path,
    options: &BackupOptions<'_>,
) -> Result<BackupReport, BackupError> {
    agent_secret_core::secret_file::create_private_parent(&dir.join("x"))
        .map_err(BackupError::io(format!("cannot create {}", dir.display())))?;
    // Private working space on the destination's file system, removed however this ends.
    let work = tempfile::Builder::new()
        .prefix(".agent-secret-store-backup-work-")
        .tempdir_in(dir)
        .map_err(BackupError::io(format!("cannot work in {}", dir.display())))?;
    let (payload, summary) = match source {
        Source::Sqlite { path } => sqlite_copy(path, work.path()).await?,
        Source::Postgres { url, pg_dump, .. } => {
            postgres_dump(url.expose(), pg_dump, work.path()).await?
        }
    };
    // Hashing and compressing are CPU and file work: off the async runtime, which in `serve`
    // is answering requests meanwhile.
    let digest_of = payload.path.clone();
    let (database_bytes, database_sha256) = blocking(move || file_digest(&digest_of)).await?;
    let manifest = Manifest {
        format: FORMAT.into(),
        created_at: options.now.to_rfc3339_opts(SecondsFormat::Secs, true),
        backend: source.backend().into(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        schema_version: summary.schema_version,
        tables: summary.tables,
        audit_heads: summary.audit_heads,
        database_file: payload.name.clone(),
        database_bytes,
        database_sha256,
    };
    let (manifest_bytes, mac) = manifest.seal(options.pepper)?;
    let encrypted = !options.recipients.is_empty();
    let name = backup_file_name(options.now, encrypted);
    let partial = work.path().join(format!("{name}{PARTIAL_SUFFIX}"));
    let path = dir.join(&name);
    let recipients = options.recipients.to_vec();
    let (bytes, sha256) = {
        let (partial, path, dir) = (partial.clone(), path.clone(), dir.to_owned());
        blocking(move || {
            let bytes = write_archive(&partial, &manifest_bytes, &mac, &payload, &recipients)?;
            let (_, sha256) = file_digest(&partial)?;
            // A hard link never replaces an existing file (two backups in one second): the
            // second fails instead of overwriting the first.
            std::fs::hard_link(&partial, &path)
                .map_err(BackupError::io(format!("cannot create {}", path.display())))?;
            if let Ok(d) = std::fs::File::open(&dir) {
                let _ = d.sync_all();
            }
            Ok((bytes, sha256))
        })
        .await?
    };
    Ok(BackupReport {
        path,
        bytes,
        sha256,
        encrypted,
        manifest,
    })
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, BackupError> + Send + 'static,
) -> Result<T, BackupError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| BackupError::Io {
            context: "backup worker".into(),
            source: std::io::Error::other(e.to_string()),
        })?
}

/// Size and SHA-256 (hex) of a file, streamed.
pub(super) fn file_digest(path: &Path) -> Result<(u64, String), BackupError> {
    let mut file = std::fs::File::open(path)
        .map_err(BackupError::io(format!("cannot read {}", path.display())))?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut bytes = 0u64;
    loop {
        let n = std::io::Read::read(&mut file, &mut buf)
            .map_err(BackupError::io(format!("cannot read {}", path.display())))?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok((bytes, hex::encode(hash.finalize())))
}

/// Opens an existing SQLite file (never creating one).
pub(super) async fn open_sqlite(path: &Path, read_only: bool) -> Result<SqlitePool, BackupError> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(false)
        .read_only(read_only)
        .busy_timeout(std::time::Duration::from_secs(30));
    Ok(sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?)
}

async fn sqlite_copy(path: &Path, work: &Path) -> Result<(Payload, Summary), BackupError> {
    if !path.is_file() {
        return Err(BackupError::Config(format!(
            "no SQLite database at {}",
            path.display()
        )));
    }
    let copy = work.join("database.sqlite");
    let source = open_sqlite(path, false).await?;
    sqlx::query("VACUUM INTO ?")
        .bind(copy.to_string_lossy().into_owned())
        .execute(&source)
        .await?;
    source.close().await;
    let snapshot = open_sqlite(&copy, true).await?;
    let summary = summarize_sqlite(&snapshot).await;
    snapshot.close().await;
    Ok((
        Payload {
            name: "database.sqlite".into(),
            path: copy,
        },
        summary?,
    ))
}

/// A libpq URL without its password, and the password (for `PGPASSWORD`): never on a command
/// line, where `ps` shows it.
pub(super) fn split_password(url: &str) -> Result<(String, Option<String>), BackupError> {
    let mut parsed = reqwest::Url::parse(url)
        .map_err(|_| BackupError::Config("backup.postgres_url is not a valid URL".into()))?;
    let password = parsed.password().map(|p| {
        percent_encoding::percent_decode_str(p)
            .decode_utf8_lossy()
            .into_owned()
    });
    if password.is_some() && parsed.set_password(None).is_err() {
        return Err(BackupError::Config(
            "backup.postgres_url: cannot separate the password".into(),
        ));
    }
    // libpq also takes `?password=`.
    let mut query_password = None;
    let kept: Vec<(String, String)> = parsed
        .query_pairs()
        .filter_map(|(k, v)| {
            if k == "password" {
                query_password = Some(v.into_owned());
                None
            } else {
                Some((k.into_owned(), v.into_owned()))
            }
        })
        .collect();
    if query_password.is_some() {
        parsed.query_pairs_mut().clear().extend_pairs(kept);
    }
    Ok((parsed.to_string(), password.or(query_password)))
}

/// Runs a PostgreSQL client tool; its stderr (bounded) becomes the error.
pub(super) async fn run_tool(
    tool: &'static str,
    program: &Path,
    args: &[String],
    password: Option<&str>,
) -> Result<(), BackupError> {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .env_remove("PGPASSWORD")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(password) = password {
        command.env("PGPASSWORD", password);
    }
    let output = command.output().await.map_err(BackupError::io(format!(
        "cannot run {} (backup.{tool})",
        program.display()
    )))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tail: String = stderr
        .chars()
        .rev()
        .take(2000)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    Err(BackupError::Tool {
        tool,
        status: output.status.to_string(),
        stderr: tail.trim().to_owned(),
    })
}

async fn postgres_dump(
    url: &str,
    pg_dump: &Path,
    work: &Path,
) -> Result<(Payload, Summary), BackupError> {
    let mut conn = PgConnection::connect(url).await?;
    sqlx::raw_sql("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut conn)
        .await?;
    let snapshot: String = sqlx::query_scalar("SELECT pg_export_snapshot()")
        .fetch_one(&mut conn)
        .await?;
    let summary = summarize_postgres(&mut conn).await?;
    let (dbname, password) = split_password(url)?;
    let file = work.join("database.pgdump");
    let args = vec![
        "--format=custom".to_owned(),
        // zstd compresses the whole archive; compressing twice only costs time.
        "--compress=0".to_owned(),
        format!("--snapshot={snapshot}"),
        "--no-password".to_owned(),
        format!("--file={}", file.display()),
        format!("--dbname={dbname}"),
    ];
    // The exporting transaction must stay open while pg_dump imports its snapshot.
    let dumped = run_tool("pg_dump", pg_dump, &args, password.as_deref()).await;
    sqlx::raw_sql("COMMIT").execute(&mut conn).await?;
    conn.close().await.ok();
    dumped?;
    Ok((
        Payload {
            name: "database.pgdump".into(),
            path: file,
        },
        summary,
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn passwords_never_stay_in_the_url_a_tool_gets() {
        let (url, password) =
            split_password("postgres://backup:p%40ss@db.internal:5432/store?sslmode=require")
                .unwrap();
        assert_eq!(
            url,
            "postgres://backup@db.internal:5432/store?sslmode=require"
        );
        assert_eq!(password.as_deref(), Some("p@ss"));
        let (url, password) =
            split_password("postgres://backup@db/store?password=hunter2&sslmode=verify-full")
                .unwrap();
        assert!(!url.contains("hunter2"), "{url}");
        assert!(url.contains("sslmode=verify-full"), "{url}");
        assert_eq!(password.as_deref(), Some("hunter2"));
        let (url, password) = split_password("postgres://backup@db/store").unwrap();
        assert_eq!(
            (url.as_str(), password),
            ("postgres://backup@db/store", None)
        );
    }
}
