//! Signed checkpoints of a tenant's audit chain: the outside anchor that makes rewriting the
//! database detectable.
//!
//! The chain alone proves only that the rows agree with each other; whoever can write the
//! database can also recompute every hash. So every so many events (or minutes) the control
//! plane signs a statement — tenant, position, head hash, time — with the tenant's Ed25519
//! audit key, whose private half is sealed under the tenant's KEK like a secret (a database
//! alone cannot sign). The statement goes into the chain as the next event (`audit.checkpoint`,
//! its `reason` the JSON below), so it travels with every export and every SIEM copy; a
//! verifier checks that it names exactly the event before it (`seq - 1`, that event's hash as
//! its `prev_hash`) and that the signature holds. A rewritten past then fails at the first
//! checkpoint after the edit: either the head no longer matches, or the statement was changed
//! and its signature fails.
//!
//! The signed bytes are a fixed, domain-tagged encoding (never the JSON, whose formatting is
//! free): see [`Statement::message`].

use std::collections::HashMap;

use agent_secret_core::ids::TenantId;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use ring::signature::{Ed25519KeyPair, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};

use crate::audit::{AuditEvent, AuditEventType, ChainReport};

const DOMAIN: &[u8] = b"agent-secret-store/audit-checkpoint/v1";

/// What a checkpoint signs: the chain of `tenant` up to `seq`, whose last hash is `head`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    pub tenant_id: String,
    pub seq: i64,
    /// Hex SHA-256 of event `seq`.
    pub head: String,
    /// RFC 3339, microseconds.
    pub time: String,
    pub key_id: String,
    /// Base64 Ed25519 signature over [`Statement::message`].
    pub signature: String,
}

/// Why a checkpoint does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("the checkpoint's statement is unreadable: {0}")]
    Unreadable(String),
    #[error("the checkpoint names seq {named}, not the event before it ({expected})")]
    WrongPosition { named: i64, expected: i64 },
    #[error("the checkpoint's head does not match the chain: the events before it were changed")]
    HeadMismatch,
    #[error("the checkpoint belongs to another tenant")]
    WrongTenant,
    #[error("no public key for the checkpoint's key id {0}")]
    UnknownKey(String),
    #[error("the checkpoint's signature does not verify: it was forged or altered")]
    BadSignature,
}

impl Statement {
    /// The exact bytes signed: domain tag, tenant, position, head and time, length-prefixed.
    pub fn message(tenant: &str, seq: i64, head: &[u8; 32], time: &str, key_id: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(160);
        for field in [
            DOMAIN,
            tenant.as_bytes(),
            &seq.to_be_bytes(),
            head,
            time.as_bytes(),
            key_id.as_bytes(),
        ] {
            out.extend_from_slice(&(field.len() as u64).to_be_bytes());
            out.extend_from_slice(field);
        }
        out
    }

    /// Signs the chain of `tenant` up to `seq` (hash `head`) at `time` with `key`.
    pub fn sign(
        tenant: TenantId,
        seq: i64,
        head: &[u8; 32],
        time: DateTime<Utc>,
        key_id: &str,
        key: &Ed25519KeyPair,
    ) -> Statement {
        let tenant_id = tenant.to_string();
        let time = time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let signature = key.sign(&Statement::message(&tenant_id, seq, head, &time, key_id));
        Statement {
            tenant_id,
            seq,
            head: hex::encode(head),
            time,
            key_id: key_id.to_owned(),
            signature: base64::engine::general_purpose::STANDARD.encode(signature.as_ref()),
        }
    }

    /// The statement as an event's `reason`.
    pub fn to_reason(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_reason(reason: Option<&str>) -> Result<Statement, CheckpointError> {
        let reason = reason.ok_or_else(|| CheckpointError::Unreadable("no reason".into()))?;
        serde_json::from_str(reason).map_err(|e| CheckpointError::Unreadable(e.to_string()))
    }

    /// Checks the signature with the raw 32-byte Ed25519 `public_key`.
    pub fn verify_signature(&self, public_key: &[u8]) -> Result<(), CheckpointError> {
        let head: [u8; 32] = hex::decode(&self.head)
            .ok()
            .and_then(|h| h.try_into().ok())
            .ok_or_else(|| CheckpointError::Unreadable("head is not a 32-byte hex hash".into()))?;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(&self.signature)
            .map_err(|_| CheckpointError::Unreadable("signature is not base64".into()))?;
        let message =
            Statement::message(&self.tenant_id, self.seq, &head, &self.time, &self.key_id);
        UnparsedPublicKey::new(&ED25519, public_key)
            .verify(&message, &signature)
            .map_err(|_| CheckpointError::BadSignature)
    }
}

/// Public keys by key id (raw 32-byte Ed25519), as `GET /v1/audit/public-keys` lists them.
pub type PublicKeys = HashMap<String, Vec<u8>>;

/// A key's id: the first 8 bytes of the SHA-256 of its raw public key, in hex. Derived, so a
/// verifier given only a public key knows which checkpoints it signed.
pub fn key_id_of(public_key: &[u8]) -> String {
    hex::encode(&ring::digest::digest(&ring::digest::SHA256, public_key).as_ref()[..8])
}

/// Checks every `audit.checkpoint` event fed to it, in chain order, at constant memory (a
/// checkpoint names the event right before it, whose hash is its own `prev_hash`).
#[derive(Debug)]
pub struct CheckpointVerifier {
    keys: Option<PublicKeys>,
    pub verified: i64,
    /// Position of the last checkpoint that held.
    pub last_verified_seq: Option<i64>,
    failure: Option<(i64, CheckpointError)>,
}

impl CheckpointVerifier {
    /// With `keys`, signatures are checked too; without, only the positions and heads.
    pub fn new(keys: Option<PublicKeys>) -> Self {
        CheckpointVerifier {
            keys,
            verified: 0,
            last_verified_seq: None,
            failure: None,
        }
    }

    /// Adds what this verifier found to the chain's `report`: a broken checkpoint before the
    /// chain's own first failure becomes the report's first failure.
    pub fn apply_to(&self, mut report: ChainReport) -> ChainReport {
        report.checkpoints_verified = self.verified;
        report.last_checkpoint_seq = self.last_verified_seq;
        if let Some((seq, e)) = &self.failure {
            if report.first_bad_seq.is_none_or(|bad| *seq < bad) {
                report.valid = false;
                report.first_bad_seq = Some(*seq);
                report.problem = Some(e.to_string());
            }
        }
        report
    }

    pub fn checks_signatures(&self) -> bool {
        self.keys.is_some()
    }

    pub fn failure(&self) -> Option<&(i64, CheckpointError)> {
        self.failure.as_ref()
    }

    pub fn push(&mut self, event: &AuditEvent) {
        if self.failure.is_some() || event.draft.event_type != AuditEventType::AuditCheckpoint {
            return;
        }
        match self.check(event) {
            Ok(()) => {
                self.verified += 1;
                self.last_verified_seq = Some(event.seq);
            }
            Err(e) => self.failure = Some((event.seq, e)),
        }
    }

    fn check(&self, event: &AuditEvent) -> Result<(), CheckpointError> {
        let statement = Statement::from_reason(event.draft.reason.as_deref())?;
        if statement.tenant_id != event.tenant_id.to_string() {
            return Err(CheckpointError::WrongTenant);
        }
        if statement.seq != event.seq - 1 {
            return Err(CheckpointError::WrongPosition {
                named: statement.seq,
                expected: event.seq - 1,
            });
        }
        if statement.head != hex::encode(event.prev_hash) {
            return Err(CheckpointError::HeadMismatch);
        }
        if let Some(keys) = &self.keys {
            let key = keys
                .get(&statement.key_id)
                .ok_or_else(|| CheckpointError::UnknownKey(statement.key_id.clone()))?;
            statement.verify_signature(key)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ring::rand::SystemRandom;

    fn key() -> Ed25519KeyPair {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    #[test]
    fn a_statement_verifies_and_any_change_breaks_it() {
        use ring::signature::KeyPair as _;
        let key = key();
        let public = key.public_key().as_ref().to_vec();
        let s = Statement::sign(TenantId::new(), 41, &[7; 32], Utc::now(), "k1", &key);
        let back = Statement::from_reason(Some(&s.to_reason())).unwrap();
        back.verify_signature(&public).unwrap();
        for change in [
            |s: &mut Statement| s.seq += 1,
            |s: &mut Statement| s.head = hex::encode([8u8; 32]),
            |s: &mut Statement| s.time = "2020-01-01T00:00:00.000000Z".into(),
            |s: &mut Statement| s.tenant_id = TenantId::new().to_string(),
            |s: &mut Statement| s.key_id = "k2".into(),
        ] {
            let mut forged = back.clone();
            change(&mut forged);
            assert_eq!(
                forged.verify_signature(&public),
                Err(CheckpointError::BadSignature)
            );
        }
        let other = key_public(&self::key());
        assert_eq!(
            back.verify_signature(&other),
            Err(CheckpointError::BadSignature)
        );
    }

    fn key_public(key: &Ed25519KeyPair) -> Vec<u8> {
        use ring::signature::KeyPair as _;
        key.public_key().as_ref().to_vec()
    }
}
