//! Reading the audit log: filtered export and chain verification.

use agent_secret_core::api::{ErrorCode, Role};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::auth::OperatorPrincipal;
use super::{App, ServiceError, ServiceResult};
use crate::audit::{AuditEvent, AuditEventType, ChainReport, ChainVerifier};
use crate::store::AuditFilter;

/// Events read per store round trip while exporting or verifying.
const PAGE: i64 = 1000;
/// Most events one export returns; callers page with `after_seq`.
pub const MAX_EXPORT: i64 = 100_000;

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
    pub after_seq: Option<i64>,
    pub limit: Option<i64>,
}

pub async fn export(
    app: &App,
    caller: OperatorPrincipal,
    query: AuditQuery,
) -> ServiceResult<Vec<AuditEventView>> {
    caller.require(&[Role::Admin, Role::Auditor])?;
    let types = query
        .types
        .iter()
        .map(|t| {
            t.parse::<AuditEventType>()
                .map_err(|e| ServiceError::invalid(ErrorCode::InvalidRequest, e.to_string()))
        })
        .collect::<ServiceResult<Vec<_>>>()?;
    let limit = query.limit.unwrap_or(MAX_EXPORT).clamp(1, MAX_EXPORT);
    let mut out = Vec::new();
    let mut after = query.after_seq;
    loop {
        let filter = AuditFilter {
            since: query.since,
            until: query.until,
            types: types.clone(),
            after_seq: after,
            limit: Some(PAGE.min(limit - out.len() as i64)),
        };
        let page = app.store.list_audit(caller.tenant, &filter).await?;
        let done = (page.len() as i64) < filter.limit.unwrap_or(PAGE);
        after = page.last().map(|e| e.seq).or(after);
        out.extend(page.iter().map(AuditEventView::from));
        if done || out.len() as i64 >= limit {
            return Ok(out);
        }
    }
}

/// Walks the caller's tenant chain from the first event to the recorded head.
pub async fn verify(app: &App, caller: OperatorPrincipal) -> ServiceResult<ChainReport> {
    caller.require(&[Role::Admin, Role::Auditor])?;
    let head = app.store.audit_head(caller.tenant).await?;
    let mut verifier = ChainVerifier::default();
    let mut after = None;
    loop {
        let filter = AuditFilter {
            after_seq: after,
            limit: Some(PAGE),
            ..AuditFilter::default()
        };
        let page = app.store.list_audit(caller.tenant, &filter).await?;
        page.iter().for_each(|e| verifier.push(e));
        match page.last() {
            Some(last) if page.len() as i64 == PAGE => after = Some(last.seq),
            _ => break,
        }
    }
    Ok(verifier.finish(head))
}
