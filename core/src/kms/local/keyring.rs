//! The keyring's contents: per-tenant KEK versions, and the master key that seals them.
//!
//! Key bytes live only in zeroizing buffers and are (de)serialized as base64 without an
//! unzeroized copy; nothing here renders a key in `Debug`.

use std::collections::BTreeMap;
use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chrono::{DateTime, SubsecRound, Utc};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

use crate::cipher::{random_key, KEY_LEN};
use crate::ids::TenantId;
use crate::kms::{tenant_key_id, KeyRef, KmsError};
use crate::secret::SecretString;

/// Base64 length of a 32-byte key (with padding).
const KEY_B64_LEN: usize = 44;

/// The key that seals the keyring file. Wiped on drop, never printed.
pub struct MasterKey(pub(super) Zeroizing<[u8; KEY_LEN]>);

/// Inner JSON: tenant id → that tenant's KEK versions.
#[derive(Default, Serialize, Deserialize)]
#[serde(transparent)]
pub(super) struct Keyring(pub(super) BTreeMap<TenantId, TenantKeys>);

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TenantKeys {
    pub(super) primary: u32,
    pub(super) versions: BTreeMap<u32, KekVersion>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KekVersion {
    pub(super) key: Kek,
    pub(super) created_at: DateTime<Utc>,
    /// Set by `kms retire-version`; such a version no longer unwraps. Omitted when false, so
    /// keyrings that never retired a version stay readable by older releases.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) disabled: bool,
}

/// One KEK version's key bytes; (de)serialized as base64 without unzeroized copies.
#[derive(Clone)]
pub(super) struct Kek(pub(super) Zeroizing<[u8; KEY_LEN]>);

struct KekVisitor;

impl MasterKey {
    /// Parses a standard-base64 master key (surrounding whitespace ignored) of exactly 32 bytes.
    pub fn from_base64(text: &str) -> Result<MasterKey, KmsError> {
        match decode_key(text.trim()) {
            Ok(key) => Ok(MasterKey(key)),
            Err(KeyDecodeError::Base64) => Err(KmsError::Corrupt(
                "the master key is not valid standard base64".into(),
            )),
            Err(KeyDecodeError::Length(n)) => Err(KmsError::Corrupt(format!(
                "the master key must decode to exactly 32 bytes, not {n}"
            ))),
        }
    }

    /// A fresh random master key.
    ///
    /// # Panics
    /// If the OS random number generator fails.
    pub fn generate() -> MasterKey {
        MasterKey(random_key())
    }

    /// The key in the form [`MasterKey::from_base64`] reads, for showing to an operator once.
    pub fn to_base64(&self) -> SecretString {
        let encoded = encode_key(&self.0);
        SecretString::new(String::from_utf8_lossy(&encoded[..]).into_owned())
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([REDACTED])")
    }
}

impl Keyring {
    pub(super) fn find(
        &self,
        tenant: TenantId,
        version: Option<u32>,
    ) -> Result<(u32, Kek), KmsError> {
        let keys = self.0.get(&tenant).ok_or(KmsError::UnknownTenant(tenant))?;
        let version = version.unwrap_or(keys.primary);
        match keys.versions.get(&version) {
            Some(entry) if entry.disabled => Err(KmsError::VersionDisabled {
                key_name: key_name(tenant),
                key_version: version.to_string(),
            }),
            Some(entry) => Ok((version, entry.key.clone())),
            None => Err(KmsError::UnknownKeyVersion {
                key_name: key_name(tenant),
                key_version: version.to_string(),
            }),
        }
    }

    /// Returns the tenant's primary key, creating version 1 if the tenant is new.
    pub(super) fn ensure_tenant(&mut self, tenant: TenantId) -> Result<(KeyRef, bool), KmsError> {
        if let Some(keys) = self.0.get(&tenant) {
            return Ok((key_ref(tenant, keys.primary), false));
        }
        let mut keys = TenantKeys {
            primary: 0,
            versions: BTreeMap::new(),
        };
        let version = keys.add_primary()?;
        self.0.insert(tenant, keys);
        Ok((key_ref(tenant, version), true))
    }

    pub(super) fn rotate(&mut self, tenant: TenantId) -> Result<KeyRef, KmsError> {
        let keys = self
            .0
            .get_mut(&tenant)
            .ok_or(KmsError::UnknownTenant(tenant))?;
        let version = keys.add_primary()?;
        Ok(key_ref(tenant, version))
    }

    /// Rejects a keyring whose primary versions do not exist.
    pub(super) fn validate(&self) -> Result<(), KmsError> {
        if self
            .0
            .values()
            .all(|keys| keys.versions.contains_key(&keys.primary))
        {
            Ok(())
        } else {
            Err(KmsError::Corrupt(
                "a tenant's primary key version is missing".into(),
            ))
        }
    }

    pub(super) fn version_count(&self) -> usize {
        self.0.values().map(|keys| keys.versions.len()).sum()
    }
}

impl TenantKeys {
    /// Adds a fresh KEK as the next version and makes it primary.
    fn add_primary(&mut self) -> Result<u32, KmsError> {
        let last = self.versions.keys().next_back().copied().unwrap_or(0);
        let version = last
            .checked_add(1)
            .ok_or_else(|| KmsError::Corrupt("key version numbers are exhausted".into()))?;
        let entry = KekVersion {
            key: Kek(random_key()),
            created_at: Utc::now().trunc_subsecs(0),
            disabled: false,
        };
        self.versions.insert(version, entry);
        self.primary = version;
        Ok(version)
    }
}

impl Serialize for Kek {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let encoded = encode_key(&self.0);
        let text = std::str::from_utf8(&encoded[..]).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(text)
    }
}

impl<'de> Deserialize<'de> for Kek {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(KekVisitor)
    }
}

impl Visitor<'_> for KekVisitor {
    type Value = Kek;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a base64 string of a 32-byte key")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Kek, E> {
        decode_key(text)
            .map(Kek)
            .map_err(|_| E::custom("a KEK must be standard base64 of 32 bytes"))
    }
}

enum KeyDecodeError {
    Base64,
    Length(usize),
}

fn decode_key(text: &str) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyDecodeError> {
    // Capacity ≥ base64's decode estimate, so decoding never reallocates (and leaves no copy).
    let mut decoded = Zeroizing::new(Vec::with_capacity(text.len() + 3));
    STANDARD
        .decode_vec(text, &mut decoded)
        .map_err(|_| KeyDecodeError::Base64)?;
    if decoded.len() != KEY_LEN {
        return Err(KeyDecodeError::Length(decoded.len()));
    }
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    key.copy_from_slice(&decoded);
    Ok(key)
}

fn encode_key(key: &[u8; KEY_LEN]) -> Zeroizing<[u8; KEY_B64_LEN]> {
    let mut out = Zeroizing::new([0u8; KEY_B64_LEN]);
    // 32 bytes always encode to exactly 44 characters, so the slice is always large enough.
    let _written = STANDARD.encode_slice(key, &mut out[..]);
    out
}

/// Local key names are the bare tenant key id.
pub(super) fn key_name(tenant: TenantId) -> String {
    tenant_key_id(tenant)
}

pub(super) fn key_ref(tenant: TenantId, version: u32) -> KeyRef {
    KeyRef {
        key_name: key_name(tenant),
        key_version: version.to_string(),
    }
}

/// Accepts only the canonical decimal form we write, so one version has one name.
pub(super) fn parse_version(text: &str) -> Option<u32> {
    let version: u32 = text.parse().ok()?;
    (version.to_string() == text).then_some(version)
}
