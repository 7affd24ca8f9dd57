//! Agent ceilings: the scopes an agent may ever be granted, set by admins.
//!
//! A token request is granted only within the ceiling (each requested scope inside one
//! ceiling entry, `agent_secret_core::scope::within_ceiling`); anything outside is refused
//! `scope_not_permitted`, or becomes an access request when the agent asks for one. Narrowing
//! a ceiling revokes, in the same transaction, every token of the agent it leaves outside,
//! and sidecars hear of it on the watch stream like any revocation. An approver who may not
//! change a ceiling asks for it instead (`request_access`), and another human approves.

use agent_secret_core::api::{AgentCeiling, ApprovalInfo, ErrorCode, Role, WatchEvent};
use agent_secret_core::ids::{AgentId, TokenId};
use agent_secret_core::scope::{within_ceiling, Scope};

use super::auth::OperatorPrincipal;
use super::{approvals, unlocks, App, RequestContext, ServiceError, ServiceResult};
use crate::audit::{now_micros, AuditDraft, AuditEventType};
use crate::store::{CeilingChange, StoreError};

/// Most entries one ceiling holds.
pub const MAX_CEILING: usize = 64;

/// Parses ceiling entries (full scopes, `secrets:read:demo/**`), refusing malformed ones.
pub fn parse_ceiling(raw: &[String]) -> ServiceResult<Vec<Scope>> {
    if raw.len() > MAX_CEILING {
        return Err(ServiceError::invalid(
            ErrorCode::InvalidScope,
            format!("a ceiling holds at most {MAX_CEILING} scopes"),
        ));
    }
    let mut scopes = Vec::with_capacity(raw.len());
    for s in raw {
        let scope = Scope::parse(s)
            .map_err(|e| ServiceError::invalid(ErrorCode::InvalidScope, e.to_string()))?;
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    Ok(scopes)
}

/// The requested scopes the ceiling does not include.
pub fn outside<'a>(ceiling: &[Scope], requested: &'a [Scope]) -> Vec<&'a Scope> {
    requested
        .iter()
        .filter(|s| !within_ceiling(ceiling, s))
        .collect()
}

/// Adds `scopes` to the ceiling.
pub async fn allow(
    app: &App,
    caller: OperatorPrincipal,
    id: AgentId,
    scopes: &[String],
    ctx: &RequestContext,
) -> ServiceResult<AgentCeiling> {
    let added = parse_ceiling(scopes)?;
    let agent = current(app, caller, id).await?;
    let mut ceiling = agent;
    for scope in added {
        if !ceiling.contains(&scope) {
            ceiling.push(scope);
        }
    }
    set(app, caller, id, ceiling, "allowed", scopes, ctx).await
}

/// Removes `scopes` from the ceiling (each must be an entry as written), revoking the agent's
/// tokens the narrower ceiling leaves outside.
pub async fn deny(
    app: &App,
    caller: OperatorPrincipal,
    id: AgentId,
    scopes: &[String],
    ctx: &RequestContext,
) -> ServiceResult<AgentCeiling> {
    let removed = parse_ceiling(scopes)?;
    let mut ceiling = current(app, caller, id).await?;
    if let Some(missing) = removed.iter().find(|s| !ceiling.contains(s)) {
        return Err(ServiceError::invalid(
            ErrorCode::InvalidScope,
            format!("`{missing}` is not in the agent's ceiling (remove entries as listed by `agent show`)"),
        ));
    }
    ceiling.retain(|s| !removed.contains(s));
    set(app, caller, id, ceiling, "denied", scopes, ctx).await
}

async fn current(app: &App, caller: OperatorPrincipal, id: AgentId) -> ServiceResult<Vec<Scope>> {
    caller.require(&[Role::Admin])?;
    let agent = app
        .store
        .get_agent(caller.tenant, id)
        .await?
        .ok_or(ServiceError::NotFound("agent"))?;
    Ok(agent.ceiling)
}

async fn set(
    app: &App,
    caller: OperatorPrincipal,
    id: AgentId,
    ceiling: Vec<Scope>,
    verb: &str,
    scopes: &[String],
    ctx: &RequestContext,
) -> ServiceResult<AgentCeiling> {
    let audit = AuditDraft::new(AuditEventType::AgentCeilingChanged, caller.actor())
        .client(ctx.ip_string(), ctx.user_agent.clone())
        .reason(format!("agent {id}; {verb} {}", scopes.join(" ")));
    let token_audit = |token: TokenId| {
        AuditDraft::new(AuditEventType::TokenRevoked, caller.actor())
            .client(ctx.ip_string(), ctx.user_agent.clone())
            .reason(format!(
                "token {token}; outside agent {id}'s narrowed ceiling"
            ))
    };
    let kept = ceiling.clone();
    let is_outside = move |token_scopes: &[Scope]| !outside(&kept, token_scopes).is_empty();
    let change = app
        .store
        .set_ceiling(
            caller.tenant,
            id,
            &ceiling,
            audit,
            &is_outside,
            &token_audit,
        )
        .await?;
    let revoked = match change {
        CeilingChange::Set { revoked } => revoked,
        CeilingChange::NotFound => return Err(ServiceError::NotFound("agent")),
        CeilingChange::Revoked => {
            return Err(ServiceError::Conflict(format!("agent {id} is revoked")))
        }
    };
    for token in &revoked {
        let event = WatchEvent::TokenRevoked {
            token_id: token.to_string(),
        };
        app.events.publish(caller.tenant, event).await;
    }
    let event = WatchEvent::AgentCeilingChanged {
        agent_id: id.to_string(),
    };
    app.events.publish(caller.tenant, event).await;
    Ok(AgentCeiling {
        agent_id: id.to_string(),
        ceiling: ceiling.iter().map(ToString::to_string).collect(),
        tokens_revoked: revoked.len() as u64,
    })
}

/// An approver or admin asks for `scopes` to join an agent's ceiling: a request with no token
/// that another human must approve (the requester never may). Admins may also widen a ceiling
/// directly (`ceilings::allow`); this is the way for approvers, and for admins who want a
/// second pair of eyes. Only scopes outside the ceiling are filed; `conflict` if none is.
pub async fn request_access(
    app: &App,
    caller: OperatorPrincipal,
    agent_id: AgentId,
    scopes: &[String],
    ctx: &RequestContext,
) -> ServiceResult<ApprovalInfo> {
    caller.require(&[Role::Admin, Role::Approver])?;
    let requested = parse_ceiling(scopes)?;
    if requested.is_empty() {
        return Err(ServiceError::invalid(
            ErrorCode::InvalidScope,
            "name at least one scope",
        ));
    }
    let agent = app
        .store
        .get_agent(caller.tenant, agent_id)
        .await?
        .ok_or(ServiceError::NotFound("agent"))?;
    let additions: Vec<Scope> = outside(&agent.ceiling, &requested)
        .into_iter()
        .cloned()
        .collect();
    if additions.is_empty() {
        return Err(ServiceError::Conflict(format!(
            "agent {agent_id}'s ceiling already allows every scope asked for"
        )));
    }
    let unlocks = unlocks::unlocks(
        app,
        &unlocks::Asked {
            agent: &agent,
            trust_tier: unlocks::tier(&agent),
            scopes: &additions,
            ceiling_additions: &additions,
            ttl_seconds: 0,
            ip_allowlist: Vec::new(),
            max_uses: None,
        },
    )
    .await?;
    let now = now_micros();
    let request = approvals::new_request(
        app,
        None,
        agent_id,
        caller.tenant,
        &caller.actor(),
        unlocks,
        now,
    );
    let audit = AuditDraft::new(AuditEventType::ApprovalRequested, caller.actor())
        .client(ctx.ip_string(), ctx.user_agent.clone())
        .reason(format!(
            "approval {}; ceiling of agent {agent_id}; widens it by {}; digest {}; 0 of {}",
            request.id,
            request.unlocks.ceiling_additions.join(" "),
            approvals::short(&request.digest),
            request.required_approvals
        ));
    app.store
        .insert_access_request(&request, audit)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => {
                ServiceError::Conflict(format!("agent {agent_id} is revoked"))
            }
            other => other.into(),
        })?;
    app.notify_approval(
        &request,
        &agent.name,
        super::notify::NoticeReason::AccessRequested,
    );
    Ok(approvals::info(&request, &[], now))
}
