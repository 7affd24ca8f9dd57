//! Secrets and their sealed versions.
//!
//! A write names the version it creates (`last_secret_version + 1` as the caller read it),
//! because the envelope's AAD already binds that number: the store refuses any other
//! (`Conflict`). Deleting a secret leaves a tombstone with the last version it reached, and a
//! secret created again at that path continues from there: a (path, version) pair names one
//! value forever, so a sidecar that cached it under that pair can never serve it for another.
//! The version bump is a conditional `UPDATE ... WHERE current_version = $expected`, so of two
//! concurrent writers exactly one wins on either backend, without `SELECT ... FOR UPDATE`
//! (which SQLite lacks).
//!
//! Prefix listing uses the range `path >= 'p/' AND path < 'p0'` ('0' is the byte after '/')
//! rather than LIKE, whose `_` is a wildcard and which would need escaping; paths compare
//! bytewise on both backends (see the migrations), so the range is exact and uses the index.

use agent_secret_core::ids::{SecretId, TenantId};
use agent_secret_core::path::SecretPath;
use async_trait::async_trait;

use super::audit::AuditChain;
use super::rows::{list_to_json, micros, record, records, time, SecretRow};
use super::transaction::{db_error, TenantPool};
use super::SqlStore;
use crate::audit::{now_micros, AuditDraft};
use crate::db::on_db;
use crate::store::{
    NewSecretVersion, SecretRecord, SecretStore, SecretVersionInfo, StoreError, StoreResult,
    StoredSecret,
};

const SELECT_SECRET: &str = "SELECT id, tenant_id, path, sensitivity, allowed_hosts, \
     current_version, created_at, updated_at FROM secrets WHERE tenant_id = $1 AND path = $2";
/// `$2` is the prefix or NULL for all; `$3` = prefix + "/", `$4` = prefix + "0".
const LIST_SECRETS: &str = "SELECT id, tenant_id, path, sensitivity, allowed_hosts, \
     current_version, created_at, updated_at FROM secrets WHERE tenant_id = $1 \
     AND ($2 IS NULL OR path = $2 OR (path >= $3 AND path < $4)) ORDER BY path";
const SELECT_VERSION_STATE: &str =
    "SELECT id, current_version, created_at FROM secrets WHERE tenant_id = $1 AND path = $2";
const INSERT_SECRET: &str = "INSERT INTO secrets \
     (id, tenant_id, path, sensitivity, allowed_hosts, current_version, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $7)";
const BUMP_VERSION: &str = "UPDATE secrets \
     SET current_version = $4, sensitivity = $5, allowed_hosts = $6, updated_at = $7 \
     WHERE tenant_id = $1 AND id = $2 AND current_version = $3";
const INSERT_VERSION: &str = "INSERT INTO secret_versions \
     (secret_id, tenant_id, version, key_name, key_version, wrapped_dek, nonce, ciphertext, \
      created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
/// Versions go with it through `ON DELETE CASCADE`.
const DELETE_SECRET: &str =
    "DELETE FROM secrets WHERE tenant_id = $1 AND path = $2 RETURNING current_version";
/// A path is re-created only above its tombstone, so `last_version` only ever grows.
const UPSERT_TOMBSTONE: &str = "INSERT INTO secret_tombstones \
     (tenant_id, path, last_version, deleted_at) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (tenant_id, path) \
     DO UPDATE SET last_version = excluded.last_version, deleted_at = excluded.deleted_at";
const SELECT_TOMBSTONE: &str =
    "SELECT last_version FROM secret_tombstones WHERE tenant_id = $1 AND path = $2";
const SELECT_LAST_VERSION: &str = "SELECT COALESCE(\
     (SELECT current_version FROM secrets WHERE tenant_id = $1 AND path = $2), \
     (SELECT last_version FROM secret_tombstones WHERE tenant_id = $1 AND path = $2), 0)";
/// Followed by a bound tenant id, ` AND s.path IN (...)` and `CURRENT_SECRETS_ORDER`.
const LIST_VERSIONS: &str = "SELECT v.version, v.created_at, v.key_name, v.key_version \
     FROM secret_versions v JOIN secrets s ON s.tenant_id = v.tenant_id AND s.id = v.secret_id \
     WHERE s.tenant_id = $1 AND s.path = $2 ORDER BY v.version DESC";
pub(super) const CURRENT_SECRETS: &str = "SELECT s.id, s.tenant_id, s.path, s.sensitivity, \
     s.allowed_hosts, s.current_version, s.created_at, s.updated_at, v.key_name, \
     v.key_version, v.wrapped_dek, v.nonce, v.ciphertext \
     FROM secrets s JOIN secret_versions v \
     ON v.tenant_id = s.tenant_id AND v.secret_id = s.id AND v.version = s.current_version \
     WHERE s.tenant_id = ";
pub(super) const CURRENT_SECRETS_ORDER: &str = " ORDER BY s.path";

#[async_trait]
impl SecretStore for SqlStore {
    async fn get_secret(
        &self,
        tenant: TenantId,
        path: &SecretPath,
    ) -> StoreResult<Option<SecretRecord>> {
        on_db!(self.db, pool => {
            let mut tx = pool.begin_read(tenant).await?;
            let row: Option<SecretRow> = sqlx::query_as(SELECT_SECRET)
                .bind(tenant.to_string())
                .bind(path.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            record(row)
        })
    }

    async fn list_secret_versions(
        &self,
        tenant: TenantId,
        path: &SecretPath,
    ) -> StoreResult<Vec<SecretVersionInfo>> {
        on_db!(self.db, pool => {
            let mut tx = pool.begin_read(tenant).await?;
            let rows: Vec<(i64, i64, String, String)> = sqlx::query_as(LIST_VERSIONS)
                .bind(tenant.to_string())
                .bind(path.as_str())
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            rows.into_iter()
                .map(|(version, created_at, key_name, key_version)| {
                    Ok(SecretVersionInfo {
                        version,
                        created_at: time(created_at, "secret_versions.created_at")?,
                        key_name,
                        key_version,
                    })
                })
                .collect()
        })
    }

    async fn list_secrets(
        &self,
        tenant: TenantId,
        prefix: Option<&SecretPath>,
    ) -> StoreResult<Vec<SecretRecord>> {
        let prefix = prefix.map(SecretPath::as_str);
        let below = prefix.map(|p| format!("{p}/"));
        let beyond = prefix.map(|p| format!("{p}0"));
        on_db!(self.db, pool => {
            let mut tx = pool.begin_read(tenant).await?;
            let rows: Vec<SecretRow> = sqlx::query_as(LIST_SECRETS)
                .bind(tenant.to_string())
                .bind(prefix)
                .bind(&below)
                .bind(&beyond)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            records(rows)
        })
    }

    async fn put_secret_version(
        &self,
        tenant: TenantId,
        new: &NewSecretVersion,
        audit: AuditDraft,
    ) -> StoreResult<SecretRecord> {
        let tenant_text = tenant.to_string();
        let hosts = list_to_json(&new.allowed_hosts);
        let now = now_micros();
        on_db!(self.db, pool => {
            let mut tx = pool.begin_write(tenant).await?;
            let existing: Option<(String, i64, i64)> = sqlx::query_as(SELECT_VERSION_STATE)
                .bind(&tenant_text)
                .bind(new.path.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
            let current = match &existing {
                Some(row) => row.1,
                None => sqlx::query_scalar::<_, i64>(SELECT_TOMBSTONE)
                    .bind(&tenant_text)
                    .bind(new.path.as_str())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_error)?
                    .unwrap_or(0),
            };
            if new.version != current + 1 {
                return Err(stale_version(&new.path, current, new.version));
            }
            let (id, created_at) = match existing {
                None => {
                    let id = SecretId::new();
                    sqlx::query(INSERT_SECRET)
                        .bind(id.to_string())
                        .bind(&tenant_text)
                        .bind(new.path.as_str())
                        .bind(new.sensitivity.as_str())
                        .bind(&hosts)
                        .bind(new.version)
                        .bind(micros(now))
                        .execute(&mut *tx)
                        .await
                        .map_err(db_error)?;
                    (id, now)
                }
                Some((id, _, created_at)) => {
                    let bumped = sqlx::query(BUMP_VERSION)
                        .bind(&tenant_text)
                        .bind(&id)
                        .bind(current)
                        .bind(new.version)
                        .bind(new.sensitivity.as_str())
                        .bind(&hosts)
                        .bind(micros(now))
                        .execute(&mut *tx)
                        .await
                        .map_err(db_error)?
                        .rows_affected();
                    if bumped != 1 {
                        return Err(stale_version(&new.path, current, new.version));
                    }
                    let id = id
                        .parse::<SecretId>()
                        .map_err(|_| StoreError::Corrupt("secrets.id does not decode".into()))?;
                    (id, time(created_at, "secrets.created_at")?)
                }
            };
            let envelope = &new.envelope;
            sqlx::query(INSERT_VERSION)
                .bind(id.to_string())
                .bind(&tenant_text)
                .bind(new.version)
                .bind(&envelope.key_name)
                .bind(&envelope.key_version)
                .bind(&envelope.wrapped_dek)
                .bind(&envelope.nonce)
                .bind(&envelope.ciphertext)
                .bind(micros(now))
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.append_chain(tenant, audit).await?;
            tx.commit().await.map_err(db_error)?;
            Ok(SecretRecord {
                id,
                tenant_id: tenant,
                path: new.path.clone(),
                sensitivity: new.sensitivity,
                allowed_hosts: new.allowed_hosts.clone(),
                current_version: new.version,
                created_at,
                updated_at: now,
            })
        })
    }

    async fn delete_secret(
        &self,
        tenant: TenantId,
        path: &SecretPath,
        audit: AuditDraft,
    ) -> StoreResult<bool> {
        on_db!(self.db, pool => {
            let mut tx = pool.begin_write(tenant).await?;
            let deleted: Option<i64> = sqlx::query_scalar(DELETE_SECRET)
                .bind(tenant.to_string())
                .bind(path.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
            let Some(last_version) = deleted else {
                tx.rollback().await.map_err(db_error)?;
                return Ok(false);
            };
            sqlx::query(UPSERT_TOMBSTONE)
                .bind(tenant.to_string())
                .bind(path.as_str())
                .bind(last_version)
                .bind(micros(now_micros()))
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.append_chain(tenant, audit).await?;
            tx.commit().await.map_err(db_error)?;
            Ok(true)
        })
    }

    async fn last_secret_version(&self, tenant: TenantId, path: &SecretPath) -> StoreResult<i64> {
        on_db!(self.db, pool => {
            let mut tx = pool.begin_read(tenant).await?;
            let last: i64 = sqlx::query_scalar(SELECT_LAST_VERSION)
                .bind(tenant.to_string())
                .bind(path.as_str())
                .fetch_one(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            Ok(last)
        })
    }

    async fn current_secrets(
        &self,
        tenant: TenantId,
        paths: &[SecretPath],
    ) -> StoreResult<Vec<StoredSecret>> {
        if paths.is_empty() {
            return Ok(Vec::new());
        }
        on_db!(self.db, pool => {
            let mut tx = pool.begin_read(tenant).await?;
            let rows = fetch_current_secrets!(pool, &mut *tx, tenant, paths);
            tx.commit().await.map_err(db_error)?;
            records(rows)
        })
    }
}

/// The current version row of each of `paths` (non-empty) in `tenant`, read through `$tx`.
/// A macro so the SQLite and PostgreSQL expansions of `on_db!` can share it.
macro_rules! fetch_current_secrets {
    ($pool:expr, $tx:expr, $tenant:expr, $paths:expr) => {{
        let mut qb = $crate::store::sql::transaction::query_builder($pool, CURRENT_SECRETS);
        qb.push_bind($tenant.to_string());
        qb.push(" AND s.path IN (");
        let mut list = qb.separated(", ");
        for path in $paths {
            list.push_bind(path.as_str());
        }
        qb.push(")").push(CURRENT_SECRETS_ORDER);
        let rows: Vec<$crate::store::sql::rows::StoredSecretRow> =
            qb.build_query_as().fetch_all($tx).await.map_err(db_error)?;
        rows
    }};
}
pub(super) use fetch_current_secrets;

fn stale_version(path: &SecretPath, current: i64, attempted: i64) -> StoreError {
    StoreError::Conflict(format!(
        "secret {path} is at version {current}; version {attempted} cannot be written"
    ))
}
