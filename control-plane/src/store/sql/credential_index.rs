//! The credential index: which tenant (and which kind of principal) an id belongs to.
//!
//! It is read without a tenant (it is how the tenant is found), which is why it is the one
//! table outside row-level security; it maps an id to a tenant and a kind and holds nothing
//! secret. Every other lookup happens after, confined to that tenant. Every principal's store
//! (operators, agents, sidecars, tokens, and a new tenant's admin) writes its entry here.

use agent_secret_core::credential::CredentialKind;
use agent_secret_core::ids::TenantId;
use async_trait::async_trait;
use sqlx::{Postgres, Sqlite, Transaction};
use uuid::Uuid;

use super::rows::{kind_str, parse, parse_kind};
use super::transaction::db_error;
use super::SqlStore;
use crate::db::on_db;
use crate::store::{CredentialIndex, StoreResult};

const INSERT_CREDENTIAL: &str =
    "INSERT INTO credential_index (id, tenant_id, kind) VALUES ($1, $2, $3)";
const SELECT_CREDENTIAL: &str = "SELECT tenant_id, kind FROM credential_index WHERE id = $1";

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
