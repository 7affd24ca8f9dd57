//! Operators: tokens (create, list, revoke: admin) and accounts (password, TOTP, disable).
//! Account endpoints take an operator API token or a human session (`OperatorCaller`).

use std::sync::Arc;

use agent_secret_core::api::*;
use agent_secret_core::ids::OperatorId;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Json;
use axum::Router;

use crate::api::error::ApiResult;
use crate::api::extract::{ApiJson, Caller, Ctx, OperatorCaller};
use crate::service::auth::expect_operator;
use crate::service::{operators, App};

use super::parse_id;

pub(super) fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/operators", post(create_operator).get(list_operators))
        .route("/operators/{id}/revoke", post(revoke_operator))
        .route("/operators/{id}/password", post(set_password))
        .route("/operators/{id}/totp", post(enroll_totp))
        .route("/operators/{id}/totp/confirm", post(confirm_totp))
        .route("/operators/{id}/disable", post(disable_operator))
}

#[utoipa::path(post, path = "/v1/operators/{id}/password", tag = "operators", params(("id" = String, Path)),
    request_body = SetPasswordRequest,
    responses((status = 200, body = PasswordChanged, description = "set; every session of the operator is revoked"),
        (status = 400, body = ErrorBody, description = "`invalid_password`: too short, too long or too common"),
        (status = 403, body = ErrorBody, description = "another operator's password (admins only), or a wrong `current_password`"),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "another operator already logs in under this name")),
    security(("operator" = []), ("session" = [])))]
pub async fn set_password(
    State(app): State<Arc<App>>,
    OperatorCaller(caller): OperatorCaller,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<SetPasswordRequest>,
) -> ApiResult<Json<PasswordChanged>> {
    let id: OperatorId = parse_id(&id, "operator")?;
    Ok(Json(
        operators::set_password(&app, caller, id, &req, &ctx).await?,
    ))
}

#[utoipa::path(post, path = "/v1/operators/{id}/totp", tag = "operators", params(("id" = String, Path)),
    responses((status = 200, body = TotpEnrollment, description = "a new TOTP secret, shown once; required at login after confirmation"),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "the operator has no password yet")),
    security(("operator" = []), ("session" = [])))]
pub async fn enroll_totp(
    State(app): State<Arc<App>>,
    OperatorCaller(caller): OperatorCaller,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
) -> ApiResult<Json<TotpEnrollment>> {
    let id: OperatorId = parse_id(&id, "operator")?;
    Ok(Json(operators::enroll_totp(&app, caller, id, &ctx).await?))
}

#[utoipa::path(post, path = "/v1/operators/{id}/totp/confirm", tag = "operators", params(("id" = String, Path)),
    request_body = ConfirmTotpRequest,
    responses((status = 200, body = AccountInfo, description = "confirmed: a code is required at every login from now on"),
        (status = 400, body = ErrorBody, description = "wrong, malformed or already used code"),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody, description = "nothing to confirm")),
    security(("operator" = []), ("session" = [])))]
pub async fn confirm_totp(
    State(app): State<Arc<App>>,
    OperatorCaller(caller): OperatorCaller,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ConfirmTotpRequest>,
) -> ApiResult<Json<AccountInfo>> {
    let id: OperatorId = parse_id(&id, "operator")?;
    Ok(Json(
        operators::confirm_totp(&app, caller, id, &req.code, &ctx).await?,
    ))
}

#[utoipa::path(post, path = "/v1/operators/{id}/disable", tag = "operators", params(("id" = String, Path)),
    responses((status = 200, body = AccountInfo, description = "disabled: no login, API token and sessions revoked"),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "already disabled, or the tenant's last active admin")),
    security(("operator" = []), ("session" = [])))]
pub async fn disable_operator(
    State(app): State<Arc<App>>,
    OperatorCaller(caller): OperatorCaller,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
) -> ApiResult<Json<AccountInfo>> {
    let id: OperatorId = parse_id(&id, "operator")?;
    Ok(Json(operators::disable(&app, caller, id, &ctx).await?))
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
