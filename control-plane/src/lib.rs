//! `agent-secret-store`: the control plane.
//!
//! Domain logic (`audit`, `service`) is free of HTTP and SQL; `store` owns SQL, `api` owns HTTP.

pub mod api;
pub mod audit;
pub mod bootstrap;
pub mod cli;
pub mod config;
pub mod db;
#[cfg(feature = "dev")]
pub mod dev;
pub mod events;
pub mod limits;
pub mod metrics;
pub mod rotation;
pub mod server;
pub mod service;
pub mod store;
pub mod tls;
