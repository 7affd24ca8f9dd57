//! Test support shared by every crate's tests. It depends on no crate of this workspace, so
//! the control plane, the sidecar and the end-to-end tests can all take it as a
//! dev-dependency without compiling a second copy of themselves.
//!
//! - [`pki::TestCa`]: a throwaway CA for the TLS servers a test starts.
//! - [`eventually`]: wait for an eventually-consistent effect, never a timing assertion.
//! - [`pg`]: the PostgreSQL test URL and a fresh database per test with production-like roles.
//! - [`backend_suite!`]: one `#[tokio::test]` per behaviour and backend.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod pg;
pub mod pki;

use std::future::Future;
use std::time::Duration;

/// Polls `check` until it returns `Some`, or panics with `what` after `deadline`. For
/// eventually-consistent effects (revocation push, spool drain); never a timing assertion.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
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
