//! Kubernetes: the sidecar injector, a mutating admission webhook served by the control plane
//! when `[kubernetes] injector = true` (docs/kubernetes.md).
//!
//! [`inject`] is the decision, a plain function of the AdmissionReview and the injector's
//! settings, tested with real AdmissionReview JSON; `crate::api` only carries it over HTTPS.

pub mod bindings;
pub mod identity;
pub mod inject;

pub use inject::{InjectError, Injector, InjectorSettings};
