//! The backup file: a tar of the manifest, its MAC and the database, zstd-compressed, and
//! optionally age-encrypted. Written and read as streams: a database never sits in memory.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::{create_private, BackupError};

const MANIFEST: &str = "manifest.json";
const MANIFEST_MAC: &str = "manifest.mac";
/// Largest manifest or MAC entry read back (a manifest lists a few dozen tables and one head
/// per tenant).
const MAX_SMALL_ENTRY: u64 = 64 * 1024 * 1024;
/// The names a database entry may have.
pub const DATABASE_ENTRIES: [&str; 2] = ["database.sqlite", "database.pgdump"];
/// What an age file starts with.
const AGE_MAGIC: &[u8] = b"age-encryption.org/";
const ZSTD_LEVEL: i32 = 9;

/// The database file to put in (or found in) an archive.
#[derive(Clone, Debug)]
pub struct Payload {
    /// One of [`DATABASE_ENTRIES`].
    pub name: String,
    pub path: PathBuf,
}

/// An archive's parts, the database extracted to a file.
#[derive(Debug)]
pub struct Contents {
    pub manifest: Vec<u8>,
    pub mac: String,
    pub database: Payload,
    /// Whether the file was age-encrypted.
    pub encrypted: bool,
}

/// Writes a new file at `path` (mode 0600, never over an existing one), synced to disk.
pub fn write_archive(
    path: &Path,
    manifest: &[u8],
    mac: &str,
    database: &Payload,
    recipients: &[age::x25519::Recipient],
) -> Result<u64, BackupError> {
    let shown = path.display().to_string();
    let file = create_private(path)?;
    let write_err = BackupError::io(format!("writing {shown}"));
    let result = (|| -> std::io::Result<File> {
        let out = BufWriter::new(file);
        if recipients.is_empty() {
            let out = write_tar(
                zstd::Encoder::new(out, ZSTD_LEVEL)?,
                manifest,
                mac,
                database,
            )?;
            out.finish()?.into_inner().map_err(|e| e.into_error())
        } else {
            let encrypted = encrypt_to(recipients, out)?;
            let compressed = zstd::Encoder::new(encrypted, ZSTD_LEVEL)?;
            let compressed = write_tar(compressed, manifest, mac, database)?;
            let encrypted = compressed.finish()?;
            encrypted.finish()?.into_inner().map_err(|e| e.into_error())
        }
    })();
    let file = result.map_err(write_err)?;
    file.sync_all()
        .map_err(BackupError::io(format!("syncing {shown}")))?;
    file.metadata()
        .map(|m| m.len())
        .map_err(BackupError::io(format!("reading {shown}")))
}

fn write_tar<W: Write>(
    out: W,
    manifest: &[u8],
    mac: &str,
    database: &Payload,
) -> std::io::Result<W> {
    let mut tar = tar::Builder::new(out);
    tar.mode(tar::HeaderMode::Deterministic);
    append_bytes(&mut tar, MANIFEST, manifest)?;
    append_bytes(&mut tar, MANIFEST_MAC, mac.as_bytes())?;
    let mut db = File::open(&database.path)?;
    let len = db.metadata()?.len();
    let mut header = entry_header(len);
    tar.append_data(&mut header, &database.name, &mut db)?;
    tar.into_inner()
}

fn entry_header(len: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_size(len);
    header.set_mode(0o600);
    header.set_mtime(0);
    header.set_cksum();
    header
}

fn append_bytes<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    data: &[u8],
) -> std::io::Result<()> {
    let mut header = entry_header(data.len() as u64);
    tar.append_data(&mut header, name, data)
}

/// Reads an archive, extracting the database into `dir` (which the caller owns and removes).
/// Unknown, repeated or oversized entries make the file invalid.
///
/// `admit` sees the manifest and its MAC before anything large is written (they come first)
/// and returns how many bytes the database entry may have: a restore checks the MAC there, so
/// an altered file is refused before it can fill a disk.
pub fn read_archive(
    path: &Path,
    identities: &[age::x25519::Identity],
    dir: &Path,
    admit: impl FnOnce(&[u8], &str) -> Result<u64, BackupError>,
) -> Result<Contents, BackupError> {
    let shown = path.display().to_string();
    let file = File::open(path).map_err(BackupError::io(format!("cannot open {shown}")))?;
    let mut input = BufReader::new(file);
    let mut magic = [0u8; 19];
    let n =
        read_prefix(&mut input, &mut magic).map_err(BackupError::io(format!("reading {shown}")))?;
    let head = std::io::Cursor::new(magic[..n].to_vec());
    let input = head.chain(input);
    let encrypted = magic[..n].starts_with(AGE_MAGIC);
    if encrypted {
        read_tar(decrypt_with(identities, input)?, dir, true, admit)
    } else {
        read_tar(input, dir, false, admit)
    }
}

/// An age stream to `recipients` over `out` (backups and the key export).
pub(super) fn encrypt_to<W: Write>(
    recipients: &[age::x25519::Recipient],
    out: W,
) -> std::io::Result<age::stream::StreamWriter<W>> {
    age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
        .map_err(std::io::Error::other)?
        .wrap_output(out)
}

/// The plaintext of an age stream, for one of `identities`.
pub(super) fn decrypt_with<R: Read>(
    identities: &[age::x25519::Identity],
    input: R,
) -> Result<age::stream::StreamReader<R>, BackupError> {
    if identities.is_empty() {
        return Err(BackupError::NeedsIdentity);
    }
    age::Decryptor::new(input)
        .and_then(|d| d.decrypt(identities.iter().map(|i| i as &dyn age::Identity)))
        .map_err(|e| BackupError::Decrypt(e.to_string()))
}

fn read_prefix(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

fn read_tar(
    input: impl Read,
    dir: &Path,
    encrypted: bool,
    admit: impl FnOnce(&[u8], &str) -> Result<u64, BackupError>,
) -> Result<Contents, BackupError> {
    let mut admit = Some(admit);
    let decoder =
        zstd::Decoder::new(input).map_err(|e| BackupError::Format(format!("not zstd: {e}")))?;
    let mut tar = tar::Archive::new(decoder);
    let format = |e: std::io::Error| BackupError::Format(e.to_string());
    let (mut manifest, mut mac, mut database) = (None, None, None);
    for entry in tar.entries().map_err(format)? {
        let mut entry = entry.map_err(format)?;
        let name = entry
            .path()
            .map_err(format)?
            .to_str()
            .unwrap_or_default()
            .to_owned();
        match name.as_str() {
            MANIFEST if manifest.is_none() => manifest = Some(read_small(&mut entry)?),
            MANIFEST_MAC if mac.is_none() => {
                let bytes = read_small(&mut entry)?;
                mac = Some(String::from_utf8(bytes).map_err(|_| BackupError::ManifestMac)?);
            }
            n if DATABASE_ENTRIES.contains(&n) && database.is_none() => {
                let (Some(m), Some(mac), Some(admit)) = (&manifest, &mac, admit.take()) else {
                    return Err(BackupError::Format(
                        "the database comes before its manifest".into(),
                    ));
                };
                let limit = admit(m, mac)?;
                // The name is one of two constants: no path from the file reaches the disk.
                let path = dir.join(n);
                let mut out = create_private(&path)?;
                let copied =
                    std::io::copy(&mut (&mut entry).take(limit.saturating_add(1)), &mut out)
                        .map_err(format)?;
                if copied > limit {
                    return Err(BackupError::Format(
                        "the database is larger than its manifest says".into(),
                    ));
                }
                database = Some(Payload {
                    name: n.to_owned(),
                    path,
                });
            }
            other => {
                return Err(BackupError::Format(format!(
                    "unexpected entry {other:?} in the archive"
                )))
            }
        }
    }
    match (manifest, mac, database) {
        (Some(manifest), Some(mac), Some(database)) => Ok(Contents {
            manifest,
            mac,
            database,
            encrypted,
        }),
        _ => Err(BackupError::Format(
            "the archive lacks its manifest, its MAC or its database".into(),
        )),
    }
}

fn read_small(entry: &mut impl Read) -> Result<Vec<u8>, BackupError> {
    let mut bytes = Vec::new();
    entry
        .take(MAX_SMALL_ENTRY + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| BackupError::Format(e.to_string()))?;
    if bytes.len() as u64 > MAX_SMALL_ENTRY {
        return Err(BackupError::Format("manifest entry too large".into()));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn roundtrip(recipients: &[age::x25519::Recipient], identities: &[age::x25519::Identity]) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        std::fs::write(&db, b"SQLite format 3\0 and the rest").unwrap();
        let payload = Payload {
            name: "database.sqlite".into(),
            path: db,
        };
        let file = dir.path().join("b.tar.zst");
        write_archive(&file, b"{\"m\":1}", "abcd", &payload, recipients).unwrap();
        let bytes = std::fs::read(&file).unwrap();
        assert_eq!(bytes.starts_with(AGE_MAGIC), !recipients.is_empty());
        // Encrypted: nothing of the manifest is readable in the file.
        if !recipients.is_empty() {
            assert!(!bytes.windows(5).any(|w| w == b"\"m\":1"));
        }
        let out = tempfile::tempdir().unwrap();
        let contents = read_archive(&file, identities, out.path(), |_, _| Ok(u64::MAX)).unwrap();
        assert_eq!(contents.manifest, b"{\"m\":1}");
        assert_eq!(contents.mac, "abcd");
        assert_eq!(contents.encrypted, !recipients.is_empty());
        assert_eq!(
            std::fs::read(&contents.database.path).unwrap(),
            b"SQLite format 3\0 and the rest"
        );
        // Never over an existing file.
        assert!(write_archive(&file, b"{}", "00", &payload, recipients).is_err());
    }

    #[test]
    fn an_archive_reads_back_plain_and_encrypted() {
        roundtrip(&[], &[]);
        let identity = age::x25519::Identity::generate();
        roundtrip(&[identity.to_public()], &[identity]);
    }

    #[test]
    fn an_encrypted_archive_needs_the_right_identity() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        std::fs::write(&db, b"x").unwrap();
        let payload = Payload {
            name: "database.sqlite".into(),
            path: db,
        };
        let file = dir.path().join("b.tar.zst.age");
        let identity = age::x25519::Identity::generate();
        write_archive(&file, b"{}", "00", &payload, &[identity.to_public()]).unwrap();
        let out = tempfile::tempdir().unwrap();
        assert!(matches!(
            read_archive(&file, &[], out.path(), |_, _| Ok(0)),
            Err(BackupError::NeedsIdentity)
        ));
        let other = age::x25519::Identity::generate();
        assert!(matches!(
            read_archive(&file, &[other], out.path(), |_, _| Ok(0)),
            Err(BackupError::Decrypt(_))
        ));
    }

    #[test]
    fn the_manifest_is_admitted_before_the_database_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        std::fs::write(&db, vec![7u8; 4096]).unwrap();
        let payload = Payload {
            name: "database.sqlite".into(),
            path: db,
        };
        let file = dir.path().join("b.tar.zst");
        write_archive(&file, b"{}", "00", &payload, &[]).unwrap();
        // Refused at the manifest: nothing extracted.
        let out = tempfile::tempdir().unwrap();
        let refused = read_archive(&file, &[], out.path(), |_, _| Err(BackupError::ManifestMac));
        assert!(matches!(refused, Err(BackupError::ManifestMac)));
        assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
        // Bigger than admitted: refused, never written past the limit.
        let out = tempfile::tempdir().unwrap();
        let refused = read_archive(&file, &[], out.path(), |_, _| Ok(1000));
        assert!(
            matches!(refused, Err(BackupError::Format(_))),
            "{refused:?}"
        );
        let written = std::fs::metadata(out.path().join("database.sqlite"))
            .unwrap()
            .len();
        assert!(written <= 1001, "{written}");
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("junk");
        std::fs::write(&file, b"definitely not a backup").unwrap();
        assert!(matches!(
            read_archive(&file, &[], dir.path(), |_, _| Ok(0)),
            Err(BackupError::Format(_))
        ));
    }
}
