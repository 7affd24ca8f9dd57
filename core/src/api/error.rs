//! The error codes every refusal carries, and the JSON body they travel in.
//!
//! Codes are part of the public contract (the "Error codes" table of README.md, checked against
//! [`ErrorCode::ALL`] by `core/tests/error_codes_documented.rs`): scripts and agents branch on
//! them, so a code is never renamed once shipped. The control plane and the sidecar both take
//! their codes from this one enum, so no side can emit a code the other does not know.

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
    /// A new operator password breaks the password rules (too short, too long, too common).
    InvalidPassword,
    /// The sidecar does not tunnel `CONNECT` (405): route mode is the way in.
    MethodNotAllowed,
    // Caller authentication and authorisation
    Unauthenticated,
    Forbidden,
    /// A session-authenticated unsafe request without the session's `X-CSRF-Token`, or sent
    /// cross-site (`Origin`, `Sec-Fetch-Site`).
    CsrfFailed,
    // Resolve and sidecar denials
    TokenInvalid,
    TokenExpired,
    TokenRevoked,
    ScopeDenied,
    /// A token request asked for a scope outside the agent's ceiling (403 at issuance).
    ScopeNotPermitted,
    DestinationNotAllowed,
    IpNotAllowed,
    ApprovalPending,
    ApprovalDenied,
    UsesExhausted,
    SecretNotFound,
    ControlPlaneUnavailable,
    /// The sidecar's audit spool cannot take more events, so nothing is injected (503).
    AuditUnavailable,
    /// Too many requests for a token, agent, key or client address (429 with `Retry-After`).
    RateLimited,
    /// The upstream's response cannot be scanned for injected secrets (an encoding the
    /// scrubber cannot read, or a protocol upgrade after an injection): 502.
    UnscannableResponse,
    /// The sidecar reached the upstream but could not complete the exchange (an HTTP-level
    /// failure pingora raised, e.g. a malformed upstream response). Never emitted by the
    /// control plane.
    UpstreamError,
    /// The sidecar could not reach the upstream (connect, TLS or I/O failure). 502.
    UpstreamUnavailable,
    /// The destination host did not resolve to an address (502).
    UpstreamUnresolvable,
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
    /// Every code, in declaration order. [`ErrorCode::as_str`] matches exhaustively, so a new
    /// variant does not compile without its name, and a unit test compares this list with the
    /// variants serde knows, so it cannot be left out here either.
    pub const ALL: [ErrorCode; 39] = [
        Self::InvalidRequest,
        Self::InvalidJson,
        Self::PayloadTooLarge,
        Self::InvalidScope,
        Self::InvalidPath,
        Self::InvalidHost,
        Self::InvalidCidr,
        Self::InvalidTtl,
        Self::InvalidSecretValue,
        Self::InvalidPlaceholder,
        Self::InvalidPassword,
        Self::MethodNotAllowed,
        Self::Unauthenticated,
        Self::Forbidden,
        Self::CsrfFailed,
        Self::TokenInvalid,
        Self::TokenExpired,
        Self::TokenRevoked,
        Self::ScopeDenied,
        Self::ScopeNotPermitted,
        Self::DestinationNotAllowed,
        Self::IpNotAllowed,
        Self::ApprovalPending,
        Self::ApprovalDenied,
        Self::UsesExhausted,
        Self::SecretNotFound,
        Self::ControlPlaneUnavailable,
        Self::AuditUnavailable,
        Self::RateLimited,
        Self::UnscannableResponse,
        Self::UpstreamError,
        Self::UpstreamUnavailable,
        Self::UpstreamUnresolvable,
        Self::NotFound,
        Self::Conflict,
        Self::KmsUnavailable,
        Self::KmsIntegrityFailed,
        Self::Unavailable,
        Self::Internal,
    ];

    /// The documented code, as it appears in `{"error": {"code": ...}}`.
    pub const fn as_str(&self) -> &'static str {
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
            Self::InvalidPassword => "invalid_password",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden => "forbidden",
            Self::CsrfFailed => "csrf_failed",
            Self::TokenInvalid => "token_invalid",
            Self::TokenExpired => "token_expired",
            Self::TokenRevoked => "token_revoked",
            Self::ScopeDenied => "scope_denied",
            Self::ScopeNotPermitted => "scope_not_permitted",
            Self::DestinationNotAllowed => "destination_not_allowed",
            Self::IpNotAllowed => "ip_not_allowed",
            Self::ApprovalPending => "approval_pending",
            Self::ApprovalDenied => "approval_denied",
            Self::UsesExhausted => "uses_exhausted",
            Self::SecretNotFound => "secret_not_found",
            Self::ControlPlaneUnavailable => "control_plane_unavailable",
            Self::AuditUnavailable => "audit_unavailable",
            Self::RateLimited => "rate_limited",
            Self::UnscannableResponse => "unscannable_response",
            Self::UpstreamError => "upstream_error",
            Self::UpstreamUnavailable => "upstream_unavailable",
            Self::UpstreamUnresolvable => "upstream_unresolvable",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::KmsUnavailable => "kms_unavailable",
            Self::KmsIntegrityFailed => "kms_integrity_failed",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }

    /// The HTTP status that goes with this code wherever it is emitted, or `None` when the
    /// status depends on who answers: the token codes are 407 from the sidecar (the agent must
    /// present another proxy credential) and 403 from `POST /v1/sidecar/resolve`;
    /// `invalid_json` is 415 for a wrong `Content-Type` and 400 otherwise; `upstream_error`
    /// carries the status pingora chose (502 when it chose none).
    pub const fn http_status(&self) -> Option<u16> {
        let status = match self {
            Self::TokenInvalid | Self::TokenExpired | Self::TokenRevoked => return None,
            Self::InvalidJson | Self::UpstreamError => return None,
            Self::InvalidRequest
            | Self::InvalidScope
            | Self::InvalidPath
            | Self::InvalidHost
            | Self::InvalidCidr
            | Self::InvalidTtl
            | Self::InvalidSecretValue
            | Self::InvalidPlaceholder
            | Self::InvalidPassword => 400,
            Self::Unauthenticated => 401,
            Self::Forbidden
            | Self::CsrfFailed
            | Self::ScopeDenied
            | Self::ScopeNotPermitted
            | Self::DestinationNotAllowed
            | Self::IpNotAllowed
            | Self::ApprovalPending
            | Self::ApprovalDenied
            | Self::UsesExhausted => 403,
            Self::SecretNotFound | Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::Conflict => 409,
            Self::PayloadTooLarge => 413,
            Self::RateLimited => 429,
            Self::Internal => 500,
            Self::UnscannableResponse
            | Self::UpstreamUnavailable
            | Self::UpstreamUnresolvable
            | Self::KmsIntegrityFailed => 502,
            Self::ControlPlaneUnavailable
            | Self::AuditUnavailable
            | Self::KmsUnavailable
            | Self::Unavailable => 503,
        };
        Some(status)
    }

    /// The code whose [`as_str`](Self::as_str) is `code`, if any.
    pub fn parse(code: &str) -> Option<ErrorCode> {
        Self::ALL.into_iter().find(|c| c.as_str() == code)
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
        for code in ErrorCode::ALL {
            assert_eq!(
                serde_json::to_string(&code).unwrap(),
                format!("\"{}\"", code.as_str())
            );
            let back: ErrorCode = serde_json::from_str(&format!("\"{code}\"")).unwrap();
            assert_eq!(back, code);
        }
    }

    #[test]
    fn all_lists_every_variant_serde_knows_once() {
        let mut listed: Vec<&str> = ErrorCode::ALL.iter().map(ErrorCode::as_str).collect();
        let mut variants = serde_variants::<ErrorCode>().to_vec();
        listed.sort_unstable();
        variants.sort_unstable();
        assert_eq!(
            listed, variants,
            "ErrorCode::ALL and the enum's variants differ"
        );
        listed.dedup();
        assert_eq!(listed.len(), ErrorCode::ALL.len(), "a code is listed twice");
    }

    #[test]
    fn parse_is_the_inverse_of_as_str() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
        assert_eq!(ErrorCode::parse("scope-denied"), None);
        assert_eq!(ErrorCode::parse(""), None);
    }

    #[test]
    fn uniform_statuses_are_client_or_server_errors_as_the_code_says() {
        assert_eq!(ErrorCode::UpstreamUnavailable.http_status(), Some(502));
        assert_eq!(ErrorCode::TokenInvalid.http_status(), None);
        assert_eq!(ErrorCode::UpstreamError.http_status(), None);
        for code in ErrorCode::ALL {
            let Some(status) = code.http_status() else {
                continue;
            };
            assert!((400..600).contains(&status), "{code}: {status}");
            // Server-side codes (the KMS, the control plane, the upstream, internals) are 5xx;
            // everything the caller can fix is 4xx.
            let server_side = matches!(
                code,
                ErrorCode::ControlPlaneUnavailable
                    | ErrorCode::AuditUnavailable
                    | ErrorCode::UnscannableResponse
                    | ErrorCode::UpstreamUnavailable
                    | ErrorCode::UpstreamUnresolvable
                    | ErrorCode::KmsUnavailable
                    | ErrorCode::KmsIntegrityFailed
                    | ErrorCode::Unavailable
                    | ErrorCode::Internal
            );
            assert_eq!(status >= 500, server_side, "{code}: {status}");
        }
    }

    /// The variant names a derived `Deserialize` accepts (after `rename_all`): serde hands
    /// them to `deserialize_enum`, which is all this deserializer implements.
    fn serde_variants<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
        use serde::de::value::Error;
        use serde::de::{Error as _, Visitor};

        struct Introspect<'a>(&'a mut &'static [&'static str]);

        impl<'de> serde::Deserializer<'de> for Introspect<'_> {
            type Error = Error;

            fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
                Err(Error::custom("not an enum"))
            }

            fn deserialize_enum<V: Visitor<'de>>(
                self,
                _name: &'static str,
                variants: &'static [&'static str],
                _visitor: V,
            ) -> Result<V::Value, Error> {
                *self.0 = variants;
                Err(Error::custom("variants read"))
            }

            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
                byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
                struct identifier ignored_any
            }
        }

        let mut variants: &'static [&'static str] = &[];
        let _not_a_value = T::deserialize(Introspect(&mut variants));
        variants
    }
}
