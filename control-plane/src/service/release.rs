//! Giving back a reserved use of a `max_uses` token (`POST /v1/sidecar/release`).
//!
//! Resolve counts a use of a `max_uses` token as a reservation (see `resolve`): it counts
//! against `max_uses` at once, so N parallel uses still grant exactly `max_uses`. When the
//! sidecar could not inject the value (the KMS was down, the envelope did not open, a refusal
//! after resolve), it releases the reservation and the agent's retry finds the use still there.
//!
//! Only the sidecar that resolved may release, only once, and only until the reservation's
//! deadline (`tokens.use_reservation_seconds`); after it the use is spent whatever happens.
//! That is the fail-safe direction: the control plane cannot know whether a value it handed out
//! was injected, so nothing but the sidecar's explicit, timely word gives a use back, a use is
//! never given back twice, and a sidecar that crashed after injecting never gets a use spent
//! twice. A release of an unknown reservation and of another sidecar's look the same (404), so
//! one sidecar learns nothing about another's.

use agent_secret_core::api::{ErrorCode, ReleaseOutcome, ReleaseUseRequest, ReleasedUse};
use agent_secret_core::ids::TokenId;
use uuid::Uuid;

use super::auth::SidecarPrincipal;
use super::{App, ServiceError, ServiceResult};
use crate::audit::{now_micros, Actor, AuditDraft, AuditEventType};
use crate::store::ReleaseResult;

/// Longest reason code a sidecar may give.
const MAX_REASON: usize = 64;

/// Releases `request.reservation_id` for `sidecar`; idempotent.
pub async fn release(
    app: &App,
    sidecar: SidecarPrincipal,
    request: &ReleaseUseRequest,
) -> ServiceResult<ReleasedUse> {
    let id = Uuid::parse_str(request.reservation_id.trim()).map_err(|_| {
        ServiceError::invalid(ErrorCode::InvalidRequest, "reservation_id is not a UUID")
    })?;
    let reason = parse_reason(request.reason.as_deref())?;
    let audit = move |token: TokenId| {
        AuditDraft::new(AuditEventType::TokenUseReleased, Actor::new("token", token)).reason(
            format!(
                "{reason}; reservation {id} released by sidecar {}",
                sidecar.id
            ),
        )
    };
    let result = app
        .store
        .release_token_use(sidecar.tenant, id, sidecar.id, now_micros(), &audit)
        .await?;
    let outcome = match result {
        ReleaseResult::Released { .. } => "released",
        ReleaseResult::AlreadyReleased => "already_released",
        ReleaseResult::Expired => "expired",
        ReleaseResult::NotFound => "not_found",
    };
    app.metrics.use_releases.with_label_values(&[outcome]).inc();
    let outcome = match result {
        ReleaseResult::Released { .. } => ReleaseOutcome::Released,
        ReleaseResult::AlreadyReleased => ReleaseOutcome::AlreadyReleased,
        ReleaseResult::Expired => {
            return Err(ServiceError::Conflict(
                "the reservation's deadline has passed; the use is spent".into(),
            ))
        }
        ReleaseResult::NotFound => return Err(ServiceError::NotFound("reservation")),
    };
    Ok(ReleasedUse {
        reservation_id: id.to_string(),
        outcome,
    })
}

/// A denial code as the reason, or `unspecified`; free text is refused (it goes into the
/// audit log and exports).
fn parse_reason(reason: Option<&str>) -> ServiceResult<String> {
    match reason {
        None => Ok("unspecified".into()),
        Some(r)
            if !r.is_empty()
                && r.len() <= MAX_REASON
                && r.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') =>
        {
            Ok(r.to_owned())
        }
        Some(_) => Err(ServiceError::invalid(
            ErrorCode::InvalidRequest,
            format!("reason must be a code of at most {MAX_REASON} characters [a-z0-9_]"),
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reasons_are_codes_never_free_text() {
        assert_eq!(parse_reason(None).unwrap(), "unspecified");
        assert_eq!(
            parse_reason(Some("kms_unavailable")).unwrap(),
            "kms_unavailable"
        );
        for bad in ["", "KMS", "kms unavailable", "a\nb", &"x".repeat(65)] {
            assert!(parse_reason(Some(bad)).is_err(), "{bad:?}");
        }
    }
}
