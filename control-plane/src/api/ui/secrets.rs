//! Secrets by path prefix, as a tree of folders and a table of metadata, and the form that
//! stores a new value (admins). The value field is write-only: no page ever holds a value,
//! not even the one just typed when the write is refused.

use std::collections::BTreeMap;
use std::sync::Arc;

use agent_secret_core::api::{PutSecretRequest, SecretMetadata, Sensitivity};
use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

use super::listings::refused_or_failure;
use super::pages::{failure_message, nav, render, Nav};
use super::{refuse_post, SameSite, Visitor};
use crate::api::extract::Ctx;
use crate::service::{secrets, App, ServiceError};
use crate::store::SecretVersionInfo;

#[derive(Template)]
#[template(path = "secrets.html")]
struct SecretsPage {
    nav: Nav,
    prefix: String,
    folders: Vec<Folder>,
    rows: Vec<SecretMetadata>,
    stored: Option<String>,
    form: WriteDefaults,
    error: Option<String>,
}

/// A next path segment under the prefix, with how many secrets it holds.
struct Folder {
    prefix: String,
    name: String,
    count: usize,
}

/// What the write form shows again after a refusal (never the value).
#[derive(Default)]
struct WriteDefaults {
    path: String,
    hosts: String,
    sensitivity: String,
}

#[derive(Deserialize)]
pub struct PrefixQuery {
    #[serde(default)]
    prefix: String,
    /// The path just written (`?stored=PATH&version=N`).
    stored: Option<String>,
    version: Option<i64>,
}

pub async fn list(
    State(app): State<Arc<App>>,
    visitor: Visitor,
    Query(q): Query<PrefixQuery>,
) -> Response {
    let stored = q
        .stored
        .as_deref()
        .zip(q.version)
        .map(|(path, version)| format!("Stored version {version} of {path}."));
    page(
        &app,
        &visitor,
        q.prefix.trim(),
        stored,
        WriteDefaults::default(),
        None,
    )
    .await
}

async fn page(
    app: &App,
    visitor: &Visitor,
    prefix: &str,
    stored: Option<String>,
    form: WriteDefaults,
    error: Option<(StatusCode, String)>,
) -> Response {
    let nav = match nav(app, visitor, "secrets").await {
        Ok(nav) => nav,
        Err(page) => return page,
    };
    let filter = Some(prefix).filter(|p| !p.is_empty());
    let rows = match secrets::list(app, visitor.0.human.into(), filter).await {
        Ok(list) => list.secrets,
        Err(e) => return refused_or_failure(nav, e),
    };
    let (status, error) = match error {
        Some((status, message)) => (status, Some(message)),
        None => (StatusCode::OK, None),
    };
    render(
        status,
        &SecretsPage {
            nav,
            prefix: prefix.to_owned(),
            folders: folders(prefix, &rows),
            rows,
            stored,
            form,
            error,
        },
    )
}

/// The folders one level below `prefix` (read as a folder: `a/b` and `a/b/` alike).
fn folders(prefix: &str, rows: &[SecretMetadata]) -> Vec<Folder> {
    let base = match prefix.trim_end_matches('/') {
        "" => String::new(),
        p => format!("{p}/"),
    };
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for row in rows {
        let Some(rest) = row.path.strip_prefix(&base) else {
            continue;
        };
        if let Some((segment, _)) = rest.split_once('/') {
            *counts.entry(segment).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .map(|(name, count)| Folder {
            prefix: format!("{base}{name}/"),
            name: name.to_owned(),
            count,
        })
        .collect()
}

#[derive(Template)]
#[template(path = "secret.html")]
struct SecretPage {
    nav: Nav,
    s: SecretMetadata,
    versions: Vec<SecretVersionInfo>,
}

#[derive(Deserialize)]
pub struct PathQuery {
    #[serde(default)]
    path: String,
}

/// One secret: its metadata and versions (which KEK wraps each), never a value.
pub async fn secret(
    State(app): State<Arc<App>>,
    visitor: Visitor,
    Query(q): Query<PathQuery>,
) -> Response {
    let nav = match nav(&app, &visitor, "secrets").await {
        Ok(nav) => nav,
        Err(page) => return page,
    };
    match secrets::versions(&app, visitor.0.human.into(), q.path.trim()).await {
        Ok((s, versions)) => render(StatusCode::OK, &SecretPage { nav, s, versions }),
        Err(e) => refused_or_failure(nav, e),
    }
}

#[derive(Deserialize)]
pub struct WriteForm {
    #[serde(default)]
    csrf: String,
    path: String,
    /// Moved into the request, which wipes it when dropped.
    value: String,
    /// Empty keeps the current sensitivity (standard for a new secret).
    #[serde(default)]
    sensitivity: String,
    /// Hosts separated by spaces, commas or lines.
    #[serde(default)]
    allowed_hosts: String,
}

impl Drop for WriteForm {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.value);
    }
}

pub async fn write(
    State(app): State<Arc<App>>,
    visitor: Visitor,
    SameSite(same): SameSite,
    Ctx(ctx): Ctx,
    Form(mut form): Form<WriteForm>,
) -> Response {
    if let Some(refused) = refuse_post(same, &app, &visitor.0, &form.csrf) {
        return refused;
    }
    let path = form.path.trim().to_owned();
    let sensitivity = match form.sensitivity.as_str() {
        "" => None,
        raw => match Sensitivity::parse(raw) {
            Some(s) => Some(s),
            None => return (StatusCode::BAD_REQUEST, "Unknown sensitivity.").into_response(),
        },
    };
    let request = PutSecretRequest {
        value: std::mem::take(&mut form.value),
        sensitivity,
        allowed_hosts: super::agents::scopes(&form.allowed_hosts),
    };
    match secrets::put(&app, visitor.0.human.into(), &path, request, &ctx).await {
        Ok(put) => {
            let query = serde_urlencoded::to_string([
                ("prefix", put.path.as_str()),
                ("stored", put.path.as_str()),
                ("version", &put.version.to_string()),
            ])
            .unwrap_or_default();
            Redirect::to(&format!("/ui/secrets?{query}")).into_response()
        }
        Err(ServiceError::Forbidden(message)) => match nav(&app, &visitor, "secrets").await {
            Ok(nav) => refused_or_failure(nav, ServiceError::Forbidden(message)),
            Err(page) => page,
        },
        Err(e) => {
            let (status, message) = failure_message(e);
            let message = format!("Not stored: {message} Type the value again.");
            let defaults = WriteDefaults {
                path,
                hosts: std::mem::take(&mut form.allowed_hosts),
                sensitivity: std::mem::take(&mut form.sensitivity),
            };
            page(&app, &visitor, "", None, defaults, Some((status, message))).await
        }
    }
}
