//! PEM files: certificate bundles and private keys read from a path, with errors that name the
//! file.
//!
//! The control plane's TLS listener, the sidecar's control-plane client and its upstream trust
//! store all read PEM; one reader means one answer to "what if a section is malformed" (the
//! file is refused, not silently skipped). Parsing is `rustls-pki-types`, which every TLS
//! stack in the workspace already links; a key's bytes stay in zeroizing buffers and a
//! malformed key file's error never quotes it.

use std::io;
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
pub use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use zeroize::Zeroizing;

/// Why a PEM file cannot be used. Names the file; never quotes a key.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is not valid PEM: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key")]
    NoKey { path: PathBuf },
}

/// Every certificate in the PEM bundle at `path`, in file order; at least one.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemError::Malformed {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(PemError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in the PEM file at `path`.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => PemError::NoKey {
            path: path.to_owned(),
        },
        // The parser's message can quote the offending line: say only that it is malformed.
        _ => PemError::Malformed {
            path: path.to_owned(),
            reason: "a private key section does not parse".to_owned(),
        },
    })
}

fn read(path: &Path) -> Result<Zeroizing<Vec<u8>>, PemError> {
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|source| PemError::Read {
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    // A self-signed certificate is not needed: the reader checks PEM framing and base64, and
    // the TLS stacks check the DER. These bodies are short base64 runs.
    const CERT_A: &str = "-----BEGIN CERTIFICATE-----\nAAECAw==\n-----END CERTIFICATE-----\n";
    const CERT_B: &str = "-----BEGIN CERTIFICATE-----\nBAUGBw==\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nCAkKCw==\n-----END PRIVATE KEY-----\n";

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_bundle_yields_every_certificate_in_order_and_skips_other_sections() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "ca.pem", &format!("{CERT_A}{KEY}{CERT_B}"));
        let certs = certificates(&path).unwrap();
        let ders: Vec<&[u8]> = certs.iter().map(|c| c.as_ref()).collect();
        assert_eq!(ders, [&[0u8, 1, 2, 3][..], &[4, 5, 6, 7][..]]);
    }

    #[test]
    fn the_first_private_key_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "server.key", &format!("{CERT_A}{KEY}"));
        let key = private_key(&path).unwrap();
        assert!(matches!(key, PrivateKeyDer::Pkcs8(_)));
        assert_eq!(key.secret_der(), [8, 9, 10, 11]);
    }

    #[test]
    fn missing_empty_and_malformed_files_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent.pem");
        let empty = write(dir.path(), "empty.pem", "no PEM here\n");
        let truncated = write(
            dir.path(),
            "truncated.pem",
            "-----BEGIN CERTIFICATE-----\nAAEC\n",
        );
        let bad_key = write(
            dir.path(),
            "bad.key",
            "-----BEGIN PRIVATE KEY-----\nSECRET!!\n-----END PRIVATE KEY-----\n",
        );
        let cases = [
            (certificates(&missing).unwrap_err(), &missing),
            (private_key(&missing).unwrap_err(), &missing),
            (certificates(&empty).unwrap_err(), &empty),
            (private_key(&empty).unwrap_err(), &empty),
            (certificates(&truncated).unwrap_err(), &truncated),
            (private_key(&bad_key).unwrap_err(), &bad_key),
        ];
        assert!(matches!(cases[0].0, PemError::Read { .. }));
        assert!(matches!(cases[2].0, PemError::NoCertificate { .. }));
        assert!(matches!(cases[3].0, PemError::NoKey { .. }));
        assert!(matches!(cases[4].0, PemError::Malformed { .. }));
        assert!(matches!(cases[5].0, PemError::Malformed { .. }));
        for (err, path) in &cases {
            let shown = err.to_string();
            assert!(shown.contains(&path.display().to_string()), "{shown}");
            assert!(!shown.contains("SECRET"), "{shown}");
        }
    }
}
