//! Operators: the humans (and their API tokens) who manage a tenant.

use agent_secret_core::credential::CredentialKind;
use agent_secret_core::ids::{OperatorId, TenantId};
use async_trait::async_trait;

use super::audit::AuditChain;
use super::rows::{micros, opt_micros, record, records, OperatorRow};
use super::tenants::IndexCredential;
use super::transaction::{db_error, TenantPool};
use super::SqlStore;
use crate::audit::AuditDraft;
use crate::db::on_db;
use crate::store::{OperatorRecord, OperatorStore, StoreResult};

pub(super) const INSERT_OPERATOR: &str = "INSERT INTO operators \
     (id, tenant_id, name, role, key_hash, created_at, revoked_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";
const SELECT_OPERATOR: &str = "SELECT id, tenant_id, name, role, key_hash, created_at, \
     revoked_at FROM operators WHERE tenant_id = $1 AND id = $2";
const LIST_OPERATORS: &str = "SELECT id, tenant_id, name, role, key_hash, created_at, \
     revoked_at FROM operators WHERE tenant_id = $1 ORDER BY created_at, id";

#[async_trait]
impl OperatorStore for SqlStore {
    async fn create_operator(
        &self,
        operator: &OperatorRecord,
        audit: AuditDraft,
    ) -> StoreResult<()> {
        let tenant = operator.tenant_id;
        on_db!(self.db, pool => {
            let mut tx = pool.begin_write(tenant).await?;
            sqlx::query(INSERT_OPERATOR)
                .bind(operator.id.to_string())
                .bind(tenant.to_string())
                .bind(&operator.name)
                .bind(operator.role.as_str())
                .bind(&operator.key_hash)
                .bind(micros(operator.created_at))
                .bind(opt_micros(operator.revoked_at))
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.index_credential(&operator.id.to_string(), &tenant.to_string(), CredentialKind::Operator)
                .await?;
            tx.append_chain(tenant, audit).await?;
            tx.commit().await.map_err(db_error)
        })
    }

    async fn get_operator(
        &self,
        tenant: TenantId,
        id: OperatorId,
    ) -> StoreResult<Option<OperatorRecord>> {
        on_db!(self.db, pool => {
            let mut tx = pool.begin_read(tenant).await?;
            let row: Option<OperatorRow> = sqlx::query_as(SELECT_OPERATOR)
                .bind(tenant.to_string())
                .bind(id.to_string())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            record(row)
        })
    }

    async fn list_operators(&self, tenant: TenantId) -> StoreResult<Vec<OperatorRecord>> {
        on_db!(self.db, pool => {
            let mut tx = pool.begin_read(tenant).await?;
            let rows: Vec<OperatorRow> = sqlx::query_as(LIST_OPERATORS)
                .bind(tenant.to_string())
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            records(rows)
        })
    }
}
