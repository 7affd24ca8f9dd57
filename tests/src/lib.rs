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
pub mod sidecar;
pub mod upstream;

pub use control_plane::ControlPlane;
pub use upstream::Upstream;

/// Installs the process-wide rustls provider once (the binaries do this in `main`).
pub fn init_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub use agent_secret_testkit::pg::postgres_url;
pub use agent_secret_testkit::{eventually, pki};
