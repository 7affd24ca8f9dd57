//! Workload identity (docs/kubernetes.md): a pod exchanges its projected service-account token
//! for a scoped token of the agent its service account is bound to, as Vault's Kubernetes auth
//! method logs a pod in. The token is issued exactly as the agent's own request would be (its
//! ceiling, approvals for sensitive secrets), capped at the binding's TTL, and audited as
//! `token.issued` with the service account as the actor.

use agent_secret_core::api::{ErrorCode, IssueTokenRequest, IssuedToken, KubernetesTokenRequest};
use agent_secret_core::ids::{AgentId, TenantId};

use super::auth::AgentPrincipal;
use super::{tokens, App, RequestContext, ServiceError, ServiceResult};
use crate::audit::Actor;
use crate::kubernetes::bindings::{self, Binding};
use crate::kubernetes::identity::{IdentityError, Verifier};

/// The verifier and the bindings (`[kubernetes] identity`, `[[kubernetes.bindings]]`).
pub struct WorkloadIdentity {
    pub verifier: Verifier,
    pub bindings: Vec<Binding>,
}

/// `POST /v1/auth/kubernetes`.
pub async fn exchange(
    app: &App,
    request: KubernetesTokenRequest,
    ctx: &RequestContext,
) -> ServiceResult<IssuedToken> {
    let identity = app
        .workload_identity
        .as_ref()
        .ok_or(ServiceError::NotFound("endpoint"))?;
    // The address's failure budget is the login's: a throttled address gets no TokenReview
    // (an unauthenticated caller must not be able to make us load the API server), and each
    // refused token spends from it.
    if let Err(refused) = app.limits.auth_failures.check(ctx.ip) {
        return Err(super::limits::refuse(app, None, Actor::system(), ctx, refused).await);
    }
    let account = match identity.verifier.verify(&request.token).await {
        Ok(account) => account,
        Err(IdentityError::Unavailable(why)) => {
            tracing::warn!(why, "cannot check a service-account token");
            return Err(ServiceError::Internal(format!("workload identity: {why}")));
        }
        Err(refused) => {
            tracing::info!(reason = %refused, ip = ?ctx.ip, "service-account token refused");
            app.metrics.auth_failures.inc();
            if let Err(limited) = app.limits.auth_failures.count(ctx.ip) {
                return Err(super::limits::refuse(app, None, Actor::system(), ctx, limited).await);
            }
            return Err(ServiceError::Unauthenticated);
        }
    };
    let binding = bindings::find(&identity.bindings, &account).map_err(|e| {
        tracing::info!(reason = %e, "service-account token exchange refused");
        ServiceError::Forbidden(e.to_string())
    })?;
    if request.ttl_seconds > binding.max_ttl_seconds {
        return Err(ServiceError::invalid(
            ErrorCode::InvalidTtl,
            format!(
                "ttl_seconds must be at most {} for {}",
                binding.max_ttl_seconds,
                account.username()
            ),
        ));
    }
    let Some(agent) = &binding.agent else {
        return Err(ServiceError::Forbidden(format!(
            "the binding of {} names no agent",
            account.username()
        )));
    };
    // Checked when the configuration was loaded.
    let (Ok(tenant), Ok(agent)) = (binding.tenant.parse::<TenantId>(), agent.parse::<AgentId>())
    else {
        return Err(ServiceError::Internal(
            "a binding's ids do not parse".into(),
        ));
    };
    let agent = AgentPrincipal { tenant, id: agent };
    super::limits::admit_token_issue(app, agent, ctx).await?;
    let issue = IssueTokenRequest {
        scopes: request.scopes,
        ttl_seconds: request.ttl_seconds,
        ip_allowlist: request.ip_allowlist,
        max_uses: request.max_uses,
        request_access: request.request_access,
    };
    tokens::issue_as(
        app,
        agent,
        Actor::new("k8s", account.username()),
        issue,
        ctx,
    )
    .await
}

#[cfg(test)]
mod tests;
