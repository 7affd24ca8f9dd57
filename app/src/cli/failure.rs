//! How a CLI command fails: a stable snake_case code, a message and an exit status.
//!
//! Scripts branch on the code (printed on stderr), so codes are part of the CLI contract: the
//! server's codes are passed through unchanged, and local failures use the fixed set below.

use std::fmt;

use agent_secret_control_plane::config::ConfigError;

/// Exit status: the operation was refused or failed (the server said no, or a local step failed).
pub const EXIT_FAILED: u8 = 1;
/// Exit status: the command line, the configuration or a missing credential is at fault.
pub const EXIT_USAGE: u8 = 2;
/// Exit status: the server could not be reached (connection refused, TLS failure, timeout).
pub const EXIT_UNREACHABLE: u8 = 3;

/// A failed command. Never carries a secret value or a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: String,
    pub message: String,
    pub exit: u8,
}

impl Failure {
    pub fn new(code: impl Into<String>, message: impl Into<String>, exit: u8) -> Failure {
        Failure {
            code: code.into(),
            message: message.into(),
            exit,
        }
    }

    /// A bad flag or value given on the command line or stdin.
    pub fn invalid_argument(message: impl Into<String>) -> Failure {
        Failure::new("invalid_argument", message, EXIT_USAGE)
    }

    /// A credential the command needs is not configured.
    pub fn missing_credential(message: impl Into<String>) -> Failure {
        Failure::new("missing_credential", message, EXIT_USAGE)
    }

    pub fn connection_failed(message: impl Into<String>) -> Failure {
        Failure::new("connection_failed", message, EXIT_UNREACHABLE)
    }

    /// The server answered something that is not the API's JSON.
    pub fn invalid_response(message: impl Into<String>) -> Failure {
        Failure::new("invalid_response", message, EXIT_FAILED)
    }

    /// A local step (database, KMS, files) failed.
    pub fn failed(code: impl Into<String>, message: impl Into<String>) -> Failure {
        Failure::new(code, message, EXIT_FAILED)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Failure {}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Failure {
        Failure::new("invalid_config", e.to_string(), EXIT_USAGE)
    }
}

impl From<anyhow::Error> for Failure {
    /// Keeps a [`Failure`] or [`ConfigError`] found in the chain; anything else is a local
    /// failure whose message is the whole context chain.
    fn from(e: anyhow::Error) -> Failure {
        if let Some(failure) = e.downcast_ref::<Failure>() {
            return failure.clone();
        }
        let message = format!("{e:#}");
        if e.chain()
            .any(|cause| cause.downcast_ref::<ConfigError>().is_some())
        {
            return Failure::new("invalid_config", message, EXIT_USAGE);
        }
        Failure::failed("failed", message)
    }
}

/// Renders an error with its sources, e.g. a reqwest error down to "connection refused".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}
