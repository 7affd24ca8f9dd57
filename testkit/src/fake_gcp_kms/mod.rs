//! A fake Google Cloud KMS that speaks the REST/JSON API the official `google-cloud-kms-v1`
//! client sends, so the GCP KMS backend is tested through the real client, end to end, with no
//! cloud account.
//!
//! It is a working KMS, not a stub: real AES-256-GCM under a random key per CryptoKeyVersion,
//! real CRC32C integrity checks, key rings, versions, primary changes and enable/disable with
//! Cloud KMS's errors (`{"error": {"code", "message", "status"}}` with the matching HTTP
//! status, which gax turns into `Error::status()`). [`Fault`] switches on the failures a
//! backend must survive or detect: outages, IAM denials and corruption in either direction.
//!
//! Implemented RPCs: CreateCryptoKey, GetCryptoKey, GetCryptoKeyVersion,
//! CreateCryptoKeyVersion, UpdateCryptoKeyPrimaryVersion, UpdateCryptoKeyVersion (`state`),
//! Encrypt and Decrypt, for `ENCRYPT_DECRYPT` keys at `SOFTWARE` or `HSM` protection. Key rings
//! exist only through [`FakeGcpKms::add_key_ring`], because operators create them, not us.

mod cipher;
mod keys;
mod request;
mod route;
mod service;
mod status;
mod wire;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use chrono::{DateTime, Utc};
use google_cloud_kms_v1::model::crypto_key::CryptoKeyPurpose;
use google_cloud_kms_v1::model::crypto_key_version::CryptoKeyVersionState;
use google_cloud_kms_v1::model::ProtectionLevel;
use tokio::net::TcpListener;

use keys::CryptoKey;
use service::Shared;

/// A failure the fake injects, to prove the backend handles what real KMS and real networks do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The next `times` requests (any RPC) get 503 `UNAVAILABLE`, then service resumes. The
    /// client retries these by itself only for GETs; POSTs such as Encrypt fail at once.
    Unavailable { times: usize },
    /// The next `times` requests get 504 `DEADLINE_EXCEEDED`, which the client never retries.
    DeadlineExceeded { times: usize },
    /// The next `times` requests get 500 `INTERNAL`: a failure inside the service.
    Internal { times: usize },
    /// 403 `PERMISSION_DENIED` for every call of `method` (as named by [`FakeGcpKms::calls`]):
    /// the caller's identity lacks that IAM permission, e.g. separation of duties.
    PermissionDenied { method: &'static str },
    /// One bit of the received plaintext (Encrypt) or ciphertext (Decrypt) flips before the
    /// server checks the client's CRC32C: with a checksum sent, `INVALID_ARGUMENT`; without
    /// one, the damaged data is silently used, as real KMS would.
    CorruptRequestInTransit,
    /// The Encrypt response never sets `verified*Crc32c`, as if the checksums had not arrived.
    DropVerifiedFlags,
    /// One bit of the returned ciphertext (Encrypt) or plaintext (Decrypt) flips after the
    /// server computed its CRC32C, which the client must notice.
    CorruptResponse,
    /// The response's `ciphertextCrc32c` / `plaintextCrc32c` is wrong; the data is intact.
    WrongResponseCrc,
    /// The Encrypt response's `name` is a version of a different CryptoKey than the one asked.
    WrongKeyName,
    /// Every response is held back this long (after the work is done).
    Latency(Duration),
    /// The next `times` requests get a plain-text 503 from "a load balancer" in front of the
    /// service, with no Google error body.
    ProxyUnavailable { times: usize },
    /// Cloud KMS's eventual consistency after a primary change: Encrypt on a CryptoKey keeps
    /// using the highest enabled version below the primary (Encrypt on a named version is
    /// unaffected).
    StalePrimaryForEncrypt,
}

/// What the fake holds for one CryptoKey, for tests to assert what the backend created.
#[derive(Clone, Debug, PartialEq)]
pub struct FakeKeyInfo {
    /// `projects/*/locations/*/keyRings/*/cryptoKeys/*`.
    pub name: String,
    pub purpose: CryptoKeyPurpose,
    pub protection_level: ProtectionLevel,
    /// The primary version's id (`"1"`), if any.
    pub primary_version: Option<String>,
    /// Every version, oldest first.
    pub versions: Vec<FakeVersionInfo>,
    pub rotation_period: Option<Duration>,
    pub next_rotation_time: Option<DateTime<Utc>>,
    pub labels: BTreeMap<String, String>,
}

/// One CryptoKeyVersion as the fake holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct FakeVersionInfo {
    /// The version id, e.g. `"2"`.
    pub id: String,
    /// The full resource name, `.../cryptoKeys/*/cryptoKeyVersions/<id>`.
    pub name: String,
    pub state: CryptoKeyVersionState,
}

/// The running fake on `127.0.0.1`; the server stops when this is dropped.
pub struct FakeGcpKms {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGcpKms {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeGcpKms {
    /// Binds `127.0.0.1:0` before returning, so the endpoint accepts connections at once.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0 for the fake KMS");
        let addr = listener.local_addr().expect("bound socket has an address");
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .fallback(service::handle)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared, task }
    }

    /// The base URL to give the client's `with_endpoint`, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Creates a key ring (operators do this, not the backend) and returns its resource name.
    pub fn add_key_ring(&self, project: &str, location: &str, key_ring: &str) -> String {
        let name = format!("projects/{project}/locations/{location}/keyRings/{key_ring}");
        self.shared.lock().kms.add_key_ring(name.clone());
        name
    }

    /// The CryptoKey named `name` (full resource name) as the fake holds it, if it exists.
    pub fn crypto_key(&self, name: &str) -> Option<FakeKeyInfo> {
        self.shared.lock().kms.key(name).ok().map(key_info)
    }

    /// Simulates Cloud KMS's scheduled rotation of `crypto_key`: a new version becomes
    /// primary and `next_rotation_time` moves one `rotation_period` on. Returns the new id.
    pub fn rotate(&self, crypto_key: &str) -> String {
        match self.shared.lock().kms.rotate(crypto_key) {
            Ok(id) => id.to_string(),
            Err(e) => panic!("fake KMS cannot rotate {crypto_key}: {}", e.message),
        }
    }

    /// Switches a fault on, alongside any already on; `Unavailable`, `DeadlineExceeded` and
    /// `Internal` replace a pending count of the same kind.
    pub fn set_fault(&self, fault: Fault) {
        let mut inner = self.shared.lock();
        let faults = &mut inner.faults;
        match fault {
            Fault::Unavailable { times } => faults.unavailable = times,
            Fault::DeadlineExceeded { times } => faults.deadline_exceeded = times,
            Fault::Internal { times } => faults.internal = times,
            Fault::PermissionDenied { method } => {
                assert!(
                    route::METHODS.contains(&method),
                    "unknown fake KMS method {method:?}; expected one of {:?}",
                    route::METHODS
                );
                faults.permission_denied.insert(method);
            }
            Fault::CorruptRequestInTransit => faults.corrupt_request = true,
            Fault::DropVerifiedFlags => faults.drop_verified_flags = true,
            Fault::CorruptResponse => faults.corrupt_response = true,
            Fault::WrongResponseCrc => faults.wrong_response_crc = true,
            Fault::WrongKeyName => faults.wrong_key_name = true,
            Fault::Latency(delay) => faults.latency = Some(delay),
            Fault::ProxyUnavailable { times } => faults.proxy_unavailable = times,
            Fault::StalePrimaryForEncrypt => faults.stale_primary = true,
        }
    }

    /// Switches every fault off.
    pub fn clear_faults(&self) {
        self.shared.lock().faults = service::Faults::default();
    }

    /// How many requests for `method` arrived, faulted ones included. Names are the RPCs in
    /// lowerCamelCase: `createCryptoKey`, `getCryptoKey`, `getCryptoKeyVersion`,
    /// `createCryptoKeyVersion`, `updateCryptoKeyPrimaryVersion`, `updateCryptoKeyVersion`,
    /// `encrypt`, `decrypt`; `unknown` counts requests that matched no RPC.
    pub fn calls(&self, method: &str) -> usize {
        self.shared.lock().calls.get(method).copied().unwrap_or(0)
    }
}

fn key_info(key: &CryptoKey) -> FakeKeyInfo {
    FakeKeyInfo {
        name: key.name.clone(),
        purpose: CryptoKeyPurpose::from(key.purpose),
        protection_level: ProtectionLevel::from(key.protection_level),
        primary_version: key.primary.map(|id| id.to_string()),
        versions: key
            .versions
            .values()
            .map(|v| FakeVersionInfo {
                id: v.id.to_string(),
                name: v.name.clone(),
                state: CryptoKeyVersionState::from(v.state.number()),
            })
            .collect(),
        rotation_period: key.rotation_period,
        next_rotation_time: key.next_rotation_time,
        labels: key.labels.clone(),
    }
}
