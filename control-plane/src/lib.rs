//! `agent-secret-control-plane`: the control plane as a library. The `agent-secret-store`
//! binary (crate `app/`) wires it to the command line; this crate never links the sidecar.
//!
//! Domain logic (`audit`, `service`) is free of HTTP and SQL; `store` owns SQL, `api` owns HTTP.

pub mod anomaly;
pub mod api;
pub mod audit;
pub mod audit_checkpoint;
pub mod audit_file;
pub mod backup;
pub mod bootstrap;
pub mod config;
pub mod db;
pub mod events;
pub mod kubernetes;
pub mod limits;
pub mod mcp;
pub mod metrics;
pub mod password;
pub mod rotation;
pub mod server;
pub mod service;
pub mod store;
pub mod tls;
pub mod totp;
