//! Operator tokens: create, list, revoke (admin).

use std::sync::Arc;

use agent_secret_core::api::*;
use agent_secret_core::ids::OperatorId;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Json;
use axum::Router;

use crate::api::error::ApiResult;
use crate::api::extract::{ApiJson, Caller, Ctx};
use crate::service::auth::expect_operator;
use crate::service::{operators, App};

use super::parse_id;

pub(super) fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/operators", post(create_operator).get(list_operators))
        .route("/operators/{id}/revoke", post(revoke_operator))
}

#[utoipa::path(post, path = "/v1/operators", tag = "operators", request_body = CreateOperatorRequest,
    responses((status = 201, body = CreatedOperator), (status = 403, body = ErrorBody)), security(("operator" = [])))]
pub async fn create_operator(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Ctx(ctx): Ctx,
    ApiJson(req): ApiJson<CreateOperatorRequest>,
) -> ApiResult<(StatusCode, Json<CreatedOperator>)> {
    let op = expect_operator(caller)?;
    let created = operators::create(&app, op, &req.name, req.role, &ctx).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(get, path = "/v1/operators", tag = "operators",
    responses((status = 200, body = OperatorList)), security(("operator" = [])))]
pub async fn list_operators(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
) -> ApiResult<Json<OperatorList>> {
    Ok(Json(operators::list(&app, expect_operator(caller)?).await?))
}

#[utoipa::path(post, path = "/v1/operators/{id}/revoke", tag = "operators", params(("id" = String, Path)),
    responses((status = 200, body = OperatorInfo), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "already revoked, or the tenant's last active admin")),
    security(("operator" = [])))]
pub async fn revoke_operator(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
) -> ApiResult<Json<OperatorInfo>> {
    let op = expect_operator(caller)?;
    let id: OperatorId = parse_id(&id, "operator")?;
    Ok(Json(operators::revoke(&app, op, id, &ctx).await?))
}
