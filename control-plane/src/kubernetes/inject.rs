//! The sidecar injector: adds the sidecar to a pod annotated `agent-secrets.io/inject: "true"`
//! and points the pod's containers at it (docs/kubernetes.md has the annotations and what the
//! pod gets).
//!
//! The pod is read as JSON and changed only by JSON Patch `add` operations: a field these
//! Kubernetes types do not know (a newer API server's) is never dropped or rewritten, and what
//! the operator wrote stays as written. The sidecar runs as a native sidecar (an init container
//! with `restartPolicy: Always`, first in the list), so it is up before any other container
//! starts and does not keep a Job from completing.
//!
//! Re-admission is a no-op: a pod that already has a container named [`SIDECAR_NAME`] is let
//! through unchanged, so a controller re-applying an injected pod spec gets no second sidecar.
//! An annotation the injector cannot use is a refusal naming it, not a pod silently started
//! without its sidecar (fail closed).

use std::collections::BTreeMap;

use json_patch::Patch;
use kube_core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube_core::DynamicObject;
use serde_json::{json, Value};

use annotations::Asked;
use patch::{add, env_ops, invalid, patch_as_base64};

/// `"true"` asks for the sidecar.
pub const ANNOTATION_INJECT: &str = "agent-secrets.io/inject";
/// Set to `injected` on a pod the injector changed.
pub const ANNOTATION_STATUS: &str = "agent-secrets.io/status";
/// The control plane this pod's sidecar talks to, instead of the template's.
pub const ANNOTATION_CONTROL_PLANE_URL: &str = "agent-secrets.io/control-plane-url";
/// More `[[routes]]` for the sidecar: `name=https://upstream/base/, other=https://...`; each
/// becomes prefix `/name/`.
pub const ANNOTATION_ROUTES: &str = "agent-secrets.io/routes";
/// More hosts the app containers reach without the sidecar (comma-separated, appended to
/// `NO_PROXY`).
pub const ANNOTATION_NO_PROXY: &str = "agent-secrets.io/no-proxy";
/// The sidecar's resources: `cpu-request`, `memory-request`, `cpu-limit`, `memory-limit`.
pub const ANNOTATION_RESOURCES: [(&str, &str, &str); 4] = [
    ("agent-secrets.io/cpu-request", "requests", "cpu"),
    ("agent-secrets.io/memory-request", "requests", "memory"),
    ("agent-secrets.io/cpu-limit", "limits", "cpu"),
    ("agent-secrets.io/memory-limit", "limits", "memory"),
];

/// Every annotation the injector reads, by name.
pub const ANNOTATIONS: [&str; 9] = [
    ANNOTATION_INJECT,
    ANNOTATION_STATUS,
    ANNOTATION_CONTROL_PLANE_URL,
    ANNOTATION_ROUTES,
    ANNOTATION_NO_PROXY,
    ANNOTATION_RESOURCES[0].0,
    ANNOTATION_RESOURCES[1].0,
    ANNOTATION_RESOURCES[2].0,
    ANNOTATION_RESOURCES[3].0,
];

/// The sidecar container's name; its presence marks a pod as injected.
pub const SIDECAR_NAME: &str = "agent-secret-proxy";
/// The sidecar binary in the image (Dockerfile).
pub const SIDECAR_COMMAND: &str = "/usr/local/bin/agent-secret-proxy";
/// Where the sidecar reads its configuration (TOML text) from.
pub use agent_secret_core::api::ENV_PROXY_CONFIG_TOML as ENV_CONFIG_TOML;
/// The sidecar's admin listener (`/healthz` for the probes, `/metrics`), on the pod's IP: the
/// kubelet probes the pod's address, not its loopback.
pub const ADMIN_PORT: u16 = 9090;
/// Where the projected service-account token is mounted in the sidecar.
pub const TOKEN_DIR: &str = "/var/run/secrets/agent-secrets.io/serviceaccount";
/// Where the credentials Secret's non-secret files (CA, sealed keyring) are mounted.
pub const CREDENTIALS_DIR: &str = "/var/run/agent-secrets";
/// The audit spool (an `emptyDir`).
pub const SPOOL_DIR: &str = "/var/lib/agent-secret-proxy";
/// Keys of the credentials Secret given to the sidecar as environment variables, not files:
/// a Secret volume's files are owned by root, and the sidecar (non-root) reads a key file only
/// when nobody else can (`agent_secret_core::secret_file`).
pub const SECRET_ENV: [(&str, &str); 2] = [
    (agent_secret_core::api::ENV_SIDECAR_KEY, "sidecar-key"),
    (agent_secret_core::api::ENV_MASTER_KEY, "master-key"),
];

const VOLUME_TOKEN: &str = "agent-secrets-token";
const VOLUME_CREDENTIALS: &str = "agent-secrets-credentials";
const VOLUME_SPOOL: &str = "agent-secrets-spool";
/// The projected token's lifetime; the kubelet renews it at 80 %.
const TOKEN_SECONDS: i64 = 3600;
/// Hosts the app containers always reach directly: the pod itself and the cluster's services.
const NO_PROXY_BASE: &str = "localhost,127.0.0.1,::1,.svc,.cluster.local";
/// The user the sidecar runs as (distroless `nonroot`).
const SIDECAR_UID: i64 = 65532;

/// What the injector adds, from `[kubernetes]` (config/control-plane.toml).
#[derive(Clone, Debug)]
pub struct InjectorSettings {
    /// The sidecar image.
    pub image: String,
    /// The sidecar's configuration, parsed from `sidecar_template`; the injector sets
    /// `listen`, `admin_listen` and `[audit] spool_path`, and adds the annotation's routes.
    pub template: toml::Table,
    /// The Secret (in the pod's namespace) holding `ca.pem`, the sealed keyring and the keys.
    pub credentials_secret: String,
    /// The audience of the projected service-account token.
    pub token_audience: String,
    /// The sidecar's agent-facing port, on the pod's loopback.
    pub proxy_port: u16,
    /// The sidecar authenticates with its projected service-account token (workload
    /// identity, a binding naming its sidecar) instead of the Secret's `sidecar-key`.
    pub service_account_auth: bool,
}

/// Why a pod asking for the sidecar is refused; the message reaches whoever created the pod.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    #[error("{annotation}: {reason}")]
    Annotation {
        annotation: &'static str,
        reason: String,
    },
    #[error("the admission request has no pod")]
    NoObject,
    #[error("the pod has no spec.containers")]
    NoContainers,
    #[error("the sidecar template cannot be rendered: {0}")]
    Template(String),
}

impl InjectError {
    fn annotation(annotation: &'static str, reason: impl Into<String>) -> InjectError {
        InjectError::Annotation {
            annotation,
            reason: reason.into(),
        }
    }
}

/// The webhook's decision, one AdmissionReview at a time.
#[derive(Clone, Debug)]
pub struct Injector {
    settings: InjectorSettings,
}

impl Injector {
    pub fn new(settings: InjectorSettings) -> Injector {
        Injector { settings }
    }

    /// Answer one AdmissionReview request body with the AdmissionReview response body. Never
    /// fails and never panics: a body that is not a review gets an `invalid` response, which
    /// the API server reports as the webhook's error (and then applies `failurePolicy`).
    pub fn review(&self, body: &[u8]) -> Value {
        let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(body) {
            Ok(review) => review,
            Err(e) => return invalid(&format!("not an AdmissionReview: {e}")),
        };
        let request: AdmissionRequest<DynamicObject> = match review.try_into() {
            Ok(request) => request,
            Err(_) => return invalid("the AdmissionReview has no request"),
        };
        let response = AdmissionResponse::from(&request);
        let response = match self.patch(&request) {
            Ok(None) => response,
            Ok(Some(patch)) => match response.clone().with_patch(patch) {
                Ok(patched) => patched,
                Err(e) => response.deny(e),
            },
            Err(refusal) => response.deny(refusal),
        };
        match serde_json::to_value(response.into_review()) {
            Ok(mut answer) => {
                patch_as_base64(&mut answer);
                answer
            }
            Err(e) => invalid(&format!("cannot encode the response: {e}")),
        }
    }

    /// The patch for a pod creation that asks for the sidecar, `None` for anything else.
    pub fn patch(
        &self,
        request: &AdmissionRequest<DynamicObject>,
    ) -> Result<Option<Patch>, InjectError> {
        let is_pod = request.kind.group.is_empty() && request.kind.kind == "Pod";
        if !is_pod || request.operation != Operation::Create {
            return Ok(None);
        }
        let pod = request.object.as_ref().ok_or(InjectError::NoObject)?;
        let empty = BTreeMap::new();
        let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
        if annotations.get(ANNOTATION_INJECT).map(String::as_str) != Some("true") {
            return Ok(None);
        }
        let spec = &pod.data["spec"];
        let containers = spec["containers"]
            .as_array()
            .filter(|c| !c.is_empty())
            .ok_or(InjectError::NoContainers)?;
        let init_containers = spec["initContainers"].as_array();
        let has_sidecar = containers
            .iter()
            .chain(init_containers.into_iter().flatten())
            .any(|c| c["name"] == SIDECAR_NAME);
        if has_sidecar {
            return Ok(None);
        }
        let asked = Asked::read(annotations)?;
        let sidecar = self.sidecar(&asked)?;

        let mut ops = Vec::new();
        match init_containers {
            Some(_) => ops.push(add(&["spec", "initContainers", "0"], sidecar)),
            None => ops.push(add(&["spec", "initContainers"], json!([sidecar]))),
        }
        let volumes = self.volumes();
        match spec["volumes"].as_array() {
            Some(_) => {
                for volume in volumes {
                    ops.push(add(&["spec", "volumes", "-"], volume));
                }
            }
            None => ops.push(add(&["spec", "volumes"], Value::Array(volumes))),
        }
        let env = self.app_env(&asked);
        for (list, items) in [
            ("containers", Some(containers)),
            ("initContainers", init_containers),
        ] {
            for (i, container) in items.into_iter().flatten().enumerate() {
                // Our sidecar goes in front of the init containers: theirs move up one.
                let index = if list == "initContainers" { i + 1 } else { i };
                ops.extend(env_ops(list, index, container, &env));
            }
        }
        ops.push(add(
            &["metadata", "annotations", ANNOTATION_STATUS],
            json!("injected"),
        ));
        Ok(Some(Patch(ops)))
    }

    /// The sidecar container.
    fn sidecar(&self, asked: &Asked) -> Result<Value, InjectError> {
        let mut env = vec![json!({ "name": ENV_CONFIG_TOML, "value": self.config_toml(asked)? })];
        for (name, key) in SECRET_ENV {
            if self.settings.service_account_auth && key == "sidecar-key" {
                continue;
            }
            env.push(json!({
                "name": name,
                "valueFrom": { "secretKeyRef": {
                    "name": self.settings.credentials_secret, "key": key, "optional": true,
                } },
            }));
        }
        let probe = |period: u32, failures: u32| {
            json!({
                "httpGet": { "path": "/healthz", "port": ADMIN_PORT },
                "periodSeconds": period,
                "failureThreshold": failures,
            })
        };
        Ok(json!({
            "name": SIDECAR_NAME,
            "image": self.settings.image,
            "imagePullPolicy": "IfNotPresent",
            // The image carries both binaries (Dockerfile); this one is the sidecar.
            "command": [SIDECAR_COMMAND],
            "restartPolicy": "Always",
            "env": env,
            "ports": [{ "name": "asp-admin", "containerPort": ADMIN_PORT, "protocol": "TCP" }],
            "startupProbe": probe(1, 60),
            "readinessProbe": probe(10, 3),
            "livenessProbe": probe(10, 6),
            "resources": asked.resources,
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": SIDECAR_UID,
                "runAsGroup": SIDECAR_UID,
                "readOnlyRootFilesystem": true,
                "allowPrivilegeEscalation": false,
                "privileged": false,
                "capabilities": { "drop": ["ALL"] },
                "seccompProfile": { "type": "RuntimeDefault" },
            },
            "volumeMounts": [
                { "name": VOLUME_TOKEN, "mountPath": TOKEN_DIR, "readOnly": true },
                { "name": VOLUME_CREDENTIALS, "mountPath": CREDENTIALS_DIR, "readOnly": true },
                { "name": VOLUME_SPOOL, "mountPath": SPOOL_DIR },
            ],
        }))
    }

    /// The sidecar's configuration: the template with this pod's settings.
    fn config_toml(&self, asked: &Asked) -> Result<String, InjectError> {
        let mut config = self.settings.template.clone();
        config.insert(
            "listen".into(),
            format!("127.0.0.1:{}", self.settings.proxy_port).into(),
        );
        config.insert(
            "admin_listen".into(),
            format!("0.0.0.0:{ADMIN_PORT}").into(),
        );
        let table = |config: &mut toml::Table, name: &str| -> Result<toml::Table, InjectError> {
            match config.remove(name) {
                None => Ok(toml::Table::new()),
                Some(toml::Value::Table(t)) => Ok(t),
                Some(_) => Err(InjectError::Template(format!("`{name}` is not a table"))),
            }
        };
        let mut audit = table(&mut config, "audit")?;
        audit.insert(
            "spool_path".into(),
            format!("{SPOOL_DIR}/audit-spool.jsonl").into(),
        );
        config.insert("audit".into(), audit.into());
        let mut control_plane = table(&mut config, "control_plane")?;
        if let Some(url) = &asked.control_plane_url {
            control_plane.insert("url".into(), url.clone().into());
        }
        if self.settings.service_account_auth {
            control_plane.insert(
                "service_account_token_file".into(),
                format!("{TOKEN_DIR}/token").into(),
            );
        }
        config.insert("control_plane".into(), control_plane.into());
        if !asked.routes.is_empty() {
            let mut routes = match config.remove("routes") {
                None => Vec::new(),
                Some(toml::Value::Array(routes)) => routes,
                Some(_) => return Err(InjectError::Template("`routes` is not an array".into())),
            };
            for (prefix, upstream) in &asked.routes {
                let taken = routes
                    .iter()
                    .any(|r| r.get("prefix").and_then(toml::Value::as_str) == Some(prefix));
                if taken {
                    return Err(InjectError::annotation(
                        ANNOTATION_ROUTES,
                        format!("the sidecar template already routes {prefix}"),
                    ));
                }
                let mut route = toml::Table::new();
                route.insert("prefix".into(), prefix.clone().into());
                route.insert("upstream".into(), upstream.clone().into());
                routes.push(route.into());
            }
            config.insert("routes".into(), routes.into());
        }
        toml::to_string(&config).map_err(|e| InjectError::Template(e.to_string()))
    }

    fn volumes(&self) -> Vec<Value> {
        vec![
            json!({ "name": VOLUME_TOKEN, "projected": { "sources": [{ "serviceAccountToken": {
                "audience": self.settings.token_audience,
                "expirationSeconds": TOKEN_SECONDS,
                "path": "token",
            } }] } }),
            // Public material only (CA, sealed keyring): the keys come as environment variables.
            json!({ "name": VOLUME_CREDENTIALS, "secret": {
                "secretName": self.settings.credentials_secret,
                "optional": true,
            } }),
            json!({ "name": VOLUME_SPOOL, "emptyDir": { "sizeLimit": "128Mi" } }),
        ]
    }

    /// What every other container gets: plain-HTTP calls go through the sidecar, which
    /// originates TLS (it does not tunnel `CONNECT`, so `HTTPS_PROXY` is not set).
    fn app_env(&self, asked: &Asked) -> Vec<(&'static str, String)> {
        let proxy = format!("http://127.0.0.1:{}", self.settings.proxy_port);
        let mut no_proxy = NO_PROXY_BASE.to_owned();
        if let Some(more) = &asked.no_proxy {
            no_proxy.push(',');
            no_proxy.push_str(more);
        }
        vec![
            ("HTTP_PROXY", proxy.clone()),
            ("http_proxy", proxy.clone()),
            ("NO_PROXY", no_proxy.clone()),
            ("no_proxy", no_proxy),
            ("AGENT_SECRET_PROXY_URL", proxy),
        ]
    }
}

mod annotations;
mod patch;
#[cfg(test)]
mod tests;
