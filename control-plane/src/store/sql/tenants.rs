//! Tenants and the credential index that places a request in its tenant.
//!
//! The credential index is read without a tenant (it is how the tenant is found), which is
//! why it is the one table outside row-level security; it maps an id to a tenant and a kind
//! and holds nothing secret. Every other lookup happens after, confined to that tenant.

use agent_secret_core::credential::CredentialKind;
use agent_secret_core::ids::TenantId;
use async_trait::async_trait;
use uuid::Uuid;

use super::audit::AuditChain;
use super::operators::INSERT_OPERATOR;
use super::rows::{kind_str, micros, opt_micros, parse, parse_kind, record, TenantRow};
use super::transaction::{db_error, TenantPool};
use super::SqlStore;
use crate::audit::AuditDraft;
use crate::db::on_db;
use crate::store::{
    CredentialIndex, OperatorRecord, StoreError, StoreResult, TenantRecord, TenantStore,
};
use sqlx::{Postgres, Sqlite, Transaction};

const INSERT_CREDENTIAL: &str =
    "INSERT INTO credential_index (id, tenant_id, kind) VALUES ($1, $2, $3)";
const SELECT_CREDENTIAL: &str = "SELECT tenant_id, kind FROM credential_index WHERE id = $1";
const INSERT_TENANT: &str = "INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)";
const SELECT_TENANT: &str = "SELECT id, name, created_at FROM tenants WHERE id = $1";

/// Every principal row (operator, agent key, sidecar, token) is created together with its
/// credential-index entry, in the same transaction.
pub(super) trait IndexCredential {
    async fn index_credential(
        &mut self,
        id: &str,
        tenant: &str,
        kind: CredentialKind,
    ) -> StoreResult<()>;
}

macro_rules! impl_index_credential {
    ($database:ty) => {
        impl IndexCredential for Transaction<'_, $database> {
            async fn index_credential(
                &mut self,
                id: &str,
                tenant: &str,
                kind: CredentialKind,
            ) -> StoreResult<()> {
                sqlx::query(INSERT_CREDENTIAL)
                    .bind(id)
                    .bind(tenant)
                    .bind(kind_str(kind))
                    .execute(&mut **self)
                    .await
                    .map_err(db_error)?;
                Ok(())
            }
        }
    };
}

impl_index_credential!(Sqlite);
impl_index_credential!(Postgres);

#[async_trait]
impl CredentialIndex for SqlStore {
    async fn lookup_credential(&self, id: Uuid) -> StoreResult<Option<(TenantId, CredentialKind)>> {
        on_db!(self.db, pool => {
            let row: Option<(String, String)> = sqlx::query_as(SELECT_CREDENTIAL)
                .bind(id.hyphenated().to_string())
                .fetch_optional(pool)
                .await
                .map_err(db_error)?;
            row.map(|(tenant, kind)| {
                Ok((parse(&tenant, "credential_index.tenant_id")?, parse_kind(&kind)?))
            })
            .transpose()
        })
    }
}

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
