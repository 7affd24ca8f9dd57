//! Who is calling: turns a presented bearer credential into a principal of one tenant.
//!
//! The credential's id finds its tenant in the credential index; the row is then read inside
//! that tenant (under row-level security) and the keyed hash compared in constant time. A
//! credential of one kind is never accepted where another kind is expected. Failures are
//! rate limited per client address and their audit events aggregated (`crate::limits`).

use agent_secret_core::credential::{CredentialKind, PresentedCredential};
use agent_secret_core::ids::{OperatorId, SidecarId, TenantId};

pub use super::principal::{AgentPrincipal, OperatorPrincipal, SidecarPrincipal};
use super::{App, RequestContext, ServiceError, ServiceResult};
use crate::audit::{Actor, AuditDraft, AuditEventType};
use crate::kubernetes::bindings;
use crate::kubernetes::identity::IdentityError;

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

/// What checking a presented credential found.
enum Verdict {
    Verified(Principal),
    /// Refused; `known` names the tenant and credential when the id exists (worth an
    /// `auth.failed` event in that tenant's log).
    Refused {
        known: Option<(TenantId, Actor)>,
    },
}

/// Authenticates `bearer` as any kind of credential except scoped tokens (those are presented
/// to sidecars, never to the control plane directly).
///
/// Every failure counts toward the client address's failed-authentication limit, and failures
/// against a known credential id are audited, aggregated per address (see `limits`). An
/// address over the limit gets 429 `rate_limited` for every credential that does *not*
/// verify; one that verifies always passes. Refusing valid credentials too would let anyone
/// sharing an address (pods behind one egress NAT, agents beside a sidecar) lock every sidecar
/// and operator on it out with garbage tokens, and with 256-bit credentials telling a right
/// guess from a wrong one gives a guesser nothing.
pub async fn authenticate(
    app: &App,
    bearer: &str,
    ctx: &RequestContext,
) -> ServiceResult<Principal> {
    match verify(app, bearer, ctx).await? {
        Verdict::Verified(Principal::Sidecar(sidecar)) => {
            super::sidecars::seen(app, sidecar, ctx.user_agent.as_deref()).await;
            Ok(Principal::Sidecar(sidecar))
        }
        Verdict::Verified(principal) => Ok(principal),
        Verdict::Refused { known } => {
            if let Err(refused) = app.limits.auth_failures.check(ctx.ip) {
                return Err(super::limits::refuse(app, None, Actor::system(), ctx, refused).await);
            }
            Err(record_failure(app, known, ctx).await)
        }
    }
}

async fn verify(app: &App, bearer: &str, ctx: &RequestContext) -> ServiceResult<Verdict> {
    if let Some(sidecar) = app.verified_sidecars.get(bearer) {
        return Ok(Verdict::Verified(Principal::Sidecar(sidecar)));
    }
    let unknown = Verdict::Refused { known: None };
    let Ok(presented) = PresentedCredential::parse(bearer) else {
        return verify_service_account(app, bearer, ctx).await;
    };
    let Some((tenant, kind)) = app.store.lookup_credential(presented.id).await? else {
        return Ok(unknown);
    };
    if kind != presented.kind {
        return Ok(unknown);
    }
    let verified = match kind {
        CredentialKind::Operator => verify_operator(app, tenant, &presented).await?,
        CredentialKind::Agent => verify_agent(app, tenant, &presented).await?,
        CredentialKind::Sidecar => {
            let verified = verify_sidecar(app, tenant, &presented).await?;
            if let Some(Principal::Sidecar(sidecar)) = verified {
                app.verified_sidecars.put(bearer, sidecar);
            }
            verified
        }
        CredentialKind::Token => None,
    };
    Ok(match verified {
        Some(principal) => Verdict::Verified(principal),
        None => Verdict::Refused {
            known: Some((tenant, Actor::new(kind.as_str(), presented.id))),
        },
    })
}

/// A sidecar's projected service-account token (docs/kubernetes.md): valid for our audience
/// (`[kubernetes] identity`), its service account bound to a sidecar whose row is live. Cached
/// like a sidecar key. Checking costs a TokenReview or a signature, so an address over its
/// failure budget is refused before the check, even with a valid token; anything not shaped
/// like a JWT is refused without one.
async fn verify_service_account(
    app: &App,
    bearer: &str,
    ctx: &RequestContext,
) -> ServiceResult<Verdict> {
    let unknown = Verdict::Refused { known: None };
    let Some(identity) = &app.workload_identity else {
        return Ok(unknown);
    };
    if bearer.split('.').count() != 3 || app.limits.auth_failures.check(ctx.ip).is_err() {
        return Ok(unknown);
    }
    let account = match identity.verifier.verify(bearer).await {
        Ok(account) => account,
        Err(IdentityError::Unavailable(why)) => {
            tracing::warn!(why, "cannot check a sidecar's service-account token");
            return Err(ServiceError::Internal(format!("workload identity: {why}")));
        }
        Err(_) => return Ok(unknown),
    };
    let Ok(binding) = bindings::find(&identity.bindings, &account) else {
        return Ok(unknown);
    };
    let ids = (
        binding.tenant.parse::<TenantId>(),
        binding.sidecar.as_deref().map(str::parse::<SidecarId>),
    );
    let (Ok(tenant), Some(Ok(sidecar))) = ids else {
        return Ok(unknown);
    };
    let live = app
        .store
        .get_sidecar(tenant, sidecar)
        .await?
        .filter(|sc| sc.revoked_at.is_none());
    Ok(match live {
        Some(sc) => {
            let principal = SidecarPrincipal { tenant, id: sc.id };
            app.verified_sidecars.put(bearer, principal);
            Verdict::Verified(Principal::Sidecar(principal))
        }
        None => Verdict::Refused {
            known: Some((tenant, Actor::new("k8s", account.username()))),
        },
    })
}

/// The one rule for a long-lived key (operator, agent, sidecar): its row is not revoked and
/// the presented secret's keyed hash matches the stored one, compared in constant time. (A
/// revoked key also leaves the credential index; this holds even if a row outlived that.)
fn accepts(
    app: &App,
    presented: &PresentedCredential,
    key_hash: &[u8],
    revoked_at: Option<chrono::DateTime<chrono::Utc>>,
) -> bool {
    revoked_at.is_none() && presented.verify(&app.pepper, key_hash)
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
        .filter(|op| accepts(app, presented, &op.key_hash, op.revoked_at))
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
        .filter(|agent| accepts(app, presented, &agent.key_hash, agent.revoked_at))
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
        .filter(|sc| accepts(app, presented, &sc.key_hash, sc.revoked_at))
        .map(|sc| Principal::Sidecar(SidecarPrincipal { tenant, id: sc.id })))
}

/// Refuses `bearer`, a credential a caller presented and some other check turned down (a
/// scoped token where one is accepted, say): counted and audited exactly like a refusal here.
pub async fn refuse_unknown(app: &App, bearer: &str, ctx: &RequestContext) -> ServiceError {
    let known = match PresentedCredential::parse(bearer) {
        Ok(p) => match app.store.lookup_credential(p.id).await {
            Ok(found) => found.map(|(tenant, kind)| (tenant, Actor::new(kind.as_str(), p.id))),
            Err(e) => return e.into(),
        },
        Err(_) => None,
    };
    if let Err(refused) = app.limits.auth_failures.check(ctx.ip) {
        return super::limits::refuse(app, None, Actor::system(), ctx, refused).await;
    }
    record_failure(app, known, ctx).await
}

/// Counts a failure toward its address's limit (429 once over it, else 401) and audits it
/// when the credential id is known: in its tenant's log, aggregated per address. The denial
/// stands even if the event cannot be written.
async fn record_failure(
    app: &App,
    known: Option<(TenantId, Actor)>,
    ctx: &RequestContext,
) -> ServiceError {
    app.metrics.auth_failures.inc();
    let tenant = known.as_ref().map(|(tenant, _)| *tenant);
    let actor = known
        .as_ref()
        .map_or_else(Actor::system, |(_, actor)| actor.clone());
    if let Some((tenant, actor)) = known {
        let draft = AuditDraft::new(AuditEventType::AuthFailed, actor)
            .client(ctx.ip_string(), ctx.user_agent.clone())
            .failed("invalid_credential");
        app.limits
            .auth_failures
            .record(app.store.as_ref(), tenant, ctx.ip, draft)
            .await;
    }
    match app.limits.auth_failures.count(ctx.ip) {
        Ok(()) => ServiceError::Unauthenticated,
        Err(refused) => super::limits::refuse(app, tenant, actor, ctx, refused).await,
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
