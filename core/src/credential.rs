//! Opaque bearer credentials: operator tokens, agent keys, scoped tokens and sidecar keys.
//!
//! The server never stores a credential, only a keyed hash of it under a server-side pepper, and
//! finds the row by the id embedded in it; so a database dump alone lets nobody authenticate.
//!
//! # Format (stable; secret scanners and other tools may rely on it)
//!
//! ```text
//! {prefix}{id}_{secret}_{checksum}                                         90 ASCII bytes
//! asst_0190f3a2b4c87d5e9f0a1b2c3d4e5f60_Xk3...43 chars...9Qz_1a2b3c4d
//! ```
//!
//! * `prefix`: 5 bytes naming the kind — `asso_` operator, `assa_` agent, `asst_` scoped token,
//!   `assc_` sidecar — so a leaked credential is recognisable and one kind is never accepted as
//!   another.
//! * `id`: the row's UUID as 32 lowercase hex digits (no hyphens).
//! * `secret`: 43 characters drawn uniformly from `[0-9A-Za-z]` by the OS RNG
//!   (62^43 > 2^256, so at least 256 bits of entropy).
//! * `checksum`: CRC-32 (IEEE) of the *body* `{prefix}{id}_{secret}`, as 8 lowercase hex digits.
//!   It lets scanners and the server reject typos and random strings without a database lookup;
//!   it is not a security feature.
//!
//! Regex: `ass[oats]_[0-9a-f]{32}_[0-9A-Za-z]{43}_[0-9a-f]{8}`.
//!
//! The stored hash is HMAC-SHA256(pepper, body). Hashing the whole body rather than the random
//! part alone binds the hash to its kind and id: a hash copied to another row or another
//! credential table does not verify. Comparison is constant time.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use rand::distr::Alphanumeric;
use rand::rngs::OsRng;
use rand::{Rng, RngCore, TryRngCore};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::secret::SecretString;

type HmacSha256 = Hmac<Sha256>;

const PREFIX_LEN: usize = 5;
const ID_LEN: usize = 32;
const SECRET_LEN: usize = 43;
const CHECKSUM_LEN: usize = 8;
/// `{prefix}{id}_{secret}`.
const BODY_LEN: usize = PREFIX_LEN + ID_LEN + 1 + SECRET_LEN;
/// Length of every credential string.
pub const CREDENTIAL_LEN: usize = BODY_LEN + 1 + CHECKSUM_LEN;
/// Shortest pepper accepted, in bytes.
pub const MIN_PEPPER_LEN: usize = 32;

/// Which kind of principal a credential authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CredentialKind {
    Operator,
    Agent,
    Token,
    Sidecar,
}

/// The server-side HMAC key. Never stored next to the hashes it keys.
#[derive(Clone)]
pub struct Pepper(Zeroizing<Vec<u8>>);

/// A freshly minted credential: hand `token` to its holder once, store `id` and `hash`.
pub struct IssuedCredential {
    pub id: Uuid,
    /// The full bearer string, shown exactly once.
    pub token: SecretString,
    /// HMAC-SHA256(pepper, body) to store.
    pub hash: [u8; 32],
}

/// A syntactically valid credential presented by a client, not yet verified.
pub struct PresentedCredential {
    pub kind: CredentialKind,
    pub id: Uuid,
    /// `{prefix}{id}_{secret}`: what the stored hash covers.
    body: Zeroizing<String>,
}

/// Why a presented credential was refused before any lookup. Never contains the credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("credential is malformed")]
    Malformed,
    #[error("expected {expected} credential, got {found} credential")]
    WrongKind {
        expected: CredentialKind,
        found: CredentialKind,
    },
    #[error("credential checksum does not match (mistyped or truncated?)")]
    BadChecksum,
    #[error("pepper must be at least {MIN_PEPPER_LEN} bytes")]
    WeakPepper,
}

impl CredentialKind {
    pub const ALL: [CredentialKind; 4] = [
        CredentialKind::Operator,
        CredentialKind::Agent,
        CredentialKind::Token,
        CredentialKind::Sidecar,
    ];

    /// The 5-byte prefix every credential of this kind starts with.
    pub fn prefix(self) -> &'static str {
        match self {
            CredentialKind::Operator => "asso_",
            CredentialKind::Agent => "assa_",
            CredentialKind::Token => "asst_",
            CredentialKind::Sidecar => "assc_",
        }
    }

    /// The kind whose prefix `s` starts with, if any (no other validation).
    pub fn from_prefix(s: &str) -> Option<CredentialKind> {
        CredentialKind::ALL
            .into_iter()
            .find(|kind| s.starts_with(kind.prefix()))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::Operator => "operator",
            CredentialKind::Agent => "agent",
            CredentialKind::Token => "token",
            CredentialKind::Sidecar => "sidecar",
        }
    }
}

impl fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Pepper {
    /// Wrap key material (e.g. the contents of `pepper_file`); at least 32 bytes.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Pepper, CredentialError> {
        let bytes = Zeroizing::new(bytes);
        if bytes.len() < MIN_PEPPER_LEN {
            return Err(CredentialError::WeakPepper);
        }
        Ok(Pepper(bytes))
    }

    /// A fresh random 32-byte pepper from the OS RNG.
    pub fn generate() -> Pepper {
        let mut bytes = Zeroizing::new(vec![0u8; MIN_PEPPER_LEN]);
        OsRng.unwrap_err().fill_bytes(&mut bytes);
        Pepper(bytes)
    }

    /// HMAC-SHA256 keyed by the pepper; also used to pepper operator passwords before bcrypt.
    pub fn mac(&self, data: &[u8]) -> [u8; 32] {
        // HMAC accepts keys of every length, so `new_from_slice` cannot fail.
        #[allow(clippy::expect_used)]
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(data);
        mac.finalize().into_bytes().into()
    }
}

impl fmt::Debug for Pepper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pepper([REDACTED])")
    }
}

/// Mint a credential of `kind` with a fresh time-ordered (v7) id.
pub fn issue(kind: CredentialKind, pepper: &Pepper) -> IssuedCredential {
    issue_with_id(kind, Uuid::now_v7(), pepper)
}

/// Mint a credential of `kind` for a row whose id the caller already chose.
pub fn issue_with_id(kind: CredentialKind, id: Uuid, pepper: &Pepper) -> IssuedCredential {
    // Sized up front so no reallocation leaves a stray copy of the secret behind.
    let mut token = String::with_capacity(CREDENTIAL_LEN);
    token.push_str(kind.prefix());
    token.push_str(&id.simple().to_string());
    token.push('_');
    push_random_secret(&mut token);
    let hash = pepper.mac(token.as_bytes());
    let checksum = checksum(&token);
    token.push('_');
    token.push_str(&checksum);
    IssuedCredential {
        id,
        token: SecretString::new(token),
        hash,
    }
}

fn push_random_secret(out: &mut String) {
    let mut rng = OsRng.unwrap_err();
    for _ in 0..SECRET_LEN {
        out.push(char::from(rng.sample(Alphanumeric)));
    }
}

fn checksum(body: &str) -> String {
    format!("{:08x}", crc32fast::hash(body.as_bytes()))
}

/// Whether `sum` (lowercase hex, checked by the caller) is `body`'s checksum. Compared as a
/// number: every agent request is checked, and formatting the expected text would allocate.
fn checksum_matches(body: &str, sum: &str) -> bool {
    u32::from_str_radix(sum, 16).is_ok_and(|n| n == crc32fast::hash(body.as_bytes()))
}

impl fmt::Debug for IssuedCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCredential")
            .field("id", &self.id)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl PresentedCredential {
    /// Check the shape and checksum of `s` and take it apart. Cheap; no pepper needed.
    pub fn parse(s: &str) -> Result<PresentedCredential, CredentialError> {
        let (kind, id, body) = split(s)?;
        Ok(PresentedCredential {
            kind,
            id,
            body: Zeroizing::new(body.to_owned()),
        })
    }

    /// Like [`parse`](Self::parse), but a credential of another kind is an error.
    pub fn parse_kind(
        expected: CredentialKind,
        s: &str,
    ) -> Result<PresentedCredential, CredentialError> {
        let presented = PresentedCredential::parse(s)?;
        check_kind(expected, presented.kind)?;
        Ok(presented)
    }

    /// The id of `s` after the checks of [`parse_kind`](Self::parse_kind), without keeping a
    /// copy of the secret: for the sidecar, which checks every request's token this way
    /// and needs only its id (the control plane verifies the rest).
    pub fn id_of_kind(expected: CredentialKind, s: &str) -> Result<Uuid, CredentialError> {
        let (kind, id, _) = split(s)?;
        check_kind(expected, kind)?;
        Ok(id)
    }

    /// The keyed hash the store holds for this credential.
    pub fn hash(&self, pepper: &Pepper) -> [u8; 32] {
        pepper.mac(self.body.as_bytes())
    }

    /// Compare against the stored hash in constant time; false for a hash of the wrong length.
    pub fn verify(&self, pepper: &Pepper, stored_hash: &[u8]) -> bool {
        self.hash(pepper).as_slice().ct_eq(stored_hash).into()
    }
}

/// Check the shape and checksum of `s`: its kind, id and body (all but the checksum).
fn split(s: &str) -> Result<(CredentialKind, Uuid, &str), CredentialError> {
    if s.len() != CREDENTIAL_LEN || !s.is_ascii() {
        return Err(CredentialError::Malformed);
    }
    // All ASCII and of the right length, so these byte splits are on char boundaries.
    let (body, rest) = s.split_at(BODY_LEN);
    let kind = CredentialKind::from_prefix(body).ok_or(CredentialError::Malformed)?;
    let (id_hex, rest_of_body) = body[PREFIX_LEN..].split_at(ID_LEN);
    let secret = rest_of_body
        .strip_prefix('_')
        .ok_or(CredentialError::Malformed)?;
    let sum = rest.strip_prefix('_').ok_or(CredentialError::Malformed)?;
    if !is_lower_hex(id_hex) || !is_lower_hex(sum) || !is_base62(secret) {
        return Err(CredentialError::Malformed);
    }
    let id = Uuid::try_parse(id_hex).map_err(|_| CredentialError::Malformed)?;
    if !checksum_matches(body, sum) {
        return Err(CredentialError::BadChecksum);
    }
    Ok((kind, id, body))
}

fn check_kind(expected: CredentialKind, found: CredentialKind) -> Result<(), CredentialError> {
    if found != expected {
        return Err(CredentialError::WrongKind { expected, found });
    }
    Ok(())
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn is_base62(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric())
}

impl fmt::Debug for PresentedCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PresentedCredential")
            .field("kind", &self.kind)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
