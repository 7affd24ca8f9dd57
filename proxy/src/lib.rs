//! `agent-secret-proxy`: the sidecar that injects secrets into agents' outbound requests.
//!
//! An agent sends its request through the sidecar with `{{secret:PATH}}` where a credential
//! goes; the sidecar authenticates the agent's scoped token, resolves and decrypts the secret
//! just in time, substitutes it, forwards the request over TLS and scrubs the value from the
//! response. The agent never holds the credential. Modules are named for what they own:
//! `route` decides where a request goes, `auth` who sent it, `inject` what to substitute,
//! `admit` whether it may go, `resolver` (with `cache` and `control_plane`) the values, `ssrf`
//! which addresses may be dialled, `rate_limit` how often, `upstream` what is sent,
//! [`scrub`] and `response_plan` what comes back, `proxy` orders them in pingora's phases and
//! `sidecar` starts and stops the whole.
//!
//! Only what is used outside the crate is public: the [`config`] (a [`ProxyConfig`] and the
//! types of its fields), the [`Sidecar`] that runs it, its [`metrics`], the [`audit`] backend
//! trait (tests count events with their own), and [`scrub`] (property-tested from outside).
//!
//! Embedding (end-to-end tests): build a [`ProxyConfig`] (e.g. with
//! [`ProxyConfig::from_toml_str`] and `listen = "127.0.0.1:0"`), call [`Sidecar::start`]
//! inside a tokio runtime, read `proxy_addr()`/`admin_addr()`, and `stop().await` at the end.

mod admin;
mod admit;
pub mod audit;
mod auth;
mod cache;
mod caller;
pub mod config;
mod connection_cap;
mod control_plane;
mod denial;
pub mod downstream;
mod inject;
pub mod mcp;
pub mod metrics;
mod proxy;
mod rate_limit;
mod resolver;
mod response_plan;
mod route;
pub mod scrub;
mod sidecar;
mod spool;
mod ssrf;
mod upstream;
mod watch;

pub use config::ProxyConfig;
/// Field types of [`ProxyConfig`] owned by the modules that use them (`[limits]`,
/// `[rate_limits]`), so a config can be written in code.
pub use inject::Limits;
pub use rate_limit::RateLimitConfig;
pub use sidecar::{run, RunningSidecar, Sidecar, StartError};

/// Resolves once `shutdown` is true (or its sender is gone). Returns `()`, so no watch guard
/// is held across an `.await` by callers in `select!`.
pub(crate) async fn stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
