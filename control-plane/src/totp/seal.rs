//! Operators' TOTP secrets at rest: sealed under a key the control plane owns, not the KMS.
//!
//! Checking a code needs the shared secret in plaintext on every login and every enrollment
//! confirmation. Sealed under the tenant's KEK, that meant KMS *decrypt* rights for the control
//! plane, and with Cloud KMS its identity is deliberately encrypt-only (a compromised control
//! plane or database alone must reveal no secret value). So TOTP secrets are sealed with
//! AES-256-GCM ([`agent_secret_core::cipher`]) under a key derived from the server pepper:
//! `HMAC-SHA256(pepper, "agent-secret-store/operator-totp-seal/v1\0")`. The context keeps the
//! key apart from everything else the pepper keys (credential, password, session and CSRF
//! hashes all HMAC other inputs, and none of them is stored raw), and the key opens nothing
//! but TOTP secrets. Each seal takes a fresh random nonce; the AAD ([`totp_aad`]) binds the
//! tenant and the operator under a domain tag of its own, so a sealed secret copied to another
//! operator's row, another tenant, or a secret version's row does not open.
//!
//! The trade-off, stated in docs/security.md: whoever holds the pepper (the control plane) can
//! read TOTP secrets, as any TOTP verifier must; it still cannot decrypt secret values. A new
//! pepper voids every enrollment, as it voids every password.

use agent_secret_core::cipher::{self, Dek, SealError, Sealed};
use agent_secret_core::credential::Pepper;
use agent_secret_core::ids::{OperatorId, TenantId};
use zeroize::Zeroizing;

use super::{TotpError, TotpSecret};

/// Domain separation from every other use of the pepper; bump `v1` to change the key.
const SEAL_KEY_CONTEXT: &[u8] = b"agent-secret-store/operator-totp-seal/v1\0";
/// The AAD's own tag: it can never equal a secret version's AAD.
const TOTP_AAD_TAG: &[u8] = b"agent-secret-store/operator-totp/v1";

/// The key TOTP secrets are sealed under. Wiped on drop, never printed.
#[derive(Clone)]
pub struct TotpSealKey(Dek);

/// Why a stored TOTP secret could not be opened. Never contains key or secret bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TotpOpenError {
    /// Another pepper, another operator's row, or altered bytes.
    #[error("the sealed TOTP secret does not open: another pepper or row, or altered data")]
    Sealed(#[from] SealError),
    #[error(transparent)]
    Secret(#[from] TotpError),
}

impl TotpSealKey {
    /// The key `pepper` derives (cheap: one HMAC).
    pub fn from_pepper(pepper: &Pepper) -> TotpSealKey {
        let bytes = Zeroizing::new(pepper.mac(SEAL_KEY_CONTEXT));
        // HMAC-SHA256 output is 32 bytes, exactly a key's length: this cannot fail.
        #[allow(clippy::expect_used)]
        let key = Dek::from_bytes(bytes.as_ref()).expect("HMAC-SHA256 gives 32 bytes");
        TotpSealKey(key)
    }

    /// Seals `secret` for `operator` of `tenant` under a fresh nonce.
    pub fn seal(
        &self,
        tenant: TenantId,
        operator: OperatorId,
        secret: &TotpSecret,
    ) -> Result<Sealed, SealError> {
        cipher::seal(&self.0, &totp_aad(tenant, operator), secret.as_bytes())
    }

    /// Opens what [`TotpSealKey::seal`] sealed for exactly this tenant and operator.
    pub fn open(
        &self,
        tenant: TenantId,
        operator: OperatorId,
        sealed: &Sealed,
    ) -> Result<TotpSecret, TotpOpenError> {
        let plain = cipher::open(&self.0, &totp_aad(tenant, operator), sealed)?;
        Ok(TotpSecret::from_bytes(plain.to_vec())?)
    }
}

impl std::fmt::Debug for TotpSealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpSealKey([REDACTED])")
    }
}

/// The AAD of an operator's sealed TOTP secret: its own domain tag, then the tenant and the
/// operator id, length-prefixed (so no two rows share it).
pub fn totp_aad(tenant: TenantId, operator: OperatorId) -> Vec<u8> {
    let mut out = TOTP_AAD_TAG.to_vec();
    for field in [tenant.to_string(), operator.to_string()] {
        // Ids are UUID strings (36 bytes): the length always fits.
        let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(field.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use agent_secret_core::envelope::SecretAad;
    use uuid::Uuid;

    use super::*;

    fn ids() -> (TenantId, OperatorId, OperatorId) {
        (
            TenantId(Uuid::from_u128(1)),
            OperatorId(Uuid::from_u128(2)),
            OperatorId(Uuid::from_u128(3)),
        )
    }

    #[test]
    fn a_sealed_totp_secret_opens_for_its_own_operator_only() {
        let (tenant, alice, bob) = ids();
        let key = TotpSealKey::from_pepper(&Pepper::generate());
        let secret = TotpSecret::generate();
        let sealed = key.seal(tenant, alice, &secret).unwrap();
        let opened = key.open(tenant, alice, &sealed).unwrap();
        assert_eq!(opened.as_bytes(), secret.as_bytes());
        assert_eq!(
            key.open(tenant, bob, &sealed).unwrap_err(),
            TotpOpenError::Sealed(SealError::Decrypt),
            "alice's sealed secret moved to bob's row must not open"
        );
        let other_tenant = TenantId(Uuid::from_u128(9));
        assert!(key.open(other_tenant, alice, &sealed).is_err());
    }

    #[test]
    fn another_pepper_cannot_open_a_sealed_totp_secret() {
        let (tenant, alice, _) = ids();
        let pepper = Pepper::generate();
        let sealed = TotpSealKey::from_pepper(&pepper)
            .seal(tenant, alice, &TotpSecret::generate())
            .unwrap();
        assert!(TotpSealKey::from_pepper(&pepper)
            .open(tenant, alice, &sealed)
            .is_ok());
        assert_eq!(
            TotpSealKey::from_pepper(&Pepper::generate())
                .open(tenant, alice, &sealed)
                .unwrap_err(),
            TotpOpenError::Sealed(SealError::Decrypt)
        );
    }

    #[test]
    fn sealing_takes_a_fresh_nonce_and_hides_the_secret() {
        let (tenant, alice, _) = ids();
        let key = TotpSealKey::from_pepper(&Pepper::generate());
        let secret = TotpSecret::generate();
        let a = key.seal(tenant, alice, &secret).unwrap();
        let b = key.seal(tenant, alice, &secret).unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
        let raw = secret.as_bytes();
        assert!(!a.ciphertext.windows(raw.len()).any(|w| w == raw));
        assert!(!format!("{key:?}{a:?}").contains(secret.to_base32().expose()));
    }

    #[test]
    fn the_totp_aad_never_equals_a_secret_versions_aad() {
        let (tenant, alice, bob) = ids();
        let aad = totp_aad(tenant, alice);
        assert_ne!(aad, totp_aad(tenant, bob));
        assert!(!aad.starts_with(b"agent-secret-store/secret/"));
        let version = SecretAad {
            tenant,
            path: "p",
            version: 1,
        };
        assert_ne!(aad, version.to_bytes());
    }
}
