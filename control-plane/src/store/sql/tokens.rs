//! Scoped tokens: issuance, revocation, the batched reads of resolves and the atomic counting
//! of uses.
//!
//! Over 400 lines: one store trait's statements and methods, and the resolve path's two batched
//! ones (a batch's read, a batch's count) share the token row's conditions and lock order,
//! which is easier to check in one place.
//!
//! A use of a `max_uses` token is counted by exactly one conditional `UPDATE ... RETURNING`
//! that re-checks every condition (active, unrevoked, unexpired, not exhausted) on the row it
//! locks. Under PostgreSQL's READ COMMITTED a waiting writer re-evaluates the condition on the
//! row the previous writer committed, and SQLite's `BEGIN IMMEDIATE` runs writers one at a
//! time, so N parallel uses of a `max_uses = 5` token count exactly 5 on either backend.
//!
//! A use of a `max_uses` token is counted as a *reservation* (a `token_reservations` row, see
//! migrations/postgres/0006_use_reservations.sql): it counts against `max_uses` at once, and the
//! sidecar that made it may give it back before its deadline if the value was never injected.
//! A release locks the token row first and the reservation second, like a reservation does, so
//! the two never deadlock; the conditional UPDATE of the reservation (`released_at IS NULL`)
//! makes a release count once even when two race.

use std::collections::HashMap;

use agent_secret_core::credential::CredentialKind;
use agent_secret_core::ids::{AgentId, SidecarId, TenantId, TokenId};
use agent_secret_core::path::SecretPath;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::approvals::insert_approval;
use super::audit::AuditChain;
use super::credential_index::IndexCredential;
use super::rows::{
    list_to_json, micros, opt_micros, parse, record, records, scopes_from_json, TokenRow,
};
use super::secrets::{fetch_current_secrets, CURRENT_SECRETS, CURRENT_SECRETS_ORDER};
use super::transaction::{db_error, padded, query_builder, TenantPool};
use super::SqlStore;
use crate::audit::AuditDraft;
use crate::db::on_db;
use crate::store::{
    IssueOutcome, NewToken, ReleaseResult, Snapshot, SnapshotAsk, StoreError, StoreResult,
    StoredSecret, TokenRecord, TokenStore, TokenUse, UseOutcome,
};

const INSERT_TOKEN: &str = "INSERT INTO tokens \
     (id, tenant_id, agent_id, scopes, key_hash, status, approved_sensitivity, ip_allowlist, \
      max_uses, uses, expires_at, created_at, revoked_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";
/// Locks the issuing agent's row for the rest of the transaction and reads whether it is
/// revoked. An agent revocation locks the same row first, so the two serialise: either the
/// revocation waits and then revokes this token with the others, or this insert waits, sees
/// `revoked_at` and refuses. (A plain read would miss a revocation that is committing.)
/// It also returns the ceiling as committed: a narrowing (`agent deny`) locks the same row,
/// so a token is never issued under a ceiling that no longer allows it.
const LOCK_AGENT_FOR_ISSUE: &str = "UPDATE agents SET revoked_at = revoked_at \
     WHERE tenant_id = $1 AND id = $2 RETURNING revoked_at, ceiling";
const LIST_AGENT_TOKENS: &str = "SELECT id, tenant_id, agent_id, scopes, key_hash, status, \
     approved_sensitivity, ip_allowlist, max_uses, uses, expires_at, created_at, revoked_at \
     FROM tokens WHERE tenant_id = $1 AND agent_id = $2 AND revoked_at IS NULL \
     ORDER BY created_at, id";
const LIST_TOKENS: &str = "SELECT id, tenant_id, agent_id, scopes, key_hash, status, \
     approved_sensitivity, ip_allowlist, max_uses, uses, expires_at, created_at, revoked_at \
     FROM tokens WHERE tenant_id = $1 AND (CAST($2 AS TEXT) IS NULL OR agent_id = $2) \
     ORDER BY created_at DESC, id DESC LIMIT $3";
const SELECT_TOKEN: &str = "SELECT id, tenant_id, agent_id, scopes, key_hash, status, \
     approved_sensitivity, ip_allowlist, max_uses, uses, expires_at, created_at, revoked_at \
     FROM tokens WHERE tenant_id = $1 AND id = $2";
/// Followed by a bound tenant id and ` AND id IN (...)`. The tenant is compared as
/// `tenant_id || ''` so no index can serve that term: without table statistics SQLite would
/// otherwise pick an index on `tenant_id` for a list of ids and scan every token of the tenant
/// instead of looking each id up by its primary key (measured: bench/README.md, session 17).
const SELECT_TOKENS: &str = "SELECT id, tenant_id, agent_id, scopes, key_hash, status, \
     approved_sensitivity, ip_allowlist, max_uses, uses, expires_at, created_at, revoked_at \
     FROM tokens WHERE tenant_id || '' = ";
const REVOKE_TOKEN: &str = "UPDATE tokens SET status = 'revoked', revoked_at = $3 \
     WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL";
const CONSUME_USE: &str = "UPDATE tokens SET uses = uses + 1 \
     WHERE tenant_id = $1 AND id = $2 AND status = 'active' AND revoked_at IS NULL \
     AND expires_at > $3 AND (max_uses IS NULL OR uses < max_uses) \
     RETURNING uses";
/// CONSUME_USE for many tokens at once, each used once: followed by a bound tenant id,
/// ` AND expires_at > ` a bound instant, ` AND id IN (...)` and `RETURNING id, uses`. The
/// tenant term is kept off indexes as in SELECT_TOKENS. The ids are listed in id order, and an
/// index scan of an `IN` list visits (and locks) rows in index order; a plan that visits them
/// otherwise can deadlock with another replica's batch, which PostgreSQL aborts and the group
/// commit retries (`service::batching`).
const CONSUME_USES: &str = "UPDATE tokens SET uses = uses + 1 \
     WHERE status = 'active' AND revoked_at IS NULL \
     AND (max_uses IS NULL OR uses < max_uses) AND tenant_id || '' = ";
/// Reservations of the token past their deadline mean nothing any more (spent for good).
const PRUNE_RESERVATIONS: &str = "DELETE FROM token_reservations \
     WHERE tenant_id = $1 AND token_id = $2 AND deadline <= $3";
const INSERT_RESERVATION: &str = "INSERT INTO token_reservations \
     (id, tenant_id, token_id, sidecar_id, created_at, deadline, released_at) \
     VALUES ($1, $2, $3, $4, $5, $6, NULL)";
/// The token row first (the lock order of a reservation), found through the reservation.
const RELEASE_USE: &str = "UPDATE tokens SET uses = uses - 1 \
     WHERE tenant_id = $1 AND uses > 0 AND id = (SELECT token_id FROM token_reservations \
       WHERE tenant_id = $1 AND id = $2 AND sidecar_id = $3 AND released_at IS NULL \
       AND deadline > $4) \
     RETURNING id";
/// Exactly one of racing releases changes the row; the others roll their decrement back.
const MARK_RELEASED: &str = "UPDATE token_reservations SET released_at = $4 \
     WHERE tenant_id = $1 AND id = $2 AND sidecar_id = $3 AND released_at IS NULL \
     AND deadline > $4";
const SELECT_RESERVATION: &str = "SELECT released_at, deadline FROM token_reservations \
     WHERE tenant_id = $1 AND id = $2 AND sidecar_id = $3";

/// Records a counted use as a reservation, after pruning the token's expired ones (under the
/// token row lock the count just took, so reservations of one token never race here). A macro
/// rather than a function: the executor is a concretely typed transaction per backend.
macro_rules! reserve {
    ($tx:expr, $tenant:expr, $one:expr, $reservation:expr) => {{
        let token = $one.id.to_string();
        sqlx::query(PRUNE_RESERVATIONS)
            .bind($tenant)
            .bind(&token)
            .bind(micros($one.now))
            .execute($tx)
            .await
            .map_err(db_error)?;
        sqlx::query(INSERT_RESERVATION)
            .bind($reservation.id.to_string())
            .bind($tenant)
            .bind(&token)
            .bind($reservation.sidecar.to_string())
            .bind(micros($one.now))
            .bind(micros($reservation.deadline.max($one.now)))
            .execute($tx)
            .await
            .map_err(db_error)?;
    }};
}

#[async_trait]
impl TokenStore for SqlStore {
    async fn insert_token(&self, token: &TokenRecord, audit: AuditDraft) -> StoreResult<()> {
        let new = NewToken {
            token,
            approval: None,
            audit: vec![audit],
            allowed: &|_| true,
        };
        match self.issue_token(new).await? {
            IssueOutcome::Issued => Ok(()),
            IssueOutcome::AgentRevoked | IssueOutcome::OutsideCeiling => {
                Err(StoreError::Conflict("the agent has been revoked".into()))
            }
        }
    }

    async fn issue_token(&self, new: NewToken<'_>) -> StoreResult<IssueOutcome> {
        let token = new.token;
        let tenant = token.tenant_id;
        on_db!(self.db, pool => {
            let mut tx = pool.begin_write(tenant).await?;
            let agent: Option<(Option<i64>, String)> = sqlx::query_as(LOCK_AGENT_FOR_ISSUE)
                .bind(tenant.to_string())
                .bind(token.agent_id.to_string())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
            let ceiling = match agent {
                None | Some((Some(_), _)) => return Ok(IssueOutcome::AgentRevoked),
                Some((None, ceiling)) => scopes_from_json(&ceiling, "agents.ceiling")?,
            };
            if !(new.allowed)(&ceiling) {
                return Ok(IssueOutcome::OutsideCeiling);
            }
            sqlx::query(INSERT_TOKEN)
                .bind(token.id.to_string())
                .bind(tenant.to_string())
                .bind(token.agent_id.to_string())
                .bind(list_to_json(&token.scopes))
                .bind(&token.key_hash)
                .bind(token.status.as_str())
                .bind(token.approved_sensitivity.as_str())
                .bind(list_to_json(&token.ip_allowlist))
                .bind(token.max_uses)
                .bind(token.uses)
                .bind(micros(token.expires_at))
                .bind(micros(token.created_at))
                .bind(opt_micros(token.revoked_at))
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            if let Some(approval) = new.approval {
                insert_approval!(&mut *tx, approval);
            }
            tx.index_credential(&token.id.to_string(), &tenant.to_string(), CredentialKind::Token)
                .await?;
            tx.append_chain_many(tenant, new.audit).await?;
            tx.commit().await.map_err(db_error)?;
            Ok(IssueOutcome::Issued)
        })
    }

    async fn list_agent_tokens(
        &self,
        tenant: TenantId,
        agent: AgentId,
    ) -> StoreResult<Vec<TokenRecord>> {
        on_db!(self.db, pool => {
            let mut tx = pool.begin_read(tenant).await?;
            let rows: Vec<TokenRow> = sqlx::query_as(LIST_AGENT_TOKENS)
                .bind(tenant.to_string())
                .bind(agent.to_string())
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            records(rows)
        })
    }

    async fn list_tokens(
        &self,
        tenant: TenantId,
        agent: Option<AgentId>,
        limit: u32,
    ) -> StoreResult<Vec<TokenRecord>> {
        on_db!(self.db, pool => {
            let mut tx = pool.begin_read(tenant).await?;
            let rows: Vec<TokenRow> = sqlx::query_as(LIST_TOKENS)
                .bind(tenant.to_string())
                .bind(agent.map(|a| a.to_string()))
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            records(rows)
        })
    }

    async fn get_token(&self, tenant: TenantId, id: TokenId) -> StoreResult<Option<TokenRecord>> {
        on_db!(self.db, pool => {
            let mut tx = pool.begin_read(tenant).await?;
            let row: Option<TokenRow> = sqlx::query_as(SELECT_TOKEN)
                .bind(tenant.to_string())
                .bind(id.to_string())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            record(row)
        })
    }

    async fn resolve_snapshots(
        &self,
        tenant: TenantId,
        asked: &[SnapshotAsk<'_>],
        admit: &(dyn for<'t> Fn(usize, &'t TokenRecord) -> bool + Send + Sync),
    ) -> StoreResult<Vec<Snapshot>> {
        if asked.is_empty() {
            return Ok(Vec::new());
        }
        let tenant_text = tenant.to_string();
        let ids: Vec<String> = asked.iter().map(|a| a.id.to_string()).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        on_db!(self.db, pool => {
            let mut tx = pool.begin_read(tenant).await?;
            let mut qb = query_builder(pool, SELECT_TOKENS);
            qb.push_bind(tenant_text.as_str()).push(" AND id IN (");
            let mut list = qb.separated(", ");
            for id in padded(&ids) {
                list.push_bind(id);
            }
            qb.push(")");
            let rows: Vec<TokenRow> = qb.build_query_as().fetch_all(&mut *tx).await.map_err(db_error)?;
            let tokens: Vec<TokenRecord> = records(rows)?;
            let mut answers: Vec<Snapshot> = asked
                .iter()
                .map(|a| (tokens.iter().find(|t| t.id == a.id).cloned(), Vec::new()))
                .collect();
            // The paths of the admitted resolves, each once, in path order.
            let mut wanted: Vec<&SecretPath> = Vec::new();
            let mut admitted = vec![false; asked.len()];
            for (i, (a, (token, _))) in asked.iter().zip(&answers).enumerate() {
                if let Some(token) = token {
                    if !a.paths.is_empty() && admit(i, token) {
                        admitted[i] = true;
                        wanted.extend(a.paths);
                    }
                }
            }
            wanted.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
            wanted.dedup();
            if !wanted.is_empty() {
                let found: Vec<StoredSecret> =
                    records(fetch_current_secrets!(pool, &mut *tx, tenant, padded(&wanted)))?;
                for (i, (_, secrets)) in answers.iter_mut().enumerate() {
                    if admitted[i] {
                        let mine = found.iter().filter(|s| asked[i].paths.contains(&s.record.path));
                        secrets.extend(mine.cloned());
                    }
                }
            }
            tx.commit().await.map_err(db_error)?;
            Ok(answers)
        })
    }

    async fn revoke_token(
        &self,
        tenant: TenantId,
        id: TokenId,
        at: DateTime<Utc>,
        audit: AuditDraft,
    ) -> StoreResult<bool> {
        on_db!(self.db, pool => {
            let mut tx = pool.begin_write(tenant).await?;
            let revoked = sqlx::query(REVOKE_TOKEN)
                .bind(tenant.to_string())
                .bind(id.to_string())
                .bind(micros(at))
                .execute(&mut *tx)
                .await
                .map_err(db_error)?
                .rows_affected();
            if revoked == 0 {
                tx.rollback().await.map_err(db_error)?;
                return Ok(false);
            }
            tx.append_chain(tenant, audit).await?;
            tx.commit().await.map_err(db_error)?;
            Ok(true)
        })
    }

    async fn consume_token_use(
        &self,
        tenant: TenantId,
        id: TokenId,
        now: DateTime<Utc>,
        audit: Vec<AuditDraft>,
    ) -> StoreResult<UseOutcome> {
        let mut outcomes = self
            .consume_token_uses(
                tenant,
                vec![TokenUse {
                    id,
                    now,
                    audit,
                    reservation: None,
                }],
            )
            .await?;
        outcomes.pop().ok_or(StoreError::NotFound)
    }

    async fn consume_token_uses(
        &self,
        tenant: TenantId,
        uses: Vec<TokenUse>,
    ) -> StoreResult<Vec<UseOutcome>> {
        let tenant_text = tenant.to_string();
        // Token rows are locked in id order, so two replicas' batches sharing tokens cannot
        // deadlock; a stable sort keeps two uses of one token in arrival order.
        let mut order: Vec<usize> = (0..uses.len()).collect();
        order.sort_by_key(|&i| uses[i].id.0);
        let mut uses: Vec<Option<TokenUse>> = uses.into_iter().map(Some).collect();
        // Uses without a reservation of a token used once in this batch are counted by one
        // statement (below); the rest, one statement each.
        let mut seen: HashMap<TokenId, usize> = HashMap::new();
        for one in uses.iter().flatten() {
            *seen.entry(one.id).or_default() += 1;
        }
        let grouped: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&i| {
                uses[i]
                    .as_ref()
                    .is_some_and(|u| u.reservation.is_none() && seen[&u.id] == 1)
            })
            .collect();
        on_db!(self.db, pool => {
            let mut tx = pool.begin_write(tenant).await?;
            let mut outcomes = vec![UseOutcome::Refused; uses.len()];
            let mut events: Vec<Vec<AuditDraft>> = vec![Vec::new(); uses.len()];
            let latest = grouped
                .iter()
                .filter_map(|&i| uses[i].as_ref().map(|u| u.now))
                .max();
            if let (true, Some(latest)) = (grouped.len() > 1, latest) {
                // Every condition of CONSUME_USE, checked at the batch's latest `now`: a token
                // that fails it (or expired between its own use and that instant) is left to
                // the statement of its own below, which decides exactly.
                let ids: Vec<String> = grouped
                    .iter()
                    .filter_map(|&i| uses[i].as_ref().map(|u| u.id.to_string()))
                    .collect();
                let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
                let mut qb = query_builder(pool, CONSUME_USES);
                qb.push_bind(tenant_text.as_str()).push(" AND expires_at > ");
                qb.push_bind(micros(latest)).push(" AND id IN (");
                let mut list = qb.separated(", ");
                for id in padded(&ids) {
                    list.push_bind(id);
                }
                qb.push(") RETURNING id, uses");
                let counted: Vec<(String, i64)> =
                    qb.build_query_as().fetch_all(&mut *tx).await.map_err(db_error)?;
                let counted: HashMap<&str, i64> =
                    counted.iter().map(|(id, n)| (id.as_str(), *n)).collect();
                for &i in &grouped {
                    let Some(one) = uses[i].as_ref() else { continue };
                    if let Some(&count) = counted.get(one.id.to_string().as_str()) {
                        if let Some(one) = uses[i].take() {
                            events[i] = one.audit;
                            outcomes[i] = UseOutcome::Counted { uses: count };
                        }
                    }
                }
            }
            for &i in &order {
                let Some(one) = uses[i].take() else { continue };
                let counted: Option<i64> = sqlx::query_scalar(CONSUME_USE)
                    .bind(&tenant_text)
                    .bind(one.id.to_string())
                    .bind(micros(one.now))
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_error)?;
                if let Some(count) = counted {
                    if let Some(reservation) = &one.reservation {
                        reserve!(&mut *tx, &tenant_text, &one, reservation);
                    }
                    events[i] = one.audit;
                    outcomes[i] = UseOutcome::Counted { uses: count };
                }
            }
            if outcomes.iter().all(|o| *o == UseOutcome::Refused) {
                tx.rollback().await.map_err(db_error)?;
                return Ok(outcomes);
            }
            // Last, so the tenant's chain lock is held only for the append and the commit; in
            // arrival order, so the chain's order matches the events' times.
            tx.append_chain_many(tenant, events.into_iter().flatten().collect())
                .await?;
            tx.commit().await.map_err(db_error)?;
            Ok(outcomes)
        })
    }

    async fn release_token_use(
        &self,
        tenant: TenantId,
        reservation: Uuid,
        sidecar: SidecarId,
        now: DateTime<Utc>,
        audit: &(dyn Fn(TokenId) -> AuditDraft + Send + Sync),
    ) -> StoreResult<ReleaseResult> {
        let (tenant_text, id, sidecar) = (
            tenant.to_string(),
            reservation.to_string(),
            sidecar.to_string(),
        );
        let now_us = micros(now);
        on_db!(self.db, pool => {
            let mut tx = pool.begin_write(tenant).await?;
            let token: Option<String> = sqlx::query_scalar(RELEASE_USE)
                .bind(&tenant_text)
                .bind(&id)
                .bind(&sidecar)
                .bind(now_us)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
            if let Some(token) = token {
                let marked = sqlx::query(MARK_RELEASED)
                    .bind(&tenant_text)
                    .bind(&id)
                    .bind(&sidecar)
                    .bind(now_us)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?
                    .rows_affected();
                if marked == 1 {
                    let token: TokenId = parse(&token, "token_reservations.token_id")?;
                    tx.append_chain(tenant, audit(token)).await?;
                    tx.commit().await.map_err(db_error)?;
                    return Ok(ReleaseResult::Released { token });
                }
            }
            // Nothing to give back: say why, from what is committed now.
            tx.rollback().await.map_err(db_error)?;
            let mut tx = pool.begin_read(tenant).await?;
            let row: Option<(Option<i64>, i64)> = sqlx::query_as(SELECT_RESERVATION)
                .bind(&tenant_text)
                .bind(&id)
                .bind(&sidecar)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            Ok(match row {
                None => ReleaseResult::NotFound,
                Some((Some(_), _)) => ReleaseResult::AlreadyReleased,
                Some((None, deadline)) if deadline <= now_us => ReleaseResult::Expired,
                // Unreleased and in time, yet the decrement did not apply: the token row says
                // no use is counted, which a reservation makes impossible. Refuse rather than
                // guess.
                Some((None, _)) => {
                    return Err(StoreError::Corrupt(
                        "a reserved use is not counted on its token".into(),
                    ))
                }
            })
        })
    }
}
