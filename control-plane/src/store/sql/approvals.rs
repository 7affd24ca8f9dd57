//! Approval requests and the humans' decisions on them.
//!
//! Over 400 lines: one store trait's statements, row decoding and seven methods, each a short
//! transaction written out for both backends by `on_db!`.
//!
//! Every change of a request is conditional on `status = 'pending'` (and, when settling, on
//! the digest the caller evaluated), so when several replicas and the activation task race on
//! one request exactly one settles it and the others see `false`. A token and its request
//! change in the same transaction, locking the request row first, then the token row.

use agent_secret_core::api::{ApprovalStatus, Unlocks};
use agent_secret_core::ids::{ApprovalId, TenantId, TokenId};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::audit::AuditChain;
use super::rows::{
    hash32, list_to_json, micros, opt_micros, opt_time, parse, scopes_from_json, time,
};
use super::transaction::{db_error, TenantPool};
use super::SqlStore;
use crate::audit::AuditDraft;
use crate::db::on_db;
use crate::store::{
    ApprovalRecord, ApprovalStore, DecisionOutcome, DecisionRecord, Settlement, StoreError,
    StoreResult,
};

pub(super) const INSERT_APPROVAL: &str = "INSERT INTO approval_requests \
     (id, tenant_id, token_id, agent_id, requested_by, status, unlocks, digest, \
      required_approvals, delay_seconds, time_lock_until, created_at, expires_at, decided_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";
const COLUMNS: &str = "SELECT id, tenant_id, token_id, agent_id, requested_by, status, unlocks, \
     digest, required_approvals, delay_seconds, time_lock_until, created_at, expires_at, \
     decided_at FROM approval_requests";
const BY_ID: &str = " WHERE tenant_id = $1 AND id = $2";
const BY_TOKEN: &str = " WHERE tenant_id = $1 AND token_id = $2";
const DECISIONS: &str = "SELECT request_id, operator_id, decision, digest, comment, decided_at \
     FROM approval_decisions WHERE tenant_id = $1 AND request_id = $2 \
     ORDER BY decided_at, operator_id";
const PENDING_IDS: &str = "SELECT id FROM approval_requests \
     WHERE tenant_id = $1 AND status = 'pending' ORDER BY created_at, id LIMIT $2";
/// Locks a pending request for the rest of the transaction; no row when it is not pending.
const LOCK_PENDING: &str = "UPDATE approval_requests SET status = status \
     WHERE tenant_id = $1 AND id = $2 AND status = 'pending' RETURNING token_id, agent_id";
const INSERT_DECISION: &str = "INSERT INTO approval_decisions \
     (request_id, tenant_id, operator_id, decision, digest, comment, decided_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";
const EXISTS_DECISION: &str = "SELECT COUNT(*) FROM approval_decisions \
     WHERE tenant_id = $1 AND request_id = $2 AND operator_id = $3 AND digest = $4";
const END_REQUEST: &str = "UPDATE approval_requests SET status = $3, decided_at = $4 \
     WHERE tenant_id = $1 AND id = $2 AND status = 'pending'";
const END_REQUEST_AT_DIGEST: &str = "UPDATE approval_requests SET status = $3, decided_at = $4 \
     WHERE tenant_id = $1 AND id = $2 AND status = 'pending' AND digest = $5 \
     RETURNING token_id, agent_id";
const DENY_TOKEN: &str = "UPDATE tokens SET status = 'denied' \
     WHERE tenant_id = $1 AND id = $2 AND status = 'pending_approval'";
const ACTIVATE_TOKEN: &str = "UPDATE tokens SET status = 'active', approved_sensitivity = $3 \
     WHERE tenant_id = $1 AND id = $2 AND status = 'pending_approval' AND revoked_at IS NULL";
const UPDATE_EVALUATION: &str = "UPDATE approval_requests SET unlocks = $3, digest = $4, \
     required_approvals = $5, delay_seconds = $6, time_lock_until = $7 \
     WHERE tenant_id = $1 AND id = $2 AND status = 'pending'";
const LOCK_CEILING: &str = "UPDATE agents SET ceiling = ceiling \
     WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL RETURNING ceiling";
const SET_CEILING: &str = "UPDATE agents SET ceiling = $3 WHERE tenant_id = $1 AND id = $2";
const LOCK_AGENT: &str = "UPDATE agents SET revoked_at = revoked_at \
     WHERE tenant_id = $1 AND id = $2 RETURNING revoked_at";

#[derive(sqlx::FromRow)]
struct ApprovalRow {
    id: String,
    tenant_id: String,
    token_id: Option<String>,
    agent_id: String,
    requested_by: String,
    status: String,
    unlocks: String,
    digest: Vec<u8>,
    required_approvals: i32,
    delay_seconds: i64,
    time_lock_until: Option<i64>,
    created_at: i64,
    expires_at: i64,
    decided_at: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct DecisionRow {
    request_id: String,
    operator_id: String,
    decision: String,
    digest: Vec<u8>,
    comment: Option<String>,
    decided_at: i64,
}

fn corrupt(column: &'static str) -> StoreError {
    StoreError::Corrupt(format!("{column} does not decode"))
}

impl TryFrom<ApprovalRow> for ApprovalRecord {
    type Error = StoreError;
    fn try_from(row: ApprovalRow) -> StoreResult<Self> {
        let unlocks: Unlocks =
            serde_json::from_str(&row.unlocks).map_err(|_| corrupt("approval_requests.unlocks"))?;
        Ok(ApprovalRecord {
            id: parse(&row.id, "approval_requests.id")?,
            tenant_id: parse(&row.tenant_id, "approval_requests.tenant_id")?,
            token_id: row
                .token_id
                .map(|t| parse(&t, "approval_requests.token_id"))
                .transpose()?,
            agent_id: parse(&row.agent_id, "approval_requests.agent_id")?,
            requested_by: row.requested_by,
            status: ApprovalStatus::parse(&row.status)
                .ok_or_else(|| corrupt("approval_requests.status"))?,
            unlocks,
            digest: hash32(row.digest, "approval_requests.digest")?,
            required_approvals: u8::try_from(row.required_approvals)
                .map_err(|_| corrupt("approval_requests.required_approvals"))?,
            delay_seconds: u64::try_from(row.delay_seconds)
                .map_err(|_| corrupt("approval_requests.delay_seconds"))?,
            time_lock_until: opt_time(row.time_lock_until, "approval_requests.time_lock_until")?,
            created_at: time(row.created_at, "approval_requests.created_at")?,
            expires_at: time(row.expires_at, "approval_requests.expires_at")?,
            decided_at: opt_time(row.decided_at, "approval_requests.decided_at")?,
        })
    }
}

impl TryFrom<DecisionRow> for DecisionRecord {
    type Error = StoreError;
    fn try_from(row: DecisionRow) -> StoreResult<Self> {
        Ok(DecisionRecord {
            request_id: parse(&row.request_id, "approval_decisions.request_id")?,
            operator_id: parse(&row.operator_id, "approval_decisions.operator_id")?,
            approve: match row.decision.as_str() {
                "approve" => true,
                "deny" => false,
                _ => return Err(corrupt("approval_decisions.decision")),
            },
            digest: hash32(row.digest, "approval_decisions.digest")?,
            comment: row.comment,
            decided_at: time(row.decided_at, "approval_decisions.decided_at")?,
        })
    }
}

/// The stored JSON of what a request unlocks.
pub(super) fn unlocks_json(unlocks: &Unlocks) -> StoreResult<String> {
    serde_json::to_string(unlocks).map_err(|e| StoreError::Database(e.to_string()))
}

/// Inserts `$approval` (an `&ApprovalRecord`) in the transaction `$tx`. A macro because the
/// executor is a concretely typed transaction per backend.
macro_rules! insert_approval {
    ($tx:expr, $approval:expr) => {{
        let approval: &$crate::store::ApprovalRecord = $approval;
        sqlx::query($crate::store::sql::approvals::INSERT_APPROVAL)
            .bind(approval.id.to_string())
            .bind(approval.tenant_id.to_string())
            .bind(approval.token_id.map(|t| t.to_string()))
            .bind(approval.agent_id.to_string())
            .bind(&approval.requested_by)
            .bind(approval.status.as_str())
            .bind($crate::store::sql::approvals::unlocks_json(
                &approval.unlocks,
            )?)
            .bind(approval.digest.to_vec())
            .bind(i32::from(approval.required_approvals))
            .bind(i64::try_from(approval.delay_seconds).unwrap_or(i64::MAX))
            .bind(approval.time_lock_until.map(|t| t.timestamp_micros()))
            .bind(approval.created_at.timestamp_micros())
            .bind(approval.expires_at.timestamp_micros())
            .bind(approval.decided_at.map(|t| t.timestamp_micros()))
            .execute($tx)
            .await
            .map_err(db_error)?;
    }};
}
pub(super) use insert_approval;

/// Reads one request (by `$filter`, bound to `$key`) and its decisions in transaction `$tx`.
macro_rules! read_approval {
    ($tx:expr, $tenant:expr, $filter:expr, $key:expr) => {{
        let tenant_text = $tenant.to_string();
        let row: Option<ApprovalRow> =
            sqlx::query_as(sqlx::AssertSqlSafe(format!("{COLUMNS}{}", $filter)))
                .bind(&tenant_text)
                .bind($key)
                .fetch_optional(&mut *$tx)
                .await
                .map_err(db_error)?;
        match row {
            None => None,
            Some(row) => {
                let record = ApprovalRecord::try_from(row)?;
                let decisions: Vec<DecisionRow> = sqlx::query_as(DECISIONS)
                    .bind(&tenant_text)
                    .bind(record.id.to_string())
                    .fetch_all(&mut *$tx)
                    .await
                    .map_err(db_error)?;
                let decisions = decisions
                    .into_iter()
                    .map(DecisionRecord::try_from)
                    .collect::<StoreResult<Vec<_>>>()?;
                Some((record, decisions))
            }
        }
    }};
}

#[async_trait]
impl ApprovalStore for SqlStore {
    async fn get_approval(
        &self,
        tenant: TenantId,
        id: ApprovalId,
    ) -> StoreResult<Option<(ApprovalRecord, Vec<DecisionRecord>)>> {
        on_db!(self.db, pool => {
            let mut tx = pool.begin_read(tenant).await?;
            let found = read_approval!(tx, tenant, BY_ID, id.to_string());
            tx.commit().await.map_err(db_error)?;
            Ok(found)
        })
    }

    async fn get_approval_for_token(
        &self,
        tenant: TenantId,
        token: TokenId,
    ) -> StoreResult<Option<(ApprovalRecord, Vec<DecisionRecord>)>> {
        on_db!(self.db, pool => {
            let mut tx = pool.begin_read(tenant).await?;
            let found = read_approval!(tx, tenant, BY_TOKEN, token.to_string());
            tx.commit().await.map_err(db_error)?;
            Ok(found)
        })
    }

    async fn insert_access_request(
        &self,
        approval: &ApprovalRecord,
        audit: AuditDraft,
    ) -> StoreResult<()> {
        let tenant = approval.tenant_id;
        on_db!(self.db, pool => {
            let mut tx = pool.begin_write(tenant).await?;
            // The agent row lock orders this after a revocation in flight.
            let live: Option<(Option<i64>,)> = sqlx::query_as(LOCK_AGENT)
                .bind(tenant.to_string())
                .bind(approval.agent_id.to_string())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
            if !matches!(live, Some((None,))) {
                return Err(StoreError::Conflict("the agent is revoked".into()));
            }
            insert_approval!(&mut *tx, approval);
            tx.append_chain(tenant, audit).await?;
            tx.commit().await.map_err(db_error)
        })
    }

    async fn list_approvals(
        &self,
        tenant: TenantId,
        status: Option<ApprovalStatus>,
        limit: i64,
    ) -> StoreResult<Vec<(ApprovalRecord, Vec<DecisionRecord>)>> {
        // '' selects every status.
        let filter = " WHERE tenant_id = $1 AND ($2 = '' OR status = $2) \
             ORDER BY created_at DESC, id DESC LIMIT $3";
        let status_text = status.map_or("", ApprovalStatus::as_str);
        on_db!(self.db, pool => {
            let mut tx = pool.begin_read(tenant).await?;
            let rows: Vec<ApprovalRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!("{COLUMNS}{filter}")))
                .bind(tenant.to_string())
                .bind(status_text)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error)?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                let record = ApprovalRecord::try_from(row)?;
                let decisions: Vec<DecisionRow> = sqlx::query_as(DECISIONS)
                    .bind(tenant.to_string())
                    .bind(record.id.to_string())
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db_error)?;
                let decisions = decisions
                    .into_iter()
                    .map(DecisionRecord::try_from)
                    .collect::<StoreResult<Vec<_>>>()?;
                out.push((record, decisions));
            }
            tx.commit().await.map_err(db_error)?;
            Ok(out)
        })
    }

    async fn pending_approvals(
        &self,
        tenant: TenantId,
        limit: i64,
    ) -> StoreResult<Vec<ApprovalId>> {
        on_db!(self.db, pool => {
            let mut tx = pool.begin_read(tenant).await?;
            let ids: Vec<String> = sqlx::query_scalar(PENDING_IDS)
                .bind(tenant.to_string())
                .bind(limit)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            ids.iter().map(|id| parse(id, "approval_requests.id")).collect()
        })
    }

    async fn record_decision(
        &self,
        tenant: TenantId,
        decision: &DecisionRecord,
        audit: AuditDraft,
    ) -> StoreResult<DecisionOutcome> {
        let tenant_text = tenant.to_string();
        let request = decision.request_id.to_string();
        let operator = decision.operator_id.to_string();
        on_db!(self.db, pool => {
            let mut tx = pool.begin_write(tenant).await?;
            let locked: Option<(Option<String>, String)> = sqlx::query_as(LOCK_PENDING)
                .bind(&tenant_text)
                .bind(&request)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
            let Some((token_id, _agent)) = locked else {
                let exists = read_approval!(tx, tenant, BY_ID, request.clone());
                return Ok(match exists {
                    None => DecisionOutcome::NotFound,
                    Some(_) => DecisionOutcome::NotPending,
                });
            };
            let (already,): (i64,) = sqlx::query_as(EXISTS_DECISION)
                .bind(&tenant_text)
                .bind(&request)
                .bind(&operator)
                .bind(decision.digest.to_vec())
                .fetch_one(&mut *tx)
                .await
                .map_err(db_error)?;
            if already > 0 {
                return Ok(DecisionOutcome::Duplicate);
            }
            sqlx::query(INSERT_DECISION)
                .bind(&request)
                .bind(&tenant_text)
                .bind(&operator)
                .bind(if decision.approve { "approve" } else { "deny" })
                .bind(decision.digest.to_vec())
                .bind(&decision.comment)
                .bind(micros(decision.decided_at))
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            if !decision.approve {
                if let Some(token_id) = &token_id {
                    sqlx::query(DENY_TOKEN)
                        .bind(&tenant_text)
                        .bind(token_id)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_error)?;
                }
                sqlx::query(END_REQUEST)
                    .bind(&tenant_text)
                    .bind(&request)
                    .bind(ApprovalStatus::Denied.as_str())
                    .bind(micros(decision.decided_at))
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
            }
            tx.append_chain(tenant, audit).await?;
            tx.commit().await.map_err(db_error)?;
            Ok(DecisionOutcome::Recorded)
        })
    }

    async fn update_evaluation(
        &self,
        tenant: TenantId,
        approval: &ApprovalRecord,
        audit: Option<AuditDraft>,
    ) -> StoreResult<bool> {
        let unlocks = unlocks_json(&approval.unlocks)?;
        on_db!(self.db, pool => {
            let mut tx = pool.begin_write(tenant).await?;
            let updated = sqlx::query(UPDATE_EVALUATION)
                .bind(tenant.to_string())
                .bind(approval.id.to_string())
                .bind(&unlocks)
                .bind(approval.digest.to_vec())
                .bind(i32::from(approval.required_approvals))
                .bind(i64::try_from(approval.delay_seconds).unwrap_or(i64::MAX))
                .bind(opt_micros(approval.time_lock_until))
                .execute(&mut *tx)
                .await
                .map_err(db_error)?
                .rows_affected();
            if updated == 0 {
                return Ok(false);
            }
            if let Some(audit) = audit {
                tx.append_chain(tenant, audit).await?;
            }
            tx.commit().await.map_err(db_error)?;
            Ok(true)
        })
    }

    async fn settle_approval(
        &self,
        tenant: TenantId,
        id: ApprovalId,
        digest: &[u8; 32],
        settlement: &Settlement,
        at: DateTime<Utc>,
        audit: Vec<AuditDraft>,
    ) -> StoreResult<bool> {
        let tenant_text = tenant.to_string();
        let status = match settlement {
            Settlement::Approved { .. } => ApprovalStatus::Approved,
            Settlement::Expired => ApprovalStatus::Expired,
        };
        on_db!(self.db, pool => {
            let mut tx = pool.begin_write(tenant).await?;
            let ended: Option<(Option<String>, String)> = sqlx::query_as(END_REQUEST_AT_DIGEST)
                .bind(&tenant_text)
                .bind(id.to_string())
                .bind(status.as_str())
                .bind(micros(at))
                .bind(digest.to_vec())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
            let Some((token_id, agent_id)) = ended else {
                return Ok(false);
            };
            match (settlement, &token_id) {
                (Settlement::Expired, None) => {}
                (Settlement::Expired, Some(token_id)) => {
                    sqlx::query(DENY_TOKEN)
                        .bind(&tenant_text)
                        .bind(token_id)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_error)?;
                }
                (Settlement::Approved { sensitivity, ceiling_additions }, token_id) => {
                    let activated = match token_id {
                        None => 1,
                        Some(token_id) => sqlx::query(ACTIVATE_TOKEN)
                            .bind(&tenant_text)
                            .bind(token_id)
                            .bind(sensitivity.as_str())
                            .execute(&mut *tx)
                            .await
                            .map_err(db_error)?
                            .rows_affected(),
                    };
                    if activated == 0 {
                        // Revoked meanwhile: nothing to activate, the request stays pending
                        // until it expires (dropping the transaction rolls the end back).
                        return Ok(false);
                    }
                    if !ceiling_additions.is_empty() {
                        let ceiling: Option<(String,)> = sqlx::query_as(LOCK_CEILING)
                            .bind(&tenant_text)
                            .bind(&agent_id)
                            .fetch_optional(&mut *tx)
                            .await
                            .map_err(db_error)?;
                        let Some((ceiling,)) = ceiling else {
                            return Ok(false);
                        };
                        let mut ceiling = scopes_from_json(&ceiling, "agents.ceiling")?;
                        for scope in ceiling_additions {
                            if !ceiling.contains(scope) {
                                ceiling.push(scope.clone());
                            }
                        }
                        sqlx::query(SET_CEILING)
                            .bind(&tenant_text)
                            .bind(&agent_id)
                            .bind(list_to_json(&ceiling))
                            .execute(&mut *tx)
                            .await
                            .map_err(db_error)?;
                    }
                }
            }
            tx.append_chain_many(tenant, audit).await?;
            tx.commit().await.map_err(db_error)?;
            Ok(true)
        })
    }
}
