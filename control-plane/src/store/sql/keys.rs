//! KEK bookkeeping: the recorded primary version, the rotation lease, and the DEK inventory.
//!
//! Both "exactly one replica" guarantees rest on conditional UPDATEs, as the token use counter
//! does: on PostgreSQL a second writer blocks on the row lock and then re-checks its `WHERE`
//! against the committed row; on SQLite `BEGIN IMMEDIATE` serialises writers outright.
//! Re-wrapping replaces a DEK only if the row still holds exactly the bytes that were read, so
//! a concurrent delete or a second rewrap can never be overwritten with a stale value.

use agent_secret_core::ids::TenantId;
use agent_secret_core::path::SecretPath;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::audit::AuditChain;
use super::rows::{micros, parse, time};
use super::transaction::{db_error, TenantPool};
use super::SqlStore;
use crate::audit::AuditDraft;
use crate::db::on_db;
use crate::store::{
    DekCount, KeyStore, PrimaryChange, RecordedKey, RewrappedDek, StoreResult, StoredDek,
};

const LIST_TENANTS: &str = "SELECT DISTINCT tenant_id FROM credential_index ORDER BY tenant_id";
const SELECT_KEY: &str = "SELECT key_name, primary_version, observed_at, rotation_claimed_at \
     FROM tenant_keys WHERE tenant_id = $1";
/// A no-op UPDATE that takes the row lock on PostgreSQL before the version is compared.
const LOCK_KEY: &str = "UPDATE tenant_keys SET observed_at = observed_at WHERE tenant_id = $1 \
     RETURNING primary_version";
/// A replica racing this one (or `tenant create` racing the scheduler) may insert first.
const INSERT_KEY: &str = "INSERT INTO tenant_keys \
     (tenant_id, key_name, primary_version, observed_at) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (tenant_id) DO NOTHING";
const UPDATE_PRIMARY: &str = "UPDATE tenant_keys SET key_name = $2, primary_version = $3, \
     observed_at = $4, rotation_claimed_at = NULL WHERE tenant_id = $1";
const CLAIM: &str = "UPDATE tenant_keys SET rotation_claimed_at = $3 \
     WHERE tenant_id = $1 AND primary_version = $2 \
     AND (rotation_claimed_at IS NULL OR rotation_claimed_at < $4)";
const RELEASE: &str = "UPDATE tenant_keys SET rotation_claimed_at = NULL WHERE tenant_id = $1";
/// Secret versions are the only KEK-wrapped rows: operators' TOTP secrets are sealed under a
/// pepper-derived key (`crate::totp::seal`) and never depend on a KEK version.
const INVENTORY: &str = "SELECT key_name, key_version, COUNT(*) FROM secret_versions \
     WHERE tenant_id = $1 GROUP BY key_name, key_version ORDER BY key_name, key_version";
/// `$4`/`$5` are the cursor (NULL for the start); row-value comparison works on both backends.
const NOT_UNDER: &str = "SELECT v.secret_id, s.path, v.version, v.key_name, v.key_version, \
     v.wrapped_dek FROM secret_versions v JOIN secrets s \
     ON s.tenant_id = v.tenant_id AND s.id = v.secret_id \
     WHERE v.tenant_id = $1 AND NOT (v.key_name = $2 AND v.key_version = $3) \
     AND ($4 IS NULL OR (v.secret_id, v.version) > ($4, $5)) \
     ORDER BY v.secret_id, v.version LIMIT $6";
const REPLACE_DEK: &str = "UPDATE secret_versions \
     SET key_name = $4, key_version = $5, wrapped_dek = $6 \
     WHERE tenant_id = $1 AND secret_id = $2 AND version = $3 \
     AND key_name = $7 AND key_version = $8 AND wrapped_dek = $9";

type KeyRow = (String, String, i64, Option<i64>);
type DekRow = (String, String, i64, String, String, Vec<u8>);

#[async_trait]
impl KeyStore for SqlStore {
    async fn list_tenant_ids(&self) -> StoreResult<Vec<TenantId>> {
        on_db!(self.db, pool => {
            let rows: Vec<(String,)> = sqlx::query_as(LIST_TENANTS)
                .fetch_all(pool)
                .await
                .map_err(db_error)?;
            rows.into_iter()
                .map(|(id,)| parse(&id, "credential_index.tenant_id"))
                .collect()
        })
    }

    async fn recorded_key(&self, tenant: TenantId) -> StoreResult<Option<RecordedKey>> {
        on_db!(self.db, pool => {
            let mut tx = pool.begin_read(tenant).await?;
            let row: Option<KeyRow> = sqlx::query_as(SELECT_KEY)
                .bind(tenant.to_string())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            row.map(recorded).transpose()
        })
    }

    async fn record_primary(
        &self,
        tenant: TenantId,
        key_name: &str,
        key_version: &str,
        audit: AuditDraft,
    ) -> StoreResult<PrimaryChange> {
        let tenant_text = tenant.to_string();
        let now = micros(Utc::now());
        on_db!(self.db, pool => {
            let mut tx = pool.begin_write(tenant).await?;
            let inserted = sqlx::query(INSERT_KEY)
                .bind(&tenant_text)
                .bind(key_name)
                .bind(key_version)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?
                .rows_affected();
            let previous: Option<(String,)> = if inserted == 1 {
                None
            } else {
                sqlx::query_as(LOCK_KEY)
                    .bind(&tenant_text)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_error)?
            };
            let change = match previous {
                None => PrimaryChange::First,
                Some((previous,)) if is_newer(key_version, &previous) => {
                    sqlx::query(UPDATE_PRIMARY)
                        .bind(&tenant_text)
                        .bind(key_name)
                        .bind(key_version)
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_error)?;
                    tx.append_chain(tenant, audit).await?;
                    PrimaryChange::Rotated { previous }
                }
                Some(_) => PrimaryChange::Unchanged,
            };
            tx.commit().await.map_err(db_error)?;
            Ok(change)
        })
    }

    async fn claim_rotation(
        &self,
        tenant: TenantId,
        expected_version: &str,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> StoreResult<bool> {
        on_db!(self.db, pool => {
            let mut tx = pool.begin_write(tenant).await?;
            let claimed = sqlx::query(CLAIM)
                .bind(tenant.to_string())
                .bind(expected_version)
                .bind(micros(now))
                .bind(micros(stale_before))
                .execute(&mut *tx)
                .await
                .map_err(db_error)?
                .rows_affected();
            tx.commit().await.map_err(db_error)?;
            Ok(claimed == 1)
        })
    }

    async fn release_rotation(&self, tenant: TenantId) -> StoreResult<()> {
        on_db!(self.db, pool => {
            let mut tx = pool.begin_write(tenant).await?;
            sqlx::query(RELEASE)
                .bind(tenant.to_string())
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            Ok(())
        })
    }

    async fn dek_inventory(&self, tenant: TenantId) -> StoreResult<Vec<DekCount>> {
        on_db!(self.db, pool => {
            let mut tx = pool.begin_read(tenant).await?;
            let rows: Vec<(String, String, i64)> = sqlx::query_as(INVENTORY)
                .bind(tenant.to_string())
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            Ok(rows
                .into_iter()
                .map(|(key_name, key_version, deks)| DekCount {
                    key_name,
                    key_version,
                    deks,
                })
                .collect())
        })
    }

    async fn deks_not_under(
        &self,
        tenant: TenantId,
        key_name: &str,
        key_version: &str,
        after: Option<(&str, i64)>,
        limit: i64,
    ) -> StoreResult<Vec<StoredDek>> {
        on_db!(self.db, pool => {
            let mut tx = pool.begin_read(tenant).await?;
            let rows: Vec<DekRow> = sqlx::query_as(NOT_UNDER)
                .bind(tenant.to_string())
                .bind(key_name)
                .bind(key_version)
                .bind(after.map(|(id, _)| id))
                .bind(after.map(|(_, v)| v))
                .bind(limit)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            rows.into_iter().map(stored_dek).collect()
        })
    }

    async fn replace_wrapped_deks(
        &self,
        tenant: TenantId,
        rewrapped: &[RewrappedDek],
        audit: AuditDraft,
    ) -> StoreResult<u64> {
        let tenant_text = tenant.to_string();
        on_db!(self.db, pool => {
            let mut tx = pool.begin_write(tenant).await?;
            let mut replaced = 0;
            for dek in rewrapped {
                replaced += sqlx::query(REPLACE_DEK)
                    .bind(&tenant_text)
                    .bind(&dek.old.secret_id)
                    .bind(dek.old.version)
                    .bind(&dek.key_name)
                    .bind(&dek.key_version)
                    .bind(&dek.wrapped_dek)
                    .bind(&dek.old.key_name)
                    .bind(&dek.old.key_version)
                    .bind(&dek.old.wrapped_dek)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?
                    .rows_affected();
            }
            if replaced > 0 {
                tx.append_chain(tenant, audit.reason(format!("{} DEK(s) re-wrapped", replaced))).await?;
            }
            tx.commit().await.map_err(db_error)?;
            Ok(replaced)
        })
    }
}

/// Key version ids are decimal on both backends (local `1`, `2`; Cloud KMS `1`, `2`): a
/// version counts as newer only if it is numerically greater, so a replica that read the key
/// before a rotation cannot record the older primary over the newer one.
fn is_newer(candidate: &str, recorded: &str) -> bool {
    match (candidate.parse::<u64>(), recorded.parse::<u64>()) {
        (Ok(candidate), Ok(recorded)) => candidate > recorded,
        _ => candidate != recorded,
    }
}

fn recorded((key_name, primary_version, observed_at, claimed): KeyRow) -> StoreResult<RecordedKey> {
    Ok(RecordedKey {
        key_name,
        primary_version,
        observed_at: time(observed_at, "tenant_keys.observed_at")?,
        rotation_claimed_at: claimed
            .map(|us| time(us, "tenant_keys.rotation_claimed_at"))
            .transpose()?,
    })
}

fn stored_dek(
    (secret_id, path, version, key_name, key_version, wrapped_dek): DekRow,
) -> StoreResult<StoredDek> {
    Ok(StoredDek {
        secret_id,
        path: parse::<SecretPath>(&path, "secrets.path")?,
        version,
        key_name,
        key_version,
        wrapped_dek,
    })
}

#[cfg(test)]
mod tests {
    use super::is_newer;

    #[test]
    fn versions_compare_as_numbers() {
        assert!(is_newer("10", "9"));
        assert!(!is_newer("9", "10"));
        assert!(!is_newer("2", "2"));
        assert!(is_newer("b", "a"));
    }
}
