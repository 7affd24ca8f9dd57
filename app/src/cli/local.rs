//! Installation commands that open the store directly instead of calling the API: `serve`,
//! `init`, `migrate` and `tenant create`.
//!
//! Creating a tenant is an installation-level act (like `vault operator init`): it needs the
//! database, the keyring and the pepper, so it runs on the control-plane host with its config.
//! A new admin token is shown exactly once, on stdout or in a new 0600 file.

use std::path::Path;
use std::sync::Arc;

use agent_secret_core::secret::SecretString;
use serde_json::json;

use super::failure::{error_chain, Failure, EXIT_FAILED, EXIT_USAGE};
use super::logging;
use super::output::Output;
use super::{InitArgs, ServeArgs};
use agent_secret_control_plane::bootstrap::{self, KeyFile};
use agent_secret_control_plane::config::{Config, KmsBackend, KmsRole};
use agent_secret_control_plane::service::tenants::{create_tenant, CreatedTenant};
use agent_secret_control_plane::service::{App, ServiceError};
use agent_secret_core::kms::Kms;

/// `serve`: open the store, bind `listen`, serve HTTPS until SIGINT or SIGTERM.
pub async fn serve(args: &ServeArgs, out: Output) -> Result<(), Failure> {
    let config = load(args.config.config.as_deref())?;
    logging::init_server(&config.log);
    let tls = server_tls(&config, args.dev_tls.as_deref(), out)?;
    if let Some(admin) = &config.kms.admin_credentials_file {
        // The point of separate KMS identities is that the server cannot decrypt.
        tracing::warn!(
            path = %admin.display(),
            "kms.admin_credentials_file is set in the server's config: the server never uses \
             it; keep the decrypt-capable key away from the server (run `kms rewrap` as a \
             separate job with its own config)"
        );
    }
    let app = bootstrap::open_app(&config).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| Failure::failed("listen_failed", format!("listen {}: {e}", config.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Failure::failed("listen_failed", format!("listen {}: {e}", config.listen)))?;
    let url = format!("https://{addr}");
    out.note(&format!(
        "agent-secret-store control plane listening on {url}"
    ));
    // The one JSON document of `serve --json`: where to reach it (useful with port 0).
    out.emit(&json!({ "listen": url }), |_| Ok(()))?;
    tracing::info!(%addr, "listening");
    let app = Arc::new(app);
    let rotation = agent_secret_control_plane::rotation::spawn(
        app.clone(),
        bootstrap::rotation_schedule(&config),
    );
    // docs/operations.md "Backups".
    let backups = agent_secret_control_plane::backup::schedule::start(&config, &app)
        .map_err(|e| Failure::new(e.code(), e.to_string(), EXIT_USAGE))?;
    let served =
        agent_secret_control_plane::server::serve(listener, Arc::new(tls), app, shutdown_signal())
            .await;
    rotation.abort();
    if let Some(backups) = backups {
        backups.abort();
    }
    served.map_err(|e| Failure::failed("serve_failed", e.to_string()))
}

/// The configured [tls] pair, or with `--dev-tls DIR` a minted dev CA (fingerprint printed).
fn server_tls(
    config: &Config,
    dev_tls: Option<&Path>,
    out: Output,
) -> Result<rustls::ServerConfig, Failure> {
    let invalid = |e: &dyn std::error::Error| {
        Failure::new(
            "invalid_config",
            format!("[tls]: {}", error_chain(e)),
            EXIT_USAGE,
        )
    };
    match (&config.tls.cert_file, &config.tls.key_file, dev_tls) {
        (Some(cert), Some(key), _) => {
            agent_secret_control_plane::tls::server_config_from_files(cert, key)
                .map_err(|e| invalid(&e))
        }
        (None, None, Some(dir)) => {
            let minted =
                agent_secret_control_plane::tls::self_signed(dir).map_err(|e| invalid(&e))?;
            out.note(&format!(
                "development TLS: trust {} (CA SHA-256 fingerprint {})",
                minted.cert_path.display(),
                minted.fingerprint_sha256
            ));
            Ok(minted.config)
        }
        _ => Err(Failure::new(
            "invalid_config",
            "serve needs tls.cert_file and tls.key_file (AGENT_SECRET_TLS_CERT_FILE, \
             AGENT_SECRET_TLS_KEY_FILE), or --dev-tls DIR for development; the API is served \
             over TLS only",
            EXIT_USAGE,
        )),
    }
}

/// `init`: key files, migrations, first tenant. Refuses to run on an initialised keyring and
/// never overwrites an existing key file.
pub async fn init(args: &InitArgs, out: Output) -> Result<(), Failure> {
    let config = load(args.config.config.as_deref())?;
    let token_file = args.admin_token_file.as_deref();
    refuse_existing(token_file)?;
    let mut key_files = vec![bootstrap::ensure_pepper_file(&config)?];
    if config.kms.backend == KmsBackend::Local {
        key_files.push(bootstrap::ensure_master_key_file(&config)?);
    }
    for file in key_files {
        match file {
            KeyFile::Created(path) => out.note(&format!("created {} (mode 0600)", path.display())),
            KeyFile::Existing(path) => out.note(&format!("using existing {}", path.display())),
            KeyFile::FromEnv(var) => out.note(&format!("using {var} from the environment")),
        }
    }
    let kms: Arc<dyn Kms> = match config.kms.backend {
        KmsBackend::Local => {
            let kms = bootstrap::open_local_kms(&config)?;
            let tenants = kms.tenants().len();
            if tenants > 0 {
                return Err(Failure::new(
                    "already_initialized",
                    format!(
                        "the keyring {} already holds {tenants} tenant key(s); add tenants \
                         with `agent-secret-store tenant create NAME`",
                        config.kms.keyring.display()
                    ),
                    EXIT_FAILED,
                ));
            }
            Arc::new(kms)
        }
        KmsBackend::Gcp => bootstrap::open_kms(&config, KmsRole::Service).await?,
    };
    let app = bootstrap::app_with_kms(&config, kms).await?;
    out.note(&format!("database {} migrated", config.database.url));
    let created = new_tenant(&app, &args.tenant_name).await?;
    deliver(created, &args.tenant_name, token_file, out)
}

/// `migrate`: apply migrations (and grants on PostgreSQL with an owner URL).
pub async fn migrate(config_file: Option<&Path>, out: Output) -> Result<(), Failure> {
    let config = load(config_file)?;
    bootstrap::open_database(&config).await?;
    let database = config
        .database
        .owner_url
        .as_ref()
        .unwrap_or(&config.database.url);
    out.note(&format!("database {database} is up to date"));
    out.emit(
        &json!({ "migrated": true, "database": database.redacted() }),
        |_| Ok(()),
    )
}

/// `tenant create NAME`: a new tenant with its own KEK and admin operator.
pub async fn tenant_create(
    name: &str,
    config_file: Option<&Path>,
    token_file: Option<&Path>,
    out: Output,
) -> Result<(), Failure> {
    let config = load(config_file)?;
    refuse_existing(token_file)?;
    let app = bootstrap::open_app(&config).await?;
    let created = new_tenant(&app, name).await?;
    deliver(created, name, token_file, out)
}

fn load(file: Option<&Path>) -> Result<Config, Failure> {
    Ok(Config::load_from_process_env(file)?)
}

async fn new_tenant(app: &App, name: &str) -> Result<CreatedTenant, Failure> {
    create_tenant(app, name)
        .await
        .map_err(|e| service_failure(&e))
}

/// The service's own code, with the whole cause chain: this operator is on the host anyway.
fn service_failure(e: &ServiceError) -> Failure {
    let exit = match e {
        ServiceError::Invalid { .. } => EXIT_USAGE,
        _ => EXIT_FAILED,
    };
    Failure::new(e.code().as_str(), error_chain(e), exit)
}

/// Checked before any work, so a tenant is never created whose token cannot be delivered.
fn refuse_existing(token_file: Option<&Path>) -> Result<(), Failure> {
    match token_file {
        Some(path) if path.exists() => Err(Failure::invalid_argument(format!(
            "--admin-token-file {}: the file exists; refusing to overwrite it",
            path.display()
        ))),
        _ => Ok(()),
    }
}

/// Shows the admin token once: in a new 0600 file if asked, else on stdout.
fn deliver(
    created: CreatedTenant,
    name: &str,
    token_file: Option<&Path>,
    out: Output,
) -> Result<(), Failure> {
    let tenant_id = created.tenant_id.to_string();
    out.note(&format!("tenant {name:?} created: {tenant_id}"));
    if let Some(path) = token_file {
        let contents = SecretString::new(format!("{}\n", created.admin_token.expose()));
        match bootstrap::write_new_secret_file(path, contents.expose().as_bytes()) {
            Ok(()) => {
                out.note(&format!(
                    "admin token written to {} (mode 0600)",
                    path.display()
                ));
                let doc = json!({ "tenant_id": tenant_id, "admin_token_file": path });
                return out.emit(&doc, |_| Ok(()));
            }
            // The tenant exists now: losing its only admin token would be worse than showing it.
            Err(e) => out.note(&format!(
                "cannot write {} ({e}); printing the admin token instead",
                path.display()
            )),
        }
    }
    out.note("admin token below: it is shown only once; store it now");
    let token = created.admin_token.expose();
    let doc = json!({ "tenant_id": tenant_id, "admin_token": token });
    out.emit(&doc, |w| writeln!(w, "{token}"))
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down");
}
