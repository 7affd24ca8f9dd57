//! The checks every Cloud KMS answer must pass before it is believed.
//!
//! CRC32C both ways (as Tink's `gcpkms` AEAD does) and key version names that must lie under
//! the key asked for: a failure is [`KmsError::Integrity`], a corrupted or tampered path to
//! the KMS, which callers never retry blindly.

use crate::kms::KmsError;

pub(super) fn integrity(what: &str) -> KmsError {
    KmsError::Integrity(what.to_owned())
}

/// The version id of `version_name`, which must be `{key_name}/cryptoKeyVersions/{id}`.
pub(super) fn version_under<'a>(
    key_name: &str,
    version_name: &'a str,
) -> Result<&'a str, KmsError> {
    version_name
        .strip_prefix(key_name)
        .and_then(|rest| rest.strip_prefix("/cryptoKeyVersions/"))
        .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()))
        .ok_or_else(|| {
            KmsError::Integrity(format!(
                "the service answered with key version {version_name:?}, which is not a version of {key_name}"
            ))
        })
}

pub(super) fn crc(data: &[u8]) -> i64 {
    i64::from(crc32c::crc32c(data))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn version_names_must_be_under_the_requested_key() {
        let key = "projects/p/locations/l/keyRings/r/cryptoKeys/tenant-a";
        assert_eq!(
            version_under(key, &format!("{key}/cryptoKeyVersions/7")).unwrap(),
            "7"
        );
        for bad in [
            "projects/p/locations/l/keyRings/r/cryptoKeys/tenant-b/cryptoKeyVersions/7".to_owned(),
            format!("{key}x/cryptoKeyVersions/7"),
            format!("{key}/cryptoKeyVersions/"),
            format!("{key}/cryptoKeyVersions/7/../8"),
            key.to_owned(),
        ] {
            assert!(
                matches!(version_under(key, &bad), Err(KmsError::Integrity(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn crc32c_matches_the_published_check_value() {
        // RFC 3720 B.4 check value of CRC-32C over "123456789".
        assert_eq!(crc(b"123456789"), 0xE306_9283);
    }
}
