//! Why the policy refused: one variant per rule, so callers match on the rule rather than on
//! a string, and each carries only what its message needs (paths, hosts, the client address;
//! never a token or a value). The wire code is [`Denial::code`], the documented string of
//! [`ErrorCode`]; the message is the `Display` text, safe to show the agent.

use std::net::IpAddr;

use crate::api::{ErrorCode, Sensitivity};
use crate::host::Destination;
use crate::path::SecretPath;

/// A refusal of the access policy (see [`crate::policy`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// No grant at all: the presented token is unknown, or its secret part does not verify.
    /// The caller's credential check decides this before there are facts to judge; it is a
    /// variant here so that every refusal of a resolve is one type, in one order.
    #[error("token is not valid")]
    TokenInvalid,
    #[error("token has been revoked")]
    TokenRevoked,
    #[error("token is waiting for approval")]
    ApprovalPending,
    #[error("token approval was denied")]
    ApprovalDenied,
    #[error("token has expired")]
    TokenExpired,
    #[error("client address {client_ip} is not in the token's ip_allowlist")]
    IpNotAllowed { client_ip: IpAddr },
    #[error("token has no uses left")]
    UsesExhausted,
    #[error("token scope does not allow reading `{path}`")]
    OutsideScope { path: SecretPath },
    #[error("no secret at `{path}`")]
    SecretNotFound { path: SecretPath },
    /// Reported as `approval_pending`: the secret needs an approval this token has not had
    /// (e.g. it was created, or its sensitivity raised, after the token was approved); a token
    /// requested now would get an approval request for it.
    #[error(
        "`{path}` is {} and this token is approved for {} secrets only; request a new token to have it approved",
        .sensitivity.as_str(),
        .approved.as_str()
    )]
    AboveApprovedSensitivity {
        path: SecretPath,
        sensitivity: Sensitivity,
        approved: Sensitivity,
    },
    #[error("`{path}` may not be sent to {destination}")]
    DestinationNotAllowed {
        path: SecretPath,
        destination: Destination,
    },
}

impl Denial {
    /// The typed code, for callers that map it to a status or keep it in an error.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            Denial::TokenInvalid => ErrorCode::TokenInvalid,
            Denial::TokenRevoked => ErrorCode::TokenRevoked,
            Denial::ApprovalPending => ErrorCode::ApprovalPending,
            Denial::ApprovalDenied => ErrorCode::ApprovalDenied,
            Denial::TokenExpired => ErrorCode::TokenExpired,
            Denial::IpNotAllowed { .. } => ErrorCode::IpNotAllowed,
            Denial::UsesExhausted => ErrorCode::UsesExhausted,
            Denial::OutsideScope { .. } => ErrorCode::ScopeDenied,
            Denial::AboveApprovedSensitivity { .. } => ErrorCode::ApprovalPending,
            Denial::SecretNotFound { .. } => ErrorCode::SecretNotFound,
            Denial::DestinationNotAllowed { .. } => ErrorCode::DestinationNotAllowed,
        }
    }

    /// The documented denial code (`scope_denied`, `token_expired`, ...).
    pub fn code(&self) -> &'static str {
        self.error_code().as_str()
    }

    /// The message for the agent: names paths, hosts and addresses, never a value or token.
    pub fn message(&self) -> String {
        self.to_string()
    }

    /// The path the refusal concerns, for the audit record; `None` for refusals of the token.
    pub fn path(&self) -> Option<&SecretPath> {
        match self {
            Denial::OutsideScope { path }
            | Denial::SecretNotFound { path }
            | Denial::AboveApprovedSensitivity { path, .. }
            | Denial::DestinationNotAllowed { path, .. } => Some(path),
            Denial::TokenInvalid
            | Denial::TokenRevoked
            | Denial::ApprovalPending
            | Denial::ApprovalDenied
            | Denial::TokenExpired
            | Denial::IpNotAllowed { .. }
            | Denial::UsesExhausted => None,
        }
    }
}
