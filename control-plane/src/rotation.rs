//! The KEK rotation scheduler: every `kms.rotation_check_interval_seconds`, each tenant's key
//! is observed and, on the local backend, rotated once its primary is older than
//! `kms.rotation_period_days`. Cloud KMS rotates its keys itself (each is created with the
//! rotation period); the scheduler then records and announces the new primary.
//!
//! Every replica runs it; the store's lease and conditional updates make each rotation and its
//! `kms.rotated` event happen once. It also refreshes the `kms_deks_not_on_primary` gauge.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use agent_secret_core::api::WatchEvent;
use agent_secret_core::ids::TenantId;
use chrono::Utc;

use crate::service::kms::{self, KeyAdminError};
use crate::service::App;

/// When and how often to rotate.
#[derive(Clone, Copy, Debug)]
pub struct RotationSchedule {
    pub period: Duration,
    pub check_interval: Duration,
}

/// Runs the scheduler until the task is aborted (dropped with the server).
pub fn spawn(app: Arc<App>, schedule: RotationSchedule) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut announced = HashMap::new();
        let mut interval = tokio::time::interval(schedule.check_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            check_all(&app, schedule.period, &mut announced).await;
        }
    })
}

/// One pass over every tenant. Errors are logged per tenant and never stop the pass: a tenant
/// whose key is unreachable must not hold up the others' rotations.
pub async fn check_all(app: &App, period: Duration, announced: &mut HashMap<TenantId, String>) {
    let tenants = match app.store.list_tenant_ids().await {
        Ok(tenants) => tenants,
        Err(e) => {
            tracing::warn!(error = %e, "rotation check: cannot list tenants");
            return;
        }
    };
    let mut not_on_primary = 0;
    for tenant in tenants {
        match check_one(app, tenant, period, announced).await {
            Ok(stale) => not_on_primary += stale,
            Err(e) => tracing::warn!(%tenant, code = e.code(), error = %e, "rotation check failed"),
        }
    }
    app.metrics.deks_not_on_primary.set(not_on_primary);
}

async fn check_one(
    app: &App,
    tenant: TenantId,
    period: Duration,
    announced: &mut HashMap<TenantId, String>,
) -> Result<i64, KeyAdminError> {
    let step = kms::rotate_if_due(app, tenant, period, Utc::now()).await?;
    if let Some(key) = &step.rotated {
        tracing::info!(%tenant, key = %key.key_name, version = %key.key_version, "KEK rotated on schedule");
    }
    // Observing just recorded the KMS's primary: no second KMS call is needed for the gauge.
    let Some(recorded) = app.store.recorded_key(tenant).await? else {
        return Ok(0);
    };
    let previous = announced.insert(tenant, recorded.primary_version.clone());
    // With a process-local event hub (SQLite), a rotation recorded by the CLI reached no
    // sidecar: announce it here. With PostgreSQL the recorder's NOTIFY already did.
    let changed = previous.is_some_and(|p| p != recorded.primary_version);
    if changed && !step.announced && app.events.is_local() {
        let event = WatchEvent::KekRotated {
            key_name: recorded.key_name.clone(),
            key_version: recorded.primary_version.clone(),
        };
        app.events.publish(tenant, event).await;
    }
    let inventory = app.store.dek_inventory(tenant).await?;
    Ok(kms::deks_not_under(
        &inventory,
        &recorded.key_name,
        &recorded.primary_version,
    ))
}
