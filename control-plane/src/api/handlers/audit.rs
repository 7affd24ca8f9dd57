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

use crate::api::error::{ApiError, ApiResult};
use crate::api::extract::Caller;
use crate::audit::ChainReport;
use crate::service::audit_log::{AuditEventView, AuditQuery};
use crate::service::auth::expect_operator;
use crate::service::{audit_log, App};

pub(super) fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/audit", get(export_audit))
        .route("/audit/verify", get(verify_audit))
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
            crate::api::audit_csv::to_csv(&events)?,
        )
            .into_response(),
        "jsonl" => (
            [(header::CONTENT_TYPE, "application/x-ndjson")],
            crate::api::audit_csv::to_jsonl(&events)?,
        )
            .into_response(),
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
