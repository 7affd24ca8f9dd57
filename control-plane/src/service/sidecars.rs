//! Sidecars: each registered sidecar holds a key that lets it resolve its own tenant's tokens.

use agent_secret_core::api::{CreatedSidecar, Role, SidecarInfo, SidecarList};
use agent_secret_core::credential::{issue_with_id, CredentialKind};
use agent_secret_core::ids::SidecarId;

use super::auth::OperatorPrincipal;
use super::{validate_name, App, RequestContext, ServiceError, ServiceResult};
use crate::audit::{now_micros, AuditDraft, AuditEventType};
use crate::events::Signal;
use crate::store::SidecarRecord;

pub async fn create(
    app: &App,
    caller: OperatorPrincipal,
    name: &str,
    ctx: &RequestContext,
) -> ServiceResult<CreatedSidecar> {
    caller.require(&[Role::Admin])?;
    validate_name(name)?;
    let id = SidecarId::new();
    let credential = issue_with_id(CredentialKind::Sidecar, id.0, &app.pepper);
    let record = SidecarRecord {
        id,
        tenant_id: caller.tenant,
        name: name.to_owned(),
        key_hash: credential.hash.to_vec(),
        created_at: now_micros(),
        revoked_at: None,
    };
    let audit = AuditDraft::new(AuditEventType::SidecarCreated, caller.actor())
        .client(ctx.ip_string(), ctx.user_agent.clone())
        .reason(format!("sidecar {id} ({name})"));
    app.store.create_sidecar(&record, audit).await?;
    Ok(CreatedSidecar {
        id: id.to_string(),
        sidecar_key: credential.token.expose().to_owned(),
    })
}

pub async fn list(app: &App, caller: OperatorPrincipal) -> ServiceResult<SidecarList> {
    caller.require(&[Role::Admin, Role::Auditor])?;
    let sidecars = app.store.list_sidecars(caller.tenant).await?;
    Ok(SidecarList {
        sidecars: sidecars.into_iter().map(info).collect(),
    })
}

pub async fn revoke(
    app: &App,
    caller: OperatorPrincipal,
    id: SidecarId,
    ctx: &RequestContext,
) -> ServiceResult<SidecarInfo> {
    caller.require(&[Role::Admin])?;
    let audit = AuditDraft::new(AuditEventType::SidecarRevoked, caller.actor())
        .client(ctx.ip_string(), ctx.user_agent.clone())
        .reason(format!("sidecar {id}"));
    if app
        .store
        .revoke_sidecar(caller.tenant, id, now_micros(), audit)
        .await?
    {
        app.events
            .signal(caller.tenant, Signal::SidecarRevoked(id))
            .await;
    }
    let record = app
        .store
        .get_sidecar(caller.tenant, id)
        .await?
        .ok_or(ServiceError::NotFound("sidecar"))?;
    Ok(info(record))
}

fn info(record: SidecarRecord) -> SidecarInfo {
    SidecarInfo {
        id: record.id.to_string(),
        name: record.name,
        created_at: record.created_at,
        revoked_at: record.revoked_at,
    }
}
