//! The sidecar API: resolve, release, watch and the audit batch (sidecar key).

use std::sync::Arc;

use agent_secret_core::api::*;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use axum::Router;

use crate::api::error::ApiResult;
use crate::api::extract::{ApiJson, Caller, Ctx};
use crate::service::auth::expect_sidecar;
use crate::service::{resolve, App};

pub(super) fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/sidecar/resolve", post(resolve_secrets))
        .route("/sidecar/release", post(release_use))
        .route("/sidecar/watch", get(watch))
        .route("/sidecar/audit", post(sidecar_audit))
}

#[utoipa::path(post, path = "/v1/sidecar/resolve", tag = "sidecar", request_body = ResolveRequest,
    responses((status = 200, body = ResolveResponse), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody, description = "denied: token_invalid, token_expired, token_revoked, scope_denied, destination_not_allowed, ip_not_allowed, approval_pending, uses_exhausted"), (status = 404, body = ErrorBody, description = "secret_not_found"), (status = 429, body = ErrorBody, description = "rate_limited, with Retry-After")),
    security(("sidecar" = [])))]
pub async fn resolve_secrets(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Ctx(ctx): Ctx,
    ApiJson(req): ApiJson<ResolveRequest>,
) -> ApiResult<Json<ResolveResponse>> {
    let sidecar = expect_sidecar(caller)?;
    crate::service::limits::admit_resolve(&app, sidecar, &ctx).await?;
    Ok(Json(resolve::resolve(&app, sidecar, &req).await?))
}

#[utoipa::path(post, path = "/v1/sidecar/release", tag = "sidecar", request_body = ReleaseUseRequest,
    responses((status = 200, body = ReleasedUse, description = "released, or already_released (idempotent)"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody, description = "no such reservation of this sidecar"), (status = 409, body = ErrorBody, description = "the reservation's deadline passed: the use is spent")),
    security(("sidecar" = [])))]
pub async fn release_use(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    ApiJson(req): ApiJson<ReleaseUseRequest>,
) -> ApiResult<Json<ReleasedUse>> {
    let sidecar = expect_sidecar(caller)?;
    Ok(Json(
        crate::service::release::release(&app, sidecar, &req).await?,
    ))
}

#[utoipa::path(get, path = "/v1/sidecar/watch", tag = "sidecar",
    responses((status = 200, content_type = "text/event-stream", description = "Server-sent events; `event:` is the WatchEvent type (token_revoked, agent_key_rotated, secret_updated, secret_deleted, kek_rotated, agent_revoked, resync: flush every cached grant and value), `data:` its JSON. Starts with a `: watching` comment.")),
    security(("sidecar" = [])))]
pub async fn watch(State(app): State<Arc<App>>, Caller(caller): Caller) -> ApiResult<Response> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use futures::StreamExt;

    let sidecar = expect_sidecar(caller)?;
    let hello = futures::stream::once(async { Event::default().comment("watching") });
    let events = crate::service::watch::subscribe(&app, sidecar).map(|event| {
        let name = match &event {
            WatchEvent::TokenRevoked { .. } => "token_revoked",
            WatchEvent::AgentKeyRotated { .. } => "agent_key_rotated",
            WatchEvent::SecretUpdated { .. } => "secret_updated",
            WatchEvent::SecretDeleted { .. } => "secret_deleted",
            WatchEvent::KekRotated { .. } => "kek_rotated",
            WatchEvent::AgentRevoked { .. } => "agent_revoked",
            WatchEvent::TokenApproved { .. } => "token_approved",
            WatchEvent::AgentCeilingChanged { .. } => "agent_ceiling_changed",
            WatchEvent::Resync => "resync",
        };
        Event::default()
            .event(name)
            .json_data(&event)
            .unwrap_or_else(|_| Event::default().comment("unencodable event"))
    });
    let stream = hello.chain(events).map(Ok::<_, std::convert::Infallible>);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(15)))
        .into_response())
}

#[utoipa::path(post, path = "/v1/sidecar/audit", tag = "sidecar", request_body = SidecarAuditBatch,
    responses((status = 200, body = SidecarAuditAccepted), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody, description = "the events could not be written; retry the batch")),
    security(("sidecar" = [])))]
pub async fn sidecar_audit(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    ApiJson(batch): ApiJson<SidecarAuditBatch>,
) -> ApiResult<Json<SidecarAuditAccepted>> {
    let sidecar = expect_sidecar(caller)?;
    Ok(Json(
        crate::service::watch::ingest_audit(&app, sidecar, batch).await?,
    ))
}
