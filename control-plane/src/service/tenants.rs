//! Tenants: the unit of isolation, each with its own KEK, audit chain and RLS partition.
//!
//! Creating one is an installation-level act (like `vault operator init`): it runs with direct
//! database access from the CLI, not through the API.

use agent_secret_core::api::Role;
use agent_secret_core::credential::{issue_with_id, CredentialKind};
use agent_secret_core::ids::{OperatorId, TenantId};
use agent_secret_core::secret::SecretString;

use super::{validate_name, App, ServiceResult};
use crate::audit::{now_micros, Actor, AuditDraft, AuditEventType};
use crate::store::{OperatorRecord, TenantRecord};

/// Name of a tenant's first operator.
pub const BOOTSTRAP_ADMIN: &str = "bootstrap-admin";

#[derive(Debug)]
pub struct CreatedTenant {
    pub tenant_id: TenantId,
    pub admin_operator_id: OperatorId,
    /// Shown once; only its keyed hash is stored.
    pub admin_token: SecretString,
}

/// Creates the tenant's KEK first (an orphaned key is harmless; a tenant without one is not),
/// then the tenant, its admin operator and the first event of its audit chain.
pub async fn create_tenant(app: &App, name: &str) -> ServiceResult<CreatedTenant> {
    validate_name(name)?;
    let tenant_id = TenantId::new();
    let key = app.kms.create_tenant_key(tenant_id).await?;
    let admin_id = OperatorId::new();
    let credential = issue_with_id(CredentialKind::Operator, admin_id.0, &app.pepper);
    let now = now_micros();
    let tenant = TenantRecord {
        id: tenant_id,
        name: name.to_owned(),
        created_at: now,
    };
    let admin = OperatorRecord {
        id: admin_id,
        tenant_id,
        name: BOOTSTRAP_ADMIN.to_owned(),
        role: Role::Admin,
        key_hash: credential.hash.to_vec(),
        created_at: now,
        revoked_at: None,
    };
    let audit = AuditDraft::new(AuditEventType::TenantCreated, Actor::system()).reason(format!(
        "tenant `{name}` created; kek {} v{}",
        key.key_name, key.key_version
    ));
    app.store.create_tenant(&tenant, &admin, audit).await?;
    // Recorded now so that a rotation before the scheduler's first look is still announced.
    // The tenant exists either way; if this fails the scheduler records the key later.
    let unused = AuditDraft::new(AuditEventType::KmsRotated, Actor::system());
    if let Err(e) = app
        .store
        .record_primary(tenant_id, &key.key_name, &key.key_version, unused)
        .await
    {
        tracing::warn!(tenant = %tenant_id, error = %e, "cannot record the new tenant's KEK version");
    }
    Ok(CreatedTenant {
        tenant_id,
        admin_operator_id: admin_id,
        admin_token: credential.token,
    })
}
