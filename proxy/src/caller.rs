//! Who asked, and the audit records that name them.
//!
//! Every injection is audited (its room in the spool is reserved before anything is
//! resolved) and every refusal best effort; both kinds of record carry the same facts about
//! the caller. They are kept here as borrowed views of the request and turned into owned
//! `SidecarAuditEvent`s only when a record is written, so a request that neither injects nor
//! is refused pays nothing for them.

use std::net::IpAddr;

use agent_secret_core::api::{SidecarAuditEvent, SidecarEventKind, MAX_USER_AGENT_CHARS};
use agent_secret_core::host::Destination;
use agent_secret_core::path::SecretPath;
use chrono::{DateTime, Utc};
use http::header::USER_AGENT;
use pingora::http::RequestHeader;
use uuid::Uuid;

use crate::denial::Denial;

/// The caller of one request, as far as it is known.
pub struct Caller<'r> {
    /// The presented token's id, once its format was read (a refusal before that names none).
    pub token_id: Option<Uuid>,
    pub client_ip: IpAddr,
    /// As the agent sent it (when it is text); cut to [`MAX_USER_AGENT_CHARS`] in records.
    pub user_agent: Option<&'r str>,
    /// The refusal is already audited (with its path), or deliberately not audited.
    pub audited: bool,
}

impl<'r> Caller<'r> {
    pub fn new(client_ip: IpAddr, req: &'r RequestHeader) -> Caller<'r> {
        Caller {
            token_id: None,
            client_ip,
            user_agent: req.headers.get(USER_AGENT).and_then(|v| v.to_str().ok()),
            audited: false,
        }
    }

    /// The record of a refusal: the caller, and the destination and path when the refusal
    /// was about them.
    pub fn refusal(
        &self,
        destination: Option<&Destination>,
        path: Option<&SecretPath>,
        denial: &Denial,
        occurred_at: DateTime<Utc>,
    ) -> SidecarAuditEvent {
        SidecarAuditEvent {
            kind: SidecarEventKind::SecretRead,
            token_id: self.token_id.map(|id| id.hyphenated().to_string()),
            client_ip: Some(self.client_ip.to_string()),
            user_agent: self.user_agent(),
            path: path.map(|p| p.to_string()),
            destination_host: destination.map(|d| d.as_str().to_owned()),
            success: false,
            reason: Some(denial.code.as_str().to_owned()),
            occurred_at,
        }
    }

    /// One record per injected path, for the token id the grant names (which the control
    /// plane vouched for, unlike the id read from the presented token).
    pub fn injections<'p>(
        &self,
        token_id: &str,
        paths: impl Iterator<Item = &'p SecretPath>,
        destination: &Destination,
        occurred_at: DateTime<Utc>,
    ) -> Vec<SidecarAuditEvent> {
        let client_ip = self.client_ip.to_string();
        let destination = destination.as_str();
        paths
            .map(|path| SidecarAuditEvent {
                kind: SidecarEventKind::SecretRead,
                token_id: Some(token_id.to_owned()),
                client_ip: Some(client_ip.clone()),
                user_agent: self.user_agent(),
                path: Some(path.to_string()),
                destination_host: Some(destination.to_owned()),
                success: true,
                reason: None,
                occurred_at,
            })
            .collect()
    }

    fn user_agent(&self) -> Option<String> {
        self.user_agent.map(|ua| {
            let end = ua
                .char_indices()
                .nth(MAX_USER_AGENT_CHARS)
                .map_or(ua.len(), |(at, _)| at);
            ua[..end].to_owned()
        })
    }
}

#[cfg(test)]
mod tests;
