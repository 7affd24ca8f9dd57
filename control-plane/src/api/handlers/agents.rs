//! Agent identities: create, list, read, rotate key, revoke (operator).

use std::sync::Arc;

use agent_secret_core::api::*;
use agent_secret_core::ids::AgentId;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::Json;
use axum::Router;

use crate::api::error::ApiResult;
use crate::api::extract::{ApiJson, Caller, Ctx, OperatorCaller};
use crate::service::auth::expect_operator;
use crate::service::{agents, App};

use super::parse_id;

pub(super) fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/agents", post(create_agent).get(list_agents))
        .route("/agents/{id}", get(get_agent))
        .route("/agents/{id}/rotate-key", post(rotate_agent_key))
        .route("/agents/{id}/revoke", post(revoke_agent))
        .route("/agents/{id}/ceiling/allow", post(allow_scopes))
        .route("/agents/{id}/ceiling/deny", post(deny_scopes))
        .route("/agents/{id}/access-requests", post(request_access))
        .route("/agents/{id}/trust-tier", put(set_trust_tier))
}

#[utoipa::path(put, path = "/v1/agents/{id}/trust-tier", tag = "agents",
    params(("id" = String, Path)), request_body = SetTrustTier,
    responses((status = 200, body = AgentInfo), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("operator" = [])))]
pub async fn set_trust_tier(
    State(app): State<Arc<App>>,
    OperatorCaller(op): OperatorCaller,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<SetTrustTier>,
) -> ApiResult<Json<AgentInfo>> {
    let id: AgentId = parse_id(&id, "agent")?;
    Ok(Json(
        agents::set_trust_tier(&app, op, id, req.trust_tier, &ctx).await?,
    ))
}

/// An approver (or admin) asks for scopes to join the agent's ceiling; another human decides.
#[utoipa::path(post, path = "/v1/agents/{id}/access-requests", tag = "agents",
    params(("id" = String, Path)), request_body = CeilingChange,
    responses((status = 201, body = ApprovalInfo), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "already within the ceiling")),
    security(("session" = []), ("operator" = [])))]
pub async fn request_access(
    State(app): State<Arc<App>>,
    OperatorCaller(op): OperatorCaller,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<CeilingChange>,
) -> ApiResult<(StatusCode, Json<ApprovalInfo>)> {
    let id: AgentId = parse_id(&id, "agent")?;
    let filed = crate::service::ceilings::request_access(&app, op, id, &req.scopes, &ctx).await?;
    Ok((StatusCode::CREATED, Json(filed)))
}

#[utoipa::path(post, path = "/v1/agents/{id}/ceiling/allow", tag = "agents",
    params(("id" = String, Path)), request_body = CeilingChange,
    responses((status = 200, body = AgentCeiling), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("operator" = [])))]
pub async fn allow_scopes(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<CeilingChange>,
) -> ApiResult<Json<AgentCeiling>> {
    let op = expect_operator(caller)?;
    let id: AgentId = parse_id(&id, "agent")?;
    Ok(Json(
        crate::service::ceilings::allow(&app, op, id, &req.scopes, &ctx).await?,
    ))
}

/// Removes entries from the ceiling; the agent's tokens left outside are revoked.
#[utoipa::path(post, path = "/v1/agents/{id}/ceiling/deny", tag = "agents",
    params(("id" = String, Path)), request_body = CeilingChange,
    responses((status = 200, body = AgentCeiling), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("operator" = [])))]
pub async fn deny_scopes(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<CeilingChange>,
) -> ApiResult<Json<AgentCeiling>> {
    let op = expect_operator(caller)?;
    let id: AgentId = parse_id(&id, "agent")?;
    Ok(Json(
        crate::service::ceilings::deny(&app, op, id, &req.scopes, &ctx).await?,
    ))
}

#[utoipa::path(post, path = "/v1/agents", tag = "agents", request_body = CreateAgentRequest,
    responses((status = 201, body = CreatedAgent), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("operator" = [])))]
pub async fn create_agent(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Ctx(ctx): Ctx,
    ApiJson(req): ApiJson<CreateAgentRequest>,
) -> ApiResult<(StatusCode, Json<CreatedAgent>)> {
    let op = expect_operator(caller)?;
    let created = agents::create(&app, op, &req.name, req.trust_tier, &req.allow, &ctx).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(get, path = "/v1/agents", tag = "agents",
    responses((status = 200, body = AgentList)), security(("operator" = [])))]
pub async fn list_agents(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
) -> ApiResult<Json<AgentList>> {
    Ok(Json(agents::list(&app, expect_operator(caller)?).await?))
}

#[utoipa::path(get, path = "/v1/agents/{id}", tag = "agents", params(("id" = String, Path)),
    responses((status = 200, body = AgentInfo), (status = 404, body = ErrorBody)), security(("operator" = [])))]
pub async fn get_agent(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<AgentInfo>> {
    let op = expect_operator(caller)?;
    let id: AgentId = parse_id(&id, "agent")?;
    Ok(Json(agents::get(&app, op, id).await?))
}

#[utoipa::path(post, path = "/v1/agents/{id}/rotate-key", tag = "agents", params(("id" = String, Path)),
    responses((status = 200, body = RotatedAgentKey), (status = 404, body = ErrorBody)), security(("operator" = [])))]
pub async fn rotate_agent_key(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
) -> ApiResult<Json<RotatedAgentKey>> {
    let op = expect_operator(caller)?;
    let id: AgentId = parse_id(&id, "agent")?;
    Ok(Json(agents::rotate_key(&app, op, id, &ctx).await?))
}

#[utoipa::path(post, path = "/v1/agents/{id}/revoke", tag = "agents", params(("id" = String, Path)),
    responses((status = 200, body = RevokedAgent), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)), security(("operator" = [])))]
pub async fn revoke_agent(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
) -> ApiResult<Json<RevokedAgent>> {
    let op = expect_operator(caller)?;
    let id: AgentId = parse_id(&id, "agent")?;
    Ok(Json(agents::revoke(&app, op, id, &ctx).await?))
}
