//! The TOTP second factor of operator logins (RFC 6238: HMAC-SHA1, 6 digits, 30-second steps,
//! one step of clock skew either way), as authenticator apps implement it.
//!
//! RFC 6238 §5.2: a code is accepted once. The caller stores the step of the last accepted
//! code per operator and passes it in; [`verify`] accepts only a later step, so a code seen
//! over someone's shoulder (or replayed from a log) cannot be used again, not even within its
//! own 30 seconds. The comparison is constant-time (totp-rs compares with
//! `constant_time_eq`).

use agent_secret_core::secret::SecretString;
use totp_rs::{Algorithm, Builder, Secret, Totp};
use zeroize::Zeroizing;

pub mod seal;

/// The issuer name authenticator apps show next to the account.
pub const ISSUER: &str = "Agent Secret Store";
const DIGITS: u8 = 6;
const STEP_SECONDS: u64 = 30;
const SKEW_STEPS: u16 = 1;

/// An operator's shared TOTP secret (160 random bits). Stored encrypted, shown once at
/// enrollment as base32 and as an `otpauth://` URL.
pub struct TotpSecret(Zeroizing<Vec<u8>>);

/// The secret or the account name cannot be used. Never contains the secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TotpError {
    #[error("the TOTP secret is not valid base32 of at least 128 bits")]
    BadSecret,
    #[error("the account name cannot be put in an otpauth URL: {0}")]
    BadAccount(String),
}

/// Why a presented code was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TotpRejected {
    #[error("a TOTP code is 6 digits")]
    Malformed,
    #[error("the TOTP code is wrong or expired")]
    Wrong,
    #[error("the TOTP code was already used; wait for the next one")]
    Replayed,
}

impl TotpSecret {
    pub fn generate() -> TotpSecret {
        // 160 bits from the OS RNG.
        TotpSecret(Zeroizing::new(Secret::generate().as_ref().to_vec()))
    }

    pub fn from_base32(text: &str) -> Result<TotpSecret, TotpError> {
        let bytes = Secret::try_from_base32(text.trim())
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| TotpError::BadSecret)?;
        if bytes.len() < 16 {
            return Err(TotpError::BadSecret);
        }
        Ok(TotpSecret(Zeroizing::new(bytes)))
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Result<TotpSecret, TotpError> {
        let bytes = Zeroizing::new(bytes);
        if bytes.len() < 16 {
            return Err(TotpError::BadSecret);
        }
        Ok(TotpSecret(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn to_base32(&self) -> SecretString {
        SecretString::new(Secret::from(self.0.to_vec()).to_base32())
    }

    /// The `otpauth://totp/…` URL an authenticator app scans (it holds the secret).
    pub fn enrollment_url(&self, account: &str) -> Result<SecretString, TotpError> {
        let totp = self.totp(account)?;
        totp.to_url()
            .map(SecretString::new)
            .map_err(|e| TotpError::BadAccount(e.to_string()))
    }

    fn totp(&self, account: &str) -> Result<Totp, TotpError> {
        Builder::new()
            .with_algorithm(Algorithm::SHA1)
            .with_digits(DIGITS)
            .with_step_duration(STEP_SECONDS)
            .with_skew(SKEW_STEPS)
            .with_secret(self.0.to_vec())
            .with_account_name(account)
            .with_issuer(Some(ISSUER))
            .build()
            .map_err(|e| TotpError::BadAccount(e.to_string()))
    }
}

impl std::fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpSecret([REDACTED])")
    }
}

/// Checks `code` at `now` (Unix seconds). Accepted only if it matches a step within the skew
/// window *and* that step is after `last_used_step`; returns the step to record as used.
pub fn verify(
    secret: &TotpSecret,
    code: &str,
    now: u64,
    last_used_step: Option<u64>,
) -> Result<u64, TotpRejected> {
    // Bounded before anything is copied: the code comes from a login form.
    if code.len() > 2 * usize::from(DIGITS) {
        return Err(TotpRejected::Malformed);
    }
    let digits: String = code.chars().filter(|c| *c != ' ').collect();
    if digits.len() != usize::from(DIGITS) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TotpRejected::Malformed);
    }
    let totp = secret.totp("operator").map_err(|_| TotpRejected::Wrong)?;
    let step = totp.check(&digits, now).ok_or(TotpRejected::Wrong)?;
    match last_used_step {
        Some(last) if step <= last => Err(TotpRejected::Replayed),
        _ => Ok(step),
    }
}

#[cfg(test)]
mod tests;
