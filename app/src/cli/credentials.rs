//! Where the CLI finds the credentials it presents: files and environment variables only.
//!
//! A credential on the command line would be visible to every user through `ps` and would
//! land in shell history, so there is deliberately no flag that takes one.

use std::path::Path;

use agent_secret_core::secret::SecretString;
use zeroize::Zeroizing;

use super::failure::Failure;
use super::GlobalArgs;

/// Environment variable holding the operator token.
pub const OPERATOR_TOKEN_ENV: &str = "AGENT_SECRET_STORE_TOKEN";
/// Environment variable holding the agent key.
pub const AGENT_KEY_ENV: &str = "AGENT_SECRET_AGENT_KEY";

/// The operator token from `--token-file`, else `AGENT_SECRET_STORE_TOKEN`.
pub fn operator_token(global: &GlobalArgs) -> Result<SecretString, Failure> {
    find_operator_token(global)?.ok_or_else(|| {
        Failure::missing_credential(format!(
            "this command needs an operator token: set {OPERATOR_TOKEN_ENV} or pass --token-file FILE"
        ))
    })
}

/// The agent key from `AGENT_SECRET_AGENT_KEY`.
pub fn agent_key() -> Result<SecretString, Failure> {
    from_env(AGENT_KEY_ENV).ok_or_else(|| {
        Failure::missing_credential(format!(
            "this command needs an agent key: set {AGENT_KEY_ENV}"
        ))
    })
}

/// The operator token if one is configured, otherwise the agent key (`token show|revoke`).
pub fn operator_or_agent(global: &GlobalArgs) -> Result<SecretString, Failure> {
    if let Some(token) = find_operator_token(global)? {
        return Ok(token);
    }
    from_env(AGENT_KEY_ENV).ok_or_else(|| {
        Failure::missing_credential(format!(
            "this command needs an operator token ({OPERATOR_TOKEN_ENV} or --token-file) \
             or an agent key ({AGENT_KEY_ENV})"
        ))
    })
}

fn find_operator_token(global: &GlobalArgs) -> Result<Option<SecretString>, Failure> {
    match &global.token_file {
        Some(path) => read_token_file(path).map(Some),
        None => Ok(from_env(OPERATOR_TOKEN_ENV)),
    }
}

/// The operator token from `--token-file`, through the one secret-file reader: a file other
/// users can access is refused, as every other key file is.
fn read_token_file(path: &Path) -> Result<SecretString, Failure> {
    use agent_secret_core::secret_file::{read, SecretFileError};
    read(path).map_err(|e| match e {
        SecretFileError::NotUtf8 { .. } | SecretFileError::TooLarge { .. } => {
            Failure::invalid_argument(format!("--token-file: {e}"))
        }
        _ => Failure::missing_credential(format!("--token-file: {e}")),
    })
}

fn from_env(name: &str) -> Option<SecretString> {
    let value = Zeroizing::new(std::env::var(name).ok()?);
    let trimmed = value.trim();
    (!trimmed.is_empty()).then(|| SecretString::new(trimmed.to_string()))
}
