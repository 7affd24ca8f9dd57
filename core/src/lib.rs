//! `agent-secret-core`: the contract the control plane and the sidecar share.
//!
//! Everything here is free of HTTP servers and SQL so that both trust domains can link it:
//! the sidecar must never pull in storage code, and the control plane must never need the
//! proxy. The modules are named for the domain noun they own.
//!
//! [`policy`] is the one place the access rule lives: whether a grant may read a secret for
//! a destination, from an address, at a time. The control plane, the sidecar's warm path and
//! the test fakes all call it rather than checking anything themselves.

pub mod api;
pub mod cidr;
pub mod cipher;
pub mod credential;
pub mod diagnostics;
pub mod envelope;
pub mod host;
pub mod ids;
pub mod kms;
pub mod path;
pub mod pem;
pub mod placeholder;
pub mod policy;
pub mod scope;
pub mod secret;
pub mod secret_file;
