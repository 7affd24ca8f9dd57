//! `backup --keys`: the key material a database backup deliberately lacks — the pepper, and
//! for the local KMS the master key and the keyring — in one file of its own, always
//! age-encrypted. Whoever holds both this file's identity and a database backup can read
//! every secret, so the two are meant to be kept apart (docs/operations.md "Key custody").

use std::io::{BufWriter, Write};
use std::path::Path;

use serde::Serialize;

use super::archive::{decrypt_with, encrypt_to};
use super::{create_private, BackupError};
use crate::config::{Config, KmsBackend};

/// What an export wrote (names only, never content).
#[derive(Clone, Debug, Serialize)]
pub struct KeyExport {
    pub path: std::path::PathBuf,
    pub entries: Vec<&'static str>,
}

/// The entries an export may hold.
const ENTRIES: [&str; 4] = ["README", "pepper", "master-key", "keyring.json"];

const README: &str = "\
Agent Secret Store key export (docs/operations.md \"Key custody\").
pepper: the base64 text of security.pepper_file (or AGENT_SECRET_SECURITY_PEPPER).
master-key: the base64 text of kms.master_key_file (local KMS only).
keyring.json: kms.keyring (local KMS only); its KEKs are sealed under master-key.
Put each back at the path the control plane's config names, mode 0600, owned by its user.
";

/// Writes the keys to a new file at `output`, encrypted to `recipients` (at least one).
pub fn export_keys(
    config: &Config,
    recipients: &[age::x25519::Recipient],
    output: &Path,
) -> Result<KeyExport, BackupError> {
    if recipients.is_empty() {
        return Err(BackupError::Config(
            "backup --keys needs at least one age recipient (--recipient or \
             backup.recipients): the keys are never written in the clear"
                .into(),
        ));
    }
    let config_err = |e: crate::config::ConfigError| BackupError::Config(e.to_string());
    let mut entries: Vec<(&'static str, Vec<u8>)> = vec![("README", README.as_bytes().to_vec())];
    let (_, pepper) = config.pepper_text().map_err(config_err)?;
    entries.push(("pepper", pepper.expose().as_bytes().to_vec()));
    if config.kms.backend == KmsBackend::Local {
        let (_, master) = config.master_key_text().map_err(config_err)?;
        entries.push(("master-key", master.expose().as_bytes().to_vec()));
        let keyring = std::fs::read(&config.kms.keyring).map_err(BackupError::io(format!(
            "cannot read kms.keyring {}",
            config.kms.keyring.display()
        )))?;
        entries.push(("keyring.json", keyring));
    }
    let shown = output.display().to_string();
    let file = create_private(output)?;
    let written = (|| -> std::io::Result<()> {
        let encrypted = encrypt_to(recipients, BufWriter::new(file))?;
        let mut tar = tar::Builder::new(encrypted);
        tar.mode(tar::HeaderMode::Deterministic);
        for (name, data) in &entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o600);
            header.set_cksum();
            tar.append_data(&mut header, name, data.as_slice())?;
        }
        let mut out = tar.into_inner()?.finish()?;
        out.flush()?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()
    })();
    // The plaintext copies of the keys are wiped before anything else happens.
    for (_, data) in &mut entries {
        zeroize::Zeroize::zeroize(data);
    }
    if let Err(e) = written {
        let _ = std::fs::remove_file(output);
        return Err(BackupError::Io {
            context: format!("writing {shown}"),
            source: e,
        });
    }
    Ok(KeyExport {
        path: output.to_path_buf(),
        entries: entries.iter().map(|(n, _)| *n).collect(),
    })
}

/// Unpacks a key export into `dir` (created 0700), each file new and mode 0600; returns the
/// names written. Anything but the known entries makes the file invalid.
pub fn import_keys(
    file: &Path,
    identities: &[age::x25519::Identity],
    dir: &Path,
) -> Result<Vec<String>, BackupError> {
    if identities.is_empty() {
        return Err(BackupError::NeedsIdentity);
    }
    let input = std::fs::File::open(file)
        .map_err(BackupError::io(format!("cannot open {}", file.display())))?;
    let plain = decrypt_with(identities, std::io::BufReader::new(input))?;
    agent_secret_core::secret_file::create_private_parent(&dir.join("x"))
        .map_err(BackupError::io(format!("cannot create {}", dir.display())))?;
    let format = |e: std::io::Error| BackupError::Format(e.to_string());
    let mut tar = tar::Archive::new(plain);
    let mut written = Vec::new();
    for entry in tar.entries().map_err(format)? {
        let mut entry = entry.map_err(format)?;
        let name = entry.path().map_err(format)?.to_string_lossy().into_owned();
        let Some(known) = ENTRIES.iter().find(|e| **e == name) else {
            return Err(BackupError::Format(format!(
                "unexpected entry {name:?} in a key export"
            )));
        };
        let path = dir.join(known);
        let mut out = create_private(&path)?;
        std::io::copy(&mut entry, &mut out).map_err(format)?;
        out.sync_all()
            .map_err(BackupError::io(format!("cannot sync {}", path.display())))?;
        written.push((*known).to_owned());
    }
    Ok(written)
}
