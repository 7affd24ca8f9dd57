//! Every refusal the sidecar answers itself, mapped to a status and a stable code in one place.
//!
//! Agents (and scripts around them) branch on the JSON code, so every code is an
//! [`ErrorCode`] (the one enum both sides speak; the README lists them):
//! token problems are 407 with `Proxy-Authenticate` (the agent must present another token),
//! policy refusals 403, a missing secret 404 (the token's scope covers the path — the control
//! plane answers `scope_denied` otherwise — so existence is not a secret from it), and a
//! control plane or spool that cannot answer 503. 5xx messages are generic; details go to the
//! log. No message ever contains a token or a secret value.
//!
//! The response a refusal is written as ([`Denial::response_header`], [`Denial::body`]) and
//! the refusal for an error pingora raised while proxying ([`Denial::from_proxy_error`]) are
//! decided here too, as plain functions the proxy phases call.

use agent_secret_core::api::ErrorCode;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};

/// The header every refusal of the sidecar carries, with its code.
pub const DENIAL_HEADER: &str = "x-agent-secret-denial";
use http::StatusCode;
use pingora::http::ResponseHeader;
use pingora::{ErrorSource, ErrorType};

use crate::auth::{AuthError, PROXY_AUTHENTICATE};
use crate::cache::CombinedScrubError;
use crate::inject::InjectError;
use crate::resolver::ResolveError;
use crate::route::RouteError;
use crate::ssrf::SsrfError;

/// `Retry-After` of a 503 `kms_unavailable`: the KMS client already retried with backoff.
pub const KMS_RETRY_AFTER_SECONDS: u64 = 5;

/// A response the sidecar writes instead of forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    /// Seconds for a `Retry-After` header (429 `rate_limited`, 503s the agent should retry).
    pub retry_after: Option<u64>,
}

impl Denial {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Denial {
        Denial {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The same refusal, asking the agent to wait `seconds` before trying again.
    pub fn with_retry_after(mut self, seconds: u64) -> Denial {
        self.retry_after = Some(seconds);
        self
    }

    /// 429 `rate_limited`: `limit` ran out; `Retry-After` says when a request fits again
    /// (rounded up to whole seconds, at least 1).
    pub fn rate_limited(limited: &crate::rate_limit::Limited) -> Denial {
        let wait = limited.retry_after;
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        Denial::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            format!(
                "rate limit `{}` exceeded; retry after {} s",
                limited.limit.as_str(),
                seconds.max(1)
            ),
        )
        .with_retry_after(seconds.max(1))
    }

    /// Status of a control-plane denial code.
    pub fn from_code(code: ErrorCode, message: impl Into<String>) -> Denial {
        let status = match code {
            ErrorCode::TokenInvalid | ErrorCode::TokenExpired | ErrorCode::TokenRevoked => {
                StatusCode::PROXY_AUTHENTICATION_REQUIRED
            }
            ErrorCode::ScopeDenied
            | ErrorCode::DestinationNotAllowed
            | ErrorCode::IpNotAllowed
            | ErrorCode::ApprovalPending
            | ErrorCode::ApprovalDenied
            | ErrorCode::UsesExhausted => StatusCode::FORBIDDEN,
            ErrorCode::SecretNotFound => StatusCode::NOT_FOUND,
            ErrorCode::InvalidRequest
            | ErrorCode::InvalidPath
            | ErrorCode::InvalidHost
            | ErrorCode::InvalidPlaceholder => StatusCode::BAD_REQUEST,
            // The control plane's own limit (per sidecar key or address) passed on to the
            // agent, which is the one that should slow down. Its exact Retry-After is not
            // carried through the resolve client; one second is the shortest honest answer.
            ErrorCode::RateLimited => {
                return Denial::new(StatusCode::TOO_MANY_REQUESTS, code, message)
                    .with_retry_after(1)
            }
            _ => return Denial::control_plane_unavailable(),
        };
        Denial::new(status, code, message)
    }

    pub fn control_plane_unavailable() -> Denial {
        Denial::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ControlPlaneUnavailable,
            "the control plane cannot be reached; try again later",
        )
    }

    pub fn audit_unavailable() -> Denial {
        Denial::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::AuditUnavailable,
            "the audit spool is full; secrets are not injected until it drains",
        )
    }

    pub fn unscannable(encoding: &str) -> Denial {
        Denial::new(
            StatusCode::BAD_GATEWAY,
            ErrorCode::UnscannableResponse,
            format!("the upstream response uses content-encoding `{encoding}`, which the sidecar cannot scan for injected secrets"),
        )
    }

    /// The upstream answered 101 to a request carrying an injected secret: an upgraded
    /// stream cannot be scrubbed, so it is refused.
    pub fn unscannable_upgrade() -> Denial {
        Denial::new(
            StatusCode::BAD_GATEWAY,
            ErrorCode::UnscannableResponse,
            "the upstream switched protocols after a secret was injected; an upgraded stream cannot be scanned for it",
        )
    }

    pub fn destination_not_allowed(message: impl Into<String>) -> Denial {
        Denial::new(
            StatusCode::FORBIDDEN,
            ErrorCode::DestinationNotAllowed,
            message,
        )
    }

    /// 400 `invalid_request`: the connection has no IP address to check the token's
    /// allowlist against or to audit.
    pub fn client_address_unknown() -> Denial {
        Denial::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            "client address unknown",
        )
    }

    /// The refusal for an error pingora raised while proxying (upstream down, bad TLS, a
    /// malformed request...): a status pingora chose stands; otherwise the side that failed
    /// picks the status. Messages are generic: the error itself goes to the log only.
    pub fn from_proxy_error(e: &pingora::Error) -> Denial {
        match e.etype() {
            ErrorType::HTTPStatus(code) => {
                let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::BAD_GATEWAY);
                Denial::new(
                    status,
                    ErrorCode::UpstreamError,
                    "the request could not be proxied",
                )
            }
            _ => match e.esource() {
                ErrorSource::Upstream => Denial::new(
                    StatusCode::BAD_GATEWAY,
                    ErrorCode::UpstreamUnavailable,
                    "the upstream could not be reached or failed",
                ),
                ErrorSource::Downstream => Denial::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::InvalidRequest,
                    "malformed request",
                ),
                ErrorSource::Internal | ErrorSource::Unset => Denial::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::Internal,
                    "internal error",
                ),
            },
        }
    }

    pub fn is_auth(&self) -> bool {
        self.status == StatusCode::PROXY_AUTHENTICATION_REQUIRED
    }

    /// `{"error":{"code":...,"message":...}}`.
    pub fn body(&self) -> Bytes {
        let body = serde_json::json!({
            "error": { "code": self.code.as_str(), "message": self.message }
        });
        Bytes::from(body.to_string())
    }

    /// The head of the response this refusal is written as, for a [`Denial::body`] of
    /// `body_len` bytes: JSON, never cached, `Proxy-Authenticate` on a 407 (the agent must
    /// present another token) and `Retry-After` when the agent should wait.
    pub fn response_header(&self, body_len: usize) -> pingora::Result<ResponseHeader> {
        let mut resp = ResponseHeader::build(self.status, Some(4))?;
        resp.insert_header(CONTENT_TYPE, "application/json")?;
        resp.insert_header(CONTENT_LENGTH, body_len.to_string())?;
        resp.insert_header(CACHE_CONTROL, "no-store")?;
        // Tells a refusal of the sidecar from an upstream's answer (the MCP tool reads it).
        resp.insert_header(DENIAL_HEADER, self.code.as_str())?;
        if self.is_auth() {
            resp.insert_header(http::header::PROXY_AUTHENTICATE, PROXY_AUTHENTICATE)?;
        }
        if let Some(seconds) = self.retry_after {
            resp.insert_header(RETRY_AFTER, seconds.to_string())?;
        }
        Ok(resp)
    }
}

impl From<AuthError> for Denial {
    fn from(e: AuthError) -> Denial {
        Denial::new(
            StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            ErrorCode::TokenInvalid,
            e.to_string(),
        )
    }
}

impl From<RouteError> for Denial {
    fn from(e: RouteError) -> Denial {
        match e {
            RouteError::Connect => Denial::new(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::MethodNotAllowed,
                e.to_string(),
            ),
            RouteError::NoRoute(_) => {
                Denial::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, e.to_string())
            }
            RouteError::BadTarget(_) => Denial::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidRequest,
                e.to_string(),
            ),
        }
    }
}

impl From<CombinedScrubError> for Denial {
    fn from(e: CombinedScrubError) -> Denial {
        match e {
            CombinedScrubError::TooLarge { .. } => Denial::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidPlaceholder,
                "these secrets are too large to scrub together in one request; send them in separate requests",
            ),
            CombinedScrubError::Build(reason) => {
                tracing::error!(%reason, "cannot build the response scrubber");
                Denial::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::Internal,
                    "the response scrubber could not be built",
                )
            }
        }
    }
}

impl From<InjectError> for Denial {
    fn from(e: InjectError) -> Denial {
        Denial::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidPlaceholder,
            e.to_string(),
        )
    }
}

impl From<SsrfError> for Denial {
    fn from(e: SsrfError) -> Denial {
        match e {
            SsrfError::Forbidden { .. } => Denial::destination_not_allowed(e.to_string()),
            SsrfError::Resolve { .. } => Denial::new(
                StatusCode::BAD_GATEWAY,
                ErrorCode::UpstreamUnresolvable,
                e.to_string(),
            ),
        }
    }
}

impl From<ResolveError> for Denial {
    fn from(e: ResolveError) -> Denial {
        match e {
            ResolveError::Denied { code, message, .. } => Denial::from_code(code, message),
            ResolveError::Unavailable(reason) => {
                tracing::warn!(%reason, "control plane unavailable");
                Denial::control_plane_unavailable()
            }
            ResolveError::Kms(reason) => {
                tracing::error!(%reason, "key service unavailable");
                Denial::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::KmsUnavailable,
                    "the key service is unavailable; try again later",
                )
                .with_retry_after(KMS_RETRY_AFTER_SECONDS)
            }
            // Not retried blindly: something between the sidecar and the KMS corrupts or
            // forges answers. The refusal is audited (reason `kms_integrity_failed`).
            ResolveError::KmsIntegrity { path, reason } => {
                tracing::error!(%path, %reason, "key service integrity check failed");
                Denial::new(
                    StatusCode::BAD_GATEWAY,
                    ErrorCode::KmsIntegrityFailed,
                    format!("the key service's answer for `{path}` failed an integrity check; the secret was not injected"),
                )
            }
            ResolveError::Decrypt { path, reason } => {
                tracing::error!(%path, %reason, "cannot decrypt secret");
                Denial::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::Internal,
                    format!("secret `{path}` could not be decrypted by this sidecar"),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests;
