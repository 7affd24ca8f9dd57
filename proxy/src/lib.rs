//! `agent-secret-proxy`: the sidecar that injects secrets into agents' outbound requests.
//!
//! An agent sends its request through the sidecar with `{{secret:PATH}}` where a credential
//! goes; the sidecar authenticates the agent's scoped token, resolves and decrypts the secret
//! just in time, substitutes it, forwards the request over TLS and scrubs the value from the
//! response. The agent never holds the credential. Modules are named for what they own:
//! [`route`] decides where a request goes, [`auth`] who sent it, [`inject`] what to substitute,
//! [`resolver`] (with [`cache`] and [`control_plane`]) the values, [`ssrf`] which addresses may
//! be dialled, [`rate_limit`] how often, [`scrub`] what comes back, [`proxy`] glues them into pingora and [`sidecar`]
//! starts and stops the whole.
//!
//! Embedding (end-to-end tests): build a [`config::ProxyConfig`] (e.g. with
//! [`config::ProxyConfig::from_toml_str`] and `listen = "127.0.0.1:0"`), call
//! [`sidecar::Sidecar::start`] inside a tokio runtime, read `proxy_addr()`/`admin_addr()`, and
//! `stop().await` at the end.

pub mod admin;
mod admit;
pub mod audit;
pub mod auth;
pub mod cache;
mod caller;
pub mod config;
pub mod control_plane;
pub mod denial;
pub mod inject;
pub mod metrics;
pub mod proxy;
pub mod rate_limit;
pub mod resolver;
mod response_plan;
pub mod route;
pub mod scrub;
pub mod sidecar;
pub mod spool;
pub mod ssrf;
mod upstream;
pub mod watch;

pub use config::ProxyConfig;

/// Resolves once `shutdown` is true (or its sender is gone). Returns `()`, so no watch guard
/// is held across an `.await` by callers in `select!`.
pub(crate) async fn stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
pub use sidecar::{run, RunningSidecar, Sidecar, StartError};
