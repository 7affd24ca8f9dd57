//! Reading the audit log: filtered export and chain verification.
//!
//! An export reads the chain a page at a time by position (keyset paging on the
//! `(tenant_id, seq)` index), so JSON Lines and CSV exports of any size stream at the memory of
//! one page, and JSON pages are linked by the id of their last event (`next_cursor`).

use agent_secret_core::api::{ErrorCode, Role};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use agent_secret_core::ids::{AuditEventId, TenantId};

use super::auth::OperatorPrincipal;
use super::{App, ServiceError, ServiceResult};
use crate::audit::{AuditEvent, AuditEventType, ChainReport, ChainVerifier};
use crate::audit_checkpoint::CheckpointVerifier;
use crate::store::AuditFilter;

/// Events read per store round trip while exporting or verifying; also the default size of
/// a JSON page.
pub const PAGE: i64 = 1000;
/// Most events one JSON page holds; JSON Lines and CSV stream any number.
pub const MAX_JSON_PAGE: i64 = 10_000;

/// One event as exported (JSON, JSON Lines and CSV share these columns).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEventView {
    pub id: String,
    pub tenant_id: String,
    pub seq: i64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub actor: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub path: Option<String>,
    pub destination_host: Option<String>,
    pub success: bool,
    pub reason: Option<String>,
    /// RFC 3339, UTC, microseconds.
    pub timestamp: String,
    pub prev_hash: String,
    pub hash: String,
}

impl From<&AuditEvent> for AuditEventView {
    fn from(e: &AuditEvent) -> Self {
        Self {
            id: e.id.to_string(),
            tenant_id: e.tenant_id.to_string(),
            seq: e.seq,
            event_type: e.draft.event_type.as_str().to_owned(),
            actor: e.draft.actor.0.clone(),
            ip: e.draft.ip.clone(),
            user_agent: e.draft.user_agent.clone(),
            path: e.draft.path.clone(),
            destination_host: e.draft.destination_host.clone(),
            success: e.draft.success,
            reason: e.draft.reason.clone(),
            timestamp: e
                .draft
                .occurred_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            prev_hash: hex::encode(e.prev_hash),
            hash: hex::encode(e.hash),
        }
    }
}

/// Query of `GET /v1/audit`.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Comma-separated list accepted at the API; parsed here.
    pub types: Vec<String>,
    pub actor: Option<String>,
    pub path_prefix: Option<String>,
    /// Events after the one with this id (the `next_cursor` of the previous page).
    pub cursor: Option<String>,
    /// Events after this chain position (the older way to page).
    pub after_seq: Option<i64>,
    pub limit: Option<i64>,
}

/// One page of a JSON export and where the next one starts (absent on the last page).
#[derive(Clone, Debug)]
pub struct AuditPage {
    pub events: Vec<AuditEventView>,
    pub next_cursor: Option<String>,
}

/// A checked export: who may read it and the store filter it runs, from its first event on.
#[derive(Clone, Debug)]
pub struct Export {
    tenant: TenantId,
    filter: AuditFilter,
    /// Events still to return (`None`: all).
    remaining: Option<i64>,
}

/// Checks the caller and the query, and turns a cursor into its chain position.
pub async fn prepare_export(
    app: &App,
    caller: OperatorPrincipal,
    query: AuditQuery,
) -> ServiceResult<Export> {
    caller.require(&[Role::Admin, Role::Auditor])?;
    let types = query
        .types
        .iter()
        .map(|t| {
            t.parse::<AuditEventType>()
                .map_err(|e| ServiceError::invalid(ErrorCode::InvalidRequest, e.to_string()))
        })
        .collect::<ServiceResult<Vec<_>>>()?;
    let mut after = query.after_seq;
    if let Some(cursor) = query.cursor.as_ref().filter(|c| !c.is_empty()) {
        let unknown = || ServiceError::invalid(ErrorCode::InvalidRequest, "unknown cursor");
        let id: AuditEventId = cursor.parse().map_err(|_| unknown())?;
        let seq = app.store.audit_event_seq(caller.tenant, id).await?;
        after = Some(seq.ok_or_else(unknown)?);
    }
    if let Some(limit) = query.limit {
        if limit < 1 {
            return Err(ServiceError::invalid(
                ErrorCode::InvalidRequest,
                "limit must be at least 1",
            ));
        }
    }
    Ok(Export {
        tenant: caller.tenant,
        filter: AuditFilter {
            since: query.since,
            until: query.until,
            types,
            after_seq: after,
            limit: None,
            actor: query.actor.filter(|a| !a.is_empty()),
            path_prefix: query.path_prefix.filter(|p| !p.is_empty()),
        },
        remaining: query.limit,
    })
}

impl Export {
    /// The next page of at most [`PAGE`] events (empty at the end), in chain order.
    pub async fn next_page(&mut self, app: &App) -> ServiceResult<Vec<AuditEvent>> {
        let want = self.remaining.map_or(PAGE, |r| r.min(PAGE));
        if want <= 0 {
            return Ok(Vec::new());
        }
        self.filter.limit = Some(want);
        let page = app.store.list_audit(self.tenant, &self.filter).await?;
        if let Some(last) = page.last() {
            self.filter.after_seq = Some(last.seq);
        }
        if let Some(r) = &mut self.remaining {
            *r -= page.len() as i64;
        }
        if (page.len() as i64) < want {
            // Short page: the end. Later calls return nothing without asking the store.
            self.remaining = Some(0);
        }
        Ok(page)
    }
}

/// One JSON page: at most `limit` events (default [`PAGE`], at most [`MAX_JSON_PAGE`]) and
/// the cursor of the next page when this one is full.
pub async fn export_page(
    app: &App,
    caller: OperatorPrincipal,
    mut query: AuditQuery,
) -> ServiceResult<AuditPage> {
    let limit = query.limit.unwrap_or(PAGE).clamp(1, MAX_JSON_PAGE);
    query.limit = Some(limit);
    let mut export = prepare_export(app, caller, query).await?;
    let mut events = Vec::new();
    loop {
        let page = export.next_page(app).await?;
        if page.is_empty() {
            break;
        }
        events.extend(page.iter().map(AuditEventView::from));
    }
    let next_cursor = (events.len() as i64 == limit)
        .then(|| events.last().map(|e| e.id.clone()))
        .flatten();
    Ok(AuditPage {
        events,
        next_cursor,
    })
}

/// Walks the caller's tenant chain from the first event to the recorded head.
pub async fn verify(app: &App, caller: OperatorPrincipal) -> ServiceResult<ChainReport> {
    caller.require(&[Role::Admin, Role::Auditor])?;
    verify_tenant(app, caller.tenant).await
}

/// [`verify`] without a caller: for the installation's own checks (a restore's verification).
pub async fn verify_tenant(app: &App, tenant: TenantId) -> ServiceResult<ChainReport> {
    let head = app.store.audit_head(tenant).await?;
    let keys = super::checkpoints::verification_keys(app, tenant).await?;
    let mut checkpoints = CheckpointVerifier::new(Some(keys));
    // After an archive the database's chain starts where the archive's marker says.
    let archived = app.store.audit_archive(tenant).await?;
    let mut verifier = match &archived {
        Some(m) => ChainVerifier::starting_at(m.through_seq + 1, m.through_hash),
        None => ChainVerifier::default(),
    };
    let mut after = archived.as_ref().map(|m| m.through_seq);
    loop {
        let filter = AuditFilter {
            after_seq: after,
            limit: Some(PAGE),
            ..AuditFilter::default()
        };
        let page = app.store.list_audit(tenant, &filter).await?;
        for e in &page {
            verifier.push(e);
            checkpoints.push(e);
        }
        match page.last() {
            Some(last) if page.len() as i64 == PAGE => after = Some(last.seq),
            _ => break,
        }
    }
    let mut report = checkpoints.apply_to(verifier.finish(head));
    report.archived_through = archived.map(|m| m.through_seq);
    Ok(report)
}
