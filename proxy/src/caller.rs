//! Who asked, and the audit records that name them.
//!
//! Every injection is audited (its room in the spool is reserved before anything is
//! resolved) and every refusal best effort; both kinds of record carry the same facts about
//! the caller. They are kept here as borrowed views of the request: a request that neither
//! injects nor is refused pays nothing for them, and an injection's records stay borrowed
//! until the spool encodes them.

use std::io::Write as _;
use std::net::IpAddr;

use agent_secret_core::api::{
    SidecarAuditEvent, SidecarAuditEventRef, SidecarEventKind, MAX_USER_AGENT_CHARS,
};
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
    /// `client_ip` as its audit records write it.
    ip_text: IpText,
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
            ip_text: IpText::new(client_ip),
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
            client_ip: Some(self.ip_text.as_str().to_owned()),
            user_agent: self.user_agent().map(str::to_owned),
            path: path.map(|p| p.to_string()),
            destination_host: destination.map(|d| d.as_str().to_owned()),
            success: false,
            reason: Some(denial.code.as_str().to_owned()),
            occurred_at,
        }
    }

    /// One record per injected path, for the token id the grant names (which the control
    /// plane vouched for, unlike the id read from the presented token). Borrowed from the
    /// request and the grant: each is encoded once by the spool, and nothing is copied
    /// before that.
    pub fn injections<'a>(
        &'a self,
        token_id: &'a str,
        paths: impl Iterator<Item = &'a SecretPath> + 'a,
        destination: &'a Destination,
        occurred_at: DateTime<Utc>,
    ) -> impl Iterator<Item = SidecarAuditEventRef<'a>> + 'a {
        let user_agent = self.user_agent();
        paths.map(move |path| SidecarAuditEventRef {
            kind: SidecarEventKind::SecretRead,
            token_id: Some(token_id),
            client_ip: Some(self.ip_text.as_str()),
            user_agent,
            path: Some(path.as_str()),
            destination_host: Some(destination.as_str()),
            success: true,
            reason: None,
            occurred_at,
        })
    }

    /// The user agent cut to [`MAX_USER_AGENT_CHARS`].
    fn user_agent(&self) -> Option<&'r str> {
        self.user_agent.map(|ua| {
            let end = ua
                .char_indices()
                .nth(MAX_USER_AGENT_CHARS)
                .map_or(ua.len(), |(at, _)| at);
            &ua[..end]
        })
    }
}

/// An IP address as text, on the stack: every injection's audit record names the caller's
/// address, and a `String` per request for it is an allocation the hot path need not make.
struct IpText {
    /// The longest address text (IPv6 with an embedded IPv4 address) is 45 bytes.
    buf: [u8; 45],
    len: usize,
}

impl IpText {
    fn new(ip: IpAddr) -> IpText {
        let mut buf = [0u8; 45];
        let len = match ip {
            // The common case (agents on loopback or a pod network) without `core::fmt`,
            // which cost ~1,100 instructions per request here: four decimal octets.
            IpAddr::V4(v4) => {
                let mut len = 0;
                let mut push = |b: u8| {
                    if let Some(slot) = buf.get_mut(len) {
                        *slot = b;
                        len += 1;
                    }
                };
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        push(b'.');
                    }
                    if octet >= 100 {
                        push(b'0' + octet / 100);
                    }
                    if octet >= 10 {
                        push(b'0' + octet / 10 % 10);
                    }
                    push(b'0' + octet % 10);
                }
                len
            }
            IpAddr::V6(_) => {
                let mut rest = &mut buf[..];
                // Writes into a slice cannot fail unless the text is longer than the slice,
                // which no `IpAddr` is; a failure leaves what was written, still ASCII.
                let _ = write!(rest, "{ip}");
                45 - rest.len()
            }
        };
        IpText { buf, len }
    }

    fn as_str(&self) -> &str {
        // Only ASCII digits, hex letters, dots and colons are written.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
