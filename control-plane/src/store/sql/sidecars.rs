//! Sidecars: the proxies allowed to call `/v1/sidecar/*` for a tenant.
//!
//! Revoking a sidecar keeps its credential-index row, so a revoked key still resolves to its
//! tenant and the refusal is audited there.

use agent_secret_core::credential::CredentialKind;
use agent_secret_core::ids::{SidecarId, TenantId};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::audit::AuditChain;
use super::credential_index::IndexCredential;
use super::rows::{micros, opt_micros, record, records, SidecarRow};
use super::transaction::{db_error, TenantPool};
use super::SqlStore;
use crate::audit::AuditDraft;
use crate::db::on_db;
use crate::store::{SidecarRecord, SidecarStore, StoreResult};

const INSERT_SIDECAR: &str = "INSERT INTO sidecars \
     (id, tenant_id, name, key_hash, created_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6)";
const SELECT_SIDECAR: &str = "SELECT id, tenant_id, name, key_hash, created_at, revoked_at, \
     last_seen_at, last_version FROM sidecars WHERE tenant_id = $1 AND id = $2";
const LIST_SIDECARS: &str = "SELECT id, tenant_id, name, key_hash, created_at, revoked_at, \
     last_seen_at, last_version FROM sidecars WHERE tenant_id = $1 ORDER BY created_at, id";
const SIDECAR_SEEN: &str = "UPDATE sidecars SET last_seen_at = $3, last_version = $4 \
     WHERE tenant_id = $1 AND id = $2";
const REVOKE_SIDECAR: &str = "UPDATE sidecars SET revoked_at = $3 \
     WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL";

#[async_trait]
impl SidecarStore for SqlStore {
    async fn create_sidecar(&self, sidecar: &SidecarRecord, audit: AuditDraft) -> StoreResult<()> {
        let tenant = sidecar.tenant_id;
        on_db!(self.db, pool => {
            let mut tx = pool.begin_write(tenant).await?;
            sqlx::query(INSERT_SIDECAR)
                .bind(sidecar.id.to_string())
                .bind(tenant.to_string())
                .bind(&sidecar.name)
                .bind(&sidecar.key_hash)
                .bind(micros(sidecar.created_at))
                .bind(opt_micros(sidecar.revoked_at))
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.index_credential(&sidecar.id.to_string(), &tenant.to_string(), CredentialKind::Sidecar)
                .await?;
            tx.append_chain(tenant, audit).await?;
            tx.commit().await.map_err(db_error)
        })
    }

    async fn get_sidecar(
        &self,
        tenant: TenantId,
        id: SidecarId,
    ) -> StoreResult<Option<SidecarRecord>> {
        on_db!(self.db, pool => {
            let mut tx = pool.begin_read(tenant).await?;
            let row: Option<SidecarRow> = sqlx::query_as(SELECT_SIDECAR)
                .bind(tenant.to_string())
                .bind(id.to_string())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            record(row)
        })
    }

    async fn list_sidecars(&self, tenant: TenantId) -> StoreResult<Vec<SidecarRecord>> {
        on_db!(self.db, pool => {
            let mut tx = pool.begin_read(tenant).await?;
            let rows: Vec<SidecarRow> = sqlx::query_as(LIST_SIDECARS)
                .bind(tenant.to_string())
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            records(rows)
        })
    }

    async fn sidecar_seen(
        &self,
        tenant: TenantId,
        id: SidecarId,
        at: DateTime<Utc>,
        version: Option<&str>,
    ) -> StoreResult<()> {
        on_db!(self.db, pool => {
            let mut tx = pool.begin_write(tenant).await?;
            sqlx::query(SIDECAR_SEEN)
                .bind(tenant.to_string())
                .bind(id.to_string())
                .bind(micros(at))
                .bind(version)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)
        })
    }

    async fn revoke_sidecar(
        &self,
        tenant: TenantId,
        id: SidecarId,
        at: DateTime<Utc>,
        audit: AuditDraft,
    ) -> StoreResult<bool> {
        on_db!(self.db, pool => {
            let mut tx = pool.begin_write(tenant).await?;
            let revoked = sqlx::query(REVOKE_SIDECAR)
                .bind(tenant.to_string())
                .bind(id.to_string())
                .bind(micros(at))
                .execute(&mut *tx)
                .await
                .map_err(db_error)?
                .rows_affected();
            if revoked == 0 {
                tx.rollback().await.map_err(db_error)?;
                return Ok(false);
            }
            tx.append_chain(tenant, audit).await?;
            tx.commit().await.map_err(db_error)?;
            Ok(true)
        })
    }
}
