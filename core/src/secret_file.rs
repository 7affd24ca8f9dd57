//! Reading a key or token from a file: the one place that decides what such a file may be.
//!
//! Peppers, master keys, sidecar keys and operator tokens all arrive as files (the form
//! container platforms mount secrets in). A file that other users can read has already leaked
//! its key to them, so it is refused rather than used with a warning, as OpenSSH refuses an
//! unprotected private key; the error names the file and its mode, never its content. The
//! mode is read from the opened file, so the check and the read are of the same file.
//! Content goes straight into zeroizing memory, trimmed of surrounding whitespace (the trailing
//! newline an editor or `echo` adds).

use std::fs::{DirBuilder, File};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::secret::SecretString;

/// Permission bits a secret file must not have: any access by its group or by others.
pub const SHARED_MODE_BITS: u32 = 0o077;
/// Largest secret file read: keys and tokens are well under a kilobyte, and a bound keeps a
/// mistaken path (a log file, `/dev/zero`) from filling memory.
pub const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;
/// Mode of a directory created to hold key material.
const PRIVATE_DIR_MODE: u32 = 0o700;

/// Why a secret file cannot be used. Names the file (and its mode), never its content.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("{} does not exist", path.display())]
    Missing { path: PathBuf },
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "{} has mode {mode:04o}: a secret file must not be accessible to its group or others \
         (chmod 600 it)",
        path.display()
    )]
    Shared { path: PathBuf, mode: u32 },
    #[error("{} is larger than {MAX_SECRET_FILE_BYTES} bytes; is it the right file?", path.display())]
    TooLarge { path: PathBuf },
    #[error("{} is not UTF-8 text", path.display())]
    NotUtf8 { path: PathBuf },
    #[error("{} is empty", path.display())]
    Empty { path: PathBuf },
}

impl SecretFileError {
    /// The file at fault.
    pub fn path(&self) -> &Path {
        match self {
            SecretFileError::Missing { path }
            | SecretFileError::Read { path, .. }
            | SecretFileError::Shared { path, .. }
            | SecretFileError::TooLarge { path }
            | SecretFileError::NotUtf8 { path }
            | SecretFileError::Empty { path } => path,
        }
    }
}

/// The trimmed text of the secret file at `path`.
///
/// Refused: a missing or unreadable file, one whose mode grants its group or others any
/// access, one over [`MAX_SECRET_FILE_BYTES`], one that is not UTF-8, and one that is empty
/// once trimmed.
pub fn read(path: &Path) -> Result<SecretString, SecretFileError> {
    let read_error = |source: io::Error| match source.kind() {
        io::ErrorKind::NotFound => SecretFileError::Missing {
            path: path.to_owned(),
        },
        _ => SecretFileError::Read {
            path: path.to_owned(),
            source,
        },
    };
    let file = File::open(path).map_err(read_error)?;
    let mode = file.metadata().map_err(read_error)?.permissions().mode();
    if mode & SHARED_MODE_BITS != 0 {
        return Err(SecretFileError::Shared {
            path: path.to_owned(),
            mode: mode & 0o7777,
        });
    }
    // Capacity for the whole bounded read up front: a growing Vec would free unzeroized copies.
    let mut bytes = Zeroizing::new(Vec::with_capacity(1024));
    file.take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(SecretFileError::TooLarge {
            path: path.to_owned(),
        });
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| SecretFileError::NotUtf8 {
        path: path.to_owned(),
    })?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(SecretFileError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(SecretString::new(trimmed.to_owned()))
}

/// Creates the parent directory of `path` (mode 0700, with any missing ancestors) if it does
/// not exist, so a key file or keyring written there starts out private.
pub fn create_private_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() && !parent.exists() => DirBuilder::new()
            .recursive(true)
            .mode(PRIVATE_DIR_MODE)
            .create(parent),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::fs;

    use super::*;

    fn write(dir: &Path, name: &str, contents: &[u8], mode: u32) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, contents).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn a_private_file_is_read_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o600, 0o400] {
            let path = write(dir.path(), &format!("k{mode:o}"), b"  assc_key-1\n", mode);
            assert_eq!(read(&path).unwrap().expose(), "assc_key-1");
        }
    }

    #[test]
    fn a_file_its_group_or_others_can_access_is_refused_naming_file_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o640, 0o604, 0o644, 0o660, 0o620, 0o601, 0o666] {
            let path = write(dir.path(), "key", b"SECRET-VALUE", mode);
            let err = read(&path).unwrap_err();
            assert!(
                matches!(err, SecretFileError::Shared { mode: m, .. } if m == mode),
                "{mode:o}: {err:?}"
            );
            let shown = err.to_string();
            assert!(shown.contains(&path.display().to_string()), "{shown}");
            assert!(shown.contains(&format!("{mode:04o}")), "{shown}");
            assert!(!shown.contains("SECRET"), "{shown}");
        }
    }

    #[test]
    fn missing_empty_non_utf8_and_oversized_files_are_refused_without_their_content() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent");
        assert!(matches!(
            read(&missing),
            Err(SecretFileError::Missing { path }) if path == missing
        ));
        let empty = write(dir.path(), "empty", b" \n\t\n", 0o600);
        assert!(matches!(read(&empty), Err(SecretFileError::Empty { .. })));
        let binary = write(dir.path(), "binary", b"SECRET\xff\xfe", 0o600);
        let err = read(&binary).unwrap_err();
        assert!(matches!(err, SecretFileError::NotUtf8 { .. }));
        assert!(!err.to_string().contains("SECRET"));
        let big = vec![b'a'; MAX_SECRET_FILE_BYTES as usize + 1];
        let big = write(dir.path(), "big", &big, 0o600);
        assert!(matches!(read(&big), Err(SecretFileError::TooLarge { .. })));
        let at_limit = vec![b'a'; MAX_SECRET_FILE_BYTES as usize];
        let at_limit = write(dir.path(), "at-limit", &at_limit, 0o600);
        assert_eq!(
            read(&at_limit).unwrap().expose().len(),
            MAX_SECRET_FILE_BYTES as usize
        );
        assert_eq!(read(&binary).unwrap_err().path(), binary);
        // A (private) directory opens on Linux but does not read.
        let subdir = dir.path().join("subdir");
        fs::create_dir(&subdir).unwrap();
        fs::set_permissions(&subdir, fs::Permissions::from_mode(0o700)).unwrap();
        assert!(matches!(read(&subdir), Err(SecretFileError::Read { .. })));
    }

    #[test]
    fn private_parents_are_created_0700_and_existing_ones_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a/b/keyring.json");
        create_private_parent(&file).unwrap();
        for made in [dir.path().join("a"), dir.path().join("a/b")] {
            let mode = fs::metadata(&made).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "{}", made.display());
        }
        fs::set_permissions(dir.path().join("a/b"), fs::Permissions::from_mode(0o750)).unwrap();
        create_private_parent(&file).unwrap();
        let mode = fs::metadata(dir.path().join("a/b"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o750);
    }
}
