//! The append-only, hash-chained audit log: event model, canonical encoding and chain checks.
//!
//! Each tenant has its own chain. Event `n` stores `prev_hash` (the hash of event `n-1`, or 32
//! zero bytes for the first) and `hash = SHA-256(canonical(event))`, where the canonical
//! encoding covers every field including `prev_hash`. Editing, deleting or reordering any
//! row breaks the chain at that row, which `verify_chain` reports. The encoding is a stable
//! format: changing it breaks verification of every stored chain.

use std::fmt;
use std::str::FromStr;

use agent_secret_core::ids::{AuditEventId, TenantId};
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The hash that precedes a tenant's first event.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// Declares the event types once: the enum, its dotted names (stored, exported and matched by
/// SIEM rules, so never renamed), `ALL` and the name lookups all come from this one list.
macro_rules! audit_event_types {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)+) => {
        /// Event types of the audit log (docs/architecture.md "Audit"). Stored and exported as
        /// their dotted names.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        pub enum AuditEventType {
            $($(#[$doc])* #[serde(rename = $name)] $variant,)+
        }

        impl AuditEventType {
            pub const ALL: &'static [AuditEventType] = &[$(Self::$variant),+];

            pub fn as_str(&self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)+
                }
            }
        }
    };
}

audit_event_types! {
    SecretRead => "secret.read",
    SecretWrite => "secret.write",
    SecretDelete => "secret.delete",
    TokenIssued => "token.issued",
    TokenExpired => "token.expired",
    TokenRevoked => "token.revoked",
    ApprovalRequested => "approval.requested",
    ApprovalApproved => "approval.approved",
    ApprovalDenied => "approval.denied",
    /// Nobody decided a pending approval request before it expired; its token is denied.
    ApprovalExpired => "approval.expired",
    AuthFailed => "auth.failed",
    AlertRaised => "alert.raised",
    KmsRotated => "kms.rotated",
    KmsRewrapped => "kms.rewrapped",
    KmsVersionRetired => "kms.version_retired",
    TenantCreated => "tenant.created",
    AgentCreated => "agent.created",
    AgentKeyRotated => "agent.key_rotated",
    SidecarCreated => "sidecar.created",
    SidecarRevoked => "sidecar.revoked",
    OperatorCreated => "operator.created",
    /// A sidecar reports events the control plane refused, moved to its dead-letter file; the
    /// reason carries the count.
    AuditDropped => "audit.dropped",
    OperatorRevoked => "operator.revoked",
    AgentRevoked => "agent.revoked",
    /// An admin set an agent's ceiling, or an approved access request widened it.
    AgentCeilingChanged => "agent.ceiling_changed",
    /// An admin set an agent's trust tier.
    AgentTrustTierSet => "agent.trust_tier_set",
    /// A sidecar gave back a reserved use of a `max_uses` token whose value it never injected.
    TokenUseReleased => "token.use_released",
    /// An operator's password was set or changed (every session of theirs revoked with it).
    OperatorPasswordSet => "operator.password_set",
    /// A new TOTP secret was stored for an operator (unconfirmed).
    OperatorTotpEnrolled => "operator.totp_enrolled",
    /// A first code confirmed an operator's TOTP enrollment: codes are required from now on.
    OperatorTotpConfirmed => "operator.totp_confirmed",
    /// An operator was disabled: no login, API token revoked, sessions revoked.
    OperatorDisabled => "operator.disabled",
    /// A human operator logged in.
    SessionCreated => "session.created",
    /// A human operator logged out.
    SessionRevoked => "session.revoked",
    /// An agent called a tool of the MCP server; the reason names the tool and its outcome.
    McpToolCalled => "mcp.tool_called",
    /// A signed statement of the chain up to the event before it (`crate::audit_checkpoint`).
    AuditCheckpoint => "audit.checkpoint",
    /// The owner archived a prefix of the chain to a file and deleted it from the database;
    /// the reason names the range and the file's SHA-256.
    AuditArchived => "audit.archived",
}

impl fmt::Display for AuditEventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown audit event type `{0}`")]
pub struct UnknownEventType(pub String);

impl FromStr for AuditEventType {
    type Err = UnknownEventType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownEventType(s.to_owned()))
    }
}

/// Who did it: `operator:<id>`, `agent:<id>`, `token:<id>`, `sidecar:<id>` or `system`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Actor(pub String);

impl Actor {
    pub fn new(kind: &str, id: impl fmt::Display) -> Self {
        Self(format!("{kind}:{id}"))
    }

    pub fn system() -> Self {
        Self("system".into())
    }
}

/// An event before the store gives it its place in the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditDraft {
    pub event_type: AuditEventType,
    pub actor: Actor,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub path: Option<String>,
    pub destination_host: Option<String>,
    pub success: bool,
    /// A stable code (e.g. `scope_denied`) or short operator-supplied text; never a secret.
    pub reason: Option<String>,
    /// Truncated to whole microseconds so the stored value hashes identically after a round trip.
    pub occurred_at: DateTime<Utc>,
}

impl AuditDraft {
    /// A successful event happening now, with the optional fields empty.
    pub fn new(event_type: AuditEventType, actor: Actor) -> Self {
        Self {
            event_type,
            actor,
            ip: None,
            user_agent: None,
            path: None,
            destination_host: None,
            success: true,
            reason: None,
            occurred_at: now_micros(),
        }
    }

    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }

    pub fn destination(mut self, host: impl Into<String>) -> Self {
        self.destination_host = Some(host.into());
        self
    }

    pub fn client(mut self, ip: Option<String>, user_agent: Option<String>) -> Self {
        self.ip = ip;
        self.user_agent = user_agent;
        self
    }

    pub fn failed(mut self, reason: impl Into<String>) -> Self {
        self.success = false;
        self.reason = Some(reason.into());
        self
    }

    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}

/// A stored event: a draft plus its identity and place in the tenant's chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    pub id: AuditEventId,
    pub tenant_id: TenantId,
    /// 1-based position in the tenant's chain.
    pub seq: i64,
    pub draft: AuditDraft,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
}

impl AuditEvent {
    /// Places `draft` after an event whose hash is `prev_hash` at position `seq - 1`.
    pub fn chain(
        tenant_id: TenantId,
        seq: i64,
        prev_hash: [u8; 32],
        draft: AuditDraft,
    ) -> AuditEvent {
        let id = AuditEventId::new();
        let hash = event_hash(tenant_id, id, seq, &prev_hash, &draft);
        AuditEvent {
            id,
            tenant_id,
            seq,
            draft,
            prev_hash,
            hash,
        }
    }

    /// Whether the stored hash matches the stored fields.
    pub fn hash_is_valid(&self) -> bool {
        self.expected_hash() == self.hash
    }

    /// The hash the event's fields call for. (Anyone can compute it: that is why the chain
    /// alone cannot tell a rewritten database, and signed checkpoints exist.)
    pub fn expected_hash(&self) -> [u8; 32] {
        event_hash(
            self.tenant_id,
            self.id,
            self.seq,
            &self.prev_hash,
            &self.draft,
        )
    }
}

/// Current time truncated to microseconds, the precision every backend stores.
pub fn now_micros() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// SHA-256 over a length-prefixed encoding of every field, domain-separated by a version tag.
fn event_hash(
    tenant_id: TenantId,
    id: AuditEventId,
    seq: i64,
    prev_hash: &[u8; 32],
    draft: &AuditDraft,
) -> [u8; 32] {
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    field(b"agent-secret-store/audit/v1");
    field(tenant_id.to_string().as_bytes());
    field(id.to_string().as_bytes());
    field(&seq.to_be_bytes());
    field(prev_hash);
    field(draft.event_type.as_str().as_bytes());
    field(draft.actor.0.as_bytes());
    for opt in [
        &draft.ip,
        &draft.user_agent,
        &draft.path,
        &draft.destination_host,
        &draft.reason,
    ] {
        match opt {
            Some(s) => {
                field(b"1");
                field(s.as_bytes());
            }
            None => field(b"0"),
        }
    }
    field(&[u8::from(draft.success)]);
    field(&draft.occurred_at.timestamp_micros().to_be_bytes());
    h.finalize().into()
}

/// Outcome of walking a tenant's chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ChainReport {
    pub valid: bool,
    pub events_checked: i64,
    /// The first broken position, if any.
    pub first_bad_seq: Option<i64>,
    pub problem: Option<String>,
    /// Signed checkpoints whose position, head and signature held.
    pub checkpoints_verified: i64,
    /// The last of them: everything up to it is vouched for by a signature.
    pub last_checkpoint_seq: Option<i64>,
    /// Events through this position were archived out of the database (docs/operations.md,
    /// "Audit retention"); the check started after it, from the archive's recorded hash.
    pub archived_through: Option<i64>,
}

/// Incremental chain verifier, so callers can stream events from the database in pages.
pub struct ChainVerifier {
    expected_prev: [u8; 32],
    expected_seq: i64,
    checked: i64,
    failure: Option<(i64, String)>,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self {
            expected_prev: GENESIS_HASH,
            expected_seq: 1,
            checked: 0,
            failure: None,
        }
    }
}

impl ChainVerifier {
    /// A verifier for a chain known only from position `seq` on, whose event there claims
    /// `prev_hash` (an export that starts mid-chain: what came before is taken on trust).
    pub fn starting_at(seq: i64, prev_hash: [u8; 32]) -> Self {
        Self {
            expected_prev: prev_hash,
            expected_seq: seq,
            ..Self::default()
        }
    }

    /// The first failure so far: its position and what was wrong.
    pub fn failure(&self) -> Option<(i64, &str)> {
        self.failure.as_ref().map(|(seq, p)| (*seq, p.as_str()))
    }

    /// Feeds the next event in `seq` order. Stops checking after the first failure.
    pub fn push(&mut self, event: &AuditEvent) {
        if self.failure.is_some() {
            return;
        }
        let problem = if event.seq != self.expected_seq {
            Some(format!(
                "expected seq {}, found {}",
                self.expected_seq, event.seq
            ))
        } else if event.prev_hash != self.expected_prev {
            Some("prev_hash does not match the previous event".to_owned())
        } else if !event.hash_is_valid() {
            Some("hash does not match the event's fields".to_owned())
        } else {
            None
        };
        match problem {
            Some(p) => self.failure = Some((event.seq, p)),
            None => {
                self.checked += 1;
                self.expected_seq += 1;
                self.expected_prev = event.hash;
            }
        }
    }

    /// `head` is the chain head recorded for the tenant (its last hash and seq), which also
    /// catches a truncated tail.
    pub fn finish(self, head: Option<(i64, [u8; 32])>) -> ChainReport {
        let mut failure = self.failure;
        if failure.is_none() {
            if let Some((seq, hash)) = head {
                if seq != self.expected_seq - 1 || hash != self.expected_prev {
                    failure = Some((
                        self.expected_seq,
                        format!(
                            "chain ends at seq {} but the tenant head is seq {seq}",
                            self.expected_seq - 1
                        ),
                    ));
                }
            }
        }
        ChainReport {
            valid: failure.is_none(),
            events_checked: self.checked,
            first_bad_seq: failure.as_ref().map(|f| f.0),
            problem: failure.map(|f| f.1),
            checkpoints_verified: 0,
            last_checkpoint_seq: None,
            archived_through: None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn chain_of(n: i64) -> Vec<AuditEvent> {
        let tenant = TenantId::new();
        let mut prev = GENESIS_HASH;
        (1..=n)
            .map(|seq| {
                let e = AuditEvent::chain(
                    tenant,
                    seq,
                    prev,
                    AuditDraft::new(AuditEventType::SecretWrite, Actor::system()).path("a/b"),
                );
                prev = e.hash;
                e
            })
            .collect()
    }

    fn verify(events: &[AuditEvent]) -> ChainReport {
        let mut v = ChainVerifier::default();
        events.iter().for_each(|e| v.push(e));
        let head = events.last().map(|e| (e.seq, e.hash));
        v.finish(head)
    }

    #[test]
    fn an_untouched_chain_verifies() {
        let report = verify(&chain_of(5));
        assert!(report.valid, "{report:?}");
        assert_eq!(report.events_checked, 5);
    }

    #[test]
    fn an_edited_field_breaks_the_chain_at_that_event() {
        let mut events = chain_of(5);
        events[2].draft.success = false;
        let report = verify(&events);
        assert!(!report.valid);
        assert_eq!(report.first_bad_seq, Some(3));
    }

    #[test]
    fn a_deleted_event_breaks_the_chain() {
        let mut events = chain_of(5);
        events.remove(1);
        let report = verify(&events);
        // The first row that fails is the one after the gap.
        assert_eq!(report.first_bad_seq, Some(3));
        assert!(report.problem.unwrap().contains("expected seq 2"));
    }

    #[test]
    fn a_truncated_tail_is_caught_by_the_head() {
        let events = chain_of(5);
        let mut v = ChainVerifier::default();
        events[..3].iter().for_each(|e| v.push(e));
        let report = v.finish(Some((5, events[4].hash)));
        assert!(!report.valid);
    }

    #[test]
    fn event_types_round_trip_through_their_names() {
        for &t in AuditEventType::ALL {
            assert_eq!(t.as_str().parse::<AuditEventType>().unwrap(), t);
            assert_eq!(
                serde_json::to_string(&t).unwrap(),
                format!("\"{}\"", t.as_str())
            );
        }
    }
}
