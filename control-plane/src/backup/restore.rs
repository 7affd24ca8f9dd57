//! Restoring a backup into an empty database, and proving the result is the backed-up data:
//! schema version, every table's rows (count and digest), the audit heads, then each tenant's
//! audit chain from genesis to its recorded head and one secret per tenant decrypted with the
//! current keyring.

use std::path::Path;

use agent_secret_core::credential::Pepper;
use agent_secret_core::envelope::{self, Envelope, SecretAad};
use agent_secret_core::ids::TenantId;
use serde::Serialize;
use sqlx::{Connection, PgConnection};

use super::archive::read_archive;
use super::manifest::Manifest;
use super::snapshot::{file_digest, open_sqlite, run_tool, split_password};
use super::summary::{differences, summarize_postgres, summarize_sqlite, Summary};
use super::{BackupError, Source};
use crate::service::{audit_log, App};

pub struct RestoreOptions<'a> {
    /// age identities for an encrypted backup.
    pub identities: &'a [age::x25519::Identity],
    /// Replace a database that is not empty.
    pub force: bool,
    /// The installation's pepper (the manifest's MAC).
    pub pepper: &'a Pepper,
}

/// The database is back and matches its manifest.
#[derive(Clone, Debug, Serialize)]
pub struct Restored {
    pub manifest: Manifest,
    pub encrypted: bool,
}

/// What [`verify_restored`] checked, per tenant.
#[derive(Clone, Debug, Serialize)]
pub struct RestoreReport {
    pub tenants: Vec<TenantCheck>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TenantCheck {
    pub tenant_id: String,
    /// Events verified from genesis (or the archive marker) to the head.
    pub audit_events: i64,
    /// The secret decrypted (path and version), or `None` when the tenant has none.
    pub sample_secret: Option<String>,
}

/// Restores `file` into `target`, which must be empty unless `force`, and checks the result
/// against the manifest. Data that does not match is never left in place (the error lists
/// every difference): on SQLite it is checked before it replaces the target, on PostgreSQL
/// its tables are dropped again.
pub async fn restore(
    file: &Path,
    target: &Source,
    options: &RestoreOptions<'_>,
) -> Result<Restored, BackupError> {
    let work = tempfile::Builder::new()
        .prefix(".agent-secret-store-restore-")
        .tempdir()
        .map_err(BackupError::io("cannot create a working directory"))?;
    let mut opened = None;
    let contents = read_archive(file, options.identities, work.path(), |bytes, mac| {
        let manifest = Manifest::open(bytes, mac, options.pepper)?;
        let limit = manifest.database_bytes;
        opened = Some(manifest);
        Ok(limit)
    })?;
    let Some(manifest) = opened else {
        return Err(BackupError::Format("the archive has no manifest".into()));
    };
    if manifest.backend != target.backend() {
        return Err(BackupError::Config(format!(
            "a {} backup cannot be restored into {}",
            manifest.backend,
            target.backend()
        )));
    }
    let (bytes, sha256) = file_digest(&contents.database.path)?;
    if contents.database.name != manifest.database_file
        || bytes != manifest.database_bytes
        || sha256 != manifest.database_sha256
    {
        return Err(BackupError::Verification(vec![
            "the database in the archive is not the one its manifest describes".into(),
        ]));
    }
    let expected = Summary {
        schema_version: manifest.schema_version,
        tables: manifest.tables.clone(),
        audit_heads: manifest.audit_heads.clone(),
    };
    match target {
        Source::Sqlite { path } => {
            restore_sqlite(&contents.database.path, path, options.force, &expected).await?
        }
        Source::Postgres {
            url, pg_restore, ..
        } => {
            restore_postgres(
                &contents.database.path,
                url.expose(),
                pg_restore,
                options.force,
                &expected,
            )
            .await?
        }
    }
    Ok(Restored {
        manifest,
        encrypted: contents.encrypted,
    })
}

/// Fails with every difference between `expected` and `found`.
fn check(expected: &Summary, found: &Summary) -> Result<(), BackupError> {
    let diffs = differences(expected, found);
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(BackupError::Verification(diffs))
    }
}

async fn restore_sqlite(
    copy: &Path,
    target: &Path,
    force: bool,
    expected: &Summary,
) -> Result<(), BackupError> {
    if target.is_file() {
        let existing = open_sqlite(target, true).await?;
        let tables: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        )
        .fetch_one(&existing)
        .await?;
        existing.close().await;
        if tables > 0 && !force {
            return Err(BackupError::NotEmpty(format!(
                "{} has {tables} tables",
                target.display()
            )));
        }
    }
    agent_secret_core::secret_file::create_private_parent(target).map_err(BackupError::io(
        format!("cannot create {}", target.display()),
    ))?;
    // Beside the target, then renamed over it: the database is either the old one or the
    // whole restored one, never half of each.
    let staged = target.with_extension("restoring");
    let _ = std::fs::remove_file(&staged);
    std::fs::copy(copy, &staged).map_err(BackupError::io(format!(
        "cannot write {}",
        staged.display()
    )))?;
    std::fs::File::open(&staged)
        .and_then(|f| f.sync_all())
        .map_err(BackupError::io(format!("cannot sync {}", staged.display())))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600)).map_err(
            BackupError::io(format!("cannot protect {}", staged.display())),
        )?;
    }
    let staged_db = open_sqlite(&staged, true).await?;
    let found = summarize_sqlite(&staged_db).await;
    staged_db.close().await;
    if let Err(e) = found.and_then(|found| check(expected, &found)) {
        let _ = std::fs::remove_file(&staged);
        return Err(e);
    }
    // A stale write-ahead log of the replaced database must not be replayed into this one.
    for suffix in ["-wal", "-shm"] {
        let mut side = target.as_os_str().to_owned();
        side.push(suffix);
        let _ = std::fs::remove_file(std::path::PathBuf::from(side));
    }
    std::fs::rename(&staged, target).map_err(BackupError::io(format!(
        "cannot replace {}",
        target.display()
    )))
}

async fn restore_postgres(
    dump: &Path,
    url: &str,
    pg_restore: &Path,
    force: bool,
    expected: &Summary,
) -> Result<(), BackupError> {
    let mut conn = PgConnection::connect(url).await?;
    let tables: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            .fetch_one(&mut conn)
            .await?;
    if tables > 0 && !force {
        return Err(BackupError::NotEmpty(format!(
            "the public schema has {tables} tables"
        )));
    }
    let (dbname, password) = split_password(url)?;
    let mut args = vec![
        "--exit-on-error".to_owned(),
        // All or nothing: a failed restore leaves the database as it was.
        "--single-transaction".to_owned(),
        "--no-password".to_owned(),
        format!("--dbname={dbname}"),
    ];
    if force {
        args.push("--clean".into());
        args.push("--if-exists".into());
    }
    args.push(dump.display().to_string());
    run_tool("pg_restore", pg_restore, &args, password.as_deref()).await?;
    let found = summarize_postgres(&mut conn).await;
    let checked = found.and_then(|found| check(expected, &found));
    if checked.is_err() {
        // What was restored is not what was backed up: it must not be served. The database
        // was empty before (or its owner chose to replace it with --force).
        let dropped = sqlx::raw_sql(
            "DO $$ DECLARE t text; BEGIN \
               FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = 'public' LOOP \
                 EXECUTE format('DROP TABLE IF EXISTS public.%I CASCADE', t); \
               END LOOP; END $$",
        )
        .execute(&mut conn)
        .await;
        if let Err(e) = dropped {
            tracing::error!(error = %e, "could not drop a restore that failed verification");
        }
    }
    conn.close().await.ok();
    checked
}

/// The checks that need the service itself, on the restored database: each tenant's audit
/// chain from its start to the head the manifest recorded, and one secret per tenant opened
/// with `app`'s KMS (the plaintext is dropped at once, zeroized).
pub async fn verify_restored(
    app: &App,
    source: &Source,
    manifest: &Manifest,
) -> Result<RestoreReport, BackupError> {
    let mut problems = Vec::new();
    let mut tenants = Vec::new();
    for head in &manifest.audit_heads {
        let Ok(tenant) = head.tenant_id.parse::<TenantId>() else {
            problems.push(format!("tenant id {:?} is not valid", head.tenant_id));
            continue;
        };
        let report = audit_log::verify_tenant(app, tenant)
            .await
            .map_err(|e| BackupError::Verification(vec![format!("tenant {tenant}: {e}")]))?;
        if !report.valid {
            problems.push(format!(
                "tenant {tenant}: the audit chain does not verify at event {:?}: {}",
                report.first_bad_seq,
                report.problem.as_deref().unwrap_or("broken")
            ));
        }
        let through = report.archived_through.unwrap_or(0) + report.events_checked;
        if through != head.seq {
            problems.push(format!(
                "tenant {tenant}: the audit chain ends at {through}, the manifest recorded {}",
                head.seq
            ));
        }
        let sample = match sample_secret(source, tenant).await? {
            None => None,
            Some((path, version, sealed)) => {
                let aad = SecretAad {
                    tenant,
                    path: &path,
                    version,
                };
                match envelope::open(app.kms.as_ref(), &aad, &sealed).await {
                    Ok(plaintext) => {
                        drop(plaintext);
                        Some(format!("{path} v{version}"))
                    }
                    Err(e) => {
                        problems.push(format!(
                            "tenant {tenant}: {path} v{version} does not decrypt with the \
                             current keyring: {e}"
                        ));
                        None
                    }
                }
            }
        };
        tenants.push(TenantCheck {
            tenant_id: tenant.to_string(),
            audit_events: report.events_checked,
            sample_secret: sample,
        });
    }
    if problems.is_empty() {
        Ok(RestoreReport { tenants })
    } else {
        Err(BackupError::Verification(problems))
    }
}

const SAMPLE: &str = "SELECT s.path, v.version, v.key_name, v.key_version, v.wrapped_dek, \
     v.nonce, v.ciphertext FROM secret_versions v \
     JOIN secrets s ON s.tenant_id = v.tenant_id AND s.id = v.secret_id \
     WHERE v.tenant_id = $1 ORDER BY v.created_at DESC, s.path, v.version DESC LIMIT 1";

type SampleRow = (String, i64, String, String, Vec<u8>, Vec<u8>, Vec<u8>);

/// The tenant's newest secret version, read through the backup role (row-level security
/// would need the tenant set; this role reads every row).
async fn sample_secret(
    source: &Source,
    tenant: TenantId,
) -> Result<Option<(String, i64, Envelope)>, BackupError> {
    let row: Option<SampleRow> = match source {
        Source::Sqlite { path } => {
            let pool = open_sqlite(path, true).await?;
            let row = sqlx::query_as(SAMPLE)
                .bind(tenant.to_string())
                .fetch_optional(&pool)
                .await;
            pool.close().await;
            row?
        }
        Source::Postgres { url, .. } => {
            let mut conn = PgConnection::connect(url.expose()).await?;
            sqlx::raw_sql("SET row_security = off")
                .execute(&mut conn)
                .await?;
            let row = sqlx::query_as(SAMPLE)
                .bind(tenant.to_string())
                .fetch_optional(&mut conn)
                .await;
            conn.close().await.ok();
            row?
        }
    };
    Ok(row.map(
        |(path, version, key_name, key_version, wrapped_dek, nonce, ciphertext)| {
            (
                path,
                version,
                Envelope {
                    key_name,
                    key_version,
                    wrapped_dek,
                    nonce,
                    ciphertext,
                },
            )
        },
    ))
}
