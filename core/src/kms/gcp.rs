//! The Google Cloud KMS backend, through Google's official `google-cloud-kms-v1` client.
//!
//! Each tenant has one symmetric CryptoKey, `{key_ring}/cryptoKeys/tenant-{tenant_id}`, created
//! at tenant creation with the configured protection level (HSM by default) and a rotation
//! period, so Cloud KMS rotates it on its own; this backend only reads the primary version.
//!
//! Every call carries CRC32C checksums both ways, as Tink's `gcpkms` AEAD does: the request's
//! `plaintext_crc32c`/`ciphertext_crc32c` and `additional_authenticated_data_crc32c` let the
//! service refuse data corrupted on the way in, the `verified_*` flags prove it checked them,
//! and the response checksums let us refuse data corrupted on the way back. The key version
//! named in an encrypt response must belong to the key we asked for.
//!
//! Only `UNAVAILABLE` and `DEADLINE_EXCEEDED` (including our own per-attempt timeout and a
//! refused connection, which gRPC also reports as `UNAVAILABLE`) are retried, with jittered
//! exponential backoff; everything else is answered at once. Every outage, including a 5xx
//! such as `INTERNAL`, reaches callers as [`KmsError::Unavailable`] and every failed check as
//! [`KmsError::Integrity`] (see [`super::KmsFault`]). The client's own retry loop is
//! switched off so that these are the only retries.
//!
//! Separation of duties: the control plane only ever calls encrypt, key creation and key reads
//! (and version creation when forced to rotate a key that has no rotation period), the sidecar
//! only decrypt, and `kms rewrap`/`kms retire-version` both and version updates. Each can therefore run
//! with the narrowest IAM role; see README.md "Google Cloud KMS".
//!
//! The DEK passes through the client as `bytes::Bytes`, which is not zeroized; that copy lives
//! only for the length of one request, like the TLS buffers below it.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use google_cloud_gax::error::rpc::Code;
use google_cloud_kms_v1::client::KeyManagementService;
use google_cloud_kms_v1::model::{
    crypto_key::CryptoKeyPurpose, crypto_key_version::CryptoKeyVersionAlgorithm,
    crypto_key_version::CryptoKeyVersionState, CryptoKey, CryptoKeyVersion,
    CryptoKeyVersionTemplate, ProtectionLevel,
};

use super::{tenant_key_id, KeyInfo, KeyRef, Kms, KmsError, WrappedDek};
use crate::envelope::Dek;
use crate::ids::TenantId;

/// Where the client's credentials come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GcpCredentials {
    /// Application Default Credentials: `GOOGLE_APPLICATION_CREDENTIALS`, gcloud's user
    /// credentials, or the metadata server (GKE workload identity).
    ApplicationDefault,
    /// A service-account key JSON file.
    ServiceAccountFile(PathBuf),
    /// No credentials at all: only for a test endpoint such as the suite's fake server.
    Anonymous,
}

/// `http://127.0.0.1:PORT[/...]` (or localhost, `[::1]`): a test server on this host. The port
/// must end the authority: in `http://127.0.0.1:1@kms.example.com` the host is
/// kms.example.com and `127.0.0.1:1` only its userinfo.
fn is_loopback_http(endpoint: &str) -> bool {
    ["http://127.0.0.1:", "http://localhost:", "http://[::1]:"]
        .iter()
        .filter_map(|prefix| endpoint.strip_prefix(prefix))
        .any(|rest| {
            let port = rest.split_once('/').map_or(rest, |(port, _)| port);
            !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())
        })
}

impl GcpCredentials {
    /// Reads the `kms.credentials_file` setting: absent is Application Default Credentials,
    /// `"anonymous"` is no credentials, which is accepted only with an explicit `http://`
    /// loopback endpoint so that a production config can never send unauthenticated calls.
    pub fn from_setting(
        credentials_file: Option<&std::path::Path>,
        endpoint: Option<&str>,
    ) -> Result<GcpCredentials, String> {
        match credentials_file {
            None => Ok(GcpCredentials::ApplicationDefault),
            Some(path) if path.as_os_str() == "anonymous" => {
                if endpoint.is_some_and(is_loopback_http) {
                    Ok(GcpCredentials::Anonymous)
                } else {
                    Err("\"anonymous\" is only allowed with a loopback http:// endpoint (a test server)".into())
                }
            }
            Some(path) => Ok(GcpCredentials::ServiceAccountFile(path.to_owned())),
        }
    }
}

/// The protection level of newly created tenant keys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GcpProtection {
    #[default]
    Hsm,
    Software,
}

/// Everything needed to reach the tenant key ring.
#[derive(Clone, Debug)]
pub struct GcpKmsConfig {
    pub project: String,
    pub location: String,
    pub key_ring: String,
    /// `None` is Google's endpoint, `https://cloudkms.googleapis.com`.
    pub endpoint: Option<String>,
    pub credentials: GcpCredentials,
    pub protection: GcpProtection,
    /// Cloud KMS rotates each tenant key this often (the design asks for 90 days).
    pub rotation_period: Duration,
    /// One attempt's deadline.
    pub attempt_timeout: Duration,
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    /// Backoff before the first retry; doubled (with jitter) up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl GcpKmsConfig {
    /// Defaults for everything but the key ring's coordinates.
    pub fn new(project: &str, location: &str, key_ring: &str) -> GcpKmsConfig {
        GcpKmsConfig {
            project: project.to_owned(),
            location: location.to_owned(),
            key_ring: key_ring.to_owned(),
            endpoint: None,
            credentials: GcpCredentials::ApplicationDefault,
            protection: GcpProtection::Hsm,
            rotation_period: Duration::from_secs(90 * 24 * 3600),
            attempt_timeout: Duration::from_secs(10),
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }

    /// Settings as both config files spell them (`[kms]` project, location, key_ring, endpoint,
    /// and the credentials file with the name of the key it came from), checked; `Err` is (the
    /// key at fault, why).
    pub fn from_settings(
        project: Option<&str>,
        location: Option<&str>,
        key_ring: Option<&str>,
        endpoint: Option<&str>,
        credentials: (&'static str, Option<&std::path::Path>),
    ) -> Result<GcpKmsConfig, (&'static str, String)> {
        let (credentials_key, credentials_file) = credentials;
        let required = |key: &'static str, value: Option<&str>| match value {
            Some(v) if !v.is_empty() && !v.contains('/') => Ok(v.to_owned()),
            Some(_) => Err((
                key,
                "must be a non-empty resource id without '/'".to_owned(),
            )),
            None => Err((key, "required when kms.backend = \"gcp\"".to_owned())),
        };
        let project = required("kms.project", project)?;
        let location = required("kms.location", location)?;
        let key_ring = required("kms.key_ring", key_ring)?;
        // Bearer tokens and DEKs must not cross a network in clear text.
        if let Some(e) = endpoint {
            if !(e.starts_with("https://") || is_loopback_http(e)) {
                return Err((
                    "kms.endpoint",
                    "must be https:// (plain http:// only for a loopback test server)".to_owned(),
                ));
            }
        }
        let credentials = GcpCredentials::from_setting(credentials_file, endpoint)
            .map_err(|message| (credentials_key, message))?;
        let mut config = GcpKmsConfig::new(&project, &location, &key_ring);
        config.endpoint = endpoint.map(str::to_owned);
        config.credentials = credentials;
        Ok(config)
    }

    /// `projects/{p}/locations/{l}/keyRings/{r}`.
    pub fn key_ring_name(&self) -> String {
        format!(
            "projects/{}/locations/{}/keyRings/{}",
            self.project, self.location, self.key_ring
        )
    }
}

/// The Cloud KMS backend. Cheap to share: the client pools its connections.
pub struct GcpKms {
    client: KeyManagementService,
    key_ring: String,
    config: GcpKmsConfig,
}

impl fmt::Debug for GcpKms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcpKms")
            .field("key_ring", &self.key_ring)
            .field("endpoint", &self.config.endpoint)
            .finish_non_exhaustive()
    }
}

impl GcpKms {
    /// Builds the client. Makes no call to the service: a key ring that does not exist or
    /// missing permissions surface on first use, each with its own error code.
    pub async fn connect(config: GcpKmsConfig) -> Result<GcpKms, KmsError> {
        let credentials = match &config.credentials {
            GcpCredentials::Anonymous => {
                google_cloud_auth::credentials::anonymous::Builder::new().build()
            }
            GcpCredentials::ApplicationDefault => {
                google_cloud_auth::credentials::Builder::default()
                    .build()
                    .map_err(|e| {
                        KmsError::Config(format!("application default credentials: {e}"))
                    })?
            }
            GcpCredentials::ServiceAccountFile(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    KmsError::Config(format!("cannot read {}: {e}", path.display()))
                })?;
                let json: serde_json::Value = serde_json::from_str(&text).map_err(|_| {
                    // The file holds a private key: never echo serde's excerpt of it.
                    KmsError::Config(format!("{} is not valid JSON", path.display()))
                })?;
                google_cloud_auth::credentials::service_account::Builder::new(json)
                    .build()
                    .map_err(|e| {
                        KmsError::Config(format!(
                            "{} is not a usable service-account key: {e}",
                            path.display()
                        ))
                    })?
            }
        };
        let mut builder = KeyManagementService::builder()
            .with_credentials(credentials)
            .with_retry_policy(google_cloud_gax::retry_policy::NeverRetry);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint.trim_end_matches('/'));
        }
        let client = builder
            .build()
            .await
            .map_err(|e| KmsError::Config(format!("cannot build the Cloud KMS client: {e}")))?;
        Ok(GcpKms {
            client,
            key_ring: config.key_ring_name(),
            config,
        })
    }

    /// The tenant's CryptoKey resource name.
    pub fn key_name(&self, tenant: TenantId) -> String {
        format!("{}/cryptoKeys/{}", self.key_ring, tenant_key_id(tenant))
    }

    /// The version's resource name. `version` comes from our database or an operator's
    /// argument; anything but an id (say `1/../../otherKey`) is refused before it is sent.
    fn version_name(&self, tenant: TenantId, version: &str) -> Result<String, KmsError> {
        let key_name = self.key_name(tenant);
        if version.is_empty() || !version.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(KmsError::UnknownKeyVersion {
                key_name,
                key_version: version.to_owned(),
            });
        }
        Ok(format!("{key_name}/cryptoKeyVersions/{version}"))
    }

    /// Runs `call` with the per-attempt timeout, retrying only transient failures.
    async fn with_retries<T, F, Fut>(&self, what: &str, mut call: F) -> Result<T, CallError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = google_cloud_kms_v1::Result<T>>,
    {
        let mut backoff = self.config.initial_backoff;
        let mut attempt = 1;
        loop {
            let error = match tokio::time::timeout(self.config.attempt_timeout, call()).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) => CallError::classify(what, &e),
                Err(_) => CallError {
                    kind: Kind::Unavailable,
                    message: format!("{what}: the attempt timed out"),
                },
            };
            if error.kind != Kind::Unavailable || attempt >= self.config.max_attempts {
                return Err(CallError {
                    message: format!("{} (attempt {attempt})", error.message),
                    ..error
                });
            }
            tracing::warn!(attempt, reason = %error.message, "Cloud KMS call failed; retrying");
            tokio::time::sleep(jitter(backoff)).await;
            backoff = (backoff * 2).min(self.config.max_backoff);
            attempt += 1;
        }
    }

    async fn get_key(&self, tenant: TenantId) -> Result<CryptoKey, KmsError> {
        let name = self.key_name(tenant);
        self.with_retries("get key", || {
            self.client.get_crypto_key().set_name(name.clone()).send()
        })
        .await
        .map_err(|e| e.into_kms(tenant))
    }

    fn primary_of(&self, tenant: TenantId, key: &CryptoKey) -> Result<KeyRef, KmsError> {
        let key_name = self.key_name(tenant);
        let primary = key
            .primary
            .as_ref()
            .ok_or_else(|| KmsError::Remote(format!("{key_name} has no primary version")))?;
        let version = version_under(&key_name, &primary.name)?;
        Ok(KeyRef {
            key_name,
            key_version: version.to_owned(),
        })
    }
}

impl GcpKms {
    /// Encrypts under `target` (the key, whose primary the service picks, or one version) and
    /// checks everything the response claims; `expected` is the version `target` names.
    async fn encrypt(
        &self,
        tenant: TenantId,
        target: &str,
        expected: Option<&str>,
        dek: &Dek,
        aad: &[u8],
    ) -> Result<WrappedDek, KmsError> {
        let key_name = self.key_name(tenant);
        let plaintext = bytes::Bytes::copy_from_slice(dek.expose());
        let aad = bytes::Bytes::copy_from_slice(aad);
        let response = self
            .with_retries("encrypt", || {
                self.client
                    .encrypt()
                    .set_name(target.to_owned())
                    .set_plaintext(plaintext.clone())
                    .set_additional_authenticated_data(aad.clone())
                    .set_plaintext_crc32c(crc(&plaintext))
                    .set_additional_authenticated_data_crc32c(crc(&aad))
                    .send()
            })
            .await
            .map_err(|e| match e.kind {
                Kind::FailedPrecondition => KmsError::VersionDisabled {
                    key_name: key_name.clone(),
                    key_version: expected.unwrap_or("primary").to_owned(),
                },
                _ => e.into_kms(tenant),
            })?;
        if !response.verified_plaintext_crc32c {
            return Err(integrity(
                "the service did not verify the plaintext checksum",
            ));
        }
        if !response.verified_additional_authenticated_data_crc32c {
            return Err(integrity("the service did not verify the AAD checksum"));
        }
        let version = version_under(&key_name, &response.name)?.to_owned();
        if expected.is_some_and(|v| v != version) {
            return Err(KmsError::Integrity(format!(
                "asked to encrypt under version {}, the service used {version}",
                expected.unwrap_or_default()
            )));
        }
        if response.ciphertext_crc32c != Some(crc(&response.ciphertext)) {
            return Err(integrity("the ciphertext does not match its checksum"));
        }
        Ok(WrappedDek {
            key_name,
            key_version: version,
            ciphertext: response.ciphertext.to_vec(),
        })
    }

    async fn set_state(
        &self,
        tenant: TenantId,
        key_version: &str,
        state: CryptoKeyVersionState,
    ) -> Result<(), KmsError> {
        let name = self.version_name(tenant, key_version)?;
        let version = CryptoKeyVersion::new().set_name(name).set_state(state);
        self.with_retries("update key version state", || {
            self.client
                .update_crypto_key_version()
                .set_crypto_key_version(version.clone())
                .set_update_mask(google_cloud_wkt::FieldMask::default().set_paths(["state"]))
                .send()
        })
        .await
        .map_err(|e| match e.kind {
            Kind::NotFound => KmsError::UnknownKeyVersion {
                key_name: self.key_name(tenant),
                key_version: key_version.to_owned(),
            },
            _ => e.into_kms(tenant),
        })?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Kms for GcpKms {
    async fn create_tenant_key(&self, tenant: TenantId) -> Result<KeyRef, KmsError> {
        let protection = match self.config.protection {
            GcpProtection::Hsm => ProtectionLevel::Hsm,
            GcpProtection::Software => ProtectionLevel::Software,
        };
        let rotation = wkt_duration(self.config.rotation_period)?;
        let next = Utc::now()
            + chrono::Duration::from_std(self.config.rotation_period)
                .map_err(|_| KmsError::Config("rotation period out of range".into()))?;
        let next = google_cloud_wkt::Timestamp::clamp(next.timestamp(), 0);
        let key = CryptoKey::new()
            .set_purpose(CryptoKeyPurpose::EncryptDecrypt)
            .set_version_template(
                CryptoKeyVersionTemplate::new()
                    .set_protection_level(protection)
                    .set_algorithm(CryptoKeyVersionAlgorithm::GoogleSymmetricEncryption),
            )
            .set_rotation_period(rotation)
            .set_next_rotation_time(next)
            .set_labels([("managed-by", "agent-secret-store")]);
        let created = self
            .with_retries("create key", || {
                self.client
                    .create_crypto_key()
                    .set_parent(self.key_ring.clone())
                    .set_crypto_key_id(tenant_key_id(tenant))
                    .set_crypto_key(key.clone())
                    .send()
            })
            .await;
        match created {
            Ok(key) => self.primary_of(tenant, &key),
            // Idempotent: a retry after a lost response, or a second replica, finds it there.
            Err(e) if e.kind == Kind::AlreadyExists => self.primary_key(tenant).await,
            // The parent is the only thing that can be missing here: the key ring operators
            // were to create, not the tenant.
            Err(e) if e.kind == Kind::NotFound => Err(KmsError::Config(format!(
                "key ring {} does not exist ({})",
                self.key_ring, e.message
            ))),
            Err(e) => Err(e.into_kms(tenant)),
        }
    }

    async fn primary_key(&self, tenant: TenantId) -> Result<KeyRef, KmsError> {
        let key = self.get_key(tenant).await?;
        self.primary_of(tenant, &key)
    }

    async fn key_info(&self, tenant: TenantId) -> Result<KeyInfo, KmsError> {
        let key = self.get_key(tenant).await?;
        let primary = self.primary_of(tenant, &key)?;
        let created_at = key
            .primary
            .as_ref()
            .and_then(|p| p.create_time)
            .and_then(|t| DateTime::<Utc>::from_timestamp(t.seconds(), t.nanos().max(0) as u32));
        Ok(KeyInfo {
            key_name: primary.key_name,
            primary_version: primary.key_version,
            primary_created_at: created_at,
            rotates_itself: key.rotation_period().is_some(),
        })
    }

    async fn rotate(&self, tenant: TenantId) -> Result<KeyRef, KmsError> {
        let key_name = self.key_name(tenant);
        let version = self
            .with_retries("create key version", || {
                self.client
                    .create_crypto_key_version()
                    .set_parent(key_name.clone())
                    .set_crypto_key_version(CryptoKeyVersion::new())
                    .send()
            })
            .await
            .map_err(|e| e.into_kms(tenant))?;
        let id = version_under(&key_name, &version.name)?.to_owned();
        let key = self
            .with_retries("update primary version", || {
                self.client
                    .update_crypto_key_primary_version()
                    .set_name(key_name.clone())
                    .set_crypto_key_version_id(id.clone())
                    .send()
            })
            .await
            .map_err(|e| e.into_kms(tenant))?;
        self.primary_of(tenant, &key)
    }

    async fn disable_version(&self, tenant: TenantId, key_version: &str) -> Result<(), KmsError> {
        // Cloud KMS would disable the primary too, and every wrap would then fail.
        let primary = self.primary_key(tenant).await?;
        if primary.key_version == key_version {
            return Err(KmsError::PrimaryVersion {
                key_name: primary.key_name,
                key_version: primary.key_version,
            });
        }
        self.set_state(tenant, key_version, CryptoKeyVersionState::Disabled)
            .await
    }

    async fn enable_version(&self, tenant: TenantId, key_version: &str) -> Result<(), KmsError> {
        self.set_state(tenant, key_version, CryptoKeyVersionState::Enabled)
            .await
    }

    async fn wrap_dek(
        &self,
        tenant: TenantId,
        dek: &Dek,
        aad: &[u8],
    ) -> Result<WrappedDek, KmsError> {
        let key_name = self.key_name(tenant);
        self.encrypt(tenant, &key_name, None, dek, aad).await
    }

    async fn wrap_dek_under(
        &self,
        tenant: TenantId,
        dek: &Dek,
        aad: &[u8],
        key_version: &str,
    ) -> Result<WrappedDek, KmsError> {
        let name = self.version_name(tenant, key_version)?;
        self.encrypt(tenant, &name, Some(key_version), dek, aad)
            .await
            .map_err(|e| match e {
                KmsError::Remote(_) | KmsError::UnknownTenant(_) => KmsError::UnknownKeyVersion {
                    key_name: self.key_name(tenant),
                    key_version: key_version.to_owned(),
                },
                other => other,
            })
    }

    async fn unwrap_dek(
        &self,
        tenant: TenantId,
        wrapped: &WrappedDek,
        aad: &[u8],
    ) -> Result<Dek, KmsError> {
        let key_name = self.key_name(tenant);
        if wrapped.key_name != key_name {
            return Err(KmsError::WrongKey);
        }
        let ciphertext = bytes::Bytes::copy_from_slice(&wrapped.ciphertext);
        let aad = bytes::Bytes::copy_from_slice(aad);
        let response = self
            .with_retries("decrypt", || {
                self.client
                    .decrypt()
                    .set_name(key_name.clone())
                    .set_ciphertext(ciphertext.clone())
                    .set_additional_authenticated_data(aad.clone())
                    .set_ciphertext_crc32c(crc(&ciphertext))
                    .set_additional_authenticated_data_crc32c(crc(&aad))
                    .send()
            })
            .await
            .map_err(|e| match e.kind {
                // Cloud KMS answers a ciphertext or AAD that does not authenticate under this
                // key with INVALID_ARGUMENT: for us that is "not this row's DEK".
                Kind::InvalidArgument => KmsError::Unwrap,
                Kind::FailedPrecondition => KmsError::VersionDisabled {
                    key_name: key_name.clone(),
                    key_version: wrapped.key_version.clone(),
                },
                _ => e.into_kms(tenant),
            })?;
        if response.plaintext_crc32c != Some(crc(&response.plaintext)) {
            return Err(integrity("the plaintext does not match its checksum"));
        }
        Dek::from_bytes(&response.plaintext)
            .map_err(|_| integrity("the unwrapped DEK is not 32 bytes"))
    }
}

/// A failed call, classified by what the caller can do about it.
#[derive(Debug)]
struct CallError {
    kind: Kind,
    /// The call's name and the service's message; never key material.
    message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// UNAVAILABLE, DEADLINE_EXCEEDED, a timeout or a refused connection: worth a retry.
    Unavailable,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    /// The service says a request checksum does not match the data it received.
    ChecksumRejected,
    /// Anything else the service calls INVALID_ARGUMENT (on decrypt: it does not authenticate).
    InvalidArgument,
    /// FAILED_PRECONDITION: on decrypt, the version is disabled or destroyed.
    FailedPrecondition,
    /// Any other 5xx (INTERNAL, UNKNOWN, a bare 500): answered at once, reported as
    /// unavailable, since nothing was decided about the data.
    ServerError,
    Other,
}

impl CallError {
    fn classify(what: &str, e: &google_cloud_kms_v1::Error) -> CallError {
        let (kind, detail) = match e.status() {
            Some(status) => {
                let kind = match status.code {
                    Code::Unavailable | Code::DeadlineExceeded => Kind::Unavailable,
                    Code::NotFound => Kind::NotFound,
                    Code::AlreadyExists => Kind::AlreadyExists,
                    Code::PermissionDenied | Code::Unauthenticated => Kind::PermissionDenied,
                    // Cloud KMS names the checksum field when the data it received does not
                    // match the client's CRC32C: corruption in transit, not a bad ciphertext.
                    Code::InvalidArgument
                        if status.message.to_ascii_lowercase().contains("checksum")
                            || status.message.contains("crc32c") =>
                    {
                        Kind::ChecksumRejected
                    }
                    Code::InvalidArgument => Kind::InvalidArgument,
                    Code::FailedPrecondition => Kind::FailedPrecondition,
                    // HTTP 500 from the service itself: a fault on its side, not an answer
                    // about our data. Not retried here (AIP-194), but an outage to the caller.
                    Code::Internal | Code::Unknown => Kind::ServerError,
                    _ => Kind::Other,
                };
                (kind, format!("{:?}: {}", status.code, status.message))
            }
            // A proxy or load balancer in front of the service answers 502/503/504 without a
            // Google error body, and a connection can drop after the request went out: both
            // are what gRPC calls UNAVAILABLE (Google's own Aip194Strict policy agrees).
            None if e.is_timeout()
                || e.is_connect()
                || e.is_io()
                || e.is_transient_and_before_rpc()
                || matches!(e.http_status_code(), Some(502..=504)) =>
            {
                (Kind::Unavailable, e.to_string())
            }
            None if e.is_authentication() => (Kind::PermissionDenied, e.to_string()),
            None if matches!(e.http_status_code(), Some(500..=599)) => {
                (Kind::ServerError, e.to_string())
            }
            None => (Kind::Other, e.to_string()),
        };
        CallError {
            kind,
            message: format!("{what}: {detail}"),
        }
    }

    /// The usual mapping; call sites handle the kinds whose meaning depends on the call.
    fn into_kms(self, tenant: TenantId) -> KmsError {
        match self.kind {
            Kind::Unavailable | Kind::ServerError => {
                KmsError::Unavailable(format!("Cloud KMS {}", self.message))
            }
            Kind::NotFound => KmsError::UnknownTenant(tenant),
            Kind::PermissionDenied => KmsError::PermissionDenied(self.message),
            Kind::ChecksumRejected => KmsError::Integrity(self.message),
            Kind::AlreadyExists
            | Kind::InvalidArgument
            | Kind::FailedPrecondition
            | Kind::Other => KmsError::Remote(self.message),
        }
    }
}

fn integrity(what: &str) -> KmsError {
    KmsError::Integrity(what.to_owned())
}

/// The version id of `version_name`, which must be `{key_name}/cryptoKeyVersions/{id}`.
fn version_under<'a>(key_name: &str, version_name: &'a str) -> Result<&'a str, KmsError> {
    version_name
        .strip_prefix(key_name)
        .and_then(|rest| rest.strip_prefix("/cryptoKeyVersions/"))
        .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()))
        .ok_or_else(|| {
            KmsError::Integrity(format!(
                "the service answered with key version {version_name:?}, which is not a version of {key_name}"
            ))
        })
}

fn crc(data: &[u8]) -> i64 {
    i64::from(crc32c::crc32c(data))
}

fn wkt_duration(d: Duration) -> Result<google_cloud_wkt::Duration, KmsError> {
    google_cloud_wkt::Duration::try_from(d)
        .map_err(|_| KmsError::Config("rotation period out of range".into()))
}

/// Full jitter: a uniformly random wait in [backoff/2, backoff].
fn jitter(backoff: Duration) -> Duration {
    let half = backoff / 2;
    half + half.mul_f64(rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn version_names_must_be_under_the_requested_key() {
        let key = "projects/p/locations/l/keyRings/r/cryptoKeys/tenant-a";
        assert_eq!(
            version_under(key, &format!("{key}/cryptoKeyVersions/7")).unwrap(),
            "7"
        );
        for bad in [
            "projects/p/locations/l/keyRings/r/cryptoKeys/tenant-b/cryptoKeyVersions/7".to_owned(),
            format!("{key}x/cryptoKeyVersions/7"),
            format!("{key}/cryptoKeyVersions/"),
            format!("{key}/cryptoKeyVersions/7/../8"),
            key.to_owned(),
        ] {
            assert!(
                matches!(version_under(key, &bad), Err(KmsError::Integrity(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn crc32c_matches_the_published_check_value() {
        // RFC 3720 B.4 check value of CRC-32C over "123456789".
        assert_eq!(crc(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn jitter_stays_within_half_to_full_backoff() {
        let b = Duration::from_millis(200);
        for _ in 0..100 {
            let j = jitter(b);
            assert!(j >= b / 2 && j <= b);
        }
    }
}
