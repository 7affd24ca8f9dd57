//! The fake Cloud KMS, driven through Google's real `google-cloud-kms-v1` client: what the GCP
//! backend will see from Cloud KMS, including the failures it must survive or detect.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use agent_secret_testkit::fake_gcp_kms::{FakeGcpKms, Fault};
use google_cloud_gax::error::rpc::Code;
use google_cloud_gax::exponential_backoff::ExponentialBackoffBuilder;
use google_cloud_gax::options::RequestOptionsBuilder;
use google_cloud_kms_v1::client::KeyManagementService;
use google_cloud_kms_v1::model::crypto_key::CryptoKeyPurpose;
use google_cloud_kms_v1::model::crypto_key_version::{
    CryptoKeyVersionAlgorithm, CryptoKeyVersionState,
};
use google_cloud_kms_v1::model::{
    CryptoKey, CryptoKeyVersion, CryptoKeyVersionTemplate, DecryptResponse, EncryptResponse,
    ProtectionLevel,
};
use serde_json::{json, Value};

const RING: (&str, &str, &str) = ("test-project", "global", "agent-secrets");
const NINETY_DAYS: i64 = 90 * 24 * 3600;

async fn client_for(fake: &FakeGcpKms) -> KeyManagementService {
    agent_secret_testkit::init_crypto();
    let creds = google_cloud_auth::credentials::anonymous::Builder::new().build();
    KeyManagementService::builder()
        .with_endpoint(fake.endpoint())
        .with_credentials(creds)
        .build()
        .await
        .expect("build the KMS client")
}

/// A fake with one key ring, a client for it, and the key ring's name.
async fn setup() -> (FakeGcpKms, KeyManagementService, String) {
    let fake = FakeGcpKms::start().await;
    let ring = fake.add_key_ring(RING.0, RING.1, RING.2);
    let client = client_for(&fake).await;
    (fake, client, ring)
}

/// A SOFTWARE ENCRYPT_DECRYPT key; returns its name.
async fn create_key(client: &KeyManagementService, ring: &str, id: &str) -> String {
    client
        .create_crypto_key()
        .set_parent(ring)
        .set_crypto_key_id(id)
        .set_crypto_key(CryptoKey::new().set_purpose(CryptoKeyPurpose::EncryptDecrypt))
        .send()
        .await
        .expect("create the key")
        .name
}

async fn encrypt(
    client: &KeyManagementService,
    name: &str,
    plaintext: &[u8],
    aad: &[u8],
) -> google_cloud_kms_v1::Result<EncryptResponse> {
    client
        .encrypt()
        .set_name(name)
        .set_plaintext(plaintext.to_vec())
        .set_additional_authenticated_data(aad.to_vec())
        .set_plaintext_crc32c(crc(plaintext))
        .set_additional_authenticated_data_crc32c(crc(aad))
        .send()
        .await
}

async fn decrypt(
    client: &KeyManagementService,
    name: &str,
    ciphertext: &[u8],
    aad: &[u8],
) -> google_cloud_kms_v1::Result<DecryptResponse> {
    client
        .decrypt()
        .set_name(name)
        .set_ciphertext(ciphertext.to_vec())
        .set_additional_authenticated_data(aad.to_vec())
        .set_ciphertext_crc32c(crc(ciphertext))
        .set_additional_authenticated_data_crc32c(crc(aad))
        .send()
        .await
}

fn crc(data: &[u8]) -> i64 {
    i64::from(crc32c::crc32c(data))
}

fn code(err: &google_cloud_kms_v1::Error) -> Option<Code> {
    err.status().map(|s| s.code)
}

#[tokio::test]
async fn created_key_keeps_hsm_protection_and_rotation_schedule() {
    let (fake, client, ring) = setup().await;
    let next_rotation = chrono::Utc::now().timestamp() + NINETY_DAYS;
    let created = client
        .create_crypto_key()
        .set_parent(&ring)
        .set_crypto_key_id("tenant-a")
        .set_crypto_key(
            CryptoKey::new()
                .set_purpose(CryptoKeyPurpose::EncryptDecrypt)
                .set_version_template(
                    CryptoKeyVersionTemplate::new()
                        .set_protection_level(ProtectionLevel::Hsm)
                        .set_algorithm(CryptoKeyVersionAlgorithm::GoogleSymmetricEncryption),
                )
                .set_rotation_period(google_cloud_wkt::Duration::clamp(NINETY_DAYS, 0))
                .set_next_rotation_time(google_cloud_wkt::Timestamp::clamp(next_rotation, 0)),
        )
        .send()
        .await
        .unwrap();

    let name = format!("{ring}/cryptoKeys/tenant-a");
    assert_eq!(created.name, name);
    assert_eq!(created.purpose, CryptoKeyPurpose::EncryptDecrypt);
    let primary = created.primary.as_ref().expect("a new key has a primary");
    assert_eq!(primary.name, format!("{name}/cryptoKeyVersions/1"));
    assert_eq!(primary.state, CryptoKeyVersionState::Enabled);
    assert_eq!(primary.protection_level, ProtectionLevel::Hsm);
    assert_eq!(
        created.rotation_period().map(|p| p.seconds()),
        Some(NINETY_DAYS)
    );
    assert_eq!(
        created.next_rotation_time.map(|t| t.seconds()),
        Some(next_rotation)
    );
    assert!(created.create_time.is_some());

    let read = client
        .get_crypto_key()
        .set_name(&name)
        .send()
        .await
        .unwrap();
    assert_eq!(
        read, created,
        "GetCryptoKey returns what CreateCryptoKey did"
    );

    let info = fake.crypto_key(&name).expect("the fake holds the key");
    assert_eq!(info.protection_level, ProtectionLevel::Hsm);
    assert_eq!(info.purpose, CryptoKeyPurpose::EncryptDecrypt);
    assert_eq!(info.primary_version.as_deref(), Some("1"));
    assert_eq!(
        info.rotation_period,
        Some(Duration::from_secs(NINETY_DAYS as u64))
    );
    assert_eq!(
        info.next_rotation_time.map(|t| t.timestamp()),
        Some(next_rotation)
    );
    assert_eq!(fake.calls("createCryptoKey"), 1);
    assert_eq!(fake.calls("getCryptoKey"), 1);
}

#[tokio::test]
async fn key_in_missing_key_ring_is_not_found() {
    let (_fake, client, _ring) = setup().await;
    let err = client
        .create_crypto_key()
        .set_parent("projects/test-project/locations/global/keyRings/nobody-made-this")
        .set_crypto_key_id("k")
        .set_crypto_key(CryptoKey::new().set_purpose(CryptoKeyPurpose::EncryptDecrypt))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(Code::NotFound), "{err}");
    assert_eq!(err.http_status_code(), Some(404));
}

#[tokio::test]
async fn creating_the_same_key_twice_is_already_exists() {
    let (_fake, client, ring) = setup().await;
    create_key(&client, &ring, "dup").await;
    let err = client
        .create_crypto_key()
        .set_parent(&ring)
        .set_crypto_key_id("dup")
        .set_crypto_key(CryptoKey::new().set_purpose(CryptoKeyPurpose::EncryptDecrypt))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(Code::AlreadyExists), "{err}");
}

#[tokio::test]
async fn rotation_period_without_next_rotation_time_is_invalid() {
    let (_fake, client, ring) = setup().await;
    let err = client
        .create_crypto_key()
        .set_parent(&ring)
        .set_crypto_key_id("k")
        .set_crypto_key(
            CryptoKey::new()
                .set_purpose(CryptoKeyPurpose::EncryptDecrypt)
                .set_rotation_period(google_cloud_wkt::Duration::clamp(NINETY_DAYS, 0)),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(Code::InvalidArgument), "{err}");
}

#[tokio::test]
async fn unknown_key_is_not_found() {
    let (_fake, client, ring) = setup().await;
    let missing = format!("{ring}/cryptoKeys/missing");
    let err = client
        .get_crypto_key()
        .set_name(&missing)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(Code::NotFound), "{err}");
    let err = encrypt(&client, &missing, b"x", b"").await.unwrap_err();
    assert_eq!(code(&err), Some(Code::NotFound), "{err}");
}

#[tokio::test]
async fn round_trip_with_aad_returns_plaintext_and_correct_checksums() {
    let (_fake, client, ring) = setup().await;
    let key = create_key(&client, &ring, "k").await;
    let aad = b"tenant=a;path=prod/openai";

    let sealed = encrypt(&client, &key, b"a data key", aad).await.unwrap();
    assert_eq!(sealed.name, format!("{key}/cryptoKeyVersions/1"));
    assert!(sealed.verified_plaintext_crc32c);
    assert!(sealed.verified_additional_authenticated_data_crc32c);
    assert_eq!(sealed.ciphertext_crc32c, Some(crc(&sealed.ciphertext)));
    assert_eq!(sealed.protection_level, ProtectionLevel::Software);
    assert!(!sealed.ciphertext.windows(10).any(|w| w == b"a data key"));

    let opened = decrypt(&client, &key, &sealed.ciphertext, aad)
        .await
        .unwrap();
    assert_eq!(&opened.plaintext[..], b"a data key");
    assert_eq!(opened.plaintext_crc32c, Some(crc(b"a data key")));
    assert!(opened.used_primary);
    assert_eq!(opened.protection_level, ProtectionLevel::Software);
}

#[tokio::test]
async fn checksums_not_sent_are_reported_unverified() {
    let (_fake, client, ring) = setup().await;
    let key = create_key(&client, &ring, "k").await;
    let sealed = client
        .encrypt()
        .set_name(&key)
        .set_plaintext(b"x".to_vec())
        .set_additional_authenticated_data(b"aad".to_vec())
        .send()
        .await
        .unwrap();
    assert!(!sealed.verified_plaintext_crc32c);
    assert!(!sealed.verified_additional_authenticated_data_crc32c);
    assert_eq!(sealed.ciphertext_crc32c, Some(crc(&sealed.ciphertext)));
}

#[tokio::test]
async fn wrong_aad_fails_decryption() {
    let (_fake, client, ring) = setup().await;
    let key = create_key(&client, &ring, "k").await;
    let sealed = encrypt(&client, &key, b"dek", b"tenant=a").await.unwrap();
    let err = decrypt(&client, &key, &sealed.ciphertext, b"tenant=b")
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(Code::InvalidArgument), "{err}");
    assert!(err.status().unwrap().message.contains("Decryption failed"));
}

#[tokio::test]
async fn ciphertext_from_one_key_does_not_decrypt_under_another() {
    let (_fake, client, ring) = setup().await;
    let key_a = create_key(&client, &ring, "tenant-a").await;
    let key_b = create_key(&client, &ring, "tenant-b").await;
    let sealed = encrypt(&client, &key_a, b"dek of a", b"").await.unwrap();
    let err = decrypt(&client, &key_b, &sealed.ciphertext, b"")
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(Code::InvalidArgument), "{err}");
    assert!(err.status().unwrap().message.contains("Decryption failed"));
}

#[tokio::test]
async fn new_primary_encrypts_while_old_ciphertexts_still_decrypt() {
    let (fake, client, ring) = setup().await;
    let key = create_key(&client, &ring, "k").await;
    let old = encrypt(&client, &key, b"old dek", b"").await.unwrap();

    let v2 = client
        .create_crypto_key_version()
        .set_parent(&key)
        .set_crypto_key_version(CryptoKeyVersion::new())
        .send()
        .await
        .unwrap();
    assert_eq!(v2.name, format!("{key}/cryptoKeyVersions/2"));
    assert_eq!(v2.state, CryptoKeyVersionState::Enabled);
    let still_v1 = encrypt(&client, &key, b"x", b"").await.unwrap();
    assert!(
        still_v1.name.ends_with("/cryptoKeyVersions/1"),
        "a new version is not primary"
    );

    let updated = client
        .update_crypto_key_primary_version()
        .set_name(&key)
        .set_crypto_key_version_id("2")
        .send()
        .await
        .unwrap();
    assert_eq!(updated.primary.unwrap().name, v2.name);

    let new = encrypt(&client, &key, b"new dek", b"").await.unwrap();
    assert_eq!(new.name, v2.name);
    let opened_old = decrypt(&client, &key, &old.ciphertext, b"").await.unwrap();
    assert_eq!(&opened_old.plaintext[..], b"old dek");
    assert!(!opened_old.used_primary);
    let opened_new = decrypt(&client, &key, &new.ciphertext, b"").await.unwrap();
    assert!(opened_new.used_primary);
    assert_eq!(
        fake.crypto_key(&key).unwrap().primary_version.as_deref(),
        Some("2")
    );
}

#[tokio::test]
async fn primary_cannot_move_to_a_disabled_or_missing_version() {
    let (_fake, client, ring) = setup().await;
    let key = create_key(&client, &ring, "k").await;
    let v2 = client
        .create_crypto_key_version()
        .set_parent(&key)
        .set_crypto_key_version(CryptoKeyVersion::new())
        .send()
        .await
        .unwrap();
    client
        .update_crypto_key_version()
        .set_crypto_key_version(
            CryptoKeyVersion::new()
                .set_name(&v2.name)
                .set_state(CryptoKeyVersionState::Disabled),
        )
        .set_update_mask(google_cloud_wkt::FieldMask::default().set_paths(["state"]))
        .send()
        .await
        .unwrap();
    let err = client
        .update_crypto_key_primary_version()
        .set_name(&key)
        .set_crypto_key_version_id("2")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(Code::FailedPrecondition), "{err}");
    let err = client
        .update_crypto_key_primary_version()
        .set_name(&key)
        .set_crypto_key_version_id("9")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(Code::NotFound), "{err}");
}

#[tokio::test]
async fn disabled_version_refuses_its_ciphertexts_until_reenabled() {
    let (fake, client, ring) = setup().await;
    let key = create_key(&client, &ring, "k").await;
    let sealed = encrypt(&client, &key, b"dek", b"").await.unwrap();
    let v1 = format!("{key}/cryptoKeyVersions/1");
    let set_state = |state: CryptoKeyVersionState| {
        client
            .update_crypto_key_version()
            .set_crypto_key_version(CryptoKeyVersion::new().set_name(&v1).set_state(state))
            .set_update_mask(google_cloud_wkt::FieldMask::default().set_paths(["state"]))
            .send()
    };

    let disabled = set_state(CryptoKeyVersionState::Disabled).await.unwrap();
    assert_eq!(disabled.state, CryptoKeyVersionState::Disabled);
    assert_eq!(
        fake.crypto_key(&key).unwrap().versions[0].state,
        CryptoKeyVersionState::Disabled
    );
    let err = decrypt(&client, &key, &sealed.ciphertext, b"")
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(Code::FailedPrecondition), "{err}");
    let err = encrypt(&client, &key, b"x", b"").await.unwrap_err();
    assert_eq!(code(&err), Some(Code::FailedPrecondition), "{err}");

    set_state(CryptoKeyVersionState::Enabled).await.unwrap();
    let read = client
        .get_crypto_key_version()
        .set_name(&v1)
        .send()
        .await
        .unwrap();
    assert_eq!(read.state, CryptoKeyVersionState::Enabled);
    let opened = decrypt(&client, &key, &sealed.ciphertext, b"")
        .await
        .unwrap();
    assert_eq!(&opened.plaintext[..], b"dek");
}

#[tokio::test]
async fn scheduled_rotation_makes_a_new_primary_and_advances_the_schedule() {
    let (fake, client, ring) = setup().await;
    let next_rotation = chrono::Utc::now().timestamp() + 3600;
    let key = client
        .create_crypto_key()
        .set_parent(&ring)
        .set_crypto_key_id("k")
        .set_crypto_key(
            CryptoKey::new()
                .set_purpose(CryptoKeyPurpose::EncryptDecrypt)
                .set_rotation_period(google_cloud_wkt::Duration::clamp(NINETY_DAYS, 0))
                .set_next_rotation_time(google_cloud_wkt::Timestamp::clamp(next_rotation, 0)),
        )
        .send()
        .await
        .unwrap()
        .name;
    let before = encrypt(&client, &key, b"dek", b"").await.unwrap();

    assert_eq!(fake.rotate(&key), "2");

    let read = client.get_crypto_key().set_name(&key).send().await.unwrap();
    assert_eq!(
        read.primary.unwrap().name,
        format!("{key}/cryptoKeyVersions/2")
    );
    assert_eq!(
        read.next_rotation_time.map(|t| t.seconds()),
        Some(next_rotation + NINETY_DAYS)
    );
    let after = encrypt(&client, &key, b"dek", b"").await.unwrap();
    assert!(after.name.ends_with("/cryptoKeyVersions/2"));
    let opened = decrypt(&client, &key, &before.ciphertext, b"")
        .await
        .unwrap();
    assert_eq!(&opened.plaintext[..], b"dek");
}

#[tokio::test]
async fn unavailable_encrypt_is_not_retried_and_service_resumes() {
    let (fake, client, ring) = setup().await;
    let key = create_key(&client, &ring, "k").await;
    fake.set_fault(Fault::Unavailable { times: 1 });
    let err = encrypt(&client, &key, b"dek", b"").await.unwrap_err();
    assert_eq!(code(&err), Some(Code::Unavailable), "{err}");
    assert_eq!(err.http_status_code(), Some(503));
    assert_eq!(fake.calls("encrypt"), 1, "POST is not idempotent: no retry");
    encrypt(&client, &key, b"dek", b"").await.unwrap();
    assert_eq!(fake.calls("encrypt"), 2);
}

#[tokio::test]
async fn unavailable_get_is_retried_by_the_client() {
    let (fake, client, ring) = setup().await;
    let key = create_key(&client, &ring, "k").await;
    fake.set_fault(Fault::Unavailable { times: 2 });
    let quick = ExponentialBackoffBuilder::new()
        .with_initial_delay(Duration::from_millis(1))
        .with_maximum_delay(Duration::from_millis(5))
        .build()
        .unwrap();
    let read = client
        .get_crypto_key()
        .set_name(&key)
        .with_backoff_policy(quick)
        .send()
        .await
        .unwrap();
    assert_eq!(read.name, key);
    assert_eq!(fake.calls("getCryptoKey"), 3, "two 503s, then success");
}

#[tokio::test]
async fn deadline_exceeded_is_reported_and_not_retried() {
    let (fake, client, ring) = setup().await;
    let key = create_key(&client, &ring, "k").await;
    fake.set_fault(Fault::DeadlineExceeded { times: 1 });
    let err = client
        .get_crypto_key()
        .set_name(&key)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(Code::DeadlineExceeded), "{err}");
    assert_eq!(fake.calls("getCryptoKey"), 1);
}

#[tokio::test]
async fn permission_denied_applies_to_that_method_only() {
    let (fake, client, ring) = setup().await;
    let key = create_key(&client, &ring, "k").await;
    fake.set_fault(Fault::PermissionDenied { method: "decrypt" });
    let sealed = encrypt(&client, &key, b"dek", b"").await.unwrap();
    let err = decrypt(&client, &key, &sealed.ciphertext, b"")
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(Code::PermissionDenied), "{err}");
    assert!(err
        .status()
        .unwrap()
        .message
        .contains("cloudkms.cryptoKeyVersions.useToDecrypt"));
    fake.clear_faults();
    decrypt(&client, &key, &sealed.ciphertext, b"")
        .await
        .unwrap();
}

#[tokio::test]
async fn corruption_in_transit_is_caught_only_when_a_checksum_is_sent() {
    let (fake, client, ring) = setup().await;
    let key = create_key(&client, &ring, "k").await;
    let sealed = encrypt(&client, &key, b"dek", b"").await.unwrap();
    fake.set_fault(Fault::CorruptRequestInTransit);

    let err = encrypt(&client, &key, b"dek", b"").await.unwrap_err();
    assert_eq!(code(&err), Some(Code::InvalidArgument), "{err}");
    assert!(err.status().unwrap().message.contains("checksum"), "{err}");
    let err = decrypt(&client, &key, &sealed.ciphertext, b"")
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(Code::InvalidArgument), "{err}");
    assert!(err.status().unwrap().message.contains("checksum"), "{err}");

    // Without a checksum the damaged plaintext is encrypted as if it were what was sent.
    let unchecked = client
        .encrypt()
        .set_name(&key)
        .set_plaintext(b"dek".to_vec())
        .send()
        .await
        .unwrap();
    fake.clear_faults();
    let opened = decrypt(&client, &key, &unchecked.ciphertext, b"")
        .await
        .unwrap();
    assert_ne!(&opened.plaintext[..], b"dek");
}

#[tokio::test]
async fn dropped_verified_flags_are_visible_to_the_client() {
    let (fake, client, ring) = setup().await;
    let key = create_key(&client, &ring, "k").await;
    fake.set_fault(Fault::DropVerifiedFlags);
    let sealed = encrypt(&client, &key, b"dek", b"aad").await.unwrap();
    assert!(!sealed.verified_plaintext_crc32c);
    assert!(!sealed.verified_additional_authenticated_data_crc32c);
}

#[tokio::test]
async fn corrupted_response_does_not_match_its_checksum() {
    let (fake, client, ring) = setup().await;
    let key = create_key(&client, &ring, "k").await;
    let good = encrypt(&client, &key, b"dek", b"").await.unwrap();
    fake.set_fault(Fault::CorruptResponse);
    let sealed = encrypt(&client, &key, b"dek", b"").await.unwrap();
    assert_ne!(sealed.ciphertext_crc32c, Some(crc(&sealed.ciphertext)));
    let opened = decrypt(&client, &key, &good.ciphertext, b"").await.unwrap();
    assert_ne!(opened.plaintext_crc32c, Some(crc(&opened.plaintext)));
}

#[tokio::test]
async fn wrong_response_checksum_is_visible_to_the_client() {
    let (fake, client, ring) = setup().await;
    let key = create_key(&client, &ring, "k").await;
    let good = encrypt(&client, &key, b"dek", b"").await.unwrap();
    fake.set_fault(Fault::WrongResponseCrc);
    let sealed = encrypt(&client, &key, b"dek", b"").await.unwrap();
    assert_ne!(sealed.ciphertext_crc32c, Some(crc(&sealed.ciphertext)));
    let opened = decrypt(&client, &key, &good.ciphertext, b"").await.unwrap();
    assert_eq!(&opened.plaintext[..], b"dek", "the data itself is intact");
    assert_ne!(opened.plaintext_crc32c, Some(crc(&opened.plaintext)));
}

#[tokio::test]
async fn wrong_key_name_names_a_version_of_another_key() {
    let (fake, client, ring) = setup().await;
    let key = create_key(&client, &ring, "k").await;
    fake.set_fault(Fault::WrongKeyName);
    let sealed = encrypt(&client, &key, b"dek", b"").await.unwrap();
    assert!(
        sealed.name.contains("/cryptoKeyVersions/"),
        "{}",
        sealed.name
    );
    assert!(
        !sealed.name.starts_with(&format!("{key}/")),
        "{}",
        sealed.name
    );
}

#[tokio::test]
async fn latency_trips_the_client_attempt_timeout() {
    let (fake, client, ring) = setup().await;
    let key = create_key(&client, &ring, "k").await;
    fake.set_fault(Fault::Latency(Duration::from_secs(30)));
    let err = client
        .encrypt()
        .set_name(&key)
        .set_plaintext(b"dek".to_vec())
        .with_attempt_timeout(Duration::from_millis(200))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
}

/// The wire format a hand-written client would need: checked with plain HTTP, no client crate.
#[tokio::test]
async fn wire_format_matches_cloud_kms_json() {
    let fake = FakeGcpKms::start().await;
    let ring = fake.add_key_ring(RING.0, RING.1, RING.2);
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}/v1/{path}", fake.endpoint());
    let int_enums = [("$alt", "json;enum-encoding=int")];

    let created: Value = http
        .post(url(&format!("{ring}/cryptoKeys")))
        .query(&[("cryptoKeyId", "wire")])
        .query(&int_enums)
        .json(&json!({
            "purpose": 1,
            "versionTemplate": {"protectionLevel": "HSM"},
            "rotationPeriod": "7776000s",
            "nextRotationTime": "2030-01-01T00:00:00Z",
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(created["purpose"], json!(1));
    assert_eq!(created["versionTemplate"]["protectionLevel"], json!(2));
    assert_eq!(created["primary"]["state"], json!(1));
    assert_eq!(created["rotationPeriod"], json!("7776000s"));
    assert_eq!(created["nextRotationTime"], json!("2030-01-01T00:00:00Z"));
    let key = created["name"].as_str().unwrap().to_string();

    let named: Value = http
        .get(url(&key))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        named["purpose"],
        json!("ENCRYPT_DECRYPT"),
        "names without $alt"
    );
    assert_eq!(named["primary"]["state"], json!("ENABLED"));

    let sealed: Value = http
        .post(url(&format!("{key}:encrypt")))
        .query(&int_enums)
        .json(&json!({"plaintext": "ZGVr", "plaintext_crc32c": crc(b"dek").to_string()}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        sealed["ciphertextCrc32c"].is_string(),
        "int64 is a JSON string"
    );
    assert_eq!(sealed["verifiedPlaintextCrc32c"], json!(true));
    assert!(sealed
        .get("verifiedAdditionalAuthenticatedDataCrc32c")
        .is_none());

    let rejected = http
        .post(url(&format!("{key}:encrypt")))
        .json(&json!({"plaintext": "ZGVr", "bogus": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(rejected.status(), 400);
    let body: Value = rejected.json().await.unwrap();
    assert_eq!(body["error"]["status"], json!("INVALID_ARGUMENT"));
    assert_eq!(body["error"]["code"], json!(400));

    let missing = http
        .get(url(&format!("{ring}/cryptoKeys/nope")))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["status"], json!("NOT_FOUND"));
    assert_eq!(fake.calls("getCryptoKey"), 2);
}
