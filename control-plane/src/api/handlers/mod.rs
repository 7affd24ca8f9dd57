//! Thin handlers, one module per resource, each with its own `router()`: parse, call one
//! service function, map the error. The `#[utoipa::path]` attributes are the OpenAPI
//! document's source of truth (`api/openapi.rs`).

pub(super) mod agents;
pub(super) mod approvals;
pub(super) mod audit;
pub(super) mod operators;
pub(super) mod secrets;
pub(super) mod sessions;
pub(super) mod sidecar;
pub(super) mod sidecars;
pub(super) mod tokens;

use std::sync::Arc;

use axum::Router;

use super::error::{ApiError, ApiResult};
use crate::service::{App, ServiceError};

/// Every `/v1` route of the handlers (the OpenAPI document is added by `api::app`).
pub(super) fn router() -> Router<Arc<App>> {
    Router::new()
        .merge(sidecars::router())
        .merge(agents::router())
        .merge(operators::router())
        .merge(secrets::router())
        .merge(sessions::router())
        .merge(tokens::router())
        .merge(approvals::router())
        .merge(audit::router())
        .merge(sidecar::router())
}

pub(super) fn parse_id<T: std::str::FromStr>(raw: &str, what: &'static str) -> ApiResult<T> {
    raw.parse()
        .map_err(|_| ApiError::from(ServiceError::NotFound(what)))
}
