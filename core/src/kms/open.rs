//! Turning KMS settings into a running backend: the one opener the control plane and the
//! sidecar share, so both read the same settings the same way.
//!
//! Callers read their own config files (each names its keys in its errors) into
//! [`KmsSettings`] and say what they may do with a local keyring. Only the control plane may
//! create one ([`KeyringAccess::Create`]); the sidecar opens an existing keyring and a missing
//! file is an error, so a misconfigured sidecar can never start an empty keyring of its own.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::gcp::{GcpKms, GcpKmsConfig};
use super::local::{LocalKms, MasterKey};
use super::{Kms, KmsError};
use crate::secret_file::create_private_parent;

/// The `[kms] backend` setting both config files take.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KmsBackend {
    /// A keyring file sealed by a master key ([`LocalKms`]).
    #[default]
    Local,
    /// Google Cloud KMS ([`GcpKms`]).
    Gcp,
}

/// Everything needed to open one backend, already read and checked by the caller.
pub enum KmsSettings {
    Local {
        keyring: PathBuf,
        master_key: MasterKey,
    },
    Gcp(GcpKmsConfig),
}

/// What the opener may do to a local keyring that does not exist yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyringAccess {
    /// The control plane: a missing keyring is created empty (mode 0600, in a 0700 directory).
    Create,
    /// The sidecar: the keyring must exist; it is read, never created.
    OpenExisting,
}

/// Why the backend could not be opened. Names the file or key ring, never key material.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create the directory of the keyring {}: {reason}", path.display())]
    KeyringDirectory { path: PathBuf, reason: io::Error },
    #[error("cannot open the keyring {}: {reason}", path.display())]
    Keyring { path: PathBuf, reason: KmsError },
    #[error("cannot reach the Cloud KMS key ring {key_ring}: {reason}")]
    Gcp { key_ring: String, reason: KmsError },
}

impl KmsBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            KmsBackend::Local => "local",
            KmsBackend::Gcp => "gcp",
        }
    }
}

impl KmsSettings {
    pub fn backend(&self) -> KmsBackend {
        match self {
            KmsSettings::Local { .. } => KmsBackend::Local,
            KmsSettings::Gcp(_) => KmsBackend::Gcp,
        }
    }
}

impl fmt::Debug for KmsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KmsSettings::Local { keyring, .. } => f
                .debug_struct("Local")
                .field("keyring", keyring)
                .finish_non_exhaustive(),
            KmsSettings::Gcp(config) => f.debug_tuple("Gcp").field(config).finish(),
        }
    }
}

/// Opens the configured backend. Makes no call to Cloud KMS (see [`GcpKms::connect`]); reads
/// (and with [`KeyringAccess::Create`] may create) the local keyring.
pub async fn open(settings: KmsSettings, access: KeyringAccess) -> Result<Arc<dyn Kms>, OpenError> {
    match settings {
        KmsSettings::Local {
            keyring,
            master_key,
        } => Ok(Arc::new(open_local(&keyring, master_key, access)?)),
        KmsSettings::Gcp(config) => {
            let key_ring = config.key_ring_name();
            let kms = GcpKms::connect(config)
                .await
                .map_err(|reason| OpenError::Gcp { key_ring, reason })?;
            Ok(Arc::new(kms))
        }
    }
}

/// The local backend alone, for callers that need [`LocalKms`] itself (its tenant listing).
pub fn open_local(
    keyring: &Path,
    master_key: MasterKey,
    access: KeyringAccess,
) -> Result<LocalKms, OpenError> {
    let opened = match access {
        KeyringAccess::Create => {
            create_private_parent(keyring).map_err(|reason| OpenError::KeyringDirectory {
                path: keyring.to_owned(),
                reason,
            })?;
            LocalKms::open_or_create(keyring, master_key)
        }
        KeyringAccess::OpenExisting => LocalKms::open(keyring, master_key),
    };
    opened.map_err(|reason| OpenError::Keyring {
        path: keyring.to_owned(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::ids::TenantId;

    fn local(keyring: &Path, master: &MasterKey) -> KmsSettings {
        KmsSettings::Local {
            keyring: keyring.to_owned(),
            master_key: MasterKey::from_base64(master.to_base64().expose()).unwrap(),
        }
    }

    #[tokio::test]
    async fn the_sidecar_cannot_create_a_keyring_only_open_one() {
        let dir = tempfile::tempdir().unwrap();
        let keyring = dir.path().join("keys/keyring.json");
        let master = MasterKey::generate();
        let Err(err) = open(local(&keyring, &master), KeyringAccess::OpenExisting).await else {
            panic!("the sidecar opened a keyring that does not exist");
        };
        assert!(
            matches!(&err, OpenError::Keyring { path, .. } if *path == keyring),
            "{err:?}"
        );
        assert!(err.to_string().contains(&keyring.display().to_string()));
        assert!(!keyring.exists() && !keyring.parent().unwrap().exists());

        let tenant = TenantId::new();
        let created = open(local(&keyring, &master), KeyringAccess::Create)
            .await
            .unwrap();
        let key = created.create_tenant_key(tenant).await.unwrap();
        let dir_mode = std::fs::metadata(keyring.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);

        let sidecar = open(local(&keyring, &master), KeyringAccess::OpenExisting)
            .await
            .unwrap();
        assert_eq!(sidecar.primary_key(tenant).await.unwrap(), key);
    }

    #[tokio::test]
    async fn a_wrong_master_key_names_the_keyring_not_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let keyring = dir.path().join("keyring.json");
        let master = MasterKey::generate();
        open(local(&keyring, &master), KeyringAccess::Create)
            .await
            .unwrap();
        let other = MasterKey::generate();
        for access in [KeyringAccess::Create, KeyringAccess::OpenExisting] {
            let Err(err) = open(local(&keyring, &other), access).await else {
                panic!("a wrong master key opened the keyring");
            };
            assert!(
                matches!(
                    &err,
                    OpenError::Keyring {
                        reason: KmsError::WrongMasterKey,
                        ..
                    }
                ),
                "{err:?}"
            );
            let shown = err.to_string();
            assert!(shown.contains("keyring.json"), "{shown}");
            assert!(!shown.contains(other.to_base64().expose()), "{shown}");
        }
    }

    #[test]
    fn settings_say_their_backend_and_debug_hides_the_master_key() {
        let master = MasterKey::generate();
        let settings = local(Path::new("k.json"), &master);
        assert_eq!(settings.backend(), KmsBackend::Local);
        let shown = format!("{settings:?}");
        assert!(shown.contains("k.json") && !shown.contains(master.to_base64().expose()));
        let gcp = KmsSettings::Gcp(GcpKmsConfig::new("p", "l", "r"));
        assert_eq!(gcp.backend().as_str(), "gcp");
    }
}
