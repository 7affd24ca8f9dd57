//! Kubernetes: the sidecar injector, a mutating admission webhook served by the control plane
//! when `[kubernetes] injector = true` (docs/kubernetes.md).
//!
//! [`inject`] is the decision, a plain function of the AdmissionReview and the injector's
//! settings, tested with real AdmissionReview JSON; `crate::api` only carries it over HTTPS.

pub mod bindings;
pub mod identity;
pub mod inject;

pub use inject::{InjectError, Injector, InjectorSettings};

/// A Kubernetes object name (an RFC 1123 subdomain: namespaces, service accounts, Secrets):
/// 1 to 253 of `[a-z0-9.-]`, starting and ending alphanumeric.
pub fn is_object_name(name: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    (1..=253).contains(&name.len())
        && name.bytes().all(|b| alnum(b) || b == b'-' || b == b'.')
        && name.bytes().next().is_some_and(alnum)
        && name.bytes().last().is_some_and(alnum)
}
