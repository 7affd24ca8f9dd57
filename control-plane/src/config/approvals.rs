//! `[approvals]`: how many humans must approve access to sensitive and critical secrets, the
//! time lock after the quorum, who may decide, and the optional trust-tier webhook. Turned into
//! the service's `ApprovalSettings` by [`ApprovalsConfig::settings`].

use std::path::PathBuf;
use std::time::Duration;

use agent_secret_core::api::Role;
use agent_secret_core::policy::approval::{ApprovalPolicy, Requirement};
use serde::Deserialize;

use super::error::{invalid, ConfigError};
use crate::service::approvals::ApprovalSettings;

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApprovalsConfig {
    /// Distinct humans who must approve a token that unlocks a `sensitive` secret.
    pub sensitive_approvals: u8,
    /// Time lock after the last needed approval of a `sensitive` token.
    pub sensitive_delay_seconds: u64,
    /// For `critical` secrets; never below 2, whatever is written here.
    pub critical_approvals: u8,
    pub critical_delay_seconds: u64,
    /// Agents at or above this trust tier (0–4) need one approval fewer (never fewer than 0,
    /// and never fewer than 2 for `critical`). 5 turns the reduction off.
    pub trusted_tier: u8,
    /// A request nobody decided within this expires and its token is denied.
    pub request_ttl_seconds: u64,
    /// Whether the operator who created an agent may approve its requests.
    pub allow_creator_approval: bool,
    /// Roles (`approver`, `admin`) whose operator API tokens may approve and deny, e.g. from
    /// the CLI. Empty (the default): only a human's password session with its second factor.
    pub token_approver_roles: Vec<Role>,
    /// How often every replica evaluates pending requests (time locks run out, requests
    /// expire) without waiting for a resolve or a decision.
    pub activation_interval_seconds: u64,
    pub trust_tier_webhook: Option<TrustTierWebhookConfig>,
}

/// `[approvals.trust_tier_webhook]`: `POST url {"agent_id", "tenant_id"}` → `{"tier": n}`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustTierWebhookConfig {
    pub url: String,
    #[serde(default = "default_webhook_timeout_ms")]
    pub timeout_ms: u64,
    /// The tier used when the webhook fails or answers nonsense. Keep it low.
    #[serde(default)]
    pub fallback_tier: u8,
    /// CA of an `https` webhook.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_webhook_timeout_ms() -> u64 {
    2000
}

impl Default for ApprovalsConfig {
    fn default() -> Self {
        let policy = ApprovalPolicy::default();
        let settings = ApprovalSettings::default();
        ApprovalsConfig {
            sensitive_approvals: policy.sensitive.approvals,
            sensitive_delay_seconds: policy.sensitive.delay.as_secs(),
            critical_approvals: policy.critical.approvals,
            critical_delay_seconds: policy.critical.delay.as_secs(),
            trusted_tier: policy.trusted_tier,
            request_ttl_seconds: settings.request_ttl.as_secs(),
            allow_creator_approval: settings.allow_creator_approval,
            token_approver_roles: settings.token_approver_roles,
            activation_interval_seconds: settings.activation_interval.as_secs(),
            trust_tier_webhook: None,
        }
    }
}

impl ApprovalsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.request_ttl_seconds == 0 {
            return Err(invalid(
                "approvals.request_ttl_seconds",
                "must be at least 1",
            ));
        }
        if self.activation_interval_seconds == 0 {
            return Err(invalid(
                "approvals.activation_interval_seconds",
                "must be at least 1",
            ));
        }
        if self.trusted_tier > 5 {
            return Err(invalid("approvals.trusted_tier", "must be 0-5 (5: never)"));
        }
        if let Some(role) = self
            .token_approver_roles
            .iter()
            .find(|r| !matches!(r, Role::Approver | Role::Admin))
        {
            return Err(invalid(
                "approvals.token_approver_roles",
                &format!(
                    "`{}` may never approve; use approver or admin",
                    role.as_str()
                ),
            ));
        }
        if let Some(hook) = &self.trust_tier_webhook {
            if hook.fallback_tier > crate::service::trust_tiers::MAX_TIER {
                return Err(invalid(
                    "approvals.trust_tier_webhook.fallback_tier",
                    "must be 0-4",
                ));
            }
            if hook.timeout_ms == 0 {
                return Err(invalid(
                    "approvals.trust_tier_webhook.timeout_ms",
                    "must be at least 1",
                ));
            }
        }
        Ok(())
    }

    /// The service's view of this section.
    pub fn settings(&self) -> ApprovalSettings {
        ApprovalSettings {
            policy: ApprovalPolicy {
                sensitive: Requirement {
                    approvals: self.sensitive_approvals,
                    delay: Duration::from_secs(self.sensitive_delay_seconds),
                },
                critical: Requirement {
                    approvals: self.critical_approvals,
                    delay: Duration::from_secs(self.critical_delay_seconds),
                },
                trusted_tier: self.trusted_tier,
            },
            request_ttl: Duration::from_secs(self.request_ttl_seconds),
            allow_creator_approval: self.allow_creator_approval,
            token_approver_roles: self.token_approver_roles.clone(),
            activation_interval: Duration::from_secs(self.activation_interval_seconds),
        }
    }
}
