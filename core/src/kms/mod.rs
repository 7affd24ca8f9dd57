//! Key-encryption keys (KEKs) behind one narrow trait.
//!
//! Every tenant has its own KEK; data-encryption keys (DEKs) are wrapped by it and never
//! stored in the clear. The trait knows nothing about where KEKs live, so the control plane
//! and the sidecar run unchanged on the local keyring file ([`local::LocalKms`]) or on a cloud
//! KMS whose key names look like `projects/p/locations/l/keyRings/r/cryptoKeys/tenant-{id}`.
//! Key names and versions are therefore opaque strings chosen by the backend.

pub mod gcp;
pub mod local;
mod open;

#[cfg(test)]
mod tests;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::cipher::Dek;
use crate::ids::TenantId;

pub use open::{open, open_local, KeyringAccess, KmsBackend, KmsSettings, OpenError};

/// The tenant's KEK id in every backend: the local key name, the Cloud KMS CryptoKey id.
pub fn tenant_key_id(tenant: TenantId) -> String {
    format!("tenant-{tenant}")
}

/// A KEK version as the backend names it; stored beside every wrapped DEK.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRef {
    pub key_name: String,
    pub key_version: String,
}

/// What the rotation scheduler and `kms status` need to know about a tenant's KEK.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    pub key_name: String,
    pub primary_version: String,
    /// When the primary version was created, if the backend says.
    pub primary_created_at: Option<chrono::DateTime<chrono::Utc>>,
    /// True when the backend rotates the key on its own schedule (Cloud KMS rotation period);
    /// the control plane then only observes rotations instead of making them.
    pub rotates_itself: bool,
}

/// A DEK encrypted under one KEK version. The ciphertext format belongs to the backend.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedDek {
    pub key_name: String,
    pub key_version: String,
    pub ciphertext: Vec<u8>,
}

/// The tenant-isolating key service used by envelope encryption.
#[async_trait::async_trait]
pub trait Kms: Send + Sync + 'static {
    /// Creates the tenant's KEK if it does not exist (idempotent); returns its primary version.
    async fn create_tenant_key(&self, tenant: TenantId) -> Result<KeyRef, KmsError>;

    /// The version new DEKs are wrapped under.
    async fn primary_key(&self, tenant: TenantId) -> Result<KeyRef, KmsError>;

    /// The primary version and its age, read fresh from the backend (not from a cache), so a
    /// rotation made by another process is seen.
    async fn key_info(&self, tenant: TenantId) -> Result<KeyInfo, KmsError>;

    /// Adds a new primary version; old versions keep decrypting.
    async fn rotate(&self, tenant: TenantId) -> Result<KeyRef, KmsError>;

    /// Stops a non-primary version from unwrapping. Callers first prove that no stored DEK is
    /// wrapped under it (`kms retire-version`); [`Kms::enable_version`] undoes it.
    async fn disable_version(&self, tenant: TenantId, key_version: &str) -> Result<(), KmsError>;

    /// Undoes [`Kms::disable_version`] (a retirement that found a DEK it had not counted).
    async fn enable_version(&self, tenant: TenantId, key_version: &str) -> Result<(), KmsError>;

    /// Wraps `dek` under the tenant's primary KEK version, authenticating `aad` with it.
    async fn wrap_dek(
        &self,
        tenant: TenantId,
        dek: &Dek,
        aad: &[u8],
    ) -> Result<WrappedDek, KmsError>;

    /// Wraps `dek` under exactly `key_version`, which must be enabled. Rewrap uses this rather
    /// than [`Kms::wrap_dek`]: Cloud KMS may keep encrypting under the previous primary for a
    /// while after a rotation, and a "re-wrapped" DEK must really be under the new version.
    async fn wrap_dek_under(
        &self,
        tenant: TenantId,
        dek: &Dek,
        aad: &[u8],
        key_version: &str,
    ) -> Result<WrappedDek, KmsError>;

    /// Unwraps a DEK. Refuses (`WrongKey`) a `wrapped` whose key is not this tenant's KEK, so
    /// an envelope copied to another tenant cannot be opened there.
    async fn unwrap_dek(
        &self,
        tenant: TenantId,
        wrapped: &WrappedDek,
        aad: &[u8],
    ) -> Result<Dek, KmsError>;
}

/// Why a KMS operation failed. Messages name keys and tenants, never key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KmsError {
    #[error("no key exists for tenant {0}")]
    UnknownTenant(TenantId),
    #[error("key {key_name} has no version {key_version}")]
    UnknownKeyVersion {
        key_name: String,
        key_version: String,
    },
    #[error("the wrapped key names a key that is not this tenant's")]
    WrongKey,
    #[error("the wrapped key failed authentication")]
    Unwrap,
    #[error("the keyring could not be decrypted: wrong master key (or the file was altered)")]
    WrongMasterKey,
    #[error("key {key_name} version {key_version} is disabled")]
    VersionDisabled {
        key_name: String,
        key_version: String,
    },
    #[error("key {key_name} version {key_version} is the primary version")]
    PrimaryVersion {
        key_name: String,
        key_version: String,
    },
    #[error("the key service is unavailable: {0}")]
    Unavailable(String),
    #[error("the key service refused the call: {0}")]
    PermissionDenied(String),
    #[error("a key service integrity check failed: {0}")]
    Integrity(String),
    #[error("the key service is misconfigured: {0}")]
    Config(String),
    #[error("the key service failed: {0}")]
    Remote(String),
    #[error("key service I/O error: {0}")]
    Io(String),
    #[error("key service data is corrupt: {0}")]
    Corrupt(String),
}

impl KmsError {
    /// A stable, machine-readable code for API errors, audit records and metrics.
    ///
    /// I/O, corruption and unclassified service failures share `kms_error`: their details are for the operator's log only.
    pub fn code(&self) -> &'static str {
        match self {
            KmsError::UnknownTenant(_) => "kms_unknown_tenant",
            KmsError::UnknownKeyVersion { .. } => "kms_unknown_key_version",
            KmsError::WrongKey => "kms_wrong_key",
            KmsError::Unwrap => "kms_unwrap_failed",
            KmsError::WrongMasterKey => "kms_wrong_master_key",
            KmsError::VersionDisabled { .. } => "kms_key_version_disabled",
            KmsError::PrimaryVersion { .. } => "kms_primary_version",
            KmsError::Unavailable(_) => "kms_unavailable",
            KmsError::PermissionDenied(_) => "kms_permission_denied",
            KmsError::Integrity(_) => "kms_integrity_failed",
            KmsError::Config(_) => "kms_config_invalid",
            KmsError::Io(_) | KmsError::Corrupt(_) | KmsError::Remote(_) => "kms_error",
        }
    }
}

/// What a caller (and the agent or operator behind it) can do about a [`KmsError`]; both the
/// control plane and the sidecar map errors through this, so one fault has one code everywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KmsFault {
    /// The service could not be reached, timed out or answered a 5xx (or the local keyring
    /// could not be read): retry later (503
    /// `kms_unavailable` with `Retry-After`). Nothing was decided about the data.
    Unavailable,
    /// The service answered, but the answer failed a check (CRC32C mismatch either way, a key
    /// version of another key, unverified checksum flags, a DEK of the wrong size): the path to
    /// the KMS is corrupting or tampering with data. Never retried blindly (502
    /// `kms_integrity_failed`, a metric and an audit event).
    Integrity,
    /// Anything else: a refusal (wrong key, disabled version, permission) or a local fault.
    Other,
}

impl KmsError {
    /// The class of this error; see [`KmsFault`].
    pub fn fault(&self) -> KmsFault {
        match self {
            // A keyring file that cannot be read (a network volume gone away) is the local
            // backend's outage.
            KmsError::Unavailable(_) | KmsError::Io(_) => KmsFault::Unavailable,
            KmsError::Integrity(_) => KmsFault::Integrity,
            _ => KmsFault::Other,
        }
    }
}

impl From<&WrappedDek> for KeyRef {
    fn from(wrapped: &WrappedDek) -> Self {
        KeyRef {
            key_name: wrapped.key_name.clone(),
            key_version: wrapped.key_version.clone(),
        }
    }
}

impl fmt::Debug for WrappedDek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappedDek")
            .field("key_name", &self.key_name)
            .field("key_version", &self.key_version)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}
