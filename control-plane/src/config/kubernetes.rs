//! `[kubernetes]`: the sidecar injector webhook (`crate::kubernetes`, docs/kubernetes.md).

use std::path::PathBuf;

use serde::Deserialize;

use super::error::{invalid, ConfigError};
use crate::kubernetes::InjectorSettings;

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
        }
    }
}

impl KubernetesConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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
        if !is_dns_label(&self.sidecar_credentials_secret) {
            return Err(invalid(
                "kubernetes.sidecar_credentials_secret",
                "a Secret name: 1 to 253 of [a-z0-9.-], starting and ending alphanumeric",
            ));
        }
        if self.token_audience.trim().is_empty() {
            return Err(invalid("kubernetes.token_audience", "must not be empty"));
        }
        if self.sidecar_port == 0 {
            return Err(invalid("kubernetes.sidecar_port", "must be 1 to 65535"));
        }
        Ok(())
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
        }))
    }
}

/// A Kubernetes object name (RFC 1123 subdomain).
fn is_dns_label(name: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    (1..=253).contains(&name.len())
        && name.bytes().all(|b| alnum(b) || b == b'-' || b == b'.')
        && name.bytes().next().is_some_and(alnum)
        && name.bytes().last().is_some_and(alnum)
}
