//! Human operators: password + TOTP logins, and the server-side sessions they open.
//!
//! Over 400 lines: login is one sequence of checks (address, account, lock-out, password,
//! second factor, replay) whose order is the security argument; splitting it would scatter it.
//!
//! A session is a 256-bit secret in a `__Host-` cookie (`{tenant id}.{secret}`: the tenant id
//! places the lookup under row-level security, the secret is what authenticates). The database
//! holds only HMAC-SHA256(pepper, secret) and the HMAC of the session's CSRF token, which every
//! unsafe request must echo in `X-CSRF-Token` (compared in constant time). Sessions end after
//! `idle_timeout` unused and `absolute_timeout` after login, on logout, on a password change,
//! and when the operator is revoked or disabled (checked on every use).
//!
//! Logins are throttled twice: per client address in memory (`limits::auth_failures`, shared
//! with every credential check) and per account in the database (`failed_logins`,
//! `locked_until`), so a guesser spreading over replicas or addresses still locks the account.
//! Every failure against a known account writes `auth.failed` with a reason naming the factor
//! (`bad_password`, `bad_totp`, `totp_replayed`, ...), never what was typed. An unknown user
//! name costs the same bcrypt verification as a known one. The dashboard's self-service TOTP
//! enrollment proves the password through the very same checks
//! ([`verify_password_for_enrollment`]), so its failures count toward the same throttles.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use agent_secret_core::api::{ErrorCode, LoginRequest, Role, SessionInfo};
use agent_secret_core::cipher::Sealed;
use agent_secret_core::ids::{OperatorId, TenantId};
use agent_secret_core::secret::SecretString;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use rand::RngCore as _;
use subtle::ConstantTimeEq as _;

use super::principal::OperatorPrincipal;
use super::{App, RequestContext, ServiceError, ServiceResult};
use crate::audit::{Actor, AuditDraft, AuditEventType};
use crate::password::{PasswordHasher, PasswordRules};
use crate::store::{LockoutPolicy, NewSession, OperatorAccount, SessionStart};
use crate::totp::seal::TotpSealKey;
use crate::totp::{self, TotpRejected, TotpSecret};

/// The session cookie's name. `__Host-` makes browsers insist on Secure, Path=/ and no Domain.
pub const SESSION_COOKIE: &str = "__Host-ass_session";
/// The header carrying the session's CSRF token on unsafe requests.
pub const CSRF_HEADER: &str = "x-csrf-token";
const SESSION_CONTEXT: &[u8] = b"agent-secret-store session\0";
const CSRF_CONTEXT: &[u8] = b"agent-secret-store csrf\0";
/// What every failed login is told, whichever factor failed.
const LOGIN_FAILED: &str = "invalid tenant, username, password or TOTP code";

/// A human operator authenticated by a password session (never by an API token or agent key).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanOperator {
    pub tenant: TenantId,
    pub id: OperatorId,
    pub role: Role,
}

impl HumanOperator {
    pub fn actor(&self) -> Actor {
        Actor::new("operator", self.id)
    }

    /// Refuses unless the operator holds one of `roles`.
    pub fn require(&self, roles: &[Role]) -> ServiceResult<()> {
        OperatorPrincipal::from(*self).require(roles)
    }
}

impl From<HumanOperator> for OperatorPrincipal {
    fn from(h: HumanOperator) -> OperatorPrincipal {
        OperatorPrincipal {
            tenant: h.tenant,
            id: h.id,
            role: h.role,
        }
    }
}

/// The time sessions, lock-outs and TOTP steps are measured by: the system clock, or a
/// manual one that tests move forward.
#[derive(Clone, Debug, Default)]
pub struct Clock(Option<Arc<Mutex<DateTime<Utc>>>>);

impl Clock {
    pub fn system() -> Clock {
        Clock(None)
    }

    /// A clock that stands still at `at` until [`Clock::advance`] moves it.
    pub fn manual(at: DateTime<Utc>) -> Clock {
        Clock(Some(Arc::new(Mutex::new(at))))
    }

    pub fn now(&self) -> DateTime<Utc> {
        let now = match &self.0 {
            None => Utc::now(),
            Some(at) => *at.lock().unwrap_or_else(PoisonError::into_inner),
        };
        // Stored at microsecond precision: compare what is stored.
        DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
    }

    /// Moves a manual clock forward (a system clock ignores it).
    pub fn advance(&self, by: Duration) {
        if let Some(at) = &self.0 {
            let mut at = at.lock().unwrap_or_else(PoisonError::into_inner);
            *at += chrono::Duration::from_std(by).unwrap_or(chrono::Duration::zero());
        }
    }
}

/// `[sessions]` as the service applies it.
#[derive(Clone, Debug)]
pub struct SessionSettings {
    pub idle_timeout: Duration,
    pub absolute_timeout: Duration,
    pub require_totp_roles: Vec<Role>,
    pub lockout: LockoutPolicy,
    pub password_rules: PasswordRules,
    /// bcrypt cost: 12 in production; tests lower it (bcrypt's minimum is 4).
    pub bcrypt_cost: u32,
    pub clock: Clock,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings::from_config(&crate::config::SessionsConfig::default())
    }
}

impl SessionSettings {
    pub fn from_config(c: &crate::config::SessionsConfig) -> SessionSettings {
        SessionSettings {
            idle_timeout: Duration::from_secs(c.idle_timeout_seconds),
            absolute_timeout: Duration::from_secs(c.absolute_timeout_seconds),
            require_totp_roles: c.require_totp_roles.clone(),
            lockout: LockoutPolicy {
                max_failures: c.max_failed_logins,
                lock_seconds: c.lockout_seconds,
                max_lock_seconds: c.max_lockout_seconds,
            },
            password_rules: PasswordRules {
                min_chars: c.min_password_chars,
            },
            bcrypt_cost: PasswordHasher::COST,
            clock: Clock::system(),
        }
    }

    pub fn hasher(&self, app: &App) -> PasswordHasher {
        PasswordHasher::new(app.pepper.clone()).with_cost(self.bcrypt_cost)
    }
}

/// A successful login: what the client gets (the cookie value and CSRF token, once).
pub struct LoginOutcome {
    pub human: HumanOperator,
    pub cookie_value: SecretString,
    pub csrf_token: SecretString,
    pub expires_at: DateTime<Utc>,
}

impl LoginOutcome {
    pub fn info(&self) -> SessionInfo {
        SessionInfo {
            operator_id: self.human.id.to_string(),
            tenant_id: self.human.tenant.to_string(),
            role: self.human.role,
            csrf_token: Some(self.csrf_token.expose().to_owned()),
            expires_at: self.expires_at,
        }
    }
}

/// A live session found from its cookie.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SessionRef {
    pub human: HumanOperator,
    pub id_hash: [u8; 32],
    csrf_hash: [u8; 32],
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for SessionRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRef")
            .field("human", &self.human)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl SessionRef {
    /// Whether `presented` is this session's CSRF token (constant-time on the digests).
    pub fn csrf_matches(&self, app: &App, presented: Option<&str>) -> bool {
        let Some(presented) = presented.filter(|p| p.len() <= 128) else {
            return false;
        };
        let hash = keyed(app, CSRF_CONTEXT, presented.as_bytes());
        bool::from(hash.ct_eq(&self.csrf_hash))
    }

    pub fn info(&self) -> SessionInfo {
        SessionInfo {
            operator_id: self.human.id.to_string(),
            tenant_id: self.human.tenant.to_string(),
            role: self.human.role,
            csrf_token: None,
            expires_at: self.expires_at,
        }
    }
}

fn keyed(app: &App, context: &[u8], data: &[u8]) -> [u8; 32] {
    let mut input = zeroize::Zeroizing::new(Vec::with_capacity(context.len() + data.len()));
    input.extend_from_slice(context);
    input.extend_from_slice(data);
    app.pepper.mac(&input)
}

fn random_token() -> SecretString {
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(bytes.as_mut());
    SecretString::new(URL_SAFE_NO_PAD.encode(&bytes[..]))
}

/// Seals a new TOTP secret for `operator` under the pepper-derived key ([`crate::totp::seal`]).
pub(crate) fn seal_totp(
    app: &App,
    tenant: TenantId,
    operator: OperatorId,
    secret: &TotpSecret,
) -> ServiceResult<Sealed> {
    TotpSealKey::from_pepper(&app.pepper)
        .seal(tenant, operator, secret)
        .map_err(|e| ServiceError::Internal(format!("operator TOTP secret: {e}")))
}

/// Checks `code` against the account's sealed secret at `now`: the step to record, or why not.
pub(crate) fn check_totp(
    app: &App,
    account: &OperatorAccount,
    code: &str,
    now: DateTime<Utc>,
) -> ServiceResult<Result<i64, TotpRejected>> {
    let Some(sealed) = &account.totp else {
        return Ok(Err(TotpRejected::Wrong));
    };
    // No KMS call: the key is derived from the pepper, so an encrypt-only KMS identity is enough.
    let secret = TotpSealKey::from_pepper(&app.pepper)
        .open(account.tenant_id, account.operator_id, sealed)
        .map_err(|e| {
            ServiceError::Internal(format!(
                "operator {}'s TOTP secret: {e} (a new pepper voids TOTP enrollments: re-enroll)",
                account.operator_id
            ))
        })?;
    let now_secs = u64::try_from(now.timestamp()).unwrap_or(0);
    let last = u64::try_from(account.totp_last_step)
        .ok()
        .filter(|s| *s > 0);
    Ok(totp::verify(&secret, code, now_secs, last)
        .map(|step| i64::try_from(step).unwrap_or(i64::MAX)))
}

/// bcrypt on the blocking pool (it takes about 0.25 s at cost 12).
pub(crate) async fn verify_password(
    hasher: PasswordHasher,
    password: SecretString,
    stored: Option<String>,
) -> ServiceResult<bool> {
    // An account without a password still costs one bcrypt run at the same cost, so timing
    // does not tell a known user name from an unknown one.
    tokio::task::spawn_blocking(move || match stored {
        Some(stored) => hasher.verify(&password, &stored),
        None => {
            let _ = hasher.hash(&password);
            false
        }
    })
    .await
    .map_err(|e| ServiceError::Internal(format!("password check task: {e}")))
}

/// What a password was presented for: it names the check in the audit reason of a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    Login,
    /// The dashboard's self-service TOTP enrollment (`service::enrollment`).
    Enrollment,
}

/// Why a password check or login failed, as the audit reason says it (never what was typed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    BadPassword,
    BadTotp,
    TotpMissing,
    TotpReplayed,
    Disabled,
}

impl Failure {
    fn reason(self, purpose: Purpose) -> String {
        let purpose = match purpose {
            Purpose::Login => "login",
            Purpose::Enrollment => "totp_self_enrollment",
        };
        let failure = match self {
            Failure::BadPassword => "bad_password",
            Failure::BadTotp => "bad_totp",
            Failure::TotpMissing => "totp_missing",
            Failure::TotpReplayed => "totp_replayed",
            Failure::Disabled => "account_disabled",
        };
        format!("{purpose}: {failure}")
    }
}

/// An account whose password was just proven: not locked, not disabled, not revoked.
pub(crate) struct Unlocked {
    pub(crate) human: HumanOperator,
    pub(crate) account: OperatorAccount,
    pub(crate) now: DateTime<Utc>,
}

/// `POST /v1/session/login`.
pub async fn login(
    app: &App,
    req: &LoginRequest,
    ctx: &RequestContext,
) -> ServiceResult<LoginOutcome> {
    let Unlocked {
        human,
        account,
        now,
    } = unlock(
        app,
        &req.tenant,
        &req.username,
        &req.password,
        ctx,
        Purpose::Login,
    )
    .await?;
    let login_failed = |failure| failed(app, human, ctx, now, Purpose::Login, failure);
    let totp_required = account.totp_confirmed_at.is_some()
        || app.sessions.require_totp_roles.contains(&human.role);
    let mut step = None;
    if totp_required {
        if account.totp_confirmed_at.is_none() {
            let draft = AuditDraft::new(AuditEventType::AuthFailed, human.actor())
                .client(ctx.ip_string(), ctx.user_agent.clone())
                .failed("login: totp_not_enrolled");
            app.store.append_audit(human.tenant, draft).await?;
            return Err(ServiceError::Forbidden(format!(
                "role `{}` needs a confirmed TOTP enrollment before it can log in",
                human.role.as_str()
            )));
        }
        let Some(code) = req.totp_code.as_deref() else {
            return Err(login_failed(Failure::TotpMissing).await);
        };
        match check_totp(app, &account, code, now)? {
            Ok(s) => step = Some(s),
            Err(TotpRejected::Replayed) => return Err(login_failed(Failure::TotpReplayed).await),
            Err(_) => return Err(login_failed(Failure::BadTotp).await),
        }
    }
    start(app, human, step, ctx, now).await
}

/// The dashboard's self-service TOTP enrollment starts here: the same password check as a
/// login, with the same throttles (per address, per account, lock-out) and the same
/// `auth.failed` events for a wrong password, so it is no side door for guessing. Whether the
/// account may enroll (no confirmed TOTP yet) is the caller's decision.
pub(crate) async fn verify_password_for_enrollment(
    app: &App,
    tenant: &str,
    username: &str,
    password: &str,
    ctx: &RequestContext,
) -> ServiceResult<Unlocked> {
    unlock(app, tenant, username, password, ctx, Purpose::Enrollment).await
}

/// The checks every password presentation goes through, in this order: the address's
/// failure budget, the account (an unknown one costs a bcrypt run too), its lock-out, the
/// password, then whether the operator is revoked or disabled. Each failure is counted and
/// audited by [`failed`].
async fn unlock(
    app: &App,
    tenant: &str,
    username: &str,
    password: &str,
    ctx: &RequestContext,
    purpose: Purpose,
) -> ServiceResult<Unlocked> {
    let settings = &app.sessions;
    if let Err(refused) = app.limits.auth_failures.check(ctx.ip) {
        return Err(super::limits::refuse(app, None, Actor::system(), ctx, refused).await);
    }
    let password = SecretString::new(password.to_owned());
    let hasher = settings.hasher(app);
    let found = if tenant.len() <= 128 && username.len() <= 64 {
        app.store.find_login(tenant, username).await?
    } else {
        None
    };
    let Some((tenant, operator_id)) = found else {
        verify_password(hasher, password, None).await?;
        return Err(unknown_login(app, ctx).await);
    };
    let now = settings.clock.now();
    let operator = app.store.get_operator(tenant, operator_id).await?;
    let account = app.store.get_account(tenant, operator_id).await?;
    let (Some(operator), Some(account)) = (operator, account) else {
        verify_password(hasher, password, None).await?;
        return Err(unknown_login(app, ctx).await);
    };
    let human = HumanOperator {
        tenant,
        id: operator_id,
        role: operator.role,
    };
    if let Some(until) = account.locked_until.filter(|until| *until > now) {
        app.metrics.auth_failures.inc();
        let _ = app.limits.auth_failures.count(ctx.ip);
        let secs = u64::try_from((until - now).num_seconds())
            .unwrap_or(0)
            .max(1);
        return Err(ServiceError::RateLimited {
            retry_after_secs: secs,
            message: format!("too many failed logins for this account; retry after {secs}s"),
        });
    }
    let password_ok = verify_password(hasher, password, account.password_hash.clone()).await?;
    if !password_ok {
        return Err(failed(app, human, ctx, now, purpose, Failure::BadPassword).await);
    }
    if operator.revoked_at.is_some() || account.disabled_at.is_some() {
        return Err(failed(app, human, ctx, now, purpose, Failure::Disabled).await);
    }
    Ok(Unlocked {
        human,
        account,
        now,
    })
}

/// Opens the session (recording the TOTP step only if it is still after the last one).
async fn start(
    app: &App,
    human: HumanOperator,
    step: Option<i64>,
    ctx: &RequestContext,
    now: DateTime<Utc>,
) -> ServiceResult<LoginOutcome> {
    let secret = random_token();
    let csrf_token = random_token();
    let absolute = chrono::Duration::from_std(app.sessions.absolute_timeout)
        .map_err(|e| ServiceError::Internal(e.to_string()))?;
    let session = NewSession {
        tenant_id: human.tenant,
        operator_id: human.id,
        id_hash: keyed(app, SESSION_CONTEXT, secret.expose().as_bytes()),
        csrf_hash: keyed(app, CSRF_CONTEXT, csrf_token.expose().as_bytes()),
        created_at: now,
        expires_at: now + absolute,
        ip: ctx.ip_string(),
        user_agent: ctx.user_agent.clone(),
    };
    let audit = AuditDraft::new(AuditEventType::SessionCreated, human.actor())
        .client(ctx.ip_string(), ctx.user_agent.clone())
        .reason(format!(
            "login of operator {} ({}){}",
            human.id,
            human.role.as_str(),
            if step.is_some() { " with TOTP" } else { "" }
        ));
    match app.store.start_session(&session, step, audit).await? {
        SessionStart::Started => Ok(LoginOutcome {
            human,
            cookie_value: SecretString::new(format!("{}.{}", human.tenant, secret.expose())),
            csrf_token,
            expires_at: session.expires_at,
        }),
        SessionStart::TotpReplayed => {
            Err(failed(app, human, ctx, now, Purpose::Login, Failure::TotpReplayed).await)
        }
    }
}

/// A failed login (or enrollment's password check) against a known account: counted per account (maybe locking it) with its
/// `auth.failed` event, and per address. 401, or 429 once the address is over its limit.
async fn failed(
    app: &App,
    human: HumanOperator,
    ctx: &RequestContext,
    now: DateTime<Utc>,
    purpose: Purpose,
    failure: Failure,
) -> ServiceError {
    app.metrics.auth_failures.inc();
    let draft = AuditDraft::new(AuditEventType::AuthFailed, human.actor())
        .client(ctx.ip_string(), ctx.user_agent.clone())
        .failed(failure.reason(purpose));
    let lockout = app.sessions.lockout;
    match app
        .store
        .record_login_failure(human.tenant, human.id, now, lockout, draft)
        .await
    {
        Ok(Some(until)) => tracing::warn!(operator = %human.id, %until, "operator account locked"),
        Ok(None) => {}
        Err(e) => return ServiceError::Store(e),
    }
    address_failure(app, Some(human.tenant), human.actor(), ctx).await
}

async fn unknown_login(app: &App, ctx: &RequestContext) -> ServiceError {
    app.metrics.auth_failures.inc();
    address_failure(app, None, Actor::system(), ctx).await
}

async fn address_failure(
    app: &App,
    tenant: Option<TenantId>,
    actor: Actor,
    ctx: &RequestContext,
) -> ServiceError {
    match app.limits.auth_failures.count(ctx.ip) {
        Ok(()) => ServiceError::Denied {
            code: ErrorCode::Unauthenticated,
            message: LOGIN_FAILED.to_owned(),
        },
        Err(refused) => super::limits::refuse(app, tenant, actor, ctx, refused).await,
    }
}

/// The live session a cookie names, refreshed (its idle timer restarts). `Unauthenticated`
/// for anything else: malformed, unknown, revoked, idle or past its end, or an operator
/// revoked or disabled since.
pub async fn authenticate(app: &App, cookie_value: &str) -> ServiceResult<SessionRef> {
    live(app, cookie_value, true).await
}

/// [`authenticate`] without keeping the session alive: for what the browser asks on its own
/// (the dashboard's live updates), so an unattended tab still reaches the idle timeout.
pub async fn peek(app: &App, cookie_value: &str) -> ServiceResult<SessionRef> {
    live(app, cookie_value, false).await
}

async fn live(app: &App, cookie_value: &str, extend: bool) -> ServiceResult<SessionRef> {
    let (tenant, secret) = cookie_value
        .split_once('.')
        .ok_or(ServiceError::Unauthenticated)?;
    let tenant: TenantId = tenant.parse().map_err(|_| ServiceError::Unauthenticated)?;
    if secret.len() != 43 {
        return Err(ServiceError::Unauthenticated);
    }
    let id_hash = keyed(app, SESSION_CONTEXT, secret.as_bytes());
    let now = app.sessions.clock.now();
    let idle = chrono::Duration::from_std(app.sessions.idle_timeout)
        .map_err(|e| ServiceError::Internal(e.to_string()))?;
    let cutoff = now - idle;
    let session = if extend {
        app.store
            .touch_session(tenant, &id_hash, now, cutoff)
            .await?
    } else {
        app.store
            .peek_session(tenant, &id_hash, now, cutoff)
            .await?
    }
    .ok_or(ServiceError::Unauthenticated)?;
    Ok(SessionRef {
        human: HumanOperator {
            tenant,
            id: session.operator_id,
            role: session.role,
        },
        id_hash,
        csrf_hash: session.csrf_hash,
        expires_at: session.expires_at,
    })
}

/// `POST /v1/session/logout`: the session is revoked for good.
pub async fn logout(app: &App, session: &SessionRef, ctx: &RequestContext) -> ServiceResult<()> {
    let audit = AuditDraft::new(AuditEventType::SessionRevoked, session.human.actor())
        .client(ctx.ip_string(), ctx.user_agent.clone())
        .reason("logout");
    app.store
        .revoke_session(
            session.human.tenant,
            &session.id_hash,
            app.sessions.clock.now(),
            audit,
        )
        .await?;
    Ok(())
}
