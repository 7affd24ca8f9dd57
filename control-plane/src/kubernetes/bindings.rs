//! Which service accounts may exchange their projected token for an agent's scoped tokens
//! (`[[kubernetes.bindings]]`, docs/kubernetes.md): namespace and service account → tenant,
//! agent and the longest TTL. The agent's ceiling still bounds what the token may cover.

use serde::Deserialize;

use super::identity::ServiceAccount;

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    pub namespace: String,
    /// A service account's name, or `*` for every service account of the namespace.
    pub service_account: String,
    /// The tenant's id.
    pub tenant: String,
    /// The agent whose scoped tokens the service account may get (`POST /v1/auth/kubernetes`).
    #[serde(default)]
    pub agent: Option<String>,
    /// The sidecar the service account authenticates as with its projected token, instead of
    /// a sidecar key.
    #[serde(default)]
    pub sidecar: Option<String>,
    /// The longest TTL a token exchanged through this binding may have.
    #[serde(default = "default_max_ttl_seconds")]
    pub max_ttl_seconds: u64,
}

fn default_max_ttl_seconds() -> u64 {
    900
}

/// Why a valid token gets no binding. Distinct so an operator can tell a missing binding from
/// a workload in the wrong namespace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindingError {
    #[error("no binding for service account {0}")]
    Unbound(String),
    #[error("service account {name} is bound in namespace(s) {bound}, not in {namespace}")]
    NamespaceOutside {
        name: String,
        namespace: String,
        bound: String,
    },
}

/// The binding for `sa`: its own, else its namespace's wildcard.
pub fn find<'a>(bindings: &'a [Binding], sa: &ServiceAccount) -> Result<&'a Binding, BindingError> {
    let in_namespace = |b: &&Binding| b.namespace == sa.namespace;
    if let Some(b) = bindings
        .iter()
        .filter(in_namespace)
        .find(|b| b.service_account == sa.name)
        .or_else(|| {
            bindings
                .iter()
                .filter(in_namespace)
                .find(|b| b.service_account == "*")
        })
    {
        return Ok(b);
    }
    let elsewhere: Vec<&str> = bindings
        .iter()
        .filter(|b| b.service_account == sa.name)
        .map(|b| b.namespace.as_str())
        .collect();
    if elsewhere.is_empty() {
        Err(BindingError::Unbound(sa.username()))
    } else {
        Err(BindingError::NamespaceOutside {
            name: sa.name.clone(),
            namespace: sa.namespace.clone(),
            bound: elsewhere.join(", "),
        })
    }
}
