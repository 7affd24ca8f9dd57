//! The fake's Cloud KMS state: key rings, CryptoKeys and their versions, and the operations on
//! them with the rules and messages Cloud KMS applies. Only symmetric `ENCRYPT_DECRYPT` keys at
//! `SOFTWARE` or `HSM` protection exist here; asking for anything else is `UNIMPLEMENTED`
//! (a gap in the fake, not an error Cloud KMS would return).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::cipher::{self, KeyMaterial};
use super::status::{RpcCode, RpcError};
use super::wire::{
    duration_value, timestamp_value, Encoding, ALGORITHM, PROTECTION_LEVEL, PURPOSE, VERSION_STATE,
};

/// `CryptoKeyPurpose.ENCRYPT_DECRYPT`.
pub(super) const ENCRYPT_DECRYPT: i32 = 1;
/// `ProtectionLevel.SOFTWARE`.
pub(super) const SOFTWARE: i32 = 1;
/// `ProtectionLevel.HSM`.
pub(super) const HSM: i32 = 2;
/// `CryptoKeyVersionAlgorithm.GOOGLE_SYMMETRIC_ENCRYPTION`.
const GOOGLE_SYMMETRIC_ENCRYPTION: i32 = 1;

/// Cloud KMS keeps destroyed material for 30 days by default; reported on every key.
const DESTROY_SCHEDULED_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);
const MIN_ROTATION_PERIOD: Duration = Duration::from_secs(24 * 3600);
const MAX_ROTATION_PERIOD: Duration = Duration::from_secs(876_000 * 3600);
const MAX_SOFTWARE_DATA: usize = 64 * 1024;
const MAX_HSM_DATA: usize = 8 * 1024;

/// The Cloud KMS rejection of a ciphertext it cannot open under the named key.
const DECRYPTION_FAILED: &str =
    "Decryption failed: verify that 'name' refers to the correct CryptoKey.";

/// What a CreateCryptoKey request asks for.
pub(super) struct NewKey {
    pub(super) purpose: i32,
    pub(super) protection_level: i32,
    pub(super) algorithm: i32,
    pub(super) rotation_period: Option<Duration>,
    pub(super) next_rotation_time: Option<DateTime<Utc>>,
    pub(super) labels: BTreeMap<String, String>,
}

/// A CryptoKeyVersion's lifecycle state (the ones the fake can reach).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum VersionState {
    Enabled,
    Disabled,
}

impl VersionState {
    pub(super) fn number(self) -> i32 {
        match self {
            Self::Enabled => 1,
            Self::Disabled => 2,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Enabled => "ENABLED",
            Self::Disabled => "DISABLED",
        }
    }
}

pub(super) struct KeyVersion {
    pub(super) id: u32,
    pub(super) name: String,
    pub(super) state: VersionState,
    protection_level: i32,
    algorithm: i32,
    create_time: DateTime<Utc>,
    material: KeyMaterial,
}

impl KeyVersion {
    pub(super) fn to_json(&self, enc: Encoding) -> Value {
        json!({
            "name": self.name,
            "state": enc.enumeration(&VERSION_STATE, self.state.number()),
            "protectionLevel": enc.enumeration(&PROTECTION_LEVEL, self.protection_level),
            "algorithm": enc.enumeration(&ALGORITHM, self.algorithm),
            "createTime": timestamp_value(self.create_time),
            "generateTime": timestamp_value(self.create_time),
        })
    }

    fn check_enabled(&self) -> Result<(), RpcError> {
        match self.state {
            VersionState::Enabled => Ok(()),
            state => Err(RpcError::failed_precondition(format!(
                "{} is not enabled, current state is: {}.",
                self.name,
                state.name()
            ))),
        }
    }
}

pub(super) struct CryptoKey {
    pub(super) name: String,
    pub(super) purpose: i32,
    pub(super) protection_level: i32,
    algorithm: i32,
    pub(super) rotation_period: Option<Duration>,
    pub(super) next_rotation_time: Option<DateTime<Utc>>,
    pub(super) labels: BTreeMap<String, String>,
    create_time: DateTime<Utc>,
    pub(super) primary: Option<u32>,
    pub(super) versions: BTreeMap<u32, KeyVersion>,
}

impl CryptoKey {
    pub(super) fn to_json(&self, enc: Encoding) -> Value {
        let mut out = Map::new();
        out.insert("name".into(), self.name.clone().into());
        if let Some(primary) = self.primary.and_then(|id| self.versions.get(&id)) {
            out.insert("primary".into(), primary.to_json(enc));
        }
        out.insert("purpose".into(), enc.enumeration(&PURPOSE, self.purpose));
        out.insert("createTime".into(), timestamp_value(self.create_time));
        if let Some(t) = self.next_rotation_time {
            out.insert("nextRotationTime".into(), timestamp_value(t));
        }
        if let Some(p) = self.rotation_period {
            out.insert("rotationPeriod".into(), duration_value(p));
        }
        out.insert(
            "versionTemplate".into(),
            json!({
                "protectionLevel": enc.enumeration(&PROTECTION_LEVEL, self.protection_level),
                "algorithm": enc.enumeration(&ALGORITHM, self.algorithm),
            }),
        );
        if !self.labels.is_empty() {
            out.insert("labels".into(), json!(self.labels));
        }
        out.insert(
            "destroyScheduledDuration".into(),
            duration_value(DESTROY_SCHEDULED_DURATION),
        );
        Value::Object(out)
    }

    fn add_version(&mut self, state: VersionState) -> u32 {
        let id = self.versions.keys().next_back().map_or(1, |last| last + 1);
        let version = KeyVersion {
            id,
            name: format!("{}/cryptoKeyVersions/{id}", self.name),
            state,
            protection_level: self.protection_level,
            algorithm: self.algorithm,
            create_time: Utc::now(),
            material: KeyMaterial::generate(),
        };
        self.versions.insert(id, version);
        id
    }

    fn check_data_size(&self, plaintext: usize, aad: usize) -> Result<(), RpcError> {
        let fits = if self.protection_level == HSM {
            plaintext + aad <= MAX_HSM_DATA
        } else {
            plaintext <= MAX_SOFTWARE_DATA && aad <= MAX_SOFTWARE_DATA
        };
        if fits {
            Ok(())
        } else {
            Err(RpcError::invalid_argument(format!(
                "The request data exceeds the maximum size for protection level {}.",
                if self.protection_level == HSM {
                    "HSM"
                } else {
                    "SOFTWARE"
                }
            )))
        }
    }
}

/// An Encrypt result.
pub(super) struct Sealed {
    pub(super) version_name: String,
    pub(super) ciphertext: Vec<u8>,
    pub(super) protection_level: i32,
}

/// A Decrypt result.
pub(super) struct Opened {
    pub(super) plaintext: Vec<u8>,
    pub(super) used_primary: bool,
    pub(super) protection_level: i32,
}

#[derive(Default)]
pub(super) struct Kms {
    key_rings: BTreeSet<String>,
    keys: BTreeMap<String, CryptoKey>,
}

impl Kms {
    pub(super) fn add_key_ring(&mut self, name: String) {
        self.key_rings.insert(name);
    }

    pub(super) fn create_key(
        &mut self,
        parent: &str,
        id: &str,
        new: NewKey,
        skip_initial_version: bool,
    ) -> Result<&CryptoKey, RpcError> {
        if !self.key_rings.contains(parent) {
            return Err(RpcError::not_found(format!("KeyRing {parent} not found.")));
        }
        let id_ok = (1..=63).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !id_ok {
            return Err(RpcError::invalid_argument(format!(
                "Invalid crypto_key_id \"{id}\": must match [a-zA-Z0-9_-]{{1,63}}."
            )));
        }
        let protection_level = check_new_key(&new)?;
        let name = format!("{parent}/cryptoKeys/{id}");
        if self.keys.contains_key(&name) {
            return Err(RpcError::new(
                RpcCode::AlreadyExists,
                format!("CryptoKey {name} already exists."),
            ));
        }
        let mut key = CryptoKey {
            name: name.clone(),
            purpose: new.purpose,
            protection_level,
            algorithm: GOOGLE_SYMMETRIC_ENCRYPTION,
            rotation_period: new.rotation_period,
            next_rotation_time: new.next_rotation_time,
            labels: new.labels,
            create_time: Utc::now(),
            primary: None,
            versions: BTreeMap::new(),
        };
        if !skip_initial_version {
            key.primary = Some(key.add_version(VersionState::Enabled));
        }
        Ok(self.keys.entry(name).or_insert(key))
    }

    pub(super) fn key(&self, name: &str) -> Result<&CryptoKey, RpcError> {
        self.keys
            .get(name)
            .ok_or_else(|| RpcError::not_found(format!("CryptoKey {name} not found.")))
    }

    fn key_mut(&mut self, name: &str) -> Result<&mut CryptoKey, RpcError> {
        self.keys
            .get_mut(name)
            .ok_or_else(|| RpcError::not_found(format!("CryptoKey {name} not found.")))
    }

    pub(super) fn version(&self, name: &str) -> Result<&KeyVersion, RpcError> {
        let (key, id) = split_version_name(name)?;
        self.key(key)?
            .versions
            .get(&id)
            .ok_or_else(|| RpcError::not_found(format!("CryptoKeyVersion {name} not found.")))
    }

    fn version_mut(&mut self, name: &str) -> Result<&mut KeyVersion, RpcError> {
        let (key, id) = split_version_name(name)?;
        self.key_mut(key)?
            .versions
            .get_mut(&id)
            .ok_or_else(|| RpcError::not_found(format!("CryptoKeyVersion {name} not found.")))
    }

    /// CreateCryptoKeyVersion: the next id, not primary.
    pub(super) fn create_version(
        &mut self,
        key_name: &str,
        state: VersionState,
    ) -> Result<&KeyVersion, RpcError> {
        let key = self.key_mut(key_name)?;
        let id = key.add_version(state);
        Ok(&key.versions[&id])
    }

    pub(super) fn update_primary(
        &mut self,
        key_name: &str,
        version_id: &str,
    ) -> Result<&CryptoKey, RpcError> {
        let key = self.key_mut(key_name)?;
        let id = version_id.parse::<u32>().map_err(|_| {
            RpcError::invalid_argument(format!("Invalid crypto_key_version_id \"{version_id}\"."))
        })?;
        let version = key.versions.get(&id).ok_or_else(|| {
            RpcError::not_found(format!(
                "CryptoKeyVersion {key_name}/cryptoKeyVersions/{id} not found."
            ))
        })?;
        version.check_enabled()?;
        key.primary = Some(id);
        Ok(key)
    }

    /// UpdateCryptoKeyVersion with `update_mask=state`: ENABLED <-> DISABLED.
    pub(super) fn set_state(
        &mut self,
        version_name: &str,
        state: VersionState,
    ) -> Result<&KeyVersion, RpcError> {
        let version = self.version_mut(version_name)?;
        version.state = state;
        Ok(version)
    }

    /// Automatic rotation: a new primary version, and the schedule moves one period on.
    pub(super) fn rotate(&mut self, key_name: &str) -> Result<u32, RpcError> {
        let key = self.key_mut(key_name)?;
        let id = key.add_version(VersionState::Enabled);
        key.primary = Some(id);
        if let (Some(next), Some(period)) = (key.next_rotation_time, key.rotation_period) {
            let period = chrono::Duration::from_std(period).unwrap_or(chrono::Duration::zero());
            key.next_rotation_time = Some(next + period);
        }
        Ok(id)
    }

    /// Encrypt under a CryptoKey's primary version, or under the named CryptoKeyVersion.
    /// For a CryptoKey name: its highest enabled version below the primary, as a version name.
    pub(super) fn previous_primary(&self, name: &str) -> Option<String> {
        let key = self.key(name).ok()?;
        let primary = key.primary?;
        key.versions
            .range(..primary)
            .rev()
            .find(|(_, v)| v.check_enabled().is_ok())
            .map(|(_, v)| v.name.clone())
    }

    pub(super) fn encrypt(
        &self,
        name: &str,
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Sealed, RpcError> {
        let (key, version) = if name.contains("/cryptoKeyVersions/") {
            let (key_name, _) = split_version_name(name)?;
            (self.key(key_name)?, self.version(name)?)
        } else {
            let key = self.key(name)?;
            let primary = key
                .primary
                .and_then(|id| key.versions.get(&id))
                .ok_or_else(|| {
                    RpcError::failed_precondition(format!(
                        "{name} has no primary CryptoKeyVersion."
                    ))
                })?;
            (key, primary)
        };
        if plaintext.is_empty() {
            return Err(RpcError::invalid_argument("plaintext: field is required."));
        }
        key.check_data_size(plaintext.len(), aad.len())?;
        version.check_enabled()?;
        Ok(Sealed {
            version_name: version.name.clone(),
            ciphertext: version.material.seal(version.id, aad, plaintext),
            protection_level: version.protection_level,
        })
    }

    /// Decrypt with whichever of this CryptoKey's versions the ciphertext names.
    pub(super) fn decrypt(
        &self,
        key_name: &str,
        aad: &[u8],
        ciphertext: &[u8],
    ) -> Result<Opened, RpcError> {
        let key = self.key(key_name)?;
        if ciphertext.is_empty() {
            return Err(RpcError::invalid_argument("ciphertext: field is required."));
        }
        key.check_data_size(0, aad.len())?;
        let version = cipher::version_of(ciphertext)
            .and_then(|id| key.versions.get(&id))
            .ok_or_else(|| RpcError::invalid_argument(DECRYPTION_FAILED))?;
        version.check_enabled()?;
        let plaintext = version
            .material
            .open(aad, ciphertext)
            .ok_or_else(|| RpcError::invalid_argument(DECRYPTION_FAILED))?;
        Ok(Opened {
            plaintext,
            used_primary: key.primary == Some(version.id),
            protection_level: version.protection_level,
        })
    }
}

/// Validates a CreateCryptoKey body as Cloud KMS does; returns the effective protection level.
fn check_new_key(new: &NewKey) -> Result<i32, RpcError> {
    match new.purpose {
        ENCRYPT_DECRYPT => {}
        0 => {
            return Err(RpcError::invalid_argument(
                "crypto_key.purpose: must be specified.",
            ))
        }
        other => {
            return Err(RpcError::new(
                RpcCode::Unimplemented,
                format!("the fake KMS implements only ENCRYPT_DECRYPT keys, not purpose {other}"),
            ))
        }
    }
    let protection_level = match new.protection_level {
        0 | SOFTWARE => SOFTWARE,
        HSM => HSM,
        3..=5 => {
            return Err(RpcError::new(
                RpcCode::Unimplemented,
                "the fake KMS implements only SOFTWARE and HSM protection levels",
            ))
        }
        other => {
            return Err(RpcError::invalid_argument(format!(
                "crypto_key.version_template.protection_level: unknown value {other}."
            )))
        }
    };
    if !matches!(new.algorithm, 0 | GOOGLE_SYMMETRIC_ENCRYPTION) {
        return Err(RpcError::invalid_argument(format!(
            "Algorithm {} is not compatible with purpose ENCRYPT_DECRYPT.",
            new.algorithm
        )));
    }
    if let Some(period) = new.rotation_period {
        if new.next_rotation_time.is_none() {
            return Err(RpcError::invalid_argument(
                "crypto_key.next_rotation_time must be set when rotation_period is set.",
            ));
        }
        if !(MIN_ROTATION_PERIOD..=MAX_ROTATION_PERIOD).contains(&period) {
            return Err(RpcError::invalid_argument(
                "crypto_key.rotation_period must be at least 24 hours and at most 876,000 hours.",
            ));
        }
    }
    Ok(protection_level)
}

fn split_version_name(name: &str) -> Result<(&str, u32), RpcError> {
    name.rsplit_once("/cryptoKeyVersions/")
        .and_then(|(key, id)| Some((key, id.parse().ok()?)))
        .ok_or_else(|| RpcError::not_found(format!("CryptoKeyVersion {name} not found.")))
}
