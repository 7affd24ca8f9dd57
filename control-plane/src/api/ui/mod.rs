//! The operators' dashboard at `/ui`: server-rendered pages (askama templates under
//! `control-plane/templates/`, auto-escaped), plain CSS and a little JavaScript, all embedded in
//! the binary (`control-plane/assets/`), served on the API's TLS listener.
//!
//! Every page needs a human's session (the `__Host-ass_session` cookie of `POST
//! /v1/session/login`, or the login form here); without one a page redirects to the login form.
//! Only the login form and the authenticator setup before a first login (`account`) do not.
//! Forms carry a per-session token derived from the session (HMAC under the pepper of the
//! session's keyed id hash), compared in constant time, and every POST must come from this
//! origin (`Origin` / `Sec-Fetch-Site`). Responses forbid framing, inline script and style,
//! referrers and caching (`security_headers`).

mod account;
mod agents;
mod audit;
mod listings;
mod live;
mod pages;
mod secrets;
mod tokens;

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use subtle::ConstantTimeEq;

use super::extract::session_cookie;
use crate::service::sessions::{self, SessionRef};
use crate::service::App;

/// What every response of the dashboard carries. The CSP allows this origin's stylesheet and
/// script only: no inline code, no framing, forms posting back here only.
const SECURITY_HEADERS: [(&str, &str); 7] = [
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (
        "strict-transport-security",
        "max-age=63072000; includeSubDomains",
    ),
    ("referrer-policy", "no-referrer"),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("cache-control", "no-store"),
    ("cross-origin-opener-policy", "same-origin"),
];

/// Domain tag of the forms' CSRF token.
const FORM_CSRF_CONTEXT: &[u8] = b"agent-secret-store/ui-form-csrf/v1\n";

pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/approvals") }))
        .route("/ui/login", get(pages::login_form).post(pages::login))
        .route("/ui/logout", post(pages::logout))
        .route(
            "/ui/enroll",
            get(account::enroll_form).post(account::enroll),
        )
        .route("/ui/enroll/confirm", post(account::enroll_confirm))
        .route("/ui/account", get(account::account))
        .route("/ui/account/password", post(account::change_password))
        .route("/ui/approvals", get(pages::approvals))
        .route("/ui/events", get(live::events))
        .route("/ui/approvals/{id}", get(pages::approval))
        .route("/ui/approvals/{id}/decide", post(pages::decide))
        .route("/ui/secrets", get(secrets::list).post(secrets::write))
        .route("/ui/secret", get(secrets::secret))
        .route("/ui/agents", get(listings::agents).post(agents::create))
        .route("/ui/agents/{id}", get(agents::agent))
        .route("/ui/agents/{id}/rotate", post(agents::rotate))
        .route("/ui/agents/{id}/disable", post(agents::disable))
        .route("/ui/agents/{id}/tier", post(agents::set_tier))
        .route("/ui/agents/{id}/ceiling", post(agents::ceiling))
        .route("/ui/tokens", get(tokens::list))
        .route("/ui/tokens/{id}/revoke", post(tokens::revoke))
        .route("/ui/sidecars", get(tokens::sidecar_list))
        .route("/ui/sidecars/{id}/revoke", post(tokens::sidecar_revoke))
        .route("/ui/operators", get(listings::operators))
        .route("/ui/audit", get(audit::audit))
        .route("/ui/audit/export", get(audit::export))
        .route("/ui/assets/app.css", get(css))
        .route("/ui/assets/app.js", get(js))
        .layer(middleware::from_fn(security_headers))
}

async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    response
}

async fn css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../../../assets/app.css"),
    )
}

async fn js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../../assets/app.js"),
    )
}

/// The form token of `session`: HMAC(pepper, tag ‖ keyed hash of the session id), hex.
fn form_token(app: &App, session: &SessionRef) -> String {
    let mut input = FORM_CSRF_CONTEXT.to_vec();
    input.extend_from_slice(&session.id_hash);
    hex::encode(app.pepper.mac(&input))
}

fn form_token_matches(app: &App, session: &SessionRef, presented: &str) -> bool {
    let expected = form_token(app, session);
    presented.len() == expected.len() && bool::from(presented.as_bytes().ct_eq(expected.as_bytes()))
}

/// A page's visitor: a live session, or a redirect to the login form.
pub struct Visitor(SessionRef);

impl FromRequestParts<Arc<App>> for Visitor {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Response> {
        let Some(cookie) = session_cookie(&parts.headers) else {
            return Err(Redirect::to("/ui/login").into_response());
        };
        match sessions::authenticate(app, &cookie).await {
            Ok(session) => Ok(Self(session)),
            Err(_) => Err(Redirect::to("/ui/login?expired=1").into_response()),
        }
    }
}

/// The refusal of a POST from another origin, or without this session's form token; `None`
/// when the POST may proceed.
fn refuse_post(same_site: bool, app: &App, session: &SessionRef, csrf: &str) -> Option<Response> {
    if same_site && form_token_matches(app, session, csrf) {
        return None;
    }
    Some(
        (
            StatusCode::FORBIDDEN,
            "This form expired or did not come from this site. Go back, reload the page and try \
             again.",
        )
            .into_response(),
    )
}

/// Whether the request came from this origin (as the API's `SameOrigin` decides).
pub struct SameSite(bool);

impl<S: Send + Sync> FromRequestParts<S> for SameSite {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Response> {
        Ok(Self(super::extract::require_same_origin(parts).is_ok()))
    }
}
