//! Secrets: write, list and read metadata, delete (operator). Values are never returned.

use std::sync::Arc;

use agent_secret_core::api::*;
use axum::extract::{Path, Query, State};
use axum::routing::{get, put};
use axum::Json;
use axum::Router;
use serde::Deserialize;

use crate::api::error::ApiResult;
use crate::api::extract::{ApiJson, Caller, Ctx};
use crate::service::auth::expect_operator;
use crate::service::{secrets, App};

pub(super) fn router() -> Router<Arc<App>> {
    Router::new()
        .route(
            "/secrets/{*path}",
            put(put_secret).get(get_secret).delete(delete_secret),
        )
        .route("/secrets", get(list_secrets))
}

#[utoipa::path(put, path = "/v1/secrets/{path}", tag = "secrets", params(("path" = String, Path, description = "secret path, may contain `/`")),
    request_body = PutSecretRequest,
    responses((status = 200, body = PutSecretResponse), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody)),
    security(("operator" = [])))]
pub async fn put_secret(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Ctx(ctx): Ctx,
    Path(path): Path<String>,
    ApiJson(req): ApiJson<PutSecretRequest>,
) -> ApiResult<Json<PutSecretResponse>> {
    let op = expect_operator(caller)?;
    Ok(Json(secrets::put(&app, op, &path, req, &ctx).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListSecretsQuery {
    /// Only secrets at or below this path.
    pub prefix: Option<String>,
}

#[utoipa::path(get, path = "/v1/secrets", tag = "secrets", params(ListSecretsQuery),
    responses((status = 200, body = SecretList)), security(("operator" = [])))]
pub async fn list_secrets(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    query: Result<Query<ListSecretsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<SecretList>> {
    let op = expect_operator(caller)?;
    let Query(q) = query?;
    Ok(Json(secrets::list(&app, op, q.prefix.as_deref()).await?))
}

#[utoipa::path(get, path = "/v1/secrets/{path}", tag = "secrets", params(("path" = String, Path)),
    responses((status = 200, body = SecretMetadata), (status = 404, body = ErrorBody)), security(("operator" = [])))]
pub async fn get_secret(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Path(path): Path<String>,
) -> ApiResult<Json<SecretMetadata>> {
    let op = expect_operator(caller)?;
    Ok(Json(secrets::get(&app, op, &path).await?))
}

#[utoipa::path(delete, path = "/v1/secrets/{path}", tag = "secrets", params(("path" = String, Path)),
    responses((status = 200, body = DeletedSecret), (status = 404, body = ErrorBody)), security(("operator" = [])))]
pub async fn delete_secret(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Ctx(ctx): Ctx,
    Path(path): Path<String>,
) -> ApiResult<Json<DeletedSecret>> {
    let op = expect_operator(caller)?;
    Ok(Json(secrets::delete(&app, op, &path, &ctx).await?))
}
