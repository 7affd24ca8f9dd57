//! Test support for end-to-end tests: the real control plane over TLS, the real sidecar, and
//! real upstream servers, all on `127.0.0.1:0` in the test's process.
//!
//! Nothing here is a stub of the product: `ControlPlane` runs `agent_secret_control_plane::server`
//! with its SQL store and local KMS, and `start_sidecar` runs `agent_secret_proxy::Sidecar`
//! with a config file's worth of TOML. Only the upstreams are test servers, because they stand
//! in for third-party APIs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod control_plane;
pub mod fake_gcp_kms;
pub mod pki;
pub mod sidecar;
pub mod upstream;

pub use control_plane::ControlPlane;
pub use upstream::Upstream;

/// Installs the process-wide rustls provider once (the binaries do this in `main`).
pub fn init_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// PostgreSQL superuser URL for tests, if configured; under `CI=true` its absence is fatal.
pub fn postgres_url() -> Option<String> {
    match std::env::var("AGENT_SECRET_STORE_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true but AGENT_SECRET_STORE_TEST_DATABASE_URL is not set")
        }
        _ => {
            eprintln!("skipped: set AGENT_SECRET_STORE_TEST_DATABASE_URL");
            None
        }
    }
}

/// Polls `check` until it returns `Some`, or panics with `what` after `deadline`. For
/// eventually-consistent effects (revocation push, spool drain); never a timing assertion.
pub async fn eventually<T, F, Fut>(what: &str, deadline: std::time::Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}
