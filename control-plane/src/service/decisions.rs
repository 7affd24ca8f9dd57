//! Human decisions on approval requests, and who may make them.
//!
//! Only operators with role `approver` or `admin` decide, from a password session with its
//! second factor (`human_session`) — an operator API token only where `[approvals]
//! token_approver_roles` allows its role, an agent key never (the API refuses it before this).
//! The operator who created the agent may not approve its requests unless configured, an
//! operator never decides their own request, and the same human counts once per digest. A
//! decision binds to the request's digest as evaluated at that moment.

use agent_secret_core::api::{ApprovalInfo, ApprovalStatus, DecideApproval, ErrorCode, Role};
use agent_secret_core::ids::{AgentId, ApprovalId, OperatorId, TenantId};

use super::approvals::evaluate;
use super::sessions::HumanOperator;
use super::{App, RequestContext, ServiceError, ServiceResult};
use crate::audit::{now_micros, Actor, AuditDraft, AuditEventType};
use crate::store::{DecisionOutcome, DecisionRecord};

/// Longest comment kept with a decision.
pub const MAX_COMMENT_CHARS: usize = 500;

/// Who decides: a human in a password + second-factor session, or an operator API token where
/// `token_approver_roles` allows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decider {
    pub tenant: TenantId,
    pub operator: OperatorId,
    pub role: Role,
    /// True for a human's password session whose login took a second factor (the API sets it
    /// only for operators with a confirmed TOTP enrollment, which every login must then
    /// present); false for an operator API token.
    pub human_session: bool,
}

impl Decider {
    fn actor(&self) -> Actor {
        Actor::new("operator", self.operator)
    }
}

/// The decider a human's session makes, if its login took a second factor: a confirmed TOTP
/// enrollment makes every login of the operator present a code. `forbidden` otherwise.
pub async fn human_decider(app: &App, human: HumanOperator) -> ServiceResult<Decider> {
    let account = app.store.get_account(human.tenant, human.id).await?;
    if account.is_none_or(|a| a.totp_confirmed_at.is_none()) {
        return Err(ServiceError::Forbidden(
            "approvals need a second factor: enroll and confirm TOTP first".into(),
        ));
    }
    Ok(Decider {
        tenant: human.tenant,
        operator: human.id,
        role: human.role,
        human_session: true,
    })
}

/// Records `decider`'s decision. Refused (403 `forbidden`) for an API token unless the config
/// allows its role, for roles other than approver and admin, for the requester themselves and,
/// unless allowed, for the agent's creator; 409 `conflict` when the request is no longer
/// pending, when this human already decided on this digest, or when `digest` is not the
/// request's current one (the approver reviewed something that has changed since).
pub async fn decide(
    app: &App,
    decider: Decider,
    id: ApprovalId,
    approve: bool,
    body: &DecideApproval,
    ctx: &RequestContext,
) -> ServiceResult<ApprovalInfo> {
    let settings = &app.policy.approvals;
    if !matches!(decider.role, Role::Approver | Role::Admin) {
        return Err(ServiceError::Forbidden(
            "only approvers and admins decide approval requests".into(),
        ));
    }
    if !decider.human_session && !settings.token_approver_roles.contains(&decider.role) {
        return Err(ServiceError::Forbidden(
            "approvals need a human's password session with its second factor; operator API \
             tokens may not decide unless [approvals] token_approver_roles allows the role"
                .into(),
        ));
    }
    let comment = validate_comment(body.comment.as_deref())?;
    // Evaluate first: the decision binds to what the request unlocks now.
    let current = evaluate(app, decider.tenant, id).await?;
    if current.status != ApprovalStatus::Pending {
        return Err(ServiceError::Conflict(format!(
            "approval {id} is {}",
            current.status
        )));
    }
    if current.requested_by == decider.actor().0 {
        return Err(ServiceError::Forbidden(
            "an operator never decides their own request".into(),
        ));
    }
    let agent_id: AgentId = current
        .agent_id
        .parse()
        .map_err(|_| ServiceError::Internal("stored agent id".into()))?;
    let agent = app
        .store
        .get_agent(decider.tenant, agent_id)
        .await?
        .ok_or(ServiceError::NotFound("agent"))?;
    if approve && agent.created_by == Some(decider.operator) && !settings.allow_creator_approval {
        return Err(ServiceError::Forbidden(
            "the operator who created the agent may not approve its requests".into(),
        ));
    }
    if let Some(seen) = &body.digest {
        if !seen.eq_ignore_ascii_case(&current.digest) {
            return Err(ServiceError::Conflict(format!(
                "approval {id} changed since it was reviewed (digest {}): review it again",
                &current.digest[..16.min(current.digest.len())]
            )));
        }
    }
    let digest: [u8; 32] = hex::decode(&current.digest)
        .ok()
        .and_then(|d| d.try_into().ok())
        .ok_or_else(|| ServiceError::Internal("stored digest".into()))?;
    let now = now_micros();
    let decision = DecisionRecord {
        request_id: id,
        operator_id: decider.operator,
        approve,
        digest,
        comment: comment.clone(),
        decided_at: now,
    };
    let (event_type, so_far) = if approve {
        (
            AuditEventType::ApprovalApproved,
            format!(
                "{} of {}",
                current.approvals_counted.saturating_add(1),
                current.required_approvals
            ),
        )
    } else {
        (AuditEventType::ApprovalDenied, "denied".to_owned())
    };
    let audit = AuditDraft::new(event_type, decider.actor())
        .client(ctx.ip_string(), ctx.user_agent.clone())
        .reason(format!(
            "approval {id}; {}; digest {}; {so_far}{}{}",
            current.token_id.as_deref().map_or_else(
                || format!("ceiling of agent {}", current.agent_id),
                |t| format!("token {t}")
            ),
            &current.digest[..16],
            if decider.human_session {
                ""
            } else {
                "; by API token"
            },
            comment
                .as_deref()
                .map(|c| format!("; comment: {c}"))
                .unwrap_or_default()
        ));
    match app
        .store
        .record_decision(decider.tenant, &decision, audit)
        .await?
    {
        DecisionOutcome::Recorded => {}
        DecisionOutcome::NotFound => return Err(ServiceError::NotFound("approval request")),
        DecisionOutcome::NotPending => {
            return Err(ServiceError::Conflict(format!(
                "approval {id} is no longer pending"
            )))
        }
        DecisionOutcome::Duplicate => {
            return Err(ServiceError::Conflict(format!(
                "you already decided approval {id} as it stands"
            )))
        }
    }
    evaluate(app, decider.tenant, id).await
}

fn validate_comment(comment: Option<&str>) -> ServiceResult<Option<String>> {
    let Some(c) = comment else { return Ok(None) };
    if c.chars().count() > MAX_COMMENT_CHARS || c.chars().any(char::is_control) {
        return Err(ServiceError::invalid(
            ErrorCode::InvalidRequest,
            format!("comment must be at most {MAX_COMMENT_CHARS} printable characters"),
        ));
    }
    Ok(Some(c.to_owned()).filter(|c| !c.is_empty()))
}
