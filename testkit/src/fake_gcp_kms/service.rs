//! The HTTP face of the fake: counts each request, applies the faults a test switched on, runs
//! the RPC against the [`Kms`] state and answers in Cloud KMS's JSON.
//!
//! Integrity checks follow Cloud KMS: a CRC32C the client sends is verified against the data
//! as received (a mismatch is `INVALID_ARGUMENT`, nothing is encrypted), `verified*Crc32c` is
//! true only for checksums that arrived and were checked, and every response carries the
//! CRC32C of the data it returns, for the client to check.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{Map, Value};

use super::keys::Kms;
use super::request::{self, CryptoRequest};
use super::route::Rpc;
use super::status::{RpcCode, RpcError};
use super::wire::{bytes_value, int64_value, Encoding, PROTECTION_LEVEL};

/// The faults currently switched on; see `Fault` for what each one does.
#[derive(Default)]
pub(super) struct Faults {
    pub(super) unavailable: usize,
    pub(super) deadline_exceeded: usize,
    pub(super) internal: usize,
    pub(super) permission_denied: BTreeSet<&'static str>,
    pub(super) corrupt_request: bool,
    pub(super) drop_verified_flags: bool,
    pub(super) corrupt_response: bool,
    pub(super) wrong_response_crc: bool,
    pub(super) wrong_key_name: bool,
    pub(super) latency: Option<Duration>,
    pub(super) proxy_unavailable: usize,
    pub(super) stale_primary: bool,
}

impl Faults {
    /// The next counted outage, if one is pending.
    fn take_outage(&mut self) -> Option<RpcError> {
        if self.unavailable > 0 {
            self.unavailable -= 1;
            return Some(RpcError::new(
                RpcCode::Unavailable,
                "The service is currently unavailable.",
            ));
        }
        if self.deadline_exceeded > 0 {
            self.deadline_exceeded -= 1;
            return Some(RpcError::new(
                RpcCode::DeadlineExceeded,
                "Deadline expired before operation could complete.",
            ));
        }
        if self.internal > 0 {
            self.internal -= 1;
            return Some(RpcError::new(
                RpcCode::Internal,
                "Internal error encountered.",
            ));
        }
        None
    }
}

#[derive(Default)]
pub(super) struct Inner {
    pub(super) kms: Kms,
    pub(super) faults: Faults,
    pub(super) calls: HashMap<&'static str, usize>,
}

/// State shared by the server task and the test's `FakeGcpKms` handle.
#[derive(Default)]
pub(super) struct Shared(Mutex<Inner>);

impl Shared {
    /// Locks the state; a test that panicked while holding it leaves it usable.
    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The server's only handler: every request comes here and is routed by [`Rpc::parse`].
pub(super) async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let query = Query::<Vec<(String, String)>>::try_from_uri(&uri)
        .map(|Query(q)| q)
        .unwrap_or_default();
    let (response, latency) = {
        let mut inner = shared.lock();
        let response = inner.respond(&method, uri.path(), &query, &body);
        (response, inner.faults.latency)
    };
    if let Some(latency) = latency {
        tokio::time::sleep(latency).await;
    }
    response
}

impl Inner {
    fn respond(
        &mut self,
        method: &Method,
        path: &str,
        query: &[(String, String)],
        body: &[u8],
    ) -> Response {
        let rpc = Rpc::parse(method, path);
        *self
            .calls
            .entry(rpc.as_ref().map_or("unknown", Rpc::method))
            .or_default() += 1;
        if let Some(outage) = self.faults.take_outage() {
            return outage.into_response();
        }
        if self.faults.proxy_unavailable > 0 {
            self.faults.proxy_unavailable -= 1;
            return (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                [(axum::http::header::CONTENT_TYPE, "text/plain")],
                "upstream connect error or disconnect/reset before headers",
            )
                .into_response();
        }
        let Some(rpc) = rpc else {
            return RpcError::not_found(format!("No Cloud KMS method matches {method} {path}."))
                .into_response();
        };
        if self.faults.permission_denied.contains(rpc.method()) {
            return RpcError::new(
                RpcCode::PermissionDenied,
                format!(
                    "Permission '{}' denied on resource '{}' (or it may not exist).",
                    rpc.permission(),
                    rpc.resource()
                ),
            )
            .into_response();
        }
        match self.dispatch(&rpc, query, body) {
            Ok(value) => Json(value).into_response(),
            Err(error) => error.into_response(),
        }
    }

    fn dispatch(
        &mut self,
        rpc: &Rpc,
        query: &[(String, String)],
        body: &[u8],
    ) -> Result<Value, RpcError> {
        let enc = Encoding::from_query(query);
        match rpc {
            Rpc::CreateCryptoKey { parent } => {
                let create = request::create_crypto_key(query, body)?;
                let key = self.kms.create_key(
                    parent,
                    &create.id,
                    create.key,
                    create.skip_initial_version,
                )?;
                Ok(key.to_json(enc))
            }
            Rpc::GetCryptoKey { name } => {
                request::get(query)?;
                Ok(self.kms.key(name)?.to_json(enc))
            }
            Rpc::GetCryptoKeyVersion { name } => {
                request::get(query)?;
                Ok(self.kms.version(name)?.to_json(enc))
            }
            Rpc::CreateCryptoKeyVersion { parent } => {
                let state = request::create_version(query, body)?;
                Ok(self.kms.create_version(parent, state)?.to_json(enc))
            }
            Rpc::UpdateCryptoKeyPrimaryVersion { name } => {
                let id = request::update_primary(query, body)?;
                Ok(self.kms.update_primary(name, &id)?.to_json(enc))
            }
            Rpc::UpdateCryptoKeyVersion { name } => {
                let state = request::state_update(query, body)?;
                Ok(self.kms.set_state(name, state)?.to_json(enc))
            }
            Rpc::Encrypt { name } => self.encrypt(name, request::encrypt(query, body)?, enc),
            Rpc::Decrypt { name } => self.decrypt(name, request::decrypt(query, body)?, enc),
        }
    }

    fn encrypt(
        &self,
        name: &str,
        request: CryptoRequest,
        enc: Encoding,
    ) -> Result<Value, RpcError> {
        let CryptoRequest {
            data: mut plaintext,
            data_crc32c: plaintext_crc,
            aad,
            aad_crc32c: aad_crc,
        } = request;
        if self.faults.corrupt_request {
            flip_bit(&mut plaintext);
        }
        verify_crc("plaintext", &plaintext, plaintext_crc)?;
        verify_crc("additional_authenticated_data", &aad, aad_crc)?;

        let stale = self
            .faults
            .stale_primary
            .then(|| self.kms.previous_primary(name))
            .flatten();
        let sealed = self
            .kms
            .encrypt(stale.as_deref().unwrap_or(name), &aad, &plaintext)?;
        let mut ciphertext_crc = crc32c::crc32c(&sealed.ciphertext);
        let mut ciphertext = sealed.ciphertext;
        let mut version_name = sealed.version_name;
        if self.faults.corrupt_response {
            flip_bit(&mut ciphertext);
        }
        if self.faults.wrong_response_crc {
            ciphertext_crc ^= 1;
        }
        if self.faults.wrong_key_name {
            version_name = impostor_of(&version_name);
        }
        let verified = !self.faults.drop_verified_flags;
        let mut out = Map::new();
        out.insert("name".into(), version_name.into());
        out.insert("ciphertext".into(), bytes_value(&ciphertext));
        out.insert(
            "ciphertextCrc32c".into(),
            int64_value(ciphertext_crc.into()),
        );
        // proto3 JSON leaves out fields at their default, so a `false` flag is simply absent.
        if verified && plaintext_crc.is_some() {
            out.insert("verifiedPlaintextCrc32c".into(), true.into());
        }
        if verified && aad_crc.is_some() {
            out.insert(
                "verifiedAdditionalAuthenticatedDataCrc32c".into(),
                true.into(),
            );
        }
        out.insert(
            "protectionLevel".into(),
            enc.enumeration(&PROTECTION_LEVEL, sealed.protection_level),
        );
        Ok(Value::Object(out))
    }

    fn decrypt(
        &self,
        name: &str,
        request: CryptoRequest,
        enc: Encoding,
    ) -> Result<Value, RpcError> {
        let CryptoRequest {
            data: mut ciphertext,
            data_crc32c: ciphertext_crc,
            aad,
            aad_crc32c: aad_crc,
        } = request;
        if self.faults.corrupt_request {
            flip_bit(&mut ciphertext);
        }
        verify_crc("ciphertext", &ciphertext, ciphertext_crc)?;
        verify_crc("additional_authenticated_data", &aad, aad_crc)?;

        let opened = self.kms.decrypt(name, &aad, &ciphertext)?;
        let mut plaintext_crc = crc32c::crc32c(&opened.plaintext);
        let mut plaintext = opened.plaintext;
        if self.faults.corrupt_response {
            flip_bit(&mut plaintext);
        }
        if self.faults.wrong_response_crc {
            plaintext_crc ^= 1;
        }
        let mut out = Map::new();
        out.insert("plaintext".into(), bytes_value(&plaintext));
        out.insert("plaintextCrc32c".into(), int64_value(plaintext_crc.into()));
        if opened.used_primary {
            out.insert("usedPrimary".into(), true.into());
        }
        out.insert(
            "protectionLevel".into(),
            enc.enumeration(&PROTECTION_LEVEL, opened.protection_level),
        );
        Ok(Value::Object(out))
    }
}

/// Cloud KMS's check of a client-sent CRC32C against the data it received.
fn verify_crc(field: &str, data: &[u8], sent: Option<i64>) -> Result<(), RpcError> {
    match sent {
        Some(crc) if crc != i64::from(crc32c::crc32c(data)) => {
            Err(RpcError::invalid_argument(format!(
                "The checksum in field {field}_crc32c did not match the data in field {field}."
            )))
        }
        _ => Ok(()),
    }
}

/// Flips the lowest bit of the last byte: one bit of damage in transit.
fn flip_bit(data: &mut [u8]) {
    if let Some(last) = data.last_mut() {
        *last ^= 1;
    }
}

/// The same version id under a sibling CryptoKey, for `Fault::WrongKeyName`.
fn impostor_of(version_name: &str) -> String {
    match version_name.rsplit_once("/cryptoKeyVersions/") {
        Some((key, id)) => format!("{key}-impostor/cryptoKeyVersions/{id}"),
        None => format!("{version_name}-impostor"),
    }
}
