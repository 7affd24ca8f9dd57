//! Test support shared by every crate's tests.
//!
//! The light part depends on no crate of this workspace, so the core, the control plane and the
//! sidecar take it as a dev-dependency without building each other:
//! - [`pki::TestCa`]: a throwaway CA for the TLS servers a test starts.
//! - [`eventually`]: wait for an eventually-consistent effect, never a timing assertion.
//! - [`pg`]: the PostgreSQL test URL and a fresh database per test with production-like roles.
//! - [`backend_suite!`]: one `#[tokio::test]` per behaviour and backend.
//! - [`api::Api`]: calls to an in-process control plane's HTTPS API.
//! - [`process::Spawned`]: a spawned binary, stopped when the test ends, also on panic.
//!
//! The `harness` feature adds the running system for end-to-end tests, nothing of it a stub of
//! the product: [`harness::Harness`] starts the real control plane (TLS, SQL store, KMS), a real
//! sidecar and a real upstream on `127.0.0.1:0`, with fixture builders ([`harness::agent`]) so a
//! new end-to-end test reads in a few lines; [`control_plane`], [`sidecar`], [`upstream`] and
//! [`fake_gcp_kms`] are its parts, for tests that arrange the system themselves.
//! [`human::HumanLogin`] is a human operator (password + TOTP) logged in over real HTTPS, for
//! the endpoints only a session may call (approvals).

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod api;
pub mod pg;
pub mod pki;
pub mod process;
pub mod python;

#[cfg(feature = "browser")]
pub mod browser;
#[cfg(feature = "harness")]
pub mod control_plane;
#[cfg(feature = "harness")]
pub mod fake_gcp_kms;
#[cfg(feature = "harness")]
pub mod harness;
#[cfg(feature = "harness")]
pub mod human;
#[cfg(feature = "harness")]
pub mod sidecar;
#[cfg(feature = "harness")]
pub mod upstream;

#[cfg(feature = "harness")]
pub use control_plane::ControlPlane;
#[cfg(feature = "harness")]
pub use upstream::Upstream;

/// Installs the process-wide rustls provider once (the binaries do this in `main`).
pub fn init_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

use std::time::Duration;

/// What an [`eventually`] check reports: `true` or `Some(value)` once the effect is there.
pub trait Settled {
    type Value;
    fn settled(self) -> Option<Self::Value>;
}

impl Settled for bool {
    type Value = ();
    fn settled(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Settled for Option<T> {
    type Value = T;
    fn settled(self) -> Option<T> {
        self
    }
}

/// Polls `check` until it reports the effect settled (`true`, or `Some` with a value it
/// returns), or panics with `what` after `deadline`. For eventually-consistent effects
/// (revocation push, spool drain); never a timing assertion.
pub async fn eventually<S: Settled>(
    what: &str,
    deadline: Duration,
    mut check: impl AsyncFnMut() -> S,
) -> S::Value {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(v) = check().await.settled() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Expands to one `#[tokio::test]` per behaviour and backend: `backend_suite!(Fixture: a, b)`
/// runs `async fn a(f: &Fixture)` against `Fixture::sqlite().await` in `mod sqlite` and against
/// `Fixture::postgres().await` (an `Option`: `None` skips, see [`pg::postgres_url`]) in
/// `mod postgres`.
#[macro_export]
macro_rules! backend_suite {
    ($fixture:ident: $($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let fixture = super::$fixture::sqlite().await;
                    super::$name(&fixture).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let Some(fixture) = super::$fixture::postgres().await else { return };
                    super::$name(&fixture).await;
                }
            )*
        }
    };
}
