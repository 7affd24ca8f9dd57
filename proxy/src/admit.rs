//! Admission decided from the request's header: where it goes, who sends it, which secrets
//! it names, whether a request naming none may pass, and the headers with the values in.
//!
//! These are the decisions the sidecar's security rests on. As plain functions over a
//! `RequestHeader` they are unit-tested without a socket; `crate::proxy` only puts them in
//! order around the steps that need I/O or shared state (rate limits, the resolver, DNS, the
//! audit spool), and keeps what they decide in an [`Admission`] for the later phases.

use std::net::SocketAddr;
use std::sync::Arc;

use agent_secret_core::path::SecretPath;
use http::header::PROXY_AUTHORIZATION;
use pingora::http::RequestHeader;

use crate::auth::AgentToken;
use crate::cache::CachedValue;
use crate::caller::Caller;
use crate::denial::Denial;
use crate::inject::{self, Limits, Scan, Substituted};
use crate::route::{Router, Target};
use crate::scrub::ScrubSet;

/// What a request asks for, read from its header before anything is looked up.
pub struct Ask {
    pub target: Target,
    pub token: AgentToken,
    pub scan: Scan,
    /// The distinct paths its placeholders name, sorted.
    pub paths: Vec<SecretPath>,
}

/// A request let through: everything the later phases need.
pub struct Admission {
    pub target: Target,
    /// The address the SSRF guard checked; dialled as is.
    pub upstream_addr: SocketAddr,
    /// Every header that had a placeholder, with the values in (none for a pass-through).
    pub substituted: Vec<Substituted>,
    /// The injected values, to scrub from the response (none for a pass-through).
    pub scrub: Option<Arc<ScrubSet>>,
}

impl Admission {
    /// A request without placeholders, sent on as it came (but for the sidecar's headers).
    pub fn pass_through(target: Target, upstream_addr: SocketAddr) -> Admission {
        Admission {
            target,
            upstream_addr,
            substituted: Vec::new(),
            scrub: None,
        }
    }

    /// The values to scrub from the response, when any was injected.
    pub fn scrub_set(&self) -> Option<&Arc<ScrubSet>> {
        self.scrub.as_ref().filter(|set| !set.is_empty())
    }
}

/// Read what the request asks for: its target, then its token, then its placeholders, so a
/// request wrong in several ways always gets the first of these refusals. The token's id is
/// given to `caller` as soon as the token is read, so a later refusal is audited with it.
pub fn read_request(
    req: &RequestHeader,
    router: &Router,
    limits: &Limits,
    caller: &mut Caller<'_>,
) -> Result<Ask, Denial> {
    let target = router.target(&req.method, req.raw_path(), &req.uri)?;
    let token = AgentToken::from_header(req.headers.get(PROXY_AUTHORIZATION))?;
    caller.token_id = Some(token.id());
    let scan = inject::scan(&req.headers, req.raw_path(), limits)?;
    let paths = scan.paths();
    Ok(Ask {
        target,
        token,
        scan,
        paths,
    })
}

/// A request without placeholders may go only to a route (explicit operator wiring) or to a
/// host marked `pass_through`: the sidecar is not an open proxy for its agents.
pub fn check_pass_through(target: &Target) -> Result<(), Denial> {
    if target.pass_through_allowed() {
        return Ok(());
    }
    Err(Denial::destination_not_allowed(format!(
        "{} is not a configured route or pass-through host; requests to it must carry a {{{{secret:PATH}}}} placeholder",
        target.destination
    )))
}

/// The request's headers with every placeholder replaced by its resolved value.
pub fn substitute(
    req: &RequestHeader,
    scan: &Scan,
    values: &[Arc<CachedValue>],
    limits: &Limits,
) -> Result<Vec<Substituted>, Denial> {
    let lookup = |path: &SecretPath| {
        values
            .iter()
            .find(|v| &v.path == path)
            .map(|v| v.value.expose())
    };
    Ok(inject::substitute_headers(
        &req.headers,
        scan,
        lookup,
        limits,
    )?)
}

#[cfg(test)]
mod tests;
