//! The authenticated callers: an operator, an agent or a sidecar of one tenant, as
//! `service::auth` establishes them and every service function receives them.

use agent_secret_core::api::Role;
use agent_secret_core::ids::{AgentId, OperatorId, SidecarId, TenantId};

use super::{ServiceError, ServiceResult};
use crate::audit::Actor;

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
