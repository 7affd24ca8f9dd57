//! The storage contract of operator accounts (password, TOTP, lock-out) and human sessions.
//!
//! Same rules as the rest of the store: every method that changes something takes its audit
//! event and writes it in the same transaction, and everything but the login lookup runs
//! confined to one tenant. Nothing stored here is usable without the pepper or the KMS: the
//! password is a peppered bcrypt hash, the TOTP secret is AES-256-GCM [`Sealed`] under a
//! pepper-derived key (`crate::totp::seal`), and session ids and CSRF tokens are
//! HMAC-SHA256(pepper, ·) digests.

use std::fmt;

use agent_secret_core::api::Role;
use agent_secret_core::cipher::Sealed;
use agent_secret_core::ids::{OperatorId, TenantId};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{OperatorRevocation, StoreResult};
use crate::audit::AuditDraft;

/// An operator's login state. `Debug` hides the password hash and the sealed TOTP secret.
#[derive(Clone, PartialEq, Eq)]
pub struct OperatorAccount {
    pub tenant_id: TenantId,
    pub operator_id: OperatorId,
    /// bcrypt over HMAC-SHA256(pepper, password); `None` until a password is set.
    pub password_hash: Option<String>,
    pub password_changed_at: Option<DateTime<Utc>>,
    /// The sealed TOTP secret (`crate::totp::seal`); `None` until enrolled.
    pub totp: Option<Sealed>,
    /// Set once a first code confirmed the enrollment: from then on a code is required.
    pub totp_confirmed_at: Option<DateTime<Utc>>,
    /// Step of the last accepted code (0: none yet).
    pub totp_last_step: i64,
    pub failed_logins: i32,
    pub locked_until: Option<DateTime<Utc>>,
    pub lockouts: i32,
    pub disabled_at: Option<DateTime<Utc>>,
}

impl fmt::Debug for OperatorAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OperatorAccount")
            .field("tenant_id", &self.tenant_id)
            .field("operator_id", &self.operator_id)
            .field("has_password", &self.password_hash.is_some())
            .field("totp_enrolled", &self.totp.is_some())
            .field("totp_confirmed_at", &self.totp_confirmed_at)
            .field("failed_logins", &self.failed_logins)
            .field("locked_until", &self.locked_until)
            .field("disabled_at", &self.disabled_at)
            .finish_non_exhaustive()
    }
}

/// How failed logins lock an account: `max_failures` in a row lock it for `lock_seconds`,
/// doubled for each lock-out in a row since the last success, up to `max_lock_seconds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockoutPolicy {
    pub max_failures: u32,
    pub lock_seconds: u64,
    pub max_lock_seconds: u64,
}

impl LockoutPolicy {
    /// The lock-out that follows `lockouts_before` earlier ones in a row.
    pub fn lock_for(&self, lockouts_before: i32) -> chrono::Duration {
        let doublings = u32::try_from(lockouts_before.clamp(0, 20)).unwrap_or(0);
        let seconds = self
            .lock_seconds
            .saturating_mul(1u64 << doublings)
            .min(self.max_lock_seconds.max(self.lock_seconds));
        chrono::Duration::seconds(i64::try_from(seconds).unwrap_or(i64::MAX / 1_000_000))
    }
}

/// A session to open at login. Holds digests only.
#[derive(Clone, PartialEq, Eq)]
pub struct NewSession {
    pub tenant_id: TenantId,
    pub operator_id: OperatorId,
    /// HMAC-SHA256(pepper, session secret).
    pub id_hash: [u8; 32],
    /// HMAC-SHA256(pepper, CSRF token).
    pub csrf_hash: [u8; 32],
    pub created_at: DateTime<Utc>,
    /// The absolute end.
    pub expires_at: DateTime<Utc>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl fmt::Debug for NewSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewSession")
            .field("tenant_id", &self.tenant_id)
            .field("operator_id", &self.operator_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A live session as [`OperatorAccountStore::touch_session`] found it.
#[derive(Clone, PartialEq, Eq)]
pub struct ActiveSession {
    pub tenant_id: TenantId,
    pub operator_id: OperatorId,
    pub role: Role,
    pub csrf_hash: [u8; 32],
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl fmt::Debug for ActiveSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActiveSession")
            .field("tenant_id", &self.tenant_id)
            .field("operator_id", &self.operator_id)
            .field("role", &self.role)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// What [`OperatorAccountStore::start_session`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionStart {
    Started,
    /// The TOTP step was not after the last accepted one (a replay, or a concurrent login
    /// with the same code won): nothing was written.
    TotpReplayed,
}

#[async_trait]
pub trait OperatorAccountStore {
    /// Read without a tenant (it is how login finds one): the operator who logs in as
    /// `username` in the tenant named (or with the id) `tenant`.
    async fn find_login(
        &self,
        tenant: &str,
        username: &str,
    ) -> StoreResult<Option<(TenantId, OperatorId)>>;
    async fn get_account(
        &self,
        tenant: TenantId,
        operator: OperatorId,
    ) -> StoreResult<Option<OperatorAccount>>;
    /// Sets the password (creating the account and its login entry on first use), clears the
    /// lock-out and revokes every open session of the operator. Returns the sessions revoked.
    /// `NotFound` if the operator does not exist; `Conflict` if another operator of the
    /// tenant already logs in under the same name.
    async fn set_password(
        &self,
        tenant: TenantId,
        operator: OperatorId,
        password_hash: &str,
        at: DateTime<Utc>,
        audit: AuditDraft,
    ) -> StoreResult<u64>;
    /// Stores a new, unconfirmed TOTP secret (replacing any earlier one, whose codes stop
    /// working). `NotFound` if the operator has no account yet (no password).
    async fn set_totp(
        &self,
        tenant: TenantId,
        operator: OperatorId,
        totp: &Sealed,
        at: DateTime<Utc>,
        audit: AuditDraft,
    ) -> StoreResult<()>;
    /// Confirms the enrollment with a first code of `step`, only if a secret is stored and
    /// `step` is after the last accepted one. `Ok(false)`: nothing written.
    async fn confirm_totp(
        &self,
        tenant: TenantId,
        operator: OperatorId,
        step: i64,
        at: DateTime<Utc>,
        audit: AuditDraft,
    ) -> StoreResult<bool>;
    /// Counts a failed login (atomically: replicas share the count) with its `auth.failed`
    /// event; at `policy.max_failures` the account is locked. Returns the lock-out end if
    /// this failure locked it.
    async fn record_login_failure(
        &self,
        tenant: TenantId,
        operator: OperatorId,
        now: DateTime<Utc>,
        policy: LockoutPolicy,
        audit: AuditDraft,
    ) -> StoreResult<Option<DateTime<Utc>>>;
    /// Opens a session after a successful login, in one transaction: the TOTP step (when a
    /// code was checked) is recorded only if after the last one, the failure count is reset,
    /// the session inserted and `audit` appended.
    async fn start_session(
        &self,
        session: &NewSession,
        totp_step: Option<i64>,
        audit: AuditDraft,
    ) -> StoreResult<SessionStart>;
    /// The session with this id hash if it is unrevoked, not past `expires_at`, seen after
    /// `idle_cutoff`, and its operator is neither revoked nor disabled; its `last_seen_at`
    /// becomes `now`. Not audited (it is a read that keeps the session alive).
    async fn touch_session(
        &self,
        tenant: TenantId,
        id_hash: &[u8; 32],
        now: DateTime<Utc>,
        idle_cutoff: DateTime<Utc>,
    ) -> StoreResult<Option<ActiveSession>>;
    /// What [`OperatorAccountStore::touch_session`] finds, leaving `last_seen_at` alone:
    /// for requests the browser makes on its own (the live updates), which must not keep an
    /// idle session alive.
    async fn peek_session(
        &self,
        tenant: TenantId,
        id_hash: &[u8; 32],
        now: DateTime<Utc>,
        idle_cutoff: DateTime<Utc>,
    ) -> StoreResult<Option<ActiveSession>>;
    /// Revokes one session (logout). `Ok(false)` if unknown or already revoked.
    async fn revoke_session(
        &self,
        tenant: TenantId,
        id_hash: &[u8; 32],
        at: DateTime<Utc>,
        audit: AuditDraft,
    ) -> StoreResult<bool>;
    /// Disables the operator for good, in one transaction: the account (created if need be)
    /// gets `disabled_at`, the operator's API token is revoked and every session revoked.
    /// Refused like [`super::OperatorStore::revoke_operator`] for the last active admin.
    async fn disable_operator(
        &self,
        tenant: TenantId,
        operator: OperatorId,
        at: DateTime<Utc>,
        audit: AuditDraft,
    ) -> StoreResult<OperatorRevocation>;
}
