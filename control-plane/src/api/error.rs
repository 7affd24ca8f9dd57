//! The one place a domain error becomes an HTTP status and a JSON body.
//!
//! 5xx answers carry a generic message; the detail goes to the log only.

use agent_secret_core::api::{ErrorBody, ErrorCode};
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::service::ServiceError;
use crate::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    /// Seconds for a `Retry-After` header (429 `rate_limited`, 503s worth retrying).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Adds a `Retry-After: seconds` header (at least 1: `0` would invite a busy loop).
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
    }

    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "no such endpoint",
        )
    }
}

/// `Retry-After` of a 503 `kms_unavailable`: the KMS client already retried with backoff, so
/// a caller should wait a little before the next attempt.
pub const KMS_RETRY_AFTER_SECONDS: u64 = 5;

/// Status for a denial code (docs/architecture.md "Error codes"). Resolve denials are 403 at the control plane (the
/// sidecar turns the token ones into 407 for its agent); a missing secret is 404.
fn denial_status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::SecretNotFound => StatusCode::NOT_FOUND,
        ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
        _ => StatusCode::FORBIDDEN,
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let code = e.code();
        match e {
            ServiceError::Invalid { code, message } => {
                Self::new(StatusCode::BAD_REQUEST, code, message)
            }
            ServiceError::Unauthenticated => {
                Self::new(StatusCode::UNAUTHORIZED, code, e.to_string())
            }
            ServiceError::Forbidden(m) => Self::new(StatusCode::FORBIDDEN, code, m),
            ServiceError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, code, e.to_string()),
            ServiceError::Conflict(m) => Self::new(StatusCode::CONFLICT, code, m),
            ServiceError::Denied { code, message } => Self::new(denial_status(code), code, message),
            ServiceError::RateLimited {
                retry_after_secs,
                message,
            } => Self::new(StatusCode::TOO_MANY_REQUESTS, code, message)
                .with_retry_after(retry_after_secs),
            ServiceError::Store(StoreError::NotFound) => {
                Self::new(StatusCode::NOT_FOUND, code, "not found")
            }
            ServiceError::Store(StoreError::Conflict(_)) => Self::new(
                StatusCode::CONFLICT,
                code,
                "conflicts with an existing resource",
            ),
            ServiceError::Kms(ref k) if code == ErrorCode::KmsUnavailable => {
                tracing::error!(error = %k, "kms unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    code,
                    "key management service unavailable; try again later",
                )
                .with_retry_after(KMS_RETRY_AFTER_SECONDS)
            }
            // The KMS answered, but not with what was sent or asked for: never retried blindly.
            ServiceError::Kms(ref k) if code == ErrorCode::KmsIntegrityFailed => {
                tracing::error!(error = %k, "kms integrity check failed");
                Self::new(
                    StatusCode::BAD_GATEWAY,
                    code,
                    "the key management service's answer failed an integrity check; nothing was written",
                )
            }
            ServiceError::Store(StoreError::Database(ref d)) => {
                tracing::error!(error = %d, "storage error");
                Self::new(StatusCode::SERVICE_UNAVAILABLE, code, "storage unavailable")
            }
            other => {
                tracing::error!(error = ?other, "internal error");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::Internal,
                    "internal error",
                )
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r.status() {
            StatusCode::PAYLOAD_TOO_LARGE => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::PayloadTooLarge,
                "request body is too large",
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::InvalidJson,
                "expected Content-Type: application/json",
            ),
            _ => Self::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidJson,
                r.body_text(),
            ),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            r.body_text(),
        )
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            r.body_text(),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, Json(ErrorBody::new(self.code, self.message))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
