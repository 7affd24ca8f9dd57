//! Human sessions: login, who-am-I, logout. The session travels in the
//! `__Host-ass_session` cookie (Secure, HttpOnly, SameSite=Strict, Path=/), never in a body.

use std::sync::Arc;

use agent_secret_core::api::*;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::api::error::{ApiError, ApiResult};
use crate::api::extract::{ApiJson, Ctx, CurrentSession, SameOrigin};
use crate::service::sessions::{self, SESSION_COOKIE};
use crate::service::{App, ServiceError};

pub(super) fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/session", get(whoami))
        .route("/session/login", post(login))
        .route("/session/logout", post(logout))
}

pub(in crate::api) fn cookie(value: &str, max_age: u64) -> ApiResult<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={max_age}"
    ))
    .map_err(|_| ApiError::from(ServiceError::Internal("session cookie".into())))
}

fn no_store(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

#[utoipa::path(post, path = "/v1/session/login", tag = "sessions", request_body = LoginRequest,
    responses((status = 200, body = SessionInfo, description = "logged in; the session is in the `__Host-ass_session` cookie"),
        (status = 401, body = ErrorBody, description = "`unauthenticated`: wrong tenant, username, password or TOTP code (one answer for all)"),
        (status = 403, body = ErrorBody, description = "`csrf_failed` (cross-site), or `forbidden`: the role needs a confirmed TOTP enrollment"),
        (status = 429, body = ErrorBody, description = "`rate_limited`: the account is locked or the address made too many failed attempts")))]
pub async fn login(
    State(app): State<Arc<App>>,
    _: SameOrigin,
    Ctx(ctx): Ctx,
    ApiJson(login): ApiJson<LoginRequest>,
) -> ApiResult<(HeaderMap, Json<SessionInfo>)> {
    let outcome = sessions::login(&app, &login, &ctx).await?;
    let mut headers = HeaderMap::new();
    headers.insert(
        header::SET_COOKIE,
        cookie(
            outcome.cookie_value.expose(),
            app.sessions.absolute_timeout.as_secs(),
        )?,
    );
    no_store(&mut headers);
    Ok((headers, Json(outcome.info())))
}

#[utoipa::path(get, path = "/v1/session", tag = "sessions",
    responses((status = 200, body = SessionInfo, description = "the session's operator; restarts the idle timer"),
        (status = 401, body = ErrorBody)),
    security(("session" = [])))]
pub async fn whoami(CurrentSession(session): CurrentSession) -> (HeaderMap, Json<SessionInfo>) {
    let mut headers = HeaderMap::new();
    no_store(&mut headers);
    (headers, Json(session.info()))
}

#[utoipa::path(post, path = "/v1/session/logout", tag = "sessions",
    responses((status = 204, description = "the session is revoked and its cookie cleared"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody, description = "`csrf_failed`")),
    security(("session" = [])))]
pub async fn logout(
    State(app): State<Arc<App>>,
    Ctx(ctx): Ctx,
    CurrentSession(session): CurrentSession,
) -> ApiResult<(StatusCode, HeaderMap)> {
    sessions::logout(&app, &session, &ctx).await?;
    let mut headers = HeaderMap::new();
    headers.insert(header::SET_COOKIE, cookie("", 0)?);
    Ok((StatusCode::NO_CONTENT, headers))
}
