//! Operators: the humans (and their automation) who manage a tenant.
//!
//! Operator tokens are checked against the store on every request (no cache), so a revocation
//! takes effect on the very next call. A tenant always keeps at least one active admin: the
//! last one cannot be revoked, or nobody could manage the tenant any more.

use agent_secret_core::api::{CreatedOperator, OperatorInfo, OperatorList, Role};
use agent_secret_core::credential::{issue_with_id, CredentialKind};
use agent_secret_core::ids::OperatorId;

use super::auth::OperatorPrincipal;
use super::{validate_name, App, RequestContext, ServiceError, ServiceResult};
use crate::audit::{now_micros, AuditDraft, AuditEventType};
use crate::store::{OperatorRecord, OperatorRevocation};

pub async fn create(
    app: &App,
    caller: OperatorPrincipal,
    name: &str,
    role: Role,
    ctx: &RequestContext,
) -> ServiceResult<CreatedOperator> {
    caller.require(&[Role::Admin])?;
    validate_name(name)?;
    let id = OperatorId::new();
    let credential = issue_with_id(CredentialKind::Operator, id.0, &app.pepper);
    let record = OperatorRecord {
        id,
        tenant_id: caller.tenant,
        name: name.to_owned(),
        role,
        key_hash: credential.hash.to_vec(),
        created_at: now_micros(),
        revoked_at: None,
    };
    let audit = AuditDraft::new(AuditEventType::OperatorCreated, caller.actor())
        .client(ctx.ip_string(), ctx.user_agent.clone())
        .reason(format!("operator {id} ({}) role {}", name, role.as_str()));
    app.store.create_operator(&record, audit).await?;
    Ok(CreatedOperator {
        id: id.to_string(),
        role,
        operator_token: credential.token.expose().to_owned(),
    })
}

pub async fn list(app: &App, caller: OperatorPrincipal) -> ServiceResult<OperatorList> {
    caller.require(&[Role::Admin])?;
    let operators = app.store.list_operators(caller.tenant).await?;
    Ok(OperatorList {
        operators: operators.into_iter().map(info).collect(),
    })
}

/// Revokes an operator's token at once. Refused with `conflict` for the tenant's last active
/// admin and for an operator already revoked; `not_found` for an unknown id.
pub async fn revoke(
    app: &App,
    caller: OperatorPrincipal,
    id: OperatorId,
    ctx: &RequestContext,
) -> ServiceResult<OperatorInfo> {
    caller.require(&[Role::Admin])?;
    let audit = AuditDraft::new(AuditEventType::OperatorRevoked, caller.actor())
        .client(ctx.ip_string(), ctx.user_agent.clone())
        .reason(format!("operator {id}"));
    match app
        .store
        .revoke_operator(caller.tenant, id, now_micros(), audit)
        .await?
    {
        OperatorRevocation::Revoked => {}
        OperatorRevocation::NotFound => return Err(ServiceError::NotFound("operator")),
        OperatorRevocation::AlreadyRevoked => {
            return Err(ServiceError::Conflict(format!(
                "operator {id} is already revoked"
            )))
        }
        OperatorRevocation::LastAdmin => {
            return Err(ServiceError::Conflict(format!(
                "operator {id} is the tenant's last active admin; create another admin first"
            )))
        }
    }
    app.store
        .get_operator(caller.tenant, id)
        .await?
        .map(info)
        .ok_or(ServiceError::NotFound("operator"))
}

fn info(op: OperatorRecord) -> OperatorInfo {
    OperatorInfo {
        id: op.id.to_string(),
        name: op.name,
        role: op.role,
        created_at: op.created_at,
        revoked_at: op.revoked_at,
    }
}
