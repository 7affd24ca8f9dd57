//! Operators: the humans (and their automation) who manage a tenant.
//!
//! Operator tokens are checked against the store on every request (no cache), so a revocation
//! takes effect on the very next call. A tenant always keeps at least one active admin: the
//! last one cannot be revoked, or nobody could manage the tenant any more.

use agent_secret_core::api::{
    AccountInfo, CreatedOperator, ErrorCode, OperatorInfo, OperatorList, PasswordChanged, Role,
    SetPasswordRequest, TotpEnrollment,
};
use agent_secret_core::cipher::Sealed;
use agent_secret_core::credential::{issue_with_id, CredentialKind};
use agent_secret_core::ids::OperatorId;
use agent_secret_core::secret::SecretString;

use super::auth::OperatorPrincipal;
use super::sessions::{check_totp, seal_totp, verify_password};
use super::{validate_name, App, RequestContext, ServiceError, ServiceResult};
use crate::audit::{now_micros, AuditDraft, AuditEventType};
use crate::store::{OperatorAccount, OperatorRecord, OperatorRevocation, StoreError};
use crate::totp::TotpSecret;

pub async fn create(
    app: &App,
    caller: OperatorPrincipal,
    name: &str,
    role: Role,
    ctx: &RequestContext,
) -> ServiceResult<CreatedOperator> {
    caller.require(&[Role::Admin])?;
    validate_name(name)?;
    let id = OperatorId::new();
    let credential = issue_with_id(CredentialKind::Operator, id.0, &app.pepper);
    let record = OperatorRecord {
        id,
        tenant_id: caller.tenant,
        name: name.to_owned(),
        role,
        key_hash: credential.hash.to_vec(),
        created_at: now_micros(),
        revoked_at: None,
    };
    let audit = AuditDraft::new(AuditEventType::OperatorCreated, caller.actor())
        .client(ctx.ip_string(), ctx.user_agent.clone())
        .reason(format!("operator {id} ({}) role {}", name, role.as_str()));
    app.store.create_operator(&record, audit).await?;
    Ok(CreatedOperator {
        id: id.to_string(),
        role,
        operator_token: credential.token.expose().to_owned(),
    })
}

pub async fn list(app: &App, caller: OperatorPrincipal) -> ServiceResult<OperatorList> {
    caller.require(&[Role::Admin])?;
    let operators = app.store.list_operators(caller.tenant).await?;
    Ok(OperatorList {
        operators: operators.into_iter().map(info).collect(),
    })
}

/// Revokes an operator's token at once. Refused with `conflict` for the tenant's last active
/// admin and for an operator already revoked; `not_found` for an unknown id.
pub async fn revoke(
    app: &App,
    caller: OperatorPrincipal,
    id: OperatorId,
    ctx: &RequestContext,
) -> ServiceResult<OperatorInfo> {
    caller.require(&[Role::Admin])?;
    let audit = AuditDraft::new(AuditEventType::OperatorRevoked, caller.actor())
        .client(ctx.ip_string(), ctx.user_agent.clone())
        .reason(format!("operator {id}"));
    match app
        .store
        .revoke_operator(caller.tenant, id, now_micros(), audit)
        .await?
    {
        OperatorRevocation::Revoked => {}
        OperatorRevocation::NotFound => return Err(ServiceError::NotFound("operator")),
        OperatorRevocation::AlreadyRevoked => {
            return Err(ServiceError::Conflict(format!(
                "operator {id} is already revoked"
            )))
        }
        OperatorRevocation::LastAdmin => {
            return Err(ServiceError::Conflict(format!(
                "operator {id} is the tenant's last active admin; create another admin first"
            )))
        }
    }
    app.store
        .get_operator(caller.tenant, id)
        .await?
        .map(info)
        .ok_or(ServiceError::NotFound("operator"))
}

/// Operators manage their own account; admins manage everyone's.
fn self_or_admin(caller: OperatorPrincipal, target: OperatorId) -> ServiceResult<()> {
    if caller.id == target {
        Ok(())
    } else {
        caller.require(&[Role::Admin])
    }
}

/// `POST /v1/operators/{id}/password`: sets the password and revokes every session of the
/// operator. Operators changing their own password give the current one (if they have one); a
/// wrong one counts as a failed login (lock-out included) and is refused 403.
pub async fn set_password(
    app: &App,
    caller: OperatorPrincipal,
    id: OperatorId,
    req: &SetPasswordRequest,
    ctx: &RequestContext,
) -> ServiceResult<PasswordChanged> {
    self_or_admin(caller, id)?;
    let password = SecretString::new(req.password.clone());
    app.sessions
        .password_rules
        .check(&password)
        .map_err(|e| ServiceError::invalid(ErrorCode::InvalidPassword, e.to_string()))?;
    if caller.id == id {
        check_current_password(app, caller, req.current_password.as_deref(), ctx).await?;
    }
    let hasher = app.sessions.hasher(app);
    let hash = tokio::task::spawn_blocking(move || hasher.hash(&password))
        .await
        .map_err(|e| ServiceError::Internal(format!("password hash task: {e}")))?
        .map_err(|e| ServiceError::Internal(e.to_string()))?;
    let audit = AuditDraft::new(AuditEventType::OperatorPasswordSet, caller.actor())
        .client(ctx.ip_string(), ctx.user_agent.clone())
        .reason(format!(
            "operator {id}; every session of the operator revoked"
        ));
    let revoked = app
        .store
        .set_password(caller.tenant, id, &hash, app.sessions.clock.now(), audit)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ServiceError::NotFound("operator"),
            StoreError::Conflict(_) => ServiceError::Conflict(
                "another operator of this tenant already logs in under this name".into(),
            ),
            other => ServiceError::Store(other),
        })?;
    Ok(PasswordChanged {
        operator_id: id.to_string(),
        sessions_revoked: revoked,
    })
}

async fn check_current_password(
    app: &App,
    caller: OperatorPrincipal,
    current: Option<&str>,
    ctx: &RequestContext,
) -> ServiceResult<()> {
    let account = app.store.get_account(caller.tenant, caller.id).await?;
    let Some(stored) = account.and_then(|a| a.password_hash) else {
        return Ok(()); // a first password: nothing to prove
    };
    let now = app.sessions.clock.now();
    let presented = SecretString::new(current.unwrap_or_default().to_owned());
    if verify_password(app.sessions.hasher(app), presented, Some(stored)).await? {
        return Ok(());
    }
    let draft = AuditDraft::new(AuditEventType::AuthFailed, caller.actor())
        .client(ctx.ip_string(), ctx.user_agent.clone())
        .failed("password_change: bad_current_password");
    app.store
        .record_login_failure(caller.tenant, caller.id, now, app.sessions.lockout, draft)
        .await?;
    Err(ServiceError::Forbidden(
        "the current password is missing or wrong".into(),
    ))
}

/// `POST /v1/operators/{id}/totp`: a new TOTP secret, sealed under the pepper-derived TOTP key
/// ([`crate::totp::seal`], no KMS call) and shown once. It replaces any earlier one and is
/// required at login once confirmed.
pub async fn enroll_totp(
    app: &App,
    caller: OperatorPrincipal,
    id: OperatorId,
    ctx: &RequestContext,
) -> ServiceResult<TotpEnrollment> {
    Ok(enroll_totp_sealed(app, caller, id, ctx).await?.0)
}

/// [`enroll_totp`], also returning the sealed secret as stored (the dashboard's self-service
/// enrollment binds its confirmation ticket to it).
pub(crate) async fn enroll_totp_sealed(
    app: &App,
    caller: OperatorPrincipal,
    id: OperatorId,
    ctx: &RequestContext,
) -> ServiceResult<(TotpEnrollment, Sealed)> {
    self_or_admin(caller, id)?;
    let operator = app
        .store
        .get_operator(caller.tenant, id)
        .await?
        .ok_or(ServiceError::NotFound("operator"))?;
    let secret = TotpSecret::generate();
    let url = secret
        .enrollment_url(&operator.name)
        .map_err(|e| ServiceError::invalid(ErrorCode::InvalidRequest, e.to_string()))?;
    let sealed = seal_totp(app, caller.tenant, id, &secret)?;
    let audit = AuditDraft::new(AuditEventType::OperatorTotpEnrolled, caller.actor())
        .client(ctx.ip_string(), ctx.user_agent.clone())
        .reason(format!("operator {id}"));
    app.store
        .set_totp(caller.tenant, id, &sealed, app.sessions.clock.now(), audit)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => {
                ServiceError::Conflict("set the operator's password before enrolling TOTP".into())
            }
            other => ServiceError::Store(other),
        })?;
    let enrollment = TotpEnrollment {
        operator_id: id.to_string(),
        secret: secret.to_base32().expose().to_owned(),
        otpauth_url: url.expose().to_owned(),
    };
    Ok((enrollment, sealed))
}

/// `POST /v1/operators/{id}/totp/confirm`: a first code turns the enrollment on.
pub async fn confirm_totp(
    app: &App,
    caller: OperatorPrincipal,
    id: OperatorId,
    code: &str,
    ctx: &RequestContext,
) -> ServiceResult<AccountInfo> {
    self_or_admin(caller, id)?;
    let account = app
        .store
        .get_account(caller.tenant, id)
        .await?
        .filter(|a| a.totp.is_some())
        .ok_or_else(|| ServiceError::Conflict("no TOTP enrollment to confirm".into()))?;
    confirm_enrollment(app, caller, &account, code, ctx).await?;
    account_info(app, caller, id).await
}

/// Turns `account`'s stored enrollment on with a first `code`, checked against that very
/// secret and refused if replayed. The caller has checked that `caller` may.
pub(crate) async fn confirm_enrollment(
    app: &App,
    caller: OperatorPrincipal,
    account: &OperatorAccount,
    code: &str,
    ctx: &RequestContext,
) -> ServiceResult<()> {
    let id = account.operator_id;
    let now = app.sessions.clock.now();
    let step = check_totp(app, account, code, now)?
        .map_err(|e| ServiceError::invalid(ErrorCode::InvalidRequest, e.to_string()))?;
    let audit = AuditDraft::new(AuditEventType::OperatorTotpConfirmed, caller.actor())
        .client(ctx.ip_string(), ctx.user_agent.clone())
        .reason(format!("operator {id}"));
    if !app
        .store
        .confirm_totp(caller.tenant, id, step, now, audit)
        .await?
    {
        return Err(ServiceError::invalid(
            ErrorCode::InvalidRequest,
            "the TOTP code was already used; wait for the next one",
        ));
    }
    Ok(())
}

/// `POST /v1/operators/{id}/disable` (admin): no more logins, the API token revoked and every
/// session revoked, at once. Refused for the tenant's last active admin.
pub async fn disable(
    app: &App,
    caller: OperatorPrincipal,
    id: OperatorId,
    ctx: &RequestContext,
) -> ServiceResult<AccountInfo> {
    caller.require(&[Role::Admin])?;
    let audit = AuditDraft::new(AuditEventType::OperatorDisabled, caller.actor())
        .client(ctx.ip_string(), ctx.user_agent.clone())
        .reason(format!("operator {id}; API token and sessions revoked"));
    match app
        .store
        .disable_operator(caller.tenant, id, app.sessions.clock.now(), audit)
        .await?
    {
        OperatorRevocation::Revoked => account_info(app, caller, id).await,
        OperatorRevocation::NotFound => Err(ServiceError::NotFound("operator")),
        OperatorRevocation::AlreadyRevoked => Err(ServiceError::Conflict(format!(
            "operator {id} is already disabled"
        ))),
        OperatorRevocation::LastAdmin => Err(ServiceError::Conflict(format!(
            "operator {id} is the tenant's last active admin; create another admin first"
        ))),
    }
}

async fn account_info(
    app: &App,
    caller: OperatorPrincipal,
    id: OperatorId,
) -> ServiceResult<AccountInfo> {
    let account: Option<OperatorAccount> = app.store.get_account(caller.tenant, id).await?;
    Ok(AccountInfo {
        operator_id: id.to_string(),
        has_password: account.as_ref().is_some_and(|a| a.password_hash.is_some()),
        totp_confirmed: account
            .as_ref()
            .is_some_and(|a| a.totp_confirmed_at.is_some()),
        disabled_at: account.and_then(|a| a.disabled_at),
    })
}

fn info(op: OperatorRecord) -> OperatorInfo {
    OperatorInfo {
        id: op.id.to_string(),
        name: op.name,
        role: op.role,
        created_at: op.created_at,
        revoked_at: op.revoked_at,
    }
}
