//! Scoped tokens: short-lived, narrowly scoped credentials an agent presents to its sidecar.

use agent_secret_core::api::{
    ErrorCode, IssueTokenRequest, IssuedToken, Role, Sensitivity, TokenInfo, TokenList,
    TokenStatus, WatchEvent,
};
use agent_secret_core::cidr::parse_cidr;
use agent_secret_core::credential::{issue_with_id, CredentialKind};
use agent_secret_core::ids::{AgentId, TenantId, TokenId};
use agent_secret_core::scope::Scope;
use chrono::{DateTime, Duration, Utc};
use ipnet::IpNet;

use super::auth::{AgentPrincipal, OperatorPrincipal, Principal};
use super::{approvals, ceilings, unlocks, App, RequestContext, ServiceError, ServiceResult};
use crate::audit::{now_micros, Actor, AuditDraft, AuditEventType};
use crate::store::{IssueOutcome, NewToken, TokenRecord};

pub const MAX_SCOPES: usize = 32;
pub const MAX_CIDRS: usize = 64;

pub fn parse_scopes(raw: &[String]) -> ServiceResult<Vec<Scope>> {
    if raw.is_empty() || raw.len() > MAX_SCOPES {
        return Err(ServiceError::invalid(
            ErrorCode::InvalidScope,
            format!("a token needs 1 to {MAX_SCOPES} scopes"),
        ));
    }
    raw.iter()
        .map(|s| {
            Scope::parse(s)
                .map_err(|e| ServiceError::invalid(ErrorCode::InvalidScope, e.to_string()))
        })
        .collect()
}

/// CIDRs, v4 or v6; a bare address means just that address.
pub fn parse_cidrs(raw: &[String]) -> ServiceResult<Vec<IpNet>> {
    if raw.len() > MAX_CIDRS {
        return Err(ServiceError::invalid(
            ErrorCode::InvalidCidr,
            format!("ip_allowlist may hold at most {MAX_CIDRS} entries"),
        ));
    }
    raw.iter()
        .map(|s| {
            parse_cidr(s).map_err(|e| ServiceError::invalid(ErrorCode::InvalidCidr, e.to_string()))
        })
        .collect()
}

fn expiry(app: &App, ttl_seconds: u64, now: DateTime<Utc>) -> ServiceResult<DateTime<Utc>> {
    let max = app.policy.max_token_ttl_seconds;
    if ttl_seconds == 0 || ttl_seconds > max {
        return Err(ServiceError::invalid(
            ErrorCode::InvalidTtl,
            format!("ttl_seconds must be between 1 and {max}"),
        ));
    }
    let ttl = i64::try_from(ttl_seconds)
        .ok()
        .and_then(Duration::try_seconds)
        .ok_or_else(|| ServiceError::invalid(ErrorCode::InvalidTtl, "ttl_seconds is too large"))?;
    Ok(now + ttl)
}

/// Issues a token within the agent's ceiling. One whose scopes cover a sensitive or critical
/// secret (or, with `request_access`, reach outside the ceiling) is issued `pending_approval`
/// with an approval request, and turns active once humans approve it (`approvals`); the
/// others are active at once, approved for the most sensitive secret they cover.
pub async fn issue(
    app: &App,
    agent: AgentPrincipal,
    request: IssueTokenRequest,
    ctx: &RequestContext,
) -> ServiceResult<IssuedToken> {
    let actor = agent.actor();
    issue_as(app, agent, actor, request, ctx).await
}

/// [`issue`] for `agent`, audited with `actor` as who asked (a Kubernetes service account
/// exchanging its token, `workload_identity`).
pub async fn issue_as(
    app: &App,
    agent: AgentPrincipal,
    actor: Actor,
    request: IssueTokenRequest,
    ctx: &RequestContext,
) -> ServiceResult<IssuedToken> {
    let scopes = parse_scopes(&request.scopes)?;
    let ip_allowlist = parse_cidrs(request.ip_allowlist.as_deref().unwrap_or_default())?;
    if request.max_uses == Some(0) {
        return Err(ServiceError::invalid(
            ErrorCode::InvalidRequest,
            "max_uses must be at least 1",
        ));
    }
    let now = now_micros();
    let expires_at = expiry(app, request.ttl_seconds, now)?;
    let agent_record = app
        .store
        .get_agent(agent.tenant, agent.id)
        .await?
        .ok_or(ServiceError::Unauthenticated)?;
    let additions: Vec<Scope> = ceilings::outside(&agent_record.ceiling, &scopes)
        .into_iter()
        .cloned()
        .collect();
    if !additions.is_empty() && !request.request_access {
        return Err(not_permitted(app, agent, &additions, ctx).await);
    }
    let trust_tier = match &app.trust_tiers {
        Some(webhook) => webhook.tier(agent.tenant, agent.id).await,
        None => unlocks::tier(&agent_record),
    };
    let unlocks = unlocks::unlocks(
        app,
        &unlocks::Asked {
            agent: &agent_record,
            trust_tier,
            scopes: &scopes,
            ceiling_additions: &additions,
            ttl_seconds: request.ttl_seconds,
            ip_allowlist: ip_allowlist.iter().map(ToString::to_string).collect(),
            max_uses: request.max_uses.map(i64::from),
        },
    )
    .await?;
    let requirement = app.policy.approvals.policy.requirement_for(&unlocks);
    let pending = requirement.approvals > 0;
    let id = TokenId::new();
    let credential = issue_with_id(CredentialKind::Token, id.0, &app.pepper);
    let record = TokenRecord {
        id,
        tenant_id: agent.tenant,
        agent_id: agent.id,
        scopes: scopes.clone(),
        key_hash: credential.hash.to_vec(),
        status: if pending {
            TokenStatus::PendingApproval
        } else {
            TokenStatus::Active
        },
        approved_sensitivity: if pending {
            Sensitivity::Standard
        } else {
            unlocks.highest_sensitivity()
        },
        ip_allowlist,
        max_uses: request.max_uses.map(i64::from),
        uses: 0,
        expires_at,
        created_at: now,
        revoked_at: None,
    };
    let approval = pending.then(|| {
        approvals::new_request(app, Some(id), agent.id, agent.tenant, &actor, unlocks, now)
    });
    let audit = match &approval {
        None => AuditDraft::new(AuditEventType::TokenIssued, actor.clone())
            .client(ctx.ip_string(), ctx.user_agent.clone())
            .reason(format!(
                "token {id}; scopes {}; approved for {} secrets",
                request.scopes.join(" "),
                record.approved_sensitivity.as_str()
            )),
        Some(a) => AuditDraft::new(AuditEventType::ApprovalRequested, actor.clone())
            .client(ctx.ip_string(), ctx.user_agent.clone())
            .reason(format!(
                "approval {}; token {id}; scopes {}; {} secrets up to {}; digest {}; 0 of {}; \
                 delay {} s{}",
                a.id,
                request.scopes.join(" "),
                a.unlocks.secrets.len(),
                a.unlocks.highest_sensitivity().as_str(),
                hex::encode(&a.digest[..8]),
                a.required_approvals,
                a.delay_seconds,
                if additions.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; widens the ceiling by {}",
                        a.unlocks.ceiling_additions.join(" ")
                    )
                }
            )),
    };
    // Re-checked against the ceiling as committed: only the additions asked for may lie
    // outside it.
    let allowed = |ceiling: &[Scope]| {
        ceilings::outside(ceiling, &scopes)
            .iter()
            .all(|s| additions.contains(s))
    };
    let new = NewToken {
        token: &record,
        approval: approval.as_ref(),
        audit: vec![audit],
        allowed: &allowed,
    };
    match app.store.issue_token(new).await? {
        IssueOutcome::Issued => {}
        // Revoked while this request was in flight: its key is dead, as it would be a moment
        // later (see `LOCK_AGENT_FOR_ISSUE`).
        IssueOutcome::AgentRevoked => return Err(ServiceError::Unauthenticated),
        IssueOutcome::OutsideCeiling => return Err(not_permitted(app, agent, &scopes, ctx).await),
    }
    // Committed: only now may approvers hear of it.
    match &approval {
        Some(request) => app.notify_approval(
            request,
            &agent_record.name,
            super::notify::NoticeReason::TokenRequested,
        ),
        None => app.metrics.tokens_issued.inc(),
    }
    Ok(IssuedToken {
        id: id.to_string(),
        token: credential.token.expose().to_owned(),
        status: record.status,
        expires_at,
        approval_id: approval.map(|a| a.id.to_string()),
    })
}

/// 403 `scope_not_permitted`, with a failed `token.issued` event naming the scopes. The
/// refusal stands even if the event cannot be written (nothing was granted); that is logged.
async fn not_permitted(
    app: &App,
    agent: AgentPrincipal,
    outside: &[Scope],
    ctx: &RequestContext,
) -> ServiceError {
    let listed: Vec<String> = outside.iter().map(ToString::to_string).collect();
    let audit = AuditDraft::new(AuditEventType::TokenIssued, agent.actor())
        .client(ctx.ip_string(), ctx.user_agent.clone())
        .failed(format!(
            "{}; outside the agent's ceiling: {}",
            ErrorCode::ScopeNotPermitted.as_str(),
            listed.join(" ")
        ));
    if let Err(e) = app.store.append_audit(agent.tenant, audit).await {
        tracing::error!(error = %e, "could not audit a scope_not_permitted refusal");
    }
    ServiceError::denied(
        ErrorCode::ScopeNotPermitted,
        format!(
            "outside this agent's ceiling: {}; an admin can allow it (`agent allow`), or ask \
             with request_access to file an access request",
            listed.join(" ")
        ),
    )
}

/// A token is visible to operators of its tenant and to the agent that owns it; to anyone
/// else it does not exist.
async fn visible_token(app: &App, caller: Principal, id: TokenId) -> ServiceResult<TokenRecord> {
    let token = app
        .store
        .get_token(caller.tenant(), id)
        .await?
        .ok_or(ServiceError::NotFound("token"))?;
    match caller {
        Principal::Operator(op) => {
            op.require(&[Role::Admin, Role::Approver, Role::Auditor])?;
            Ok(token)
        }
        Principal::Agent(agent) if agent.id == token.agent_id => Ok(token),
        _ => Err(ServiceError::NotFound("token")),
    }
}

pub async fn get(app: &App, caller: Principal, id: TokenId) -> ServiceResult<TokenInfo> {
    let token = visible_token(app, caller, id).await?;
    Ok(info(&token, now_micros()))
}

/// Most tokens one listing returns.
pub const MAX_LISTED: u32 = 500;

/// The tenant's tokens (or one agent's) newest first, optionally only those in `status` as a
/// caller sees it (`expired` is derived). The status filter applies to the newest `limit`.
pub async fn list(
    app: &App,
    caller: OperatorPrincipal,
    agent: Option<AgentId>,
    status: Option<TokenStatus>,
    limit: Option<u32>,
) -> ServiceResult<TokenList> {
    caller.require(&[Role::Admin, Role::Approver, Role::Auditor])?;
    let limit = limit.unwrap_or(100).clamp(1, MAX_LISTED);
    let now = now_micros();
    let tokens = app
        .store
        .list_tokens(caller.tenant, agent, limit)
        .await?
        .iter()
        .map(|t| info(t, now))
        .filter(|t| status.is_none_or(|s| t.status == s))
        .collect();
    Ok(TokenList { tokens })
}

pub async fn revoke(
    app: &App,
    caller: Principal,
    id: TokenId,
    ctx: &RequestContext,
) -> ServiceResult<TokenInfo> {
    visible_token(app, caller, id).await?;
    let actor = match caller {
        Principal::Operator(op) => {
            op.require(&[Role::Admin])?;
            op.actor()
        }
        Principal::Agent(agent) => agent.actor(),
        Principal::Sidecar(sc) => Actor::new("sidecar", sc.id),
    };
    let now = now_micros();
    let audit = AuditDraft::new(AuditEventType::TokenRevoked, actor)
        .client(ctx.ip_string(), ctx.user_agent.clone())
        .reason(format!("token {id}"));
    revoke_and_publish(app, caller.tenant(), id, audit).await?;
    let token = visible_token(app, caller, id).await?;
    Ok(info(&token, now))
}

/// Revokes the token with `audit` in the same transaction and tells every sidecar to drop
/// its cached grant; whether it was revoked now (not before).
pub(crate) async fn revoke_and_publish(
    app: &App,
    tenant: TenantId,
    id: TokenId,
    audit: AuditDraft,
) -> ServiceResult<bool> {
    let revoked = app
        .store
        .revoke_token(tenant, id, audit.occurred_at, audit)
        .await?;
    if revoked {
        let event = WatchEvent::TokenRevoked {
            token_id: id.to_string(),
        };
        app.events.publish(tenant, event).await;
    }
    Ok(revoked)
}

/// The state a caller sees: `expired` is derived, never stored.
pub fn effective_status(token: &TokenRecord, now: DateTime<Utc>) -> TokenStatus {
    match token.status {
        TokenStatus::Active if token.expires_at <= now => TokenStatus::Expired,
        other => other,
    }
}

pub fn info(token: &TokenRecord, now: DateTime<Utc>) -> TokenInfo {
    TokenInfo {
        id: token.id.to_string(),
        agent_id: token.agent_id.to_string(),
        scopes: token.scopes.iter().map(ToString::to_string).collect(),
        status: effective_status(token, now),
        approved_sensitivity: token.approved_sensitivity,
        ip_allowlist: token.ip_allowlist.iter().map(ToString::to_string).collect(),
        max_uses: token.max_uses,
        uses: token.uses,
        expires_at: token.expires_at,
        created_at: token.created_at,
        revoked_at: token.revoked_at,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn cidrs_accept_v4_v6_and_bare_addresses() {
        let nets = parse_cidrs(&[
            "10.0.0.0/8".into(),
            "2001:db8::/32".into(),
            "192.0.2.7".into(),
            "::1".into(),
        ])
        .unwrap();
        assert_eq!(nets[2].to_string(), "192.0.2.7/32");
        assert_eq!(nets[3].to_string(), "::1/128");
    }

    #[test]
    fn malformed_cidrs_are_invalid_cidr() {
        for bad in ["10.0.0.0/33", "not-an-ip", "10.0.0", "::1/129", ""] {
            let err = parse_cidrs(&[bad.into()]).unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidCidr, "{bad}");
        }
    }

    #[test]
    fn malformed_scopes_are_invalid_scope() {
        for bad in [
            "secrets:reed:a",
            "secrets:read:",
            "read:a/b",
            "secrets:read:a/**/b",
        ] {
            let err = parse_scopes(&[bad.into()]).unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidScope, "{bad}");
        }
        assert_eq!(
            parse_scopes(&[]).unwrap_err().code(),
            ErrorCode::InvalidScope
        );
    }
}
