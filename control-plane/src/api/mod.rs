//! HTTP: the axum router of the control-plane API.
//!
//! `app(state)` builds the whole router so tests can drive it in-process with
//! `tower::ServiceExt::oneshot`, and `server::serve` runs the same router over TLS.

mod audit_export;
pub mod error;
pub mod extract;
mod handlers;
mod openapi;
mod ui;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use self::error::ApiError;
use crate::service::App;

pub use openapi::ApiDoc;

/// Request bodies above this are refused with 413 `payload_too_large`.
pub const MAX_BODY_BYTES: usize = agent_secret_core::api::MAX_REQUEST_BODY_BYTES;

/// An AdmissionReview carries the whole pod (managed fields and all); the API server's own
/// limit on an object is ~1.5 MiB, and a review holds it once for a CREATE.
pub const INJECT_MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

pub fn app(state: Arc<App>) -> Router {
    let v1 = handlers::router().route("/openapi.json", get(openapi_json));
    Router::new()
        .nest("/v1", v1)
        .merge(ui::router())
        .merge(crate::mcp::router(state.clone()))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(
            "/kubernetes/inject",
            post(kubernetes_inject).layer(DefaultBodyLimit::max(INJECT_MAX_BODY_BYTES)),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // A body trickled byte by byte would hold its connection "in flight" for ever: the
        // connection's idle timeout only runs between requests.
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            std::time::Duration::from_secs(state.limits.server.request_body_timeout_seconds),
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_metrics,
        ))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok"
}

/// Ready when the database answers.
async fn readyz(State(app): State<Arc<App>>) -> Response {
    match app.store.ping().await {
        Ok(()) => "ready".into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
        }
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
        .into_response()
}

async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi::document())
}

/// The sidecar injector webhook (docs/kubernetes.md), when `[kubernetes] injector` is on. The
/// API server does not authenticate to webhooks; the review only ever yields a patch to the
/// pod it carries, and no secret is read.
async fn kubernetes_inject(State(app): State<Arc<App>>, body: axum::body::Bytes) -> Response {
    match &app.injector {
        Some(injector) => Json(injector.review(&body)).into_response(),
        None => ApiError::not_found().into_response(),
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found()
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        agent_secret_core::api::ErrorCode::InvalidRequest,
        "method not allowed on this endpoint",
    )
}

/// Counts and times every request by its route template (never the concrete path, which may
/// name a secret) and a method from a closed set: no label value comes from raw client input,
/// so a client cannot grow the series without bound.
async fn record_metrics(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = crate::metrics::method_label(req.method());
    let started = Instant::now();
    let response = next.run(req).await;
    app.metrics
        .http_latency
        .with_label_values(&[route.as_str(), method])
        .observe(started.elapsed().as_secs_f64());
    app.metrics
        .http_requests
        .with_label_values(&[route.as_str(), method, response.status().as_str()])
        .inc();
    response
}
