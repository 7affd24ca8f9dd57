//! `operator passwd|totp-enroll|totp-confirm|disable` and the password of `operator create`:
//! an operator's human account. Passwords and codes come from a file or stdin, never argv.

use std::io::{self, Read};
use std::path::Path;

use agent_secret_core::api::{
    ConfirmTotpRequest, CreateOperatorRequest, CreatedOperator, SetPasswordRequest,
};
use agent_secret_core::ids::OperatorId;
use agent_secret_core::secret::SecretString;
use zeroize::Zeroizing;

use super::api::{ControlPlane, Reply};
use super::call::{checked_id, client, show};
use super::failure::Failure;
use super::output::Output;
use super::remote::{note_once, role_of, strip_one_newline};
use super::{credentials, GlobalArgs, OperatorCommand};

/// Whether `cmd` is one of this module's: an account command, or `create` with a password.
pub fn handles(cmd: &OperatorCommand) -> bool {
    match cmd {
        OperatorCommand::Create {
            password_file,
            password_stdin,
            ..
        } => password_file.is_some() || *password_stdin,
        OperatorCommand::List | OperatorCommand::Revoke { .. } => false,
        _ => true,
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
        OperatorCommand::Create {
            name,
            role,
            password_file,
            ..
        } => {
            // Read before anything is created, so an unreadable file creates nothing.
            let password = read_password(password_file.as_deref(), out)?;
            let reply = api
                .create_operator(&CreateOperatorRequest {
                    name,
                    role: role_of(role),
                })
                .await?;
            created_with_password(&api, &reply, password, out).await
        }
        OperatorCommand::Passwd {
            id,
            password_file,
            current_password_file,
        } => {
            let id: OperatorId = checked_id(&id)?;
            let current = match current_password_file {
                Some(file) => Some(read_password(Some(&file), out)?),
                None => None,
            };
            let password = read_password(password_file.as_deref(), out)?;
            let req = SetPasswordRequest {
                password: password.expose().to_owned(),
                current_password: current.map(|c| c.expose().to_owned()),
            };
            let reply = api.set_password(id, &req).await?;
            show(out, &reply, |p, w| {
                writeln!(w, "password set; {} session(s) ended", p.sessions_revoked)
            })
        }
        OperatorCommand::TotpEnroll { id } => {
            let reply = api.enroll_totp(checked_id(&id)?).await?;
            out.note("the TOTP secret below is shown only once; add it to an authenticator app, then run `operator totp-confirm` with a first code");
            show(out, &reply, |e, w| {
                writeln!(w, "{}", e.otpauth_url)?;
                writeln!(w, "secret: {}", e.secret)
            })
        }
        OperatorCommand::TotpConfirm { id } => {
            let code = read_password(None, out)?;
            let req = ConfirmTotpRequest {
                code: code.expose().trim().to_owned(),
            };
            let reply = api.confirm_totp(checked_id(&id)?, &req).await?;
            show(out, &reply, |_, w| {
                writeln!(w, "TOTP confirmed: a code is required at every login")
            })
        }
        OperatorCommand::Disable { id } => {
            let reply = api.disable_operator(checked_id(&id)?).await?;
            show(out, &reply, |a, w| {
                writeln!(
                    w,
                    "{} disabled; its token and sessions are revoked",
                    a.operator_id
                )
            })
        }
        _ => Err(Failure::invalid_argument("not an account command")),
    }
}

/// `operator create --password-*`: sets the password of the operator just created and prints
/// the creation answer with `"password_set": true` (one JSON document with `--json`).
async fn created_with_password(
    api: &ControlPlane<'_>,
    created: &Reply<CreatedOperator>,
    password: SecretString,
    out: Output,
) -> Result<(), Failure> {
    let id: OperatorId = created
        .doc()
        .get("id")
        .and_then(|v| v.as_str())
        .ok_or_else(|| Failure::invalid_argument("the server's answer has no operator id"))
        .and_then(checked_id)?;
    let req = SetPasswordRequest {
        password: password.expose().to_owned(),
        current_password: None,
    };
    if let Err(failure) = api.set_password(id, &req).await {
        out.note(&format!(
            "operator {id} was created, but its password was refused; set one with `operator passwd {id}`"
        ));
        return Err(failure);
    }
    let mut doc = created.doc().clone();
    doc["password_set"] = serde_json::Value::Bool(true);
    out.emit(&doc, |w| {
        if let Some(c) = created.typed() {
            note_once(out, &format!("{} operator", c.role.as_str()), &c.id);
            writeln!(w, "{}", c.operator_token)?;
        }
        Ok(())
    })
}

/// One line from `file` or stdin (without its trailing newline); never from argv.
pub fn read_password(file: Option<&Path>, out: Output) -> Result<SecretString, Failure> {
    let mut bytes = Zeroizing::new(Vec::new());
    match file {
        Some(path) => std::fs::File::open(path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| Failure::invalid_argument(format!("{}: {e}", path.display())))?,
        None => {
            if io::IsTerminal::is_terminal(&io::stdin()) {
                out.note("reading from stdin; end with Enter and Ctrl-D");
            }
            io::stdin()
                .lock()
                .read_to_end(&mut bytes)
                .map_err(|e| Failure::invalid_argument(format!("cannot read stdin: {e}")))?
        }
    };
    let end = strip_one_newline(&bytes);
    let text = std::str::from_utf8(&bytes[..end])
        .map_err(|_| Failure::invalid_argument("the password is not UTF-8 text"))?;
    if text.is_empty() {
        return Err(Failure::invalid_argument("the password is empty"));
    }
    Ok(SecretString::new(text.to_owned()))
}
