//! Operators: the humans (and their API tokens) who manage a tenant.

use agent_secret_core::credential::CredentialKind;
use agent_secret_core::ids::{OperatorId, TenantId};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::audit::AuditChain;
use super::credential_index::IndexCredential;
use super::rows::{micros, opt_micros, record, records, OperatorRow};
use super::transaction::{db_error, TenantPool};
use super::SqlStore;
use crate::audit::AuditDraft;
use crate::db::on_db;
use crate::store::{OperatorRecord, OperatorRevocation, OperatorStore, StoreResult};

pub(super) const INSERT_OPERATOR: &str = "INSERT INTO operators \
     (id, tenant_id, name, role, key_hash, created_at, revoked_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";
const SELECT_OPERATOR: &str = "SELECT id, tenant_id, name, role, key_hash, created_at, \
     revoked_at FROM operators WHERE tenant_id = $1 AND id = $2";
const LIST_OPERATORS: &str = "SELECT id, tenant_id, name, role, key_hash, created_at, \
     revoked_at FROM operators WHERE tenant_id = $1 ORDER BY created_at, id";
const SELECT_REVOCATION_STATE: &str =
    "SELECT role, revoked_at FROM operators WHERE tenant_id = $1 AND id = $2";
/// Revokes `$2` unless it is an admin and no other active admin remains. Runs after the audit
/// append, whose `UPDATE tenants` row lock serialises it with every other write of the tenant:
/// on PostgreSQL (READ COMMITTED) the sub-select then sees a concurrent revocation that
/// committed while this transaction waited; SQLite has a single writer anyway.
const REVOKE_OPERATOR: &str = "UPDATE operators SET revoked_at = $3 \
     WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL \
     AND (role <> 'admin' OR EXISTS (SELECT 1 FROM operators o WHERE o.tenant_id = $1 \
          AND o.id <> $2 AND o.role = 'admin' AND o.revoked_at IS NULL))";

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

    async fn revoke_operator(
        &self,
        tenant: TenantId,
        id: OperatorId,
        at: DateTime<Utc>,
        audit: AuditDraft,
    ) -> StoreResult<OperatorRevocation> {
        let (tenant_text, id_text) = (tenant.to_string(), id.to_string());
        on_db!(self.db, pool => {
            let mut tx = pool.begin_write(tenant).await?;
            tx.append_chain(tenant, audit).await?;
            let revoked = sqlx::query(REVOKE_OPERATOR)
                .bind(&tenant_text)
                .bind(&id_text)
                .bind(micros(at))
                .execute(&mut *tx)
                .await
                .map_err(db_error)?
                .rows_affected();
            if revoked == 1 {
                tx.commit().await.map_err(db_error)?;
                return Ok(OperatorRevocation::Revoked);
            }
            let state: Option<(String, Option<i64>)> = sqlx::query_as(SELECT_REVOCATION_STATE)
                .bind(&tenant_text)
                .bind(&id_text)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.rollback().await.map_err(db_error)?;
            Ok(match state {
                None => OperatorRevocation::NotFound,
                Some((_, Some(_))) => OperatorRevocation::AlreadyRevoked,
                Some(_) => OperatorRevocation::LastAdmin,
            })
        })
    }
}
