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

mod file;
mod keyring;

use std::fmt;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError, RwLock};

#[cfg(test)]
use base64::{engine::general_purpose::STANDARD, Engine as _};

use self::file::{
    file_stamp, lock_exclusive, missing_file, read_keyring, write_keyring, FileStamp,
};
pub use self::keyring::MasterKey;
use self::keyring::{key_name, key_ref, parse_version, Kek, Keyring};
use super::{KeyInfo, KeyRef, Kms, KmsError, WrappedDek};
use crate::cipher::{aes_open, aes_seal, random_nonce, Dek, KEY_LEN, NONCE_LEN, TAG_LEN};
use crate::ids::TenantId;

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
