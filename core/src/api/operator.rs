//! The operator API's JSON: identities (sidecars, agents, operators), secrets and tokens.
//!
//! Requests reject unknown fields: a typo must not be silently ignored. Timestamps are RFC 3339
//! UTC with microseconds; ids are hyphenated UUIDs. A credential shown once (a new key or
//! token) renders as `[REDACTED]` in `Debug`, and a secret value sent in is wiped on drop.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

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
    /// When it last authenticated to the control plane (to the minute).
    #[serde(default)]
    pub last_seen_at: Option<DateTime<Utc>>,
    /// The version it reported then (`agent-secret-sidecar/VERSION`).
    #[serde(default)]
    pub version: Option<String>,
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
    /// The agent's ceiling: the scopes it may ever be granted. Empty (the default) means every
    /// token request is refused `scope_not_permitted` until an admin allows something.
    #[serde(default)]
    pub allow: Vec<String>,
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
    /// The scopes the agent may ever be granted.
    #[serde(default)]
    pub ceiling: Vec<String>,
    /// The operator who created it (absent for agents older than ceilings).
    #[serde(default)]
    pub created_by: Option<String>,
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
    /// Scopes outside the agent's ceiling become an access request (the token waits
    /// `pending_approval` and approval widens the ceiling) instead of `scope_not_permitted`.
    #[serde(default)]
    pub request_access: bool,
}

/// `POST /v1/auth/kubernetes`: a pod's projected service-account token exchanged for a scoped
/// token of the agent its service account is bound to (docs/kubernetes.md).
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KubernetesTokenRequest {
    /// The projected service-account token (audience: the control plane's
    /// `[kubernetes] token_audience`).
    pub token: String,
    pub scopes: Vec<String>,
    /// At most the binding's `max_ttl_seconds`.
    pub ttl_seconds: u64,
    #[serde(default)]
    pub ip_allowlist: Option<Vec<String>>,
    #[serde(default)]
    pub max_uses: Option<u32>,
    #[serde(default)]
    pub request_access: bool,
}

impl fmt::Debug for KubernetesTokenRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubernetesTokenRequest")
            .field("token", &"[REDACTED]")
            .field("scopes", &self.scopes)
            .field("ttl_seconds", &self.ttl_seconds)
            .finish_non_exhaustive()
    }
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

/// `GET /v1/tokens`: newest first, at most `limit` (default 100, at most 500).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenList {
    pub tokens: Vec<TokenInfo>,
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
