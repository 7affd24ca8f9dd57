//! The access rule, once: may this grant read these secrets for this destination, from this
//! address, at this time?
//!
//! The control plane (`control-plane/src/service/resolve.rs`), the sidecar's warm path
//! (`proxy/src/resolver.rs`) and the test fake of the control plane all ask here, so they
//! cannot drift apart. Everything is a pure function over the plain data of [`facts`]: no
//! I/O, no clock (the caller passes `now`), no store. What only a store can do — verifying the
//! token's credential, counting a use atomically, writing the audit record — stays with the
//! caller.
//!
//! The checks run in a fixed order, and the first failure decides the code the agent sees:
//!
//! 1. the token's lifecycle: status (`token_revoked`, `approval_pending`, `approval_denied`),
//!    a recorded revocation (`token_revoked`), expiry (`token_expired`);
//! 2. the client address against the allowlist (`ip_not_allowed`);
//! 3. uses left (`uses_exhausted`), a pre-check of the row as read; the store's conditional
//!    update makes the count exact;
//! 4. scope, for every path before any secret is looked up (`scope_denied`), so a path
//!    outside the scope is refused the same way whether it exists or not;
//! 5. then path by path, in request order: existence (`secret_not_found`), sensitivity
//!    within the approved level (`approval_pending`), destination binding against the host
//!    actually dialled (`destination_not_allowed`).
//!
//! (`token_invalid` — no grant matches the credential — comes before all of these and is the
//! caller's to decide; it is a [`Denial`] variant so that every refusal is one type.)
//!
//! How many human approvals a token needs and whether it has them (sensitivity × trust tier,
//! quorum of distinct humans, time lock, approvals bound to a digest) is [`approval`]. Rules
//! still to come (per-agent ceilings) slot in as a fact, a check in this order and a
//! [`Denial`] variant; the table in `tests.rs` covers each rule and each code.

pub mod approval;
mod denial;
pub mod facts;

use std::net::IpAddr;

use chrono::{DateTime, Utc};

use crate::api::TokenStatus;
use crate::host::Destination;
use crate::path::SecretPath;
use crate::scope::{scopes_cover, Action};

pub use denial::Denial;
pub use facts::{GrantFacts, Request, SecretFacts};

/// Steps 1–5 for every path of `request`: the values `lookup` found, in request order.
/// `lookup` answers `None` for a path with no secret, or the caller's handle on the secret
/// with its facts. It is called only once the grant and every path's scope have passed, so a
/// refused request learns nothing about which secrets exist.
pub fn authorize<'a, T>(
    grant: &GrantFacts<'_>,
    request: &Request<'a>,
    mut lookup: impl FnMut(&'a SecretPath) -> Option<(T, SecretFacts<'a>)>,
) -> Result<Vec<T>, Denial> {
    admit(grant, request)?;
    request
        .paths
        .iter()
        .map(|path| {
            let (found, secret) =
                lookup(path).ok_or_else(|| Denial::SecretNotFound { path: path.clone() })?;
            check_secret(grant, &secret, request.destination)?;
            Ok(found)
        })
        .collect()
}

/// Steps 1–4: everything decided before a secret is looked up. With no paths, whether the
/// token may be used at all.
pub fn admit(grant: &GrantFacts<'_>, request: &Request<'_>) -> Result<(), Denial> {
    check_grant(grant, request.client_ip, request.now)?;
    check_scope(grant, request.paths)
}

/// Steps 1–3: the token itself, from `client_ip` at `now`.
pub fn check_grant(
    grant: &GrantFacts<'_>,
    client_ip: IpAddr,
    now: DateTime<Utc>,
) -> Result<(), Denial> {
    check_lifecycle(grant, now)?;
    if !grant.ip_allowlist.is_empty() && !grant.ip_allowlist.iter().any(|n| n.contains(&client_ip))
    {
        return Err(Denial::IpNotAllowed { client_ip });
    }
    if grant.max_uses.is_some_and(|max| grant.uses >= max) {
        return Err(Denial::UsesExhausted);
    }
    Ok(())
}

/// Step 1: status, recorded revocation and expiry at `now`. On its own for callers that must
/// say why a token is refused without a client address (and for the sidecar, which treats a
/// cached grant this refuses as gone).
pub fn check_lifecycle(grant: &GrantFacts<'_>, now: DateTime<Utc>) -> Result<(), Denial> {
    match grant.status {
        TokenStatus::Revoked => return Err(Denial::TokenRevoked),
        TokenStatus::PendingApproval => return Err(Denial::ApprovalPending),
        TokenStatus::Denied => return Err(Denial::ApprovalDenied),
        TokenStatus::Active | TokenStatus::Expired => {}
    }
    if grant.revoked {
        return Err(Denial::TokenRevoked);
    }
    if grant.status == TokenStatus::Expired || grant.expires_at <= now {
        return Err(Denial::TokenExpired);
    }
    Ok(())
}

/// Step 4: `read` on every path, the first uncovered one refused.
pub fn check_scope(grant: &GrantFacts<'_>, paths: &[SecretPath]) -> Result<(), Denial> {
    match paths
        .iter()
        .find(|path| !scopes_cover(grant.scopes, Action::Read, path))
    {
        Some(path) => Err(Denial::OutsideScope { path: path.clone() }),
        None => Ok(()),
    }
}

/// Step 5 for one secret that exists: within the approved sensitivity, bound to `destination`.
pub fn check_secret(
    grant: &GrantFacts<'_>,
    secret: &SecretFacts<'_>,
    destination: &Destination,
) -> Result<(), Denial> {
    check_sensitivity(grant, secret)?;
    if !secret.allowed_hosts.iter().any(|h| h.matches(destination)) {
        return Err(Denial::DestinationNotAllowed {
            path: secret.path.clone(),
            destination: destination.clone(),
        });
    }
    Ok(())
}

/// The first half of step 5: the secret's sensitivity within what the grant was approved for.
/// On its own for callers with no destination yet (an agent asking what its token may use).
pub fn check_sensitivity(grant: &GrantFacts<'_>, secret: &SecretFacts<'_>) -> Result<(), Denial> {
    if secret.sensitivity > grant.approved_sensitivity {
        return Err(Denial::AboveApprovedSensitivity {
            path: secret.path.clone(),
            sensitivity: secret.sensitivity,
            approved: grant.approved_sensitivity,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
