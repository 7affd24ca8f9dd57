//! Thin handlers: parse, call one service function, map the error. The `#[utoipa::path]`
//! attributes are the OpenAPI document's source of truth.

use std::sync::Arc;

use agent_secret_core::api::*;
use agent_secret_core::ids::{AgentId, OperatorId, SidecarId, TokenId};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, Caller, Ctx};
use crate::audit::ChainReport;
use crate::service::audit_log::{AuditEventView, AuditQuery};
use crate::service::auth::{expect_agent, expect_operator, expect_sidecar};
use crate::service::{
    agents, audit_log, operators, resolve, secrets, sidecars, tokens, App, ServiceError,
};

fn parse_id<T: std::str::FromStr>(raw: &str, what: &'static str) -> ApiResult<T> {
    raw.parse()
        .map_err(|_| ApiError::from(ServiceError::NotFound(what)))
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
    let created = agents::create(&app, op, &req.name, req.trust_tier, &ctx).await?;
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
    crate::limits::admit_token_issue(&app, agent, &ctx).await?;
    Ok((
        StatusCode::CREATED,
        Json(tokens::issue(&app, agent, req, &ctx).await?),
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

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditExportQuery {
    /// RFC 3339; events at or after.
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// RFC 3339; events before.
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// Comma-separated event types, e.g. `secret.read,token.issued`.
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// `json` (default, one document), `jsonl` (JSON Lines) or `csv`.
    pub format: Option<String>,
    /// Paging: events after this chain position.
    pub after_seq: Option<i64>,
    pub limit: Option<i64>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct AuditEventList {
    pub events: Vec<AuditEventView>,
}

#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditExportQuery),
    responses((status = 200, body = AuditEventList, description = "JSON; `format=jsonl` gives JSON Lines, `format=csv` CSV"), (status = 403, body = ErrorBody)),
    security(("operator" = [])))]
pub async fn export_audit(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    query: Result<Query<AuditExportQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let op = expect_operator(caller)?;
    let Query(q) = query?;
    let format = q.format.as_deref().unwrap_or("json");
    if !matches!(format, "json" | "jsonl" | "csv") {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            "format must be json, jsonl or csv",
        ));
    }
    let types = q
        .event_type
        .map(|t| {
            t.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let query = AuditQuery {
        since: q.since,
        until: q.until,
        types,
        after_seq: q.after_seq,
        limit: q.limit,
    };
    let events = audit_log::export(&app, op, query).await?;
    Ok(match format {
        "csv" => (
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            super::audit_csv::to_csv(&events)?,
        )
            .into_response(),
        "jsonl" => {
            let mut body = String::new();
            for e in &events {
                body.push_str(
                    &serde_json::to_string(e).map_err(|e| ServiceError::Internal(e.to_string()))?,
                );
                body.push('\n');
            }
            ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
        }
        _ => Json(AuditEventList { events }).into_response(),
    })
}

#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit",
    responses((status = 200, body = ChainReport)), security(("operator" = [])))]
pub async fn verify_audit(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
) -> ApiResult<Json<ChainReport>> {
    Ok(Json(
        audit_log::verify(&app, expect_operator(caller)?).await?,
    ))
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
    crate::limits::admit_resolve(&app, sidecar, &ctx).await?;
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
