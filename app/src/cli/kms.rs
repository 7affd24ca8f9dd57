//! `kms status | rotate | rewrap | retire-version`: KEK maintenance on the control-plane host.
//!
//! Like `tenant create`, these open the database and the KMS directly with the server's config.
//! `rewrap`, `rotate` and `retire-version` build their KMS client with
//! `kms.admin_credentials_file`: with Cloud KMS the running server holds only encrypt rights,
//! and these are the only commands that ever need to decrypt or manage key versions.

use agent_secret_core::ids::TenantId;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use super::failure::{Failure, EXIT_FAILED, EXIT_USAGE};
use super::output::Output;
use super::KmsCommand;
use agent_secret_control_plane::audit::Actor;
use agent_secret_control_plane::bootstrap;
use agent_secret_control_plane::config::{Config, KmsRole};
use agent_secret_control_plane::service::kms::{self, KeyAdminError, TenantKeyStatus};
use agent_secret_control_plane::service::App;

pub async fn run(cmd: KmsCommand, out: Output) -> Result<(), Failure> {
    match cmd {
        KmsCommand::Status { config, tenant } => {
            let (_, app) = open(config.config.as_deref(), KmsRole::Service).await?;
            let mut statuses = Vec::new();
            let mut failed = Vec::new();
            for tenant in tenants(&app, tenant.as_deref()).await? {
                match kms::status(&app, tenant).await {
                    Ok(status) => statuses.push(status),
                    // One unreachable key must not hide every other tenant's status.
                    Err(e) => {
                        out.note(&format!("tenant {tenant}: {}: {e}", e.code()));
                        failed.push(tenant);
                    }
                }
            }
            if let Some(first) = failed.first() {
                return Err(Failure::new(
                    "status_incomplete",
                    format!(
                        "{} tenant(s) could not be read, first {first}",
                        failed.len()
                    ),
                    EXIT_FAILED,
                ));
            }
            let doc = json!({ "tenants": statuses });
            out.emit(&doc, |w| {
                for status in &statuses {
                    write_status(w, status)?;
                }
                Ok(())
            })
        }
        KmsCommand::Rotate { config, tenant } => {
            let (_, app) = open(config.config.as_deref(), KmsRole::Admin).await?;
            let tenant = parse_tenant(&tenant)?;
            let key = kms::rotate(&app, tenant, &cli_actor())
                .await
                .map_err(failure)?;
            out.note(&format!(
                "tenant {tenant}: {} primary version is now {}",
                key.key_name, key.key_version
            ));
            let doc = json!({ "tenant_id": tenant, "key_name": key.key_name, "primary_version": key.key_version });
            out.emit(&doc, |w| writeln!(w, "{}", key.key_version))
        }
        KmsCommand::Rewrap {
            config,
            tenant,
            batch,
        } => {
            if batch < 1 {
                return Err(Failure::invalid_argument("--batch must be at least 1"));
            }
            let (_, app) = open(config.config.as_deref(), KmsRole::Admin).await?;
            let mut results = Vec::new();
            let mut failed = 0;
            for tenant in tenants(&app, tenant.as_deref()).await? {
                let (report, remaining) = match rewrap_tenant(&app, tenant, batch).await {
                    Ok(done) => done,
                    // Carry on with the other tenants; the run still ends as a failure.
                    Err(e) => {
                        out.note(&format!("tenant {tenant}: {}: {e}", e.code()));
                        failed += 1;
                        results.push(json!({ "tenant_id": tenant, "error": e.code() }));
                        continue;
                    }
                };
                out.note(&format!(
                    "tenant {tenant}: {} re-wrapped, {} skipped (changed meanwhile), {} failed; \
                     {remaining} not on the primary version",
                    report.rewrapped, report.skipped, report.failed
                ));
                failed += report.failed;
                results.push(json!({
                    "tenant_id": tenant,
                    "rewrapped": report.rewrapped,
                    "skipped": report.skipped,
                    "failed": report.failed,
                    "remaining": remaining,
                }));
            }
            if failed > 0 {
                return Err(Failure::new(
                    "rewrap_incomplete",
                    format!(
                        "{failed} DEK(s) or tenant(s) could not be re-wrapped (see above and \
                         the log); rerun after fixing the cause"
                    ),
                    EXIT_FAILED,
                ));
            }
            out.emit(&json!({ "tenants": results }), |_| Ok(()))
        }
        KmsCommand::RetireVersion {
            config,
            tenant,
            version,
        } => {
            let (config, app) = open(config.config.as_deref(), KmsRole::Admin).await?;
            let tenant = parse_tenant(&tenant)?;
            let grace = config.kms.retire_grace();
            kms::retire_version(&app, tenant, &version, grace, &cli_actor())
                .await
                .map_err(failure)?;
            out.note(&format!("tenant {tenant}: key version {version} disabled"));
            let doc = json!({ "tenant_id": tenant, "retired_version": version });
            out.emit(&doc, |_| Ok(()))
        }
    }
}

async fn open(
    config_file: Option<&std::path::Path>,
    role: KmsRole,
) -> Result<(Config, App), Failure> {
    let config = Config::load_from_process_env(config_file)?;
    let kms = bootstrap::open_kms(&config, role).await?;
    let app = bootstrap::app_with_kms(&config, kms).await?;
    Ok((config, app))
}

/// One tenant's rewrap with a progress bar; the report and the DEKs still not on primary.
async fn rewrap_tenant(
    app: &App,
    tenant: TenantId,
    batch: i64,
) -> Result<(kms::RewrapReport, i64), KeyAdminError> {
    let todo = kms::status(app, tenant).await?.deks_not_on_primary;
    let bar = progress_bar(todo, &format!("tenant {tenant}"));
    let report = kms::rewrap(app, tenant, batch, &cli_actor(), &|done| {
        bar.set_position(done)
    })
    .await;
    bar.finish_and_clear();
    let report = report?;
    let remaining = kms::status(app, tenant).await?.deks_not_on_primary;
    Ok((report, remaining))
}

async fn tenants(app: &App, only: Option<&str>) -> Result<Vec<TenantId>, Failure> {
    match only {
        Some(id) => Ok(vec![parse_tenant(id)?]),
        None => app
            .store
            .list_tenant_ids()
            .await
            .map_err(|e| failure(KeyAdminError::Store(e))),
    }
}

fn parse_tenant(id: &str) -> Result<TenantId, Failure> {
    id.parse().map_err(|_| {
        Failure::new(
            "invalid_tenant",
            format!("{id:?} is not a tenant id"),
            EXIT_USAGE,
        )
    })
}

/// The host operator running the command, as the audit log records it: `cli:<login>`.
fn cli_actor() -> Actor {
    Actor(format!("cli:{}", login()))
}

/// The login of whoever runs the command (`unknown` when the environment does not say).
pub(super) fn login() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty() && u.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or_else(|| "unknown".into())
}

fn failure(e: KeyAdminError) -> Failure {
    let exit = match e {
        KeyAdminError::Primary { .. }
        | KeyAdminError::InUse { .. }
        | KeyAdminError::TooSoon { .. } => EXIT_USAGE,
        _ => EXIT_FAILED,
    };
    Failure::new(e.code(), e.to_string(), exit)
}

/// A bar on a terminal's stderr; hidden (and free) when stderr is not a terminal.
fn progress_bar(total: i64, prefix: &str) -> ProgressBar {
    let bar = ProgressBar::new(u64::try_from(total).unwrap_or(0));
    if let Ok(style) =
        ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} DEKs ({eta} left)")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(prefix.to_owned());
    bar
}

fn write_status(w: &mut dyn std::io::Write, status: &TenantKeyStatus) -> std::io::Result<()> {
    writeln!(
        w,
        "tenant {}  key {}  primary {}{}",
        status.tenant_id,
        status.key_name,
        status.primary_version,
        if status.rotates_itself {
            "  (rotated by the KMS)"
        } else {
            ""
        }
    )?;
    for v in &status.versions {
        writeln!(
            w,
            "  version {:>6}  {:>8} DEK(s){}",
            v.key_version,
            v.deks,
            if v.primary { "  primary" } else { "" }
        )?;
    }
    writeln!(w, "  not on primary: {}", status.deks_not_on_primary)
}
