//! The local KMS backend: per-tenant KEK versions in one keyring file sealed by a master key.
//!
//! It is the default for `dev` and single-host installs, where no cloud KMS exists. The file
//! is AES-256-GCM sealed as a whole, so the disk never holds a KEK in the clear, and writes
//! are atomic (temp file + rename + directory fsync) so a crash leaves the old or the new
//! keyring, never half of one. Several processes share the file (a running server, the CLI
//! `tenant create`, sidecars reading a copy): writers serialize on an advisory lock on the
//! sibling `<keyring>.lock` file and re-read under it, and readers reload on a key they lack.
//!
//! File format (`agent-secret-store-keyring/v1`):
//!
//! ```text
//! outer: {"format":"agent-secret-store-keyring/v1","nonce":b64(12),"ciphertext":b64}
//!        AES-256-GCM(master key, nonce, inner JSON, AAD = the format string)
//! inner: {"<tenant uuid>":{"primary":2,"versions":{"1":{"key":b64(32),"created_at":rfc3339}}}}
//! ```
//!
//! A wrapped DEK is `nonce(12) || AES-256-GCM(KEK, DEK, AAD)`; its key name is
//! `tenant-{tenant_id}` and its key version the decimal version number.
//!
//! File I/O runs inline in the async trait methods. It happens only on tenant creation,
//! rotation and the one reload for a key not yet in memory: a few small syscalls, rarer than
//! the cost of moving the state into a blocking task would justify.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError, RwLock};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chrono::{DateTime, SubsecRound, Utc};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

use super::{tenant_key_id, KeyInfo, KeyRef, Kms, KmsError, WrappedDek};
use crate::envelope::{
    aes_open, aes_seal, random_key, random_nonce, Dek, KEY_LEN, NONCE_LEN, TAG_LEN,
};
use crate::ids::TenantId;
use crate::secret::SecretString;

/// The `format` field of the outer file, also its AAD.
const FORMAT: &str = "agent-secret-store-keyring/v1";
/// Base64 length of a 32-byte key (with padding).
const KEY_B64_LEN: usize = 44;
/// Mode of the keyring, its temp files and its lock file.
const PRIVATE_MODE: u32 = 0o600;

/// The key that seals the keyring file. Wiped on drop, never printed.
pub struct MasterKey(Zeroizing<[u8; KEY_LEN]>);

/// The local keyring-file KMS.
pub struct LocalKms {
    path: PathBuf,
    master: MasterKey,
    /// The last keyring read or written. Guards are never held across `.await`.
    state: RwLock<Keyring>,
    /// Identity of the file `state` was read from, so a rotation written by another process
    /// (`kms rotate` next to a running server) is picked up before the next wrap.
    stamp: Mutex<Option<FileStamp>>,
}

/// Inode and modification time: the rename in `write_keyring` always changes the inode.
#[derive(Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    ino: u64,
    mtime: i64,
    mtime_nsec: i64,
}

/// Inner JSON: tenant id → that tenant's KEK versions.
#[derive(Default, Serialize, Deserialize)]
#[serde(transparent)]
struct Keyring(BTreeMap<TenantId, TenantKeys>);

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantKeys {
    primary: u32,
    versions: BTreeMap<u32, KekVersion>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KekVersion {
    key: Kek,
    created_at: DateTime<Utc>,
    /// Set by `kms retire-version`; such a version no longer unwraps. Omitted when false, so
    /// keyrings that never retired a version stay readable by older releases.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    disabled: bool,
}

/// One KEK version's key bytes; (de)serialized as base64 without unzeroized copies.
#[derive(Clone)]
struct Kek(Zeroizing<[u8; KEY_LEN]>);

/// Outer JSON of the keyring file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SealedFile {
    format: String,
    #[serde(with = "crate::envelope::base64_bytes")]
    nonce: Vec<u8>,
    #[serde(with = "crate::envelope::base64_bytes")]
    ciphertext: Vec<u8>,
}

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

impl LocalKms {
    /// Opens the keyring at `path`, creating an empty one (mode 0600) if the file does not exist.
    /// A wrong master key is KmsError::WrongMasterKey and the file is left untouched.
    pub fn open_or_create(
        path: impl Into<PathBuf>,
        master: MasterKey,
    ) -> Result<LocalKms, KmsError> {
        let path = path.into();
        let _lock = lock_exclusive(&path)?;
        let ring = match read_keyring(&path, &master)? {
            Some(ring) => ring,
            None => {
                let ring = Keyring::default();
                write_keyring(&path, &master, &ring)?;
                ring
            }
        };
        Ok(LocalKms::with_state(path, master, ring))
    }

    /// Opens an existing keyring; missing file is an error (the sidecar uses this).
    /// Needs only read access: no lock file is created.
    pub fn open(path: impl Into<PathBuf>, master: MasterKey) -> Result<LocalKms, KmsError> {
        let path = path.into();
        let ring = read_keyring(&path, &master)?.ok_or_else(|| missing_file(&path))?;
        Ok(LocalKms::with_state(path, master, ring))
    }

    /// Re-reads the file (the sidecar calls this once when an envelope names a version it lacks).
    pub fn reload(&self) -> Result<(), KmsError> {
        // Reading under the write guard orders this reload with in-process updates, so an
        // older file read can never replace a newer keyring in memory.
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        // Stamp first: a write racing this read leaves a stale stamp, so the next check reloads.
        let stamp = file_stamp(&self.path);
        *state = read_keyring(&self.path, &self.master)?.ok_or_else(|| missing_file(&self.path))?;
        *self.stamp.lock().unwrap_or_else(PoisonError::into_inner) = stamp;
        Ok(())
    }

    /// Reloads only if the file was replaced since it was last read: one `stat`.
    fn reload_if_changed(&self) -> Result<(), KmsError> {
        let current = file_stamp(&self.path);
        let known = *self.stamp.lock().unwrap_or_else(PoisonError::into_inner);
        if current.is_some() && current == known {
            return Ok(());
        }
        self.reload()
    }

    /// Every tenant with its primary key version, ordered by tenant id (for status output).
    pub fn tenants(&self) -> Vec<(TenantId, KeyRef)> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        state
            .0
            .iter()
            .map(|(tenant, keys)| (*tenant, key_ref(*tenant, keys.primary)))
            .collect()
    }

    fn with_state(path: PathBuf, master: MasterKey, ring: Keyring) -> LocalKms {
        // Taken after the read, so at worst the first wrap re-reads an unchanged file.
        let stamp = file_stamp(&path);
        LocalKms {
            path,
            master,
            state: RwLock::new(ring),
            stamp: Mutex::new(stamp),
        }
    }

    /// Read-modify-write of the file under the cross-process lock; `change` returns its result
    /// and whether the keyring changed (only then is the file rewritten).
    fn update<T>(
        &self,
        change: impl FnOnce(&mut Keyring) -> Result<(T, bool), KmsError>,
    ) -> Result<T, KmsError> {
        let _lock = lock_exclusive(&self.path)?;
        let mut ring =
            read_keyring(&self.path, &self.master)?.ok_or_else(|| missing_file(&self.path))?;
        let (out, changed) = change(&mut ring)?;
        if changed {
            write_keyring(&self.path, &self.master, &ring)?;
        }
        // Still under the file lock, so in-process updates land in file order.
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        *state = ring;
        *self.stamp.lock().unwrap_or_else(PoisonError::into_inner) = file_stamp(&self.path);
        Ok(out)
    }

    /// The KEK for `version` (primary if `None`), reloading the file once if it is unknown.
    fn find_reloading(
        &self,
        tenant: TenantId,
        version: Option<u32>,
    ) -> Result<(u32, Kek), KmsError> {
        match self.find(tenant, version) {
            Err(KmsError::UnknownTenant(_) | KmsError::UnknownKeyVersion { .. }) => {
                self.reload()?;
                self.find(tenant, version)
            }
            found => found,
        }
    }

    fn find(&self, tenant: TenantId, version: Option<u32>) -> Result<(u32, Kek), KmsError> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        state.find(tenant, version)
    }

    fn set_disabled(
        &self,
        tenant: TenantId,
        key_version: &str,
        disabled: bool,
    ) -> Result<(), KmsError> {
        let unknown = || KmsError::UnknownKeyVersion {
            key_name: key_name(tenant),
            key_version: key_version.to_owned(),
        };
        let version = parse_version(key_version).ok_or_else(unknown)?;
        self.update(|ring| {
            let keys = ring
                .0
                .get_mut(&tenant)
                .ok_or(KmsError::UnknownTenant(tenant))?;
            if disabled && keys.primary == version {
                return Err(KmsError::PrimaryVersion {
                    key_name: key_name(tenant),
                    key_version: key_version.to_owned(),
                });
            }
            let entry = keys.versions.get_mut(&version).ok_or_else(unknown)?;
            let changed = entry.disabled != disabled;
            entry.disabled = disabled;
            Ok(((), changed))
        })
    }

    /// Base64 of a KEK, so tests can prove it never reaches the disk or `Debug` output.
    #[cfg(test)]
    pub(super) fn kek_base64_for_test(&self, tenant: TenantId, version: u32) -> Option<String> {
        let (_, kek) = self.find(tenant, Some(version)).ok()?;
        Some(STANDARD.encode(&kek.0[..]))
    }
}

impl fmt::Debug for LocalKms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tenants = self.state.read().map_or(0, |state| state.0.len());
        f.debug_struct("LocalKms")
            .field("path", &self.path)
            .field("tenants", &tenants)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Kms for LocalKms {
    async fn create_tenant_key(&self, tenant: TenantId) -> Result<KeyRef, KmsError> {
        self.update(|ring| ring.ensure_tenant(tenant))
    }

    async fn primary_key(&self, tenant: TenantId) -> Result<KeyRef, KmsError> {
        self.reload_if_changed()?;
        let (version, _) = self.find_reloading(tenant, None)?;
        Ok(key_ref(tenant, version))
    }

    async fn key_info(&self, tenant: TenantId) -> Result<KeyInfo, KmsError> {
        self.reload_if_changed()?;
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        let keys = state
            .0
            .get(&tenant)
            .ok_or(KmsError::UnknownTenant(tenant))?;
        let created_at = keys.versions.get(&keys.primary).map(|v| v.created_at);
        Ok(KeyInfo {
            key_name: key_name(tenant),
            primary_version: keys.primary.to_string(),
            primary_created_at: created_at,
            rotates_itself: false,
        })
    }

    async fn rotate(&self, tenant: TenantId) -> Result<KeyRef, KmsError> {
        self.update(|ring| ring.rotate(tenant).map(|key| (key, true)))
    }

    async fn disable_version(&self, tenant: TenantId, key_version: &str) -> Result<(), KmsError> {
        self.set_disabled(tenant, key_version, true)
    }

    async fn enable_version(&self, tenant: TenantId, key_version: &str) -> Result<(), KmsError> {
        self.set_disabled(tenant, key_version, false)
    }

    async fn wrap_dek_under(
        &self,
        tenant: TenantId,
        dek: &Dek,
        aad: &[u8],
        key_version: &str,
    ) -> Result<WrappedDek, KmsError> {
        let version = parse_version(key_version).ok_or_else(|| KmsError::UnknownKeyVersion {
            key_name: key_name(tenant),
            key_version: key_version.to_owned(),
        })?;
        let (version, kek) = self.find_reloading(tenant, Some(version))?;
        wrap_with(tenant, version, &kek, dek, aad)
    }

    async fn wrap_dek(
        &self,
        tenant: TenantId,
        dek: &Dek,
        aad: &[u8],
    ) -> Result<WrappedDek, KmsError> {
        self.reload_if_changed()?;
        let (version, kek) = self.find_reloading(tenant, None)?;
        wrap_with(tenant, version, &kek, dek, aad)
    }

    async fn unwrap_dek(
        &self,
        tenant: TenantId,
        wrapped: &WrappedDek,
        aad: &[u8],
    ) -> Result<Dek, KmsError> {
        if wrapped.key_name != key_name(tenant) {
            return Err(KmsError::WrongKey);
        }
        let version =
            parse_version(&wrapped.key_version).ok_or_else(|| KmsError::UnknownKeyVersion {
                key_name: wrapped.key_name.clone(),
                key_version: wrapped.key_version.clone(),
            })?;
        let (_, kek) = self.find_reloading(tenant, Some(version))?;
        unwrap_with(&kek, &wrapped.ciphertext, aad)
    }
}

impl Keyring {
    fn find(&self, tenant: TenantId, version: Option<u32>) -> Result<(u32, Kek), KmsError> {
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
    fn ensure_tenant(&mut self, tenant: TenantId) -> Result<(KeyRef, bool), KmsError> {
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

    fn rotate(&mut self, tenant: TenantId) -> Result<KeyRef, KmsError> {
        let keys = self
            .0
            .get_mut(&tenant)
            .ok_or(KmsError::UnknownTenant(tenant))?;
        let version = keys.add_primary()?;
        Ok(key_ref(tenant, version))
    }

    /// Rejects a keyring whose primary versions do not exist.
    fn validate(&self) -> Result<(), KmsError> {
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

    fn version_count(&self) -> usize {
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
fn key_name(tenant: TenantId) -> String {
    tenant_key_id(tenant)
}

fn key_ref(tenant: TenantId, version: u32) -> KeyRef {
    KeyRef {
        key_name: key_name(tenant),
        key_version: version.to_string(),
    }
}

/// Accepts only the canonical decimal form we write, so one version has one name.
fn parse_version(text: &str) -> Option<u32> {
    let version: u32 = text.parse().ok()?;
    (version.to_string() == text).then_some(version)
}

fn unwrap_with(kek: &Kek, ciphertext: &[u8], aad: &[u8]) -> Result<Dek, KmsError> {
    if ciphertext.len() != NONCE_LEN + KEY_LEN + TAG_LEN {
        return Err(KmsError::Unwrap);
    }
    let (nonce, sealed) = ciphertext.split_at(NONCE_LEN);
    let dek = aes_open(&kek.0, nonce, aad, sealed).map_err(|_| KmsError::Unwrap)?;
    Dek::from_bytes(&dek).map_err(|_| KmsError::Unwrap)
}

/// `nonce(12) || AES-256-GCM(KEK, DEK, AAD)` under `version` of the tenant's key.
fn wrap_with(
    tenant: TenantId,
    version: u32,
    kek: &Kek,
    dek: &Dek,
    aad: &[u8],
) -> Result<WrappedDek, KmsError> {
    let nonce = random_nonce();
    let sealed = aes_seal(&kek.0, &nonce, aad, dek.expose())
        .map_err(|_| KmsError::Corrupt("a DEK could not be wrapped".into()))?;
    let mut ciphertext = Vec::with_capacity(NONCE_LEN + sealed.len());
    ciphertext.extend_from_slice(&nonce);
    ciphertext.extend_from_slice(&sealed);
    Ok(WrappedDek {
        key_name: key_name(tenant),
        key_version: version.to_string(),
        ciphertext,
    })
}

fn file_stamp(path: &Path) -> Option<FileStamp> {
    fs::metadata(path).ok().map(|m| FileStamp {
        ino: m.ino(),
        mtime: m.mtime(),
        mtime_nsec: m.mtime_nsec(),
    })
}

fn read_keyring(path: &Path, master: &MasterKey) -> Result<Option<Keyring>, KmsError> {
    match fs::read(path) {
        Ok(bytes) => open_keyring(&bytes, master).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error("read", path, &e)),
    }
}

fn open_keyring(bytes: &[u8], master: &MasterKey) -> Result<Keyring, KmsError> {
    let sealed: SealedFile = serde_json::from_slice(bytes)
        .map_err(|e| KmsError::Corrupt(format!("the keyring file is not valid: {e}")))?;
    if sealed.format != FORMAT {
        return Err(KmsError::Corrupt(format!(
            "unsupported keyring format {:?}",
            sealed.format
        )));
    }
    if sealed.nonce.len() != NONCE_LEN {
        return Err(KmsError::Corrupt(
            "the keyring nonce is not 12 bytes".into(),
        ));
    }
    let inner = aes_open(
        &master.0,
        &sealed.nonce,
        FORMAT.as_bytes(),
        &sealed.ciphertext,
    )
    .map_err(|_| KmsError::WrongMasterKey)?;
    // The serde error is not shown: it could quote the decrypted contents.
    let ring: Keyring = serde_json::from_slice(&inner)
        .map_err(|_| KmsError::Corrupt("the decrypted keyring is not valid".into()))?;
    ring.validate()?;
    Ok(ring)
}

fn seal_keyring(ring: &Keyring, master: &MasterKey) -> Result<Vec<u8>, KmsError> {
    // Room for every entry up front: a growing Vec would free unzeroized copies of KEKs.
    let mut inner = Zeroizing::new(Vec::with_capacity(1024 + 256 * ring.version_count()));
    serde_json::to_writer(&mut *inner, ring)
        .map_err(|_| KmsError::Corrupt("the keyring could not be serialized".into()))?;
    let nonce = random_nonce();
    let ciphertext = aes_seal(&master.0, &nonce, FORMAT.as_bytes(), &inner)
        .map_err(|_| KmsError::Corrupt("the keyring could not be encrypted".into()))?;
    let sealed = SealedFile {
        format: FORMAT.to_owned(),
        nonce: nonce.to_vec(),
        ciphertext,
    };
    serde_json::to_vec_pretty(&sealed)
        .map_err(|_| KmsError::Corrupt("the keyring could not be serialized".into()))
}

fn write_keyring(path: &Path, master: &MasterKey, ring: &Keyring) -> Result<(), KmsError> {
    let bytes = seal_keyring(ring, master)?;
    write_atomically(path, &bytes)
}

/// Temp file (0600) in the same directory, fsync, rename over `path`, fsync the directory.
fn write_atomically(path: &Path, contents: &[u8]) -> Result<(), KmsError> {
    let temp = sibling(path, &format!(".{}.tmp", hex::encode(random_nonce())));
    let written = write_new_private(&temp, contents).and_then(|()| fs::rename(&temp, path));
    if let Err(e) = written {
        // Best effort: the temp name is random, so a leftover never blocks a later write.
        let _ignored = fs::remove_file(&temp);
        return Err(io_error("write", path, &e));
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("sync the directory of", path, &e))
}

fn write_new_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_MODE)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Takes the advisory lock on `<path>.lock`; it is released when the returned file closes.
fn lock_exclusive(path: &Path) -> Result<File, KmsError> {
    let lock_path = sibling(path, ".lock");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(PRIVATE_MODE)
        .open(&lock_path)
        .map_err(|e| io_error("open the lock file", &lock_path, &e))?;
    file.lock().map_err(|e| io_error("lock", &lock_path, &e))?;
    Ok(file)
}

/// `path` with `suffix` appended to its file name.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

fn missing_file(path: &Path) -> KmsError {
    KmsError::Io(format!(
        "the keyring file {} does not exist",
        path.display()
    ))
}

fn io_error(action: &str, path: &Path, e: &io::Error) -> KmsError {
    KmsError::Io(format!("cannot {action} {}: {e}", path.display()))
}
