//! `[sessions]`: human operator logins — session timeouts, which roles need a TOTP code, the
//! per-account lock-out and the minimum password length. `AGENT_SECRET_SESSIONS_<KEY>`
//! overrides each key (`REQUIRE_TOTP_ROLES` as a comma-separated list, `none` for none).

use agent_secret_core::api::Role;
use serde::Deserialize;

use super::error::{invalid, ConfigError};

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionsConfig {
    /// A session unused for this long ends.
    pub idle_timeout_seconds: u64,
    /// A session ends this long after login, however busy.
    pub absolute_timeout_seconds: u64,
    /// Roles that cannot log in without a confirmed TOTP enrollment and a code. An operator
    /// who confirmed an enrollment always needs a code, whatever the role.
    pub require_totp_roles: Vec<Role>,
    /// Failed logins in a row that lock an account...
    pub max_failed_logins: u32,
    /// ...for this long, doubled for each further lock-out before a successful login...
    pub lockout_seconds: u64,
    /// ...up to this long.
    pub max_lockout_seconds: u64,
    /// Shortest password accepted (never below 12).
    pub min_password_chars: usize,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        SessionsConfig {
            idle_timeout_seconds: 30 * 60,
            absolute_timeout_seconds: 12 * 3600,
            require_totp_roles: vec![Role::Admin, Role::Approver],
            max_failed_logins: 5,
            lockout_seconds: 15 * 60,
            max_lockout_seconds: 24 * 3600,
            min_password_chars: 12,
        }
    }
}

impl SessionsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("sessions.idle_timeout_seconds", self.idle_timeout_seconds),
            (
                "sessions.absolute_timeout_seconds",
                self.absolute_timeout_seconds,
            ),
            ("sessions.lockout_seconds", self.lockout_seconds),
            (
                "sessions.max_failed_logins",
                u64::from(self.max_failed_logins),
            ),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if self.max_lockout_seconds < self.lockout_seconds {
            return Err(invalid(
                "sessions.max_lockout_seconds",
                "must be at least sessions.lockout_seconds",
            ));
        }
        if self.min_password_chars < 12 {
            return Err(invalid(
                "sessions.min_password_chars",
                "must be at least 12",
            ));
        }
        Ok(())
    }
}

/// `admin,approver` → roles; `none` → no role.
pub(super) fn parse_roles(raw: &str) -> Option<Vec<Role>> {
    if raw.trim() == "none" {
        return Some(Vec::new());
    }
    raw.split(',').map(|r| Role::parse(r.trim())).collect()
}
