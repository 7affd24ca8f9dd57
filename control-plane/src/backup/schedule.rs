//! The backup scheduler `serve` runs when `[backup] directory` is set.
//!
//! It backs up every `interval`, then prunes what retention allows. Its clock starts from the
//! newest backup already in the directory, so a restart neither skips a backup nor makes an
//! extra one. A failed attempt is retried sooner (at most every 5 minutes). When no backup has
//! succeeded for two intervals it writes one `alert.raised` event into every tenant's audit
//! log (so it reaches the SIEM sinks and the dashboard), once per outage; Prometheus has
//! `backup_last_success_timestamp_seconds` and `backup_failures_total` to alert on as well.
//!
//! Several replicas with the same directory: each looks at the newest file before every
//! attempt, so on shared storage they take turns; on local directories each keeps its own
//! series.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::retention::{list, prune};
use super::snapshot::{create, BackupOptions};
use super::{BackupError, Source};
use crate::audit::{Actor, AuditDraft, AuditEventType};
use crate::service::App;

/// The longest wait before a failed backup is tried again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(300);
/// An attempt may take the interval, and at least this long.
const MIN_ATTEMPT_LIMIT: Duration = Duration::from_secs(600);

/// What the scheduler needs, from `[backup]` and `[database]`.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub source: Source,
    pub directory: PathBuf,
    pub interval: Duration,
    pub retention: Duration,
    pub recipients: Vec<age::x25519::Recipient>,
}

impl Schedule {
    /// The schedule `config` asks for, or `None` without `[backup] directory`.
    pub fn from_config(config: &crate::config::Config) -> Result<Option<Schedule>, BackupError> {
        let Some(directory) = config.backup.directory.clone() else {
            return Ok(None);
        };
        Ok(Some(Schedule {
            source: Source::from_config(config)?,
            directory,
            interval: config.backup.interval(),
            retention: config.backup.retention(),
            recipients: config
                .backup
                .age_recipients()
                .map_err(|e| BackupError::Config(e.to_string()))?,
        }))
    }
}

/// Starts the scheduler `config` asks for (logging whether backups are on); `None` without
/// `[backup] directory`.
pub fn start(
    config: &crate::config::Config,
    app: &Arc<App>,
) -> Result<Option<tokio::task::JoinHandle<()>>, BackupError> {
    let Some(schedule) = Schedule::from_config(config)? else {
        tracing::warn!(
            "no [backup] directory: automatic backups are off (docs/operations.md \"Backups\")"
        );
        return Ok(None);
    };
    tracing::info!(
        directory = %schedule.directory.display(),
        interval_seconds = schedule.interval.as_secs(),
        retention_days = config.backup.retention_days,
        encrypted = !schedule.recipients.is_empty(),
        "automatic backups on"
    );
    Ok(Some(spawn(app.clone(), schedule)))
}

/// Starts the scheduler.
pub fn spawn(app: Arc<App>, schedule: Schedule) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(app, schedule))
}

async fn run(app: Arc<App>, schedule: Schedule) {
    let started = Utc::now();
    let mut last_success = newest_existing(&app, &schedule);
    let mut alerted = false;
    let interval = chrono::Duration::from_std(schedule.interval).unwrap_or(chrono::Duration::MAX);
    let mut next = last_success
        .and_then(|t| t.checked_add_signed(interval))
        .unwrap_or(started);
    loop {
        if let Ok(wait) = (next - Utc::now()).to_std() {
            tokio::time::sleep(wait).await;
        }
        let now = Utc::now();
        // Another replica writing to the same (shared) directory may have made one meanwhile.
        if let Some(newest) = newest_existing(&app, &schedule) {
            if let Some(due) = newest.checked_add_signed(interval).filter(|due| *due > now) {
                last_success = Some(newest);
                alerted = false;
                next = due;
                continue;
            }
        }
        // A hung pg_dump must not silence the schedule (and its alert): it is killed.
        let limit = schedule.interval.max(MIN_ATTEMPT_LIMIT);
        let attempt = match tokio::time::timeout(limit, once(&app, &schedule, now)).await {
            Ok(result) => result,
            Err(_) => Err(BackupError::Config(format!(
                "the backup took longer than {}s and was stopped",
                limit.as_secs()
            ))),
        };
        match attempt {
            Ok(()) => {
                last_success = Some(now);
                alerted = false;
                next = now.checked_add_signed(interval).unwrap_or(now);
            }
            Err(e) => {
                app.metrics.backup.failures.inc();
                tracing::error!(code = e.code(), error = %e, "scheduled backup failed");
                let retry = schedule.interval.min(RETRY_AFTER_FAILURE);
                next = now + chrono::Duration::from_std(retry).unwrap_or(interval);
                let since = last_success.unwrap_or(started);
                let overdue = interval.checked_mul(2).unwrap_or(chrono::Duration::MAX);
                if !alerted && now.signed_duration_since(since) >= overdue {
                    alerted = true;
                    raise(&app, last_success, &e).await;
                }
            }
        }
    }
}

/// The newest backup already in the directory, shown in the metrics at once.
fn newest_existing(app: &App, schedule: &Schedule) -> Option<DateTime<Utc>> {
    let (at, path) = list(&schedule.directory).ok()?.pop()?;
    app.metrics.backup.last_success.set(at.timestamp());
    if let Ok(meta) = std::fs::metadata(&path) {
        app.metrics
            .backup
            .last_size
            .set(i64::try_from(meta.len()).unwrap_or(i64::MAX));
    }
    Some(at)
}

async fn once(app: &App, schedule: &Schedule, now: DateTime<Utc>) -> Result<(), BackupError> {
    let options = BackupOptions {
        recipients: &schedule.recipients,
        pepper: &app.pepper,
        now,
    };
    let report = create(&schedule.source, &schedule.directory, &options).await?;
    app.metrics.backup.last_success.set(now.timestamp());
    app.metrics
        .backup
        .last_size
        .set(i64::try_from(report.bytes).unwrap_or(i64::MAX));
    tracing::info!(
        path = %report.path.display(), bytes = report.bytes, sha256 = %report.sha256,
        "backup written"
    );
    // A failed prune leaves extra files, never fewer: logged, and the backup still counts.
    match prune(&schedule.directory, now, schedule.retention) {
        Ok(deleted) => {
            for path in deleted {
                tracing::info!(path = %path.display(), "expired backup deleted");
            }
        }
        Err(e) => tracing::error!(error = %e, "backup retention could not prune"),
    }
    Ok(())
}

/// One `alert.raised` per tenant: the installation's backups concern each tenant's data.
async fn raise(app: &App, last_success: Option<DateTime<Utc>>, error: &BackupError) {
    let since = last_success.map_or_else(
        || "ever (since this server started)".to_owned(),
        |t| t.to_rfc3339(),
    );
    tracing::error!(last_success = %since, "no successful backup for two intervals");
    let tenants = match app.store.list_tenant_ids().await {
        Ok(tenants) => tenants,
        Err(e) => {
            tracing::error!(error = %e, "could not list tenants to raise the backup alert");
            return;
        }
    };
    for tenant in tenants {
        let draft = AuditDraft::new(AuditEventType::AlertRaised, Actor::system()).failed(format!(
            "backup: no successful backup since {since}; last error: {}",
            error.code()
        ));
        if let Err(e) = app.store.append_audit(tenant, draft).await {
            tracing::error!(error = %e, %tenant, "could not write the backup alert");
        }
    }
}
