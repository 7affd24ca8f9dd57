//! The expiry sweeper: every `[tokens] expiry_sweep_seconds`, each tenant's tokens that ran out
//! get their `token.expired` event. Every replica runs it; the store claims each token in the
//! transaction that appends its event (`AuditStore::record_token_expiries`), so an expiry is
//! recorded exactly once however many replicas race.

use std::sync::Arc;

use super::App;
use crate::audit::now_micros;

/// Tokens claimed per transaction: keeps one tenant's backlog (say after an upgrade, when
/// every token that ever expired is recorded late) from holding its chain lock for long.
const BATCH: i64 = 500;

/// Runs the sweeper until it is aborted (with the server).
pub fn spawn(app: Arc<App>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(app.policy.token_expiry_sweep);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            sweep(&app).await;
        }
    })
}

/// One pass: every tenant, batch after batch until none is full. Returns how many tokens were
/// claimed. Errors are logged per tenant and never stop the pass; an unrecorded expiry is
/// picked up by the next one.
pub async fn sweep(app: &App) -> usize {
    let tenants = match app.store.list_tenant_ids().await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "token expiry: cannot list tenants");
            return 0;
        }
    };
    let mut claimed = 0;
    for tenant in tenants {
        loop {
            match app
                .store
                .record_token_expiries(tenant, now_micros(), BATCH)
                .await
            {
                Ok(n) => {
                    claimed += n;
                    if (n as i64) < BATCH {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(%tenant, error = %e, "token expiry: cannot record");
                    break;
                }
            }
        }
    }
    claimed
}
