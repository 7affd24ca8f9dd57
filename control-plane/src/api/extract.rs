//! Request extractors: JSON bodies with our error shape, the caller's principal (a bearer
//! credential, or a human's session cookie), and where the request came from.

use std::net::SocketAddr;
use std::sync::Arc;

use agent_secret_core::api::ErrorCode;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, Method};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::service::auth::{authenticate, expect_operator, OperatorPrincipal, Principal};
use crate::service::sessions::{self, HumanOperator, SessionRef, CSRF_HEADER, SESSION_COOKIE};
use crate::service::{App, RequestContext, ServiceError};

/// The peer address, inserted per connection by the server.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

/// `Json<T>` whose rejections use our error body and codes.
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(value) = axum::Json::<T>::from_request(req, state).await?;
        Ok(Self(value))
    }
}

/// Where the request came from, for audit records.
pub struct Ctx(pub RequestContext);

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(request_context(parts)))
    }
}

/// Where the request came from (peer address, User-Agent), for audit records.
pub fn request_context(parts: &Parts) -> RequestContext {
    let user_agent = parts
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(256).collect());
    RequestContext {
        ip: parts.extensions.get::<PeerAddr>().map(|p| p.0.ip()),
        user_agent,
    }
}

/// The authenticated caller (`Authorization: Bearer <credential>`).
pub struct Caller(pub Principal);

impl FromRequestParts<Arc<App>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<App>,
    ) -> Result<Self, Self::Rejection> {
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or(ServiceError::Unauthenticated)?;
        let principal = authenticate(app, bearer, &request_context(parts)).await?;
        Ok(Self(principal))
    }
}

/// A human operator logged in with a password session: only the `__Host-ass_session` cookie
/// authenticates (a bearer API token or agent key never does, with or without a cookie).
/// Unsafe methods (anything but GET, HEAD, OPTIONS) must also come from the same origin
/// (`Origin`, `Sec-Fetch-Site`) and carry the session's `X-CSRF-Token`, else 403
/// `csrf_failed`. Each use restarts the session's idle timer.
pub struct HumanSession(pub HumanOperator);

impl FromRequestParts<Arc<App>> for HumanSession {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<App>,
    ) -> Result<Self, Self::Rejection> {
        let CurrentSession(session) = CurrentSession::from_request_parts(parts, app).await?;
        Ok(Self(session.human))
    }
}

/// [`HumanSession`] with the session itself (for logout and who-am-I).
pub struct CurrentSession(pub SessionRef);

impl FromRequestParts<Arc<App>> for CurrentSession {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<App>,
    ) -> Result<Self, Self::Rejection> {
        let unsafe_method = !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        if unsafe_method {
            require_same_origin(parts)?;
        }
        let cookie = session_cookie(&parts.headers).ok_or(ServiceError::Unauthenticated)?;
        let session = sessions::authenticate(app, &cookie).await?;
        if unsafe_method {
            let presented = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
            if !session.csrf_matches(app, presented) {
                return Err(csrf_failed("missing or wrong X-CSRF-Token").into());
            }
        }
        Ok(Self(session))
    }
}

/// An operator by API token (`Authorization: Bearer`) or, without one, by [`HumanSession`]:
/// for the endpoints both the CLI and the dashboard use (an operator's own account).
pub struct OperatorCaller(pub OperatorPrincipal);

impl FromRequestParts<Arc<App>> for OperatorCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<App>,
    ) -> Result<Self, Self::Rejection> {
        if parts.headers.contains_key(header::AUTHORIZATION) {
            let Caller(principal) = Caller::from_request_parts(parts, app).await?;
            return Ok(Self(expect_operator(principal)?));
        }
        let HumanSession(human) = HumanSession::from_request_parts(parts, app).await?;
        Ok(Self(human.into()))
    }
}

/// Runs [`require_same_origin`] before the handler's other extractors (login).
pub struct SameOrigin;

impl<S: Send + Sync> FromRequestParts<S> for SameOrigin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        require_same_origin(parts)?;
        Ok(Self)
    }
}

/// Refuses a request a browser marks as cross-site, or whose `Origin` is not this server.
/// Also applied to login, so another site cannot log a browser into an attacker's account.
pub fn require_same_origin(parts: &Parts) -> Result<(), ApiError> {
    let header_str = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    // A browser sends each at most once; two would let one check read a different value.
    for name in [header::ORIGIN.as_str(), "sec-fetch-site"] {
        if parts.headers.get_all(name).iter().count() > 1 {
            return Err(
                csrf_failed("a repeated Origin or Sec-Fetch-Site header is refused").into(),
            );
        }
    }
    if let Some(site) = parts.headers.get("sec-fetch-site") {
        if !matches!(site.to_str(), Ok("same-origin" | "none")) {
            return Err(csrf_failed("cross-site request refused (Sec-Fetch-Site)").into());
        }
    }
    // Under `Referrer-Policy: no-referrer` (the dashboard's) a browser's own form post says
    // `Origin: null`; `Sec-Fetch-Site: same-origin` is then what tells it apart.
    let same_site_says_so = header_str("sec-fetch-site") == Some("same-origin");
    if let Some(origin) = parts
        .headers
        .get(header::ORIGIN)
        .filter(|o| !(same_site_says_so && o.as_bytes() == b"null"))
    {
        let host =
            header_str(header::HOST.as_str()).or_else(|| parts.uri.authority().map(|a| a.as_str()));
        let same = match (origin.to_str(), host) {
            (Ok(origin), Some(host)) => origin.eq_ignore_ascii_case(&format!("https://{host}")),
            _ => false,
        };
        if !same {
            return Err(csrf_failed("cross-origin request refused (Origin)").into());
        }
    }
    Ok(())
}

fn csrf_failed(message: &str) -> ServiceError {
    ServiceError::denied(ErrorCode::CsrfFailed, message)
}

/// The value of the session cookie, if the request carries one.
pub(crate) fn session_cookie(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_owned())
}
