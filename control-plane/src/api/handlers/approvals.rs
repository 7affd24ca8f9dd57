//! Approval requests: listed and read by any operator of the tenant; approved or denied by a
//! human approver or admin (see `service::decisions` for who may decide).

use std::sync::Arc;

use agent_secret_core::api::*;
use agent_secret_core::ids::ApprovalId;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::Json;
use axum::Router;
use serde::Deserialize;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use crate::api::error::{ApiError, ApiResult};
use crate::api::extract::{ApiJson, Caller, Ctx, HumanSession, OperatorCaller};
use crate::service::approvals;
use crate::service::auth::expect_operator;
use crate::service::decisions::{self, Decider};
use crate::service::{App, ServiceError};

use super::parse_id;

pub(super) fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/approvals", get(list_approvals))
        .route("/approvals/{id}", get(get_approval))
        .route("/approvals/{id}/approve", post(approve))
        .route("/approvals/{id}/deny", post(deny))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ApprovalQuery {
    /// `pending`, `approved`, `denied` or `expired`; all when absent.
    pub status: Option<String>,
}

#[utoipa::path(get, path = "/v1/approvals", tag = "approvals", params(ApprovalQuery),
    responses((status = 200, body = ApprovalList), (status = 400, body = ErrorBody)),
    security(("session" = []), ("operator" = [])))]
pub async fn list_approvals(
    State(app): State<Arc<App>>,
    OperatorCaller(op): OperatorCaller,
    Query(query): Query<ApprovalQuery>,
) -> ApiResult<Json<ApprovalList>> {
    op.require(&[Role::Admin, Role::Approver, Role::Auditor])?;
    let status = match query.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(ApprovalStatus::parse(s).ok_or_else(|| {
            ServiceError::invalid(
                ErrorCode::InvalidRequest,
                "status must be pending, approved, denied or expired",
            )
        })?),
    };
    Ok(Json(approvals::list(&app, op.tenant, status).await?))
}

#[utoipa::path(get, path = "/v1/approvals/{id}", tag = "approvals", params(("id" = String, Path)),
    responses((status = 200, body = ApprovalInfo), (status = 404, body = ErrorBody)),
    security(("session" = []), ("operator" = [])))]
pub async fn get_approval(
    State(app): State<Arc<App>>,
    OperatorCaller(op): OperatorCaller,
    Path(id): Path<String>,
) -> ApiResult<Json<ApprovalInfo>> {
    op.require(&[Role::Admin, Role::Approver, Role::Auditor])?;
    let id: ApprovalId = parse_id(&id, "approval request")?;
    Ok(Json(approvals::show(&app, op.tenant, id).await?))
}

#[utoipa::path(post, path = "/v1/approvals/{id}/approve", tag = "approvals",
    params(("id" = String, Path)), request_body = DecideApproval,
    responses((status = 200, body = ApprovalInfo), (status = 403, body = ErrorBody, description = "not a human approver in a session, the agent's creator, or the requester"),
        (status = 409, body = ErrorBody, description = "no longer pending, already decided, or changed since reviewed")),
    security(("session" = []), ("operator" = [])))]
pub async fn approve(
    State(app): State<Arc<App>>,
    caller: Decides,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<DecideApproval>,
) -> ApiResult<Json<ApprovalInfo>> {
    decide(&app, caller, &ctx, &id, true, &body).await
}

#[utoipa::path(post, path = "/v1/approvals/{id}/deny", tag = "approvals",
    params(("id" = String, Path)), request_body = DecideApproval,
    responses((status = 200, body = ApprovalInfo), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("session" = []), ("operator" = [])))]
pub async fn deny(
    State(app): State<Arc<App>>,
    caller: Decides,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<DecideApproval>,
) -> ApiResult<Json<ApprovalInfo>> {
    decide(&app, caller, &ctx, &id, false, &body).await
}

/// Who is deciding: a human's session (cookie + CSRF token, same origin), or — when the
/// request carries `Authorization` — a bearer credential, which only an operator API token of
/// a role in `[approvals] token_approver_roles` gets past (`decisions::decide`); an agent or
/// sidecar key is refused here.
pub struct Decides(Decider);

impl FromRequestParts<Arc<App>> for Decides {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        if parts.headers.contains_key(header::AUTHORIZATION) {
            let Caller(principal) = Caller::from_request_parts(parts, app).await?;
            let op = expect_operator(principal)?;
            return Ok(Self(Decider {
                tenant: op.tenant,
                operator: op.id,
                role: op.role,
                human_session: false,
            }));
        }
        let HumanSession(human) = HumanSession::from_request_parts(parts, app).await?;
        Ok(Self(decisions::human_decider(app, human).await?))
    }
}

async fn decide(
    app: &App,
    Decides(decider): Decides,
    ctx: &crate::service::RequestContext,
    id: &str,
    approve: bool,
    body: &DecideApproval,
) -> ApiResult<Json<ApprovalInfo>> {
    let id: ApprovalId = parse_id(id, "approval request")?;
    Ok(Json(
        decisions::decide(app, decider, id, approve, body, ctx).await?,
    ))
}
