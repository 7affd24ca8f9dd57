//! Operator passwords: which ones are acceptable, and how they are stored and checked.
//!
//! Stored as bcrypt (cost 12 in production) over base64(HMAC-SHA256(pepper, password)): a
//! stolen database alone cannot be brute-forced without the pepper, which never sits next to
//! it, and the HMAC turns any password into 44 ASCII bytes, inside bcrypt's 72-byte limit and
//! free of NUL bytes. bcrypt's own comparison is constant-time. Hashing is deliberately slow
//! (about 0.25 s at cost 12): callers run it on the blocking pool.
//!
//! A new password must have at least [`PasswordRules::min_chars`] characters and must not be
//! one of the 10,000 most common passwords (`data/common-passwords-10k.txt`, MIT, from
//! SecLists), compared case-insensitively.

use std::collections::HashSet;
use std::sync::OnceLock;

use agent_secret_core::credential::Pepper;
use agent_secret_core::secret::SecretString;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use zeroize::Zeroizing;

/// The 10,000 most common passwords, one per line.
const COMMON_PASSWORDS: &str = include_str!("../data/common-passwords-10k.txt");
/// Longer passwords are refused: nobody types them, and they only cost HMAC time.
pub const MAX_PASSWORD_CHARS: usize = 1024;
/// Domain separation from the credential hashes the same pepper keys.
const PEPPER_CONTEXT: &[u8] = b"agent-secret-store operator password\0";

/// What a new password must satisfy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PasswordRules {
    pub min_chars: usize,
}

impl Default for PasswordRules {
    fn default() -> PasswordRules {
        PasswordRules { min_chars: 12 }
    }
}

/// Why a new password was refused. Never contains the password.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PasswordRejected {
    #[error("the password must have at least {min} characters")]
    TooShort { min: usize },
    #[error("the password must have at most {MAX_PASSWORD_CHARS} characters")]
    TooLong,
    #[error("the password is one of the most common passwords; choose another")]
    Common,
}

impl PasswordRules {
    /// Refuses a password that is too short, too long or common.
    pub fn check(&self, password: &SecretString) -> Result<(), PasswordRejected> {
        // A char is at most 4 bytes: this many bytes is too long without counting.
        if password.expose().len() > 4 * MAX_PASSWORD_CHARS {
            return Err(PasswordRejected::TooLong);
        }
        let chars = password.expose().chars().count();
        if chars < self.min_chars {
            return Err(PasswordRejected::TooShort {
                min: self.min_chars,
            });
        }
        if chars > MAX_PASSWORD_CHARS {
            return Err(PasswordRejected::TooLong);
        }
        let lowered = Zeroizing::new(password.expose().to_lowercase());
        if common_passwords().contains(lowered.as_str()) {
            return Err(PasswordRejected::Common);
        }
        Ok(())
    }
}

fn common_passwords() -> &'static HashSet<String> {
    static SET: OnceLock<HashSet<String>> = OnceLock::new();
    SET.get_or_init(|| {
        COMMON_PASSWORDS
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(str::to_lowercase)
            .collect()
    })
}

/// Hashing failed: bcrypt refused its input or cost. Never contains the password.
#[derive(Debug, thiserror::Error)]
#[error("cannot hash the password: {0}")]
pub struct HashError(String);

/// Hashes and verifies operator passwords under the server's pepper.
#[derive(Clone, Debug)]
pub struct PasswordHasher {
    pepper: std::sync::Arc<Pepper>,
    cost: u32,
}

impl PasswordHasher {
    /// Production cost.
    pub const COST: u32 = 12;

    pub fn new(pepper: std::sync::Arc<Pepper>) -> PasswordHasher {
        PasswordHasher {
            pepper,
            cost: Self::COST,
        }
    }

    /// A cheaper cost, for tests only (bcrypt's minimum is 4).
    pub fn with_cost(mut self, cost: u32) -> PasswordHasher {
        self.cost = cost;
        self
    }

    /// The `$2b$…` string to store.
    pub fn hash(&self, password: &SecretString) -> Result<String, HashError> {
        bcrypt::hash(self.peppered(password).as_bytes(), self.cost)
            .map_err(|e| HashError(e.to_string()))
    }

    /// Whether `password` matches `stored`; a malformed stored hash never matches.
    pub fn verify(&self, password: &SecretString, stored: &str) -> bool {
        bcrypt::verify(self.peppered(password).as_bytes(), stored).unwrap_or(false)
    }

    fn peppered(&self, password: &SecretString) -> Zeroizing<String> {
        let mut input = Zeroizing::new(Vec::with_capacity(
            PEPPER_CONTEXT.len() + password.expose().len(),
        ));
        input.extend_from_slice(PEPPER_CONTEXT);
        input.extend_from_slice(password.expose().as_bytes());
        Zeroizing::new(STANDARD.encode(self.pepper.mac(&input)))
    }
}

#[cfg(test)]
mod tests;
