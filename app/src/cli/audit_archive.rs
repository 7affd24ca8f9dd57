//! `audit archive`: audit retention, run on the control-plane host as the database's owner
//! (`control_plane::service::audit_archive` does the work; docs/operations.md "Audit
//! retention" is the procedure around it).

use std::fs::OpenOptions;
use std::io::BufWriter;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use agent_secret_control_plane::audit::Actor;
use agent_secret_control_plane::bootstrap;
use agent_secret_control_plane::config::Config;
use agent_secret_control_plane::service::audit_archive::{archive, ArchiveError};
use agent_secret_core::ids::TenantId;
use chrono::{DateTime, Utc};

use super::failure::{Failure, EXIT_FAILED, EXIT_USAGE};
use super::output::Output;

pub async fn run(
    config_file: Option<&Path>,
    tenant: &str,
    before: &str,
    output: &Path,
    out: Output,
) -> Result<(), Failure> {
    let tenant: TenantId = tenant.parse().map_err(|_| {
        Failure::new(
            "invalid_tenant",
            format!("{tenant:?} is not a tenant id"),
            EXIT_USAGE,
        )
    })?;
    let before: DateTime<Utc> = DateTime::parse_from_rfc3339(before)
        .map_err(|e| {
            Failure::new(
                "invalid_time",
                format!("--before {before:?}: {e}"),
                EXIT_USAGE,
            )
        })?
        .with_timezone(&Utc);
    let config = Config::load_from_process_env(config_file)?;
    let store = bootstrap::open_owner_store(&config).await?;
    // A new file only: an archive is never written over another.
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(output)
        .map_err(|e| {
            Failure::failed(
                "output_failed",
                format!("cannot create {}: {e}", output.display()),
            )
        })?;
    let mut writer = BufWriter::new(file);
    let actor = Actor(format!("cli:{}", super::kms::login()));
    let archived = archive(store.as_ref(), tenant, before, actor, &mut writer).await;
    drop(writer);
    let report = match archived {
        Ok(Some(report)) => report,
        Ok(None) => {
            let _ = std::fs::remove_file(output);
            out.note("nothing to archive: no event before --before that every consumer has read");
            return out.emit(&serde_json::json!({ "archived": null }), |_| Ok(()));
        }
        Err(e @ (ArchiveError::Broken { .. } | ArchiveError::Write(_))) => {
            // Nothing was written to the database: an incomplete file must not pass for an
            // archive.
            let _ = std::fs::remove_file(output);
            let code = match e {
                ArchiveError::Broken { .. } => "audit_chain_broken",
                _ => "archive_failed",
            };
            return Err(Failure::new(
                code,
                format!("{e}; the database is unchanged and no archive file was kept"),
                EXIT_FAILED,
            ));
        }
        // The database refused (or the commit's outcome is unknown): the file is complete and
        // verified, so it stays; `audit verify` tells whether the events are still there.
        Err(e) => {
            return Err(Failure::new(
                "archive_failed",
                format!(
                    "{e}; {} is kept: if `ass audit verify` reports the archive, it is the only \
                     copy of those events",
                    output.display()
                ),
                EXIT_FAILED,
            ));
        }
    };
    out.emit(&report, |w| {
        writeln!(
            w,
            "archived events {} to {} ({}) of tenant {} to {}\nSHA-256 {}",
            report.first_seq,
            report.through_seq,
            report.events,
            report.tenant_id,
            output.display(),
            report.file_sha256
        )?;
        if let Some(consumer) = &report.held_back_by {
            writeln!(w, "stopped early: {consumer} has not read further yet")?;
        }
        Ok(())
    })
}
