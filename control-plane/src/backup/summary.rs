//! What a manifest records about a database, read the same way at backup and at restore:
//! the schema version, each table's row count and a digest of its rows, the audit heads.
//!
//! The digest is SHA-256 over each row's canonical text, one per line, sorted bytewise: on
//! SQLite `quote()` of every column joined by commas, on PostgreSQL the row's own text form
//! (`t::text`) under fixed output settings. Sorting makes it independent of physical order,
//! which a restore does not keep. It is read inside the snapshot that was dumped (PostgreSQL)
//! or from the copy itself (SQLite), so it describes exactly the backed-up data.

use futures::TryStreamExt;
use sha2::{Digest, Sha256};
use sqlx::{AssertSqlSafe, PgConnection, SqlitePool};

use super::manifest::{AuditHead, TableSummary};
use super::BackupError;

/// Schema version, tables and audit heads of one database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub schema_version: i64,
    pub tables: Vec<TableSummary>,
    pub audit_heads: Vec<AuditHead>,
}

const SCHEMA_VERSION: &str = "SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success";
const AUDIT_HEADS: &str = "SELECT id, audit_seq, audit_head FROM tenants ORDER BY id";

/// Table names come from the database's own catalogue; still, only plain names are put into
/// SQL text.
fn checked(name: &str) -> Result<&str, BackupError> {
    let plain = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if plain {
        Ok(name)
    } else {
        Err(BackupError::Format(format!(
            "unexpected table name {name:?} in the database"
        )))
    }
}

/// Feeds a stream of canonical row texts into a table summary.
struct TableDigest {
    hash: Sha256,
    rows: i64,
}

impl TableDigest {
    fn new() -> Self {
        TableDigest {
            hash: Sha256::new(),
            rows: 0,
        }
    }

    fn push(&mut self, row: &str) {
        self.hash.update(row.as_bytes());
        self.hash.update(b"\n");
        self.rows += 1;
    }

    fn finish(self, name: &str) -> TableSummary {
        TableSummary {
            name: name.to_owned(),
            rows: self.rows,
            sha256: hex::encode(self.hash.finalize()),
        }
    }
}

fn head(id: String, seq: i64, head: Option<Vec<u8>>) -> AuditHead {
    AuditHead {
        tenant_id: id,
        seq,
        head: head.map(hex::encode),
    }
}

/// The summary of a SQLite database (the backup copy, or a restored file).
pub async fn summarize_sqlite(pool: &SqlitePool) -> Result<Summary, BackupError> {
    let schema_version: i64 = sqlx::query_scalar(SCHEMA_VERSION).fetch_one(pool).await?;
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         ORDER BY name",
    )
    .fetch_all(pool)
    .await?;
    let mut tables = Vec::with_capacity(names.len());
    for name in &names {
        let table = checked(name)?;
        let columns: Vec<String> =
            sqlx::query_scalar("SELECT name FROM pragma_table_info(?) ORDER BY cid")
                .bind(table)
                .fetch_all(pool)
                .await?;
        let mut row_text = Vec::with_capacity(columns.len());
        for column in &columns {
            row_text.push(format!("quote(\"{}\")", checked(column)?));
        }
        let sql = format!(
            "SELECT {} AS r FROM \"{table}\" ORDER BY r",
            row_text.join(" || ',' || ")
        );
        let mut digest = TableDigest::new();
        let mut rows = sqlx::query_scalar::<_, String>(AssertSqlSafe(sql)).fetch(pool);
        while let Some(row) = rows.try_next().await? {
            digest.push(&row);
        }
        tables.push(digest.finish(table));
    }
    let heads: Vec<(String, i64, Option<Vec<u8>>)> =
        sqlx::query_as(AUDIT_HEADS).fetch_all(pool).await?;
    Ok(Summary {
        schema_version,
        tables,
        audit_heads: heads.into_iter().map(|(i, s, h)| head(i, s, h)).collect(),
    })
}

/// The summary of a PostgreSQL database, on `conn` (inside the dump's snapshot at backup; a
/// role that row-level security does not filter, or the counts would be one tenant's).
pub async fn summarize_postgres(conn: &mut PgConnection) -> Result<Summary, BackupError> {
    // The text forms below depend on these; set them for this session only.
    sqlx::raw_sql(
        "SET DateStyle = 'ISO, YMD'; SET TimeZone = 'UTC'; SET bytea_output = 'hex'; \
         SET extra_float_digits = 3; SET row_security = off",
    )
    .execute(&mut *conn)
    .await?;
    let schema_version: i64 = sqlx::query_scalar(SCHEMA_VERSION)
        .fetch_one(&mut *conn)
        .await?;
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' \
         ORDER BY tablename COLLATE \"C\"",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut tables = Vec::with_capacity(names.len());
    for name in &names {
        let table = checked(name)?;
        let sql = format!("SELECT t::text COLLATE \"C\" AS r FROM public.\"{table}\" t ORDER BY r");
        let mut digest = TableDigest::new();
        let mut rows = sqlx::query_scalar::<_, String>(AssertSqlSafe(sql)).fetch(&mut *conn);
        while let Some(row) = rows.try_next().await? {
            digest.push(&row);
        }
        drop(rows);
        tables.push(digest.finish(table));
    }
    let heads: Vec<(String, i64, Option<Vec<u8>>)> =
        sqlx::query_as(AUDIT_HEADS).fetch_all(&mut *conn).await?;
    Ok(Summary {
        schema_version,
        tables,
        audit_heads: heads.into_iter().map(|(i, s, h)| head(i, s, h)).collect(),
    })
}

/// What differs between what a manifest recorded and what a database holds, as sentences.
pub fn differences(expected: &Summary, found: &Summary) -> Vec<String> {
    let mut out = Vec::new();
    if expected.schema_version != found.schema_version {
        out.push(format!(
            "schema version {} recorded, {} found",
            expected.schema_version, found.schema_version
        ));
    }
    for table in &expected.tables {
        match found.tables.iter().find(|t| t.name == table.name) {
            None => out.push(format!("table {} is missing", table.name)),
            Some(t) if t.rows != table.rows => out.push(format!(
                "table {}: {} rows recorded, {} found",
                table.name, table.rows, t.rows
            )),
            Some(t) if t.sha256 != table.sha256 => out.push(format!(
                "table {}: the rows differ from the ones backed up (digest mismatch)",
                table.name
            )),
            Some(_) => {}
        }
    }
    for t in &found.tables {
        if !expected.tables.iter().any(|e| e.name == t.name) {
            out.push(format!("table {} was not in the backup", t.name));
        }
    }
    if expected.audit_heads != found.audit_heads {
        out.push("the tenants' audit chain heads differ from the recorded ones".into());
    }
    out
}
