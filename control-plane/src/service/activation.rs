//! The activation task: every `[approvals] activation_interval_seconds`, each tenant's pending
//! approval requests are evaluated, so a token whose time lock ran out turns active (and an
//! expired request is denied) even if nobody resolves or decides. Every replica runs it;
//! settling is once (see `approvals::evaluate`).

use std::sync::Arc;

use super::approvals::{evaluate, MAX_LISTED};
use super::App;

/// Runs the task until it is aborted (with the server).
pub fn spawn(app: Arc<App>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(app.policy.approvals.activation_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            activate_due(&app).await;
        }
    })
}

/// One pass of the activation task. Errors are logged per request and never stop the pass.
pub async fn activate_due(app: &App) {
    let tenants = match app.store.list_tenant_ids().await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "approval activation: cannot list tenants");
            return;
        }
    };
    for tenant in tenants {
        let pending = match app.store.pending_approvals(tenant, MAX_LISTED).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(%tenant, error = %e, "approval activation: cannot list requests");
                continue;
            }
        };
        for id in pending {
            if let Err(e) = evaluate(app, tenant, id).await {
                tracing::warn!(%tenant, approval = %id, code = e.code().as_str(), error = %e,
                    "approval activation: evaluation failed");
            }
        }
    }
}
