//! What the sidecar and the control plane say to each other: resolve, release, audit, watch.
//!
//! A resolve answers with envelopes, never plaintext; the sidecar unwraps them with its own KMS
//! access. Requests reject unknown fields, and the scoped token a resolve carries is wiped on
//! drop and never shown in `Debug`.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::operator::Sensitivity;

/// `POST /v1/sidecar/resolve`: may this token send these secrets to this host, from this IP?
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    pub token: String,
    pub paths: Vec<String>,
    /// The host the sidecar will actually dial, `host[:port]`.
    pub destination_host: String,
    pub client_ip: String,
    /// The agent's `User-Agent` (at most [`MAX_USER_AGENT_CHARS`]), for the audit events
    /// the resolve writes. Absent when the agent sent none (and from older sidecars).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

/// Characters of an agent's `User-Agent` an audit event keeps: the agent picks the header, so
/// it must not pick how much of the log one event takes.
pub const MAX_USER_AGENT_CHARS: usize = 512;

/// The sidecar's environment, which the Kubernetes injector writes and the sidecar reads: its
/// configuration as TOML text (instead of a file),
pub const ENV_PROXY_CONFIG_TOML: &str = "AGENT_SECRET_PROXY_CONFIG_TOML";
/// its sidecar key itself,
pub const ENV_SIDECAR_KEY: &str = "AGENT_SECRET_SIDECAR_KEY";
/// and the base64 master key of the local keyring.
pub const ENV_MASTER_KEY: &str = "AGENT_SECRET_MASTER_KEY";

impl Drop for ResolveRequest {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.token);
    }
}

impl fmt::Debug for ResolveRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolveRequest")
            .field("token", &"[REDACTED]")
            .field("paths", &self.paths)
            .field("destination_host", &self.destination_host)
            .field("client_ip", &self.client_ip)
            .finish()
    }
}

/// What the token is allowed, as of this resolve.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Grant {
    pub token_id: String,
    pub tenant_id: String,
    pub agent_id: String,
    pub scopes: Vec<String>,
    /// CIDRs the client must come from (empty: any). Lets a warm sidecar check locally.
    pub ip_allowlist: Vec<String>,
    pub approved_sensitivity: Sensitivity,
    pub expires_at: DateTime<Utc>,
    pub max_uses: Option<i64>,
    pub uses: i64,
    /// How long the sidecar may serve this grant from cache; 0 for `max_uses` tokens.
    pub cache_ttl_seconds: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ResolvedSecret {
    pub path: String,
    pub version: i64,
    pub sensitivity: Sensitivity,
    /// Destinations this secret may be sent to (`HostPattern` strings), for warm-cache checks.
    pub allowed_hosts: Vec<String>,
    #[schema(value_type = Object)]
    pub envelope: crate::envelope::Envelope,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ResolveResponse {
    pub grant: Grant,
    pub secrets: Vec<ResolvedSecret>,
    /// Set when this resolve took a use of a `max_uses` token: the use is reserved, and the
    /// sidecar gives it back with `POST /v1/sidecar/release` if the request fails before the
    /// value is injected (KMS down, decrypt error, a later refusal). A reservation not
    /// released by `expires_at` is spent for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation: Option<UseReservation>,
}

/// A reserved use of a `max_uses` token; see [`ResolveResponse::reservation`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UseReservation {
    pub id: String,
    /// Until when a release is accepted; after it the use counts whatever happens.
    pub expires_at: DateTime<Utc>,
}

/// `POST /v1/sidecar/release`: give back a reserved use whose value was never injected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseUseRequest {
    pub reservation_id: String,
    /// Why the value was not injected, as a denial code (`kms_unavailable`, ...), for the audit
    /// record: lowercase letters, digits and `_`, at most 64.
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReleasedUse {
    pub reservation_id: String,
    pub outcome: ReleaseOutcome,
}

/// Releases are idempotent: a second release of the same reservation says so and changes
/// nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseOutcome {
    Released,
    AlreadyReleased,
}

/// One injection (or refusal, or MCP tool call) as the sidecar saw it, for
/// `POST /v1/sidecar/audit`. Becomes an event of the tenant's chain (`secret.read` unless `kind`
/// says otherwise) with the sidecar as reporter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SidecarAuditEvent {
    /// Absent for `secret_read`, so the events of the request path keep the shape control
    /// planes of every version accept.
    #[serde(default, skip_serializing_if = "SidecarEventKind::is_secret_read")]
    pub kind: SidecarEventKind,
    pub token_id: Option<String>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub path: Option<String>,
    pub destination_host: Option<String>,
    pub success: bool,
    /// A stable code for failures (`scope_denied`, ...), absent on success.
    pub reason: Option<String>,
    pub occurred_at: DateTime<Utc>,
}

/// What a sidecar's audit event records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SidecarEventKind {
    /// An injection or a refusal of the request path (`secret.read`).
    #[default]
    SecretRead,
    /// A call of the sidecar's MCP tool (`mcp.tool_called`); `reason` names the tool and its
    /// outcome.
    McpToolCalled,
}

impl SidecarEventKind {
    pub fn is_secret_read(&self) -> bool {
        *self == SidecarEventKind::SecretRead
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SidecarAuditBatch {
    pub events: Vec<SidecarAuditEvent>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SidecarAuditAccepted {
    pub accepted: usize,
}

/// Most events one `POST /v1/sidecar/audit` may carry (more is refused 400).
pub const MAX_SIDECAR_AUDIT_BATCH_EVENTS: usize = 500;

/// `reason` prefix of a sidecar's report that the control plane refused some of its events and
/// the sidecar moved them to its dead-letter file: `audit_dropped:<count>`. The control plane
/// records it as an `audit.dropped` event, so the loss itself is in the hash-chained log.
pub const AUDIT_DROPPED_REASON: &str = "audit_dropped";

impl SidecarAuditEvent {
    /// The report that `count` events were dead-lettered (see [`AUDIT_DROPPED_REASON`]).
    pub fn audit_dropped(count: u64, occurred_at: DateTime<Utc>) -> SidecarAuditEvent {
        SidecarAuditEvent {
            kind: SidecarEventKind::SecretRead,
            token_id: None,
            client_ip: None,
            user_agent: None,
            path: None,
            destination_host: None,
            success: false,
            reason: Some(format!("{AUDIT_DROPPED_REASON}:{count}")),
            occurred_at,
        }
    }

    /// The count of an [`audit_dropped`](Self::audit_dropped) report; `None` for any other
    /// event (an injection or refusal names a token or a path, a report never does).
    pub fn dropped_count(&self) -> Option<u64> {
        self.borrowed().dropped_count()
    }

    /// The same event with its text borrowed.
    pub fn borrowed(&self) -> SidecarAuditEventRef<'_> {
        SidecarAuditEventRef {
            kind: self.kind,
            token_id: self.token_id.as_deref(),
            client_ip: self.client_ip.as_deref(),
            user_agent: self.user_agent.as_deref(),
            path: self.path.as_deref(),
            destination_host: self.destination_host.as_deref(),
            success: self.success,
            reason: self.reason.as_deref(),
            occurred_at: self.occurred_at,
        }
    }
}

/// A [`SidecarAuditEvent`] whose text is borrowed: the sidecar builds one per injected path
/// straight from the request and its grant and encodes it once, so the request path owns no
/// copy of any field (bench/results/warm-path-callgrind.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SidecarAuditEventRef<'a> {
    pub kind: SidecarEventKind,
    pub token_id: Option<&'a str>,
    pub client_ip: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub path: Option<&'a str>,
    pub destination_host: Option<&'a str>,
    pub success: bool,
    pub reason: Option<&'a str>,
    pub occurred_at: DateTime<Utc>,
}

impl SidecarAuditEventRef<'_> {
    /// An owned copy.
    pub fn to_event(&self) -> SidecarAuditEvent {
        SidecarAuditEvent {
            kind: self.kind,
            token_id: self.token_id.map(str::to_owned),
            client_ip: self.client_ip.map(str::to_owned),
            user_agent: self.user_agent.map(str::to_owned),
            path: self.path.map(str::to_owned),
            destination_host: self.destination_host.map(str::to_owned),
            success: self.success,
            reason: self.reason.map(str::to_owned),
            occurred_at: self.occurred_at,
        }
    }

    /// See [`SidecarAuditEvent::dropped_count`].
    pub fn dropped_count(&self) -> Option<u64> {
        if self.token_id.is_some()
            || self.path.is_some()
            || self.success
            || !self.kind.is_secret_read()
        {
            return None;
        }
        self.reason?
            .strip_prefix(AUDIT_DROPPED_REASON)?
            .strip_prefix(':')?
            .parse()
            .ok()
    }
}

/// Server-sent events on `GET /v1/sidecar/watch`: the SSE `event:` field is the variant's
/// `type`, the `data:` field this JSON. Sidecars drop the affected cache entries at once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WatchEvent {
    TokenRevoked {
        token_id: String,
    },
    AgentKeyRotated {
        agent_id: String,
    },
    SecretUpdated {
        path: String,
        version: i64,
    },
    SecretDeleted {
        path: String,
    },
    KekRotated {
        key_name: String,
        key_version: String,
    },
    /// The agent was revoked: its key and every token it held are dead.
    AgentRevoked {
        agent_id: String,
    },
    /// Humans approved a pending token: it is active now (forget anything cached for it).
    TokenApproved {
        token_id: String,
    },
    /// The agent's ceiling changed; tokens left outside it were revoked (each also announced
    /// as `TokenRevoked`). Sidecars drop the agent's cached grants.
    AgentCeilingChanged {
        agent_id: String,
    },
    /// The control plane may have missed change events (its PostgreSQL listener reconnected):
    /// drop every cached grant and value.
    Resync,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_secret_read_keeps_the_wire_shape_of_earlier_versions() {
        let read = SidecarAuditEvent::audit_dropped(1, Utc::now());
        let wire = serde_json::to_value(&read).unwrap();
        assert!(wire.get("kind").is_none(), "{wire}");
        let mut tool = read.clone();
        tool.kind = SidecarEventKind::McpToolCalled;
        let wire = serde_json::to_value(&tool).unwrap();
        assert_eq!(wire["kind"], "mcp_tool_called");
        let back: SidecarAuditEvent = serde_json::from_value(wire).unwrap();
        assert_eq!(back.kind, SidecarEventKind::McpToolCalled);
        assert_eq!(
            back.dropped_count(),
            None,
            "a tool call is never a drop report"
        );
    }

    #[test]
    fn audit_dropped_reports_round_trip_and_nothing_else_reads_as_one() {
        let report = SidecarAuditEvent::audit_dropped(7, Utc::now());
        let wire: SidecarAuditEvent =
            serde_json::from_str(&serde_json::to_string(&report).unwrap()).unwrap();
        assert_eq!(wire.dropped_count(), Some(7));
        let mut read = report.clone();
        read.path = Some("prod/api/key".into());
        assert_eq!(read.dropped_count(), None);
        read.path = None;
        read.reason = Some("audit_dropped:many".into());
        assert_eq!(read.dropped_count(), None);
        read.reason = Some("scope_denied".into());
        assert_eq!(read.dropped_count(), None);
    }
}
