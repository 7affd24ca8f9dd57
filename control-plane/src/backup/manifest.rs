//! The manifest inside every backup, and its MAC.

use agent_secret_core::credential::Pepper;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::BackupError;

/// `format` of the manifests this version writes and reads.
pub const FORMAT: &str = "agent-secret-store-backup/1";

/// Domain separation: the pepper also keys credential hashes, never over this prefix.
const MAC_CONTEXT: &[u8] = b"agent-secret-store backup manifest v1\0";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// `sqlite` or `postgres`: a backup restores into the backend it came from.
    pub backend: String,
    /// The version of the binary that wrote it.
    pub tool_version: String,
    /// The highest applied migration.
    pub schema_version: i64,
    /// Every table, by name.
    pub tables: Vec<TableSummary>,
    /// Each tenant's audit chain head at the time of the backup.
    pub audit_heads: Vec<AuditHead>,
    /// The database file inside the archive, its size and SHA-256 (hex).
    pub database_file: String,
    pub database_bytes: u64,
    pub database_sha256: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSummary {
    pub name: String,
    pub rows: i64,
    /// SHA-256 (hex) over the rows' canonical text, sorted (`summary`).
    pub sha256: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    pub tenant_id: String,
    pub seq: i64,
    /// Hex of the head hash; absent for a tenant without events.
    pub head: Option<String>,
}

impl Manifest {
    /// The manifest's bytes as stored, and their MAC.
    pub fn seal(&self, pepper: &Pepper) -> Result<(Vec<u8>, String), BackupError> {
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| BackupError::Format(format!("manifest: {e}")))?;
        let mac = hex::encode(mac(pepper, &bytes));
        Ok((bytes, mac))
    }

    /// Parses the stored bytes after checking their MAC (in constant time).
    pub fn open(bytes: &[u8], mac_hex: &str, pepper: &Pepper) -> Result<Manifest, BackupError> {
        let presented = hex::decode(mac_hex.trim()).map_err(|_| BackupError::ManifestMac)?;
        let expected = mac(pepper, bytes);
        if presented.len() != expected.len() || !bool::from(presented.ct_eq(&expected)) {
            return Err(BackupError::ManifestMac);
        }
        let manifest: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| BackupError::Format(format!("manifest.json: {e}")))?;
        if manifest.format != FORMAT {
            return Err(BackupError::Format(format!(
                "manifest format {:?}; this version reads {FORMAT:?}",
                manifest.format
            )));
        }
        Ok(manifest)
    }
}

fn mac(pepper: &Pepper, bytes: &[u8]) -> [u8; 32] {
    let mut data = Vec::with_capacity(MAC_CONTEXT.len() + bytes.len());
    data.extend_from_slice(MAC_CONTEXT);
    data.extend_from_slice(bytes);
    pepper.mac(&data)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            format: FORMAT.into(),
            created_at: "2026-12-05T00:00:00Z".into(),
            backend: "sqlite".into(),
            tool_version: "0".into(),
            schema_version: 12,
            tables: vec![TableSummary {
                name: "secrets".into(),
                rows: 3,
                sha256: "00".into(),
            }],
            audit_heads: vec![],
            database_file: "database.sqlite".into(),
            database_bytes: 1,
            database_sha256: "00".into(),
        }
    }

    #[test]
    fn a_manifest_opens_only_unchanged_and_with_its_pepper() {
        let pepper = Pepper::generate();
        let (bytes, mac) = manifest().seal(&pepper).unwrap();
        assert_eq!(Manifest::open(&bytes, &mac, &pepper).unwrap(), manifest());

        let edited = String::from_utf8(bytes.clone())
            .unwrap()
            .replace("\"rows\": 3", "\"rows\": 4");
        assert!(matches!(
            Manifest::open(edited.as_bytes(), &mac, &pepper),
            Err(BackupError::ManifestMac)
        ));
        assert!(matches!(
            Manifest::open(&bytes, &mac, &Pepper::generate()),
            Err(BackupError::ManifestMac)
        ));
        assert!(matches!(
            Manifest::open(&bytes, "not hex", &pepper),
            Err(BackupError::ManifestMac)
        ));
    }
}
