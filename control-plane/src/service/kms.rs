//! KEK lifecycle: rotation (scheduled and forced), observing rotations made by the KMS itself,
//! re-wrapping DEKs onto the primary version, the DEK inventory, and retiring old versions.
//!
//! Over 400 lines: rotate, observe, rewrap and retire are one lifecycle guarding one invariant.
//!
//! Rotation never touches a secret: old versions keep unwrapping, so a rotation only changes
//! which version *new* DEKs are wrapped under. `rewrap` then moves stored DEKs onto the primary
//! (unwrap + wrap in the KMS; the value ciphertext is not read), and only once `kms status`
//! shows zero DEKs under a version may `retire_version` disable it.
//!
//! Exactly-once across replicas comes from the store: the rotation lease and the recorded
//! primary are conditional updates, and only the replica whose update changed the primary
//! writes `kms.rotated` and pushes the watch event.

use std::time::Duration;

use agent_secret_core::api::WatchEvent;
use agent_secret_core::envelope::{rewrap_dek, SecretAad};
use agent_secret_core::ids::TenantId;
use agent_secret_core::kms::{KeyInfo, KeyRef, KmsError, WrappedDek};
use chrono::{DateTime, Utc};

use super::App;
use crate::audit::{Actor, AuditDraft, AuditEventType};
use crate::store::{DekCount, PrimaryChange, RewrappedDek, StoreError, StoredDek};

/// A replica that claimed a rotation and died leaves the lease; another may take it after this.
const ROTATION_LEASE: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum KeyAdminError {
    #[error("key version {version} is the primary version; rotate first")]
    Primary { version: String },
    #[error("{deks} DEK(s) are still wrapped under key version {version}; run `kms rewrap` first")]
    InUse { version: String, deks: i64 },
    #[error("another replica is rotating this tenant's key; try again in a few minutes")]
    RotationInProgress,
    #[error(
        "primary version {primary} is too recent to retire version {version}: writes may still \
         wrap under older versions until {}", until.map_or("never".into(), |u| u.to_rfc3339())
    )]
    TooSoon {
        version: String,
        primary: String,
        until: Option<DateTime<Utc>>,
    },
    #[error(transparent)]
    Kms(#[from] KmsError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl KeyAdminError {
    /// Stable codes for the CLI's `--json` errors and exit reporting.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Primary { .. } => "key_version_is_primary",
            Self::InUse { .. } => "key_version_in_use",
            Self::RotationInProgress => "rotation_in_progress",
            Self::TooSoon { .. } => "retire_too_soon",
            Self::Kms(e) => e.code(),
            Self::Store(StoreError::NotFound) => "not_found",
            Self::Store(_) => "unavailable",
        }
    }
}

pub type KeyAdminResult<T> = Result<T, KeyAdminError>;

/// One tenant's KEK and where its DEKs are.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TenantKeyStatus {
    pub tenant_id: TenantId,
    pub key_name: String,
    pub primary_version: String,
    pub primary_created_at: Option<DateTime<Utc>>,
    pub rotates_itself: bool,
    pub versions: Vec<VersionStatus>,
    /// DEKs not under the primary: what `kms rewrap` still has to do.
    pub deks_not_on_primary: i64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct VersionStatus {
    pub key_name: String,
    pub key_version: String,
    pub primary: bool,
    pub deks: i64,
}

/// What one tenant's rewrap did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RewrapReport {
    pub rewrapped: u64,
    /// Changed or deleted by a concurrent writer between read and replace; nothing to do.
    pub skipped: u64,
    /// Could not be re-wrapped (each logged with its path, version and error code).
    pub failed: u64,
}

/// What one scheduler step did for a tenant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// The new primary, if this step rotated the KEK.
    pub rotated: Option<KeyRef>,
    /// Whether this step recorded a new primary and pushed `kek_rotated` to sidecars.
    pub announced: bool,
}

/// Reads the tenant's primary from the KMS and records it; a newer primary than recorded
/// (a rotation by Cloud KMS, another replica or the CLI) is announced once. Returns whether
/// this call announced it.
pub async fn observe(
    app: &App,
    tenant: TenantId,
    actor: &Actor,
) -> KeyAdminResult<(KeyInfo, bool)> {
    let info = app.kms.key_info(tenant).await?;
    let announced = record(app, tenant, &info.key_name, &info.primary_version, actor).await?;
    Ok((info, announced))
}

/// Rotates the tenant's KEK now (`kms rotate --tenant`), whatever its age.
pub async fn rotate(app: &App, tenant: TenantId, actor: &Actor) -> KeyAdminResult<KeyRef> {
    let (info, _) = observe(app, tenant, actor).await?;
    rotate_claimed(app, tenant, &info, actor)
        .await
        .map(|(key, _)| key)
}

/// The scheduler's step for one tenant: observe, then rotate a local KEK whose primary is
/// older than `period`. Cloud KMS rotates its keys itself; they are only observed.
pub async fn rotate_if_due(
    app: &App,
    tenant: TenantId,
    period: Duration,
    now: DateTime<Utc>,
) -> KeyAdminResult<Step> {
    let actor = Actor::system();
    let (info, announced) = observe(app, tenant, &actor).await?;
    let due = match (info.rotates_itself, info.primary_created_at) {
        (false, Some(created)) => {
            let period = chrono::Duration::from_std(period).unwrap_or(chrono::Duration::MAX);
            created
                .checked_add_signed(period)
                .is_none_or(|due| due <= now)
        }
        _ => false,
    };
    let observed = Step {
        rotated: None,
        announced,
    };
    if !due {
        return Ok(observed);
    }
    match rotate_claimed(app, tenant, &info, &actor).await {
        Ok((key, rotation_announced)) => Ok(Step {
            rotated: Some(key),
            announced: announced || rotation_announced,
        }),
        // Another replica holds the lease: it is doing exactly this.
        Err(KeyAdminError::RotationInProgress) => Ok(observed),
        Err(e) => Err(e),
    }
}

async fn rotate_claimed(
    app: &App,
    tenant: TenantId,
    info: &KeyInfo,
    actor: &Actor,
) -> KeyAdminResult<(KeyRef, bool)> {
    let now = Utc::now();
    let stale = now - chrono::Duration::from_std(ROTATION_LEASE).unwrap_or_default();
    if !app
        .store
        .claim_rotation(tenant, &info.primary_version, now, stale)
        .await?
    {
        return Err(KeyAdminError::RotationInProgress);
    }
    let key = match app.kms.rotate(tenant).await {
        Ok(key) => key,
        Err(e) => {
            // Best effort: the lease also expires on its own.
            let _ = app.store.release_rotation(tenant).await;
            return Err(e.into());
        }
    };
    // If this write fails the rotation still happened; the next observation records and
    // announces it, because the recorded primary is still the old one.
    let announced = record(app, tenant, &key.key_name, &key.key_version, actor).await?;
    Ok((key, announced))
}

async fn record(
    app: &App,
    tenant: TenantId,
    key_name: &str,
    key_version: &str,
    actor: &Actor,
) -> KeyAdminResult<bool> {
    let audit = AuditDraft::new(AuditEventType::KmsRotated, actor.clone())
        .reason(format!("{key_name}: primary version is now {key_version}"));
    let change = app
        .store
        .record_primary(tenant, key_name, key_version, audit)
        .await?;
    if let PrimaryChange::Rotated { previous } = change {
        tracing::info!(%tenant, key = key_name, previous, current = key_version, "KEK rotated");
        app.metrics.kek_rotations.inc();
        let event = WatchEvent::KekRotated {
            key_name: key_name.to_owned(),
            key_version: key_version.to_owned(),
        };
        app.events.publish(tenant, event).await;
        return Ok(true);
    }
    Ok(false)
}

/// Per tenant: primary version and DEK counts per version.
pub async fn status(app: &App, tenant: TenantId) -> KeyAdminResult<TenantKeyStatus> {
    let info = app.kms.key_info(tenant).await?;
    let inventory = app.store.dek_inventory(tenant).await?;
    Ok(status_of(tenant, info, inventory))
}

/// How many of `inventory`'s DEKs are not wrapped under `key_name` version `key_version`.
pub fn deks_not_under(inventory: &[DekCount], key_name: &str, key_version: &str) -> i64 {
    inventory
        .iter()
        .filter(|c| !(c.key_name == key_name && c.key_version == key_version))
        .map(|c| c.deks)
        .sum()
}

fn status_of(tenant: TenantId, info: KeyInfo, inventory: Vec<DekCount>) -> TenantKeyStatus {
    let is_primary =
        |c: &DekCount| c.key_name == info.key_name && c.key_version == info.primary_version;
    let mut versions: Vec<VersionStatus> = inventory
        .iter()
        .map(|c| VersionStatus {
            key_name: c.key_name.clone(),
            key_version: c.key_version.clone(),
            primary: is_primary(c),
            deks: c.deks,
        })
        .collect();
    if !versions.iter().any(|v| v.primary) {
        versions.push(VersionStatus {
            key_name: info.key_name.clone(),
            key_version: info.primary_version.clone(),
            primary: true,
            deks: 0,
        });
    }
    let deks_not_on_primary = deks_not_under(&inventory, &info.key_name, &info.primary_version);
    TenantKeyStatus {
        tenant_id: tenant,
        key_name: info.key_name,
        primary_version: info.primary_version,
        primary_created_at: info.primary_created_at,
        rotates_itself: info.rotates_itself,
        versions,
        deks_not_on_primary,
    }
}

/// Re-wraps every DEK of the tenant not under the primary version, `batch` at a time, each
/// batch replaced and audited in one transaction. Resumable and idempotent: it works from what
/// the database holds, so a rerun continues where an interrupted run stopped. `progress` is
/// called with the number of DEKs handled so far.
pub async fn rewrap(
    app: &App,
    tenant: TenantId,
    batch: i64,
    actor: &Actor,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> KeyAdminResult<RewrapReport> {
    let primary = app.kms.primary_key(tenant).await?;
    let mut report = RewrapReport::default();
    let mut cursor: Option<(String, i64)> = None;
    loop {
        let after = cursor.as_ref().map(|(id, v)| (id.as_str(), *v));
        let deks = app
            .store
            .deks_not_under(
                tenant,
                &primary.key_name,
                &primary.key_version,
                after,
                batch.max(1),
            )
            .await?;
        let Some(last) = deks.last() else { break };
        cursor = Some((last.secret_id.clone(), last.version));
        let mut rewrapped = Vec::with_capacity(deks.len());
        for dek in deks {
            match rewrap_one(app, tenant, &dek, &primary.key_version).await {
                Ok(new) => rewrapped.push(new),
                Err(e) => {
                    tracing::error!(
                        %tenant, path = %dek.path, version = dek.version, code = e.code(),
                        error = %e, "DEK could not be re-wrapped"
                    );
                    report.failed += 1;
                }
            }
        }
        let attempted = rewrapped.len() as u64;
        let audit = AuditDraft::new(AuditEventType::KmsRewrapped, actor.clone());
        let replaced = app
            .store
            .replace_wrapped_deks(tenant, &rewrapped, audit)
            .await?;
        report.rewrapped += replaced;
        report.skipped += attempted - replaced;
        progress(report.rewrapped + report.skipped + report.failed);
    }
    Ok(report)
}

/// Unwraps and re-wraps one DEK under exactly `to_version` inside the KMS backend; the value
/// ciphertext is never read.
async fn rewrap_one(
    app: &App,
    tenant: TenantId,
    dek: &StoredDek,
    to_version: &str,
) -> Result<RewrappedDek, KmsError> {
    let aad = SecretAad {
        tenant,
        path: dek.path.as_str(),
        version: dek.version,
    };
    let wrapped = WrappedDek {
        key_name: dek.key_name.clone(),
        key_version: dek.key_version.clone(),
        ciphertext: dek.wrapped_dek.clone(),
    };
    let new = rewrap_dek(app.kms.as_ref(), &aad, &wrapped, to_version).await?;
    Ok(RewrappedDek {
        old: dek.clone(),
        key_name: new.key_name,
        key_version: new.key_version,
        wrapped_dek: new.ciphertext,
    })
}

/// Disables `version` of the tenant's KEK, refusing while it is primary, while it wraps any
/// DEK, or while the primary is younger than `grace`.
///
/// The grace period covers writes that wrapped their DEK under the old version and had not
/// committed when the DEKs were counted: a local rotation takes effect at once, but Cloud KMS
/// may keep encrypting under the previous primary for minutes to hours after a change. The
/// count is taken again after disabling; a DEK that appeared anyway re-enables the version.
/// An intent event is written first, so the key never changes without a trace in the log.
pub async fn retire_version(
    app: &App,
    tenant: TenantId,
    version: &str,
    grace: Duration,
    actor: &Actor,
) -> KeyAdminResult<()> {
    let info = app.kms.key_info(tenant).await?;
    if info.primary_version == version {
        return Err(KeyAdminError::Primary {
            version: version.to_owned(),
        });
    }
    let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
    let settled = info
        .primary_created_at
        .and_then(|created| created.checked_add_signed(grace));
    if settled.is_none_or(|at| at > Utc::now()) {
        return Err(KeyAdminError::TooSoon {
            version: version.to_owned(),
            primary: info.primary_version,
            until: settled,
        });
    }
    let count = || async {
        let deks: i64 = app
            .store
            .dek_inventory(tenant)
            .await?
            .iter()
            .filter(|c| c.key_name == info.key_name && c.key_version == version)
            .map(|c| c.deks)
            .sum();
        Ok::<i64, StoreError>(deks)
    };
    let deks = count().await?;
    if deks > 0 {
        return Err(KeyAdminError::InUse {
            version: version.to_owned(),
            deks,
        });
    }
    let event = |success: bool, what: &str| {
        let draft = AuditDraft::new(AuditEventType::KmsVersionRetired, actor.clone())
            .reason(format!("{}: version {version}: {what}", info.key_name));
        AuditDraft { success, ..draft }
    };
    app.store
        .append_audit(tenant, event(false, "retiring"))
        .await?;
    if let Err(e) = app.kms.disable_version(tenant, version).await {
        app.store
            .append_audit(tenant, event(false, e.code()))
            .await?;
        return Err(e.into());
    }
    let late = count().await?;
    if late > 0 {
        app.kms.enable_version(tenant, version).await?;
        app.store
            .append_audit(tenant, event(false, "re-enabled: a DEK appeared"))
            .await?;
        return Err(KeyAdminError::InUse {
            version: version.to_owned(),
            deks: late,
        });
    }
    app.store
        .append_audit(tenant, event(true, "disabled"))
        .await?;
    Ok(())
}
