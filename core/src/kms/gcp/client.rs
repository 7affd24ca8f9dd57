//! The Cloud KMS calls behind [`Kms`], and the checks every answer must pass.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use google_cloud_kms_v1::client::KeyManagementService;
use google_cloud_kms_v1::model::{
    crypto_key::CryptoKeyPurpose, crypto_key_version::CryptoKeyVersionAlgorithm,
    crypto_key_version::CryptoKeyVersionState, CryptoKey, CryptoKeyVersion,
    CryptoKeyVersionTemplate, ProtectionLevel,
};

use super::checks::{crc, integrity, version_under};
use super::config::{GcpKmsConfig, GcpProtection};
use super::retry::{with_retries, Kind};
use crate::cipher::Dek;
use crate::ids::TenantId;
use crate::kms::{tenant_key_id, KeyInfo, KeyRef, Kms, KmsError, WrappedDek};

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
        let credentials = config.credentials.build()?;
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

    async fn get_key(&self, tenant: TenantId) -> Result<CryptoKey, KmsError> {
        let name = self.key_name(tenant);
        with_retries(&self.config, "get key", || {
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
        let response = with_retries(&self.config, "encrypt", || {
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
        with_retries(&self.config, "update key version state", || {
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
        let created = with_retries(&self.config, "create key", || {
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
        let version = with_retries(&self.config, "create key version", || {
            self.client
                .create_crypto_key_version()
                .set_parent(key_name.clone())
                .set_crypto_key_version(CryptoKeyVersion::new())
                .send()
        })
        .await
        .map_err(|e| e.into_kms(tenant))?;
        let id = version_under(&key_name, &version.name)?.to_owned();
        let key = with_retries(&self.config, "update primary version", || {
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
        let response = with_retries(&self.config, "decrypt", || {
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

fn wkt_duration(d: Duration) -> Result<google_cloud_wkt::Duration, KmsError> {
    google_cloud_wkt::Duration::try_from(d)
        .map_err(|_| KmsError::Config("rotation period out of range".into()))
}
