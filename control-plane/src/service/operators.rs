//! Operators: the humans (and their automation) who manage a tenant.

use agent_secret_core::api::{CreatedOperator, OperatorInfo, OperatorList, Role};
use agent_secret_core::credential::{issue_with_id, CredentialKind};
use agent_secret_core::ids::OperatorId;

use super::auth::OperatorPrincipal;
use super::{validate_name, App, RequestContext, ServiceResult};
use crate::audit::{now_micros, AuditDraft, AuditEventType};
use crate::store::OperatorRecord;

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
        operators: operators
            .into_iter()
            .map(|op| OperatorInfo {
                id: op.id.to_string(),
                name: op.name,
                role: op.role,
                created_at: op.created_at,
                revoked_at: op.revoked_at,
            })
            .collect(),
    })
}
