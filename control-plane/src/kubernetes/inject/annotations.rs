//! What a pod's annotations ask of its sidecar (docs/kubernetes.md has the list), checked:
//! a value the injector cannot use refuses the pod with a message naming the annotation.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{
    InjectError, ANNOTATIONS, ANNOTATION_CONTROL_PLANE_URL, ANNOTATION_NO_PROXY,
    ANNOTATION_RESOURCES, ANNOTATION_ROUTES,
};

/// What the pod's annotations ask of the sidecar, checked.
#[derive(Debug, Default)]
pub(super) struct Asked {
    pub(super) control_plane_url: Option<String>,
    /// (`/name/`, upstream URL).
    pub(super) routes: Vec<(String, String)>,
    pub(super) no_proxy: Option<String>,
    pub(super) resources: Value,
}

/// Longest value of one of our annotations: anyone who may create a pod (or reach the
/// webhook) chooses these, and they are copied into every container's environment.
const MAX_ANNOTATION_BYTES: usize = 4096;
/// Most routes one pod may add.
const MAX_ROUTES: usize = 32;

impl Asked {
    pub(super) fn read(annotations: &BTreeMap<String, String>) -> Result<Asked, InjectError> {
        for name in ANNOTATIONS {
            if annotations
                .get(name)
                .is_some_and(|v| v.len() > MAX_ANNOTATION_BYTES)
            {
                return Err(InjectError::annotation(
                    name,
                    format!("longer than {MAX_ANNOTATION_BYTES} bytes"),
                ));
            }
        }
        let get = |name: &str| {
            annotations
                .get(name)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
        };
        let control_plane_url = get(ANNOTATION_CONTROL_PLANE_URL)
            .map(|url| check_url(ANNOTATION_CONTROL_PLANE_URL, url, true))
            .transpose()?;
        let routes = get(ANNOTATION_ROUTES)
            .map(parse_routes)
            .transpose()?
            .unwrap_or_default();
        let no_proxy = get(ANNOTATION_NO_PROXY)
            .map(|hosts| {
                let ok = hosts.bytes().all(|b| {
                    b.is_ascii_alphanumeric()
                        || matches!(b, b'.' | b'-' | b',' | b':' | b'/' | b'*')
                });
                match ok {
                    true => Ok(hosts.to_owned()),
                    false => Err(InjectError::annotation(
                        ANNOTATION_NO_PROXY,
                        "comma-separated host names, addresses or CIDRs",
                    )),
                }
            })
            .transpose()?;
        let mut resources = json!({
            "requests": { "cpu": "25m", "memory": "32Mi" },
            "limits": { "memory": "128Mi" },
        });
        for (annotation, kind, resource) in ANNOTATION_RESOURCES {
            if let Some(quantity) = get(annotation) {
                if !is_quantity(quantity) {
                    return Err(InjectError::annotation(
                        annotation,
                        "a Kubernetes quantity such as 100m, 0.5, 64Mi or 1Gi",
                    ));
                }
                resources[kind][resource] = json!(quantity);
            }
        }
        Ok(Asked {
            control_plane_url,
            routes,
            no_proxy,
            resources,
        })
    }
}

/// `name=https://upstream/, other=http://...`.
fn parse_routes(text: &str) -> Result<Vec<(String, String)>, InjectError> {
    let mut routes: Vec<(String, String)> = Vec::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        if routes.len() == MAX_ROUTES {
            return Err(InjectError::annotation(
                ANNOTATION_ROUTES,
                format!("at most {MAX_ROUTES} routes"),
            ));
        }
        let Some((name, url)) = item.split_once('=') else {
            return Err(InjectError::annotation(
                ANNOTATION_ROUTES,
                format!("`{item}` is not name=URL"),
            ));
        };
        let name = name.trim();
        let name_ok = (1..=63).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !name_ok {
            return Err(InjectError::annotation(
                ANNOTATION_ROUTES,
                format!("route name `{name}` is not 1 to 63 of [a-z0-9-]"),
            ));
        }
        let prefix = format!("/{name}/");
        if routes.iter().any(|(p, _)| *p == prefix) {
            return Err(InjectError::annotation(
                ANNOTATION_ROUTES,
                format!("route `{name}` is given twice"),
            ));
        }
        routes.push((prefix, check_url(ANNOTATION_ROUTES, url.trim(), false)?));
    }
    Ok(routes)
}

/// An `http(s)://` URL with a host, as text the sidecar's TOML can hold.
fn check_url(annotation: &'static str, url: &str, https_only: bool) -> Result<String, InjectError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| InjectError::annotation(annotation, format!("`{url}` is not a URL: {e}")))?;
    let scheme_ok = match parsed.scheme() {
        "https" => true,
        "http" => !https_only,
        _ => false,
    };
    if !scheme_ok || parsed.host_str().is_none() || !parsed.username().is_empty() {
        let schemes = if https_only {
            "https://"
        } else {
            "https:// or http://"
        };
        return Err(InjectError::annotation(
            annotation,
            format!("`{url}` must be an {schemes} URL with a host and no user info"),
        ));
    }
    Ok(url.to_owned())
}

/// A Kubernetes resource quantity: a decimal number with an optional SI or binary suffix.
pub(super) fn is_quantity(s: &str) -> bool {
    const SUFFIXES: [&str; 14] = [
        "", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei",
    ];
    let digits_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(digits_end);
    let number_ok = !number.is_empty()
        && number.matches('.').count() <= 1
        && number.bytes().any(|b| b.is_ascii_digit());
    number_ok && s.len() <= 32 && SUFFIXES.contains(&suffix)
}
