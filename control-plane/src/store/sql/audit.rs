//! The audit chain in SQL: the one append helper every mutating method uses, and the reads.
//!
//! An append bumps the tenant's `audit_seq` with `UPDATE ... RETURNING`, chains the draft to
//! the returned head, inserts the event and records the new head, all in the caller's
//! transaction. The `UPDATE` row lock serialises a tenant's appends on PostgreSQL (SQLite's
//! `BEGIN IMMEDIATE` already serialises writers), so two replicas can never fork the chain.
//! Callers append last: the tenant row is then always the last lock a transaction takes, which
//! keeps the lock order the same everywhere. If any step fails the caller's change rolls back
//! with it — the audit log fails closed.

use agent_secret_core::ids::{AuditEventId, TenantId};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Postgres, Sqlite, Transaction};

use super::rows::{hash32, micros, records, time, AuditRow};
use super::transaction::{db_error, query_builder, TenantPool};
use super::SqlStore;
use crate::audit::{Actor, AuditDraft, AuditEvent, AuditEventType, GENESIS_HASH};
use crate::db::on_db;
use crate::store::{AuditFilter, AuditStore, StoreError, StoreResult};

/// Reserves `$2` sequence numbers: returns the last one and the head before them.
const BUMP_SEQ: &str = "UPDATE tenants SET audit_seq = audit_seq + $2 WHERE id = $1 \
     RETURNING audit_seq, audit_head";
const SET_HEAD: &str = "UPDATE tenants SET audit_head = $2 WHERE id = $1";
/// Followed by one `(...)` tuple of 14 binds per event.
const INSERT_EVENTS: &str = "INSERT INTO audit_events \
     (id, tenant_id, seq, event_type, actor, ip, user_agent, path, destination_host, success, \
      reason, occurred_at, prev_hash, hash) ";
/// Events per INSERT statement: 14 binds each stays far below SQLite's bind limit.
const INSERT_CHUNK: usize = 256;
const SELECT_EVENT_SEQ: &str = "SELECT seq FROM audit_events WHERE tenant_id = $1 AND id = $2";
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
    ) -> StoreResult<AuditEvent> {
        let mut events = self.append_chain_many(tenant, vec![draft]).await?;
        events.pop().ok_or(StoreError::NotFound)
    }

    /// Appends `drafts` in order with three statements however many there are: one bump of
    /// the sequence (taking the chain's row lock once), multi-row inserts, one head update.
    /// This is what lets a batch of resolves share one commit.
    async fn append_chain_many(
        &mut self,
        tenant: TenantId,
        drafts: Vec<AuditDraft>,
    ) -> StoreResult<Vec<AuditEvent>>;
}

macro_rules! impl_audit_chain {
    ($database:ty) => {
        impl AuditChain for Transaction<'_, $database> {
            async fn append_chain_many(
                &mut self,
                tenant: TenantId,
                drafts: Vec<AuditDraft>,
            ) -> StoreResult<Vec<AuditEvent>> {
                if drafts.is_empty() {
                    return Ok(Vec::new());
                }
                let tenant_text = tenant.to_string();
                let count = i64::try_from(drafts.len())
                    .map_err(|_| StoreError::Database("too many audit events".into()))?;
                let (last_seq, head): (i64, Option<Vec<u8>>) = sqlx::query_as(BUMP_SEQ)
                    .bind(&tenant_text)
                    .bind(count)
                    .fetch_optional(&mut **self)
                    .await
                    .map_err(db_error)?
                    .ok_or(StoreError::NotFound)?;
                let first_seq = last_seq - count + 1;
                let mut prev_hash = match head {
                    Some(head) => hash32(head, "tenants.audit_head")?,
                    None if first_seq == 1 => GENESIS_HASH,
                    None => {
                        return Err(StoreError::Corrupt(
                            "tenants.audit_head is missing after the first event".into(),
                        ))
                    }
                };
                let mut events = Vec::with_capacity(drafts.len());
                for (seq, draft) in (first_seq..).zip(drafts) {
                    let event = AuditEvent::chain(tenant, seq, prev_hash, draft);
                    prev_hash = event.hash;
                    events.push(event);
                }
                for chunk in events.chunks(INSERT_CHUNK) {
                    let mut insert = sqlx::QueryBuilder::<$database>::new(INSERT_EVENTS);
                    insert.push_values(chunk, |mut row, event| {
                        let d = &event.draft;
                        row.push_bind(event.id.to_string())
                            .push_bind(tenant_text.clone())
                            .push_bind(event.seq)
                            .push_bind(d.event_type.as_str())
                            .push_bind(d.actor.0.clone())
                            .push_bind(d.ip.clone())
                            .push_bind(d.user_agent.clone())
                            .push_bind(d.path.clone())
                            .push_bind(d.destination_host.clone())
                            .push_bind(d.success)
                            .push_bind(d.reason.clone())
                            .push_bind(micros(d.occurred_at))
                            .push_bind(event.prev_hash.to_vec())
                            .push_bind(event.hash.to_vec());
                    });
                    insert
                        .build()
                        .execute(&mut **self)
                        .await
                        .map_err(db_error)?;
                }
                sqlx::query(SET_HEAD)
                    .bind(&tenant_text)
                    .bind(prev_hash.to_vec())
                    .execute(&mut **self)
                    .await
                    .map_err(db_error)?;
                Ok(events)
            }
        }
    };
}

impl_audit_chain!(Sqlite);
impl_audit_chain!(Postgres);

/// Claims expired tokens whose expiry is not yet recorded, oldest first. A replica that
/// races another waits on the rows the other locked and then, re-checking
/// `NOT expiry_recorded` on the committed row (PostgreSQL's READ COMMITTED; SQLite runs
/// writers one at a time), leaves them out.
const CLAIM_EXPIRED: &str = "UPDATE tokens SET expiry_recorded = TRUE \
     WHERE tenant_id = $1 AND NOT expiry_recorded AND expires_at <= $2 AND id IN \
     (SELECT id FROM tokens WHERE tenant_id = $1 AND NOT expiry_recorded AND expires_at <= $2 \
      ORDER BY expires_at LIMIT $3) \
     RETURNING id, agent_id, status, revoked_at, expires_at";

/// A claimed token: the facts its `token.expired` event carries.
type ExpiredRow = (String, String, String, Option<i64>, i64);

fn expiry_draft(row: &ExpiredRow) -> StoreResult<Option<AuditDraft>> {
    let (id, agent, status, revoked_at, expires_at) = row;
    let live = revoked_at.is_none() && matches!(status.as_str(), "active" | "pending_approval");
    if !live {
        // Revoked or denied first: that was its end, already in the log.
        return Ok(None);
    }
    let at = time(*expires_at, "tokens.expires_at")?;
    Ok(Some(
        AuditDraft::new(AuditEventType::TokenExpired, Actor::new("token", id)).reason(format!(
            "agent {agent}; {status} until {}",
            at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        )),
    ))
}

#[async_trait]
impl AuditStore for SqlStore {
    async fn record_token_expiries(
        &self,
        tenant: TenantId,
        now: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<usize> {
        on_db!(self.db, pool => {
            let mut tx = pool.begin_write(tenant).await?;
            let rows: Vec<ExpiredRow> = sqlx::query_as(CLAIM_EXPIRED)
                .bind(tenant.to_string())
                .bind(micros(now))
                .bind(limit.max(0))
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error)?;
            let mut drafts = Vec::new();
            for row in &rows {
                drafts.extend(expiry_draft(row)?);
            }
            tx.append_chain_many(tenant, drafts).await?;
            tx.commit().await.map_err(db_error)?;
            Ok(rows.len())
        })
    }

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
            let events = tx.append_chain_many(tenant, drafts).await?;
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
            if let Some(actor) = &filter.actor {
                qb.push(" AND actor = ").push_bind(actor.clone());
            }
            if let Some(prefix) = &filter.path_prefix {
                // A plain prefix comparison: no LIKE, so `%` and `_` in it mean themselves.
                qb.push(" AND substr(path, 1, ")
                    .push_bind(prefix.chars().count() as i64)
                    .push(") = ")
                    .push_bind(prefix.clone());
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

    async fn audit_event_seq(
        &self,
        tenant: TenantId,
        id: AuditEventId,
    ) -> StoreResult<Option<i64>> {
        on_db!(self.db, pool => {
            let mut tx = pool.begin_read(tenant).await?;
            let seq: Option<i64> = sqlx::query_scalar(SELECT_EVENT_SEQ)
                .bind(tenant.to_string())
                .bind(id.to_string())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            Ok(seq)
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
