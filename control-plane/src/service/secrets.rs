//! Secrets: write values (sealed into envelopes here, never stored or returned in clear) and
//! read metadata.
//!
//! Each write creates a new version under a fresh DEK whose AAD binds tenant, path and version.
//! Because the version is inside the AAD, it is chosen before sealing; a concurrent writer that
//! took the same number makes the store answer `Conflict`, and we reseal under the next one.
//! Versions keep increasing across delete and re-create (the store remembers the last one), so
//! sidecars, which reuse a cached value when the resolved version matches, never mistake an
//! old value for a new secret at the same path.

use agent_secret_core::api::{
    DeletedSecret, ErrorCode, PutSecretRequest, PutSecretResponse, Role, SecretList,
    SecretMetadata, Sensitivity, WatchEvent,
};
use agent_secret_core::envelope::{seal, SecretAad};
use agent_secret_core::host::HostPattern;
use agent_secret_core::path::SecretPath;
use agent_secret_core::secret::SecretBytes;

use super::auth::OperatorPrincipal;
use super::{App, RequestContext, ServiceError, ServiceResult};
use crate::audit::{AuditDraft, AuditEventType};
use crate::store::{NewSecretVersion, SecretRecord, SecretVersionInfo, StoreError};

/// Largest secret value accepted (the request body is capped at 64 KiB as well).
pub const MAX_VALUE_BYTES: usize = 32 * 1024;
/// Most destinations one secret may be bound to.
pub const MAX_ALLOWED_HOSTS: usize = 64;
/// Concurrent writers to one path retry this many times before answering `conflict`.
const WRITE_ATTEMPTS: usize = 5;

pub fn parse_path(raw: &str) -> ServiceResult<SecretPath> {
    SecretPath::parse(raw).map_err(|e| ServiceError::invalid(ErrorCode::InvalidPath, e.to_string()))
}

/// Values end up in HTTP header values: CR, LF and NUL (header injection) and the other control
/// characters a header cannot carry are refused here, at write time, not at injection time.
fn validate_value(value: &str) -> ServiceResult<()> {
    if value.is_empty() {
        return Err(ServiceError::invalid(
            ErrorCode::InvalidSecretValue,
            "secret value must not be empty",
        ));
    }
    if value.len() > MAX_VALUE_BYTES {
        return Err(ServiceError::invalid(
            ErrorCode::InvalidSecretValue,
            format!("secret value must be at most {MAX_VALUE_BYTES} bytes"),
        ));
    }
    if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(ServiceError::invalid(
            ErrorCode::InvalidSecretValue,
            "secret value must not contain CR, LF, NUL or other control characters",
        ));
    }
    Ok(())
}

fn parse_hosts(raw: &[String]) -> ServiceResult<Vec<HostPattern>> {
    if raw.is_empty() || raw.len() > MAX_ALLOWED_HOSTS {
        return Err(ServiceError::invalid(
            ErrorCode::InvalidHost,
            format!("allowed_hosts must list 1 to {MAX_ALLOWED_HOSTS} destination hosts"),
        ));
    }
    raw.iter()
        .map(|h| {
            HostPattern::parse(h).map_err(|e| {
                ServiceError::invalid(ErrorCode::InvalidHost, format!("allowed_hosts: {e}"))
            })
        })
        .collect()
}

pub async fn put(
    app: &App,
    caller: OperatorPrincipal,
    raw_path: &str,
    request: PutSecretRequest,
    ctx: &RequestContext,
) -> ServiceResult<PutSecretResponse> {
    caller.require(&[Role::Admin])?;
    let path = parse_path(raw_path)?;
    validate_value(&request.value)?;
    let allowed_hosts = parse_hosts(&request.allowed_hosts)?;
    let value = SecretBytes::new(request.value.as_bytes().to_vec());
    for _ in 0..WRITE_ATTEMPTS {
        let current = app.store.get_secret(caller.tenant, &path).await?;
        // An update that omits sensitivity keeps the current one: a routine value rotation
        // must never silently downgrade a sensitive secret.
        let sensitivity = request
            .sensitivity
            .or(current.as_ref().map(|c| c.sensitivity))
            .unwrap_or(Sensitivity::Standard);
        let version = app.store.last_secret_version(caller.tenant, &path).await? + 1;
        let aad = SecretAad {
            tenant: caller.tenant,
            path: path.as_str(),
            version,
        };
        let envelope = match seal(app.kms.as_ref(), &aad, &value).await {
            Ok(envelope) => envelope,
            Err(e) => {
                // Counted, and audited when the KMS's answer failed its integrity checks.
                let draft = AuditDraft::new(AuditEventType::SecretWrite, caller.actor())
                    .client(ctx.ip_string(), ctx.user_agent.clone())
                    .path(path.as_str());
                return Err(super::sealing_failed(app, caller.tenant, draft, e).await);
            }
        };
        let new = NewSecretVersion {
            path: path.clone(),
            version,
            sensitivity,
            allowed_hosts: allowed_hosts.clone(),
            envelope,
        };
        let audit = AuditDraft::new(AuditEventType::SecretWrite, caller.actor())
            .client(ctx.ip_string(), ctx.user_agent.clone())
            .path(path.as_str())
            .reason(format!("version {version}"));
        match app
            .store
            .put_secret_version(caller.tenant, &new, audit)
            .await
        {
            Ok(record) => {
                let event = WatchEvent::SecretUpdated {
                    path: record.path.to_string(),
                    version: record.current_version,
                };
                app.events.publish(caller.tenant, event).await;
                return Ok(PutSecretResponse {
                    path: record.path.to_string(),
                    version: record.current_version,
                });
            }
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ServiceError::Conflict(format!(
        "secret `{path}` is being written concurrently; try again"
    )))
}

pub async fn get(
    app: &App,
    caller: OperatorPrincipal,
    raw_path: &str,
) -> ServiceResult<SecretMetadata> {
    caller.require(&[Role::Admin, Role::Approver, Role::Auditor])?;
    let path = parse_path(raw_path)?;
    app.store
        .get_secret(caller.tenant, &path)
        .await?
        .map(metadata)
        .ok_or(ServiceError::NotFound("secret"))
}

/// The secret's metadata and its versions, newest first (the dashboard's secret page).
pub async fn versions(
    app: &App,
    caller: OperatorPrincipal,
    raw_path: &str,
) -> ServiceResult<(SecretMetadata, Vec<SecretVersionInfo>)> {
    let current = get(app, caller, raw_path).await?;
    let path = parse_path(raw_path)?;
    let versions = app.store.list_secret_versions(caller.tenant, &path).await?;
    Ok((current, versions))
}

pub async fn list(
    app: &App,
    caller: OperatorPrincipal,
    prefix: Option<&str>,
) -> ServiceResult<SecretList> {
    caller.require(&[Role::Admin, Role::Approver, Role::Auditor])?;
    let prefix = match prefix.map(|p| p.trim_end_matches('/')) {
        None | Some("") => None,
        Some(p) => Some(parse_path(p)?),
    };
    let secrets = app
        .store
        .list_secrets(caller.tenant, prefix.as_ref())
        .await?;
    Ok(SecretList {
        secrets: secrets.into_iter().map(metadata).collect(),
    })
}

pub async fn delete(
    app: &App,
    caller: OperatorPrincipal,
    raw_path: &str,
    ctx: &RequestContext,
) -> ServiceResult<DeletedSecret> {
    caller.require(&[Role::Admin])?;
    let path = parse_path(raw_path)?;
    let audit = AuditDraft::new(AuditEventType::SecretDelete, caller.actor())
        .client(ctx.ip_string(), ctx.user_agent.clone())
        .path(path.as_str());
    if app.store.delete_secret(caller.tenant, &path, audit).await? {
        let event = WatchEvent::SecretDeleted {
            path: path.to_string(),
        };
        app.events.publish(caller.tenant, event).await;
        Ok(DeletedSecret {
            path: path.to_string(),
            deleted: true,
        })
    } else {
        Err(ServiceError::NotFound("secret"))
    }
}

fn metadata(record: SecretRecord) -> SecretMetadata {
    SecretMetadata {
        path: record.path.to_string(),
        version: record.current_version,
        sensitivity: record.sensitivity,
        allowed_hosts: record
            .allowed_hosts
            .iter()
            .map(|h| h.as_str().to_owned())
            .collect(),
        created_at: record.created_at,
        updated_at: record.updated_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_that_could_inject_headers_are_refused() {
        for bad in ["a\r\nX-Evil: 1", "a\nb", "a\0b", "a\x01b", ""] {
            assert!(validate_value(bad).is_err(), "{bad:?} must be refused");
        }
        for good in ["sk-live-123", "Bearer abc", "tab\tok", "ünïcödé"] {
            assert!(validate_value(good).is_ok(), "{good:?} must be accepted");
        }
    }
}
