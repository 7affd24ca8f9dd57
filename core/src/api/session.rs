//! The JSON of human operator accounts and sessions: login, who-am-I, password and TOTP
//! enrollment. Passwords and TOTP codes sent in are wiped on drop and never shown by `Debug`;
//! a TOTP secret and a CSRF token shown once render as `[REDACTED]`.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use super::operator::Role;

/// `POST /v1/session/login`. `tenant` is the tenant's name or id, `username` the operator's
/// name. `totp_code` is required once the operator's TOTP enrollment is confirmed, and for
/// the roles `[sessions] require_totp_roles` names (by default `admin` and `approver`).
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub tenant: String,
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub totp_code: Option<String>,
}

impl fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginRequest")
            .field("tenant", &self.tenant)
            .field("username", &self.username)
            .field("password", &"[REDACTED]")
            .field("totp_code", &self.totp_code.as_ref().map(|_| "[REDACTED]"))
            .finish()
    }
}

impl Drop for LoginRequest {
    fn drop(&mut self) {
        self.password.zeroize();
        if let Some(code) = self.totp_code.as_mut() {
            code.zeroize();
        }
    }
}

/// A logged-in session (login answer and `GET /v1/session`). The session itself travels only
/// in the `__Host-ass_session` cookie; `csrf_token` goes in `X-CSRF-Token` on every unsafe
/// request (it is returned by login only).
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionInfo {
    pub operator_id: String,
    pub tenant_id: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csrf_token: Option<String>,
    /// The absolute end of the session; it ends earlier after `idle_timeout_seconds` unused.
    pub expires_at: DateTime<Utc>,
}

impl fmt::Debug for SessionInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionInfo")
            .field("operator_id", &self.operator_id)
            .field("role", &self.role)
            .field(
                "csrf_token",
                &self.csrf_token.as_ref().map(|_| "[REDACTED]"),
            )
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// `POST /v1/operators/{id}/password`. `current_password` is required when operators change
/// their own password (if they have one); an admin resetting another operator's omits it.
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPasswordRequest {
    pub password: String,
    #[serde(default)]
    pub current_password: Option<String>,
}

impl fmt::Debug for SetPasswordRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SetPasswordRequest([REDACTED])")
    }
}

impl Drop for SetPasswordRequest {
    fn drop(&mut self) {
        self.password.zeroize();
        if let Some(current) = self.current_password.as_mut() {
            current.zeroize();
        }
    }
}

/// The answer to a password change: every session of the operator was revoked.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PasswordChanged {
    pub operator_id: String,
    pub sessions_revoked: u64,
}

/// `POST /v1/operators/{id}/totp`: a new TOTP secret, shown once. It is required at login
/// only after `POST /v1/operators/{id}/totp/confirm` accepted a first code.
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TotpEnrollment {
    pub operator_id: String,
    /// Base32, for typing into an authenticator app.
    pub secret: String,
    /// `otpauth://totp/...`, for a QR code.
    pub otpauth_url: String,
}

impl fmt::Debug for TotpEnrollment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TotpEnrollment")
            .field("operator_id", &self.operator_id)
            .field("secret", &"[REDACTED]")
            .field("otpauth_url", &"[REDACTED]")
            .finish()
    }
}

impl Drop for TotpEnrollment {
    fn drop(&mut self) {
        self.secret.zeroize();
        self.otpauth_url.zeroize();
    }
}

/// `POST /v1/operators/{id}/totp/confirm`.
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmTotpRequest {
    pub code: String,
}

impl fmt::Debug for ConfirmTotpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ConfirmTotpRequest([REDACTED])")
    }
}

/// An operator's account state (`POST .../totp/confirm`, `POST .../disable`).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AccountInfo {
    pub operator_id: String,
    pub has_password: bool,
    pub totp_confirmed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_at: Option<DateTime<Utc>>,
}
