//! The API over real sockets and real TLS: TLS 1.3 only, the dev CA verifies, graceful stop.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use agent_secret_control_plane::db::Db;
use agent_secret_control_plane::service::{App, Policy};
use agent_secret_control_plane::store::sql::SqlStore;
use agent_secret_control_plane::{server, tls};
use agent_secret_core::credential::Pepper;
use agent_secret_core::kms::local::{LocalKms, MasterKey};
use rustls::pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

async fn start(
    dir: &std::path::Path,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
    tls::SelfSigned,
) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let db = Db::connect(&format!("sqlite://{}", dir.join("store.db").display()))
        .await
        .unwrap();
    db.migrate().await.unwrap();
    let kms = LocalKms::open_or_create(dir.join("keyring"), MasterKey::generate()).unwrap();
    let app = Arc::new(App::new(
        Arc::new(SqlStore::new(db)),
        Arc::new(kms),
        Arc::new(Pepper::generate()),
        Policy::default(),
    ));
    let cert = tls::self_signed(&dir.join("tls")).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(server::serve(
        listener,
        Arc::new(cert.config.clone()),
        app,
        async {
            let _ = stopped.await;
        },
    ));
    (addr, stop, handle, cert)
}

fn client_config(
    ca: &std::path::Path,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

#[tokio::test]
async fn serves_https_with_the_dev_ca_and_stops_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, stop, handle, cert) = start(dir.path()).await;
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&cert.cert_path).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let res = client
        .get(format!("https://localhost:{}/healthz", addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.version(), reqwest::Version::HTTP_2, "ALPN offers h2");
    let res = client
        .get(format!("https://127.0.0.1:{}/readyz", addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(cert.fingerprint_sha256.len(), 32 * 3 - 1);

    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "listener closed after shutdown"
    );
}

#[tokio::test]
async fn refuses_tls_1_2_clients() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _stop, _handle, cert) = start(dir.path()).await;
    let name = ServerName::try_from("localhost").unwrap();

    let tls12 = TlsConnector::from(Arc::new(client_config(
        &cert.cert_path,
        &[&rustls::version::TLS12],
    )));
    let tcp = TcpStream::connect(addr).await.unwrap();
    assert!(
        tls12.connect(name.clone(), tcp).await.is_err(),
        "a TLS 1.2 handshake must fail"
    );

    let tls13 = TlsConnector::from(Arc::new(client_config(
        &cert.cert_path,
        &[&rustls::version::TLS13],
    )));
    let tcp = TcpStream::connect(addr).await.unwrap();
    assert!(tls13.connect(name, tcp).await.is_ok());
}

#[tokio::test]
async fn reuses_the_dev_certificate_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let first = tls::self_signed(dir.path()).unwrap();
    let second = tls::self_signed(dir.path()).unwrap();
    assert_eq!(first.fingerprint_sha256, second.fingerprint_sha256);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("server.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}
