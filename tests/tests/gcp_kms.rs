//! The Google Cloud KMS backend (`GcpKms`) through Google's real `google-cloud-kms-v1` client
//! against the fake Cloud KMS server: the keys it creates, wrapping under rotating versions,
//! the CRC32C integrity checks both ways, tenant isolation, which failures it retries, and
//! separation of duties between the encrypt-only control plane and the decrypt-only sidecar.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use agent_secret_core::envelope::{Dek, SecretAad};
use agent_secret_core::ids::TenantId;
use agent_secret_core::kms::gcp::{GcpCredentials, GcpKms, GcpKmsConfig, GcpProtection};
use agent_secret_core::kms::{KeyRef, Kms, KmsError, WrappedDek};
use agent_secret_testkit::fake_gcp_kms::{FakeGcpKms, Fault};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use google_cloud_kms_v1::model::crypto_key::CryptoKeyPurpose;
use google_cloud_kms_v1::model::crypto_key_version::CryptoKeyVersionState;
use google_cloud_kms_v1::model::ProtectionLevel;

const RING: &str = "projects/p/locations/l/keyRings/r";
const NINETY_DAYS: Duration = Duration::from_secs(90 * 24 * 3600);
const PATH: &str = "production/openai/api_key";

/// The backend's config for `fake`, with backoff short enough for tests.
fn config_for(fake: &FakeGcpKms) -> GcpKmsConfig {
    let mut cfg = GcpKmsConfig::new("p", "l", "r");
    cfg.endpoint = Some(fake.endpoint());
    cfg.credentials = GcpCredentials::Anonymous;
    cfg.initial_backoff = Duration::from_millis(1);
    cfg.max_backoff = Duration::from_millis(5);
    cfg
}

/// A fake with the key ring `p/l/r` and a backend for it, its config adjusted by `adjust`.
async fn setup_with(adjust: impl FnOnce(&mut GcpKmsConfig)) -> (FakeGcpKms, GcpKms) {
    agent_secret_testkit::init_crypto();
    let fake = FakeGcpKms::start().await;
    fake.add_key_ring("p", "l", "r");
    let mut cfg = config_for(&fake);
    adjust(&mut cfg);
    let kms = GcpKms::connect(cfg).await.expect("connect to the fake KMS");
    (fake, kms)
}

async fn setup() -> (FakeGcpKms, GcpKms) {
    setup_with(|_| {}).await
}

/// A fake, a backend and one tenant whose key exists.
async fn setup_tenant() -> (FakeGcpKms, GcpKms, TenantId) {
    let (fake, kms) = setup().await;
    let tenant = TenantId::new();
    kms.create_tenant_key(tenant).await.unwrap();
    (fake, kms, tenant)
}

fn key_name(tenant: TenantId) -> String {
    format!("{RING}/cryptoKeys/tenant-{tenant}")
}

fn aad(tenant: TenantId, path: &str, version: i64) -> Vec<u8> {
    SecretAad {
        tenant,
        path,
        version,
    }
    .to_bytes()
}

/// Every rendering of the DEK's bytes a log line or error message could plausibly carry.
fn renderings_of(dek: &Dek) -> Vec<String> {
    let bytes = dek.expose();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    vec![
        hex.clone(),
        hex.to_uppercase(),
        STANDARD.encode(bytes),
        STANDARD_NO_PAD.encode(bytes),
        URL_SAFE.encode(bytes),
        URL_SAFE_NO_PAD.encode(bytes),
        format!("{bytes:?}"),
    ]
}

fn assert_no_dek(dek: &Dek, text: &str) {
    for rendering in renderings_of(dek) {
        assert!(
            !text.contains(&rendering),
            "the DEK leaked into output: {text}"
        );
    }
}

fn assert_integrity(result: Result<impl std::fmt::Debug, KmsError>, what: &str) -> KmsError {
    match result {
        Err(e @ KmsError::Integrity(_)) => {
            assert_eq!(e.code(), "kms_integrity_failed");
            e
        }
        other => panic!("{what}: expected an integrity failure, got {other:?}"),
    }
}

// --- Key creation -------------------------------------------------------------------------

#[tokio::test]
async fn create_tenant_key_makes_an_hsm_encrypt_decrypt_key_rotating_every_90_days() {
    let (fake, kms) = setup().await;
    let tenant = TenantId::new();
    let before = chrono::Utc::now();
    let created = kms.create_tenant_key(tenant).await.unwrap();
    let after = chrono::Utc::now();

    assert_eq!(
        created,
        KeyRef {
            key_name: key_name(tenant),
            key_version: "1".into(),
        }
    );
    let key = fake
        .crypto_key(&key_name(tenant))
        .expect("the tenant's key exists in Cloud KMS");
    assert_eq!(key.purpose, CryptoKeyPurpose::EncryptDecrypt);
    assert_eq!(
        key.protection_level,
        ProtectionLevel::Hsm,
        "tenant keys default to HSM protection"
    );
    assert_eq!(key.primary_version.as_deref(), Some("1"));
    assert_eq!(key.rotation_period, Some(NINETY_DAYS));
    let next = key
        .next_rotation_time
        .expect("a key with a rotation period has a next rotation time");
    let ninety = chrono::Duration::from_std(NINETY_DAYS).unwrap();
    let slack = chrono::Duration::seconds(1);
    assert!(
        next >= before + ninety - slack && next <= after + ninety + slack,
        "next rotation {next} is not now + 90 days (created between {before} and {after})"
    );
    assert_eq!(
        key.labels.get("managed-by").map(String::as_str),
        Some("agent-secret-store")
    );
}

#[tokio::test]
async fn create_tenant_key_uses_software_protection_when_configured() {
    let (fake, kms) = setup_with(|cfg| cfg.protection = GcpProtection::Software).await;
    let tenant = TenantId::new();
    kms.create_tenant_key(tenant).await.unwrap();
    let key = fake.crypto_key(&key_name(tenant)).unwrap();
    assert_eq!(key.protection_level, ProtectionLevel::Software);
}

#[tokio::test]
async fn create_tenant_key_twice_returns_the_existing_primary() {
    let (fake, kms) = setup().await;
    let tenant = TenantId::new();
    let first = kms.create_tenant_key(tenant).await.unwrap();
    let second = kms
        .create_tenant_key(tenant)
        .await
        .expect("creating an existing tenant key is not an error");
    assert_eq!(second, first);
    assert_eq!(fake.calls("createCryptoKey"), 2);
    let key = fake.crypto_key(&key_name(tenant)).unwrap();
    assert_eq!(key.versions.len(), 1, "the second call made no new version");

    fake.rotate(&key_name(tenant));
    let third = kms.create_tenant_key(tenant).await.unwrap();
    assert_eq!(
        third.key_version, "2",
        "an existing key answers with its current primary"
    );
}

#[tokio::test]
async fn concurrent_create_tenant_key_calls_agree_on_one_key() {
    let (fake, kms) = setup().await;
    let tenant = TenantId::new();
    let (a, b) = tokio::join!(kms.create_tenant_key(tenant), kms.create_tenant_key(tenant));
    assert_eq!(a.unwrap(), b.unwrap());
    assert_eq!(
        fake.crypto_key(&key_name(tenant)).unwrap().versions.len(),
        1
    );
}

#[tokio::test]
async fn create_tenant_key_after_a_lost_response_finds_the_key_it_made() {
    let (fake, kms) = setup_with(|cfg| cfg.attempt_timeout = Duration::from_millis(300)).await;
    let tenant = TenantId::new();
    // The first CreateCryptoKey succeeds on the server but its answer never arrives in time.
    fake.set_fault(Fault::Latency(Duration::from_secs(5)));
    let fake = std::sync::Arc::new(fake);
    let watcher = {
        let fake = fake.clone();
        tokio::spawn(async move {
            while fake.calls("createCryptoKey") == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            fake.clear_faults();
        })
    };
    let created = kms.create_tenant_key(tenant).await.unwrap();
    watcher.await.unwrap();
    assert_eq!(created.key_version, "1");
    assert_eq!(
        fake.calls("createCryptoKey"),
        2,
        "retried after the timeout"
    );
    assert_eq!(
        fake.crypto_key(&key_name(tenant)).unwrap().versions.len(),
        1
    );
}

#[tokio::test]
async fn key_info_reports_primary_1_and_that_cloud_kms_rotates_the_key() {
    let (_fake, kms, tenant) = setup_tenant().await;
    let info = kms.key_info(tenant).await.unwrap();
    assert_eq!(info.key_name, key_name(tenant));
    assert_eq!(info.primary_version, "1");
    assert!(
        info.rotates_itself,
        "a key with a rotation period rotates itself"
    );
    let created = info
        .primary_created_at
        .expect("Cloud KMS reports when the primary was created");
    assert!((chrono::Utc::now() - created).num_seconds().abs() < 60);
}

// --- Wrapping and rotation ----------------------------------------------------------------

#[tokio::test]
async fn wrapped_dek_round_trips_and_records_key_name_and_version_1() {
    let (fake, kms, tenant) = setup_tenant().await;
    let dek = Dek::generate();
    let aad = aad(tenant, PATH, 1);
    let wrapped = kms.wrap_dek(tenant, &dek, &aad).await.unwrap();
    assert_eq!(wrapped.key_name, key_name(tenant));
    assert_eq!(wrapped.key_version, "1");
    assert!(
        !wrapped
            .ciphertext
            .windows(dek.expose().len())
            .any(|w| w == dek.expose()),
        "the wrapped DEK holds the DEK in the clear"
    );

    let unwrapped = kms.unwrap_dek(tenant, &wrapped, &aad).await.unwrap();
    assert_eq!(unwrapped.expose(), dek.expose());
    assert_eq!(fake.calls("encrypt"), 1);
    assert_eq!(fake.calls("decrypt"), 1);
}

#[tokio::test]
async fn after_cloud_kms_rotates_new_wraps_use_version_2_and_old_deks_still_unwrap() {
    let (fake, kms, tenant) = setup_tenant().await;
    let old_dek = Dek::generate();
    let old_aad = aad(tenant, PATH, 1);
    let old = kms.wrap_dek(tenant, &old_dek, &old_aad).await.unwrap();
    assert_eq!(old.key_version, "1");

    assert_eq!(fake.rotate(&key_name(tenant)), "2");
    assert_eq!(kms.primary_key(tenant).await.unwrap().key_version, "2");
    assert_eq!(kms.key_info(tenant).await.unwrap().primary_version, "2");

    let new_dek = Dek::generate();
    let new_aad = aad(tenant, PATH, 2);
    let new = kms.wrap_dek(tenant, &new_dek, &new_aad).await.unwrap();
    assert_eq!(
        new.key_version, "2",
        "new DEKs are wrapped under the new primary"
    );
    assert_eq!(
        kms.unwrap_dek(tenant, &old, &old_aad)
            .await
            .unwrap()
            .expose(),
        old_dek.expose(),
        "a DEK wrapped before the rotation still unwraps"
    );
    assert_eq!(
        kms.unwrap_dek(tenant, &new, &new_aad)
            .await
            .unwrap()
            .expose(),
        new_dek.expose()
    );
}

#[tokio::test]
async fn forced_rotation_makes_a_new_version_the_primary() {
    let (fake, kms, tenant) = setup_tenant().await;
    let dek = Dek::generate();
    let aad = aad(tenant, PATH, 1);
    let v1 = kms.wrap_dek(tenant, &dek, &aad).await.unwrap();
    fake.rotate(&key_name(tenant));

    let rotated = kms.rotate(tenant).await.unwrap();
    assert_eq!(
        rotated,
        KeyRef {
            key_name: key_name(tenant),
            key_version: "3".into(),
        }
    );
    assert_eq!(fake.calls("createCryptoKeyVersion"), 1);
    assert_eq!(fake.calls("updateCryptoKeyPrimaryVersion"), 1);
    assert_eq!(
        fake.crypto_key(&key_name(tenant))
            .unwrap()
            .primary_version
            .as_deref(),
        Some("3")
    );
    assert_eq!(kms.key_info(tenant).await.unwrap().primary_version, "3");
    assert_eq!(
        kms.wrap_dek(tenant, &dek, &aad).await.unwrap().key_version,
        "3"
    );
    assert_eq!(
        kms.unwrap_dek(tenant, &v1, &aad).await.unwrap().expose(),
        dek.expose()
    );
}

// --- Integrity ----------------------------------------------------------------------------

#[tokio::test]
async fn wrap_refuses_when_the_service_received_a_corrupted_plaintext() {
    let (fake, kms, tenant) = setup_tenant().await;
    fake.set_fault(Fault::CorruptRequestInTransit);
    let result = kms
        .wrap_dek(tenant, &Dek::generate(), &aad(tenant, PATH, 1))
        .await;
    assert_integrity(result, "plaintext corrupted on the way to Cloud KMS");
    assert_eq!(
        fake.calls("encrypt"),
        1,
        "an integrity failure is not retried"
    );
}

#[tokio::test]
async fn unwrap_refuses_when_the_service_received_a_corrupted_ciphertext() {
    let (fake, kms, tenant) = setup_tenant().await;
    let aad = aad(tenant, PATH, 1);
    let wrapped = kms.wrap_dek(tenant, &Dek::generate(), &aad).await.unwrap();
    fake.set_fault(Fault::CorruptRequestInTransit);
    let result = kms.unwrap_dek(tenant, &wrapped, &aad).await;
    assert_integrity(result, "ciphertext corrupted on the way to Cloud KMS");
}

#[tokio::test]
async fn wrap_refuses_a_corrupted_or_mischecksummed_ciphertext() {
    for fault in [Fault::CorruptResponse, Fault::WrongResponseCrc] {
        let (fake, kms, tenant) = setup_tenant().await;
        fake.set_fault(fault.clone());
        let result = kms
            .wrap_dek(tenant, &Dek::generate(), &aad(tenant, PATH, 1))
            .await;
        assert_integrity(result, &format!("wrap with {fault:?}"));
    }
}

#[tokio::test]
async fn unwrap_refuses_a_corrupted_or_mischecksummed_plaintext() {
    for fault in [Fault::CorruptResponse, Fault::WrongResponseCrc] {
        let (fake, kms, tenant) = setup_tenant().await;
        let aad = aad(tenant, PATH, 1);
        let wrapped = kms.wrap_dek(tenant, &Dek::generate(), &aad).await.unwrap();
        fake.set_fault(fault.clone());
        let result = kms.unwrap_dek(tenant, &wrapped, &aad).await;
        assert_integrity(result, &format!("unwrap with {fault:?}"));
    }
}

#[tokio::test]
async fn wrap_refuses_a_response_that_did_not_verify_our_checksums() {
    let (fake, kms, tenant) = setup_tenant().await;
    fake.set_fault(Fault::DropVerifiedFlags);
    let result = kms
        .wrap_dek(tenant, &Dek::generate(), &aad(tenant, PATH, 1))
        .await;
    assert_integrity(result, "encrypt response without verified_*_crc32c");
}

#[tokio::test]
async fn wrap_refuses_a_response_naming_another_keys_version() {
    let (fake, kms, tenant) = setup_tenant().await;
    fake.set_fault(Fault::WrongKeyName);
    let result = kms
        .wrap_dek(tenant, &Dek::generate(), &aad(tenant, PATH, 1))
        .await;
    let err = assert_integrity(result, "encrypt answered by another key's version");
    assert!(err.to_string().contains("impostor"), "{err}");
}

// --- Tenant isolation and AAD -------------------------------------------------------------

#[tokio::test]
async fn unwrap_refuses_another_tenants_key_name_without_calling_decrypt() {
    let (fake, kms) = setup().await;
    let (a, b) = (TenantId::new(), TenantId::new());
    kms.create_tenant_key(a).await.unwrap();
    kms.create_tenant_key(b).await.unwrap();
    let aad_b = aad(b, PATH, 1);
    let wrapped_b = kms.wrap_dek(b, &Dek::generate(), &aad_b).await.unwrap();

    let decrypts = fake.calls("decrypt");
    let err = kms.unwrap_dek(a, &wrapped_b, &aad_b).await.unwrap_err();
    assert_eq!(err, KmsError::WrongKey);
    assert_eq!(err.code(), "kms_wrong_key");
    assert_eq!(
        fake.calls("decrypt"),
        decrypts,
        "a foreign key name is refused before Cloud KMS is asked"
    );
}

#[tokio::test]
async fn tenant_key_cannot_unwrap_another_tenants_dek_under_a_forged_key_name() {
    let (fake, kms) = setup().await;
    let (a, b) = (TenantId::new(), TenantId::new());
    kms.create_tenant_key(a).await.unwrap();
    kms.create_tenant_key(b).await.unwrap();
    let aad_b = aad(b, PATH, 1);
    let wrapped_b = kms.wrap_dek(b, &Dek::generate(), &aad_b).await.unwrap();
    let forged = WrappedDek {
        key_name: key_name(a),
        ..wrapped_b
    };

    for aad in [aad_b.clone(), aad(a, PATH, 1)] {
        let err = kms.unwrap_dek(a, &forged, &aad).await.unwrap_err();
        assert_eq!(err, KmsError::Unwrap, "tenant A opened tenant B's DEK");
        assert_eq!(err.code(), "kms_unwrap_failed");
    }
    assert_eq!(fake.calls("decrypt"), 2, "Cloud KMS itself refused both");
}

#[tokio::test]
async fn unwrap_with_another_path_or_version_fails_authentication() {
    let (_fake, kms, tenant) = setup_tenant().await;
    let wrapped = kms
        .wrap_dek(tenant, &Dek::generate(), &aad(tenant, PATH, 1))
        .await
        .unwrap();
    for (path, version) in [("production/openai/other", 1), (PATH, 2)] {
        let err = kms
            .unwrap_dek(tenant, &wrapped, &aad(tenant, path, version))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            KmsError::Unwrap,
            "a DEK for {PATH} v1 opened as {path} v{version}"
        );
    }
}

// --- Retries ------------------------------------------------------------------------------

#[tokio::test]
async fn transient_unavailable_is_retried_until_it_succeeds() {
    let (fake, kms, tenant) = setup_tenant().await;
    fake.set_fault(Fault::Unavailable { times: 2 });
    let dek = Dek::generate();
    let aad = aad(tenant, PATH, 1);
    let wrapped = kms
        .wrap_dek(tenant, &dek, &aad)
        .await
        .expect("two outages are retried past");
    assert_eq!(fake.calls("encrypt"), 3);
    assert_eq!(
        kms.unwrap_dek(tenant, &wrapped, &aad)
            .await
            .unwrap()
            .expose(),
        dek.expose()
    );
}

#[tokio::test]
async fn persistent_unavailable_gives_up_after_max_attempts() {
    let (fake, kms) = setup_with(|cfg| cfg.max_attempts = 3).await;
    let tenant = TenantId::new();
    kms.create_tenant_key(tenant).await.unwrap();
    fake.set_fault(Fault::Unavailable { times: 10 });
    let err = kms
        .wrap_dek(tenant, &Dek::generate(), &aad(tenant, PATH, 1))
        .await
        .unwrap_err();
    assert!(matches!(err, KmsError::Unavailable(_)), "{err:?}");
    assert_eq!(err.code(), "kms_unavailable");
    assert_eq!(fake.calls("encrypt"), 3, "exactly max_attempts calls");
}

#[tokio::test]
async fn deadline_exceeded_is_retried_like_unavailable() {
    let (fake, kms) = setup_with(|cfg| cfg.max_attempts = 3).await;
    let tenant = TenantId::new();
    kms.create_tenant_key(tenant).await.unwrap();
    let dek = Dek::generate();
    let aad = aad(tenant, PATH, 1);

    fake.set_fault(Fault::DeadlineExceeded { times: 2 });
    let wrapped = kms.wrap_dek(tenant, &dek, &aad).await.unwrap();
    assert_eq!(fake.calls("encrypt"), 3);

    fake.set_fault(Fault::DeadlineExceeded { times: 10 });
    let err = kms.unwrap_dek(tenant, &wrapped, &aad).await.unwrap_err();
    assert!(matches!(err, KmsError::Unavailable(_)), "{err:?}");
    assert_eq!(fake.calls("decrypt"), 3);
}

#[tokio::test]
async fn permission_denied_is_answered_at_once_without_retry() {
    let (fake, kms, tenant) = setup_tenant().await;
    let aad = aad(tenant, PATH, 1);
    let wrapped = kms.wrap_dek(tenant, &Dek::generate(), &aad).await.unwrap();
    fake.set_fault(Fault::PermissionDenied { method: "decrypt" });
    let err = kms.unwrap_dek(tenant, &wrapped, &aad).await.unwrap_err();
    assert!(matches!(err, KmsError::PermissionDenied(_)), "{err:?}");
    assert_eq!(err.code(), "kms_permission_denied");
    assert_eq!(fake.calls("decrypt"), 1, "a denial is not retried");
}

#[tokio::test]
async fn an_attempt_slower_than_attempt_timeout_is_retried_then_unavailable() {
    let (fake, kms) = setup_with(|cfg| {
        cfg.attempt_timeout = Duration::from_millis(200);
        cfg.max_attempts = 3;
    })
    .await;
    let tenant = TenantId::new();
    kms.create_tenant_key(tenant).await.unwrap();
    fake.set_fault(Fault::Latency(Duration::from_secs(30)));
    let err = kms
        .wrap_dek(tenant, &Dek::generate(), &aad(tenant, PATH, 1))
        .await
        .unwrap_err();
    assert!(matches!(err, KmsError::Unavailable(_)), "{err:?}");
    assert!(err.to_string().contains("timed out"), "{err}");
    assert_eq!(fake.calls("encrypt"), 3);
}

// --- Versions and unknown keys ------------------------------------------------------------

#[tokio::test]
async fn disabled_version_no_longer_unwraps() {
    let (fake, kms, tenant) = setup_tenant().await;
    let aad = aad(tenant, PATH, 1);
    let v1 = kms.wrap_dek(tenant, &Dek::generate(), &aad).await.unwrap();
    fake.rotate(&key_name(tenant));

    kms.disable_version(tenant, "1").await.unwrap();
    let state = fake.crypto_key(&key_name(tenant)).unwrap().versions[0]
        .state
        .clone();
    assert_eq!(state, CryptoKeyVersionState::Disabled);

    let err = kms.unwrap_dek(tenant, &v1, &aad).await.unwrap_err();
    assert_eq!(
        err,
        KmsError::VersionDisabled {
            key_name: key_name(tenant),
            key_version: "1".into(),
        }
    );
    assert_eq!(err.code(), "kms_key_version_disabled");
    assert_eq!(
        fake.calls("decrypt"),
        1,
        "a disabled version is not retried"
    );
    // The primary keeps working.
    let v2 = kms.wrap_dek(tenant, &Dek::generate(), &aad).await.unwrap();
    kms.unwrap_dek(tenant, &v2, &aad).await.unwrap();
}

#[tokio::test]
async fn disabling_an_unknown_version_is_unknown_key_version() {
    let (fake, kms, tenant) = setup_tenant().await;
    fake.rotate(&key_name(tenant));
    let err = kms.disable_version(tenant, "99").await.unwrap_err();
    assert_eq!(
        err,
        KmsError::UnknownKeyVersion {
            key_name: key_name(tenant),
            key_version: "99".into(),
        }
    );
    assert_eq!(err.code(), "kms_unknown_key_version");
}

#[tokio::test]
async fn disabling_the_primary_version_is_refused() {
    let (fake, kms, tenant) = setup_tenant().await;
    let err = kms.disable_version(tenant, "1").await.unwrap_err();
    assert_eq!(
        err,
        KmsError::PrimaryVersion {
            key_name: key_name(tenant),
            key_version: "1".into(),
        }
    );
    let key = fake.crypto_key(&key_name(tenant)).unwrap();
    assert_eq!(key.versions[0].state, CryptoKeyVersionState::Enabled);
    kms.wrap_dek(tenant, &Dek::generate(), &aad(tenant, PATH, 1))
        .await
        .expect("the primary still wraps");
}

#[tokio::test]
async fn a_tenant_without_a_key_is_unknown_tenant() {
    let (_fake, kms) = setup().await;
    let tenant = TenantId::new();
    let expected = KmsError::UnknownTenant(tenant);
    assert_eq!(kms.primary_key(tenant).await.unwrap_err(), expected);
    assert_eq!(kms.key_info(tenant).await.unwrap_err(), expected);
    let err = kms
        .wrap_dek(tenant, &Dek::generate(), &aad(tenant, PATH, 1))
        .await
        .unwrap_err();
    assert_eq!(err, expected);
    assert_eq!(err.code(), "kms_unknown_tenant");
}

#[tokio::test]
async fn a_key_ring_that_does_not_exist_is_reported_not_hidden() {
    let (fake, _kms) = setup().await;
    let mut cfg = config_for(&fake);
    cfg.key_ring = "nobody-made-this".into();
    let kms = GcpKms::connect(cfg).await.unwrap();
    let tenant = TenantId::new();
    let err = kms.create_tenant_key(tenant).await.unwrap_err();
    assert!(
        matches!(&err, KmsError::Config(m) if m.contains("keyRings/nobody-made-this")),
        "a missing key ring is a configuration error naming it, not an unknown tenant: {err:?}"
    );
    assert_eq!(err.code(), "kms_config_invalid");
    assert_eq!(fake.calls("createCryptoKey"), 1, "not retried");
}

// --- Separation of duties -----------------------------------------------------------------

#[tokio::test]
async fn control_plane_identity_without_decrypt_creates_keys_and_wraps() {
    let (fake, kms) = setup().await;
    fake.set_fault(Fault::PermissionDenied { method: "decrypt" });
    let tenant = TenantId::new();
    kms.create_tenant_key(tenant).await.unwrap();
    let aad = aad(tenant, PATH, 1);
    let wrapped = kms.wrap_dek(tenant, &Dek::generate(), &aad).await.unwrap();
    assert!(matches!(
        kms.unwrap_dek(tenant, &wrapped, &aad).await,
        Err(KmsError::PermissionDenied(_))
    ));
}

#[tokio::test]
async fn sidecar_identity_with_decrypt_only_unwraps() {
    let (fake, kms, tenant) = setup_tenant().await;
    let dek = Dek::generate();
    let aad = aad(tenant, PATH, 1);
    let wrapped = kms.wrap_dek(tenant, &dek, &aad).await.unwrap();
    fake.set_fault(Fault::PermissionDenied { method: "encrypt" });
    fake.set_fault(Fault::PermissionDenied {
        method: "createCryptoKey",
    });
    fake.set_fault(Fault::PermissionDenied {
        method: "getCryptoKey",
    });
    assert_eq!(
        kms.unwrap_dek(tenant, &wrapped, &aad)
            .await
            .unwrap()
            .expose(),
        dek.expose()
    );
    assert!(matches!(
        kms.wrap_dek(tenant, &dek, &aad).await,
        Err(KmsError::PermissionDenied(_))
    ));
    assert!(matches!(
        kms.create_tenant_key(TenantId::new()).await,
        Err(KmsError::PermissionDenied(_))
    ));
}

// --- Configuration ------------------------------------------------------------------------

#[test]
fn anonymous_credentials_are_only_accepted_for_a_loopback_http_endpoint() {
    let anonymous = Some(Path::new("anonymous"));
    for endpoint in [
        None,
        Some("https://cloudkms.googleapis.com"),
        Some("https://127.0.0.1:8443"),
        Some("http://10.0.0.5:8080"),
        Some("http://kms.example.com:80"),
        Some("http://127.0.0.1.example.com:80"),
        // Userinfo: the host these name is kms.example.com, not the loopback address.
        Some("http://127.0.0.1:1@kms.example.com"),
        Some("http://localhost:80@kms.example.com:8080/"),
        Some("http://[::1]:1@kms.example.com"),
        Some("http://127.0.0.1:"),
    ] {
        assert!(
            GcpCredentials::from_setting(anonymous, endpoint).is_err(),
            "anonymous credentials accepted for {endpoint:?}"
        );
    }
    for endpoint in [
        "http://127.0.0.1:8200",
        "http://127.0.0.1:8200/",
        "http://localhost:9000",
        "http://[::1]:9000",
    ] {
        assert_eq!(
            GcpCredentials::from_setting(anonymous, Some(endpoint)),
            Ok(GcpCredentials::Anonymous),
            "{endpoint}"
        );
    }
    assert_eq!(
        GcpCredentials::from_setting(None, None),
        Ok(GcpCredentials::ApplicationDefault)
    );
    assert_eq!(
        GcpCredentials::from_setting(Some(Path::new("/etc/kms/sa.json")), None),
        Ok(GcpCredentials::ServiceAccountFile(
            "/etc/kms/sa.json".into()
        ))
    );
}

// --- No key material in output ------------------------------------------------------------

#[tokio::test]
async fn debug_output_and_error_messages_never_contain_the_dek() {
    let (fake, kms, tenant) = setup_tenant().await;
    let dek = Dek::generate();
    let other_path_aad = aad(tenant, "staging/other", 1);
    let aad = aad(tenant, PATH, 1);
    let wrapped = kms.wrap_dek(tenant, &dek, &aad).await.unwrap();
    assert_no_dek(&dek, &format!("{kms:?}"));
    assert_no_dek(&dek, &format!("{wrapped:?}"));
    assert_no_dek(&dek, &format!("{dek:?}"));

    let mut errors = Vec::new();
    for fault in [
        Fault::CorruptRequestInTransit,
        Fault::CorruptResponse,
        Fault::WrongResponseCrc,
        Fault::DropVerifiedFlags,
        Fault::WrongKeyName,
        Fault::Unavailable { times: 100 },
        Fault::PermissionDenied { method: "encrypt" },
        Fault::PermissionDenied { method: "decrypt" },
    ] {
        fake.set_fault(fault);
        if let Err(e) = kms.wrap_dek(tenant, &dek, &aad).await {
            errors.push(e);
        }
        if let Err(e) = kms.unwrap_dek(tenant, &wrapped, &aad).await {
            errors.push(e);
        }
        fake.clear_faults();
    }
    errors.push(
        kms.unwrap_dek(tenant, &wrapped, &other_path_aad)
            .await
            .unwrap_err(),
    );
    assert_eq!(
        errors.len(),
        13,
        "every fault but one per direction fails a call"
    );
    for err in &errors {
        assert_no_dek(&dek, &err.to_string());
        assert_no_dek(&dek, &format!("{err:?}"));
    }
}

#[tokio::test]
async fn a_bare_503_from_a_proxy_in_front_is_retried_like_unavailable() {
    let (fake, kms, tenant) = setup_tenant().await;
    fake.set_fault(Fault::ProxyUnavailable { times: 2 });
    let dek = Dek::generate();
    let aad = aad(tenant, PATH, 1);
    kms.wrap_dek(tenant, &dek, &aad)
        .await
        .expect("a load balancer's 503 is transient");
    assert_eq!(fake.calls("encrypt"), 3);

    fake.set_fault(Fault::ProxyUnavailable { times: 100 });
    let err = kms.wrap_dek(tenant, &dek, &aad).await.unwrap_err();
    assert_eq!(err.code(), "kms_unavailable", "{err:?}");
}

/// Cloud KMS is eventually consistent after a primary change: Encrypt on the key may still use
/// the previous primary. `wrap_dek` records whatever version really wrapped the DEK, and
/// `wrap_dek_under` (what rewrap uses) gets exactly the version it asks for.
#[tokio::test]
async fn wrapping_under_a_named_version_is_immune_to_a_stale_primary() {
    let (fake, kms, tenant) = setup_tenant().await;
    assert_eq!(fake.rotate(&key_name(tenant)), "2");
    fake.set_fault(Fault::StalePrimaryForEncrypt);
    let dek = Dek::generate();
    let aad = aad(tenant, PATH, 1);

    let by_key = kms.wrap_dek(tenant, &dek, &aad).await.unwrap();
    assert_eq!(
        by_key.key_version, "1",
        "the version that really wrapped it"
    );
    let by_version = kms.wrap_dek_under(tenant, &dek, &aad, "2").await.unwrap();
    assert_eq!(by_version.key_version, "2");
    for wrapped in [&by_key, &by_version] {
        let back = kms.unwrap_dek(tenant, wrapped, &aad).await.unwrap();
        assert_eq!(back.expose(), dek.expose());
    }

    // Names that are not version ids never reach the service.
    let before = fake.calls("encrypt");
    let err = kms
        .wrap_dek_under(tenant, &dek, &aad, "1/../../tenant-x")
        .await
        .unwrap_err();
    assert!(matches!(err, KmsError::UnknownKeyVersion { .. }), "{err:?}");
    assert_eq!(fake.calls("encrypt"), before);
}

#[tokio::test]
async fn a_disabled_version_can_be_enabled_again() {
    let (fake, kms, tenant) = setup_tenant().await;
    let dek = Dek::generate();
    let aad = aad(tenant, PATH, 1);
    let old = kms.wrap_dek(tenant, &dek, &aad).await.unwrap();
    fake.rotate(&key_name(tenant));
    kms.disable_version(tenant, "1").await.unwrap();
    let err = kms.unwrap_dek(tenant, &old, &aad).await.unwrap_err();
    assert!(matches!(err, KmsError::VersionDisabled { .. }), "{err:?}");
    kms.enable_version(tenant, "1").await.unwrap();
    let back = kms.unwrap_dek(tenant, &old, &aad).await.unwrap();
    assert_eq!(back.expose(), dek.expose());
}

#[test]
fn credentials_never_travel_over_plain_http_to_a_remote_endpoint() {
    let settings = |endpoint: &str, file: Option<&str>| {
        GcpKmsConfig::from_settings(
            Some("p"),
            Some("l"),
            Some("r"),
            Some(endpoint),
            ("kms.credentials_file", file.map(Path::new)),
        )
    };
    let err = settings("http://kms.corp.example", Some("/etc/sa.json")).unwrap_err();
    assert_eq!(err.0, "kms.endpoint");
    let err = settings("http://kms.corp.example", None).unwrap_err();
    assert_eq!(err.0, "kms.endpoint");
    settings("https://kms.corp.example", Some("/etc/sa.json")).unwrap();
    settings("http://127.0.0.1:9000", Some("anonymous")).unwrap();
}
