//! JSON types of the control-plane API that both the control plane and the sidecar speak.
//!
//! [`error`] holds the codes every refusal carries, [`operator`] the operator API (identities,
//! secrets, tokens), [`approval`] approval requests and agent ceilings, [`sidecar`] what a sidecar and the control plane exchange (resolve,
//! release, audit, watch). Everything is re-exported here, so `api::Grant` and
//! `api::sidecar::Grant` name the same type.

pub mod approval;
pub mod error;
pub mod operator;
pub mod session;
pub mod sidecar;
pub mod timestamp;

pub use approval::*;
pub use error::*;
pub use operator::*;
pub use session::*;
pub use sidecar::*;
