//! Archive markers in SQL, and the one transaction that moves a verified prefix of a tenant's
//! chain out of the database (`crate::service::audit_archive`).
//!
//! The append-only triggers stay in force for everyone else: the delete lifts them inside the
//! archive's own transaction (PostgreSQL: `DISABLE TRIGGER`, which only the table's owner may
//! run, and which other sessions never see uncommitted; SQLite: the trigger is dropped and
//! created again, with the migration's definition). A failure anywhere rolls everything back,
//! triggers included.

use agent_secret_core::ids::TenantId;
use async_trait::async_trait;
use sqlx::{Postgres, Sqlite, Transaction};

use super::audit::AuditChain;
use super::rows::{hash32, micros, time};
use super::transaction::{db_error, TenantPool};
use super::SqlStore;
use crate::audit::AuditDraft;
use crate::db::on_db;
use crate::store::{ArchiveMarker, ArchiveStore, StoreError, StoreResult};

const SELECT_LATEST: &str = "SELECT first_seq, through_seq, through_hash, events, file_sha256, \
     archived_at FROM audit_archives WHERE tenant_id = $1 ORDER BY through_seq DESC LIMIT 1";
const SELECT_HASH: &str = "SELECT hash FROM audit_events WHERE tenant_id = $1 AND seq = $2";
const INSERT_MARKER: &str = "INSERT INTO audit_archives (tenant_id, first_seq, through_seq, \
     through_hash, events, file_sha256, archived_at) VALUES ($1, $2, $3, $4, $5, $6, $7)";
const DELETE_PREFIX: &str = "DELETE FROM audit_events WHERE tenant_id = $1 AND seq <= $2";

/// `migrations/sqlite/0002_audit_append_only.sql`'s trigger, as it is created again.
const SQLITE_NO_DELETE: &str = "CREATE TRIGGER audit_events_no_delete \
     BEFORE DELETE ON audit_events \
     BEGIN SELECT RAISE(ABORT, 'audit_events is append-only: DELETE refused'); END";

type MarkerRow = (i64, i64, Vec<u8>, i64, String, i64);

fn marker(row: MarkerRow) -> StoreResult<ArchiveMarker> {
    let (first_seq, through_seq, hash, events, file_sha256, at) = row;
    Ok(ArchiveMarker {
        first_seq,
        through_seq,
        through_hash: hash32(hash, "audit_archives.through_hash")?,
        events,
        file_sha256,
        archived_at: time(at, "audit_archives.archived_at")?,
    })
}

/// Lifts the append-only delete trigger for the rest of the transaction, per backend.
trait LiftTrigger {
    async fn lift(&mut self) -> StoreResult<()>;
    async fn restore(&mut self) -> StoreResult<()>;
}

impl LiftTrigger for Transaction<'_, Postgres> {
    async fn lift(&mut self) -> StoreResult<()> {
        sqlx::query("ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update_or_delete")
            .execute(&mut **self)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn restore(&mut self) -> StoreResult<()> {
        sqlx::query("ALTER TABLE audit_events ENABLE TRIGGER audit_events_no_update_or_delete")
            .execute(&mut **self)
            .await
            .map_err(db_error)?;
        Ok(())
    }
}

impl LiftTrigger for Transaction<'_, Sqlite> {
    async fn lift(&mut self) -> StoreResult<()> {
        sqlx::query("DROP TRIGGER audit_events_no_delete")
            .execute(&mut **self)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn restore(&mut self) -> StoreResult<()> {
        sqlx::query(SQLITE_NO_DELETE)
            .execute(&mut **self)
            .await
            .map_err(db_error)?;
        Ok(())
    }
}

#[async_trait]
impl ArchiveStore for SqlStore {
    async fn audit_archive(&self, tenant: TenantId) -> StoreResult<Option<ArchiveMarker>> {
        on_db!(self.db, pool => {
            let mut tx = pool.begin_read(tenant).await?;
            let row: Option<MarkerRow> = sqlx::query_as(SELECT_LATEST)
                .bind(tenant.to_string())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            row.map(marker).transpose()
        })
    }

    async fn archive_audit(
        &self,
        tenant: TenantId,
        m: &ArchiveMarker,
        audit: AuditDraft,
    ) -> StoreResult<u64> {
        let tenant_text = tenant.to_string();
        on_db!(self.db, pool => {
            let mut tx = pool.begin_write(tenant).await?;
            let hash: Option<Vec<u8>> = sqlx::query_scalar(SELECT_HASH)
                .bind(&tenant_text)
                .bind(m.through_seq)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
            if hash.as_deref() != Some(m.through_hash.as_slice()) {
                return Err(StoreError::Conflict(format!(
                    "audit event {} is not the one that was exported",
                    m.through_seq
                )));
            }
            sqlx::query(INSERT_MARKER)
                .bind(&tenant_text)
                .bind(m.first_seq)
                .bind(m.through_seq)
                .bind(m.through_hash.to_vec())
                .bind(m.events)
                .bind(&m.file_sha256)
                .bind(micros(m.archived_at))
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.lift().await?;
            let deleted = sqlx::query(DELETE_PREFIX)
                .bind(&tenant_text)
                .bind(m.through_seq)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?
                .rows_affected();
            tx.restore().await?;
            if i64::try_from(deleted).ok() != Some(m.events) {
                return Err(StoreError::Conflict(format!(
                    "{deleted} audit events were in the archived range, {} were exported",
                    m.events
                )));
            }
            tx.append_chain(tenant, audit).await?;
            tx.commit().await.map_err(db_error)?;
            Ok(deleted)
        })
    }
}
