//! Each RPC's request, read from its query string and JSON body into a typed value, with the
//! same rejections Google's front end applies (unknown query parameters or field names, values
//! of the wrong JSON type).

use super::keys::{NewKey, VersionState};
use super::status::RpcError;
use super::wire::{Message, ALGORITHM, PROTECTION_LEVEL, PURPOSE, VERSION_STATE};

type QueryPairs = [(String, String)];

const CRYPTO_KEY_FIELDS: &[&str] = &[
    "name",
    "primary",
    "purpose",
    "createTime",
    "nextRotationTime",
    "rotationPeriod",
    "versionTemplate",
    "labels",
    "importOnly",
    "destroyScheduledDuration",
    "cryptoKeyBackend",
    "keyAccessJustificationsPolicy",
];
const VERSION_TEMPLATE_FIELDS: &[&str] = &["protectionLevel", "algorithm"];
const CRYPTO_KEY_VERSION_FIELDS: &[&str] = &[
    "name",
    "state",
    "protectionLevel",
    "algorithm",
    "attestation",
    "createTime",
    "generateTime",
    "destroyTime",
    "destroyEventTime",
    "importJob",
    "importTime",
    "importFailureReason",
    "generationFailureReason",
    "externalDestructionFailureReason",
    "externalProtectionLevelOptions",
    "reimportEligible",
    "trustedWrappingEnabled",
    "hsmTrusted",
];
const UPDATE_PRIMARY_FIELDS: &[&str] = &["name", "cryptoKeyVersionId"];
const ENCRYPT_FIELDS: &[&str] = &[
    "name",
    "plaintext",
    "additionalAuthenticatedData",
    "plaintextCrc32c",
    "additionalAuthenticatedDataCrc32c",
];
const DECRYPT_FIELDS: &[&str] = &[
    "name",
    "ciphertext",
    "additionalAuthenticatedData",
    "ciphertextCrc32c",
    "additionalAuthenticatedDataCrc32c",
];

/// CreateCryptoKey: `?cryptoKeyId=..&skipInitialVersionCreation=..`, body a `CryptoKey`.
pub(super) struct CreateCryptoKey {
    pub(super) id: String,
    pub(super) skip_initial_version: bool,
    pub(super) key: NewKey,
}

/// The data half of Encrypt and Decrypt; `None` checksums were not sent.
pub(super) struct CryptoRequest {
    /// The plaintext (Encrypt) or ciphertext (Decrypt).
    pub(super) data: Vec<u8>,
    pub(super) data_crc32c: Option<i64>,
    pub(super) aad: Vec<u8>,
    pub(super) aad_crc32c: Option<i64>,
}

pub(super) fn create_crypto_key(
    query: &QueryPairs,
    body: &[u8],
) -> Result<CreateCryptoKey, RpcError> {
    check_query(
        query,
        &[
            "cryptoKeyId",
            "skipInitialVersionCreation",
            "trustedWrappingEnabled",
        ],
    )?;
    Ok(CreateCryptoKey {
        id: query_param(query, "cryptoKeyId")
            .unwrap_or_default()
            .to_string(),
        skip_initial_version: query_bool(query, "skipInitialVersionCreation")?,
        key: new_key(body)?,
    })
}

/// A GET: no body, no parameters beyond `$alt`.
pub(super) fn get(query: &QueryPairs) -> Result<(), RpcError> {
    check_query(query, &[])
}

/// CreateCryptoKeyVersion: the state the new version starts in (ENABLED unless asked).
pub(super) fn create_version(query: &QueryPairs, body: &[u8]) -> Result<VersionState, RpcError> {
    check_query(query, &[])?;
    let version = Message::parse(body, CRYPTO_KEY_VERSION_FIELDS)?;
    match version.enumeration("state", &VERSION_STATE)? {
        0 | 1 => Ok(VersionState::Enabled),
        2 => Ok(VersionState::Disabled),
        other => Err(RpcError::invalid_argument(format!(
            "crypto_key_version.state: a new version cannot start in state {other}."
        ))),
    }
}

/// UpdateCryptoKeyPrimaryVersion: the version id, a string such as `"2"`.
pub(super) fn update_primary(query: &QueryPairs, body: &[u8]) -> Result<String, RpcError> {
    check_query(query, &[])?;
    let request = Message::parse(body, UPDATE_PRIMARY_FIELDS)?;
    let id = request.string("cryptoKeyVersionId")?;
    if id.is_empty() {
        return Err(RpcError::invalid_argument(
            "crypto_key_version_id: field is required.",
        ));
    }
    Ok(id)
}

pub(super) fn encrypt(query: &QueryPairs, body: &[u8]) -> Result<CryptoRequest, RpcError> {
    check_query(query, &[])?;
    let request = Message::parse(body, ENCRYPT_FIELDS)?;
    Ok(CryptoRequest {
        data: request.bytes("plaintext")?,
        data_crc32c: request.int64("plaintextCrc32c")?,
        aad: request.bytes("additionalAuthenticatedData")?,
        aad_crc32c: request.int64("additionalAuthenticatedDataCrc32c")?,
    })
}

pub(super) fn decrypt(query: &QueryPairs, body: &[u8]) -> Result<CryptoRequest, RpcError> {
    check_query(query, &[])?;
    let request = Message::parse(body, DECRYPT_FIELDS)?;
    Ok(CryptoRequest {
        data: request.bytes("ciphertext")?,
        data_crc32c: request.int64("ciphertextCrc32c")?,
        aad: request.bytes("additionalAuthenticatedData")?,
        aad_crc32c: request.int64("additionalAuthenticatedDataCrc32c")?,
    })
}

fn new_key(body: &[u8]) -> Result<NewKey, RpcError> {
    let key = Message::parse(body, CRYPTO_KEY_FIELDS)?;
    let (protection_level, algorithm) =
        match key.message("versionTemplate", VERSION_TEMPLATE_FIELDS)? {
            Some(t) => (
                t.enumeration("protectionLevel", &PROTECTION_LEVEL)?,
                t.enumeration("algorithm", &ALGORITHM)?,
            ),
            None => (0, 0),
        };
    Ok(NewKey {
        purpose: key.enumeration("purpose", &PURPOSE)?,
        protection_level,
        algorithm,
        rotation_period: key.duration("rotationPeriod")?,
        next_rotation_time: key.timestamp("nextRotationTime")?,
        labels: key.string_map("labels")?,
    })
}

/// UpdateCryptoKeyVersion: only `state`, and only to ENABLED or DISABLED.
pub(super) fn state_update(query: &QueryPairs, body: &[u8]) -> Result<VersionState, RpcError> {
    check_query(query, &["updateMask"])?;
    let mask = query_param(query, "updateMask").unwrap_or_default();
    if mask.is_empty() {
        return Err(RpcError::invalid_argument(
            "update_mask: field is required.",
        ));
    }
    if let Some(path) = mask.split(',').find(|p| *p != "state") {
        return Err(RpcError::invalid_argument(format!(
            "update_mask: the fake KMS can update only \"state\", not \"{path}\"."
        )));
    }
    let version = Message::parse(body, CRYPTO_KEY_VERSION_FIELDS)?;
    match version.enumeration("state", &VERSION_STATE)? {
        1 => Ok(VersionState::Enabled),
        2 => Ok(VersionState::Disabled),
        other => Err(RpcError::invalid_argument(format!(
            "crypto_key_version.state: UpdateCryptoKeyVersion can only set ENABLED or DISABLED, not {other}."
        ))),
    }
}

/// Rejects query parameters the RPC does not have, as Google's front end does.
fn check_query(query: &QueryPairs, allowed: &[&str]) -> Result<(), RpcError> {
    match query
        .iter()
        .find(|(k, _)| k != "$alt" && k != "alt" && !allowed.contains(&k.as_str()))
    {
        Some((name, _)) => Err(RpcError::invalid_argument(format!(
            "Invalid JSON payload received. Unknown name \"{name}\": Cannot bind query parameter."
        ))),
        None => Ok(()),
    }
}

fn query_param<'a>(query: &'a QueryPairs, name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn query_bool(query: &QueryPairs, name: &str) -> Result<bool, RpcError> {
    match query_param(query, name) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(RpcError::invalid_argument(format!(
            "Invalid value at '{name}' (TYPE_BOOL), \"{other}\""
        ))),
    }
}
