//! JSON types of the control-plane API that both the control plane and the sidecar speak.
//!
//! Error codes are part of the public contract (DESIGN.md): scripts and sidecars branch on
//! them, so a code is never renamed once shipped.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Stable error codes. Serialized in `snake_case`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    // Request shape
    InvalidRequest,
    InvalidJson,
    PayloadTooLarge,
    InvalidScope,
    InvalidPath,
    InvalidHost,
    InvalidCidr,
    InvalidTtl,
    InvalidSecretValue,
    InvalidPlaceholder,
    // Caller authentication and authorisation
    Unauthenticated,
    Forbidden,
    // Resolve and sidecar denials
    TokenInvalid,
    TokenExpired,
    TokenRevoked,
    ScopeDenied,
    DestinationNotAllowed,
    IpNotAllowed,
    ApprovalPending,
    ApprovalDenied,
    UsesExhausted,
    SecretNotFound,
    ControlPlaneUnavailable,
    /// Too many requests for a token, agent, key or client address (429 with `Retry-After`).
    RateLimited,
    /// The sidecar reached the upstream but could not complete the exchange (an HTTP-level
    /// failure pingora raised, e.g. a malformed upstream response). Never emitted by the
    /// control plane.
    UpstreamError,
    /// The sidecar could not reach the upstream (connect, TLS or I/O failure). 502.
    UpstreamUnavailable,
    /// The sidecar could not resolve the upstream's host name. 502.
    UpstreamUnresolvable,
    /// The upstream's response cannot be scanned for injected secrets (an unknown
    /// content-encoding, or a protocol upgrade after injection); the sidecar refuses it. 502.
    UnscannableResponse,
    /// The sidecar's audit spool is full: no secret is injected until it drains. 503.
    AuditUnavailable,
    /// The sidecar refuses CONNECT: a tunnel would hide the headers it must rewrite. 405.
    MethodNotAllowed,
    // Resources
    NotFound,
    Conflict,
    // Server side (details are logged, never returned)
    KmsUnavailable,
    /// The KMS answered, but its answer failed an integrity check (CRC32C mismatch, wrong key
    /// name, unverified flags): a tampered or corrupted path to the KMS, never retried blindly.
    KmsIntegrityFailed,
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidJson => "invalid_json",
            Self::PayloadTooLarge => "payload_too_large",
            Self::InvalidScope => "invalid_scope",
            Self::InvalidPath => "invalid_path",
            Self::InvalidHost => "invalid_host",
            Self::InvalidCidr => "invalid_cidr",
            Self::InvalidTtl => "invalid_ttl",
            Self::InvalidSecretValue => "invalid_secret_value",
            Self::InvalidPlaceholder => "invalid_placeholder",
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden => "forbidden",
            Self::TokenInvalid => "token_invalid",
            Self::TokenExpired => "token_expired",
            Self::TokenRevoked => "token_revoked",
            Self::ScopeDenied => "scope_denied",
            Self::DestinationNotAllowed => "destination_not_allowed",
            Self::IpNotAllowed => "ip_not_allowed",
            Self::ApprovalPending => "approval_pending",
            Self::ApprovalDenied => "approval_denied",
            Self::UsesExhausted => "uses_exhausted",
            Self::SecretNotFound => "secret_not_found",
            Self::ControlPlaneUnavailable => "control_plane_unavailable",
            Self::RateLimited => "rate_limited",
            Self::UpstreamError => "upstream_error",
            Self::UpstreamUnavailable => "upstream_unavailable",
            Self::UpstreamUnresolvable => "upstream_unresolvable",
            Self::UnscannableResponse => "unscannable_response",
            Self::AuditUnavailable => "audit_unavailable",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::KmsUnavailable => "kms_unavailable",
            Self::KmsIntegrityFailed => "kms_integrity_failed",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The control plane refuses request bodies above this with 413 `payload_too_large`. Shared so
/// that the sidecar sizes its audit batches below it.
pub const MAX_REQUEST_BODY_BYTES: usize = 64 * 1024;

/// `{"error": {"code": "...", "message": "..."}}`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code,
                message: message.into(),
            },
        }
    }
}

/// How carefully a secret is guarded. Ordered: `Standard < Sensitive < Critical`.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Sensitivity {
    #[default]
    Standard,
    Sensitive,
    Critical,
}

impl Sensitivity {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Standard => "standard",
            Self::Sensitive => "sensitive",
            Self::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "standard" => Some(Self::Standard),
            "sensitive" => Some(Self::Sensitive),
            "critical" => Some(Self::Critical),
            _ => None,
        }
    }
}

/// A scoped token's lifecycle state. `Expired` is derived from `expires_at`, never stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TokenStatus {
    PendingApproval,
    Active,
    Denied,
    Revoked,
    Expired,
}

impl TokenStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::PendingApproval => "pending_approval",
            Self::Active => "active",
            Self::Denied => "denied",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending_approval" => Some(Self::PendingApproval),
            "active" => Some(Self::Active),
            "denied" => Some(Self::Denied),
            "revoked" => Some(Self::Revoked),
            "expired" => Some(Self::Expired),
            _ => None,
        }
    }
}

/// Operator roles, enforced per endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Approver,
    Auditor,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Approver => "approver",
            Self::Auditor => "auditor",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Self::Admin),
            "approver" => Some(Self::Approver),
            "auditor" => Some(Self::Auditor),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Requests and responses. Requests reject unknown fields: a typo must not be silently ignored.
// Timestamps are RFC 3339 UTC with microseconds. Ids are hyphenated UUIDs.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSidecarRequest {
    pub name: String,
}

#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedSidecar {
    pub id: String,
    /// Shown once. Only its keyed hash is stored.
    pub sidecar_key: String,
}

impl fmt::Debug for CreatedSidecar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedSidecar")
            .field("id", &self.id)
            .field("sidecar_key", &"[REDACTED]")
            .finish()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SidecarInfo {
    pub id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SidecarList {
    pub sidecars: Vec<SidecarInfo>,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAgentRequest {
    pub name: String,
    #[serde(default)]
    pub trust_tier: Option<i32>,
}

#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedAgent {
    pub id: String,
    /// Shown once. Only its keyed hash is stored.
    pub agent_key: String,
}

impl fmt::Debug for CreatedAgent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedAgent")
            .field("id", &self.id)
            .field("agent_key", &"[REDACTED]")
            .finish()
    }
}

#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RotatedAgentKey {
    pub id: String,
    pub agent_key: String,
    /// Tokens of this agent revoked by the rotation.
    pub tokens_revoked: u64,
}

impl fmt::Debug for RotatedAgentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RotatedAgentKey")
            .field("id", &self.id)
            .field("tokens_revoked", &self.tokens_revoked)
            .field("agent_key", &"[REDACTED]")
            .finish()
    }
}

/// `POST /v1/agents/{id}/revoke`: the agent key no longer authenticates and every token the
/// agent held is revoked in the store, in one transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RevokedAgent {
    pub id: String,
    pub revoked_at: DateTime<Utc>,
    /// Tokens of this agent revoked with it.
    pub tokens_revoked: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AgentInfo {
    pub id: String,
    pub name: String,
    pub trust_tier: i32,
    pub created_at: DateTime<Utc>,
    pub key_rotated_at: Option<DateTime<Utc>>,
    /// Set once the agent is revoked (`POST /v1/agents/{id}/revoke`).
    #[serde(default)]
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AgentList {
    pub agents: Vec<AgentInfo>,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOperatorRequest {
    pub name: String,
    pub role: Role,
}

#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedOperator {
    pub id: String,
    pub role: Role,
    /// Shown once. Only its keyed hash is stored.
    pub operator_token: String,
}

impl fmt::Debug for CreatedOperator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedOperator")
            .field("id", &self.id)
            .field("role", &self.role)
            .field("operator_token", &"[REDACTED]")
            .finish()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OperatorInfo {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OperatorList {
    pub operators: Vec<OperatorInfo>,
}

/// `PUT /v1/secrets/{path}`. The value is a string (UTF-8); CR, LF and NUL are refused because
/// the value ends up in an HTTP header.
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutSecretRequest {
    pub value: String,
    #[serde(default)]
    pub sensitivity: Option<Sensitivity>,
    pub allowed_hosts: Vec<String>,
}

impl fmt::Debug for PutSecretRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PutSecretRequest")
            .field("value", &"[REDACTED]")
            .field("sensitivity", &self.sensitivity)
            .field("allowed_hosts", &self.allowed_hosts)
            .finish()
    }
}

impl Drop for PutSecretRequest {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.value);
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PutSecretResponse {
    pub path: String,
    pub version: i64,
}

/// Metadata only: no endpoint ever returns a secret value.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SecretMetadata {
    pub path: String,
    pub version: i64,
    pub sensitivity: Sensitivity,
    pub allowed_hosts: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SecretList {
    pub secrets: Vec<SecretMetadata>,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeletedSecret {
    pub path: String,
    pub deleted: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueTokenRequest {
    pub scopes: Vec<String>,
    pub ttl_seconds: u64,
    #[serde(default)]
    pub ip_allowlist: Option<Vec<String>>,
    #[serde(default)]
    pub max_uses: Option<u32>,
}

#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IssuedToken {
    pub id: String,
    /// Shown once. Only its keyed hash is stored.
    pub token: String,
    pub status: TokenStatus,
    pub expires_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("id", &self.id)
            .field("token", &"[REDACTED]")
            .field("status", &self.status)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenInfo {
    pub id: String,
    pub agent_id: String,
    pub scopes: Vec<String>,
    pub status: TokenStatus,
    pub approved_sensitivity: Sensitivity,
    pub ip_allowlist: Vec<String>,
    pub max_uses: Option<i64>,
    pub uses: i64,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// `POST /v1/sidecar/resolve`: may this token send these secrets to this host, from this IP?
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    pub token: String,
    pub paths: Vec<String>,
    /// The host the sidecar will actually dial, `host[:port]`.
    pub destination_host: String,
    pub client_ip: String,
}

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

/// One injection as the sidecar saw it, for `POST /v1/sidecar/audit`. Becomes a `secret.read`
/// event in the tenant's chain with the sidecar as reporter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SidecarAuditEvent {
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
        if self.token_id.is_some() || self.path.is_some() || self.success {
            return None;
        }
        self.reason
            .as_deref()?
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
    /// The control plane may have missed change events (its PostgreSQL listener reconnected):
    /// drop every cached grant and value.
    Resync,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn error_codes_serialize_as_their_stable_names() {
        for code in [
            ErrorCode::TokenInvalid,
            ErrorCode::ScopeDenied,
            ErrorCode::DestinationNotAllowed,
            ErrorCode::UsesExhausted,
            ErrorCode::ControlPlaneUnavailable,
            ErrorCode::UpstreamUnresolvable,
            ErrorCode::UnscannableResponse,
            ErrorCode::AuditUnavailable,
            ErrorCode::MethodNotAllowed,
        ] {
            assert_eq!(
                serde_json::to_string(&code).unwrap(),
                format!("\"{}\"", code.as_str())
            );
        }
    }

    #[test]
    fn credentials_shown_once_never_appear_in_debug() {
        let shown = [
            format!(
                "{:?}",
                CreatedSidecar {
                    id: "i".into(),
                    sidecar_key: "assc_SECRET".into()
                }
            ),
            format!(
                "{:?}",
                CreatedAgent {
                    id: "i".into(),
                    agent_key: "assa_SECRET".into()
                }
            ),
            format!(
                "{:?}",
                RotatedAgentKey {
                    id: "i".into(),
                    agent_key: "assa_SECRET".into(),
                    tokens_revoked: 1
                }
            ),
            format!(
                "{:?}",
                CreatedOperator {
                    id: "i".into(),
                    role: Role::Admin,
                    operator_token: "asso_SECRET".into()
                }
            ),
        ];
        for s in shown {
            assert!(!s.contains("SECRET") && s.contains("[REDACTED]"), "{s}");
        }
    }

    #[test]
    fn sensitivity_is_ordered_by_care() {
        assert!(Sensitivity::Standard < Sensitivity::Sensitive);
        assert!(Sensitivity::Sensitive < Sensitivity::Critical);
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
