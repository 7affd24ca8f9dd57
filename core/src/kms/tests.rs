//! Behaviour of the local keyring KMS: the trait contract, the file format's secrecy, and
//! sharing one file between processes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};

use tempfile::TempDir;

use super::local::{LocalKms, MasterKey};
use super::{Kms, KmsError, WrappedDek};
use crate::envelope::{open, seal, Dek, SecretAad};
use crate::ids::TenantId;
use crate::secret::SecretBytes;

fn keyring_path() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring.json");
    (dir, path)
}

fn copy_of(master: &MasterKey) -> MasterKey {
    MasterKey::from_base64(master.to_base64().expose()).unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn aad(tenant: TenantId) -> SecretAad<'static> {
    SecretAad {
        tenant,
        path: "ci/token",
        version: 1,
    }
}

fn value() -> SecretBytes {
    SecretBytes::new(b"ghp_plaintext_value".to_vec())
}

#[tokio::test]
async fn wrong_master_key_is_refused_and_leaves_the_file_untouched() {
    let (_dir, path) = keyring_path();
    let kms = LocalKms::open_or_create(&path, MasterKey::generate()).unwrap();
    kms.create_tenant_key(TenantId::new()).await.unwrap();
    let before = std::fs::read(&path).unwrap();

    let err = LocalKms::open_or_create(&path, MasterKey::generate()).unwrap_err();
    assert_eq!(err, KmsError::WrongMasterKey);
    let err = LocalKms::open(&path, MasterKey::generate()).unwrap_err();
    assert_eq!(err, KmsError::WrongMasterKey);
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[tokio::test]
async fn create_tenant_key_is_idempotent() {
    let (_dir, path) = keyring_path();
    let kms = LocalKms::open_or_create(&path, MasterKey::generate()).unwrap();
    let tenant = TenantId::new();
    let first = kms.create_tenant_key(tenant).await.unwrap();
    let again = kms.create_tenant_key(tenant).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(first.key_name, format!("tenant-{tenant}"));
    assert_eq!(first.key_version, "1");
    assert_eq!(kms.primary_key(tenant).await.unwrap(), first);
    assert_eq!(kms.tenants(), vec![(tenant, first)]);
}

#[tokio::test]
async fn unknown_tenants_are_reported_as_such() {
    let (_dir, path) = keyring_path();
    let kms = LocalKms::open_or_create(&path, MasterKey::generate()).unwrap();
    let tenant = TenantId::new();
    let expected = KmsError::UnknownTenant(tenant);
    assert_eq!(kms.primary_key(tenant).await.unwrap_err(), expected);
    assert_eq!(kms.rotate(tenant).await.unwrap_err(), expected);
    let dek = Dek::generate();
    assert_eq!(
        kms.wrap_dek(tenant, &dek, b"aad").await.unwrap_err(),
        expected
    );
}

#[tokio::test]
async fn rotate_adds_a_primary_version_and_old_envelopes_still_open() {
    let (_dir, path) = keyring_path();
    let master = MasterKey::generate();
    let kms = LocalKms::open_or_create(&path, copy_of(&master)).unwrap();
    let tenant = TenantId::new();
    kms.create_tenant_key(tenant).await.unwrap();
    let before = seal(&kms, &aad(tenant), &value()).await.unwrap();

    let rotated = kms.rotate(tenant).await.unwrap();
    assert_eq!(rotated.key_version, "2");
    assert_eq!(kms.primary_key(tenant).await.unwrap(), rotated);
    let after = seal(&kms, &aad(tenant), &value()).await.unwrap();
    assert_eq!(after.key_version, "2");

    assert_eq!(open(&kms, &aad(tenant), &before).await.unwrap(), value());
    assert_eq!(open(&kms, &aad(tenant), &after).await.unwrap(), value());
    // A fresh process reading the file sees both versions too.
    let reopened = LocalKms::open(&path, master).unwrap();
    assert_eq!(
        open(&reopened, &aad(tenant), &before).await.unwrap(),
        value()
    );
}

#[tokio::test]
async fn keyring_and_lock_files_are_mode_0600() {
    let (_dir, path) = keyring_path();
    let kms = LocalKms::open_or_create(&path, MasterKey::generate()).unwrap();
    assert_eq!(mode(&path), 0o600);
    let tenant = TenantId::new();
    kms.create_tenant_key(tenant).await.unwrap();
    kms.rotate(tenant).await.unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&path.with_file_name("keyring.json.lock")), 0o600);
}

#[tokio::test]
async fn open_requires_an_existing_file_and_open_or_create_makes_one() {
    let (_dir, path) = keyring_path();
    let err = LocalKms::open(&path, MasterKey::generate()).unwrap_err();
    assert!(matches!(err, KmsError::Io(_)), "{err:?}");
    assert!(!path.exists());
    let kms = LocalKms::open_or_create(&path, MasterKey::generate()).unwrap();
    assert!(path.exists());
    assert!(kms.tenants().is_empty());
}

#[tokio::test]
async fn a_second_instance_reloads_to_see_new_tenants_and_versions() {
    let (_dir, path) = keyring_path();
    let master = MasterKey::generate();
    let writer = LocalKms::open_or_create(&path, copy_of(&master)).unwrap();
    let reader = LocalKms::open(&path, master).unwrap();

    let tenant = TenantId::new();
    writer.create_tenant_key(tenant).await.unwrap();
    let v1 = seal(&writer, &aad(tenant), &value()).await.unwrap();
    assert_eq!(open(&reader, &aad(tenant), &v1).await.unwrap(), value());

    writer.rotate(tenant).await.unwrap();
    let v2 = seal(&writer, &aad(tenant), &value()).await.unwrap();
    assert_eq!(v2.key_version, "2");
    assert_eq!(open(&reader, &aad(tenant), &v2).await.unwrap(), value());
    assert_eq!(reader.tenants(), writer.tenants());
}

#[test]
fn concurrent_writers_on_one_file_lose_no_tenant() {
    const PER_THREAD: usize = 8;
    let (_dir, path) = keyring_path();
    let master = MasterKey::generate();
    let first = LocalKms::open_or_create(&path, copy_of(&master)).unwrap();
    let second = LocalKms::open_or_create(&path, copy_of(&master)).unwrap();
    let barrier = Arc::new(Barrier::new(2));

    let handles: Vec<_> = [first, second]
        .into_iter()
        .map(|kms| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || create_tenants(&kms, &barrier, PER_THREAD))
        })
        .collect();
    let mut created: Vec<TenantId> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    created.sort();

    let reopened = LocalKms::open(&path, master).unwrap();
    let on_disk: Vec<TenantId> = reopened.tenants().into_iter().map(|(t, _)| t).collect();
    assert_eq!(on_disk.len(), 2 * PER_THREAD);
    assert_eq!(on_disk, created);
}

fn create_tenants(kms: &LocalKms, barrier: &Barrier, count: usize) -> Vec<TenantId> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    barrier.wait();
    (0..count)
        .map(|_| {
            let tenant = TenantId::new();
            runtime.block_on(kms.create_tenant_key(tenant)).unwrap();
            tenant
        })
        .collect()
}

#[tokio::test]
async fn key_material_never_appears_in_debug_output() {
    let (_dir, path) = keyring_path();
    let master = MasterKey::generate();
    let master_b64 = master.to_base64().expose().to_owned();
    assert!(!format!("{master:?}").contains(&master_b64));

    let kms = LocalKms::open_or_create(&path, master).unwrap();
    let tenant = TenantId::new();
    kms.create_tenant_key(tenant).await.unwrap();
    let kek = kms.kek_base64_for_test(tenant, 1).unwrap();
    let shown = format!("{kms:?}");
    assert!(
        !shown.contains(&kek) && !shown.contains(&master_b64),
        "{shown}"
    );

    let dek = Dek::generate();
    let dek_hex = hex::encode(dek.expose());
    let shown = format!("{dek:?}");
    assert!(!shown.contains(&dek_hex) && !shown.contains(&format!("{}", dek.expose()[0])));
}

#[tokio::test]
async fn keyring_file_holds_no_readable_keys() {
    let (_dir, path) = keyring_path();
    let kms = LocalKms::open_or_create(&path, MasterKey::generate()).unwrap();
    let tenant = TenantId::new();
    kms.create_tenant_key(tenant).await.unwrap();
    kms.rotate(tenant).await.unwrap();
    let file = std::fs::read_to_string(&path).unwrap();
    assert!(file.contains("agent-secret-store-keyring/v1"));
    assert!(!file.contains("versions") && !file.contains(&tenant.to_string()));
    for version in [1, 2] {
        let kek = kms.kek_base64_for_test(tenant, version).unwrap();
        assert!(!file.contains(&kek));
    }
}

#[test]
fn master_key_parsing_is_strict_and_round_trips() {
    let key = MasterKey::generate();
    let text = format!("  {}\n", key.to_base64().expose());
    let parsed = MasterKey::from_base64(&text).unwrap();
    assert_eq!(parsed.to_base64(), key.to_base64());

    let short = base64_of(&[1u8; 31]);
    let err = MasterKey::from_base64(&short).unwrap_err();
    assert!(err.to_string().contains("exactly 32 bytes"), "{err}");
    let err = MasterKey::from_base64("not base64!").unwrap_err();
    assert!(err.to_string().contains("base64"), "{err}");
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test]
async fn unwrap_refuses_foreign_keys_and_noncanonical_versions() {
    let (_dir, path) = keyring_path();
    let kms = LocalKms::open_or_create(&path, MasterKey::generate()).unwrap();
    let (tenant, other) = (TenantId::new(), TenantId::new());
    kms.create_tenant_key(tenant).await.unwrap();
    kms.create_tenant_key(other).await.unwrap();
    let wrapped = kms
        .wrap_dek(tenant, &Dek::generate(), b"aad")
        .await
        .unwrap();

    let err = kms.unwrap_dek(other, &wrapped, b"aad").await.unwrap_err();
    assert_eq!(err, KmsError::WrongKey);
    let padded = WrappedDek {
        key_version: "01".into(),
        ..wrapped.clone()
    };
    let err = kms.unwrap_dek(tenant, &padded, b"aad").await.unwrap_err();
    assert!(matches!(err, KmsError::UnknownKeyVersion { .. }), "{err:?}");
    let err = kms
        .unwrap_dek(tenant, &wrapped, b"other aad")
        .await
        .unwrap_err();
    assert_eq!(err, KmsError::Unwrap);
}

#[test]
fn error_codes_are_stable() {
    let codes = [
        (
            KmsError::UnknownTenant(TenantId::new()),
            "kms_unknown_tenant",
        ),
        (KmsError::WrongKey, "kms_wrong_key"),
        (KmsError::Unwrap, "kms_unwrap_failed"),
        (KmsError::WrongMasterKey, "kms_wrong_master_key"),
        (KmsError::Unavailable("timeout".into()), "kms_unavailable"),
        (KmsError::Io("disk".into()), "kms_error"),
        (KmsError::Corrupt("json".into()), "kms_error"),
        (KmsError::Integrity("crc".into()), "kms_integrity_failed"),
    ];
    for (err, code) in codes {
        assert_eq!(err.code(), code);
    }
}

#[test]
fn faults_classify_what_the_caller_can_do() {
    use super::KmsFault;
    let cases = [
        (KmsError::Unavailable("down".into()), KmsFault::Unavailable),
        (KmsError::Integrity("crc".into()), KmsFault::Integrity),
        (KmsError::Io("disk".into()), KmsFault::Unavailable),
        (KmsError::WrongKey, KmsFault::Other),
        (KmsError::Remote("odd".into()), KmsFault::Other),
    ];
    for (err, fault) in cases {
        assert_eq!(err.fault(), fault, "{err:?}");
    }
    // The integrity code is the API's: one fault, one code, in logs, CLI output and audit.
    assert_eq!(
        KmsError::Integrity("crc".into()).code(),
        crate::api::ErrorCode::KmsIntegrityFailed.as_str()
    );
}
