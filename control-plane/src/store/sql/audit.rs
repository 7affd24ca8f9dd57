//! The audit chain in SQL: the one append helper every mutating method uses, and the reads.
//!
//! An append bumps the tenant's `audit_seq` with `UPDATE ... RETURNING`, chains the draft to
//! the returned head, inserts the event and records the new head, all in the caller's
//! transaction. The `UPDATE` row lock serialises a tenant's appends on PostgreSQL (SQLite's
//! `BEGIN IMMEDIATE` already serialises writers), so two replicas can never fork the chain.
//! Callers append last: the tenant row is then always the last lock a transaction takes, which
//! keeps the lock order the same everywhere. If any step fails the caller's change rolls back
//! with it — the audit log fails closed.

use agent_secret_core::ids::TenantId;
use async_trait::async_trait;
use sqlx::{Postgres, Sqlite, Transaction};

use super::rows::{hash32, micros, records, AuditRow};
use super::transaction::{db_error, query_builder, TenantPool};
use super::SqlStore;
use crate::audit::{AuditDraft, AuditEvent, GENESIS_HASH};
use crate::db::on_db;
use crate::store::{AuditFilter, AuditStore, StoreError, StoreResult};

const BUMP_SEQ: &str =
    "UPDATE tenants SET audit_seq = audit_seq + 1 WHERE id = $1 RETURNING audit_seq, audit_head";
const SET_HEAD: &str = "UPDATE tenants SET audit_head = $2 WHERE id = $1";
const INSERT_EVENT: &str = "INSERT INTO audit_events \
     (id, tenant_id, seq, event_type, actor, ip, user_agent, path, destination_host, success, \
      reason, occurred_at, prev_hash, hash) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";
const SELECT_HEAD: &str = "SELECT audit_seq, audit_head FROM tenants WHERE id = $1";
/// Followed by the bound tenant id and the optional filters (see `list_audit`).
const SELECT_EVENTS: &str = "SELECT id, tenant_id, seq, event_type, actor, ip, user_agent, \
     path, destination_host, success, reason, occurred_at, prev_hash, hash \
     FROM audit_events WHERE tenant_id = ";

/// Appends audit events inside an open transaction.
pub(super) trait AuditChain {
    async fn append_chain(
        &mut self,
        tenant: TenantId,
        draft: AuditDraft,
    ) -> StoreResult<AuditEvent>;
}

macro_rules! impl_audit_chain {
    ($database:ty) => {
        impl AuditChain for Transaction<'_, $database> {
            async fn append_chain(
                &mut self,
                tenant: TenantId,
                draft: AuditDraft,
            ) -> StoreResult<AuditEvent> {
                let tenant_text = tenant.to_string();
                let (seq, head): (i64, Option<Vec<u8>>) = sqlx::query_as(BUMP_SEQ)
                    .bind(&tenant_text)
                    .fetch_optional(&mut **self)
                    .await
                    .map_err(db_error)?
                    .ok_or(StoreError::NotFound)?;
                let prev_hash = match head {
                    Some(head) => hash32(head, "tenants.audit_head")?,
                    None if seq == 1 => GENESIS_HASH,
                    None => {
                        return Err(StoreError::Corrupt(
                            "tenants.audit_head is missing after the first event".into(),
                        ))
                    }
                };
                let event = AuditEvent::chain(tenant, seq, prev_hash, draft);
                let d = &event.draft;
                sqlx::query(INSERT_EVENT)
                    .bind(event.id.to_string())
                    .bind(&tenant_text)
                    .bind(event.seq)
                    .bind(d.event_type.as_str())
                    .bind(&d.actor.0)
                    .bind(&d.ip)
                    .bind(&d.user_agent)
                    .bind(&d.path)
                    .bind(&d.destination_host)
                    .bind(d.success)
                    .bind(&d.reason)
                    .bind(micros(d.occurred_at))
                    .bind(event.prev_hash.to_vec())
                    .bind(event.hash.to_vec())
                    .execute(&mut **self)
                    .await
                    .map_err(db_error)?;
                sqlx::query(SET_HEAD)
                    .bind(&tenant_text)
                    .bind(event.hash.to_vec())
                    .execute(&mut **self)
                    .await
                    .map_err(db_error)?;
                Ok(event)
            }
        }
    };
}

impl_audit_chain!(Sqlite);
impl_audit_chain!(Postgres);

#[async_trait]
impl AuditStore for SqlStore {
    async fn append_audit(&self, tenant: TenantId, draft: AuditDraft) -> StoreResult<AuditEvent> {
        on_db!(self.db, pool => {
            let mut tx = pool.begin_write(tenant).await?;
            let event = tx.append_chain(tenant, draft).await?;
            tx.commit().await.map_err(db_error)?;
            Ok(event)
        })
    }

    async fn append_audit_batch(
        &self,
        tenant: TenantId,
        drafts: Vec<AuditDraft>,
    ) -> StoreResult<Vec<AuditEvent>> {
        on_db!(self.db, pool => {
            let mut tx = pool.begin_write(tenant).await?;
            let mut events = Vec::with_capacity(drafts.len());
            for draft in drafts {
                events.push(tx.append_chain(tenant, draft).await?);
            }
            tx.commit().await.map_err(db_error)?;
            Ok(events)
        })
    }

    /// Events in `seq` order with `since <= occurred_at <= until` (both inclusive),
    /// `seq > after_seq`, of any of `types` (all when empty), at most `limit`.
    async fn list_audit(
        &self,
        tenant: TenantId,
        filter: &AuditFilter,
    ) -> StoreResult<Vec<AuditEvent>> {
        on_db!(self.db, pool => {
            let mut qb = query_builder(pool, SELECT_EVENTS);
            qb.push_bind(tenant.to_string());
            if let Some(since) = filter.since {
                qb.push(" AND occurred_at >= ").push_bind(micros(since));
            }
            if let Some(until) = filter.until {
                qb.push(" AND occurred_at <= ").push_bind(micros(until));
            }
            if let Some(after) = filter.after_seq {
                qb.push(" AND seq > ").push_bind(after);
            }
            if !filter.types.is_empty() {
                qb.push(" AND event_type IN (");
                let mut types = qb.separated(", ");
                for t in &filter.types {
                    types.push_bind(t.as_str());
                }
                qb.push(")");
            }
            qb.push(" ORDER BY seq");
            if let Some(limit) = filter.limit {
                qb.push(" LIMIT ").push_bind(limit.max(0));
            }
            let mut tx = pool.begin_read(tenant).await?;
            let rows: Vec<AuditRow> = qb
                .build_query_as()
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            records(rows)
        })
    }

    async fn audit_head(&self, tenant: TenantId) -> StoreResult<Option<(i64, [u8; 32])>> {
        on_db!(self.db, pool => {
            let mut tx = pool.begin_read(tenant).await?;
            let row: Option<(i64, Option<Vec<u8>>)> = sqlx::query_as(SELECT_HEAD)
                .bind(tenant.to_string())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            match row {
                None => Err(StoreError::NotFound),
                Some((0, None)) => Ok(None),
                Some((seq, Some(head))) => Ok(Some((seq, hash32(head, "tenants.audit_head")?))),
                Some((_, None)) => Err(StoreError::Corrupt(
                    "tenants.audit_head is missing after the first event".into(),
                )),
            }
        })
    }
}
