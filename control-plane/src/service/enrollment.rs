//! Self-service TOTP enrollment: operators set up their own authenticator from the dashboard,
//! so no admin ever sees their secret.
//!
//! Two steps without a session (the roles that need TOTP cannot log in before it): [`begin`]
//! proves the password through the login's own checks (`sessions::verify_password_for_enrollment`:
//! same throttles, lock-out and `auth.failed` events), refuses an account whose TOTP is already
//! confirmed, stores a new unconfirmed secret as an admin's enrollment would
//! (`operators::enroll_totp_sealed`, audited `operator.totp_enrolled` with the operator as
//! actor) and hands out the secret once together with an [`EnrollmentTicket`]. [`confirm`]
//! takes that ticket back with a first code.
//!
//! The ticket binds the confirmation to whoever proved the password: HMAC under the pepper of
//! a domain tag ‖ tenant id ‖ operator id ‖ expiry (10 minutes) ‖ SHA-256 of the sealed secret
//! as stored, so a later enrollment (by anyone) voids it. It carries ids and the expiry in the
//! clear and never the secret; it is compared in constant time.

use std::time::Duration;

use agent_secret_core::cipher::Sealed;
use agent_secret_core::ids::{OperatorId, TenantId};
use agent_secret_core::secret::SecretString;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

use super::limits::refuse;
use super::operators::{confirm_enrollment, enroll_totp_sealed};
use super::principal::OperatorPrincipal;
use super::sessions::{verify_password_for_enrollment, HumanOperator, Unlocked};
use super::{App, RequestContext, ServiceError};
use crate::audit::{Actor, AuditDraft, AuditEventType};

/// How long a ticket may confirm its enrollment.
pub const TICKET_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// Domain tag of the ticket's MAC: a MAC made for anything else never verifies as a ticket.
const TICKET_CONTEXT: &[u8] = b"agent-secret-store/ui-totp-enrollment-ticket/v1\n";
const TICKET_VERSION: &str = "v1";
/// Longer input is refused before it is parsed (a real ticket has 2 + 36 + 36 + ~10 + 64 + 4).
const MAX_TICKET_LEN: usize = 256;

/// Why a self-service enrollment step was refused. The messages are safe to show.
#[derive(Debug, thiserror::Error)]
pub enum EnrollmentError {
    /// The account's TOTP is already confirmed (told only after a correct password).
    #[error("an authenticator is already set up for this account; ask an admin to reset it")]
    AlreadyEnrolled,
    /// Malformed, forged, expired, or voided by a newer enrollment.
    #[error("this setup form expired or was changed; start the setup again")]
    BadTicket,
    /// Everything the login and the operators' service refuse (wrong password, throttled,
    /// wrong or replayed code, ...).
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// A signed, short-lived claim that whoever holds it just proved the password of one operator
/// and received the enrollment now stored. `Debug` does not show it.
pub struct EnrollmentTicket(String);

impl EnrollmentTicket {
    /// The form field's value.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for EnrollmentTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EnrollmentTicket([REDACTED])")
    }
}

/// A new, unconfirmed enrollment, shown once.
#[derive(Debug)]
pub struct SelfEnrollment {
    pub human: HumanOperator,
    /// The operator's name (the account an authenticator app shows).
    pub name: String,
    /// Base32, for typing into an authenticator app.
    pub secret: SecretString,
    /// `otpauth://totp/...` (holds the secret): what the QR code encodes.
    pub otpauth_url: SecretString,
    pub ticket: EnrollmentTicket,
    pub expires_at: DateTime<Utc>,
}

/// Step 1: the password, then a new unconfirmed enrollment with its ticket.
pub async fn begin(
    app: &App,
    tenant: &str,
    username: &str,
    password: &str,
    ctx: &RequestContext,
) -> Result<SelfEnrollment, EnrollmentError> {
    let Unlocked {
        human,
        account,
        now,
    } = verify_password_for_enrollment(app, tenant, username, password, ctx).await?;
    if account.totp_confirmed_at.is_some() {
        // Audited: someone holding the password of an enrolled account tried to replace its
        // authenticator. Not counted as a failed login (the password was right).
        let draft = AuditDraft::new(AuditEventType::AuthFailed, human.actor())
            .client(ctx.ip_string(), ctx.user_agent.clone())
            .failed("totp_self_enrollment: already_enrolled");
        app.store
            .append_audit(human.tenant, draft)
            .await
            .map_err(ServiceError::from)?;
        return Err(EnrollmentError::AlreadyEnrolled);
    }
    let operator = app
        .store
        .get_operator(human.tenant, human.id)
        .await
        .map_err(ServiceError::from)?
        .ok_or(ServiceError::NotFound("operator"))?;
    let (enrollment, sealed) =
        enroll_totp_sealed(app, OperatorPrincipal::from(human), human.id, ctx).await?;
    let lifetime = chrono::Duration::from_std(TICKET_LIFETIME)
        .map_err(|e| ServiceError::Internal(e.to_string()))?;
    let expires_at = now + lifetime;
    Ok(SelfEnrollment {
        human,
        name: operator.name,
        secret: SecretString::new(enrollment.secret.clone()),
        otpauth_url: SecretString::new(enrollment.otpauth_url.clone()),
        ticket: ticket(app, human.tenant, human.id, expires_at, &sealed),
        expires_at,
    })
}

/// Step 2: the ticket of [`begin`] and a first code turn the enrollment on (a code is
/// accepted once). The operator logs in normally afterwards.
pub async fn confirm(
    app: &App,
    ticket: &str,
    code: &str,
    ctx: &RequestContext,
) -> Result<HumanOperator, EnrollmentError> {
    // The address's failure budget is the login's: a throttled address cannot confirm either,
    // and a refused ticket or code spends from it.
    if let Err(refused) = app.limits.auth_failures.check(ctx.ip) {
        return Err(refuse(app, None, Actor::system(), ctx, refused)
            .await
            .into());
    }
    match check_and_confirm(app, ticket, code, ctx).await {
        Err(
            e @ (EnrollmentError::BadTicket
            | EnrollmentError::Service(ServiceError::Invalid { .. })),
        ) => {
            app.metrics.auth_failures.inc();
            if let Err(refused) = app.limits.auth_failures.count(ctx.ip) {
                return Err(refuse(app, None, Actor::system(), ctx, refused)
                    .await
                    .into());
            }
            Err(e)
        }
        other => other,
    }
}

async fn check_and_confirm(
    app: &App,
    ticket: &str,
    code: &str,
    ctx: &RequestContext,
) -> Result<HumanOperator, EnrollmentError> {
    let claim = Claim::parse(ticket).ok_or(EnrollmentError::BadTicket)?;
    if claim.expires_at <= app.sessions.clock.now() {
        return Err(EnrollmentError::BadTicket);
    }
    let store = &app.store;
    let operator = store.get_operator(claim.tenant, claim.operator).await;
    let account = store.get_account(claim.tenant, claim.operator).await;
    let (Some(operator), Some(account)) = (
        operator.map_err(ServiceError::from)?,
        account.map_err(ServiceError::from)?,
    ) else {
        return Err(EnrollmentError::BadTicket);
    };
    let Some(sealed) = &account.totp else {
        return Err(EnrollmentError::BadTicket);
    };
    let expected = mac(app, claim.tenant, claim.operator, claim.expires_at, sealed);
    if !bool::from(expected.ct_eq(&claim.mac)) {
        return Err(EnrollmentError::BadTicket);
    }
    if account.totp_confirmed_at.is_some() {
        return Err(EnrollmentError::AlreadyEnrolled);
    }
    if operator.revoked_at.is_some() || account.disabled_at.is_some() {
        return Err(ServiceError::Forbidden("this operator is disabled".into()).into());
    }
    let human = HumanOperator {
        tenant: claim.tenant,
        id: claim.operator,
        role: operator.role,
    };
    confirm_enrollment(app, OperatorPrincipal::from(human), &account, code, ctx).await?;
    Ok(human)
}

/// What a ticket says, once its syntax is checked (its MAC is not yet).
struct Claim {
    tenant: TenantId,
    operator: OperatorId,
    expires_at: DateTime<Utc>,
    mac: [u8; 32],
}

impl Claim {
    /// `v1.{tenant}.{operator}.{expiry, Unix seconds}.{MAC, hex}`.
    fn parse(ticket: &str) -> Option<Claim> {
        if ticket.len() > MAX_TICKET_LEN {
            return None;
        }
        let mut parts = ticket.split('.');
        let (Some(TICKET_VERSION), Some(tenant), Some(operator), Some(expiry), Some(mac), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(mac, &mut bytes).ok()?;
        Some(Claim {
            tenant: tenant.parse().ok()?,
            operator: operator.parse().ok()?,
            expires_at: DateTime::from_timestamp(expiry.parse().ok()?, 0)?,
            mac: bytes,
        })
    }
}

fn ticket(
    app: &App,
    tenant: TenantId,
    operator: OperatorId,
    expires_at: DateTime<Utc>,
    sealed: &Sealed,
) -> EnrollmentTicket {
    // Whole seconds: the MAC covers exactly what the ticket carries.
    let expires_at = DateTime::from_timestamp(expires_at.timestamp(), 0).unwrap_or(expires_at);
    let mac = mac(app, tenant, operator, expires_at, sealed);
    EnrollmentTicket(format!(
        "{TICKET_VERSION}.{tenant}.{operator}.{}.{}",
        expires_at.timestamp(),
        hex::encode(mac)
    ))
}

/// HMAC(pepper, tag ‖ tenant ‖ operator ‖ expiry ‖ SHA-256(sealed secret)); every field has a
/// fixed length, so no two inputs concatenate alike.
fn mac(
    app: &App,
    tenant: TenantId,
    operator: OperatorId,
    expires_at: DateTime<Utc>,
    sealed: &Sealed,
) -> [u8; 32] {
    let mut blob = Sha256::new();
    blob.update(
        u64::try_from(sealed.nonce.len())
            .unwrap_or(u64::MAX)
            .to_be_bytes(),
    );
    blob.update(&sealed.nonce);
    blob.update(&sealed.ciphertext);
    let mut input = TICKET_CONTEXT.to_vec();
    input.extend_from_slice(tenant.0.as_bytes());
    input.extend_from_slice(operator.0.as_bytes());
    input.extend_from_slice(&expires_at.timestamp().to_be_bytes());
    input.extend_from_slice(&blob.finalize());
    app.pepper.mac(&input)
}

#[cfg(test)]
mod tests {
    use super::Claim;

    #[test]
    fn a_ticket_parses_only_in_its_exact_shape() {
        let t = "00000000-0000-7000-8000-000000000001";
        let o = "00000000-0000-7000-8000-000000000002";
        let mac = "ab".repeat(32);
        assert!(Claim::parse(&format!("v1.{t}.{o}.1700000000.{mac}")).is_some());
        for bad in [
            format!("v2.{t}.{o}.1700000000.{mac}"),
            format!("v1.{t}.{o}.1700000000.{mac}.x"),
            format!("v1.{t}.{o}.1700000000"),
            format!("v1.{t}.{o}.soon.{mac}"),
            format!("v1.{t}.{o}.1700000000.{}", "ab".repeat(31)),
            format!("v1.tenant.{o}.1700000000.{mac}"),
            format!("v1.{t}.{o}.1700000000.{mac}{}", "0".repeat(300)),
            String::new(),
        ] {
            assert!(Claim::parse(&bad).is_none(), "{bad}");
        }
    }
}
