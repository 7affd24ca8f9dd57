//! What an agent may learn about its tenant without ever seeing a value: the secrets within
//! its ceiling as placeholders (with whether the token it holds may use each now), and the state
//! of its own approval requests. This is the domain side of the MCP tools (`list_secrets`,
//! `approval_status`); it knows nothing of MCP or HTTP.
//!
//! An agent authenticates here with its agent key or with one of its scoped tokens
//! ([`authenticate_agent`]); a token also tells which secrets are usable right now.

use agent_secret_core::api::{ApprovalInfo, Sensitivity};
use agent_secret_core::credential::{CredentialKind, PresentedCredential};
use agent_secret_core::ids::{ApprovalId, TokenId};
use agent_secret_core::policy::{self, SecretFacts};
use agent_secret_core::scope::{scopes_cover, Action};

use super::auth::{self, AgentPrincipal, Principal};
use super::{approvals, App, RequestContext, ServiceError, ServiceResult};
use crate::audit::now_micros;
use crate::store::TokenRecord;

/// The placeholder an agent writes where a secret's value should go.
pub fn placeholder(path: &str) -> String {
    format!("{{{{secret:{path}}}}}")
}

/// A secret the agent may ask for, as the agent sees it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SecretOffer {
    pub path: String,
    /// `{{secret:PATH}}`, to put in a header of a request through the sidecar.
    pub placeholder: String,
    pub sensitivity: Sensitivity,
    /// The only destinations the sidecar injects it into.
    pub allowed_hosts: Vec<String>,
    /// Whether the token presented may inject it now.
    pub usable_now: bool,
    /// Why not, when it may not: `no_token`, or the denial code a request would get
    /// (`approval_pending`, `scope_denied`, `token_expired`, `token_revoked`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why_not: Option<&'static str>,
}

/// An agent, by its key or by one of its tokens (then with the token's record).
#[derive(Clone, Debug)]
pub struct AgentCaller {
    pub agent: AgentPrincipal,
    pub token: Option<TokenRecord>,
}

/// Authenticates an agent key or a scoped token, with the API's throttling and auditing of
/// failures. Any other credential (operator, sidecar) is refused as `forbidden`.
pub async fn authenticate_agent(
    app: &App,
    bearer: &str,
    ctx: &RequestContext,
) -> ServiceResult<AgentCaller> {
    let token_kind = PresentedCredential::parse(bearer)
        .map(|p| p.kind == CredentialKind::Token)
        .unwrap_or(false);
    if !token_kind {
        let agent = auth::expect_agent(auth::authenticate(app, bearer, ctx).await?)?;
        return Ok(AgentCaller { agent, token: None });
    }
    match verify_token(app, bearer).await? {
        Some(token) => Ok(AgentCaller {
            agent: AgentPrincipal {
                tenant: token.tenant_id,
                id: token.agent_id,
            },
            token: Some(token),
        }),
        // Counted and audited like any refused credential.
        None => Err(auth::refuse_unknown(app, bearer, ctx).await),
    }
}

/// The token `bearer` names, if the presented secret matches its stored hash and the token
/// is not revoked.
async fn verify_token(app: &App, bearer: &str) -> ServiceResult<Option<TokenRecord>> {
    let Ok(presented) = PresentedCredential::parse(bearer) else {
        return Ok(None);
    };
    let Some((tenant, kind)) = app.store.lookup_credential(presented.id).await? else {
        return Ok(None);
    };
    if kind != CredentialKind::Token {
        return Ok(None);
    }
    let token = app.store.get_token(tenant, TokenId(presented.id)).await?;
    Ok(token.filter(|t| t.revoked_at.is_none() && presented.verify(&app.pepper, &t.key_hash)))
}

/// The secrets within the agent's ceiling, in path order, and whether `token` may use each.
pub async fn offers(app: &App, caller: &AgentCaller) -> ServiceResult<Vec<SecretOffer>> {
    let agent = app
        .store
        .get_agent(caller.agent.tenant, caller.agent.id)
        .await?
        .filter(|a| a.revoked_at.is_none())
        .ok_or(ServiceError::Unauthenticated)?;
    let now = now_micros();
    let secrets = app.store.list_secrets(caller.agent.tenant, None).await?;
    Ok(secrets
        .into_iter()
        .filter(|s| scopes_cover(&agent.ceiling, Action::Read, &s.path))
        .map(|s| {
            // The access rule itself (core::policy), minus what only a request has: the
            // client address and the destination.
            let why_not = match &caller.token {
                None => Some("no_token"),
                Some(t) => {
                    let grant = super::resolve::grant_facts(t);
                    let secret = SecretFacts {
                        path: &s.path,
                        sensitivity: s.sensitivity,
                        allowed_hosts: &s.allowed_hosts,
                    };
                    policy::check_lifecycle(&grant, now)
                        .and_then(|()| policy::check_scope(&grant, std::slice::from_ref(&s.path)))
                        .and_then(|()| policy::check_sensitivity(&grant, &secret))
                        .err()
                        .map(|denial| denial.code())
                }
            };
            SecretOffer {
                placeholder: placeholder(s.path.as_str()),
                path: s.path.to_string(),
                sensitivity: s.sensitivity,
                allowed_hosts: s.allowed_hosts.iter().map(ToString::to_string).collect(),
                usable_now: why_not.is_none(),
                why_not,
            }
        })
        .collect())
}

/// One of the agent's own approval requests (another agent's is "not found").
pub async fn approval_status(
    app: &App,
    caller: &AgentCaller,
    id: ApprovalId,
) -> ServiceResult<ApprovalInfo> {
    let info = approvals::show(app, caller.agent.tenant, id).await?;
    if info.agent_id != caller.agent.id.to_string() {
        return Err(ServiceError::NotFound("approval"));
    }
    Ok(info)
}

impl AgentCaller {
    /// The principal the token-issuing service takes (an agent key's holder).
    pub fn principal(&self) -> Principal {
        Principal::Agent(self.agent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_placeholder_is_the_proxys_grammar() {
        assert_eq!(placeholder("prod/openai/key"), "{{secret:prod/openai/key}}");
    }
}
