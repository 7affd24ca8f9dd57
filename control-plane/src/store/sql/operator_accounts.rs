//! Operator accounts and human sessions on both backends (see `store::operator_accounts`).
//!
//! Every mutating method appends its audit event first: the append takes the tenant's chain
//! row lock, so account and session updates of one tenant are serialised behind it in the
//! same order everywhere (no lock-order deadlock on PostgreSQL), and the event commits or
//! rolls back with the change.

use agent_secret_core::cipher::Sealed;
use agent_secret_core::ids::{OperatorId, TenantId};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::audit::AuditChain;
use super::rows::{hash32, micros, parse, time, OperatorAccountRow};
use super::transaction::{db_error, TenantPool};
use super::SqlStore;
use crate::audit::AuditDraft;
use crate::db::on_db;
use crate::store::{
    ActiveSession, LockoutPolicy, NewSession, OperatorAccount, OperatorAccountStore,
    OperatorRevocation, SessionStart, StoreError, StoreResult,
};

const FIND_LOGIN_BY_NAME: &str = "SELECT tenant_id, operator_id FROM operator_logins \
     WHERE tenant_name = $1 AND username = $2";
const FIND_LOGIN_BY_ID: &str = "SELECT tenant_id, operator_id FROM operator_logins \
     WHERE tenant_id = $1 AND username = $2";
const SELECT_ACCOUNT: &str = "SELECT tenant_id, operator_id, password_hash, \
     password_changed_at, totp_nonce, totp_ciphertext, totp_confirmed_at, totp_last_step, \
     failed_logins, locked_until, lockouts, disabled_at FROM operator_accounts WHERE tenant_id = $1 AND operator_id = $2";
const OPERATOR_EXISTS: &str = "SELECT id FROM operators WHERE tenant_id = $1 AND id = $2";
const UPSERT_PASSWORD: &str = "INSERT INTO operator_accounts \
     (operator_id, tenant_id, password_hash, password_changed_at, created_at) \
     VALUES ($2, $1, $3, $4, $4) ON CONFLICT (operator_id) DO UPDATE SET \
     password_hash = excluded.password_hash, password_changed_at = excluded.password_changed_at, \
     failed_logins = 0, locked_until = NULL, lockouts = 0";
/// The login entry, on first use. The `WHERE` also resolves SQLite's parsing ambiguity of an
/// upsert after a join.
const INDEX_LOGIN: &str = "INSERT INTO operator_logins \
     (tenant_name, username, tenant_id, operator_id) \
     SELECT t.name, o.name, o.tenant_id, o.id FROM operators o JOIN tenants t ON t.id = o.tenant_id \
     WHERE o.tenant_id = $1 AND o.id = $2 ON CONFLICT (operator_id) DO NOTHING";
const REVOKE_OPERATOR_SESSIONS: &str = "UPDATE operator_sessions SET revoked_at = $3 \
     WHERE tenant_id = $1 AND operator_id = $2 AND revoked_at IS NULL";
const SET_TOTP: &str = "UPDATE operator_accounts SET totp_nonce = $3, totp_ciphertext = $4, \
     totp_confirmed_at = NULL WHERE tenant_id = $1 AND operator_id = $2";
const CONFIRM_TOTP: &str = "UPDATE operator_accounts SET totp_confirmed_at = $4, \
     totp_last_step = $3 WHERE tenant_id = $1 AND operator_id = $2 \
     AND totp_ciphertext IS NOT NULL AND totp_last_step < $3";
const COUNT_FAILURE: &str = "UPDATE operator_accounts SET failed_logins = failed_logins + 1 \
     WHERE tenant_id = $1 AND operator_id = $2 RETURNING failed_logins, lockouts";
const LOCK_ACCOUNT: &str = "UPDATE operator_accounts SET failed_logins = 0, \
     lockouts = lockouts + 1, locked_until = $3 WHERE tenant_id = $1 AND operator_id = $2";
/// RFC 6238 §5.2 as one conditional write: a step not after the last accepted one changes
/// nothing, however many replicas try it at once.
const ACCEPT_TOTP_STEP: &str = "UPDATE operator_accounts SET totp_last_step = $3, \
     failed_logins = 0, lockouts = 0, locked_until = NULL \
     WHERE tenant_id = $1 AND operator_id = $2 AND totp_last_step < $3";
const RESET_FAILURES: &str = "UPDATE operator_accounts SET failed_logins = 0, lockouts = 0, \
     locked_until = NULL WHERE tenant_id = $1 AND operator_id = $2";
const INSERT_SESSION: &str = "INSERT INTO operator_sessions (id_hash, tenant_id, operator_id, \
     csrf_hash, created_at, last_seen_at, expires_at, ip, user_agent) \
     VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8)";
/// Validates and refreshes in one statement: only a live session of a live operator is
/// touched. `$4` is the idle cut-off (now minus the idle timeout).
/// `$5` is the new `last_seen_at` (`now` to keep the session alive, 0 to only look).
const TOUCH_SESSION: &str = "UPDATE operator_sessions SET last_seen_at = \
     CASE WHEN $5 > last_seen_at THEN $5 ELSE last_seen_at END \
     WHERE tenant_id = $1 AND id_hash = $2 AND revoked_at IS NULL AND expires_at > $3 \
     AND last_seen_at > $4 AND EXISTS (SELECT 1 FROM operators o \
         JOIN operator_accounts a ON a.operator_id = o.id \
         WHERE o.tenant_id = $1 AND o.id = operator_sessions.operator_id \
         AND o.revoked_at IS NULL AND a.disabled_at IS NULL) \
     RETURNING operator_id, csrf_hash, created_at, expires_at";
const SELECT_ROLE: &str = "SELECT role FROM operators WHERE tenant_id = $1 AND id = $2";
const REVOKE_SESSION: &str = "UPDATE operator_sessions SET revoked_at = $3 \
     WHERE tenant_id = $1 AND id_hash = $2 AND revoked_at IS NULL";
/// Marks the account disabled (creating it if need be) unless the operator is the tenant's
/// last active admin; serialised behind the chain lock like `REVOKE_OPERATOR`.
const DISABLE_ACCOUNT: &str = "INSERT INTO operator_accounts \
     (operator_id, tenant_id, created_at, disabled_at) \
     SELECT o.id, o.tenant_id, $3, $3 FROM operators o WHERE o.tenant_id = $1 AND o.id = $2 \
     AND (o.role <> 'admin' OR o.revoked_at IS NOT NULL OR EXISTS (SELECT 1 FROM operators x \
          WHERE x.tenant_id = $1 AND x.id <> $2 AND x.role = 'admin' AND x.revoked_at IS NULL)) \
     ON CONFLICT (operator_id) DO UPDATE SET disabled_at = excluded.disabled_at \
     WHERE operator_accounts.disabled_at IS NULL";
const REVOKE_OPERATOR_TOKEN: &str = "UPDATE operators SET revoked_at = $3 \
     WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL";
const SELECT_DISABLE_STATE: &str = "SELECT a.disabled_at FROM operators o \
     LEFT JOIN operator_accounts a ON a.operator_id = o.id WHERE o.tenant_id = $1 AND o.id = $2";

#[async_trait]
impl OperatorAccountStore for SqlStore {
    async fn find_login(
        &self,
        tenant: &str,
        username: &str,
    ) -> StoreResult<Option<(TenantId, OperatorId)>> {
        let by_id = tenant
            .parse::<uuid::Uuid>()
            .map(|id| id.hyphenated().to_string());
        let (sql, key) = match by_id {
            Ok(id) => (FIND_LOGIN_BY_ID, id),
            Err(_) => (FIND_LOGIN_BY_NAME, tenant.to_owned()),
        };
        on_db!(self.db, pool => {
            let row: Option<(String, String)> = sqlx::query_as(sql)
                .bind(&key)
                .bind(username)
                .fetch_optional(pool)
                .await
                .map_err(db_error)?;
            row.map(|(t, o)| {
                Ok((parse(&t, "operator_logins.tenant_id")?, parse(&o, "operator_logins.operator_id")?))
            })
            .transpose()
        })
    }

    async fn get_account(
        &self,
        tenant: TenantId,
        operator: OperatorId,
    ) -> StoreResult<Option<OperatorAccount>> {
        on_db!(self.db, pool => {
            let mut tx = pool.begin_read(tenant).await?;
            let row: Option<OperatorAccountRow> = sqlx::query_as(SELECT_ACCOUNT)
                .bind(tenant.to_string())
                .bind(operator.to_string())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            row.map(OperatorAccount::try_from).transpose()
        })
    }

    async fn set_password(
        &self,
        tenant: TenantId,
        operator: OperatorId,
        password_hash: &str,
        at: DateTime<Utc>,
        audit: AuditDraft,
    ) -> StoreResult<u64> {
        let (t, o) = (tenant.to_string(), operator.to_string());
        on_db!(self.db, pool => {
            let mut tx = pool.begin_write(tenant).await?;
            tx.append_chain(tenant, audit).await?;
            let exists: Option<(String,)> = sqlx::query_as(OPERATOR_EXISTS)
                .bind(&t).bind(&o).fetch_optional(&mut *tx).await.map_err(db_error)?;
            if exists.is_none() {
                tx.rollback().await.map_err(db_error)?;
                return Err(StoreError::NotFound);
            }
            sqlx::query(UPSERT_PASSWORD)
                .bind(&t).bind(&o).bind(password_hash).bind(micros(at))
                .execute(&mut *tx).await.map_err(db_error)?;
            sqlx::query(INDEX_LOGIN)
                .bind(&t).bind(&o)
                .execute(&mut *tx).await.map_err(db_error)?;
            let revoked = sqlx::query(REVOKE_OPERATOR_SESSIONS)
                .bind(&t).bind(&o).bind(micros(at))
                .execute(&mut *tx).await.map_err(db_error)?
                .rows_affected();
            tx.commit().await.map_err(db_error)?;
            Ok(revoked)
        })
    }

    async fn set_totp(
        &self,
        tenant: TenantId,
        operator: OperatorId,
        totp: &Sealed,
        _at: DateTime<Utc>,
        audit: AuditDraft,
    ) -> StoreResult<()> {
        on_db!(self.db, pool => {
            let mut tx = pool.begin_write(tenant).await?;
            tx.append_chain(tenant, audit).await?;
            let updated = sqlx::query(SET_TOTP)
                .bind(tenant.to_string())
                .bind(operator.to_string())
                .bind(&totp.nonce)
                .bind(&totp.ciphertext)
                .execute(&mut *tx).await.map_err(db_error)?
                .rows_affected();
            if updated != 1 {
                tx.rollback().await.map_err(db_error)?;
                return Err(StoreError::NotFound);
            }
            tx.commit().await.map_err(db_error)
        })
    }

    async fn confirm_totp(
        &self,
        tenant: TenantId,
        operator: OperatorId,
        step: i64,
        at: DateTime<Utc>,
        audit: AuditDraft,
    ) -> StoreResult<bool> {
        on_db!(self.db, pool => {
            let mut tx = pool.begin_write(tenant).await?;
            tx.append_chain(tenant, audit).await?;
            let updated = sqlx::query(CONFIRM_TOTP)
                .bind(tenant.to_string())
                .bind(operator.to_string())
                .bind(step)
                .bind(micros(at))
                .execute(&mut *tx).await.map_err(db_error)?
                .rows_affected();
            if updated != 1 {
                tx.rollback().await.map_err(db_error)?;
                return Ok(false);
            }
            tx.commit().await.map_err(db_error)?;
            Ok(true)
        })
    }

    async fn record_login_failure(
        &self,
        tenant: TenantId,
        operator: OperatorId,
        now: DateTime<Utc>,
        policy: LockoutPolicy,
        audit: AuditDraft,
    ) -> StoreResult<Option<DateTime<Utc>>> {
        let (t, o) = (tenant.to_string(), operator.to_string());
        on_db!(self.db, pool => {
            let mut tx = pool.begin_write(tenant).await?;
            tx.append_chain(tenant, audit).await?;
            let counted: Option<(i32, i32)> = sqlx::query_as(COUNT_FAILURE)
                .bind(&t).bind(&o).fetch_optional(&mut *tx).await.map_err(db_error)?;
            let mut locked = None;
            if let Some((failures, lockouts)) = counted {
                if u32::try_from(failures).unwrap_or(0) >= policy.max_failures.max(1) {
                    let until = now + policy.lock_for(lockouts);
                    sqlx::query(LOCK_ACCOUNT)
                        .bind(&t).bind(&o).bind(micros(until))
                        .execute(&mut *tx).await.map_err(db_error)?;
                    locked = Some(until);
                }
            }
            tx.commit().await.map_err(db_error)?;
            Ok(locked)
        })
    }

    async fn start_session(
        &self,
        session: &NewSession,
        totp_step: Option<i64>,
        audit: AuditDraft,
    ) -> StoreResult<SessionStart> {
        let tenant = session.tenant_id;
        let (t, o) = (tenant.to_string(), session.operator_id.to_string());
        on_db!(self.db, pool => {
            let mut tx = pool.begin_write(tenant).await?;
            tx.append_chain(tenant, audit).await?;
            let accepted = match totp_step {
                Some(step) => sqlx::query(ACCEPT_TOTP_STEP).bind(&t).bind(&o).bind(step),
                None => sqlx::query(RESET_FAILURES).bind(&t).bind(&o),
            }
            .execute(&mut *tx).await.map_err(db_error)?
            .rows_affected();
            if accepted != 1 {
                tx.rollback().await.map_err(db_error)?;
                return Ok(SessionStart::TotpReplayed);
            }
            sqlx::query(INSERT_SESSION)
                .bind(session.id_hash.to_vec())
                .bind(&t)
                .bind(&o)
                .bind(session.csrf_hash.to_vec())
                .bind(micros(session.created_at))
                .bind(micros(session.expires_at))
                .bind(session.ip.as_deref())
                .bind(session.user_agent.as_deref())
                .execute(&mut *tx).await.map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            Ok(SessionStart::Started)
        })
    }

    async fn touch_session(
        &self,
        tenant: TenantId,
        id_hash: &[u8; 32],
        now: DateTime<Utc>,
        idle_cutoff: DateTime<Utc>,
    ) -> StoreResult<Option<ActiveSession>> {
        self.live_session(tenant, id_hash, now, idle_cutoff, true)
            .await
    }

    async fn peek_session(
        &self,
        tenant: TenantId,
        id_hash: &[u8; 32],
        now: DateTime<Utc>,
        idle_cutoff: DateTime<Utc>,
    ) -> StoreResult<Option<ActiveSession>> {
        self.live_session(tenant, id_hash, now, idle_cutoff, false)
            .await
    }

    async fn revoke_session(
        &self,
        tenant: TenantId,
        id_hash: &[u8; 32],
        at: DateTime<Utc>,
        audit: AuditDraft,
    ) -> StoreResult<bool> {
        on_db!(self.db, pool => {
            let mut tx = pool.begin_write(tenant).await?;
            tx.append_chain(tenant, audit).await?;
            let revoked = sqlx::query(REVOKE_SESSION)
                .bind(tenant.to_string())
                .bind(id_hash.to_vec())
                .bind(micros(at))
                .execute(&mut *tx).await.map_err(db_error)?
                .rows_affected();
            if revoked != 1 {
                tx.rollback().await.map_err(db_error)?;
                return Ok(false);
            }
            tx.commit().await.map_err(db_error)?;
            Ok(true)
        })
    }

    async fn disable_operator(
        &self,
        tenant: TenantId,
        operator: OperatorId,
        at: DateTime<Utc>,
        audit: AuditDraft,
    ) -> StoreResult<OperatorRevocation> {
        let (t, o) = (tenant.to_string(), operator.to_string());
        on_db!(self.db, pool => {
            let mut tx = pool.begin_write(tenant).await?;
            tx.append_chain(tenant, audit).await?;
            let disabled = sqlx::query(DISABLE_ACCOUNT)
                .bind(&t).bind(&o).bind(micros(at))
                .execute(&mut *tx).await.map_err(db_error)?
                .rows_affected();
            if disabled == 1 {
                for sql in [REVOKE_OPERATOR_TOKEN, REVOKE_OPERATOR_SESSIONS] {
                    sqlx::query(sql)
                        .bind(&t).bind(&o).bind(micros(at))
                        .execute(&mut *tx).await.map_err(db_error)?;
                }
                tx.commit().await.map_err(db_error)?;
                return Ok(OperatorRevocation::Revoked);
            }
            let state: Option<(Option<i64>,)> = sqlx::query_as(SELECT_DISABLE_STATE)
                .bind(&t).bind(&o).fetch_optional(&mut *tx).await.map_err(db_error)?;
            tx.rollback().await.map_err(db_error)?;
            Ok(match state {
                None => OperatorRevocation::NotFound,
                Some((Some(_),)) => OperatorRevocation::AlreadyRevoked,
                Some((None,)) => OperatorRevocation::LastAdmin,
            })
        })
    }
}

impl SqlStore {
    /// [`OperatorAccountStore::touch_session`], or with `extend` false the same checks
    /// without moving `last_seen_at` (a live view must not keep an idle session alive).
    async fn live_session(
        &self,
        tenant: TenantId,
        id_hash: &[u8; 32],
        now: DateTime<Utc>,
        idle_cutoff: DateTime<Utc>,
        extend: bool,
    ) -> StoreResult<Option<ActiveSession>> {
        let t = tenant.to_string();

        on_db!(self.db, pool => {
            let mut tx = pool.begin_write(tenant).await?;
            let touched: Option<(String, Vec<u8>, i64, i64)> = sqlx::query_as(TOUCH_SESSION)
                .bind(&t)
                .bind(id_hash.to_vec())
                .bind(micros(now))
                .bind(micros(idle_cutoff))
                .bind(if extend { micros(now) } else { 0 })
                .fetch_optional(&mut *tx).await.map_err(db_error)?;
            let Some((operator, csrf_hash, created_at, expires_at)) = touched else {
                tx.rollback().await.map_err(db_error)?;
                return Ok(None);
            };
            let role: Option<(String,)> = sqlx::query_as(SELECT_ROLE)
                .bind(&t).bind(&operator).fetch_optional(&mut *tx).await.map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            let Some((role,)) = role else { return Ok(None) };
            Ok(Some(ActiveSession {
                tenant_id: tenant,
                operator_id: parse(&operator, "operator_sessions.operator_id")?,
                role: agent_secret_core::api::Role::parse(&role)
                    .ok_or_else(|| StoreError::Corrupt("operators.role does not decode".into()))?,
                csrf_hash: hash32(csrf_hash, "operator_sessions.csrf_hash")?,
                created_at: time(created_at, "operator_sessions.created_at")?,
                expires_at: time(expires_at, "operator_sessions.expires_at")?,
            }))
        })
    }
}
