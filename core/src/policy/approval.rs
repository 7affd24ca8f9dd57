//! Human approval of sensitive access: how many distinct humans must approve a token and how
//! long after the quorum it may be used, by the sensitivity of the most sensitive secret it
//! would unlock and the requesting agent's trust tier; and whether given approvals meet that.
//!
//! Defaults: `standard` needs none; `sensitive` one approval; `critical` two from distinct
//! humans and a 15-minute time lock. An agent at or above the trusted tier (3) needs one fewer,
//! never fewer than 0, and never fewer than two for `critical` — whatever the configuration
//! says. Approvals count only while they approve the request's current digest (what it would
//! unlock): a new secret under a wildcard or a raised sensitivity changes the digest and
//! voids them. One human counts once. Pure functions; the caller passes `now`.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::api::{Sensitivity, Unlocks};
use crate::ids::OperatorId;

/// `critical` never needs fewer distinct approvers than this.
pub const MIN_CRITICAL_APPROVALS: u8 = 2;

/// Approvals and time lock for one sensitivity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Requirement {
    pub approvals: u8,
    /// Counted from the moment the quorum was reached.
    pub delay: Duration,
}

impl Requirement {
    pub const NONE: Requirement = Requirement {
        approvals: 0,
        delay: Duration::ZERO,
    };
}

/// The configured policy (`[approvals]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApprovalPolicy {
    pub sensitive: Requirement,
    pub critical: Requirement,
    /// Agents at or above this trust tier need one approval fewer.
    pub trusted_tier: u8,
}

impl Default for ApprovalPolicy {
    fn default() -> ApprovalPolicy {
        ApprovalPolicy {
            sensitive: Requirement {
                approvals: 1,
                delay: Duration::ZERO,
            },
            critical: Requirement {
                approvals: 2,
                delay: Duration::from_secs(15 * 60),
            },
            trusted_tier: 3,
        }
    }
}

impl ApprovalPolicy {
    /// What a token unlocking secrets up to `sensitivity` for an agent of `tier` needs.
    pub fn requirement(&self, sensitivity: Sensitivity, tier: u8) -> Requirement {
        let trusted = tier >= self.trusted_tier;
        let fewer = |r: Requirement| Requirement {
            approvals: r.approvals.saturating_sub(u8::from(trusted)),
            ..r
        };
        match sensitivity {
            Sensitivity::Standard => Requirement::NONE,
            Sensitivity::Sensitive => fewer(self.sensitive),
            Sensitivity::Critical => {
                let r = fewer(self.critical);
                Requirement {
                    approvals: r.approvals.max(MIN_CRITICAL_APPROVALS),
                    ..r
                }
            }
        }
    }
}

impl ApprovalPolicy {
    /// What approving `unlocks` needs: by its most sensitive secret and the agent's tier, and
    /// at least one human whenever it would widen the agent's ceiling (an access request is
    /// never granted by policy alone).
    pub fn requirement_for(&self, unlocks: &Unlocks) -> Requirement {
        let r = self.requirement(unlocks.highest_sensitivity(), unlocks.trust_tier);
        if unlocks.ceiling_additions.is_empty() {
            r
        } else {
            Requirement {
                approvals: r.approvals.max(1),
                ..r
            }
        }
    }
}

/// Domain separation for [`digest`]: a digest of anything else never equals one of these.
const DIGEST_DOMAIN: &[u8] = b"agent-secret-store/approval-unlocks/v1\n";

/// The SHA-256 that approvals bind to: over a domain tag and the JSON of `unlocks` (fields in
/// declaration order, lists sorted by whoever built it), so equal content has one digest and
/// any change to what would be unlocked gives another.
pub fn digest(unlocks: &Unlocks) -> [u8; 32] {
    let mut sorted = unlocks.clone();
    sorted.scopes.sort();
    sorted.secrets.sort();
    sorted.ceiling_additions.sort();
    sorted.ip_allowlist.sort();
    // Serializing plain strings, numbers and enums cannot fail; an empty encoding would still
    // be domain-separated and would only ever fail to match.
    let json = serde_json::to_vec(&sorted).unwrap_or_default();
    let mut h = Sha256::new();
    h.update(DIGEST_DOMAIN);
    h.update(&json);
    h.finalize().into()
}

/// One human's approval of one version (digest) of an approval request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Approval {
    pub operator: OperatorId,
    pub digest: [u8; 32],
    pub at: DateTime<Utc>,
}

/// Where an approval request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quorum {
    /// Fewer distinct humans than needed approved the current digest.
    Pending {
        have: u8,
        need: u8,
    },
    /// The quorum was reached; the token may be used from `until`.
    TimeLocked {
        until: DateTime<Utc>,
    },
    Met,
}

/// Whether `approvals` of `digest` meet `requirement` at `now`. Approvals of another digest do
/// not count, and a human who approved twice counts once (from their first approval). The
/// time lock runs from the approval that completed the quorum.
pub fn quorum(
    requirement: Requirement,
    approvals: &[Approval],
    digest: &[u8; 32],
    now: DateTime<Utc>,
) -> Quorum {
    let mut first_by_human: BTreeMap<OperatorId, DateTime<Utc>> = BTreeMap::new();
    for a in approvals.iter().filter(|a| &a.digest == digest) {
        first_by_human
            .entry(a.operator)
            .and_modify(|t| *t = (*t).min(a.at))
            .or_insert(a.at);
    }
    let need = requirement.approvals;
    if need == 0 {
        return Quorum::Met;
    }
    let mut times: Vec<DateTime<Utc>> = first_by_human.into_values().collect();
    let have = u8::try_from(times.len()).unwrap_or(u8::MAX);
    if have < need {
        return Quorum::Pending { have, need };
    }
    times.sort();
    let reached = times[usize::from(need) - 1];
    let delay = chrono::Duration::from_std(requirement.delay).unwrap_or(chrono::Duration::MAX);
    let until = reached
        .checked_add_signed(delay)
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    if now < until {
        Quorum::TimeLocked { until }
    } else {
        Quorum::Met
    }
}

#[cfg(test)]
mod tests;
