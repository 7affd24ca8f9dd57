//! Who is calling: turns a presented bearer credential into a principal of one tenant.
//!
//! The credential's id finds its tenant in the credential index; the row is then read inside
//! that tenant (under row-level security) and the keyed hash compared in constant time. A
//! credential of one kind is never accepted where another kind is expected.

use agent_secret_core::api::Role;
use agent_secret_core::credential::{CredentialKind, PresentedCredential};
use agent_secret_core::ids::{AgentId, OperatorId, SidecarId, TenantId};

use super::{App, RequestContext, ServiceError, ServiceResult};
use crate::audit::{Actor, AuditDraft, AuditEventType};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OperatorPrincipal {
    pub tenant: TenantId,
    pub id: OperatorId,
    pub role: Role,
}

impl OperatorPrincipal {
    pub fn actor(&self) -> Actor {
        Actor::new("operator", self.id)
    }

    /// Refuses unless the operator holds one of `roles`.
    pub fn require(&self, roles: &[Role]) -> ServiceResult<()> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(ServiceError::Forbidden(format!(
                "role `{}` may not do this",
                self.role.as_str()
            )))
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgentPrincipal {
    pub tenant: TenantId,
    pub id: AgentId,
}

impl AgentPrincipal {
    pub fn actor(&self) -> Actor {
        Actor::new("agent", self.id)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SidecarPrincipal {
    pub tenant: TenantId,
    pub id: SidecarId,
}

impl SidecarPrincipal {
    pub fn actor(&self) -> Actor {
        Actor::new("sidecar", self.id)
    }
}

/// A caller of an endpoint open to several kinds of credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Principal {
    Operator(OperatorPrincipal),
    Agent(AgentPrincipal),
    Sidecar(SidecarPrincipal),
}

impl Principal {
    pub fn tenant(&self) -> TenantId {
        match self {
            Self::Operator(p) => p.tenant,
            Self::Agent(p) => p.tenant,
            Self::Sidecar(p) => p.tenant,
        }
    }
}

/// Authenticates `bearer` as any kind of credential except scoped tokens (those are presented
/// to sidecars, never to the control plane directly).
pub async fn authenticate(
    app: &App,
    bearer: &str,
    ctx: &RequestContext,
) -> ServiceResult<Principal> {
    let presented =
        PresentedCredential::parse(bearer).map_err(|_| ServiceError::Unauthenticated)?;
    let Some((tenant, kind)) = app.store.lookup_credential(presented.id).await? else {
        return Err(ServiceError::Unauthenticated);
    };
    if kind != presented.kind {
        return Err(ServiceError::Unauthenticated);
    }
    let verified = match kind {
        CredentialKind::Operator => verify_operator(app, tenant, &presented).await?,
        CredentialKind::Agent => verify_agent(app, tenant, &presented).await?,
        CredentialKind::Sidecar => verify_sidecar(app, tenant, &presented).await?,
        CredentialKind::Token => None,
    };
    match verified {
        Some(principal) => Ok(principal),
        None => {
            record_failure(app, tenant, kind, &presented, ctx).await;
            Err(ServiceError::Unauthenticated)
        }
    }
}

async fn verify_operator(
    app: &App,
    tenant: TenantId,
    presented: &PresentedCredential,
) -> ServiceResult<Option<Principal>> {
    let row = app
        .store
        .get_operator(tenant, OperatorId(presented.id))
        .await?;
    Ok(row
        .filter(|op| op.revoked_at.is_none() && presented.verify(&app.pepper, &op.key_hash))
        .map(|op| {
            Principal::Operator(OperatorPrincipal {
                tenant,
                id: op.id,
                role: op.role,
            })
        }))
}

async fn verify_agent(
    app: &App,
    tenant: TenantId,
    presented: &PresentedCredential,
) -> ServiceResult<Option<Principal>> {
    let row = app.store.get_agent_by_key(tenant, presented.id).await?;
    Ok(row
        .filter(|agent| presented.verify(&app.pepper, &agent.key_hash))
        .map(|agent| {
            Principal::Agent(AgentPrincipal {
                tenant,
                id: agent.id,
            })
        }))
}

async fn verify_sidecar(
    app: &App,
    tenant: TenantId,
    presented: &PresentedCredential,
) -> ServiceResult<Option<Principal>> {
    let row = app
        .store
        .get_sidecar(tenant, SidecarId(presented.id))
        .await?;
    Ok(row
        .filter(|sc| sc.revoked_at.is_none() && presented.verify(&app.pepper, &sc.key_hash))
        .map(|sc| Principal::Sidecar(SidecarPrincipal { tenant, id: sc.id })))
}

/// A known credential id with a wrong secret (or revoked) is worth an `auth.failed` event in
/// its tenant's log. The denial stands even if the event cannot be written.
async fn record_failure(
    app: &App,
    tenant: TenantId,
    kind: CredentialKind,
    presented: &PresentedCredential,
    ctx: &RequestContext,
) {
    let draft = AuditDraft::new(
        AuditEventType::AuthFailed,
        Actor::new(kind.as_str(), presented.id),
    )
    .client(ctx.ip_string(), ctx.user_agent.clone())
    .failed("invalid_credential");
    if let Err(e) = app.store.append_audit(tenant, draft).await {
        tracing::error!(error = %e, "could not write auth.failed audit event");
    }
}

/// Unwraps a principal of the expected kind or refuses.
pub fn expect_operator(p: Principal) -> ServiceResult<OperatorPrincipal> {
    match p {
        Principal::Operator(op) => Ok(op),
        _ => Err(ServiceError::Forbidden(
            "this endpoint needs an operator token".into(),
        )),
    }
}

pub fn expect_agent(p: Principal) -> ServiceResult<AgentPrincipal> {
    match p {
        Principal::Agent(a) => Ok(a),
        _ => Err(ServiceError::Forbidden(
            "this endpoint needs an agent key".into(),
        )),
    }
}

pub fn expect_sidecar(p: Principal) -> ServiceResult<SidecarPrincipal> {
    match p {
        Principal::Sidecar(s) => Ok(s),
        _ => Err(ServiceError::Forbidden(
            "this endpoint needs a sidecar key".into(),
        )),
    }
}
