//! SIEM sink cursors in SQL (`crate::service::siem`): read, and moved forward by one
//! conditional upsert that does nothing when another replica moved it first.

use agent_secret_core::ids::TenantId;
use async_trait::async_trait;

use super::rows::micros;
use super::transaction::{db_error, TenantPool};
use super::SqlStore;
use crate::audit::now_micros;
use crate::db::on_db;
use crate::store::{SinkCursorStore, StoreResult};

const SELECT_CURSORS: &str =
    "SELECT sink, last_seq FROM audit_sink_cursors WHERE tenant_id = $1 ORDER BY sink";
const SELECT_CURSOR: &str =
    "SELECT last_seq FROM audit_sink_cursors WHERE tenant_id = $1 AND sink = $2";
/// Inserts the first cursor, or moves an existing one only from where the caller read it.
const ADVANCE_CURSOR: &str =
    "INSERT INTO audit_sink_cursors (tenant_id, sink, last_seq, updated_at) \
     VALUES ($1, $2, $4, $5) \
     ON CONFLICT (tenant_id, sink) DO UPDATE SET last_seq = excluded.last_seq, \
     updated_at = excluded.updated_at WHERE audit_sink_cursors.last_seq = $3";

#[async_trait]
impl SinkCursorStore for SqlStore {
    async fn sink_cursor(&self, tenant: TenantId, sink: &str) -> StoreResult<i64> {
        on_db!(self.db, pool => {
            let mut tx = pool.begin_read(tenant).await?;
            let seq: Option<i64> = sqlx::query_scalar(SELECT_CURSOR)
                .bind(tenant.to_string())
                .bind(sink)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            Ok(seq.unwrap_or(0))
        })
    }

    async fn sink_cursors(&self, tenant: TenantId) -> StoreResult<Vec<(String, i64)>> {
        on_db!(self.db, pool => {
            let mut tx = pool.begin_read(tenant).await?;
            let rows: Vec<(String, i64)> = sqlx::query_as(SELECT_CURSORS)
                .bind(tenant.to_string())
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            Ok(rows)
        })
    }

    async fn advance_sink_cursor(
        &self,
        tenant: TenantId,
        sink: &str,
        from: i64,
        to: i64,
    ) -> StoreResult<bool> {
        on_db!(self.db, pool => {
            let mut tx = pool.begin_write(tenant).await?;
            let moved = sqlx::query(ADVANCE_CURSOR)
                .bind(tenant.to_string())
                .bind(sink)
                .bind(from)
                .bind(to)
                .bind(micros(now_micros()))
                .execute(&mut *tx)
                .await
                .map_err(db_error)?
                .rows_affected();
            tx.commit().await.map_err(db_error)?;
            Ok(moved == 1)
        })
    }
}
