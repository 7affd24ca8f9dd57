//! `[kubernetes]`: the sidecar injector webhook (`crate::kubernetes`, docs/kubernetes.md).

use std::path::PathBuf;

use serde::Deserialize;

use super::error::{invalid, ConfigError};
use crate::kubernetes::bindings::Binding;
use crate::kubernetes::identity::{Verifier, VerifierSettings};
use crate::kubernetes::{is_object_name, InjectorSettings};
use crate::service::workload_identity::WorkloadIdentity;

/// How projected service-account tokens are checked (`[kubernetes] identity`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum IdentityMode {
    /// No exchange: `POST /v1/auth/kubernetes` answers 404.
    #[default]
    Off,
    /// The API server's TokenReview (needs RBAC `create` on tokenreviews).
    TokenReview,
    /// The cluster issuer's public keys.
    Jwks,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubernetesConfig {
    /// Serve the injector at `POST /kubernetes/inject` (the API server calls it over this
    /// listener's TLS; the MutatingWebhookConfiguration carries the CA).
    pub injector: bool,
    /// The sidecar image the injector adds.
    pub sidecar_image: String,
    /// The injected sidecar's configuration (TOML, config/kubernetes/sidecar.toml): the
    /// injector sets `listen`, `admin_listen`, `[audit] spool_path`, and adds the pod's routes.
    pub sidecar_template: Option<PathBuf>,
    /// The Secret, in each injected pod's namespace, with `ca.pem`, `keyring.json`,
    /// `sidecar-key` and `master-key`.
    pub sidecar_credentials_secret: String,
    /// Audience of the service-account token projected into the sidecar.
    pub token_audience: String,
    /// The sidecar's agent-facing port on the pod's loopback.
    pub sidecar_port: u16,
    /// Injected sidecars authenticate with their projected service-account token (needs
    /// `identity` on and a binding naming each namespace's sidecar) instead of `sidecar-key`.
    pub sidecar_service_account: bool,
    /// Workload identity: `off`, `token_review` or `jwks`.
    pub identity: IdentityMode,
    /// The API server, for `token_review`.
    pub api_url: String,
    /// The API server's CA (`token_review`), or the JWKS endpoint's (`jwks`); absent: the
    /// public roots.
    pub api_ca_file: Option<PathBuf>,
    /// The control plane's own service-account token, sent with each TokenReview (read at
    /// each call: the kubelet rotates it).
    pub api_token_file: PathBuf,
    /// The issuer's key set, for `jwks`.
    pub jwks_url: Option<String>,
    /// The `iss` tokens carry, for `jwks`.
    pub issuer: Option<String>,
    /// Which service accounts exchange their tokens for which agent's.
    pub bindings: Vec<Binding>,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        KubernetesConfig {
            injector: false,
            sidecar_image: String::new(),
            sidecar_template: None,
            sidecar_credentials_secret: "agent-secret-sidecar".into(),
            token_audience: "agent-secret-store".into(),
            sidecar_port: 8080,
            sidecar_service_account: false,
            identity: IdentityMode::Off,
            api_url: "https://kubernetes.default.svc".into(),
            api_ca_file: Some("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt".into()),
            api_token_file: "/var/run/secrets/kubernetes.io/serviceaccount/token".into(),
            jwks_url: None,
            issuer: None,
            bindings: Vec::new(),
        }
    }
}

impl KubernetesConfig {
    pub(super) fn validate(&self, max_ttl_seconds: u64) -> Result<(), ConfigError> {
        self.validate_identity(max_ttl_seconds)?;
        if !self.injector {
            return Ok(());
        }
        if self.sidecar_image.trim().is_empty() {
            return Err(invalid(
                "kubernetes.sidecar_image",
                "required when kubernetes.injector is on",
            ));
        }
        if self.sidecar_template.is_none() {
            return Err(invalid(
                "kubernetes.sidecar_template",
                "required when kubernetes.injector is on",
            ));
        }
        if !is_object_name(&self.sidecar_credentials_secret) {
            return Err(invalid(
                "kubernetes.sidecar_credentials_secret",
                "a Secret name: 1 to 253 of [a-z0-9.-], starting and ending alphanumeric",
            ));
        }
        if self.token_audience.trim().is_empty() {
            return Err(invalid("kubernetes.token_audience", "must not be empty"));
        }
        if self.sidecar_service_account && self.identity == IdentityMode::Off {
            return Err(invalid(
                "kubernetes.sidecar_service_account",
                "needs kubernetes.identity (token_review or jwks) to check the sidecars' tokens",
            ));
        }
        if self.sidecar_port == 0 {
            return Err(invalid("kubernetes.sidecar_port", "must be 1 to 65535"));
        }
        Ok(())
    }

    fn validate_identity(&self, max_ttl_seconds: u64) -> Result<(), ConfigError> {
        match self.identity {
            IdentityMode::Off => return Ok(()),
            IdentityMode::TokenReview => {
                super::check_https_url("kubernetes.api_url", &self.api_url)?;
            }
            IdentityMode::Jwks => {
                let url = self.jwks_url.as_deref().ok_or_else(|| {
                    invalid(
                        "kubernetes.jwks_url",
                        "required when kubernetes.identity = \"jwks\"",
                    )
                })?;
                super::check_https_url("kubernetes.jwks_url", url)?;
                if self.issuer.as_deref().is_none_or(|i| i.trim().is_empty()) {
                    return Err(invalid(
                        "kubernetes.issuer",
                        "required when kubernetes.identity = \"jwks\"",
                    ));
                }
            }
        }
        if self.token_audience.trim().is_empty() {
            return Err(invalid("kubernetes.token_audience", "must not be empty"));
        }
        for b in &self.bindings {
            let key = format!("kubernetes.bindings[{}/{}]", b.namespace, b.service_account);
            let names_ok = is_object_name(&b.namespace)
                && (b.service_account == "*" || is_object_name(&b.service_account));
            if !names_ok {
                return Err(invalid(
                    &key,
                    "namespace and service_account are Kubernetes names (service_account may be *)",
                ));
            }
            let ids_ok = b.tenant.parse::<agent_secret_core::ids::TenantId>().is_ok()
                && b.agent
                    .as_ref()
                    .is_none_or(|a| a.parse::<agent_secret_core::ids::AgentId>().is_ok())
                && b.sidecar
                    .as_ref()
                    .is_none_or(|s| s.parse::<agent_secret_core::ids::SidecarId>().is_ok());
            if !ids_ok {
                return Err(invalid(&key, "tenant, agent and sidecar are ids (UUIDs)"));
            }
            if b.agent.is_none() && b.sidecar.is_none() {
                return Err(invalid(
                    &key,
                    "a binding names an agent, a sidecar, or both",
                ));
            }
            if !(1..=max_ttl_seconds).contains(&b.max_ttl_seconds) {
                return Err(invalid(
                    &format!("{key}.max_ttl_seconds"),
                    &format!("must be 1 to tokens.max_ttl_seconds ({max_ttl_seconds})"),
                ));
            }
        }
        Ok(())
    }

    /// The token exchange when `identity` is on: builds the verifier (reads the CA file).
    pub fn workload_identity(&self) -> Result<Option<WorkloadIdentity>, ConfigError> {
        let ca_pem = match (&self.api_ca_file, self.identity) {
            (_, IdentityMode::Off) => return Ok(None),
            (Some(path), _) => Some(std::fs::read(path).map_err(|e| {
                invalid(
                    "kubernetes.api_ca_file",
                    &format!("cannot read {}: {e}", path.display()),
                )
            })?),
            (None, _) => None,
        };
        let settings = match self.identity {
            IdentityMode::Off => return Ok(None),
            IdentityMode::TokenReview => VerifierSettings::TokenReview {
                api_url: self.api_url.clone(),
                ca_pem,
                token_file: self.api_token_file.clone(),
            },
            IdentityMode::Jwks => VerifierSettings::Jwks {
                jwks_url: self.jwks_url.clone().unwrap_or_default(),
                ca_pem,
                issuer: self.issuer.clone().unwrap_or_default(),
            },
        };
        let verifier = Verifier::new(settings, &self.token_audience)
            .map_err(|e| invalid("kubernetes.identity", &e.to_string()))?;
        Ok(Some(WorkloadIdentity {
            verifier,
            bindings: self.bindings.clone(),
        }))
    }

    /// The injector's settings when it is on: reads and parses `sidecar_template`.
    pub fn injector_settings(&self) -> Result<Option<InjectorSettings>, ConfigError> {
        let (true, Some(path)) = (self.injector, &self.sidecar_template) else {
            return Ok(None);
        };
        let key = "kubernetes.sidecar_template";
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid(key, &format!("cannot read {}: {e}", path.display())))?;
        // The parser's message, not the text: the template may name key files.
        let template: toml::Table = toml::from_str(&text).map_err(|e| {
            invalid(
                key,
                &format!("{} is not TOML: {}", path.display(), e.message()),
            )
        })?;
        Ok(Some(InjectorSettings {
            image: self.sidecar_image.clone(),
            template,
            credentials_secret: self.sidecar_credentials_secret.clone(),
            token_audience: self.token_audience.clone(),
            proxy_port: self.sidecar_port,
            service_account_auth: self.sidecar_service_account,
        }))
    }
}
