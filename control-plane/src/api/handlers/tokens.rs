//! Scoped tokens: issue (agent key), read and revoke (agent for its own, or operator).

use std::sync::Arc;

use agent_secret_core::api::*;
use agent_secret_core::ids::{AgentId, TokenId};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Json;
use axum::Router;

use crate::api::error::ApiResult;
use crate::api::extract::{ApiJson, Caller, Ctx};
use crate::service::auth::{expect_agent, expect_operator};
use crate::service::{tokens, App, ServiceError};

use super::parse_id;

pub(super) fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/tokens", post(issue_token).get(list_tokens))
        .route("/tokens/{id}", get(get_token))
        .route("/tokens/{id}/revoke", post(revoke_token))
        .route("/auth/kubernetes", post(kubernetes_token))
}

#[utoipa::path(post, path = "/v1/auth/kubernetes", tag = "tokens", request_body = KubernetesTokenRequest,
    responses((status = 201, body = IssuedToken), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody, description = "the service-account token is not valid for this control plane"), (status = 403, body = ErrorBody, description = "no binding for the service account (or not in this namespace)"), (status = 404, body = ErrorBody, description = "workload identity is off"), (status = 429, body = ErrorBody, description = "rate_limited, with Retry-After")))]
pub async fn kubernetes_token(
    State(app): State<Arc<App>>,
    Ctx(ctx): Ctx,
    ApiJson(req): ApiJson<KubernetesTokenRequest>,
) -> ApiResult<(StatusCode, Json<IssuedToken>)> {
    Ok((
        StatusCode::CREATED,
        Json(crate::service::workload_identity::exchange(&app, req, &ctx).await?),
    ))
}

#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", request_body = IssueTokenRequest,
    responses((status = 201, body = IssuedToken), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody, description = "rate_limited, with Retry-After")),
    security(("agent" = [])))]
pub async fn issue_token(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Ctx(ctx): Ctx,
    ApiJson(req): ApiJson<IssueTokenRequest>,
) -> ApiResult<(StatusCode, Json<IssuedToken>)> {
    let agent = expect_agent(caller)?;
    crate::service::limits::admit_token_issue(&app, agent, &ctx).await?;
    Ok((
        StatusCode::CREATED,
        Json(tokens::issue(&app, agent, req, &ctx).await?),
    ))
}

/// Filters of `GET /v1/tokens`.
#[derive(serde::Deserialize, utoipa::IntoParams)]
pub struct TokenQuery {
    /// Only this agent's tokens.
    agent_id: Option<String>,
    /// Only tokens in this state: pending_approval, active, denied, revoked or expired.
    status: Option<String>,
    /// At most this many (default 100, at most 500), newest first.
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/v1/tokens", tag = "tokens", params(TokenQuery),
    responses((status = 200, body = TokenList), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)), security(("operator" = [])))]
pub async fn list_tokens(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Query(q): Query<TokenQuery>,
) -> ApiResult<Json<TokenList>> {
    let operator = expect_operator(caller)?;
    let agent = match q.agent_id.as_deref().filter(|a| !a.is_empty()) {
        Some(raw) => Some(parse_id::<AgentId>(raw, "agent")?),
        None => None,
    };
    let status = match q.status.as_deref().filter(|s| !s.is_empty()) {
        Some(raw) => Some(TokenStatus::parse(raw).ok_or_else(|| {
            ServiceError::invalid(
                ErrorCode::InvalidRequest,
                format!("unknown token status {raw:?}"),
            )
        })?),
        None => None,
    };
    Ok(Json(
        tokens::list(&app, operator, agent, status, q.limit).await?,
    ))
}

#[utoipa::path(get, path = "/v1/tokens/{id}", tag = "tokens", params(("id" = String, Path)),
    responses((status = 200, body = TokenInfo), (status = 404, body = ErrorBody)), security(("agent" = []), ("operator" = [])))]
pub async fn get_token(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<TokenInfo>> {
    let id: TokenId = parse_id(&id, "token")?;
    Ok(Json(tokens::get(&app, caller, id).await?))
}

#[utoipa::path(post, path = "/v1/tokens/{id}/revoke", tag = "tokens", params(("id" = String, Path)),
    responses((status = 200, body = TokenInfo), (status = 404, body = ErrorBody)), security(("agent" = []), ("operator" = [])))]
pub async fn revoke_token(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
) -> ApiResult<Json<TokenInfo>> {
    let id: TokenId = parse_id(&id, "token")?;
    Ok(Json(tokens::revoke(&app, caller, id, &ctx).await?))
}
