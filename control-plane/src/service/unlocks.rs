//! What an approval request would unlock, read afresh: every existing secret the token's
//! `read` scopes cover with its sensitivity, the scopes, TTL, IP allowlist, `max_uses`, the
//! agent and its trust tier, and the scopes it would add to the ceiling. Its digest
//! (`agent_secret_core::policy::approval::digest`) is what approvals bind to.

use agent_secret_core::api::{UnlockedSecret, Unlocks};
use agent_secret_core::scope::{Action, Scope};

use super::{App, ServiceError, ServiceResult};
use crate::store::AgentRecord;

/// What a token request would unlock now: the secrets its `read` scopes cover, with their
/// sensitivities, and everything else the approvers see.
pub struct Asked<'a> {
    pub agent: &'a AgentRecord,
    pub trust_tier: u8,
    pub scopes: &'a [Scope],
    pub ceiling_additions: &'a [Scope],
    pub ttl_seconds: u64,
    pub ip_allowlist: Vec<String>,
    pub max_uses: Option<i64>,
}

pub async fn unlocks(app: &App, asked: &Asked<'_>) -> ServiceResult<Unlocks> {
    let tenant = asked.agent.tenant_id;
    let mut secrets: Vec<UnlockedSecret> = Vec::new();
    for scope in asked.scopes.iter().filter(|s| s.action == Action::Read) {
        let prefix = scope.pattern.literal_prefix();
        for secret in app.store.list_secrets(tenant, prefix.as_ref()).await? {
            if scope.pattern.matches(&secret.path) {
                secrets.push(UnlockedSecret {
                    path: secret.path.to_string(),
                    sensitivity: secret.sensitivity,
                });
            }
        }
    }
    secrets.sort();
    secrets.dedup();
    let strings = |scopes: &[Scope]| {
        let mut v: Vec<String> = scopes.iter().map(ToString::to_string).collect();
        v.sort();
        v
    };
    let mut ip_allowlist = asked.ip_allowlist.clone();
    ip_allowlist.sort();
    Ok(Unlocks {
        agent_id: asked.agent.id.to_string(),
        trust_tier: asked.trust_tier,
        scopes: strings(asked.scopes),
        secrets,
        ceiling_additions: strings(asked.ceiling_additions),
        ttl_seconds: asked.ttl_seconds,
        ip_allowlist,
        max_uses: asked.max_uses,
    })
}

/// The agent's tier as a number the policy takes (stored tiers are 0–4).
pub fn tier(agent: &AgentRecord) -> u8 {
    u8::try_from(agent.trust_tier.clamp(0, 4)).unwrap_or(0)
}

/// What the stored request unlocks against the secrets and the agent as they are now.
pub(super) async fn current_unlocks(
    app: &App,
    agent: &AgentRecord,
    stored: &Unlocks,
) -> ServiceResult<Unlocks> {
    let parse = |list: &[String]| {
        list.iter()
            .map(|s| Scope::parse(s).map_err(|e| ServiceError::Internal(e.to_string())))
            .collect::<ServiceResult<Vec<_>>>()
    };
    let scopes = parse(&stored.scopes)?;
    let additions = parse(&stored.ceiling_additions)?;
    // A tier from the trust-tier webhook was fixed when the request was made; otherwise the
    // agent's stored tier counts, so an admin changing it changes the digest.
    let trust_tier = if app.trust_tiers.is_some() {
        stored.trust_tier
    } else {
        tier(agent)
    };
    unlocks(
        app,
        &Asked {
            agent,
            trust_tier,
            scopes: &scopes,
            ceiling_additions: &additions,
            ttl_seconds: stored.ttl_seconds,
            ip_allowlist: stored.ip_allowlist.clone(),
            max_uses: stored.max_uses,
        },
    )
    .await
}
