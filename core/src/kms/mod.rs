//! Key-encryption keys (KEKs) behind one narrow trait.
//!
//! Every tenant has its own KEK; data-encryption keys (DEKs) are wrapped by it and never
//! stored in the clear. The trait knows nothing about where KEKs live, so the control plane
//! and the sidecar run unchanged on the local keyring file ([`local::LocalKms`]) or on a cloud
//! KMS whose key names look like `projects/p/locations/l/keyRings/r/cryptoKeys/tenant-{id}`.
//! Key names and versions are therefore opaque strings chosen by the backend.

pub mod local;

#[cfg(test)]
mod tests;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::envelope::Dek;
use crate::ids::TenantId;

/// A KEK version as the backend names it; stored beside every wrapped DEK.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRef {
    pub key_name: String,
    pub key_version: String,
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

    /// Adds a new primary version; old versions keep decrypting.
    async fn rotate(&self, tenant: TenantId) -> Result<KeyRef, KmsError>;

    /// Wraps `dek` under the tenant's primary KEK version, authenticating `aad` with it.
    async fn wrap_dek(
        &self,
        tenant: TenantId,
        dek: &Dek,
        aad: &[u8],
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
    #[error("the key service is unavailable: {0}")]
    Unavailable(String),
    #[error("key service I/O error: {0}")]
    Io(String),
    #[error("key service data is corrupt: {0}")]
    Corrupt(String),
}

impl KmsError {
    /// A stable, machine-readable code for API errors, audit records and metrics.
    ///
    /// I/O and corruption share `kms_error`: their details are for the operator's log only.
    pub fn code(&self) -> &'static str {
        match self {
            KmsError::UnknownTenant(_) => "kms_unknown_tenant",
            KmsError::UnknownKeyVersion { .. } => "kms_unknown_key_version",
            KmsError::WrongKey => "kms_wrong_key",
            KmsError::Unwrap => "kms_unwrap_failed",
            KmsError::WrongMasterKey => "kms_wrong_master_key",
            KmsError::Unavailable(_) => "kms_unavailable",
            KmsError::Io(_) | KmsError::Corrupt(_) => "kms_error",
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
