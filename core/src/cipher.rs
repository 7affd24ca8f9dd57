//! AES-256-GCM and the keys it takes: the primitives under both envelope encryption
//! ([`crate::envelope`]) and the local keyring ([`crate::kms::local`]), the base64 form
//! sealed bytes take in JSON, and [`seal`]/[`open`] for a caller that holds its own key (the
//! control plane seals operators' TOTP secrets under a key derived from its pepper, without
//! the KMS).
//!
//! They sit below both so that the envelope layer depends on the KMS layer and not the other
//! way round: a [`Dek`] is what a KMS wraps, and the envelope only orchestrates. Every buffer
//! that holds key or plaintext bytes is zeroized.

use std::fmt;

use aes_gcm::aead::{AeadInOut, Key, KeyInit, Nonce};
use aes_gcm::Aes256Gcm;
use zeroize::Zeroizing;

/// AES-256 key length in bytes.
pub(crate) const KEY_LEN: usize = 32;
/// AES-GCM nonce length in bytes (96 bits).
pub const NONCE_LEN: usize = 12;
/// AES-GCM tag length in bytes.
pub const TAG_LEN: usize = 16;

/// A data-encryption key: 32 random bytes, wiped on drop, never printed.
#[derive(Clone)]
pub struct Dek(Zeroizing<[u8; KEY_LEN]>);

/// Key bytes of the wrong length were offered as a DEK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a DEK must be 32 bytes, not {0}")]
pub struct InvalidDekLength(pub usize);

impl Dek {
    /// A fresh random 256-bit key from the operating system's CSPRNG.
    ///
    /// # Panics
    /// If the OS random number generator fails (as `random_key` explains).
    pub fn generate() -> Dek {
        Dek(random_key())
    }

    /// Wraps existing key bytes; they must be exactly 32 bytes long.
    pub fn from_bytes(bytes: &[u8]) -> Result<Dek, InvalidDekLength> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        if bytes.len() != KEY_LEN {
            return Err(InvalidDekLength(bytes.len()));
        }
        key.copy_from_slice(bytes);
        Ok(Dek(key))
    }

    /// Borrows the key bytes. Do not copy them into storage that is not zeroized.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for Dek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Dek([REDACTED])")
    }
}

/// 32 bytes from the OS CSPRNG, in a buffer wiped on drop.
///
/// # Panics
/// If the OS random number generator fails. A secret store must not continue with weak
/// keys, and `aead`'s own `Generate::generate` makes the same choice.
pub(crate) fn random_key() -> Zeroizing<[u8; KEY_LEN]> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    fill_random(&mut *key);
    key
}

/// A fresh random 96-bit GCM nonce. Panics like [`random_key`].
pub(crate) fn random_nonce() -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce);
    nonce
}

fn fill_random(buf: &mut [u8]) {
    if let Err(e) = getrandom::fill(buf) {
        panic!("the operating system's random number generator failed: {e}");
    }
}

/// AES-256-GCM encryption; returns ciphertext || tag. The working buffer is zeroized, so a
/// failure cannot leave plaintext behind in freed memory.
pub(crate) fn aes_seal(
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, aes_gcm::Error> {
    let cipher = Aes256Gcm::new(<&Key<Aes256Gcm>>::from(key));
    let mut buf = Zeroizing::new(Vec::with_capacity(plaintext.len() + TAG_LEN));
    buf.extend_from_slice(plaintext);
    cipher.encrypt_in_place(nonce.into(), aad, &mut *buf)?;
    Ok(std::mem::take(&mut *buf))
}

/// AES-256-GCM decryption of ciphertext || tag into a zeroizing buffer.
pub(crate) fn aes_open(
    key: &[u8; KEY_LEN],
    nonce: &[u8],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, aes_gcm::Error> {
    let nonce = <&Nonce<Aes256Gcm>>::try_from(nonce).map_err(|_| aes_gcm::Error)?;
    let cipher = Aes256Gcm::new(<&Key<Aes256Gcm>>::from(key));
    let mut buf = Zeroizing::new(ciphertext.to_vec());
    cipher.decrypt_in_place(nonce, aad, &mut *buf)?;
    Ok(buf)
}

/// Bytes sealed by [`seal`]: the random nonce, and the AES-256-GCM ciphertext followed by its
/// 16-byte tag. Neither is secret; `Debug` shows lengths only all the same.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed")
            .field("nonce_len", &self.nonce.len())
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

/// Why [`seal`] or [`open`] failed. Never contains key or plaintext bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the data could not be encrypted")]
    Encrypt,
    #[error("authentication failed: wrong key or binding, or altered data")]
    Decrypt,
}

/// Seals `plaintext` under `key` with a fresh random nonce, authenticating `aad` (the bytes
/// that bind the result to its row; start them with a domain tag of their own).
pub fn seal(key: &Dek, aad: &[u8], plaintext: &[u8]) -> Result<Sealed, SealError> {
    let nonce = random_nonce();
    let ciphertext =
        aes_seal(key.expose(), &nonce, aad, plaintext).map_err(|_| SealError::Encrypt)?;
    Ok(Sealed {
        nonce: nonce.to_vec(),
        ciphertext,
    })
}

/// Opens what [`seal`] sealed under the same `key` and `aad`, into a zeroizing buffer. A
/// nonce of the wrong length fails like a wrong key.
pub fn open(key: &Dek, aad: &[u8], sealed: &Sealed) -> Result<Zeroizing<Vec<u8>>, SealError> {
    aes_open(key.expose(), &sealed.nonce, aad, &sealed.ciphertext).map_err(|_| SealError::Decrypt)
}

/// Serde adapter: `Vec<u8>` as a standard base64 string.
pub(crate) mod base64_bytes {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        STANDARD
            .decode(text.as_bytes())
            .map_err(|_| serde::de::Error::custom("expected a standard base64 string"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn dek_from_bytes_requires_32_bytes_and_debug_is_redacted() {
        assert_eq!(
            Dek::from_bytes(&[7u8; 31]).unwrap_err(),
            InvalidDekLength(31)
        );
        assert_eq!(
            Dek::from_bytes(&[7u8; 33]).unwrap_err(),
            InvalidDekLength(33)
        );
        let dek = Dek::from_bytes(&[0xabu8; 32]).unwrap();
        assert_eq!(dek.expose(), &[0xabu8; 32]);
        let shown = format!("{dek:?}");
        assert!(!shown.contains("171") && !shown.to_lowercase().contains("abab"));
        assert_ne!(Dek::generate().expose(), Dek::generate().expose());
    }

    #[test]
    fn sealed_bytes_open_only_with_their_key_and_aad() {
        let key = Dek::generate();
        let sealed = seal(&key, b"tag/v1 row-a", b"plaintext").unwrap();
        assert_eq!(sealed.nonce.len(), NONCE_LEN);
        assert_eq!(sealed.ciphertext.len(), b"plaintext".len() + TAG_LEN);
        assert_eq!(
            open(&key, b"tag/v1 row-a", &sealed).unwrap().as_slice(),
            b"plaintext"
        );
        assert_eq!(
            open(&key, b"tag/v1 row-b", &sealed).unwrap_err(),
            SealError::Decrypt,
            "another row's AAD"
        );
        assert_eq!(
            open(&Dek::generate(), b"tag/v1 row-a", &sealed).unwrap_err(),
            SealError::Decrypt,
            "another key"
        );
        let mut short_nonce = sealed.clone();
        short_nonce.nonce.pop();
        assert_eq!(
            open(&key, b"tag/v1 row-a", &short_nonce).unwrap_err(),
            SealError::Decrypt
        );
        let again = seal(&key, b"tag/v1 row-a", b"plaintext").unwrap();
        assert_ne!(again.nonce, sealed.nonce, "a fresh nonce per seal");
        assert!(!format!("{sealed:?}").contains("plaintext"));
    }
}
