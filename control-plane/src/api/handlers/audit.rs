//! The audit log: export (JSON, JSON Lines, CSV) and chain verification (auditor).

use std::sync::Arc;

use agent_secret_core::api::*;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use axum::Router;
use serde::Deserialize;

use crate::api::audit_export::{self, StreamFormat};
use crate::api::error::{ApiError, ApiResult};
use crate::api::extract::Caller;
use crate::audit::ChainReport;
use crate::service::audit_log::{AuditEventView, AuditQuery};
use crate::service::auth::expect_operator;
use crate::service::checkpoints::{self, PublicKeyList};
use crate::service::{audit_log, App};

pub(super) fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/audit", get(export_audit))
        .route("/audit/verify", get(verify_audit))
        .route("/audit/public-keys", get(public_keys))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditExportQuery {
    /// RFC 3339; events at or after.
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// RFC 3339; events at or before.
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// Comma-separated event types, e.g. `secret.read,token.issued`.
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// Exactly this actor, e.g. `token:0190f3a2-...`.
    pub actor: Option<String>,
    /// Paths starting with this text, e.g. `prod/`.
    pub path_prefix: Option<String>,
    /// `json` (default: one page), `jsonl` (JSON Lines) or `csv`; the last two stream every
    /// matching event.
    pub format: Option<String>,
    /// JSON paging: the `next_cursor` of the previous page (the id of its last event).
    pub cursor: Option<String>,
    /// Events after this chain position.
    pub after_seq: Option<i64>,
    /// JSON: events per page (default 1000, at most 10000). JSON Lines and CSV: at most this
    /// many events (default: all).
    pub limit: Option<i64>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct AuditEventList {
    pub events: Vec<AuditEventView>,
    /// Present when this page is full: pass it as `cursor` for the next one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditExportQuery),
    responses((status = 200, body = AuditEventList, description = "JSON; `format=jsonl` streams JSON Lines, `format=csv` CSV"), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("operator" = [])))]
pub async fn export_audit(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    query: Result<Query<AuditExportQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let op = expect_operator(caller)?;
    let Query(q) = query?;
    let format = match q.format.as_deref().unwrap_or("json") {
        "json" => None,
        "jsonl" => Some(StreamFormat::JsonLines),
        "csv" => Some(StreamFormat::Csv),
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidRequest,
                "format must be json, jsonl or csv",
            ))
        }
    };
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
        actor: q.actor,
        path_prefix: q.path_prefix,
        cursor: q.cursor,
        after_seq: q.after_seq,
        limit: q.limit,
    };
    let Some(format) = format else {
        let page = audit_log::export_page(&app, op, query).await?;
        return Ok(Json(AuditEventList {
            events: page.events,
            next_cursor: page.next_cursor,
        })
        .into_response());
    };
    let export = audit_log::prepare_export(&app, op, query).await?;
    let body = audit_export::stream(app, export, format, Box::new(|_| true)).await?;
    Ok(([(header::CONTENT_TYPE, format.content_type())], body).into_response())
}

#[utoipa::path(get, path = "/v1/audit/public-keys", tag = "audit",
    responses((status = 200, body = PublicKeyList, description = "the Ed25519 keys that sign the tenant's checkpoints, oldest first")),
    security(("operator" = [])))]
pub async fn public_keys(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
) -> ApiResult<Json<PublicKeyList>> {
    Ok(Json(
        checkpoints::public_keys(&app, expect_operator(caller)?).await?,
    ))
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
