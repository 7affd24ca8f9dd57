//! The fake's symmetric ciphertexts: real AES-256-GCM under a random key per CryptoKeyVersion,
//! self-describing so decrypt can find the version, as Cloud KMS ciphertexts are.
//!
//! Layout: `0x01 | version id (u32, big-endian) | nonce (12) | ciphertext || tag (16)`. The
//! GCM associated data is the caller's `additionalAuthenticatedData`, so wrong AAD, a flipped
//! bit, or a ciphertext made under another CryptoKey (whose version keys are different random
//! keys) all fail authentication.

use aes_gcm::aead::{AeadInOut, Key, KeyInit, Nonce};
use aes_gcm::Aes256Gcm;

const FORMAT: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + 4 + NONCE_LEN;

/// A CryptoKeyVersion's 256-bit AES key.
pub(super) struct KeyMaterial([u8; 32]);

impl KeyMaterial {
    pub(super) fn generate() -> Self {
        Self(rand::random())
    }

    pub(super) fn seal(&self, version: u32, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let mut sealed = plaintext.to_vec();
        Aes256Gcm::new(<&Key<Aes256Gcm>>::from(&self.0))
            .encrypt_in_place((&nonce).into(), aad, &mut sealed)
            .expect("AES-GCM encrypts any message under 64 GiB");
        let mut out = Vec::with_capacity(HEADER_LEN + sealed.len());
        out.push(FORMAT);
        out.extend_from_slice(&version.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// The plaintext, or `None` if the ciphertext or AAD fails authentication.
    pub(super) fn open(&self, aad: &[u8], ciphertext: &[u8]) -> Option<Vec<u8>> {
        version_of(ciphertext)?; // also checks the length the slicing below relies on
        let nonce = <&Nonce<Aes256Gcm>>::try_from(&ciphertext[5..HEADER_LEN]).ok()?;
        let mut buf = ciphertext[HEADER_LEN..].to_vec();
        Aes256Gcm::new(<&Key<Aes256Gcm>>::from(&self.0))
            .decrypt_in_place(nonce, aad, &mut buf)
            .ok()?;
        Some(buf)
    }
}

/// The version id a ciphertext claims, if it is in the fake's format at all.
pub(super) fn version_of(ciphertext: &[u8]) -> Option<u32> {
    if ciphertext.len() < HEADER_LEN + TAG_LEN || ciphertext[0] != FORMAT {
        return None;
    }
    let id: [u8; 4] = ciphertext[1..5].try_into().ok()?;
    Some(u32::from_be_bytes(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_data_opens_only_with_same_key_and_aad() {
        let key = KeyMaterial::generate();
        let ct = key.seal(7, b"aad", b"secret");
        assert_eq!(version_of(&ct), Some(7));
        assert_eq!(key.open(b"aad", &ct).as_deref(), Some(&b"secret"[..]));
        assert_eq!(key.open(b"other", &ct), None);
        assert_eq!(KeyMaterial::generate().open(b"aad", &ct), None);
        let mut flipped = ct.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(key.open(b"aad", &flipped), None);
    }
}
