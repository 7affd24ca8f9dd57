//! The sidecar's question: may this token send these secrets to this host, from this IP?
//! (With no paths: may this token use the sidecar at all? Nothing is read or counted.)
//!
//! The answer is `agent_secret_core::policy`'s, with its order and its stable denial codes
//! (see that module): token lifecycle (`token_revoked`, `approval_pending`, `approval_denied`,
//! `token_expired`), client IP (`ip_not_allowed`), uses left (`uses_exhausted`, as read),
//! scope (`scope_denied`, decided before the path is looked up so a path outside the scope is
//! denied the same way whether it exists or not), then path by path existence
//! (`secret_not_found`), sensitivity (`scope_denied`) and destination
//! (`destination_not_allowed`). This module adds what only the store can: the credential
//! check before all of it (`token_invalid`), one read snapshot, the atomic use count at the
//! end (`uses_exhausted` when the conditional update refuses) and the audit events.
//!
//! A use of a `max_uses` token is counted as a reservation the sidecar may give back before
//! its deadline if the value never reached the upstream (`release`): the response carries its
//! id. It counts against `max_uses` from the start, so the count stays exact under any
//! concurrency, and it costs the group-commit batch one indexed DELETE and one INSERT per
//! limited use (unlimited tokens, the common case, are unchanged).

use std::net::IpAddr;
use std::sync::Arc;

use agent_secret_core::api::{
    ErrorCode, Grant, ResolveRequest, ResolveResponse, ResolvedSecret, TokenStatus, UseReservation,
    MAX_USER_AGENT_CHARS,
};
use agent_secret_core::credential::{CredentialKind, PresentedCredential};
use agent_secret_core::host::Destination;
use agent_secret_core::ids::TokenId;
use agent_secret_core::path::SecretPath;
use agent_secret_core::policy::{self, Denial, GrantFacts, SecretFacts};
use chrono::{DateTime, Utc};

use super::auth::SidecarPrincipal;
use super::batching::ReadAsk;
use super::{approvals, App, ServiceError, ServiceResult};
use crate::anomaly::ABOVE_APPROVED_REASON;
use crate::audit::{now_micros, Actor, AuditDraft, AuditEventType};
use crate::store::{NewReservation, StoredSecret, TokenRecord, TokenUse, UseOutcome};

/// Most secrets one request may resolve at once.
pub const MAX_PATHS: usize = 16;

/// The policy's view of a token row, as read.
pub(crate) fn grant_facts(token: &TokenRecord) -> GrantFacts<'_> {
    GrantFacts {
        status: token.status,
        revoked: token.revoked_at.is_some(),
        expires_at: token.expires_at,
        ip_allowlist: &token.ip_allowlist,
        scopes: &token.scopes,
        approved_sensitivity: token.approved_sensitivity,
        max_uses: token.max_uses,
        uses: token.uses,
    }
}

/// The policy's view of a secret row.
pub(crate) fn secret_facts(secret: &StoredSecret) -> SecretFacts<'_> {
    SecretFacts {
        path: &secret.record.path,
        sensitivity: secret.record.sensitivity,
        allowed_hosts: &secret.record.allowed_hosts,
    }
}

/// Parses the request shape; malformed input is a 400, not a denial.
fn parse_request(
    request: &ResolveRequest,
) -> ServiceResult<(Vec<SecretPath>, Destination, IpAddr)> {
    if request.paths.len() > MAX_PATHS {
        return Err(ServiceError::invalid(
            ErrorCode::InvalidRequest,
            format!("paths may list at most {MAX_PATHS} secret paths"),
        ));
    }
    let paths = request
        .paths
        .iter()
        .map(|p| super::secrets::parse_path(p))
        .collect::<ServiceResult<Vec<_>>>()?;
    let destination = Destination::parse(&request.destination_host).map_err(|e| {
        ServiceError::invalid(ErrorCode::InvalidHost, format!("destination_host: {e}"))
    })?;
    let client_ip = request.client_ip.trim().parse::<IpAddr>().map_err(|_| {
        ServiceError::invalid(ErrorCode::InvalidRequest, "client_ip is not an IP address")
    })?;
    Ok((paths, destination, client_ip))
}

pub async fn resolve(
    app: &App,
    sidecar: SidecarPrincipal,
    request: &ResolveRequest,
) -> ServiceResult<ResolveResponse> {
    match resolve_once(app, sidecar, request, true).await? {
        Attempt::Done(response) => Ok(*response),
        // Approved just now: read the token again, as active.
        Attempt::Activated => match resolve_once(app, sidecar, request, false).await? {
            Attempt::Done(response) => Ok(*response),
            Attempt::Activated => Err(ServiceError::Internal("token activated twice".into())),
        },
    }
}

/// One pass of a resolve.
enum Attempt {
    Done(Box<ResolveResponse>),
    /// The token was `pending_approval` and this resolve found its quorum and delay met and
    /// activated it: resolve again.
    Activated,
}

async fn resolve_once(
    app: &App,
    sidecar: SidecarPrincipal,
    request: &ResolveRequest,
    may_activate: bool,
) -> ServiceResult<Attempt> {
    let (paths, destination, client_ip) = parse_request(request)?;
    let now = now_micros();
    let asked = policy::Request {
        paths: &paths,
        destination: &destination,
        client_ip,
        now,
    };
    // No paths: the sidecar only asks whether the token may use it at all (a request without
    // placeholders); nothing is read, so no use is counted and only a refusal is audited.
    let validate_only = paths.is_empty();
    let event_type = if validate_only {
        AuditEventType::AuthFailed
    } else {
        AuditEventType::SecretRead
    };
    // The agent's own words, bounded and without control characters, as a sidecar's report
    // would carry them (a sidecar's request is trusted no further than that).
    let user_agent = request.user_agent.as_deref().map(|ua| {
        ua.chars()
            .filter(|c| !c.is_control())
            .take(MAX_USER_AGENT_CHARS)
            .collect::<String>()
    });
    let base = |actor: Actor| {
        AuditDraft::new(event_type, actor)
            .client(Some(client_ip.to_string()), user_agent.clone())
            .destination(destination.to_string())
    };
    // One read transaction for the token and the secrets; the secrets are read only for a
    // token the policy admits, so a refused one touches no secret row.
    let presented = PresentedCredential::parse_kind(CredentialKind::Token, &request.token);
    let presented_id = presented.as_ref().ok().map(|c| c.id);
    let (token, found) = match presented {
        Err(_) => (None, Vec::new()),
        Ok(credential) => {
            // The admission runs in the batch's task, so it owns what it checks.
            let credential = Arc::new(credential);
            let admit = {
                let (credential, pepper) = (credential.clone(), app.pepper.clone());
                let (scope_paths, destination) = (paths.clone(), destination.clone());
                move |t: &TokenRecord| {
                    let asked = policy::Request {
                        paths: &scope_paths,
                        destination: &destination,
                        client_ip,
                        now,
                    };
                    credential.verify(&pepper, &t.key_hash)
                        && policy::admit(&grant_facts(t), &asked).is_ok()
                }
            };
            let read = ReadAsk {
                id: TokenId(credential.id),
                paths: paths.clone(),
                admit: Box::new(admit),
            };
            let (row, found) = app.group_read.run(&app.store, sidecar.tenant, read).await?;
            let row = row.filter(|t| credential.verify(&app.pepper, &t.key_hash));
            (row, found)
        }
    };
    let Some(token) = token else {
        // A failed authentication, in the name of the id the token carried when it had one
        // (never its secret part), whatever the request asked for.
        let actor = presented_id.map_or_else(|| sidecar.actor(), |id| Actor::new("token", id));
        let mut draft = base(actor);
        draft.event_type = AuditEventType::AuthFailed;
        return deny(app, sidecar, draft, Denial::TokenInvalid).await;
    };
    // The background task activates approved tokens every few seconds; the next resolve does
    // not wait for it.
    if may_activate
        && token.status == TokenStatus::PendingApproval
        && approvals::activate_for_token(app, sidecar.tenant, token.id).await?
    {
        return Ok(Attempt::Activated);
    }
    let actor = Actor::new("token", token.id);
    let lookup = |path: &SecretPath| {
        found
            .iter()
            .find(|s| &s.record.path == path)
            .map(|s| (s, secret_facts(s)))
    };
    let secrets = match policy::authorize(&grant_facts(&token), &asked, lookup) {
        Ok(secrets) => secrets,
        Err(denial) => return deny(app, sidecar, base(actor), denial).await,
    };
    if validate_only {
        app.metrics
            .resolve_outcomes
            .with_label_values(&["validated"])
            .inc();
        return Ok(Attempt::Done(Box::new(ResolveResponse {
            grant: grant(app, &token, token.uses, now),
            secrets: Vec::new(),
            reservation: None,
        })));
    }
    let events = secrets
        .iter()
        .map(|s| {
            base(actor.clone())
                .path(s.record.path.as_str())
                .reason(format!("version {}", s.record.current_version))
        })
        .collect();
    let reservation = reservation_for(app, &token, sidecar, now);
    let one = TokenUse {
        id: token.id,
        now,
        audit: events,
        reservation,
    };
    let uses = match app
        .group_commit
        .run(&app.store, sidecar.tenant, one)
        .await?
    {
        UseOutcome::Counted { uses } => uses,
        UseOutcome::Refused => {
            let denial = refused_use_reason(app, sidecar, token.id, now).await?;
            return deny(app, sidecar, base(actor), denial).await;
        }
    };
    app.metrics
        .resolve_outcomes
        .with_label_values(&["granted"])
        .inc();
    Ok(Attempt::Done(Box::new(ResolveResponse {
        grant: grant(app, &token, uses, now),
        secrets: secrets
            .into_iter()
            .map(|s| ResolvedSecret {
                path: s.record.path.to_string(),
                version: s.record.current_version,
                sensitivity: s.record.sensitivity,
                allowed_hosts: s
                    .record
                    .allowed_hosts
                    .iter()
                    .map(|h| h.as_str().to_owned())
                    .collect(),
                envelope: s.envelope.clone(),
            })
            .collect(),
        reservation: reservation.map(|r| UseReservation {
            id: r.id.to_string(),
            expires_at: r.deadline,
        }),
    })))
}

/// A reservation for a use of a `max_uses` token, releasable until the policy's deadline;
/// none for unlimited tokens (nothing to give back) or when reservations are off (0).
fn reservation_for(
    app: &App,
    token: &TokenRecord,
    sidecar: SidecarPrincipal,
    now: DateTime<Utc>,
) -> Option<NewReservation> {
    // A day bounds the arithmetic; no sensible deadline comes near it.
    let seconds = app.policy.use_reservation_seconds.min(86_400);
    if token.max_uses.is_none() || seconds == 0 {
        return None;
    }
    Some(NewReservation {
        id: uuid::Uuid::new_v4(),
        sidecar: sidecar.id,
        deadline: now + chrono::Duration::seconds(i64::try_from(seconds).unwrap_or(86_400)),
    })
}

/// The conditional update refused: re-read the row to say why.
async fn refused_use_reason(
    app: &App,
    sidecar: SidecarPrincipal,
    id: TokenId,
    now: DateTime<Utc>,
) -> ServiceResult<Denial> {
    let token = app.store.get_token(sidecar.tenant, id).await?;
    Ok(match token {
        None => Denial::TokenInvalid,
        // Revoked or expired since the snapshot says so; otherwise the uses ran out.
        Some(token) => policy::check_lifecycle(&grant_facts(&token), now)
            .err()
            .unwrap_or(Denial::UsesExhausted),
    })
}

/// A grant may be cached by the sidecar for the policy TTL, never beyond the token's expiry,
/// and never for counted tokens (each of their uses must reach the control plane).
fn grant(app: &App, token: &TokenRecord, uses: i64, now: DateTime<Utc>) -> Grant {
    let remaining = (token.expires_at - now).num_seconds().max(0).unsigned_abs();
    let cache_ttl_seconds = if token.max_uses.is_some() {
        0
    } else {
        app.policy.grant_cache_ttl_seconds.min(remaining)
    };
    Grant {
        token_id: token.id.to_string(),
        tenant_id: token.tenant_id.to_string(),
        agent_id: token.agent_id.to_string(),
        scopes: token.scopes.iter().map(ToString::to_string).collect(),
        ip_allowlist: token.ip_allowlist.iter().map(ToString::to_string).collect(),
        approved_sensitivity: token.approved_sensitivity,
        expires_at: token.expires_at,
        max_uses: token.max_uses,
        uses,
        cache_ttl_seconds,
    }
}

/// Records the denial and returns it. The denial stands even if its audit event cannot be
/// written (nothing was granted); the failure is logged.
async fn deny<T>(
    app: &App,
    sidecar: SidecarPrincipal,
    draft: AuditDraft,
    denial: Denial,
) -> ServiceResult<T> {
    // The code, but for a read above the approved sensitivity, which shares its code with a
    // token waiting for approval and is an anomaly (`crate::anomaly`) where waiting is not.
    let reason = match &denial {
        Denial::AboveApprovedSensitivity {
            sensitivity,
            approved,
            ..
        } => format!(
            "{ABOVE_APPROVED_REASON} ({} > {})",
            sensitivity.as_str(),
            approved.as_str()
        ),
        _ => denial.code().to_owned(),
    };
    let mut draft = draft.failed(reason);
    draft.path = denial.path().map(ToString::to_string);
    if let Err(e) = app.store.append_audit(sidecar.tenant, draft).await {
        tracing::error!(error = %e, "could not write resolve denial audit event");
    }
    app.metrics
        .resolve_outcomes
        .with_label_values(&[denial.code()])
        .inc();
    Err(ServiceError::denied(denial.error_code(), denial.message()))
}
