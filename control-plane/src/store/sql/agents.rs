//! Agents, agent-key rotation and agent revocation.
//!
//! An agent's credential-index row is keyed by its current `key_id`, not its id, so rotation
//! swaps the index row: the old key stops resolving at the same commit that stores the new
//! hash and revokes every token the old key could have obtained. Revocation removes the index
//! row for good and sets `revoked_at`, which every rotation checks, so a revoked agent cannot
//! be given a working key again.

use agent_secret_core::credential::CredentialKind;
use agent_secret_core::ids::{AgentId, TenantId, TokenId};
use agent_secret_core::scope::Scope;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::audit::AuditChain;
use super::credential_index::IndexCredential;
use super::rows::{list_to_json, micros, opt_micros, record, records, AgentRow, TokenRow};
use super::transaction::{db_error, TenantPool};
use super::SqlStore;
use crate::audit::AuditDraft;
use crate::db::on_db;
use crate::store::{AgentRecord, AgentStore, CeilingChange, StoreError, StoreResult, TokenRecord};

const INSERT_AGENT: &str = "INSERT INTO agents \
     (id, tenant_id, name, trust_tier, key_id, key_hash, created_at, key_rotated_at, ceiling, \
      created_by) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
const SELECT_AGENT: &str = "SELECT id, tenant_id, name, trust_tier, key_id, key_hash, \
     created_at, key_rotated_at, revoked_at, ceiling, created_by \
     FROM agents WHERE tenant_id = $1 AND id = $2";
const SELECT_AGENT_BY_KEY: &str = "SELECT id, tenant_id, name, trust_tier, key_id, key_hash, \
     created_at, key_rotated_at, revoked_at, ceiling, created_by \
     FROM agents WHERE tenant_id = $1 AND key_id = $2";
const LIST_AGENTS: &str = "SELECT id, tenant_id, name, trust_tier, key_id, key_hash, \
     created_at, key_rotated_at, revoked_at, ceiling, created_by \
     FROM agents WHERE tenant_id = $1 ORDER BY created_at, id";
const SET_TIER: &str = "UPDATE agents SET trust_tier = $3 WHERE tenant_id = $1 AND id = $2";
/// Locks the agent row (issuance locks it too, so a narrowing and an issue serialise).
const SET_CEILING: &str = "UPDATE agents SET ceiling = $3 WHERE tenant_id = $1 AND id = $2 \
     RETURNING revoked_at";
const SELECT_LIVE_TOKENS: &str = "SELECT id, tenant_id, agent_id, scopes, key_hash, status, \
     approved_sensitivity, ip_allowlist, max_uses, uses, expires_at, created_at, revoked_at \
     FROM tokens WHERE tenant_id = $1 AND agent_id = $2 AND revoked_at IS NULL \
     ORDER BY created_at, id";
const REVOKE_ONE_TOKEN: &str = "UPDATE tokens SET status = 'revoked', revoked_at = $3 \
     WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL";
const SELECT_KEY_ID: &str =
    "SELECT key_id, revoked_at FROM agents WHERE tenant_id = $1 AND id = $2";
/// Guarded by the key id read in the same transaction: a concurrent rotation makes it miss.
/// A revoked agent is never rotated.
const ROTATE_KEY: &str = "UPDATE agents SET key_id = $4, key_hash = $5, key_rotated_at = $6 \
     WHERE tenant_id = $1 AND id = $2 AND key_id = $3 AND revoked_at IS NULL";
const REVOKE_AGENT: &str = "UPDATE agents SET revoked_at = $3 \
     WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL";
/// The tenant filter is deliberate: credential_index is not row-level secured.
const DELETE_CREDENTIAL: &str = "DELETE FROM credential_index WHERE id = $1 AND tenant_id = $2";
const REVOKE_AGENT_TOKENS: &str = "UPDATE tokens SET status = 'revoked', revoked_at = $3 \
     WHERE tenant_id = $1 AND agent_id = $2 AND revoked_at IS NULL";
/// As [`REVOKE_AGENT_TOKENS`], naming each token revoked (for its audit event).
const REVOKE_AGENT_TOKENS_RETURNING: &str = "UPDATE tokens \
     SET status = 'revoked', revoked_at = $3 \
     WHERE tenant_id = $1 AND agent_id = $2 AND revoked_at IS NULL RETURNING id";

#[async_trait]
impl AgentStore for SqlStore {
    async fn create_agent(&self, agent: &AgentRecord, audit: AuditDraft) -> StoreResult<()> {
        let tenant = agent.tenant_id;
        let key_id = agent.key_id.hyphenated().to_string();
        on_db!(self.db, pool => {
            let mut tx = pool.begin_write(tenant).await?;
            sqlx::query(INSERT_AGENT)
                .bind(agent.id.to_string())
                .bind(tenant.to_string())
                .bind(&agent.name)
                .bind(agent.trust_tier)
                .bind(&key_id)
                .bind(&agent.key_hash)
                .bind(micros(agent.created_at))
                .bind(opt_micros(agent.key_rotated_at))
                .bind(list_to_json(&agent.ceiling))
                .bind(agent.created_by.map(|o| o.to_string()))
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.index_credential(&key_id, &tenant.to_string(), CredentialKind::Agent)
                .await?;
            tx.append_chain(tenant, audit).await?;
            tx.commit().await.map_err(db_error)
        })
    }

    async fn get_agent(&self, tenant: TenantId, id: AgentId) -> StoreResult<Option<AgentRecord>> {
        on_db!(self.db, pool => {
            let mut tx = pool.begin_read(tenant).await?;
            let row: Option<AgentRow> = sqlx::query_as(SELECT_AGENT)
                .bind(tenant.to_string())
                .bind(id.to_string())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            record(row)
        })
    }

    async fn get_agent_by_key(
        &self,
        tenant: TenantId,
        key_id: Uuid,
    ) -> StoreResult<Option<AgentRecord>> {
        on_db!(self.db, pool => {
            let mut tx = pool.begin_read(tenant).await?;
            let row: Option<AgentRow> = sqlx::query_as(SELECT_AGENT_BY_KEY)
                .bind(tenant.to_string())
                .bind(key_id.hyphenated().to_string())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            record(row)
        })
    }

    async fn list_agents(&self, tenant: TenantId) -> StoreResult<Vec<AgentRecord>> {
        on_db!(self.db, pool => {
            let mut tx = pool.begin_read(tenant).await?;
            let rows: Vec<AgentRow> = sqlx::query_as(LIST_AGENTS)
                .bind(tenant.to_string())
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            records(rows)
        })
    }

    async fn rotate_agent_key(
        &self,
        tenant: TenantId,
        id: AgentId,
        new_key_id: Uuid,
        new_key_hash: Vec<u8>,
        at: DateTime<Utc>,
        audit: AuditDraft,
    ) -> StoreResult<u64> {
        let (tenant_text, agent_text) = (tenant.to_string(), id.to_string());
        let new_key_id = new_key_id.hyphenated().to_string();
        on_db!(self.db, pool => {
            let mut tx = pool.begin_write(tenant).await?;
            let (old_key_id, revoked_at): (String, Option<i64>) = sqlx::query_as(SELECT_KEY_ID)
                .bind(&tenant_text)
                .bind(&agent_text)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?
                .ok_or(StoreError::NotFound)?;
            if revoked_at.is_some() {
                return Err(revoked());
            }
            let rotated = sqlx::query(ROTATE_KEY)
                .bind(&tenant_text)
                .bind(&agent_text)
                .bind(&old_key_id)
                .bind(&new_key_id)
                .bind(&new_key_hash)
                .bind(micros(at))
                .execute(&mut *tx)
                .await
                .map_err(db_error)?
                .rows_affected();
            if rotated != 1 {
                return Err(StoreError::Conflict("agent key was rotated concurrently".into()));
            }
            sqlx::query(DELETE_CREDENTIAL)
                .bind(&old_key_id)
                .bind(&tenant_text)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.index_credential(&new_key_id, &tenant_text, CredentialKind::Agent)
                .await?;
            let revoked = sqlx::query(REVOKE_AGENT_TOKENS)
                .bind(&tenant_text)
                .bind(&agent_text)
                .bind(micros(at))
                .execute(&mut *tx)
                .await
                .map_err(db_error)?
                .rows_affected();
            tx.append_chain(tenant, audit).await?;
            tx.commit().await.map_err(db_error)?;
            Ok(revoked)
        })
    }

    async fn revoke_agent(
        &self,
        tenant: TenantId,
        id: AgentId,
        at: DateTime<Utc>,
        audit: AuditDraft,
        token_audit: AuditDraft,
    ) -> StoreResult<u64> {
        let (tenant_text, agent_text) = (tenant.to_string(), id.to_string());
        on_db!(self.db, pool => {
            let mut tx = pool.begin_write(tenant).await?;
            let (key_id, revoked_at): (String, Option<i64>) = sqlx::query_as(SELECT_KEY_ID)
                .bind(&tenant_text)
                .bind(&agent_text)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?
                .ok_or(StoreError::NotFound)?;
            if revoked_at.is_some() {
                return Err(revoked());
            }
            let marked = sqlx::query(REVOKE_AGENT)
                .bind(&tenant_text)
                .bind(&agent_text)
                .bind(micros(at))
                .execute(&mut *tx)
                .await
                .map_err(db_error)?
                .rows_affected();
            if marked != 1 {
                return Err(revoked());
            }
            sqlx::query(DELETE_CREDENTIAL)
                .bind(&key_id)
                .bind(&tenant_text)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            let tokens: Vec<String> = sqlx::query_scalar(REVOKE_AGENT_TOKENS_RETURNING)
                .bind(&tenant_text)
                .bind(&agent_text)
                .bind(micros(at))
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error)?;
            let mut drafts = Vec::with_capacity(tokens.len() + 1);
            drafts.push(audit);
            drafts.extend(tokens.iter().map(|token| {
                let mut draft = token_audit.clone();
                draft.reason = Some(match &token_audit.reason {
                    Some(why) => format!("token {token}; {why}"),
                    None => format!("token {token}"),
                });
                draft
            }));
            tx.append_chain_many(tenant, drafts).await?;
            tx.commit().await.map_err(db_error)?;
            Ok(tokens.len() as u64)
        })
    }

    async fn set_trust_tier(
        &self,
        tenant: TenantId,
        id: AgentId,
        tier: i32,
        audit: AuditDraft,
    ) -> StoreResult<bool> {
        on_db!(self.db, pool => {
            let mut tx = pool.begin_write(tenant).await?;
            let updated = sqlx::query(SET_TIER)
                .bind(tenant.to_string())
                .bind(id.to_string())
                .bind(tier)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?
                .rows_affected();
            if updated == 0 {
                return Ok(false);
            }
            tx.append_chain(tenant, audit).await?;
            tx.commit().await.map_err(db_error)?;
            Ok(true)
        })
    }

    async fn set_ceiling(
        &self,
        tenant: TenantId,
        id: AgentId,
        ceiling: &[Scope],
        audit: AuditDraft,
        outside: &(dyn for<'s> Fn(&'s [Scope]) -> bool + Send + Sync),
        token_audit: &(dyn Fn(TokenId) -> AuditDraft + Send + Sync),
    ) -> StoreResult<CeilingChange> {
        let (tenant_text, agent_text) = (tenant.to_string(), id.to_string());
        on_db!(self.db, pool => {
            let mut tx = pool.begin_write(tenant).await?;
            let locked: Option<(Option<i64>,)> = sqlx::query_as(SET_CEILING)
                .bind(&tenant_text)
                .bind(&agent_text)
                .bind(list_to_json(ceiling))
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
            match locked {
                None => return Ok(CeilingChange::NotFound),
                // Dropping the transaction rolls the update back.
                Some((Some(_),)) => return Ok(CeilingChange::Revoked),
                Some((None,)) => {}
            }
            let rows: Vec<TokenRow> = sqlx::query_as(SELECT_LIVE_TOKENS)
                .bind(&tenant_text)
                .bind(&agent_text)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error)?;
            let tokens: Vec<TokenRecord> = records(rows)?;
            let mut doomed: Vec<TokenId> = Vec::new();
            for token in tokens {
                if outside(token.scopes.as_slice()) {
                    doomed.push(token.id);
                }
            }
            let now = micros(audit.occurred_at);
            let mut revoked = Vec::new();
            for token in doomed {
                sqlx::query(REVOKE_ONE_TOKEN)
                    .bind(&tenant_text)
                    .bind(token.to_string())
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                revoked.push(token);
            }
            let mut drafts = vec![audit];
            drafts.extend(revoked.iter().map(|t| token_audit(*t)));
            tx.append_chain_many(tenant, drafts).await?;
            tx.commit().await.map_err(db_error)?;
            Ok(CeilingChange::Set { revoked })
        })
    }
}

fn revoked() -> StoreError {
    StoreError::Conflict("the agent is revoked".into())
}
