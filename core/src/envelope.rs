//! Envelope encryption of secret values.
//!
//! Each secret version gets its own random 256-bit DEK; the value is sealed with AES-256-GCM
//! and the DEK is wrapped by the tenant's KEK through [`Kms`]. Both layers authenticate the
//! same canonical AAD ([`SecretAad`]), so a ciphertext moved to another tenant, path or
//! version fails to open instead of decrypting as the wrong secret. Only the sidecar calls
//! [`open`]; the control plane stores [`Envelope`]s it cannot read on its own.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::cipher::{aes_open, aes_seal, random_nonce, NONCE_LEN, TAG_LEN};
use crate::ids::TenantId;
use crate::kms::{Kms, KmsError, WrappedDek};
use crate::secret::SecretBytes;

pub use crate::cipher::{Dek, InvalidDekLength};

/// Domain-separation tag at the start of [`SecretAad::to_bytes`]; bump `v1` to change format.
const SECRET_AAD_TAG: &[u8] = b"agent-secret-store/secret/v1";

/// What a secret ciphertext is bound to. See [`SecretAad::to_bytes`] for the byte format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SecretAad<'a> {
    pub tenant: TenantId,
    pub path: &'a str,
    pub version: i64,
}

/// A sealed secret version as stored by the control plane. In JSON, byte fields are standard
/// (padded) base64 strings.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub key_name: String,
    pub key_version: String,
    #[serde(with = "crate::cipher::base64_bytes")]
    pub wrapped_dek: Vec<u8>,
    #[serde(with = "crate::cipher::base64_bytes")]
    pub nonce: Vec<u8>,
    /// AES-256-GCM ciphertext followed by the 16-byte tag.
    #[serde(with = "crate::cipher::base64_bytes")]
    pub ciphertext: Vec<u8>,
}

/// Why sealing or opening failed. Messages never contain key or plaintext bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error(transparent)]
    Kms(#[from] KmsError),
    #[error("authentication failed: wrong tenant, path, version or key, or altered data")]
    Decrypt,
    #[error("the secret could not be encrypted")]
    Encrypt,
    #[error("malformed envelope: {0}")]
    Malformed(&'static str),
}

impl SecretAad<'_> {
    /// The canonical AAD bytes. **Stable format**: every stored ciphertext depends on it, so it
    /// must never change; a new format needs a new tag.
    ///
    /// ```text
    /// b"agent-secret-store/secret/v1"
    /// u32 BE  byte length of the tenant id string   || tenant id, hyphenated lowercase UUID
    /// u32 BE  byte length of the path (UTF-8)        || path
    /// i64 BE  version
    /// ```
    ///
    /// Length prefixes make the encoding injective: no two (tenant, path, version) triples
    /// share bytes, whatever characters the path contains.
    pub fn to_bytes(&self) -> Vec<u8> {
        let tenant = self.tenant.to_string();
        let mut out =
            Vec::with_capacity(SECRET_AAD_TAG.len() + 8 + tenant.len() + self.path.len() + 8);
        out.extend_from_slice(SECRET_AAD_TAG);
        push_length_prefixed(&mut out, tenant.as_bytes());
        push_length_prefixed(&mut out, self.path.as_bytes());
        out.extend_from_slice(&self.version.to_be_bytes());
        out
    }
}

impl Envelope {
    /// The KEK version this envelope's DEK is wrapped under.
    fn wrapped(&self) -> WrappedDek {
        WrappedDek {
            key_name: self.key_name.clone(),
            key_version: self.key_version.clone(),
            ciphertext: self.wrapped_dek.clone(),
        }
    }
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("key_name", &self.key_name)
            .field("key_version", &self.key_version)
            .field("wrapped_dek_len", &self.wrapped_dek.len())
            .field("nonce_len", &self.nonce.len())
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

/// Seals `plaintext` for the row described by `aad` under a fresh DEK and nonce.
pub async fn seal(
    kms: &dyn Kms,
    aad: &SecretAad<'_>,
    plaintext: &SecretBytes,
) -> Result<Envelope, EnvelopeError> {
    let aad_bytes = aad.to_bytes();
    let dek = Dek::generate();
    let nonce = random_nonce();
    let ciphertext = aes_seal(dek.expose(), &nonce, &aad_bytes, plaintext.expose())
        .map_err(|_| EnvelopeError::Encrypt)?;
    let wrapped = kms.wrap_dek(aad.tenant, &dek, &aad_bytes).await?;
    Ok(Envelope {
        key_name: wrapped.key_name,
        key_version: wrapped.key_version,
        wrapped_dek: wrapped.ciphertext,
        nonce: nonce.to_vec(),
        ciphertext,
    })
}

/// Opens an envelope sealed for exactly the row described by `aad`.
///
/// A DEK that fails authentication in the KMS (`KmsError::Unwrap`) is reported as
/// [`EnvelopeError::Decrypt`], like a failing value tag: both mean "not this row's secret".
pub async fn open(
    kms: &dyn Kms,
    aad: &SecretAad<'_>,
    envelope: &Envelope,
) -> Result<SecretBytes, EnvelopeError> {
    check_shape(envelope)?;
    let aad_bytes = aad.to_bytes();
    let dek = unwrap_for(kms, aad.tenant, &aad_bytes, envelope).await?;
    aes_open(
        dek.expose(),
        &envelope.nonce,
        &aad_bytes,
        &envelope.ciphertext,
    )
    .map(SecretBytes::from)
    .map_err(|_| EnvelopeError::Decrypt)
}

/// Re-wraps a stored DEK under exactly `to_version` of the tenant's KEK (after a rotation).
///
/// It needs only the wrapped DEK and what its AAD binds: the value's nonce and ciphertext are
/// never read, so no secret plaintext is produced. Wrapping under a named version rather than
/// "the primary" matters with Cloud KMS, which may keep using the previous primary for a while.
pub async fn rewrap_dek(
    kms: &dyn Kms,
    aad: &SecretAad<'_>,
    wrapped: &WrappedDek,
    to_version: &str,
) -> Result<WrappedDek, KmsError> {
    let aad_bytes = aad.to_bytes();
    let dek = kms.unwrap_dek(aad.tenant, wrapped, &aad_bytes).await?;
    kms.wrap_dek_under(aad.tenant, &dek, &aad_bytes, to_version)
        .await
}

async fn unwrap_for(
    kms: &dyn Kms,
    tenant: TenantId,
    aad_bytes: &[u8],
    envelope: &Envelope,
) -> Result<Dek, EnvelopeError> {
    match kms.unwrap_dek(tenant, &envelope.wrapped(), aad_bytes).await {
        Ok(dek) => Ok(dek),
        Err(KmsError::Unwrap) => Err(EnvelopeError::Decrypt),
        Err(e) => Err(EnvelopeError::Kms(e)),
    }
}

fn check_shape(envelope: &Envelope) -> Result<(), EnvelopeError> {
    if envelope.nonce.len() != NONCE_LEN {
        return Err(EnvelopeError::Malformed("nonce must be 12 bytes"));
    }
    if envelope.ciphertext.len() < TAG_LEN {
        return Err(EnvelopeError::Malformed(
            "ciphertext is shorter than the GCM tag",
        ));
    }
    Ok(())
}

fn push_length_prefixed(out: &mut Vec<u8>, field: &[u8]) {
    // Paths and ids are validated to a few hundred bytes long before they get here; a field
    // of 4 GiB or more cannot be built into a request, so saturating is never reached.
    let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(field);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use base64::engine::general_purpose::STANDARD as STANDARD_B64;
    use base64::Engine as _;
    use proptest::prelude::*;
    use tempfile::TempDir;
    use uuid::Uuid;

    use super::*;
    use crate::kms::local::{LocalKms, MasterKey};

    const PATH: &str = "prod/db/password";

    struct Fixture {
        _dir: TempDir,
        kms: LocalKms,
        tenant: TenantId,
        other: TenantId,
    }

    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let kms = LocalKms::open_or_create(dir.path().join("keyring.json"), MasterKey::generate())
            .unwrap();
        let (tenant, other) = (TenantId::new(), TenantId::new());
        kms.create_tenant_key(tenant).await.unwrap();
        kms.create_tenant_key(other).await.unwrap();
        Fixture {
            _dir: dir,
            kms,
            tenant,
            other,
        }
    }

    fn aad(tenant: TenantId) -> SecretAad<'static> {
        SecretAad {
            tenant,
            path: PATH,
            version: 3,
        }
    }

    fn value() -> SecretBytes {
        SecretBytes::new(b"sk-live-0123456789".to_vec())
    }

    #[test]
    fn secret_aad_bytes_are_a_pinned_stable_format() {
        let aad = SecretAad {
            tenant: TenantId(Uuid::from_u128(1)),
            path: "db/password",
            version: 7,
        };
        let expected = "6167656e742d7365637265742d73746f72652f7365637265742f7631\
                        0000002430303030303030302d303030302d303030302d303030302d\
                        303030303030303030303031\
                        0000000b64622f70617373776f7264\
                        0000000000000007";
        assert_eq!(hex::encode(aad.to_bytes()), expected);
    }

    proptest! {
        #[test]
        fn distinct_rows_have_distinct_aad(
            p1 in ".{0,12}", v1 in any::<i64>(), p2 in ".{0,12}", v2 in any::<i64>(),
        ) {
            let tenant = TenantId(Uuid::from_u128(42));
            let a = SecretAad { tenant, path: &p1, version: v1 };
            let b = SecretAad { tenant, path: &p2, version: v2 };
            prop_assert_eq!(a.to_bytes() == b.to_bytes(), p1 == p2 && v1 == v2);
        }
    }

    #[tokio::test]
    async fn seal_then_open_round_trips() {
        let f = fixture().await;
        let envelope = seal(&f.kms, &aad(f.tenant), &value()).await.unwrap();
        assert_eq!(envelope.key_name, format!("tenant-{}", f.tenant));
        assert_eq!(envelope.key_version, "1");
        assert_eq!(envelope.nonce.len(), NONCE_LEN);
        assert_eq!(envelope.ciphertext.len(), value().len() + TAG_LEN);
        let opened = open(&f.kms, &aad(f.tenant), &envelope).await.unwrap();
        assert_eq!(opened, value());
    }

    #[tokio::test]
    async fn envelope_does_not_open_for_another_tenant() {
        let f = fixture().await;
        let envelope = seal(&f.kms, &aad(f.tenant), &value()).await.unwrap();
        let err = open(&f.kms, &aad(f.other), &envelope).await.unwrap_err();
        assert_eq!(err, EnvelopeError::Kms(KmsError::WrongKey));
    }

    #[tokio::test]
    async fn envelope_does_not_open_for_another_path_or_version() {
        let f = fixture().await;
        let envelope = seal(&f.kms, &aad(f.tenant), &value()).await.unwrap();
        let other_path = SecretAad {
            path: "prod/db/password2",
            ..aad(f.tenant)
        };
        let other_version = SecretAad {
            version: 4,
            ..aad(f.tenant)
        };
        for wrong in [other_path, other_version] {
            let err = open(&f.kms, &wrong, &envelope).await.unwrap_err();
            assert_eq!(err, EnvelopeError::Decrypt, "{wrong:?}");
        }
    }

    #[tokio::test]
    async fn value_aad_is_checked_even_when_the_dek_unwraps() {
        // Re-wrap the DEK for another path, keeping the value ciphertext: the GCM tag on the
        // value must still refuse it, so the value layer does not rely on the KMS layer.
        let f = fixture().await;
        let envelope = seal(&f.kms, &aad(f.tenant), &value()).await.unwrap();
        let moved = SecretAad {
            path: "prod/other",
            ..aad(f.tenant)
        };
        let dek = f
            .kms
            .unwrap_dek(f.tenant, &envelope.wrapped(), &aad(f.tenant).to_bytes())
            .await
            .unwrap();
        let rewrapped = f
            .kms
            .wrap_dek(f.tenant, &dek, &moved.to_bytes())
            .await
            .unwrap();
        let forged = Envelope {
            wrapped_dek: rewrapped.ciphertext,
            ..envelope
        };
        let err = open(&f.kms, &moved, &forged).await.unwrap_err();
        assert_eq!(err, EnvelopeError::Decrypt);
    }

    #[tokio::test]
    async fn tampering_with_any_byte_field_fails() {
        let f = fixture().await;
        let envelope = seal(&f.kms, &aad(f.tenant), &value()).await.unwrap();
        let flip = |bytes: &mut Vec<u8>| bytes[0] ^= 0x01;
        let mut tampered = Vec::new();
        for field in 0..3 {
            let mut e = envelope.clone();
            match field {
                0 => flip(&mut e.ciphertext),
                1 => flip(&mut e.nonce),
                _ => flip(&mut e.wrapped_dek),
            }
            tampered.push(e);
        }
        for e in &tampered {
            let err = open(&f.kms, &aad(f.tenant), e).await.unwrap_err();
            assert_eq!(err, EnvelopeError::Decrypt, "{e:?}");
        }
    }

    #[tokio::test]
    async fn wrong_key_references_and_shapes_fail() {
        let f = fixture().await;
        let envelope = seal(&f.kms, &aad(f.tenant), &value()).await.unwrap();
        let renamed = Envelope {
            key_name: format!("tenant-{}", f.other),
            ..envelope.clone()
        };
        let unknown_version = Envelope {
            key_version: "99".into(),
            ..envelope.clone()
        };
        let short_nonce = Envelope {
            nonce: vec![0; 8],
            ..envelope.clone()
        };
        let open_err = |e: Envelope| {
            let kms = &f.kms;
            let tenant = f.tenant;
            async move { open(kms, &aad(tenant), &e).await.unwrap_err() }
        };
        assert_eq!(
            open_err(renamed).await,
            EnvelopeError::Kms(KmsError::WrongKey)
        );
        assert!(matches!(
            open_err(unknown_version).await,
            EnvelopeError::Kms(KmsError::UnknownKeyVersion { .. })
        ));
        assert!(matches!(
            open_err(short_nonce).await,
            EnvelopeError::Malformed(_)
        ));
    }

    #[tokio::test]
    async fn each_seal_uses_a_fresh_dek_and_nonce() {
        let f = fixture().await;
        let a = seal(&f.kms, &aad(f.tenant), &value()).await.unwrap();
        let b = seal(&f.kms, &aad(f.tenant), &value()).await.unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
        let aad_bytes = aad(f.tenant).to_bytes();
        let dek_a = f
            .kms
            .unwrap_dek(f.tenant, &a.wrapped(), &aad_bytes)
            .await
            .unwrap();
        let dek_b = f
            .kms
            .unwrap_dek(f.tenant, &b.wrapped(), &aad_bytes)
            .await
            .unwrap();
        assert_ne!(dek_a.expose(), dek_b.expose());
    }

    #[tokio::test]
    async fn rewrap_moves_to_the_primary_version_without_touching_the_value() {
        let f = fixture().await;
        let old = seal(&f.kms, &aad(f.tenant), &value()).await.unwrap();
        f.kms.rotate(f.tenant).await.unwrap();
        let primary = f.kms.primary_key(f.tenant).await.unwrap().key_version;
        let wrapped = rewrap_dek(&f.kms, &aad(f.tenant), &old.wrapped(), &primary)
            .await
            .unwrap();
        let new = Envelope {
            key_name: wrapped.key_name,
            key_version: wrapped.key_version,
            wrapped_dek: wrapped.ciphertext,
            ..old.clone()
        };
        assert_eq!(
            (old.key_version.as_str(), new.key_version.as_str()),
            ("1", "2")
        );
        assert_eq!((&new.nonce, &new.ciphertext), (&old.nonce, &old.ciphertext));
        assert_eq!(open(&f.kms, &aad(f.tenant), &new).await.unwrap(), value());
    }

    #[tokio::test]
    async fn envelope_json_uses_standard_base64_and_debug_shows_no_bytes() {
        let f = fixture().await;
        let envelope = seal(&f.kms, &aad(f.tenant), &value()).await.unwrap();
        let json: serde_json::Value = serde_json::to_value(&envelope).unwrap();
        let nonce = json["nonce"].as_str().unwrap().to_owned();
        assert_eq!(STANDARD_B64.decode(&nonce).unwrap(), envelope.nonce);
        let back: Envelope = serde_json::from_value(json).unwrap();
        assert_eq!(back, envelope);
        let shown = format!("{envelope:?}");
        assert!(shown.contains("ciphertext_len") && !shown.contains(&nonce));
    }
}
