//! The commands that call the control-plane API: one function per command group, through the
//! typed client of `api.rs`.
//!
//! Over 400 lines: one short function per API command, sharing the output helpers.
//!
//! Each sends one request and prints the answer: with `--json` the server's JSON body verbatim
//! (so scripts see exactly the API's document), otherwise a human rendering of the typed
//! response. New credentials go alone on stdout so `KEY=$(agent-secret-store agent create x)`
//! works; what they are and that they are shown once is said on stderr.

use std::io::{self, Read};
use std::path::Path;

use agent_secret_core::api::{
    CreateAgentRequest, CreateOperatorRequest, CreateSidecarRequest, IssueTokenRequest,
    OperatorInfo, PutSecretRequest, Role, SecretMetadata, Sensitivity, SidecarInfo, TokenInfo,
    TokenStatus,
};
use agent_secret_core::path::SecretPath;
use agent_secret_core::secret::SecretString;

use serde_json::Value;
use zeroize::Zeroizing;

use super::api::{AuditFilter, ControlPlane};
use super::audit_export;
use super::call::{checked_id, client, show, Human};
use super::credentials;
use super::failure::{Failure, EXIT_FAILED, EXIT_USAGE};
use super::output::Output;
use super::ttl::parse_ttl;
use super::{
    AgentCommand, AuditCommand, AuditFormat, GlobalArgs, OperatorCommand, RoleArg, SecretCommand,
    SensitivityArg, SidecarCommand, TokenCommand,
};

pub async fn sidecar(global: &GlobalArgs, cmd: SidecarCommand, out: Output) -> Result<(), Failure> {
    let token = credentials::operator_token(global)?;
    let api = ControlPlane::new(client(global)?, &token);
    match cmd {
        SidecarCommand::Create { name } => {
            let reply = api.create_sidecar(&CreateSidecarRequest { name }).await?;
            show(out, &reply, |c, w| {
                note_once(out, "sidecar", &c.id);
                writeln!(w, "{}", c.sidecar_key)
            })
        }
        SidecarCommand::List => {
            let reply = api.list_sidecars().await?;
            show(out, &reply, |list, w| {
                list.sidecars.iter().try_for_each(|s| print_sidecar(s, w))
            })
        }
        SidecarCommand::Revoke { id } => {
            let reply = api.revoke_sidecar(checked_id(&id)?).await?;
            show(out, &reply, |s, w| print_sidecar(&s, w))
        }
    }
}

pub async fn agent(global: &GlobalArgs, cmd: AgentCommand, out: Output) -> Result<(), Failure> {
    let token = credentials::operator_token(global)?;
    let api = ControlPlane::new(client(global)?, &token);
    match cmd {
        AgentCommand::Create {
            name,
            trust_tier,
            allow,
        } => {
            let reply = api
                .create_agent(&CreateAgentRequest {
                    name,
                    trust_tier,
                    allow,
                })
                .await?;
            show(out, &reply, |c, w| {
                note_once(out, "agent", &c.id);
                writeln!(w, "{}", c.agent_key)
            })
        }
        AgentCommand::RotateKey { id } => {
            let reply = api.rotate_agent_key(checked_id(&id)?).await?;
            show(out, &reply, |r, w| {
                out.note(&format!(
                    "agent {}: new key below (shown once); {} token(s) of the old key revoked",
                    r.id, r.tokens_revoked
                ));
                writeln!(w, "{}", r.agent_key)
            })
        }
        AgentCommand::Revoke { id } => {
            let reply = api.revoke_agent(checked_id(&id)?).await?;
            show(out, &reply, |r, w| {
                writeln!(
                    w,
                    "agent {} revoked at {}; {} token(s) revoked",
                    r.id, r.revoked_at, r.tokens_revoked
                )
            })
        }
        AgentCommand::Show { id } => super::approvals::show_agent(&api, &id, out).await,
        AgentCommand::Allow { id, scopes } => {
            super::approvals::change_ceiling(&api, &id, scopes, true, out).await
        }
        AgentCommand::Deny { id, scopes } => {
            super::approvals::change_ceiling(&api, &id, scopes, false, out).await
        }
        AgentCommand::SetTier { id, tier } => {
            super::approvals::set_tier(&api, &id, tier, out).await
        }
        AgentCommand::RequestAccess { id, scopes } => {
            super::approvals::request_access(&api, &id, scopes, out).await
        }
        AgentCommand::List => {
            let reply = api.list_agents().await?;
            show(out, &reply, |list, w| {
                list.agents.iter().try_for_each(|a| {
                    let state = if a.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    };
                    writeln!(
                        w,
                        "{}  {}  trust_tier={}  {state}  created {}",
                        a.id, a.name, a.trust_tier, a.created_at
                    )
                })
            })
        }
    }
}

pub async fn operator(
    global: &GlobalArgs,
    cmd: OperatorCommand,
    out: Output,
) -> Result<(), Failure> {
    let token = credentials::operator_token(global)?;
    let api = ControlPlane::new(client(global)?, &token);
    match cmd {
        // With a password, and the account commands: `accounts`, dispatched before this.
        OperatorCommand::Create { name, role, .. } => {
            let reply = api
                .create_operator(&CreateOperatorRequest {
                    name,
                    role: role_of(role),
                })
                .await?;
            show(out, &reply, |c, w| {
                note_once(out, &format!("{} operator", c.role.as_str()), &c.id);
                writeln!(w, "{}", c.operator_token)
            })
        }
        OperatorCommand::Passwd { .. }
        | OperatorCommand::TotpEnroll { .. }
        | OperatorCommand::TotpConfirm { .. }
        | OperatorCommand::Disable { .. } => Err(Failure::invalid_argument(
            "account commands are run by `accounts`",
        )),
        OperatorCommand::List => {
            let reply = api.list_operators().await?;
            show(out, &reply, |list, w| {
                list.operators.iter().try_for_each(|o| print_operator(o, w))
            })
        }
        OperatorCommand::Revoke { id } => {
            let reply = api.revoke_operator(checked_id(&id)?).await?;
            show(out, &reply, |o, w| print_operator(&o, w))
        }
    }
}

pub(super) fn role_of(role: RoleArg) -> Role {
    match role {
        RoleArg::Admin => Role::Admin,
        RoleArg::Approver => Role::Approver,
        RoleArg::Auditor => Role::Auditor,
    }
}

fn print_operator(o: &OperatorInfo, w: Human<'_>) -> io::Result<()> {
    let state = if o.revoked_at.is_some() {
        "revoked"
    } else {
        "active"
    };
    writeln!(w, "{}  {}  {}  {state}", o.id, o.name, o.role.as_str())
}

pub async fn secret(global: &GlobalArgs, cmd: SecretCommand, out: Output) -> Result<(), Failure> {
    let token = credentials::operator_token(global)?;
    // Read the value before any network activity so a bad value fails fast and locally.
    let value = match &cmd {
        SecretCommand::Put {
            path, value_file, ..
        } => {
            secret_path(path)?;
            Some(read_value(value_file.as_deref(), out)?)
        }
        _ => None,
    };
    let api = ControlPlane::new(client(global)?, &token);
    match (cmd, value) {
        (
            SecretCommand::Put {
                path,
                allow_hosts,
                sensitivity,
                ..
            },
            Some(value),
        ) => {
            let body = PutSecretRequest {
                value: value.expose().to_string(),
                sensitivity: sensitivity.map(|s| match s {
                    SensitivityArg::Standard => Sensitivity::Standard,
                    SensitivityArg::Sensitive => Sensitivity::Sensitive,
                    SensitivityArg::Critical => Sensitivity::Critical,
                }),
                allowed_hosts: allow_hosts,
            };
            let reply = api.put_secret(&secret_path(&path)?, &body).await?;
            show(out, &reply, |r, w| {
                writeln!(w, "stored {} version {}", r.path, r.version)
            })
        }
        (SecretCommand::GetMetadata { path }, _) => {
            let reply = api.secret_metadata(&secret_path(&path)?).await?;
            show(out, &reply, |m, w| print_metadata(&m, w))
        }
        (SecretCommand::List { prefix }, _) => {
            let reply = api.list_secrets(prefix.as_deref()).await?;
            show(out, &reply, |list, w| {
                list.secrets.iter().try_for_each(|m| {
                    writeln!(
                        w,
                        "{}  v{}  {}  {}",
                        m.path,
                        m.version,
                        m.sensitivity.as_str(),
                        m.allowed_hosts.join(",")
                    )
                })
            })
        }
        (SecretCommand::Delete { path }, _) => {
            let reply = api.delete_secret(&secret_path(&path)?).await?;
            show(out, &reply, |d, w| writeln!(w, "deleted {}", d.path))
        }
        (SecretCommand::Put { .. }, None) => Err(Failure::invalid_argument("no secret value read")),
    }
}

pub async fn token(global: &GlobalArgs, cmd: TokenCommand, out: Output) -> Result<(), Failure> {
    match cmd {
        TokenCommand::Issue(args) => issue_token(global, args, false, out).await,
        TokenCommand::RequestAccess(args) => issue_token(global, args, true, out).await,
        TokenCommand::Show { id } => {
            let credential = credentials::operator_or_agent(global)?;
            let reply = ControlPlane::new(client(global)?, &credential)
                .token(checked_id(&id)?)
                .await?;
            show(out, &reply, |t, w| print_token(&t, w))
        }
        TokenCommand::Revoke { id } => {
            let credential = credentials::operator_or_agent(global)?;
            let reply = ControlPlane::new(client(global)?, &credential)
                .revoke_token(checked_id(&id)?)
                .await?;
            show(out, &reply, |t, w| print_token(&t, w))
        }
    }
}

/// `token issue` and `token request-access` (scopes outside the ceiling become an access
/// request instead of `scope_not_permitted`).
async fn issue_token(
    global: &GlobalArgs,
    args: super::IssueArgs,
    request_access: bool,
    out: Output,
) -> Result<(), Failure> {
    let super::IssueArgs {
        scopes,
        ttl,
        max_uses,
        allow_ips,
    } = args;
    let ttl_seconds = parse_ttl(&ttl)?;
    let key = credentials::agent_key()?;
    let api = ControlPlane::new(client(global)?, &key);
    let body = IssueTokenRequest {
        scopes,
        ttl_seconds,
        ip_allowlist: (!allow_ips.is_empty()).then_some(allow_ips),
        max_uses,
        request_access,
    };
    let reply = api.issue_token(&body).await?;
    show(out, &reply, |t, w| {
        match (t.status, &t.approval_id) {
            (TokenStatus::PendingApproval, Some(approval)) => out.note(&format!(
                "token {} waits for approval {approval}; it expires at {} (shown once)",
                t.id, t.expires_at
            )),
            _ => out.note(&format!(
                "token {} is {}; it expires at {} (shown once)",
                t.id,
                t.status.as_str(),
                t.expires_at
            )),
        }
        writeln!(w, "{}", t.token)
    })
}

pub async fn audit(global: &GlobalArgs, cmd: AuditCommand, out: Output) -> Result<(), Failure> {
    if let AuditCommand::Verify {
        offline: Some(file),
        public_key,
        anchors,
    } = &cmd
    {
        return audit_export::verify_file(file, public_key.as_deref(), anchors.as_deref(), out);
    }
    let token = credentials::operator_token(global)?;
    match cmd {
        AuditCommand::Export {
            format,
            output,
            actor,
            path_prefix,
            since,
            until,
            event_type,
        } => {
            if format == AuditFormat::Csv && out.is_json() {
                return Err(Failure::invalid_argument(
                    "--format csv cannot be combined with --json (stdout holds one JSON document)",
                ));
            }
            for (flag, value) in [("--since", &since), ("--until", &until)] {
                if let Some(v) = value {
                    chrono::DateTime::parse_from_rfc3339(v).map_err(|e| {
                        Failure::invalid_argument(format!(
                            "{flag} {v:?}: not an RFC 3339 time: {e}"
                        ))
                    })?;
                }
            }
            let api = ControlPlane::new(client(global)?, &token);
            let filter = AuditFilter {
                since: since.as_deref(),
                until: until.as_deref(),
                event_type: event_type.as_deref(),
                actor: actor.as_deref(),
                path_prefix: path_prefix.as_deref(),
            };
            if out.is_json() {
                return audit_export::document(&api, &filter, out).await;
            }
            let wire = match format {
                AuditFormat::Json => "jsonl",
                AuditFormat::Csv => "csv",
            };
            audit_export::stream(&api, &filter, wire, output.as_deref()).await
        }
        AuditCommand::Archive { .. } => Err(Failure::new(
            "invalid_usage",
            "audit archive runs on the control-plane host with its config",
            EXIT_USAGE,
        )),
        AuditCommand::PublicKeys => {
            let reply = ControlPlane::new(client(global)?, &token)
                .audit_public_keys()
                .await?;
            let doc = reply.doc();
            out.emit(doc, |w| {
                for key in doc["keys"].as_array().into_iter().flatten() {
                    writeln!(
                        w,
                        "{}  {}  {}  (since {})",
                        key["key_id"].as_str().unwrap_or_default(),
                        key["algorithm"].as_str().unwrap_or_default(),
                        key["public_key"].as_str().unwrap_or_default(),
                        key["created_at"].as_str().unwrap_or_default(),
                    )?;
                }
                Ok(())
            })
        }
        AuditCommand::Verify { .. } => {
            let reply = ControlPlane::new(client(global)?, &token)
                .verify_audit()
                .await?;
            let doc = reply.doc();
            let valid = doc.get("valid").and_then(Value::as_bool);
            out.emit(doc, |w| match valid {
                Some(true) => writeln!(
                    w,
                    "audit chain intact ({} events checked)",
                    doc["events_checked"]
                ),
                _ => writeln!(w, "audit chain BROKEN: {doc}"),
            })?;
            match valid {
                Some(true) => Ok(()),
                _ => Err(Failure::new(
                    "audit_chain_broken",
                    format!("the audit hash chain does not verify: {}", doc["problem"]),
                    EXIT_FAILED,
                )),
            }
        }
    }
}

/// A secret path argument, checked against the grammar locally before any request.
fn secret_path(raw: &str) -> Result<SecretPath, Failure> {
    SecretPath::parse(raw).map_err(|e| Failure::new("invalid_path", e.to_string(), EXIT_USAGE))
}

pub(super) fn note_once(out: Output, what: &str, id: &str) {
    out.note(&format!(
        "{what} {id} created; its credential is below and is shown only once"
    ));
}

/// The secret value from `file` or stdin, without one trailing newline; never from argv.
fn read_value(file: Option<&Path>, out: Output) -> Result<SecretString, Failure> {
    let mut bytes = Zeroizing::new(Vec::new());
    match file {
        Some(path) => {
            let mut f = std::fs::File::open(path).map_err(|e| {
                Failure::invalid_argument(format!("--value-file {}: {e}", path.display()))
            })?;
            f.read_to_end(&mut bytes)
        }
        None => {
            if io::IsTerminal::is_terminal(&io::stdin()) {
                out.note("reading the secret value from stdin; end with Ctrl-D");
            }
            io::stdin().lock().read_to_end(&mut bytes)
        }
    }
    .map_err(|e| Failure::invalid_argument(format!("cannot read the secret value: {e}")))?;
    let end = strip_one_newline(&bytes);
    let text = std::str::from_utf8(&bytes[..end])
        .map_err(|_| Failure::invalid_argument("the secret value is not UTF-8 text"))?;
    if text.is_empty() {
        return Err(Failure::invalid_argument("the secret value is empty"));
    }
    Ok(SecretString::new(text.to_string()))
}

/// Length of `bytes` without one trailing `\n` or `\r\n`.
pub(super) fn strip_one_newline(bytes: &[u8]) -> usize {
    match bytes {
        [.., b'\r', b'\n'] => bytes.len() - 2,
        [.., b'\n'] => bytes.len() - 1,
        _ => bytes.len(),
    }
}

fn print_sidecar(s: &SidecarInfo, w: Human<'_>) -> io::Result<()> {
    let state = if s.revoked_at.is_some() {
        "revoked"
    } else {
        "active"
    };
    writeln!(w, "{}  {}  {state}  created {}", s.id, s.name, s.created_at)
}

fn print_metadata(m: &SecretMetadata, w: Human<'_>) -> io::Result<()> {
    writeln!(w, "path:          {}", m.path)?;
    writeln!(w, "version:       {}", m.version)?;
    writeln!(w, "sensitivity:   {}", m.sensitivity.as_str())?;
    writeln!(w, "allowed_hosts: {}", m.allowed_hosts.join(", "))?;
    writeln!(w, "created_at:    {}", m.created_at)?;
    writeln!(w, "updated_at:    {}", m.updated_at)
}

fn print_token(t: &TokenInfo, w: Human<'_>) -> io::Result<()> {
    writeln!(w, "id:                   {}", t.id)?;
    writeln!(w, "agent_id:             {}", t.agent_id)?;
    writeln!(w, "status:               {}", t.status.as_str())?;
    writeln!(w, "scopes:               {}", t.scopes.join(" "))?;
    writeln!(
        w,
        "approved_sensitivity: {}",
        t.approved_sensitivity.as_str()
    )?;
    if !t.ip_allowlist.is_empty() {
        writeln!(w, "ip_allowlist:         {}", t.ip_allowlist.join(", "))?;
    }
    match t.max_uses {
        Some(max) => writeln!(w, "uses:                 {} of {max}", t.uses)?,
        None => writeln!(w, "uses:                 {}", t.uses)?,
    }
    writeln!(w, "expires_at:           {}", t.expires_at)?;
    if let Some(revoked) = t.revoked_at {
        writeln!(w, "revoked_at:           {revoked}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{secret_path, strip_one_newline};

    #[test]
    fn strips_exactly_one_trailing_newline() {
        assert_eq!(strip_one_newline(b"abc\n"), 3);
        assert_eq!(strip_one_newline(b"abc\r\n"), 3);
        assert_eq!(strip_one_newline(b"abc\n\n"), 4);
        assert_eq!(strip_one_newline(b"abc"), 3);
        assert_eq!(strip_one_newline(b""), 0);
    }

    #[test]
    fn secret_path_arguments_are_checked_locally() {
        assert!(secret_path("prod/openai/key").is_ok());
        assert!(secret_path("prod/../key").is_err());
        assert!(secret_path("/prod/key").is_err());
    }
}
