//! Applying the request rate limits (`crate::limits` holds their state): the checks the
//! handlers call, what a refusal does (a metric, one `alert.raised` event per subject per
//! window, 429 `rate_limited`), and the janitor that keeps that state bounded.

use agent_secret_core::ids::TenantId;

use std::sync::Arc;
use std::time::Duration;

use super::principal::{AgentPrincipal, SidecarPrincipal};
use super::{App, RequestContext, ServiceError, ServiceResult};
use crate::audit::{Actor, AuditDraft, AuditEventType};
use crate::limits::Refused;

/// `POST /v1/tokens`, per agent key and per client address.
pub async fn admit_token_issue(
    app: &App,
    agent: AgentPrincipal,
    ctx: &RequestContext,
) -> ServiceResult<()> {
    match app.limits.rates.check_token_issue(agent.id, ctx.ip) {
        Ok(()) => Ok(()),
        Err(refused) => Err(refuse(app, Some(agent.tenant), agent.actor(), ctx, refused).await),
    }
}

/// `POST /v1/sidecar/resolve`, per sidecar key and per client address of the sidecar.
pub async fn admit_resolve(
    app: &App,
    sidecar: SidecarPrincipal,
    ctx: &RequestContext,
) -> ServiceResult<()> {
    match app.limits.rates.check_resolve(sidecar.id, ctx.ip) {
        Ok(()) => Ok(()),
        Err(refused) => Err(refuse(app, Some(sidecar.tenant), sidecar.actor(), ctx, refused).await),
    }
}

/// `/mcp`, per agent: every JSON-RPC request, whichever of the agent's credentials it carries.
pub async fn admit_mcp(
    app: &App,
    agent: AgentPrincipal,
    ctx: &RequestContext,
) -> ServiceResult<()> {
    match app.limits.rates.check_mcp(agent.id) {
        Ok(()) => Ok(()),
        Err(refused) => Err(refuse(app, Some(agent.tenant), agent.actor(), ctx, refused).await),
    }
}

/// Counts the refusal, raises the subject's alert if it is the first in its window (in
/// `tenant`'s log when the caller's tenant is known, else in the server log), and returns the
/// error to answer with. The refusal stands even if the alert cannot be written.
pub(crate) async fn refuse(
    app: &App,
    tenant: Option<TenantId>,
    actor: Actor,
    ctx: &RequestContext,
    refused: Refused,
) -> ServiceError {
    let limit = refused.limit.as_str();
    app.metrics.rate_limited.with_label_values(&[limit]).inc();
    let key = format!(
        "{limit}|{}|{}",
        tenant.map(|t| t.to_string()).unwrap_or_default(),
        refused.subject
    );
    if app.limits.alerts.first(key) {
        let rate = if refused.rate.is_empty() {
            String::new()
        } else {
            format!(" ({})", refused.rate)
        };
        let reason = format!(
            "rate_limited: {limit}{rate} tripped by {}; further refusals within {}s are counted \
             in the rate_limited_total metric only",
            refused.subject,
            app.limits.alerts.window().as_secs().max(1)
        );
        tracing::warn!(limit, subject = %refused.subject, "rate limit tripped");
        if let Some(tenant) = tenant {
            let draft = AuditDraft::new(AuditEventType::AlertRaised, actor)
                .client(ctx.ip_string(), ctx.user_agent.clone())
                .failed(reason);
            if let Err(e) = app.store.append_audit(tenant, draft).await {
                tracing::error!(error = %e, "could not write the rate limit's alert.raised event");
            }
        }
    }
    let secs = refused.retry_after_secs();
    ServiceError::RateLimited {
        retry_after_secs: secs,
        message: format!("too many requests ({limit}); retry after {secs}s"),
    }
}

/// How often the janitor flushes finished `auth.failed` bursts.
const JANITOR_TICK: Duration = Duration::from_secs(1);
/// Every this many ticks it also forgets idle limiter keys, expired penalties and windows.
const PRUNE_EVERY_TICKS: u32 = 30;

/// Background upkeep until aborted: writes the aggregated `auth.failed` event of each burst
/// whose window has closed, and keeps the keyed state bounded by recently active subjects.
pub async fn janitor(app: Arc<App>) {
    let mut tick = tokio::time::interval(JANITOR_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = 0u32;
    loop {
        tick.tick().await;
        app.limits
            .auth_failures
            .flush(app.store.as_ref(), false)
            .await;
        ticks = ticks.wrapping_add(1);
        if ticks.is_multiple_of(PRUNE_EVERY_TICKS) {
            app.limits.rates.prune();
            app.limits.auth_failures.prune();
            app.limits.alerts.prune();
        }
    }
}
