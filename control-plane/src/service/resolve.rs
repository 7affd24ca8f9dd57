//! The sidecar's question: may this token send these secrets to this host, from this IP?
//! (With no paths: may this token use the sidecar at all? Nothing is read or counted.)
//!
//! Checks run in a fixed order, each with its stable denial code (DESIGN.md "Sidecar
//! contract"): token (`token_invalid`, `token_revoked`, `approval_pending`, `approval_denied`,
//! `token_expired`), client IP (`ip_not_allowed`), scope (`scope_denied`, decided before the
//! path is looked up so a path outside the scope is denied the same way whether it exists or
//! not), existence (`secret_not_found`), sensitivity (`scope_denied`), destination
//! (`destination_not_allowed`) and finally the atomic use count (`uses_exhausted`). The checks
//! are pure functions; only the final use count and the audit events touch the store.
//!
//! A use of a `max_uses` token is counted as a reservation the sidecar may give back before
//! its deadline if the value never reached the upstream (`release`): the response carries its
//! id. It counts against `max_uses` from the start, so the count stays exact under any
//! concurrency, and it costs the group-commit batch one indexed DELETE and one INSERT per
//! limited use (unlimited tokens, the common case, are unchanged).

use std::net::IpAddr;

use agent_secret_core::api::{
    ErrorCode, Grant, ResolveRequest, ResolveResponse, ResolvedSecret, TokenStatus, UseReservation,
};
use agent_secret_core::credential::{CredentialKind, PresentedCredential};
use agent_secret_core::host::Destination;
use agent_secret_core::ids::TokenId;
use agent_secret_core::path::SecretPath;
use agent_secret_core::scope::{scopes_cover, Action};
use chrono::{DateTime, Utc};

use super::auth::SidecarPrincipal;
use super::{App, ServiceError, ServiceResult};
use crate::audit::{now_micros, Actor, AuditDraft, AuditEventType};
use crate::store::{NewReservation, StoredSecret, TokenRecord, TokenUse, UseOutcome};

/// Most secrets one request may resolve at once.
pub const MAX_PATHS: usize = 16;

/// A refusal: its code and a message safe to show the agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    pub code: ErrorCode,
    pub message: String,
    /// The path the denial concerns, for the audit record.
    pub path: Option<String>,
}

impl Denial {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            path: None,
        }
    }

    fn at(mut self, path: &SecretPath) -> Self {
        self.path = Some(path.to_string());
        self
    }
}

/// The token's own state at `now`, from the client at `client_ip`.
pub fn check_token(
    token: &TokenRecord,
    now: DateTime<Utc>,
    client_ip: IpAddr,
) -> Result<(), Denial> {
    match token.status {
        TokenStatus::Revoked => {
            return Err(Denial::new(
                ErrorCode::TokenRevoked,
                "token has been revoked",
            ))
        }
        TokenStatus::PendingApproval => {
            return Err(Denial::new(
                ErrorCode::ApprovalPending,
                "token is waiting for approval",
            ))
        }
        TokenStatus::Denied => {
            return Err(Denial::new(
                ErrorCode::ApprovalDenied,
                "token approval was denied",
            ))
        }
        TokenStatus::Active | TokenStatus::Expired => {}
    }
    if token.revoked_at.is_some() {
        return Err(Denial::new(
            ErrorCode::TokenRevoked,
            "token has been revoked",
        ));
    }
    if token.status == TokenStatus::Expired || token.expires_at <= now {
        return Err(Denial::new(ErrorCode::TokenExpired, "token has expired"));
    }
    if !token.ip_allowlist.is_empty()
        && !token
            .ip_allowlist
            .iter()
            .any(|net| net.contains(&client_ip))
    {
        return Err(Denial::new(
            ErrorCode::IpNotAllowed,
            format!("client address {client_ip} is not in the token's ip_allowlist"),
        ));
    }
    if token.max_uses.is_some_and(|max| token.uses >= max) {
        return Err(Denial::new(
            ErrorCode::UsesExhausted,
            "token has no uses left",
        ));
    }
    Ok(())
}

/// Scope first, for every path, before anything about the secrets is looked up.
pub fn check_scope(token: &TokenRecord, paths: &[SecretPath]) -> Result<(), Denial> {
    for path in paths {
        if !scopes_cover(&token.scopes, Action::Read, path) {
            return Err(Denial::new(
                ErrorCode::ScopeDenied,
                format!("token scope does not allow reading `{path}`"),
            )
            .at(path));
        }
    }
    Ok(())
}

/// The found secrets, in request order: each must exist, be within the token's approved
/// sensitivity and be bound to the destination.
pub fn check_secrets<'a>(
    token: &TokenRecord,
    paths: &[SecretPath],
    found: &'a [StoredSecret],
    destination: &Destination,
) -> Result<Vec<&'a StoredSecret>, Denial> {
    paths
        .iter()
        .map(|path| {
            let secret = found
                .iter()
                .find(|s| &s.record.path == path)
                .ok_or_else(|| {
                    Denial::new(ErrorCode::SecretNotFound, format!("no secret at `{path}`"))
                        .at(path)
                })?;
            if secret.record.sensitivity > token.approved_sensitivity {
                return Err(Denial::new(
                    ErrorCode::ScopeDenied,
                    format!(
                        "`{path}` is {} and this token is approved for {} secrets only",
                        secret.record.sensitivity.as_str(),
                        token.approved_sensitivity.as_str()
                    ),
                )
                .at(path));
            }
            if !secret
                .record
                .allowed_hosts
                .iter()
                .any(|h| h.matches(destination))
            {
                return Err(Denial::new(
                    ErrorCode::DestinationNotAllowed,
                    format!("`{path}` may not be sent to {destination}"),
                )
                .at(path));
            }
            Ok(secret)
        })
        .collect()
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
    let (paths, destination, client_ip) = parse_request(request)?;
    let now = now_micros();
    // No paths: the sidecar only asks whether the token may use it at all (a request without
    // placeholders); nothing is read, so no use is counted and only a refusal is audited.
    let validate_only = paths.is_empty();
    let event_type = if validate_only {
        AuditEventType::AuthFailed
    } else {
        AuditEventType::SecretRead
    };
    let base = |actor: Actor| {
        AuditDraft::new(event_type, actor)
            .client(Some(client_ip.to_string()), None)
            .destination(destination.to_string())
    };
    // One read transaction for the token and the secrets; the secrets are read only for a
    // token that passes every check below, so a refused one touches no secret row.
    let (token, found) =
        match PresentedCredential::parse_kind(CredentialKind::Token, &request.token) {
            Err(_) => (None, Vec::new()),
            Ok(credential) => {
                let admit = |t: &TokenRecord| {
                    credential.verify(&app.pepper, &t.key_hash)
                        && check_token(t, now, client_ip).is_ok()
                        && check_scope(t, &paths).is_ok()
                };
                let (row, found) = app
                    .store
                    .resolve_snapshot(sidecar.tenant, TokenId(credential.id), &paths, &admit)
                    .await?;
                let row = row.filter(|t| credential.verify(&app.pepper, &t.key_hash));
                (row, found)
            }
        };
    let Some(token) = token else {
        let denial = Denial::new(ErrorCode::TokenInvalid, "token is not valid");
        return deny(app, sidecar, base(sidecar.actor()), denial).await;
    };
    let actor = Actor::new("token", token.id);
    if let Err(denial) =
        check_token(&token, now, client_ip).and_then(|()| check_scope(&token, &paths))
    {
        return deny(app, sidecar, base(actor), denial).await;
    }
    if validate_only {
        app.metrics
            .resolve_outcomes
            .with_label_values(&["validated"])
            .inc();
        return Ok(ResolveResponse {
            grant: grant(app, &token, token.uses, now),
            secrets: Vec::new(),
            reservation: None,
        });
    }
    let secrets = match check_secrets(&token, &paths, &found, &destination) {
        Ok(secrets) => secrets,
        Err(denial) => return deny(app, sidecar, base(actor), denial).await,
    };
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
        .consume(&app.store, sidecar.tenant, one)
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
    Ok(ResolveResponse {
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
    })
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
        None => Denial::new(ErrorCode::TokenInvalid, "token is not valid"),
        Some(token) => match check_token(&token, now, IpAddr::from([0, 0, 0, 0])) {
            Err(d) if d.code != ErrorCode::IpNotAllowed => d,
            _ => Denial::new(ErrorCode::UsesExhausted, "token has no uses left"),
        },
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
async fn deny(
    app: &App,
    sidecar: SidecarPrincipal,
    draft: AuditDraft,
    denial: Denial,
) -> ServiceResult<ResolveResponse> {
    let mut draft = draft.failed(denial.code.as_str());
    draft.path = denial.path.clone();
    if let Err(e) = app.store.append_audit(sidecar.tenant, draft).await {
        tracing::error!(error = %e, "could not write resolve denial audit event");
    }
    app.metrics
        .resolve_outcomes
        .with_label_values(&[denial.code.as_str()])
        .inc();
    Err(ServiceError::denied(denial.code, denial.message))
}
