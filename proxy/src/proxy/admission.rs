//! The request phase's steps that need I/O or shared state (rate limits, the resolver, the
//! SSRF guard's DNS lookup, the audit spool), put in order around the decisions of
//! [`crate::admit`]. Apart from the pingora phases in `crate::proxy` because this is where
//! the order matters: audit room is reserved before anything is resolved, a refusal after
//! resolve gives back the reserved use of a `max_uses` token, and every injection is audited.

use std::net::SocketAddr;
use std::sync::Arc;

use agent_secret_core::path::SecretPath;
use chrono::Utc;
use pingora::http::RequestHeader;

use super::SecretProxy;
use crate::admit::{self, Admission, Ask};
use crate::audit::AuditPermit;
use crate::cache::CachedGrant;
use crate::caller::Caller;
use crate::denial::Denial;
use crate::inject::Substituted;
use crate::rate_limit::Limited;
use crate::resolver::Resolved;
use crate::route::Target;
use crate::scrub::ScrubSet;
use crate::ssrf;

impl SecretProxy {
    /// Let the request through or say why not.
    pub(super) async fn admit(
        &self,
        req: &RequestHeader,
        caller: &mut Caller<'_>,
    ) -> Result<Admission, Denial> {
        let ask = admit::read_request(req, &self.router, &self.limits, caller)?;
        // Keyed by the whole token's hash, so it is safe before the token is verified.
        self.rate_limits
            .check_token(&ask.token.cache_key(), ask.paths.len())
            .map_err(|limited| self.rate_limited(caller, &limited))?;
        if ask.scan.is_empty() {
            self.admit_pass_through(ask, caller).await
        } else {
            self.admit_injection(req, ask, caller).await
        }
    }

    /// No placeholder: a pass-through destination, a live token, a checked address.
    async fn admit_pass_through(
        &self,
        ask: Ask,
        caller: &mut Caller<'_>,
    ) -> Result<Admission, Denial> {
        admit::check_pass_through(&ask.target)?;
        let grant = self
            .resolver
            .check_token(
                &ask.token,
                &ask.target.destination,
                caller.client_ip,
                caller.user_agent,
            )
            .await?;
        self.check_agent_limit(&grant, 0, caller)?;
        let upstream_addr = self.checked_address(&ask.target).await?;
        Ok(Admission::pass_through(ask.target, upstream_addr))
    }

    /// Placeholders: a checked address, audit room, the resolved values substituted, and
    /// every injection audited.
    async fn admit_injection(
        &self,
        req: &RequestHeader,
        ask: Ask,
        caller: &mut Caller<'_>,
    ) -> Result<Admission, Denial> {
        let upstream_addr = self.checked_address(&ask.target).await?;
        let permit = self
            .audit
            .reserve(ask.paths.len())
            .map_err(|_| Denial::audit_unavailable())?;
        let (resolved, permit) = self.resolve(&ask, permit, caller).await?;
        // From here a refusal gives back the use reserved for a `max_uses` token: nothing
        // was injected.
        let (substituted, scrub) = match self.prepare(req, &ask, &resolved, caller).await {
            Ok(prepared) => prepared,
            Err(denial) => {
                self.resolver.release(&resolved, denial.code.as_str()).await;
                return Err(denial);
            }
        };
        self.record_injections(permit, caller, &resolved, &ask);
        Ok(Admission {
            target: ask.target,
            upstream_addr,
            substituted,
            scrub: Some(scrub),
        })
    }

    /// The values of the request's paths. A refusal gives back the audit room first, then is
    /// audited with the destination and the path refused (the first path when the refusal
    /// names none) — unless the control plane decided it and audited it already.
    async fn resolve(
        &self,
        ask: &Ask,
        permit: AuditPermit,
        caller: &mut Caller<'_>,
    ) -> Result<(Resolved, AuditPermit), Denial> {
        let resolved = self
            .resolver
            .resolve(
                &ask.token,
                &ask.paths,
                &ask.target.destination,
                caller.client_ip,
                caller.user_agent,
            )
            .await;
        match resolved {
            Ok(resolved) => Ok((resolved, permit)),
            Err(e) => {
                let refused = e.denied_path().cloned();
                let recorded = e.recorded();
                let denial = Denial::from(e);
                drop(permit);
                if !recorded {
                    let path = refused.as_ref().or(ask.paths.first());
                    self.audit_denial(caller, Some(&ask.target), path, &denial);
                }
                caller.audited = true;
                Err(denial)
            }
        }
    }

    /// After resolve: the agent's budget, the substituted headers and the response scrubber
    /// (headers are always scrubbed; `scrub = "headers"` only skips the body).
    async fn prepare(
        &self,
        req: &RequestHeader,
        ask: &Ask,
        resolved: &Resolved,
        caller: &mut Caller<'_>,
    ) -> Result<(Vec<Substituted>, Arc<ScrubSet>), Denial> {
        self.check_agent_limit(&resolved.grant, ask.paths.len(), caller)?;
        let substituted = admit::substitute(req, &ask.scan, &resolved.values, &self.limits)?;
        let scrub = self
            .resolver
            .caches()
            .scrub_set(resolved.grant.tenant, &resolved.values)
            .await?;
        Ok((substituted, scrub))
    }

    /// Audit every injected value the control plane did not already record (see
    /// [`Resolved::recorded`]) into the room reserved for it, and count them all. Unused room
    /// goes back when the permit drops.
    fn record_injections(
        &self,
        permit: AuditPermit,
        caller: &Caller<'_>,
        resolved: &Resolved,
        ask: &Ask,
    ) {
        let paths = resolved
            .values
            .iter()
            .map(|v| &v.path)
            .filter(|p| !resolved.recorded.contains(p));
        let token_id = &resolved.grant.grant.token_id;
        let destination = &ask.target.destination;
        permit.record(caller.injections(token_id, paths, destination, Utc::now()));
        self.metrics.injections.inc_by(ask.paths.len() as u64);
    }

    /// The agent's budget, once a grant vouches for the agent id.
    fn check_agent_limit(
        &self,
        grant: &CachedGrant,
        injections: usize,
        caller: &mut Caller<'_>,
    ) -> Result<(), Denial> {
        // An id that is not a UUID is not limited here (the control plane's own limits still
        // apply) rather than refused.
        let Some(agent) = grant.agent else {
            return Ok(());
        };
        self.rate_limits
            .check_agent(agent, injections)
            .map_err(|limited| self.rate_limited(caller, &limited))
    }

    /// Count a 429; audit it only the first time the subject trips in a while, so a flood of
    /// refused requests cannot also flood the audit spool.
    fn rate_limited(&self, caller: &mut Caller<'_>, limited: &Limited) -> Denial {
        self.metrics
            .rate_limited
            .with_label_values(&[limited.limit.as_str()])
            .inc();
        if !limited.first_trip {
            caller.audited = true;
        }
        Denial::rate_limited(limited)
    }

    async fn checked_address(&self, target: &Target) -> Result<SocketAddr, Denial> {
        Ok(ssrf::checked_address(target.sni(), target.port, target.allow_private()).await?)
    }

    /// Best-effort audit of a refusal; a full spool drops it (the request is refused anyway).
    pub(super) fn audit_denial(
        &self,
        caller: &Caller<'_>,
        target: Option<&Target>,
        path: Option<&SecretPath>,
        denial: &Denial,
    ) {
        let destination = target.map(|t| &t.destination);
        let event = caller.refusal(destination, path, denial, Utc::now());
        if self.audit.record_denial(&event).is_err() {
            self.metrics.audit_dropped.inc();
        }
    }
}
