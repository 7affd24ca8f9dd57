//! Errors as Google APIs send them over REST, so the real client turns them into the same
//! `google_cloud_gax::error::Error` it would get from Cloud KMS.
//!
//! The body is `{"error": {"code": <HTTP status>, "message", "status": "<CODE_NAME>",
//! "details": []}}`. gax reads the code from the `status` *name* (the numeric `code` is the HTTP
//! status and is ignored), so the name is what a test's `err.status().code` sees.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// The `google.rpc.Code`s the fake answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RpcCode {
    InvalidArgument,
    FailedPrecondition,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    Unavailable,
    DeadlineExceeded,
    /// A failure inside the service (HTTP 500).
    Internal,
    /// For requests that are valid for Cloud KMS but outside what the fake implements.
    Unimplemented,
}

impl RpcCode {
    /// The status name gax parses into `google_cloud_gax::error::rpc::Code`.
    fn name(self) -> &'static str {
        match self {
            Self::InvalidArgument => "INVALID_ARGUMENT",
            Self::FailedPrecondition => "FAILED_PRECONDITION",
            Self::NotFound => "NOT_FOUND",
            Self::AlreadyExists => "ALREADY_EXISTS",
            Self::PermissionDenied => "PERMISSION_DENIED",
            Self::Unavailable => "UNAVAILABLE",
            Self::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Self::Internal => "INTERNAL",
            Self::Unimplemented => "UNIMPLEMENTED",
        }
    }

    /// The HTTP status Google's front end pairs with each code (AIP-193 mapping).
    fn http_status(self) -> StatusCode {
        match self {
            Self::InvalidArgument | Self::FailedPrecondition => StatusCode::BAD_REQUEST,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::AlreadyExists => StatusCode::CONFLICT,
            Self::PermissionDenied => StatusCode::FORBIDDEN,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        }
    }
}

/// A failed RPC: the code and the message Cloud KMS would send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct RpcError {
    pub(super) code: RpcCode,
    pub(super) message: String,
}

impl RpcError {
    pub(super) fn new(code: RpcCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub(super) fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(RpcCode::InvalidArgument, message)
    }

    pub(super) fn failed_precondition(message: impl Into<String>) -> Self {
        Self::new(RpcCode::FailedPrecondition, message)
    }

    pub(super) fn not_found(message: impl Into<String>) -> Self {
        Self::new(RpcCode::NotFound, message)
    }
}

/// The one place an error becomes an HTTP response.
impl IntoResponse for RpcError {
    fn into_response(self) -> Response {
        let status = self.code.http_status();
        let body = json!({
            "error": {
                "code": status.as_u16(),
                "message": self.message,
                "status": self.code.name(),
                "details": [],
            }
        });
        (status, Json(body)).into_response()
    }
}
