//! `agent-secret-store`: the binary's library half. `cli` declares and dispatches the commands;
//! `dev` runs the whole system in one process for development. The control plane
//! (`agent-secret-control-plane`) and the sidecar (`agent-secret-proxy`) are libraries this
//! crate wires together; only `dev` links the sidecar, behind
//! the default `dev` feature: `--no-default-features` builds a binary without pingora for
//! production control-plane hosts.

pub mod cli;
#[cfg(feature = "dev")]
pub mod dev;
