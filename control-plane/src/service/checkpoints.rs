//! The checkpoint task and the tenants' audit keys (`crate::audit_checkpoint` explains the
//! checkpoints). Every replica runs the task; the store lets exactly one of them checkpoint a
//! given head.
//!
//! A tenant's key is made on its first checkpoint: an Ed25519 key pair from `ring`, its PKCS#8
//! sealed with the tenant's KEK exactly like a secret version (envelope encryption, AAD naming
//! the tenant and a path no secret can have), its public half stored in the clear. Opened keys
//! are kept in memory for the process's life, as decrypted values are in a sidecar's cache. A
//! key that can no longer be opened (its KEK version retired, say) is replaced by a new one
//! with a new id; checkpoints it signed keep verifying with its public key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use agent_secret_core::api::Role;
use agent_secret_core::envelope::{self, SecretAad};
use agent_secret_core::ids::TenantId;
use agent_secret_core::secret::SecretBytes;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use serde::Serialize;

use super::auth::OperatorPrincipal;
use super::{App, ServiceError, ServiceResult};
use crate::audit::{now_micros, Actor, AuditDraft, AuditEventType};
use crate::audit_checkpoint::{key_id_of, PublicKeys, Statement};
use crate::store::{AuditKeyRecord, CheckpointDue};

/// The envelope AAD's path for audit keys: a leading dot is outside the secret path grammar,
/// so no secret's ciphertext can be passed off as an audit key or the reverse.
const KEY_AAD_PATH: &str = ".audit/checkpoint-key";

/// When checkpoints are written (`[audit]`).
#[derive(Clone, Debug)]
pub struct CheckpointSettings {
    pub every_events: i64,
    pub every: Duration,
    /// How often each replica asks whether one is due.
    pub check: Duration,
    /// A file outside the database each checkpoint this replica writes is appended to (one
    /// signed statement per line), for `audit verify --offline ... --anchors FILE`.
    pub file: Option<std::path::PathBuf>,
}

impl Default for CheckpointSettings {
    fn default() -> Self {
        CheckpointSettings {
            every_events: 1000,
            every: Duration::from_secs(300),
            check: Duration::from_secs(10),
            file: None,
        }
    }
}

/// Appends `statement` to the anchor file (created 0600). Best effort: the checkpoint is in
/// the chain and on its way to the SIEM sinks either way; a failure is logged.
fn anchor(path: &std::path::Path, statement: &str) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let appended = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(format!("{statement}\n").as_bytes()));
    if let Err(e) = appended {
        tracing::error!(file = %path.display(), error = %e, "could not append the checkpoint to the anchor file");
    }
}

/// An opened audit key.
struct Signer {
    key_id: String,
    pair: Ed25519KeyPair,
}

/// Opened audit keys by tenant.
#[derive(Default)]
pub struct Signers {
    by_tenant: Mutex<HashMap<TenantId, Arc<Signer>>>,
}

impl Signers {
    fn get(&self, tenant: TenantId) -> Option<Arc<Signer>> {
        self.by_tenant
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&tenant)
            .cloned()
    }

    fn put(&self, tenant: TenantId, signer: Arc<Signer>) {
        self.by_tenant
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(tenant, signer);
    }
}

fn aad(tenant: TenantId) -> SecretAad<'static> {
    SecretAad {
        tenant,
        path: KEY_AAD_PATH,
        version: 1,
    }
}

/// The tenant's newest key that opens, or a new one.
async fn signer(app: &App, tenant: TenantId) -> ServiceResult<Arc<Signer>> {
    if let Some(signer) = app.signers.get(tenant) {
        return Ok(signer);
    }
    let keys = app.store.audit_keys(tenant).await?;
    if let Some(newest) = keys.last() {
        match envelope::open(app.kms.as_ref(), &aad(tenant), &newest.envelope).await {
            Ok(pkcs8) => {
                if let Ok(pair) = Ed25519KeyPair::from_pkcs8(pkcs8.expose()) {
                    let signer = Arc::new(Signer {
                        key_id: newest.key_id.clone(),
                        pair,
                    });
                    app.signers.put(tenant, signer.clone());
                    return Ok(signer);
                }
                tracing::error!(%tenant, key_id = %newest.key_id, "the audit key is not an Ed25519 key; making a new one");
            }
            Err(e) => {
                tracing::warn!(%tenant, key_id = %newest.key_id, error = %e, "the audit key cannot be opened; making a new one");
            }
        }
    }
    let rng = SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|_| ServiceError::Internal("could not generate an audit key".into()))?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(|_| ServiceError::Internal("could not read a new audit key".into()))?;
    let sealed = envelope::seal(
        app.kms.as_ref(),
        &aad(tenant),
        &SecretBytes::from(pkcs8.as_ref().to_vec()),
    )
    .await
    .map_err(|e| ServiceError::Internal(format!("could not seal the audit key: {e}")))?;
    let public_key = pair.public_key().as_ref().to_vec();
    let key_id = key_id_of(&public_key);
    app.store
        .insert_audit_key(
            tenant,
            &AuditKeyRecord {
                key_id: key_id.clone(),
                public_key,
                envelope: sealed,
                created_at: now_micros(),
            },
        )
        .await?;
    let signer = Arc::new(Signer { key_id, pair });
    app.signers.put(tenant, signer.clone());
    Ok(signer)
}

/// Writes the tenant's checkpoint if one is due; the new event's position, if any.
pub async fn checkpoint(app: &App, tenant: TenantId) -> ServiceResult<Option<i64>> {
    let settings = &app.policy.checkpoints;
    let signer = signer(app, tenant).await?;
    let now = now_micros();
    let sign = |seq: i64, head: [u8; 32]| {
        let statement = Statement::sign(tenant, seq, &head, now, &signer.key_id, &signer.pair);
        AuditDraft::new(AuditEventType::AuditCheckpoint, Actor::system())
            .reason(statement.to_reason())
    };
    let due = CheckpointDue {
        every_events: settings.every_events,
        every: chrono::Duration::from_std(settings.every).unwrap_or(chrono::Duration::MAX),
    };
    let event = app.store.append_checkpoint(tenant, now, due, &sign).await?;
    if let (Some(event), Some(path)) = (&event, &settings.file) {
        anchor(path, event.draft.reason.as_deref().unwrap_or_default());
    }
    Ok(event.map(|e| e.seq))
}

/// Runs the task until it is aborted (with the server).
pub fn spawn(app: Arc<App>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(app.policy.checkpoints.check);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let tenants = match app.store.list_tenant_ids().await {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(error = %e, "audit checkpoints: cannot list tenants");
                    continue;
                }
            };
            for tenant in tenants {
                if let Err(e) = checkpoint(&app, tenant).await {
                    tracing::warn!(%tenant, error = %e, "audit checkpoint failed");
                }
            }
        }
    })
}

/// One public key as `GET /v1/audit/public-keys` lists it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct PublicKeyView {
    pub key_id: String,
    /// `ed25519`.
    pub algorithm: String,
    /// The raw 32-byte key, standard base64.
    pub public_key: String,
    pub created_at: String,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct PublicKeyList {
    pub keys: Vec<PublicKeyView>,
}

/// The tenant's audit public keys, oldest first (admins and auditors).
pub async fn public_keys(app: &App, caller: OperatorPrincipal) -> ServiceResult<PublicKeyList> {
    caller.require(&[Role::Admin, Role::Auditor])?;
    let keys = app.store.audit_keys(caller.tenant).await?;
    Ok(PublicKeyList {
        keys: keys
            .into_iter()
            .map(|k| PublicKeyView {
                key_id: k.key_id,
                algorithm: "ed25519".into(),
                public_key: base64::engine::general_purpose::STANDARD.encode(&k.public_key),
                created_at: k
                    .created_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            })
            .collect(),
    })
}

/// The keys as the verifier takes them.
pub async fn verification_keys(app: &App, tenant: TenantId) -> ServiceResult<PublicKeys> {
    Ok(app
        .store
        .audit_keys(tenant)
        .await?
        .into_iter()
        .map(|k| (k.key_id, k.public_key))
        .collect())
}
