//! The error codes every refusal carries, and the JSON body they travel in.
//!
//! Codes are part of the public contract (README.md): scripts and sidecars branch on them, so
//! a code is never renamed once shipped.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Stable error codes. Serialized in `snake_case`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    // Request shape
    InvalidRequest,
    InvalidJson,
    PayloadTooLarge,
    InvalidScope,
    InvalidPath,
    InvalidHost,
    InvalidCidr,
    InvalidTtl,
    InvalidSecretValue,
    InvalidPlaceholder,
    // Caller authentication and authorisation
    Unauthenticated,
    Forbidden,
    // Resolve and sidecar denials
    TokenInvalid,
    TokenExpired,
    TokenRevoked,
    ScopeDenied,
    DestinationNotAllowed,
    IpNotAllowed,
    ApprovalPending,
    ApprovalDenied,
    UsesExhausted,
    SecretNotFound,
    ControlPlaneUnavailable,
    /// Too many requests for a token, agent, key or client address (429 with `Retry-After`).
    RateLimited,
    /// The sidecar reached the upstream but could not complete the exchange (an HTTP-level
    /// failure pingora raised, e.g. a malformed upstream response). Never emitted by the
    /// control plane.
    UpstreamError,
    /// The sidecar could not reach the upstream (connect, TLS or I/O failure). 502.
    UpstreamUnavailable,
    // Resources
    NotFound,
    Conflict,
    // Server side (details are logged, never returned)
    KmsUnavailable,
    /// The KMS answered, but its answer failed an integrity check (CRC32C mismatch, wrong key
    /// name, unverified flags): a tampered or corrupted path to the KMS, never retried blindly.
    KmsIntegrityFailed,
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidJson => "invalid_json",
            Self::PayloadTooLarge => "payload_too_large",
            Self::InvalidScope => "invalid_scope",
            Self::InvalidPath => "invalid_path",
            Self::InvalidHost => "invalid_host",
            Self::InvalidCidr => "invalid_cidr",
            Self::InvalidTtl => "invalid_ttl",
            Self::InvalidSecretValue => "invalid_secret_value",
            Self::InvalidPlaceholder => "invalid_placeholder",
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden => "forbidden",
            Self::TokenInvalid => "token_invalid",
            Self::TokenExpired => "token_expired",
            Self::TokenRevoked => "token_revoked",
            Self::ScopeDenied => "scope_denied",
            Self::DestinationNotAllowed => "destination_not_allowed",
            Self::IpNotAllowed => "ip_not_allowed",
            Self::ApprovalPending => "approval_pending",
            Self::ApprovalDenied => "approval_denied",
            Self::UsesExhausted => "uses_exhausted",
            Self::SecretNotFound => "secret_not_found",
            Self::ControlPlaneUnavailable => "control_plane_unavailable",
            Self::RateLimited => "rate_limited",
            Self::UpstreamError => "upstream_error",
            Self::UpstreamUnavailable => "upstream_unavailable",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::KmsUnavailable => "kms_unavailable",
            Self::KmsIntegrityFailed => "kms_integrity_failed",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The control plane refuses request bodies above this with 413 `payload_too_large`. Shared so
/// that the sidecar sizes its audit batches below it.
pub const MAX_REQUEST_BODY_BYTES: usize = 64 * 1024;

/// `{"error": {"code": "...", "message": "..."}}`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code,
                message: message.into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn error_codes_serialize_as_their_stable_names() {
        for code in [
            ErrorCode::TokenInvalid,
            ErrorCode::ScopeDenied,
            ErrorCode::DestinationNotAllowed,
            ErrorCode::UsesExhausted,
            ErrorCode::ControlPlaneUnavailable,
        ] {
            assert_eq!(
                serde_json::to_string(&code).unwrap(),
                format!("\"{}\"", code.as_str())
            );
        }
    }
}
