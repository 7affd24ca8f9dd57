//! Server TLS: TLS 1.3 only, from PEM files or, for `dev`, a locally minted CA and leaf.
//!
//! The dev pair is a small private CA (`ca.pem`) that signs a leaf for localhost, 127.0.0.1
//! and ::1. Clients trust `ca.pem` (`--ca-cert`); the SHA-256 fingerprint printed at start-up
//! lets an operator check it out of band.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use agent_secret_core::pem::{self, PemError};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A dev certificate authority and the server config built from its leaf.
pub struct SelfSigned {
    pub config: ServerConfig,
    /// The CA certificate clients should trust.
    pub cert_path: PathBuf,
    /// SHA-256 of the CA certificate (DER), hex with colons.
    pub fingerprint_sha256: String,
}

fn tls13_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Server config from a PEM chain and key.
pub fn server_config_from_files(cert: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    tls13_config(pem::certificates(cert)?, pem::private_key(key)?)
}

/// SHA-256 of a DER certificate as `AB:CD:…`.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Reuses `dir/{ca.pem,server.pem,server.key}` if present, else mints them (keys mode 0600).
pub fn self_signed(dir: &Path) -> Result<SelfSigned, TlsError> {
    let ca_path = dir.join("ca.pem");
    let cert_path = dir.join("server.pem");
    let key_path = dir.join("server.key");
    if !(ca_path.exists() && cert_path.exists() && key_path.exists()) {
        mint(dir, &ca_path, &cert_path, &key_path)?;
    }
    let ca = pem::certificates(&ca_path)?;
    let fingerprint_sha256 = fingerprint(ca[0].as_ref());
    Ok(SelfSigned {
        config: server_config_from_files(&cert_path, &key_path)?,
        cert_path: ca_path,
        fingerprint_sha256,
    })
}

fn mint(dir: &Path, ca_path: &Path, cert_path: &Path, key_path: &Path) -> Result<(), TlsError> {
    fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Agent Secret Store dev CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca_issuer = rcgen::Issuer::new(ca_params, ca_key);

    let leaf_key = KeyPair::generate()?;
    let mut leaf_params = CertificateParams::new(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ])?;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "agent-secret-store");
    let leaf = leaf_params.signed_by(&leaf_key, &ca_issuer)?;

    write_file(ca_path, ca_cert.pem().as_bytes(), 0o644)?;
    write_file(
        cert_path,
        format!("{}{}", leaf.pem(), ca_cert.pem()).as_bytes(),
        0o644,
    )?;
    write_file(key_path, leaf_key.serialize_pem().as_bytes(), 0o600)
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let err = |source| TlsError::Write {
        path: path.to_owned(),
        source,
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    file.write_all(bytes).map_err(err)?;
    file.sync_all().map_err(err)
}
