//! Audit keys and checkpoints in SQL (`crate::audit_checkpoint` says what they are for).
//!
//! A checkpoint locks the tenant row first (`UPDATE ... RETURNING` of its chain position and
//! last checkpoint), decides whether one is due, and only then appends: two replicas asking at
//! once serialise on that lock and the second finds nothing due. The append itself is the one
//! chain helper every write uses.

use agent_secret_core::envelope::Envelope;
use agent_secret_core::ids::TenantId;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::audit::AuditChain;
use super::rows::{hash32, micros, time};
use super::transaction::{db_error, TenantPool};
use super::SqlStore;
use crate::audit::{AuditDraft, AuditEvent, GENESIS_HASH};
use crate::db::on_db;
use crate::store::{AuditKeyRecord, CheckpointDue, CheckpointStore, StoreError, StoreResult};

const SELECT_KEYS: &str = "SELECT key_id, public_key, key_name, key_version, wrapped_dek, \
     nonce, ciphertext, created_at FROM audit_keys WHERE tenant_id = $1 \
     ORDER BY created_at, key_id";
const INSERT_KEY: &str = "INSERT INTO audit_keys (tenant_id, key_id, public_key, key_name, \
     key_version, wrapped_dek, nonce, ciphertext, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
/// Takes the tenant row's lock and reads where the chain and its last checkpoint are.
const LOCK_CHAIN: &str = "UPDATE tenants SET audit_checkpoint_seq = audit_checkpoint_seq \
     WHERE id = $1 RETURNING audit_seq, audit_head, audit_checkpoint_seq, audit_checkpoint_at";
const SET_CHECKPOINT: &str =
    "UPDATE tenants SET audit_checkpoint_seq = $2, audit_checkpoint_at = $3 WHERE id = $1";

type KeyRow = (
    String,
    Vec<u8>,
    String,
    String,
    Vec<u8>,
    Vec<u8>,
    Vec<u8>,
    i64,
);

fn key_record(row: KeyRow) -> StoreResult<AuditKeyRecord> {
    let (key_id, public_key, key_name, key_version, wrapped_dek, nonce, ciphertext, created) = row;
    Ok(AuditKeyRecord {
        key_id,
        public_key,
        envelope: Envelope {
            key_name,
            key_version,
            wrapped_dek,
            nonce,
            ciphertext,
        },
        created_at: time(created, "audit_keys.created_at")?,
    })
}

/// Whether the chain at `seq` is due a checkpoint after the last one at `last_seq`/`last_at`.
fn is_due(
    seq: i64,
    last_seq: i64,
    last_at: Option<i64>,
    now: DateTime<Utc>,
    due: CheckpointDue,
) -> bool {
    let new_events = seq - last_seq;
    if new_events <= 0 {
        return false;
    }
    if new_events >= due.every_events {
        return true;
    }
    match last_at {
        None => true,
        Some(at) => micros(now) - at >= due.every.num_microseconds().unwrap_or(i64::MAX),
    }
}

#[async_trait]
impl CheckpointStore for SqlStore {
    async fn audit_keys(&self, tenant: TenantId) -> StoreResult<Vec<AuditKeyRecord>> {
        on_db!(self.db, pool => {
            let mut tx = pool.begin_read(tenant).await?;
            let rows: Vec<KeyRow> = sqlx::query_as(SELECT_KEYS)
                .bind(tenant.to_string())
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            rows.into_iter().map(key_record).collect()
        })
    }

    async fn insert_audit_key(&self, tenant: TenantId, key: &AuditKeyRecord) -> StoreResult<()> {
        on_db!(self.db, pool => {
            let mut tx = pool.begin_write(tenant).await?;
            sqlx::query(INSERT_KEY)
                .bind(tenant.to_string())
                .bind(&key.key_id)
                .bind(&key.public_key)
                .bind(&key.envelope.key_name)
                .bind(&key.envelope.key_version)
                .bind(&key.envelope.wrapped_dek)
                .bind(&key.envelope.nonce)
                .bind(&key.envelope.ciphertext)
                .bind(micros(key.created_at))
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            Ok(())
        })
    }

    async fn append_checkpoint(
        &self,
        tenant: TenantId,
        now: DateTime<Utc>,
        due: CheckpointDue,
        sign: &(dyn Fn(i64, [u8; 32]) -> AuditDraft + Send + Sync),
    ) -> StoreResult<Option<AuditEvent>> {
        on_db!(self.db, pool => {
            let mut tx = pool.begin_write(tenant).await?;
            let (seq, head, last_seq, last_at): (i64, Option<Vec<u8>>, i64, Option<i64>) =
                sqlx::query_as(LOCK_CHAIN)
                    .bind(tenant.to_string())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_error)?
                    .ok_or(StoreError::NotFound)?;
            if !is_due(seq, last_seq, last_at, now, due) {
                tx.rollback().await.map_err(db_error)?;
                return Ok(None);
            }
            let head = match head {
                Some(head) => hash32(head, "tenants.audit_head")?,
                None => GENESIS_HASH,
            };
            let event = tx.append_chain(tenant, sign(seq, head)).await?;
            sqlx::query(SET_CHECKPOINT)
                .bind(tenant.to_string())
                .bind(event.seq)
                .bind(micros(now))
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            Ok(Some(event))
        })
    }
}
