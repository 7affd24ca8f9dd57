//! Sidecars: each registered sidecar holds a key that lets it resolve its own tenant's tokens.

use agent_secret_core::api::{CreatedSidecar, Role, SidecarInfo, SidecarList};
use agent_secret_core::credential::{issue_with_id, CredentialKind};
use agent_secret_core::ids::SidecarId;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::principal::{OperatorPrincipal, SidecarPrincipal};
use super::{validate_name, App, RequestContext, ServiceError, ServiceResult};
use crate::audit::{now_micros, AuditDraft, AuditEventType};
use crate::events::Signal;
use crate::store::SidecarRecord;

pub async fn create(
    app: &App,
    caller: OperatorPrincipal,
    name: &str,
    ctx: &RequestContext,
) -> ServiceResult<CreatedSidecar> {
    caller.require(&[Role::Admin])?;
    validate_name(name)?;
    let id = SidecarId::new();
    let credential = issue_with_id(CredentialKind::Sidecar, id.0, &app.pepper);
    let record = SidecarRecord {
        id,
        tenant_id: caller.tenant,
        name: name.to_owned(),
        key_hash: credential.hash.to_vec(),
        created_at: now_micros(),
        revoked_at: None,
        last_seen_at: None,
        last_version: None,
    };
    let audit = AuditDraft::new(AuditEventType::SidecarCreated, caller.actor())
        .client(ctx.ip_string(), ctx.user_agent.clone())
        .reason(format!("sidecar {id} ({name})"));
    app.store.create_sidecar(&record, audit).await?;
    Ok(CreatedSidecar {
        id: id.to_string(),
        sidecar_key: credential.token.expose().to_owned(),
    })
}

pub async fn list(app: &App, caller: OperatorPrincipal) -> ServiceResult<SidecarList> {
    caller.require(&[Role::Admin, Role::Auditor])?;
    let sidecars = app.store.list_sidecars(caller.tenant).await?;
    Ok(SidecarList {
        sidecars: sidecars.into_iter().map(info).collect(),
    })
}

pub async fn revoke(
    app: &App,
    caller: OperatorPrincipal,
    id: SidecarId,
    ctx: &RequestContext,
) -> ServiceResult<SidecarInfo> {
    caller.require(&[Role::Admin])?;
    let audit = AuditDraft::new(AuditEventType::SidecarRevoked, caller.actor())
        .client(ctx.ip_string(), ctx.user_agent.clone())
        .reason(format!("sidecar {id}"));
    if app
        .store
        .revoke_sidecar(caller.tenant, id, now_micros(), audit)
        .await?
    {
        app.verified_sidecars.forget(id);
        app.events
            .signal(caller.tenant, Signal::SidecarRevoked(id))
            .await;
    }
    let record = app
        .store
        .get_sidecar(caller.tenant, id)
        .await?
        .ok_or(ServiceError::NotFound("sidecar"))?;
    Ok(info(record))
}

fn info(record: SidecarRecord) -> SidecarInfo {
    SidecarInfo {
        id: record.id.to_string(),
        name: record.name,
        created_at: record.created_at,
        revoked_at: record.revoked_at,
        last_seen_at: record.last_seen_at,
        version: record.last_version,
    }
}

/// What a sidecar's User-Agent says of its version, as stored: `agent-secret-sidecar/1.2.3`
/// gives `1.2.3`; anything else is kept as sent, cut to 64 visible ASCII characters.
fn reported_version(user_agent: Option<&str>) -> Option<String> {
    let ua = user_agent?;
    let version = ua.strip_prefix(SIDECAR_PRODUCT).unwrap_or(ua);
    let cut: String = version
        .chars()
        .take_while(|c| c.is_ascii_graphic() || *c == ' ')
        .take(64)
        .collect();
    Some(cut).filter(|v| !v.is_empty())
}

/// The product token the sidecar puts before its version in its User-Agent.
pub const SIDECAR_PRODUCT: &str = "agent-secret-sidecar/";

/// How often a sidecar's heartbeat is written at most.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(60);

/// The last heartbeat written per sidecar, so that authentication (on every resolve) writes at
/// most one row a minute per sidecar.
#[derive(Debug, Default)]
pub struct Heartbeats {
    written: Mutex<HashMap<SidecarId, Instant>>,
}

impl Heartbeats {
    fn due(&self, id: SidecarId, now: Instant) -> bool {
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        match written.get(&id) {
            Some(at) if now.duration_since(*at) < HEARTBEAT_EVERY => false,
            _ => {
                written.insert(id, now);
                true
            }
        }
    }
}

/// Records that `sidecar` authenticated, at most once a minute. A failed write is logged and
/// forgotten: the heartbeat informs operators, it never decides anything.
pub async fn seen(app: &App, sidecar: SidecarPrincipal, user_agent: Option<&str>) {
    if !app.heartbeats.due(sidecar.id, Instant::now()) {
        return;
    }
    let version = reported_version(user_agent);
    if let Err(e) = app
        .store
        .sidecar_seen(sidecar.tenant, sidecar.id, now_micros(), version.as_deref())
        .await
    {
        tracing::warn!(sidecar = %sidecar.id, error = %e, "could not record a sidecar's heartbeat");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_comes_from_the_user_agent() {
        assert_eq!(
            reported_version(Some("agent-secret-sidecar/0.3.1")).as_deref(),
            Some("0.3.1")
        );
        assert_eq!(reported_version(Some("curl/8")).as_deref(), Some("curl/8"));
        assert_eq!(reported_version(Some("x\u{7}y")).as_deref(), Some("x"));
        assert_eq!(
            reported_version(Some(&"9".repeat(500))).map(|v| v.len()),
            Some(64)
        );
        assert_eq!(reported_version(None), None);
    }

    #[test]
    fn a_heartbeat_is_due_once_a_minute_per_sidecar() {
        let beats = Heartbeats::default();
        let (a, b) = (SidecarId::new(), SidecarId::new());
        let t = Instant::now();
        assert!(beats.due(a, t));
        assert!(!beats.due(a, t + Duration::from_secs(59)));
        assert!(beats.due(b, t + Duration::from_secs(1)));
        assert!(beats.due(a, t + Duration::from_secs(61)));
    }
}
