//! Sidecar registrations: create, list, revoke (operator).

use std::sync::Arc;

use agent_secret_core::api::*;
use agent_secret_core::ids::SidecarId;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Json;
use axum::Router;

use crate::api::error::ApiResult;
use crate::api::extract::{ApiJson, Caller, Ctx};
use crate::service::auth::expect_operator;
use crate::service::{sidecars, App};

use super::parse_id;

pub(super) fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/sidecars", post(create_sidecar).get(list_sidecars))
        .route("/sidecars/{id}/revoke", post(revoke_sidecar))
}

#[utoipa::path(post, path = "/v1/sidecars", tag = "sidecars", request_body = CreateSidecarRequest,
    responses((status = 201, body = CreatedSidecar), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("operator" = [])))]
pub async fn create_sidecar(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Ctx(ctx): Ctx,
    ApiJson(req): ApiJson<CreateSidecarRequest>,
) -> ApiResult<(StatusCode, Json<CreatedSidecar>)> {
    let op = expect_operator(caller)?;
    Ok((
        StatusCode::CREATED,
        Json(sidecars::create(&app, op, &req.name, &ctx).await?),
    ))
}

#[utoipa::path(get, path = "/v1/sidecars", tag = "sidecars",
    responses((status = 200, body = SidecarList), (status = 401, body = ErrorBody)), security(("operator" = [])))]
pub async fn list_sidecars(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
) -> ApiResult<Json<SidecarList>> {
    Ok(Json(sidecars::list(&app, expect_operator(caller)?).await?))
}

#[utoipa::path(post, path = "/v1/sidecars/{id}/revoke", tag = "sidecars", params(("id" = String, Path)),
    responses((status = 200, body = SidecarInfo), (status = 404, body = ErrorBody)), security(("operator" = [])))]
pub async fn revoke_sidecar(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
) -> ApiResult<Json<SidecarInfo>> {
    let op = expect_operator(caller)?;
    let id: SidecarId = parse_id(&id, "sidecar")?;
    Ok(Json(sidecars::revoke(&app, op, id, &ctx).await?))
}
