//! The keyring file on disk: sealed as a whole, replaced atomically, written under a lock.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::keyring::{Keyring, MasterKey};
use crate::cipher::{aes_open, aes_seal, random_nonce, NONCE_LEN};
use crate::kms::KmsError;

/// The `format` field of the outer file, also its AAD.
const FORMAT: &str = "agent-secret-store-keyring/v1";
/// Mode of the keyring, its temp files and its lock file.
const PRIVATE_MODE: u32 = 0o600;

/// Inode and modification time: the rename in `write_keyring` always changes the inode.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct FileStamp {
    ino: u64,
    mtime: i64,
    mtime_nsec: i64,
}

/// Outer JSON of the keyring file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SealedFile {
    format: String,
    #[serde(with = "crate::cipher::base64_bytes")]
    nonce: Vec<u8>,
    #[serde(with = "crate::cipher::base64_bytes")]
    ciphertext: Vec<u8>,
}

pub(super) fn file_stamp(path: &Path) -> Option<FileStamp> {
    fs::metadata(path).ok().map(|m| FileStamp {
        ino: m.ino(),
        mtime: m.mtime(),
        mtime_nsec: m.mtime_nsec(),
    })
}

pub(super) fn read_keyring(path: &Path, master: &MasterKey) -> Result<Option<Keyring>, KmsError> {
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

pub(super) fn write_keyring(
    path: &Path,
    master: &MasterKey,
    ring: &Keyring,
) -> Result<(), KmsError> {
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
pub(super) fn lock_exclusive(path: &Path) -> Result<File, KmsError> {
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

pub(super) fn missing_file(path: &Path) -> KmsError {
    KmsError::Io(format!(
        "the keyring file {} does not exist",
        path.display()
    ))
}

fn io_error(action: &str, path: &Path, e: &io::Error) -> KmsError {
    KmsError::Io(format!("cannot {action} {}: {e}", path.display()))
}
