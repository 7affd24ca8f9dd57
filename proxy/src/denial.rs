//! Every refusal the sidecar answers itself, mapped to a status and a stable code in one place.
//!
//! Agents (and scripts around them) branch on the JSON code, so the codes are DESIGN.md's:
//! token problems are 407 with `Proxy-Authenticate` (the agent must present another token),
//! policy refusals 403, a missing secret 404 (the token's scope covers the path — the control
//! plane answers `scope_denied` otherwise — so existence is not a secret from it), and a
//! control plane or spool that cannot answer 503. 5xx messages are generic; details go to the
//! log. No message ever contains a token or a secret value.

use agent_secret_core::api::ErrorCode;
use bytes::Bytes;
use http::StatusCode;

use crate::auth::AuthError;
use crate::cache::CombinedScrubError;
use crate::inject::InjectError;
use crate::resolver::ResolveError;
use crate::route::RouteError;
use crate::ssrf::SsrfError;

/// Code for a spool that cannot take more events (the sidecar fails closed).
pub const AUDIT_UNAVAILABLE: &str = "audit_unavailable";
/// Code for a response body the scrubber cannot read.
pub const UNSCANNABLE_RESPONSE: &str = "unscannable_response";
/// `Retry-After` of a 503 `kms_unavailable`: the KMS client already retried with backoff.
pub const KMS_RETRY_AFTER_SECONDS: u64 = 5;
/// Code for CONNECT.
pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";

/// A response the sidecar writes instead of forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for a `Retry-After` header (429 `rate_limited`, 503s the agent should retry).
    pub retry_after: Option<u64>,
}

impl Denial {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Denial {
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
            ErrorCode::RateLimited.as_str(),
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
                return Denial::new(StatusCode::TOO_MANY_REQUESTS, code.as_str(), message)
                    .with_retry_after(1)
            }
            _ => return Denial::control_plane_unavailable(),
        };
        Denial::new(status, code.as_str(), message)
    }

    pub fn control_plane_unavailable() -> Denial {
        Denial::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ControlPlaneUnavailable.as_str(),
            "the control plane cannot be reached; try again later",
        )
    }

    pub fn audit_unavailable() -> Denial {
        Denial::new(
            StatusCode::SERVICE_UNAVAILABLE,
            AUDIT_UNAVAILABLE,
            "the audit spool is full; secrets are not injected until it drains",
        )
    }

    pub fn unscannable(encoding: &str) -> Denial {
        Denial::new(
            StatusCode::BAD_GATEWAY,
            UNSCANNABLE_RESPONSE,
            format!("the upstream response uses content-encoding `{encoding}`, which the sidecar cannot scan for injected secrets"),
        )
    }

    /// The upstream answered 101 to a request carrying an injected secret: an upgraded
    /// stream cannot be scrubbed, so it is refused.
    pub fn unscannable_upgrade() -> Denial {
        Denial::new(
            StatusCode::BAD_GATEWAY,
            UNSCANNABLE_RESPONSE,
            "the upstream switched protocols after a secret was injected; an upgraded stream cannot be scanned for it",
        )
    }

    pub fn destination_not_allowed(message: impl Into<String>) -> Denial {
        Denial::new(
            StatusCode::FORBIDDEN,
            ErrorCode::DestinationNotAllowed.as_str(),
            message,
        )
    }

    pub fn is_auth(&self) -> bool {
        self.status == StatusCode::PROXY_AUTHENTICATION_REQUIRED
    }

    /// `{"error":{"code":...,"message":...}}`.
    pub fn body(&self) -> Bytes {
        let body = serde_json::json!({
            "error": { "code": self.code, "message": self.message }
        });
        Bytes::from(body.to_string())
    }
}

impl From<AuthError> for Denial {
    fn from(e: AuthError) -> Denial {
        Denial::new(
            StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            ErrorCode::TokenInvalid.as_str(),
            e.to_string(),
        )
    }
}

impl From<RouteError> for Denial {
    fn from(e: RouteError) -> Denial {
        match e {
            RouteError::Connect => Denial::new(
                StatusCode::METHOD_NOT_ALLOWED,
                METHOD_NOT_ALLOWED,
                e.to_string(),
            ),
            RouteError::NoRoute(_) => Denial::new(
                StatusCode::NOT_FOUND,
                ErrorCode::NotFound.as_str(),
                e.to_string(),
            ),
            RouteError::BadTarget(_) => Denial::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidRequest.as_str(),
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
                ErrorCode::InvalidPlaceholder.as_str(),
                "these secrets are too large to scrub together in one request; send them in separate requests",
            ),
            CombinedScrubError::Build(reason) => {
                tracing::error!(%reason, "cannot build the response scrubber");
                Denial::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::Internal.as_str(),
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
            ErrorCode::InvalidPlaceholder.as_str(),
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
                "upstream_unresolvable",
                e.to_string(),
            ),
        }
    }
}

impl From<ResolveError> for Denial {
    fn from(e: ResolveError) -> Denial {
        match e {
            ResolveError::Denied { code, message } => Denial::from_code(code, message),
            ResolveError::Unavailable(reason) => {
                tracing::warn!(%reason, "control plane unavailable");
                Denial::control_plane_unavailable()
            }
            ResolveError::Kms(reason) => {
                tracing::error!(%reason, "key service unavailable");
                Denial::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::KmsUnavailable.as_str(),
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
                    ErrorCode::KmsIntegrityFailed.as_str(),
                    format!("the key service's answer for `{path}` failed an integrity check; the secret was not injected"),
                )
            }
            ResolveError::Decrypt { path, reason } => {
                tracing::error!(%path, %reason, "cannot decrypt secret");
                Denial::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::Internal.as_str(),
                    format!("secret `{path}` could not be decrypted by this sidecar"),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests;
