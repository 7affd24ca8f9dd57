//! Tenants: created together with their first admin operator, in one transaction.

use agent_secret_core::credential::CredentialKind;
use agent_secret_core::ids::TenantId;
use async_trait::async_trait;

use super::audit::AuditChain;
use super::credential_index::IndexCredential;
use super::operators::INSERT_OPERATOR;
use super::rows::{micros, opt_micros, record, TenantRow};
use super::transaction::{db_error, TenantPool};
use super::SqlStore;
use crate::audit::AuditDraft;
use crate::db::on_db;
use crate::store::{OperatorRecord, StoreError, StoreResult, TenantRecord, TenantStore};

const INSERT_TENANT: &str = "INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)";
const SELECT_TENANT: &str = "SELECT id, name, created_at FROM tenants WHERE id = $1";

#[async_trait]
impl TenantStore for SqlStore {
    async fn create_tenant(
        &self,
        tenant: &TenantRecord,
        admin: &OperatorRecord,
        audit: AuditDraft,
    ) -> StoreResult<()> {
        if admin.tenant_id != tenant.id {
            return Err(StoreError::Conflict(
                "admin operator belongs to another tenant".into(),
            ));
        }
        let tenant_id = tenant.id.to_string();
        on_db!(self.db, pool => {
            let mut tx = pool.begin_write(tenant.id).await?;
            sqlx::query(INSERT_TENANT)
                .bind(&tenant_id)
                .bind(&tenant.name)
                .bind(micros(tenant.created_at))
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            sqlx::query(INSERT_OPERATOR)
                .bind(admin.id.to_string())
                .bind(&tenant_id)
                .bind(&admin.name)
                .bind(admin.role.as_str())
                .bind(&admin.key_hash)
                .bind(micros(admin.created_at))
                .bind(opt_micros(admin.revoked_at))
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.index_credential(&admin.id.to_string(), &tenant_id, CredentialKind::Operator)
                .await?;
            tx.append_chain(tenant.id, audit).await?;
            tx.commit().await.map_err(db_error)
        })
    }

    async fn get_tenant(&self, id: TenantId) -> StoreResult<Option<TenantRecord>> {
        on_db!(self.db, pool => {
            let mut tx = pool.begin_read(id).await?;
            let row: Option<TenantRow> = sqlx::query_as(SELECT_TENANT)
                .bind(id.to_string())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            record(row)
        })
    }
}
