//! Human approval of sensitive access: approval requests, decisions, and the moment a pending
//! token turns active.
//!
//! The rules are `agent_secret_core::policy::approval`'s (requirement by sensitivity × trust
//! tier, quorum of distinct humans over the current digest, time lock). This module adds what
//! needs the store: what a request unlocks *now* (re-read on every evaluation, so a secret
//! created under a wildcard or a raised sensitivity changes the digest and voids earlier
//! approvals), who may decide, and settling a request exactly once across replicas. A request
//! is evaluated when a human decides, when the sidecar resolves its token, and by the
//! activation task (`activation`) — whichever comes first activates the token. Who may decide is
//! `decisions`.
//! `docs/approvals.md` describes the lifecycle for operators.

use std::time::Duration;

use agent_secret_core::api::{
    ApprovalDecision, ApprovalInfo, ApprovalList, ApprovalStatus, Role, Unlocks, WatchEvent,
};
use agent_secret_core::ids::{AgentId, ApprovalId, TenantId, TokenId};
use agent_secret_core::policy::approval::{self, Approval, ApprovalPolicy, Quorum, Requirement};
use agent_secret_core::scope::Scope;
use chrono::{DateTime, Utc};

use super::{unlocks, App, ServiceError, ServiceResult};
use crate::audit::{now_micros, Actor, AuditDraft, AuditEventType};
use crate::store::{ApprovalRecord, DecisionRecord, Settlement};

/// Most requests one listing returns.
pub const MAX_LISTED: i64 = 500;

/// `[approvals]`: the policy and who may decide.
#[derive(Clone, Debug)]
pub struct ApprovalSettings {
    pub policy: ApprovalPolicy,
    /// A request nobody decided within this is expired and its token denied.
    pub request_ttl: Duration,
    /// Whether the operator who created an agent may approve its requests.
    pub allow_creator_approval: bool,
    /// Roles whose operator API tokens (the CLI) may decide. Empty: only a human's password
    /// session with its second factor may.
    pub token_approver_roles: Vec<Role>,
    /// How often the activation task evaluates pending requests.
    pub activation_interval: Duration,
}

impl Default for ApprovalSettings {
    fn default() -> Self {
        ApprovalSettings {
            policy: ApprovalPolicy::default(),
            request_ttl: Duration::from_secs(86_400),
            allow_creator_approval: false,
            token_approver_roles: Vec::new(),
            activation_interval: Duration::from_secs(5),
        }
    }
}

fn seconds(d: Duration) -> u64 {
    d.as_secs()
}

/// A fresh request for `token` (pending; `None` for an operator's request to widen the
/// agent's ceiling), with what it unlocks and its requirement.
pub fn new_request(
    app: &App,
    token: Option<TokenId>,
    agent: AgentId,
    tenant: TenantId,
    requested_by: &Actor,
    unlocks: Unlocks,
    now: DateTime<Utc>,
) -> ApprovalRecord {
    let requirement = app.policy.approvals.policy.requirement_for(&unlocks);
    let ttl = chrono::Duration::from_std(app.policy.approvals.request_ttl)
        .unwrap_or(chrono::Duration::days(1));
    ApprovalRecord {
        id: ApprovalId::new(),
        tenant_id: tenant,
        token_id: token,
        agent_id: agent,
        requested_by: requested_by.0.clone(),
        status: ApprovalStatus::Pending,
        digest: approval::digest(&unlocks),
        unlocks,
        required_approvals: requirement.approvals,
        delay_seconds: seconds(requirement.delay),
        time_lock_until: None,
        created_at: now,
        expires_at: now + ttl,
        decided_at: None,
    }
}

/// Re-reads what a pending request unlocks and settles it if its quorum and delay are met (or
/// it expired). Returns the request as it stands afterwards. Safe to run anywhere, any number
/// of times: the store settles a request once.
pub async fn evaluate(app: &App, tenant: TenantId, id: ApprovalId) -> ServiceResult<ApprovalInfo> {
    let (mut request, decisions) = app
        .store
        .get_approval(tenant, id)
        .await?
        .ok_or(ServiceError::NotFound("approval request"))?;
    if request.status != ApprovalStatus::Pending {
        return Ok(info(&request, &decisions, now_micros()));
    }
    let now = now_micros();
    if now >= request.expires_at {
        let audit =
            AuditDraft::new(AuditEventType::ApprovalExpired, Actor::system()).reason(format!(
                "approval {id}; {}; {} of {} approvals",
                subject(&request),
                counted(&request, &decisions),
                request.required_approvals
            ));
        app.store
            .settle_approval(
                tenant,
                id,
                &request.digest,
                &Settlement::Expired,
                now,
                vec![audit],
            )
            .await?;
        return reread(app, tenant, id).await;
    }
    let agent = app
        .store
        .get_agent(tenant, request.agent_id)
        .await?
        .ok_or(ServiceError::NotFound("agent"))?;
    let current = unlocks::current_unlocks(app, &agent, &request.unlocks).await?;
    let digest = approval::digest(&current);
    let requirement = app.policy.approvals.policy.requirement_for(&current);
    let approvals: Vec<Approval> = decisions
        .iter()
        .filter(|d| d.approve)
        .map(|d| Approval {
            operator: d.operator_id,
            digest: d.digest,
            at: d.decided_at,
        })
        .collect();
    let quorum = approval::quorum(requirement, &approvals, &digest, now);
    let time_lock_until = match quorum {
        Quorum::TimeLocked { until } => Some(until),
        Quorum::Pending { .. } | Quorum::Met => None,
    };
    let changed = digest != request.digest;
    if changed
        || requirement.approvals != request.required_approvals
        || seconds(requirement.delay) != request.delay_seconds
        || time_lock_until != request.time_lock_until
    {
        let audit = changed.then(|| {
            AuditDraft::new(AuditEventType::ApprovalRequested, Actor::system()).reason(format!(
                "approval {id}; {}; what it unlocks changed (digest {}): approvals of the \
                 earlier digest no longer count; 0 of {}",
                subject(&request),
                short(&digest),
                requirement.approvals
            ))
        });
        request.unlocks = current.clone();
        request.digest = digest;
        request.required_approvals = requirement.approvals;
        request.delay_seconds = seconds(requirement.delay);
        request.time_lock_until = time_lock_until;
        let updated = app.store.update_evaluation(tenant, &request, audit).await?;
        // Approvals given so far no longer count: approvers must look again (unless nobody
        // needs to any more). Two replicas evaluating the same change at once may both say so.
        if changed && updated && requirement.approvals > 0 {
            app.notify_approval(
                &request,
                &agent.name,
                super::notify::NoticeReason::UnlocksChanged,
            );
        }
    }
    if quorum == Quorum::Met {
        settle_approved(app, &request, &current, requirement).await?;
    }
    reread(app, tenant, id).await
}

async fn settle_approved(
    app: &App,
    request: &ApprovalRecord,
    unlocks: &Unlocks,
    requirement: Requirement,
) -> ServiceResult<()> {
    let tenant = request.tenant_id;
    let ceiling_additions = unlocks
        .ceiling_additions
        .iter()
        .map(|s| Scope::parse(s).map_err(|e| ServiceError::Internal(e.to_string())))
        .collect::<ServiceResult<Vec<_>>>()?;
    let sensitivity = unlocks.highest_sensitivity();
    let mut audit = Vec::new();
    if let Some(token) = request.token_id {
        audit.push(
            AuditDraft::new(AuditEventType::TokenIssued, Actor::system()).reason(format!(
                "token {token}; activated by approval {} ({} approvals, digest {}); approved for \
                 {} secrets",
                request.id,
                requirement.approvals,
                short(&request.digest),
                sensitivity.as_str()
            )),
        );
    }
    if !ceiling_additions.is_empty() {
        audit.push(
            AuditDraft::new(AuditEventType::AgentCeilingChanged, Actor::system()).reason(format!(
                "agent {}; approval {} added {}",
                request.agent_id,
                request.id,
                unlocks.ceiling_additions.join(" ")
            )),
        );
    }
    let settlement = Settlement::Approved {
        sensitivity,
        ceiling_additions: ceiling_additions.clone(),
    };
    let settled = app
        .store
        .settle_approval(
            tenant,
            request.id,
            &request.digest,
            &settlement,
            now_micros(),
            audit,
        )
        .await?;
    if settled {
        if let Some(token) = request.token_id {
            app.metrics.tokens_issued.inc();
            let event = WatchEvent::TokenApproved {
                token_id: token.to_string(),
            };
            app.events.publish(tenant, event).await;
        }
        if !ceiling_additions.is_empty() {
            let event = WatchEvent::AgentCeilingChanged {
                agent_id: request.agent_id.to_string(),
            };
            app.events.publish(tenant, event).await;
        }
    }
    Ok(())
}

async fn reread(app: &App, tenant: TenantId, id: ApprovalId) -> ServiceResult<ApprovalInfo> {
    let (request, decisions) = app
        .store
        .get_approval(tenant, id)
        .await?
        .ok_or(ServiceError::NotFound("approval request"))?;
    Ok(info(&request, &decisions, now_micros()))
}

/// A pending token met its quorum but nobody noticed yet: settle it now. Called by resolve for
/// a `pending_approval` token; true if the token is active afterwards.
pub async fn activate_for_token(
    app: &App,
    tenant: TenantId,
    token: TokenId,
) -> ServiceResult<bool> {
    let Some((request, _)) = app.store.get_approval_for_token(tenant, token).await? else {
        return Ok(false);
    };
    let after = evaluate(app, tenant, request.id).await?;
    Ok(after.status == ApprovalStatus::Approved)
}

/// Operators of the tenant (any role) may read approval requests.
pub async fn list(
    app: &App,
    tenant: TenantId,
    status: Option<ApprovalStatus>,
) -> ServiceResult<ApprovalList> {
    let now = now_micros();
    let approvals = app
        .store
        .list_approvals(tenant, status, MAX_LISTED)
        .await?
        .iter()
        .map(|(r, d)| info(r, d, now))
        .collect();
    Ok(ApprovalList { approvals })
}

pub async fn show(app: &App, tenant: TenantId, id: ApprovalId) -> ServiceResult<ApprovalInfo> {
    evaluate(app, tenant, id).await
}

/// Distinct humans whose approval of the stored digest counts.
fn counted(request: &ApprovalRecord, decisions: &[DecisionRecord]) -> u8 {
    let mut humans: Vec<_> = decisions
        .iter()
        .filter(|d| d.approve && d.digest == request.digest)
        .map(|d| d.operator_id)
        .collect();
    humans.sort();
    humans.dedup();
    u8::try_from(humans.len()).unwrap_or(u8::MAX)
}

/// What a request is about, for audit reasons: its token, or the agent whose ceiling it widens.
fn subject(request: &ApprovalRecord) -> String {
    match request.token_id {
        Some(token) => format!("token {token}"),
        None => format!("ceiling of agent {}", request.agent_id),
    }
}

pub(super) fn short(digest: &[u8; 32]) -> String {
    hex::encode(&digest[..8])
}

pub fn info(
    request: &ApprovalRecord,
    decisions: &[DecisionRecord],
    _now: DateTime<Utc>,
) -> ApprovalInfo {
    ApprovalInfo {
        id: request.id.to_string(),
        token_id: request.token_id.map(|t| t.to_string()),
        agent_id: request.agent_id.to_string(),
        requested_by: request.requested_by.clone(),
        status: request.status,
        unlocks: request.unlocks.clone(),
        digest: hex::encode(request.digest),
        required_approvals: request.required_approvals,
        delay_seconds: request.delay_seconds,
        approvals_counted: counted(request, decisions),
        time_lock_until: request.time_lock_until,
        decisions: decisions
            .iter()
            .map(|d| ApprovalDecision {
                operator_id: d.operator_id.to_string(),
                decision: if d.approve { "approve" } else { "deny" }.to_owned(),
                digest: hex::encode(d.digest),
                comment: d.comment.clone(),
                decided_at: d.decided_at,
            })
            .collect(),
        created_at: request.created_at,
        expires_at: request.expires_at,
        decided_at: request.decided_at,
    }
}
