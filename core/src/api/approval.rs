//! Approval requests: what a pending token (or a request to widen an agent's ceiling) would
//! unlock, who has approved or denied it, and where its quorum stands. See
//! `docs/approvals.md` for the lifecycle.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Sensitivity;

/// Stored states of an approval request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    /// Waiting for approvals, or for the time lock after the quorum.
    Pending,
    /// The quorum and delay were met; the token is active.
    Approved,
    /// One human denied it; the token is denied.
    Denied,
    /// Nobody decided in time; the token is denied.
    Expired,
}

impl ApprovalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Approved, Self::Denied, Self::Expired]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

impl fmt::Display for ApprovalStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One secret a request would unlock, as it stands now.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
pub struct UnlockedSecret {
    pub path: String,
    pub sensitivity: Sensitivity,
}

/// Everything an approval request would unlock. Approvals bind to its digest
/// (`agent_secret_core::policy::approval::digest`): when any of it changes (a secret created
/// under a wildcard, a sensitivity raised, the agent's tier), approvals already given stop
/// counting. Lists are sorted, so equal content has one digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Unlocks {
    pub agent_id: String,
    pub trust_tier: u8,
    /// The token's scopes.
    pub scopes: Vec<String>,
    /// Every existing secret the `read` scopes cover, with its sensitivity.
    pub secrets: Vec<UnlockedSecret>,
    /// Scopes outside the agent's ceiling that approval adds to it (an access request).
    pub ceiling_additions: Vec<String>,
    pub ttl_seconds: u64,
    pub ip_allowlist: Vec<String>,
    pub max_uses: Option<i64>,
}

impl Unlocks {
    /// The most sensitive secret unlocked (`standard` when none).
    pub fn highest_sensitivity(&self) -> Sensitivity {
        self.secrets
            .iter()
            .map(|s| s.sensitivity)
            .max()
            .unwrap_or(Sensitivity::Standard)
    }
}

/// One human's recorded decision.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApprovalDecision {
    pub operator_id: String,
    /// `approve` or `deny`.
    pub decision: String,
    /// Hex SHA-256 of the unlocks the human saw; an approval counts only while it is current.
    pub digest: String,
    pub comment: Option<String>,
    pub decided_at: DateTime<Utc>,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApprovalInfo {
    pub id: String,
    /// The pending token; absent for an operator's request to widen a ceiling.
    pub token_id: Option<String>,
    pub agent_id: String,
    /// Who filed it: `agent:<id>` or `operator:<id>`.
    pub requested_by: String,
    pub status: ApprovalStatus,
    /// What approving unlocks, as it stands now.
    pub unlocks: Unlocks,
    /// Hex SHA-256 of `unlocks`; send it back with a decision to bind it to what you saw.
    pub digest: String,
    pub required_approvals: u8,
    pub delay_seconds: u64,
    /// Distinct humans whose approval of the current digest counts.
    pub approvals_counted: u8,
    /// Set once the quorum is met: the token turns active then.
    pub time_lock_until: Option<DateTime<Utc>>,
    pub decisions: Vec<ApprovalDecision>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApprovalList {
    pub approvals: Vec<ApprovalInfo>,
}

/// Body of `POST /v1/approvals/{id}/approve` and `/deny`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecideApproval {
    /// Up to 500 printable characters, kept in the decision and its audit event.
    #[serde(default)]
    pub comment: Option<String>,
    /// The digest the human reviewed; refused with `conflict` if the request changed since.
    #[serde(default)]
    pub digest: Option<String>,
}

/// Body of `PUT /v1/agents/{id}/ceiling`, `POST .../ceiling/allow` and `.../deny`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CeilingChange {
    pub scopes: Vec<String>,
}

/// Body of `PUT /v1/agents/{id}/trust-tier`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetTrustTier {
    /// 0–4; agents at or above `[approvals] trusted_tier` need one approval fewer.
    pub trust_tier: i32,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AgentCeiling {
    pub agent_id: String,
    pub ceiling: Vec<String>,
    /// Tokens revoked because the change left their scopes outside the ceiling.
    pub tokens_revoked: u64,
}
