//! Agents: identities that ask for scoped tokens with their agent key.
//!
//! Rotating an agent key is the response to a leak, so it also revokes every token the agent
//! holds, in the same transaction. Revoking an agent does the same for good: its key stops
//! authenticating and every token it holds is revoked in the store (not only in sidecar
//! caches), so a token of a revoked agent is refused by resolve from that commit on.

use agent_secret_core::api::{
    AgentInfo, AgentList, CreatedAgent, RevokedAgent, Role, RotatedAgentKey,
};
use agent_secret_core::api::{ErrorCode, WatchEvent};
use agent_secret_core::credential::{issue, CredentialKind};
use agent_secret_core::ids::AgentId;

use super::auth::OperatorPrincipal;
use super::{validate_name, App, RequestContext, ServiceError, ServiceResult};
use crate::audit::{now_micros, AuditDraft, AuditEventType};
use crate::store::{AgentRecord, StoreError};

/// Trust tiers are 0–4, set by operators (or answered by the trust-tier webhook).
const MAX_TRUST_TIER: i32 = super::trust_tiers::MAX_TIER as i32;

/// Creates an agent with the ceiling `allow` (empty: it may be granted nothing yet).
pub async fn create(
    app: &App,
    caller: OperatorPrincipal,
    name: &str,
    trust_tier: Option<i32>,
    allow: &[String],
    ctx: &RequestContext,
) -> ServiceResult<CreatedAgent> {
    caller.require(&[Role::Admin])?;
    validate_name(name)?;
    let ceiling = super::ceilings::parse_ceiling(allow)?;
    let trust_tier = trust_tier.unwrap_or(0);
    check_tier(trust_tier)?;
    let id = AgentId::new();
    let credential = issue(CredentialKind::Agent, &app.pepper);
    let record = AgentRecord {
        id,
        tenant_id: caller.tenant,
        name: name.to_owned(),
        trust_tier,
        key_id: credential.id,
        key_hash: credential.hash.to_vec(),
        created_at: now_micros(),
        key_rotated_at: None,
        revoked_at: None,
        ceiling,
        created_by: Some(caller.id),
    };
    let allowed = if allow.is_empty() {
        String::from("nothing")
    } else {
        allow.join(" ")
    };
    let audit = AuditDraft::new(AuditEventType::AgentCreated, caller.actor())
        .client(ctx.ip_string(), ctx.user_agent.clone())
        .reason(format!(
            "agent {id} ({name}); tier {trust_tier}; allowed {allowed}"
        ));
    app.store.create_agent(&record, audit).await?;
    Ok(CreatedAgent {
        id: id.to_string(),
        agent_key: credential.token.expose().to_owned(),
    })
}

pub async fn list(app: &App, caller: OperatorPrincipal) -> ServiceResult<AgentList> {
    caller.require(&[Role::Admin, Role::Approver, Role::Auditor])?;
    let agents = app.store.list_agents(caller.tenant).await?;
    Ok(AgentList {
        agents: agents.into_iter().map(info).collect(),
    })
}

pub async fn get(app: &App, caller: OperatorPrincipal, id: AgentId) -> ServiceResult<AgentInfo> {
    caller.require(&[Role::Admin, Role::Approver, Role::Auditor])?;
    app.store
        .get_agent(caller.tenant, id)
        .await?
        .map(info)
        .ok_or(ServiceError::NotFound("agent"))
}

pub async fn rotate_key(
    app: &App,
    caller: OperatorPrincipal,
    id: AgentId,
    ctx: &RequestContext,
) -> ServiceResult<RotatedAgentKey> {
    caller.require(&[Role::Admin])?;
    let credential = issue(CredentialKind::Agent, &app.pepper);
    let audit = AuditDraft::new(AuditEventType::AgentKeyRotated, caller.actor())
        .client(ctx.ip_string(), ctx.user_agent.clone())
        .reason(format!("agent {id}"));
    let revoked = app
        .store
        .rotate_agent_key(
            caller.tenant,
            id,
            credential.id,
            credential.hash.to_vec(),
            now_micros(),
            audit,
        )
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ServiceError::NotFound("agent"),
            StoreError::Conflict(why) => ServiceError::Conflict(format!("agent {id}: {why}")),
            other => other.into(),
        })?;
    let event = WatchEvent::AgentKeyRotated {
        agent_id: id.to_string(),
    };
    app.events.publish(caller.tenant, event).await;
    Ok(RotatedAgentKey {
        id: id.to_string(),
        agent_key: credential.token.expose().to_owned(),
        tokens_revoked: revoked,
    })
}

pub async fn revoke(
    app: &App,
    caller: OperatorPrincipal,
    id: AgentId,
    ctx: &RequestContext,
) -> ServiceResult<RevokedAgent> {
    caller.require(&[Role::Admin])?;
    let at = now_micros();
    let audit = AuditDraft::new(AuditEventType::AgentRevoked, caller.actor())
        .client(ctx.ip_string(), ctx.user_agent.clone())
        .reason(format!("agent {id}"));
    let token_audit = AuditDraft::new(AuditEventType::TokenRevoked, caller.actor())
        .client(ctx.ip_string(), ctx.user_agent.clone())
        .reason(format!("revoked with agent {id}"));
    let revoked = app
        .store
        .revoke_agent(caller.tenant, id, at, audit, token_audit)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ServiceError::NotFound("agent"),
            StoreError::Conflict(_) => ServiceError::Conflict(format!("agent {id} is revoked")),
            other => other.into(),
        })?;
    let event = WatchEvent::AgentRevoked {
        agent_id: id.to_string(),
    };
    app.events.publish(caller.tenant, event).await;
    Ok(RevokedAgent {
        id: id.to_string(),
        revoked_at: at,
        tokens_revoked: revoked,
    })
}

/// Sets the trust tier the approval policy reads (admins; 0–4). Pending requests of the agent
/// see the new tier at their next evaluation: their digest changes and approvals already given
/// stop counting.
pub async fn set_trust_tier(
    app: &App,
    caller: OperatorPrincipal,
    id: AgentId,
    trust_tier: i32,
    ctx: &RequestContext,
) -> ServiceResult<AgentInfo> {
    caller.require(&[Role::Admin])?;
    check_tier(trust_tier)?;
    let audit = AuditDraft::new(AuditEventType::AgentTrustTierSet, caller.actor())
        .client(ctx.ip_string(), ctx.user_agent.clone())
        .reason(format!("agent {id}; trust tier {trust_tier}"));
    if !app
        .store
        .set_trust_tier(caller.tenant, id, trust_tier, audit)
        .await?
    {
        return Err(ServiceError::NotFound("agent"));
    }
    get(app, caller, id).await
}

fn check_tier(trust_tier: i32) -> ServiceResult<()> {
    if (0..=MAX_TRUST_TIER).contains(&trust_tier) {
        return Ok(());
    }
    Err(ServiceError::invalid(
        ErrorCode::InvalidRequest,
        format!("trust_tier must be between 0 and {MAX_TRUST_TIER}"),
    ))
}

pub(super) fn info(record: AgentRecord) -> AgentInfo {
    AgentInfo {
        id: record.id.to_string(),
        name: record.name,
        trust_tier: record.trust_tier,
        created_at: record.created_at,
        key_rotated_at: record.key_rotated_at,
        revoked_at: record.revoked_at,
        ceiling: record.ceiling.iter().map(ToString::to_string).collect(),
        created_by: record.created_by.map(|o| o.to_string()),
    }
}
