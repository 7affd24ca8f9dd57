//! The audit page (admins and auditors): the tenant's events filtered by type, time, actor
//! and path prefix, a page at a time, the chain's verification on demand, and the filter's
//! export as CSV or JSON Lines.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::pages::{failure, nav, render, Nav};
use super::Visitor;
use crate::api::audit_export::{self, Keep, StreamFormat};
use crate::audit::AuditEventType;
use crate::service::audit_log::{self, AuditEventView, AuditQuery};
use crate::service::{App, ServiceError};

/// Events shown on one page.
const PAGE: usize = 100;
/// Events read to fill a page when actor or path filters thin them out.
const WINDOW: i64 = 2_000;

/// The filter as the form sends it (and the links carry it on).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct AuditFilter {
    #[serde(default, rename = "type")]
    event_type: String,
    #[serde(default)]
    actor: String,
    #[serde(default)]
    path: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
}

#[derive(Deserialize)]
pub struct AuditParams {
    #[serde(flatten)]
    filter: AuditFilter,
    after_seq: Option<i64>,
    #[serde(default)]
    verify: Option<String>,
    #[serde(default)]
    format: Option<String>,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    nav: Nav,
    filter: AuditFilter,
    types: Vec<&'static str>,
    query: String,
    chain: String,
    chain_ok: bool,
    rows: Vec<AuditEventView>,
    first_seq: i64,
    last_seq: i64,
    next_after: Option<i64>,
}

fn time(raw: &str, what: &str) -> Result<Option<DateTime<Utc>>, ServiceError> {
    if raw.trim().is_empty() {
        return Ok(None);
    }
    raw.trim().parse().map(Some).map_err(|_| {
        ServiceError::invalid(
            agent_secret_core::api::ErrorCode::InvalidRequest,
            format!("{what} must be an RFC 3339 time such as 2026-01-01T00:00:00Z"),
        )
    })
}

/// The store's part of the form's filter (type, time, path prefix) after `after_seq`; "actor
/// contains" is [`actor_contains`]'s.
fn query(
    filter: &AuditFilter,
    after_seq: Option<i64>,
    limit: Option<i64>,
) -> Result<AuditQuery, ServiceError> {
    Ok(AuditQuery {
        since: time(&filter.since, "since")?,
        until: time(&filter.until, "until")?,
        types: Some(filter.event_type.clone())
            .filter(|t| !t.is_empty())
            .into_iter()
            .collect(),
        path_prefix: Some(filter.path.trim().to_owned()).filter(|p| !p.is_empty()),
        after_seq,
        limit,
        ..AuditQuery::default()
    })
}

fn actor_contains(filter: &AuditFilter) -> impl Fn(&AuditEventView) -> bool + Send + Sync {
    let actor = filter.actor.trim().to_owned();
    move |e| actor.is_empty() || e.actor.contains(&actor)
}

/// The events matching `filter` after `after_seq`, at most `limit` read from the store, and
/// the position to go on from when the read was full.
async fn matching(
    app: &App,
    visitor: &Visitor,
    filter: &AuditFilter,
    after_seq: Option<i64>,
    limit: i64,
) -> Result<(Vec<AuditEventView>, Option<i64>), ServiceError> {
    let read = audit_log::export_page(
        app,
        visitor.0.human.into(),
        query(filter, after_seq, Some(limit))?,
    )
    .await?
    .events;
    let last_read = (read.len() as i64 == limit)
        .then(|| read.last().map(|e| e.seq))
        .flatten();
    let keep = actor_contains(filter);
    Ok((read.into_iter().filter(|e| keep(e)).collect(), last_read))
}

pub async fn audit(
    State(app): State<Arc<App>>,
    visitor: Visitor,
    Query(params): Query<AuditParams>,
) -> Response {
    let nav = match nav(&app, &visitor, "audit").await {
        Ok(nav) => nav,
        Err(page) => return page,
    };
    let (mut rows, last_read) =
        match matching(&app, &visitor, &params.filter, params.after_seq, WINDOW).await {
            Ok(found) => found,
            Err(e) => return super::listings::refused_or_failure(nav, e),
        };
    let next_after = if rows.len() > PAGE {
        rows.truncate(PAGE);
        rows.last().map(|e| e.seq)
    } else {
        last_read
    };
    let (chain, chain_ok) = if params.verify.is_some() {
        match audit_log::verify(&app, visitor.0.human.into()).await {
            Ok(r) if r.valid => (
                format!("Hash chain verified: {} events intact.", r.events_checked),
                true,
            ),
            Ok(r) => (
                format!(
                    "Hash chain BROKEN at event {}: {}",
                    r.first_bad_seq.unwrap_or_default(),
                    r.problem.unwrap_or_default()
                ),
                false,
            ),
            Err(e) => return failure(e),
        }
    } else {
        (
            "Verify the hash chain with ?verify=1 (walks every event).".to_owned(),
            true,
        )
    };
    let page = AuditPage {
        nav,
        query: serde_urlencoded::to_string(&params.filter).unwrap_or_default(),
        types: AuditEventType::ALL.iter().map(|t| t.as_str()).collect(),
        filter: params.filter,
        chain,
        chain_ok,
        first_seq: rows.first().map_or(0, |e| e.seq),
        last_seq: rows.last().map_or(0, |e| e.seq),
        rows,
        next_after,
    };
    render(StatusCode::OK, &page)
}

/// `GET /ui/audit/export?format=csv|jsonl&...`: every event the filter matches, streamed as a
/// download (as the API streams it).
pub async fn export(
    State(app): State<Arc<App>>,
    visitor: Visitor,
    Query(params): Query<AuditParams>,
) -> Response {
    let (format, name) = match params.format.as_deref() {
        Some("jsonl") => (StreamFormat::JsonLines, "audit.jsonl"),
        _ => (StreamFormat::Csv, "audit.csv"),
    };
    let keep: Keep = Box::new(actor_contains(&params.filter));
    let body = async {
        let export = audit_log::prepare_export(
            &app,
            visitor.0.human.into(),
            query(&params.filter, None, None)?,
        )
        .await?;
        audit_export::stream(app.clone(), export, format, keep).await
    };
    match body.await {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, format.content_type().to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{name}\""),
                ),
            ],
            body,
        )
            .into_response(),
        Err(e) => failure(e),
    }
}
