//! The `agent-secret-store` command line: one binary for the server, installation steps and
//! the operator and agent commands that call the API.
//!
//! Over 400 lines: every command's clap declaration, so all `--help` text is in one file.
//!
//! This file only declares the commands (clap derive) and dispatches them: installation commands
//! (`serve`, `init`, `migrate`, `tenant create`) open the store directly (`local`), everything
//! else calls the HTTPS API (`remote`). Credentials never come from argv, where `ps` and shell
//! history would show them: the operator token comes from `--token-file` or
//! `AGENT_SECRET_STORE_TOKEN`, the agent key from `AGENT_SECRET_AGENT_KEY`, secret values from
//! stdin or `--value-file`.

pub mod accounts;
pub mod api;
pub mod approvals;
mod audit_archive;
mod audit_export;
mod backup;
mod call;
pub mod client;
pub mod credentials;
pub mod failure;
pub mod kms;
pub mod local;
pub mod logging;
pub mod mcp;
pub mod output;
pub mod remote;
pub mod ttl;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use self::failure::Failure;
use self::output::Output;

const EXIT_STATUS_HELP: &str = "\
Output: with --json, stdout holds exactly one JSON document (nothing on failure); notes go to stderr.
Errors: `error: <code>: <message>` on stderr. Exit status: 0 success, 1 refused or failed,
2 bad usage, configuration or missing credential, 3 control plane unreachable.
Credentials: operator token from --token-file or AGENT_SECRET_STORE_TOKEN; agent key from
AGENT_SECRET_AGENT_KEY. Never pass a credential or a secret value as an argument.";

/// Agent Secret Store: keeps API credentials away from AI agents.
#[derive(Debug, Parser)]
#[command(name = "agent-secret-store", version, after_help = EXIT_STATUS_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Control-plane URL for remote commands.
    #[arg(
        long,
        global = true,
        env = "AGENT_SECRET_SERVER",
        value_name = "URL",
        default_value = "https://127.0.0.1:8200"
    )]
    pub server: String,
    /// PEM file with the CA certificate(s) the control plane's TLS certificate chains to.
    #[arg(long, global = true, env = "AGENT_SECRET_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// File holding the operator token (default: the AGENT_SECRET_STORE_TOKEN variable).
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Print exactly one JSON document on stdout; human text goes to stderr.
    #[arg(long, global = true)]
    pub json: bool,
}

/// `--config FILE` of the commands that open the store directly.
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Control-plane TOML config (see config/control-plane.toml); AGENT_SECRET_* variables
    /// override it.
    #[arg(long, short = 'c', env = "AGENT_SECRET_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run everything on this machine for development: control plane (SQLite, local KMS,
    /// dev TLS), the sidecar and a demo upstream, with demo data; prints a curl to try.
    /// State lives in ./.agent-secret-store and is reused on the next run.
    #[cfg(feature = "dev")]
    Dev(crate::dev::DevArgs),
    /// Run the control-plane HTTPS API (needs [tls] cert_file and key_file).
    Serve(ServeArgs),
    /// First-time setup: create missing pepper and master-key files, migrate the database,
    /// create the first tenant and print its admin token once.
    Init(InitArgs),
    /// Apply database migrations (through database.owner_url when set).
    Migrate(ConfigArg),
    /// Manage tenants (direct database access; run on the control-plane host).
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// KEK rotation, re-wrapping and retirement (direct database and KMS access; run on the
    /// control-plane host, with the admin KMS credentials for rewrap and retire-version).
    #[command(subcommand)]
    Kms(KmsCommand),
    /// Back up the database now into one file (manifest, compressed, optionally encrypted to
    /// age recipients); with --keys, export the pepper and keys instead (direct database
    /// access; run on the control-plane host).
    Backup(BackupArgs),
    /// Create an age identity for encrypted backups (a new 0600 file) and print its recipient
    /// for [backup] recipients. Keep the identity away from the control-plane host.
    BackupKeygen {
        /// The identity file to create.
        #[arg(long, short = 'o', value_name = "FILE")]
        output: PathBuf,
    },
    /// Unpack a `backup --keys` export into new files (mode 0600) in --output-dir.
    RestoreKeys {
        /// The key export.
        file: PathBuf,
        /// age identity file that opens it.
        #[arg(long, value_name = "FILE")]
        identity: PathBuf,
        /// Directory for the files (created 0700; existing files are never overwritten).
        #[arg(long, value_name = "DIR")]
        output_dir: PathBuf,
    },
    /// Restore a backup into an empty database, then verify it: schema, every table's rows,
    /// each tenant's audit chain, and a secret decrypting with the current keyring.
    Restore(RestoreArgs),
    /// Manage sidecars (operator token).
    #[command(subcommand)]
    Sidecar(SidecarCommand),
    /// Manage agent identities (operator token).
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Manage operators (admin operator token).
    #[command(subcommand)]
    Operator(OperatorCommand),
    /// Store secrets and read their metadata (operator token). Values are never shown.
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Issue, inspect and revoke scoped tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Export and verify the audit log (auditor operator token).
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Review and decide approval requests (operator token).
    #[command(subcommand)]
    Approval(ApprovalCommand),
    /// An MCP server over stdio offering the control plane's tools and, with --sidecar, the
    /// sidecar's http_request (agent key in AGENT_SECRET_STORE_AGENT_KEY, scoped token in
    /// AGENT_SECRET_STORE_AGENT_TOKEN).
    Mcp(mcp::McpArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Development only: when no [tls] pair is configured, mint (or reuse) a private CA and a
    /// localhost certificate in DIR, and print the CA's SHA-256 fingerprint. Clients trust
    /// DIR/ca.pem.
    #[arg(long, value_name = "DIR")]
    pub dev_tls: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Name of the first tenant.
    #[arg(long, default_value = "default", value_name = "NAME")]
    pub tenant_name: String,
    /// Write the admin token to this new file (mode 0600) instead of printing it.
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Write into DIR instead of [backup] directory.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// Encrypt to this age recipient (repeatable; default [backup] recipients).
    #[arg(long = "recipient", value_name = "AGE1...")]
    pub recipients: Vec<String>,
    /// Export the pepper, master key and keyring (never part of a database backup) to
    /// --output, encrypted to the recipients. Keep that file apart from the backups.
    #[arg(long, requires = "output")]
    pub keys: bool,
    /// With --keys: the new file to write.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// A file `backup` wrote.
    pub file: PathBuf,
    #[command(flatten)]
    pub config: ConfigArg,
    /// age identity file (AGE-SECRET-KEY-1..., mode 0600) for an encrypted backup.
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Replace a database that is not empty (stop every server using it first).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant with its own KEK and admin operator; prints the admin token once.
    Create {
        /// Tenant name (1-64 printable ASCII characters).
        name: String,
        #[command(flatten)]
        config: ConfigArg,
        /// Write the admin token to this new file (mode 0600) instead of printing it.
        #[arg(long, value_name = "FILE")]
        admin_token_file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KmsCommand {
    /// Per tenant and KEK version: how many DEKs each version wraps, and which is primary.
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this tenant (id).
        #[arg(long, value_name = "ID")]
        tenant: Option<String>,
    },
    /// Rotate a tenant's KEK now: a new primary version; old versions keep decrypting.
    Rotate {
        #[command(flatten)]
        config: ConfigArg,
        /// Tenant id.
        #[arg(long, value_name = "ID")]
        tenant: String,
    },
    /// Re-wrap every DEK not under its tenant's primary KEK version. Never decrypts a secret
    /// value; resumable and idempotent (rerun after an interruption).
    Rewrap {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this tenant (id); default all.
        #[arg(long, value_name = "ID")]
        tenant: Option<String>,
        /// DEKs per transaction.
        #[arg(long, default_value_t = 100, value_name = "N")]
        batch: i64,
    },
    /// Disable an old KEK version. Refused while it is primary or still wraps any DEK.
    RetireVersion {
        #[command(flatten)]
        config: ConfigArg,
        /// Tenant id.
        #[arg(long, value_name = "ID")]
        tenant: String,
        /// The key version to disable, as `kms status` shows it.
        #[arg(long, value_name = "VERSION")]
        version: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SidecarCommand {
    /// Register a sidecar; prints its sidecar key once.
    Create {
        /// Sidecar name, e.g. the host it runs on.
        name: String,
    },
    /// List registered sidecars.
    List,
    /// Revoke a sidecar's key at once.
    Revoke {
        /// Sidecar id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Create an agent identity; prints its agent key once.
    Create {
        /// Agent name.
        name: String,
        /// Trust tier 0-4 used by the approval policy (3 and up need one approval fewer).
        #[arg(long, value_name = "N")]
        trust_tier: Option<i32>,
        /// A scope the agent may be granted (repeatable), e.g. `secrets:read:prod/openai/*`.
        /// Without any, the agent may be granted nothing until `agent allow`.
        #[arg(long = "allow", value_name = "SCOPE")]
        allow: Vec<String>,
    },
    /// Show an agent, its trust tier and its ceiling.
    Show {
        /// Agent id.
        id: String,
    },
    /// Widen an agent's ceiling by these scopes.
    Allow {
        /// Agent id.
        id: String,
        /// Scopes, e.g. `secrets:read:prod/**`.
        #[arg(required = true, value_name = "SCOPE")]
        scopes: Vec<String>,
    },
    /// Set an agent's trust tier (0-4); its pending approval requests are re-evaluated.
    SetTier {
        /// Agent id.
        id: String,
        /// The tier.
        tier: i32,
    },
    /// Ask for scopes to join an agent's ceiling (approver or admin); another human approves.
    RequestAccess {
        /// Agent id.
        id: String,
        #[arg(required = true, value_name = "SCOPE")]
        scopes: Vec<String>,
    },
    /// Remove ceiling entries (as `agent show` lists them); tokens left outside are revoked.
    Deny {
        /// Agent id.
        id: String,
        #[arg(required = true, value_name = "SCOPE")]
        scopes: Vec<String>,
    },
    /// Replace an agent's key; the old key and all its tokens stop working now.
    RotateKey {
        /// Agent id.
        id: String,
    },
    /// Revoke an agent for good: its key and every token it holds stop working now.
    Revoke {
        /// Agent id.
        id: String,
    },
    /// List agents.
    List,
}

#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Create an operator; prints its operator token once. With `--password-file` or
    /// `--password-stdin` it also gets a password, so it can log in as a human.
    Create {
        /// Operator name (also the user name it logs in with).
        name: String,
        /// What the operator may do.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// File holding the operator's password (one line).
        #[arg(long, conflicts_with = "password_stdin")]
        password_file: Option<PathBuf>,
        /// Read the operator's password from stdin (one line).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set an operator's password (every session of theirs ends). The new password comes from
    /// `--password-file` or stdin; changing your own needs `--current-password-file`.
    Passwd {
        /// Operator id.
        id: String,
        #[arg(long)]
        password_file: Option<PathBuf>,
        #[arg(long)]
        current_password_file: Option<PathBuf>,
    },
    /// Enroll a new TOTP secret: prints the otpauth:// URL and the base32 secret once. Confirm
    /// it with `operator totp-confirm` before it is required at login.
    TotpEnroll {
        /// Operator id.
        id: String,
    },
    /// Confirm a TOTP enrollment with a first code, read from stdin.
    TotpConfirm {
        /// Operator id.
        id: String,
    },
    /// Disable an operator: no more logins, its token and sessions revoked at once.
    Disable {
        /// Operator id.
        id: String,
    },
    /// List operators, with whether each is active or revoked.
    List,
    /// Revoke an operator's token now (its next call is refused). The tenant's last active
    /// admin cannot be revoked.
    Revoke {
        /// Operator id.
        id: String,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum RoleArg {
    Admin,
    Approver,
    Auditor,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SensitivityArg {
    Standard,
    Sensitive,
    Critical,
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Store a new version of a secret. The value is read from stdin (or --value-file), one
    /// trailing newline removed; it is never accepted as an argument.
    Put {
        /// Secret path, e.g. production/openai/api_key.
        path: String,
        /// Destination host the value may be sent to (repeatable; at least one).
        #[arg(long = "allow-host", value_name = "HOST", required = true)]
        allow_hosts: Vec<String>,
        /// Sensitive and critical secrets need human approval before a token can use them.
        #[arg(long, value_enum)]
        sensitivity: Option<SensitivityArg>,
        /// Read the value from this file instead of stdin.
        #[arg(long, value_name = "FILE")]
        value_file: Option<PathBuf>,
    },
    /// Show a secret's metadata (never its value).
    GetMetadata {
        /// Secret path.
        path: String,
    },
    /// List secrets' metadata.
    List {
        /// Only paths starting with this prefix.
        #[arg(long, value_name = "PREFIX")]
        prefix: Option<String>,
    },
    /// Delete a secret (all versions).
    Delete {
        /// Secret path.
        path: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a scoped token with the agent key from AGENT_SECRET_AGENT_KEY. Scopes covering
    /// sensitive or critical secrets give a `pending_approval` token and an approval id.
    Issue(IssueArgs),
    /// As `issue`, but scopes outside the agent's ceiling become an access request that
    /// widens the ceiling when approved (instead of `scope_not_permitted`).
    RequestAccess(IssueArgs),
    /// Show a token's state (operator token, else the agent key).
    Show {
        /// Token id.
        id: String,
    },
    /// Revoke a token now (operator token, else the agent key).
    Revoke {
        /// Token id.
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct IssueArgs {
    /// Scope `secrets:<read|write|delete|list>:<path-pattern>` (repeatable; at least one).
    #[arg(long = "scope", value_name = "SCOPE", required = true)]
    pub scopes: Vec<String>,
    /// Lifetime: 30s, 15m, 1h, 2d or a number of seconds.
    #[arg(long, value_name = "DURATION")]
    pub ttl: String,
    /// Number of uses before the token is exhausted (1 = single use).
    #[arg(long, value_name = "N")]
    pub max_uses: Option<u32>,
    /// Client address range allowed to use the token (repeatable), e.g. 10.0.0.0/8.
    #[arg(long = "allow-ip", value_name = "CIDR")]
    pub allow_ips: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum ApprovalCommand {
    /// List approval requests, newest first.
    List {
        /// pending, approved, denied or expired.
        #[arg(long)]
        status: Option<String>,
    },
    /// Show what a request would unlock, its digest and the decisions so far.
    Show {
        /// Approval id.
        id: String,
    },
    /// Approve with an operator token. Refused unless [approvals] token_approver_roles allows
    /// your role: approvals normally come from a human's dashboard session.
    Approve {
        id: String,
        #[arg(long)]
        comment: Option<String>,
        /// The digest you reviewed (`approval show`); refused if the request changed since.
        #[arg(long)]
        digest: Option<String>,
    },
    /// Deny: one denial denies the token.
    Deny {
        id: String,
        #[arg(long)]
        comment: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Export audit events, streamed: JSON Lines (`--format json`, the default) or CSV; with
    /// --json, one JSON document with every event. A progress line shows on a terminal's
    /// stderr while the events go to a file or a pipe.
    Export {
        #[arg(long, value_enum, default_value = "json")]
        format: AuditFormat,
        /// Write the events to FILE instead of stdout.
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<std::path::PathBuf>,
        /// Only events of exactly this actor, e.g. token:0190f3a2-...
        #[arg(long)]
        actor: Option<String>,
        /// Only events whose path starts with this, e.g. prod/
        #[arg(long, value_name = "PREFIX")]
        path_prefix: Option<String>,
        /// Only events at or after this RFC 3339 time.
        #[arg(long, value_name = "RFC3339")]
        since: Option<String>,
        /// Only events before this RFC 3339 time.
        #[arg(long, value_name = "RFC3339")]
        until: Option<String>,
        /// Only events of this type, e.g. secret.read.
        #[arg(long = "type", value_name = "TYPE")]
        event_type: Option<String>,
    },
    /// Check the tenant's audit hash chain on the server, or (--offline) an exported JSON Lines
    /// file with nothing else: exit 1 and the first bad event when it does not verify.
    Verify {
        /// A file written by `audit export` (JSON Lines); `-` reads stdin. No server is asked.
        #[arg(long, value_name = "FILE")]
        offline: Option<std::path::PathBuf>,
        /// With --offline: check the checkpoints' signatures with this key — the base64 Ed25519
        /// key, or a file holding it or the JSON `audit public-keys --json` prints.
        #[arg(long, value_name = "KEY", requires = "offline")]
        public_key: Option<String>,
        /// With --offline: checkpoints kept outside the database (`[audit] checkpoint_file`);
        /// the file must hold exactly those heads.
        #[arg(long, value_name = "FILE", requires = "offline")]
        anchors: Option<std::path::PathBuf>,
    },
    /// The Ed25519 public keys that sign the tenant's audit checkpoints (keep a copy apart).
    PublicKeys,
    /// Retention, run on the control-plane host as the database's owner: move a tenant's
    /// events older than --before into a new JSON Lines file (verified as it is written) and
    /// delete them from the database, leaving a marker online verification starts from.
    Archive {
        #[command(flatten)]
        config: ConfigArg,
        /// Tenant id.
        #[arg(long, value_name = "ID")]
        tenant: String,
        /// Archive events that happened before this RFC 3339 time.
        #[arg(long, value_name = "RFC3339")]
        before: String,
        /// The archive file to create (never overwritten).
        #[arg(long, short = 'o', value_name = "FILE")]
        output: PathBuf,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AuditFormat {
    Json,
    Csv,
}

/// Runs the parsed command; the caller maps the failure to an exit status.
pub async fn run(cli: Cli) -> Result<(), Failure> {
    let out = Output::new(cli.global.json);
    // `serve` sets up logging from its config file once it has read it.
    match cli.command {
        Command::Serve(_) => {}
        #[cfg(feature = "dev")]
        Command::Dev(_) => logging::init_dev(),
        _ => logging::init_cli(),
    }
    let result = dispatch(cli, out).await;
    if let Err(failure) = &result {
        out.failure(failure);
    }
    result
}

async fn dispatch(cli: Cli, out: Output) -> Result<(), Failure> {
    let global = cli.global;
    match cli.command {
        #[cfg(feature = "dev")]
        Command::Dev(args) => crate::dev::run(&args, out, local::shutdown_signal()).await,
        Command::Serve(args) => local::serve(&args, out).await,
        Command::Init(args) => local::init(&args, out).await,
        Command::Migrate(c) => local::migrate(c.config.as_deref(), out).await,
        Command::Tenant(TenantCommand::Create {
            name,
            config,
            admin_token_file,
        }) => {
            local::tenant_create(
                &name,
                config.config.as_deref(),
                admin_token_file.as_deref(),
                out,
            )
            .await
        }
        Command::Kms(cmd) => kms::run(cmd, out).await,
        Command::Backup(args) => backup::run(&args, out).await,
        Command::Restore(args) => backup::restore_file(&args, out).await,
        Command::BackupKeygen { output } => backup::keygen(&output, out),
        Command::RestoreKeys {
            file,
            identity,
            output_dir,
        } => backup::restore_keys(&file, &identity, &output_dir, out),
        Command::Sidecar(cmd) => remote::sidecar(&global, cmd, out).await,
        Command::Agent(cmd) => remote::agent(&global, cmd, out).await,
        Command::Operator(cmd) if accounts::handles(&cmd) => {
            accounts::operator(&global, cmd, out).await
        }
        Command::Operator(cmd) => remote::operator(&global, cmd, out).await,
        Command::Secret(cmd) => remote::secret(&global, cmd, out).await,
        Command::Token(cmd) => remote::token(&global, cmd, out).await,
        Command::Audit(AuditCommand::Archive {
            config,
            tenant,
            before,
            output,
        }) => audit_archive::run(config.config.as_deref(), &tenant, &before, &output, out).await,
        Command::Audit(cmd) => remote::audit(&global, cmd, out).await,
        Command::Approval(cmd) => approvals::approval(&global, cmd, out).await,
        Command::Mcp(args) => mcp::run(&global, args).await,
    }
}
