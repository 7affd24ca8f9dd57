//! `backup` and `restore`, run on the control-plane host with its config
//! (`control_plane::backup` does the work; docs/operations.md has the procedures).

use std::path::Path;
use std::str::FromStr;

use agent_secret_control_plane::backup::{
    self, export_keys, import_keys, restore, verify_restored, BackupError, BackupOptions,
    RestoreOptions, Source,
};
use agent_secret_control_plane::bootstrap;
use agent_secret_control_plane::config::{parse_recipients, Config};
use serde_json::json;

use super::failure::{Failure, EXIT_FAILED, EXIT_USAGE};
use super::output::Output;
use super::{BackupArgs, RestoreArgs};

const KEYS_WARNING: &str = "\
WARNING: this file holds the pepper and the keys that decrypt every secret in every database
backup. Anyone with it, one database backup and the age identity can read all secrets.
Store it apart from the database backups (another system, another custodian), and never
beside the age identity that opens it.";

fn failure(e: BackupError) -> Failure {
    let exit = match e {
        BackupError::Config(_) | BackupError::NeedsIdentity => EXIT_USAGE,
        _ => EXIT_FAILED,
    };
    Failure::new(e.code(), e.to_string(), exit)
}

fn recipients(config: &Config, given: &[String]) -> Result<Vec<age::x25519::Recipient>, Failure> {
    if given.is_empty() {
        return Ok(config.backup.age_recipients()?);
    }
    Ok(parse_recipients("--recipient", given)?)
}

/// `backup`: one backup now (or, with `--keys`, the key export).
pub async fn run(args: &BackupArgs, out: Output) -> Result<(), Failure> {
    let config = Config::load_from_process_env(args.config.config.as_deref())?;
    let recipients = recipients(&config, &args.recipients)?;
    if args.keys {
        let Some(output) = &args.output else {
            return Err(Failure::invalid_argument(
                "backup --keys needs --output FILE (a new file)",
            ));
        };
        let export = export_keys(&config, &recipients, output).map_err(failure)?;
        eprintln!("{KEYS_WARNING}");
        return out.emit(&export, |w| {
            writeln!(
                w,
                "wrote {} ({}), encrypted to {} age recipient(s)",
                export.path.display(),
                export.entries.join(", "),
                recipients.len()
            )
        });
    }
    let dir = args
        .output_dir
        .clone()
        .or_else(|| config.backup.directory.clone())
        .ok_or_else(|| {
            Failure::invalid_argument(
                "no destination: pass --output-dir DIR or set [backup] directory",
            )
        })?;
    let source = Source::from_config(&config).map_err(failure)?;
    let pepper = config.pepper()?;
    let options = BackupOptions {
        recipients: &recipients,
        pepper: &pepper,
        now: chrono::Utc::now(),
    };
    let report = backup::create(&source, &dir, &options)
        .await
        .map_err(failure)?;
    if !report.encrypted {
        out.note(
            "note: this backup is not encrypted (no [backup] recipients): it holds ciphertext \
             and metadata (paths, names, the audit log); keep it as private as the database",
        );
    }
    out.emit(&report, |w| {
        let rows: i64 = report.manifest.tables.iter().map(|t| t.rows).sum();
        writeln!(
            w,
            "wrote {} ({} bytes, {} rows in {} tables, schema {}){}\nSHA-256 {}",
            report.path.display(),
            report.bytes,
            rows,
            report.manifest.tables.len(),
            report.manifest.schema_version,
            if report.encrypted { ", encrypted" } else { "" },
            report.sha256
        )
    })
}

fn identities(file: Option<&Path>) -> Result<Vec<age::x25519::Identity>, Failure> {
    let Some(file) = file else {
        return Ok(Vec::new());
    };
    let text = agent_secret_core::secret_file::read(file)
        .map_err(|e| Failure::new("invalid_identity", format!("--identity: {e}"), EXIT_USAGE))?;
    let found: Vec<age::x25519::Identity> = text
        .expose()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(age::x25519::Identity::from_str)
        .collect::<Result<_, _>>()
        .map_err(|_| {
            Failure::new(
                "invalid_identity",
                format!(
                    "{}: expected age X25519 identities (AGE-SECRET-KEY-1...), one per line",
                    file.display()
                ),
                EXIT_USAGE,
            )
        })?;
    if found.is_empty() {
        return Err(Failure::new(
            "invalid_identity",
            format!("{} holds no identity", file.display()),
            EXIT_USAGE,
        ));
    }
    Ok(found)
}

/// `restore FILE`: into the configured database, then every check.
pub async fn restore_file(args: &RestoreArgs, out: Output) -> Result<(), Failure> {
    let config = Config::load_from_process_env(args.config.config.as_deref())?;
    let identities = identities(args.identity.as_deref())?;
    let target = Source::from_config(&config).map_err(failure)?;
    let pepper = config.pepper()?;
    let options = RestoreOptions {
        identities: &identities,
        force: args.force,
        pepper: &pepper,
    };
    let restored = restore(&args.file, &target, &options)
        .await
        .map_err(failure)?;
    out.note(&format!(
        "restored a {} backup of {} (schema {}); rows and digests match its manifest",
        restored.manifest.backend, restored.manifest.created_at, restored.manifest.schema_version
    ));
    // The service's own view: audit chains and decryption with today's keyring.
    let app = bootstrap::open_app(&config).await?;
    let report = verify_restored(&app, &target, &restored.manifest)
        .await
        .map_err(failure)?;
    let document = json!({
        "restored": args.file,
        "manifest": restored.manifest,
        "tenants": report.tenants,
    });
    out.emit(&document, |w| {
        for t in &report.tenants {
            writeln!(
                w,
                "tenant {}: audit chain intact ({} events); {}",
                t.tenant_id,
                t.audit_events,
                match &t.sample_secret {
                    Some(s) => format!("{s} decrypts with the current keyring"),
                    None => "no secret to sample".into(),
                }
            )?;
        }
        writeln!(w, "restore verified")
    })
}

/// `backup-keygen`: a new age identity for encrypting backups, in a new 0600 file; prints the
/// recipient to put in `[backup] recipients`. Keep the identity off the control-plane host.
pub fn keygen(output: &Path, out: Output) -> Result<(), Failure> {
    use age::secrecy::ExposeSecret;

    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let secret = identity.to_string();
    let text = zeroize::Zeroizing::new(format!(
        "# created: {}\n# public key: {recipient}\n{}\n",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        secret.expose_secret()
    ));
    bootstrap::write_new_secret_file(output, text.as_bytes()).map_err(|e| {
        Failure::failed(
            "output_failed",
            format!("cannot create {}: {e}", output.display()),
        )
    })?;
    out.emit(
        &json!({ "identity_file": output, "recipient": recipient }),
        |w| {
            writeln!(
                w,
                "wrote the identity to {} (mode 0600): keep it off the control-plane host\n\
                 recipient (for [backup] recipients or --recipient): {recipient}",
                output.display()
            )
        },
    )
}

/// `restore-keys FILE`: a `backup --keys` export back into files (new, mode 0600).
pub fn restore_keys(
    file: &Path,
    identity: &Path,
    output_dir: &Path,
    out: Output,
) -> Result<(), Failure> {
    let identities = identities(Some(identity))?;
    let written = import_keys(file, &identities, output_dir).map_err(failure)?;
    out.emit(&json!({ "directory": output_dir, "files": written }), |w| {
        writeln!(
            w,
            "wrote {} into {} (mode 0600); move each to the path the config names",
            written.join(", "),
            output_dir.display()
        )
    })
}
