//! A throwaway CA per test run for upstream HTTPS servers.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
}

impl TestCa {
    pub fn new() -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "agent-secret-store test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join("upstream-ca.pem");
        std::fs::write(&path, &self.pem).unwrap();
        path
    }

    /// A TLS 1.2/1.3 server config for `names` (e.g. "localhost", "127.0.0.1").
    pub fn server_config(&self, names: &[&str]) -> rustls::ServerConfig {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let chain = vec![CertificateDer::from(cert.der().to_vec())];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config
    }
}

impl TestCa {
    /// A TLS 1.3-only server config for the loopback names (`localhost`, `127.0.0.1`,
    /// `127.0.0.2`, `::1`) offering h2 and http/1.1: what the control plane serves.
    pub fn loopback_tls13(&self) -> std::sync::Arc<rustls::ServerConfig> {
        let key = KeyPair::generate().unwrap();
        let names = ["localhost", "127.0.0.1", "127.0.0.2", "::1"].map(str::to_owned);
        let leaf = CertificateParams::new(names.to_vec())
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        let chain = vec![CertificateDer::from(leaf.der().to_vec())];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        std::sync::Arc::new(config)
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}
