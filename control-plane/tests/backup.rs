//! Backups on both backends (docs/operations.md "Backups"): a backup taken while secrets and
//! audit events are being written restores into an empty database as a consistent state (every
//! table's rows match the manifest, each tenant's audit chain verifies from genesis to the
//! recorded head, a secret decrypts with the keyring); a restore refuses a non-empty target;
//! a backup with one row edited, or with a rewritten manifest, fails verification; the
//! scheduler backs up, prunes only its own expired files, and raises `alert.raised` when
//! backups keep failing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agent_secret_control_plane::audit::{Actor, AuditDraft, AuditEventType};
use agent_secret_control_plane::backup::schedule::{spawn, Schedule};
use agent_secret_control_plane::backup::{
    self, read_archive, restore, verify_restored, write_archive, BackupError, BackupOptions,
    Manifest, RestoreOptions, Source,
};
use agent_secret_control_plane::config::DatabaseUrl;
use agent_secret_control_plane::db::Db;
use agent_secret_control_plane::service::principal::OperatorPrincipal;
use agent_secret_control_plane::service::{secrets, tenants, App, Policy, RequestContext};
use agent_secret_control_plane::store::sql::SqlStore;
use agent_secret_control_plane::store::{AuditFilter, Store};
use agent_secret_core::api::{PutSecretRequest, Role};
use agent_secret_core::credential::Pepper;
use agent_secret_core::ids::TenantId;
use agent_secret_core::kms::local::{LocalKms, MasterKey};
use agent_secret_core::kms::Kms;
use agent_secret_testkit::eventually;

/// One installation's key material, shared by the source and the restored database.
struct Keys {
    _dir: tempfile::TempDir,
    kms: Arc<dyn Kms>,
    pepper: Arc<Pepper>,
}

fn keys() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let kms =
        LocalKms::open_or_create(dir.path().join("keyring.json"), MasterKey::generate()).unwrap();
    Keys {
        _dir: dir,
        kms: Arc::new(kms),
        pepper: Arc::new(Pepper::generate()),
    }
}

/// Unencrypted backups made now, MACed with `keys`' pepper.
fn plain(keys: &Keys) -> BackupOptions<'_> {
    BackupOptions {
        recipients: &[],
        pepper: &keys.pepper,
        now: chrono::Utc::now(),
    }
}

/// PostgreSQL through `url`, with the client tools on the PATH.
fn postgres(url: &str) -> Source {
    Source::Postgres {
        url: DatabaseUrl::new(url),
        pg_dump: "pg_dump".into(),
        pg_restore: "pg_restore".into(),
    }
}

async fn app_on(url: &str, keys: &Keys) -> Arc<App> {
    let db = Db::connect(url).await.unwrap();
    Arc::new(App::new(
        Arc::new(SqlStore::new(db)),
        keys.kms.clone(),
        keys.pepper.clone(),
        Policy::default(),
    ))
}

async fn put(app: &App, admin: OperatorPrincipal, path: &str, value: &str) {
    let request = PutSecretRequest {
        value: value.into(),
        sensitivity: None,
        allowed_hosts: vec!["api.example.com".into()],
    };
    secrets::put(app, admin, path, request, &RequestContext::default())
        .await
        .unwrap();
}

async fn tenant_with_secrets(app: &App) -> (TenantId, OperatorPrincipal) {
    let created = tenants::create_tenant(app, &format!("t-{}", uuid::Uuid::new_v4()))
        .await
        .unwrap();
    let admin = OperatorPrincipal {
        tenant: created.tenant_id,
        id: created.admin_operator_id,
        role: Role::Admin,
    };
    for i in 0..5 {
        put(
            app,
            admin,
            &format!("prod/svc{i}/key"),
            &format!("value-{i}"),
        )
        .await;
    }
    (created.tenant_id, admin)
}

async fn audit_count(store: &dyn Store, tenant: TenantId) -> usize {
    let filter = AuditFilter {
        limit: Some(100_000),
        ..AuditFilter::default()
    };
    store.list_audit(tenant, &filter).await.unwrap().len()
}

/// Writes secrets and audit events until stopped; returns how many rounds it made.
fn writer(
    app: Arc<App>,
    tenant: TenantId,
    admin: OperatorPrincipal,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut rounds = 0;
        while !stop.load(Ordering::Relaxed) {
            put(&app, admin, &format!("live/{rounds}"), "in-flight").await;
            let draft = AuditDraft::new(AuditEventType::SecretRead, Actor::system())
                .reason(format!("round {rounds}"));
            app.store.append_audit(tenant, draft).await.unwrap();
            rounds += 1;
        }
        rounds
    })
}

/// Backs up `source` while a writer runs, restores into `target` (empty), and checks the
/// result the way `restore` does, then as the service sees it.
async fn backup_in_flight_restores_consistently(
    app: Arc<App>,
    source: Source,
    target: Source,
    target_service_url: &str,
    keys: &Keys,
) {
    let (tenant, admin) = tenant_with_secrets(&app).await;
    let before = audit_count(app.store.as_ref(), tenant).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writing = writer(app.clone(), tenant, admin, stop.clone());
    // Let the writer get going, then back up under it.
    eventually(
        "the writer to have written",
        Duration::from_secs(20),
        async || audit_count(app.store.as_ref(), tenant).await > before + 3,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let options = plain(keys);
    let report = backup::create(&source, dir.path(), &options).await.unwrap();
    // Still writing after the backup: the backup caught it mid-stream.
    eventually(
        "a write after the backup",
        Duration::from_secs(20),
        async || {
            let head = report
                .manifest
                .audit_heads
                .iter()
                .find(|h| h.tenant_id == tenant.to_string());
            let seq = head.map(|h| h.seq).unwrap_or(0);
            audit_count(app.store.as_ref(), tenant).await as i64 > seq
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let rounds = writing.await.unwrap();
    assert!(rounds > 0);
    let recorded = report
        .manifest
        .audit_heads
        .iter()
        .find(|h| h.tenant_id == tenant.to_string())
        .unwrap()
        .seq;
    assert!(
        recorded as usize > before,
        "the backup holds in-flight writes"
    );

    let restored = restore(
        &report.path,
        &target,
        &RestoreOptions {
            identities: &[],
            force: false,
            pepper: &keys.pepper,
        },
    )
    .await
    .unwrap();
    assert_eq!(restored.manifest, report.manifest);

    // The service on the restored database: chains intact to the recorded heads, a secret
    // decrypts with the same keyring.
    let restored_app = app_on(target_service_url, keys).await;
    let checked = verify_restored(&restored_app, &target, &restored.manifest)
        .await
        .unwrap();
    let mine = checked
        .tenants
        .iter()
        .find(|t| t.tenant_id == tenant.to_string())
        .unwrap();
    assert_eq!(mine.audit_events, recorded);
    assert!(mine.sample_secret.is_some());
    assert_eq!(
        audit_count(restored_app.store.as_ref(), tenant).await as i64,
        recorded
    );

    // A second restore into the now non-empty database is refused and changes nothing.
    let again = restore(
        &report.path,
        &target,
        &RestoreOptions {
            identities: &[],
            force: false,
            pepper: &keys.pepper,
        },
    )
    .await;
    assert!(matches!(again, Err(BackupError::NotEmpty(_))), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_backup_during_writes_restores_a_consistent_state() {
    let keys = keys();
    let (db, _) = support::sqlite_test_db().await;
    let app = app_on(&db.url, &keys).await;
    let target_dir = tempfile::tempdir().unwrap();
    let target_path = target_dir.path().join("restored.db");
    backup_in_flight_restores_consistently(
        app,
        Source::Sqlite {
            path: db.path.clone(),
        },
        Source::Sqlite {
            path: target_path.clone(),
        },
        &format!("sqlite://{}", target_path.display()),
        &keys,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_backup_during_writes_restores_a_consistent_state() {
    let Some(db) = support::postgres_test_db().await else {
        return;
    };
    // An empty database (not migrated): what a restore goes into.
    let Some(target) = agent_secret_testkit::pg::test_database().await else {
        return;
    };
    let keys = keys();
    let app = app_on(&db.service_url, &keys).await;
    backup_in_flight_restores_consistently(
        app,
        postgres(&db.admin_url),
        postgres(&target.admin_url),
        &target.service_url,
        &keys,
    )
    .await;
}

#[tokio::test]
async fn a_postgres_backup_needs_a_role_that_sees_every_row() {
    let Some(db) = support::postgres_test_db().await else {
        return;
    };
    let keys = keys();
    let app = app_on(&db.service_url, &keys).await;
    tenant_with_secrets(&app).await;
    let dir = tempfile::tempdir().unwrap();
    let options = plain(&keys);
    // Even the tables' owner is confined by row-level security (FORCE): a backup through it
    // would hold no tenant's rows, so it fails instead of writing one.
    let source = postgres(&db.owner_url);
    let refused = backup::create(&source, dir.path(), &options).await;
    let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("row-level security"), "{message}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "nothing is left behind: {left:?}");
}

/// Rewrites a backup with `edit` applied to its database file and its manifest made to state
/// the new file's size and hash, as a careful forger would; the manifest is re-sealed with
/// `pepper` when given (an insider holding it), else keeps its old MAC.
async fn tampered_copy(original: &Path, out: &Path, edit: &str, pepper: Option<&Pepper>) {
    let work = tempfile::tempdir().unwrap();
    let contents = read_archive(original, &[], work.path(), |_, _| Ok(u64::MAX)).unwrap();
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", contents.database.path.display()))
        .await
        .unwrap();
    let changed = sqlx::query(sqlx::AssertSqlSafe(edit.to_owned()))
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(changed.rows_affected(), 1, "{edit}");
    pool.close().await;
    let mut manifest: Manifest = serde_json::from_slice(&contents.manifest).unwrap();
    let bytes = std::fs::read(&contents.database.path).unwrap();
    manifest.database_bytes = bytes.len() as u64;
    manifest.database_sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    let (forged, mac) = match pepper {
        Some(pepper) => manifest.seal(pepper).unwrap(),
        None => (serde_json::to_vec_pretty(&manifest).unwrap(), contents.mac),
    };
    write_archive(out, &forged, &mac, &contents.database, &[]).unwrap();
}

#[tokio::test]
async fn a_tampered_backup_fails_verification() {
    let keys = keys();
    let (db, _) = support::sqlite_test_db().await;
    let app = app_on(&db.url, &keys).await;
    tenant_with_secrets(&app).await;
    let dir = tempfile::tempdir().unwrap();
    let options = plain(&keys);
    let source = Source::Sqlite {
        path: db.path.clone(),
    };
    let report = backup::create(&source, dir.path(), &options).await.unwrap();
    let restore_into = |path: &Path| Source::Sqlite {
        path: path.to_owned(),
    };
    let opts = RestoreOptions {
        identities: &[],
        force: false,
        pepper: &keys.pepper,
    };

    const EDIT: &str =
        "UPDATE secrets SET allowed_hosts = '[\"evil.example\"]' WHERE path = 'prod/svc1/key'";
    // One row edited, manifest rewritten to match the file: the MAC gives it away.
    let forged = dir.path().join("forged.tar.zst");
    tampered_copy(&report.path, &forged, EDIT, None).await;
    let target = dir.path().join("t1.db");
    let refused = restore(&forged, &restore_into(&target), &opts).await;
    assert!(
        matches!(refused, Err(BackupError::ManifestMac)),
        "{refused:?}"
    );
    assert!(!target.exists(), "nothing was restored");

    // One row edited, and even a manifest re-sealed with the real pepper for the new file
    // (an insider with the pepper): the table's row digest gives it away.
    let edited = dir.path().join("edited.tar.zst");
    tampered_copy(&report.path, &edited, EDIT, Some(&keys.pepper)).await;
    let target = dir.path().join("t2.db");
    match restore(&edited, &restore_into(&target), &opts).await {
        Err(BackupError::Verification(problems)) => {
            assert!(
                problems.iter().any(|p| p.contains("table secrets")),
                "{problems:?}"
            );
            assert_eq!(
                problems.len(),
                1,
                "only the edited table differs: {problems:?}"
            );
        }
        other => panic!("expected a verification failure, got {other:?}"),
    }
    assert!(
        !target.exists(),
        "a database that failed verification is not put in place"
    );

    // The untouched backup restores.
    let target = dir.path().join("t3.db");
    restore(&report.path, &restore_into(&target), &opts)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_encrypted_backup_reveals_nothing_and_restores_with_its_identity() {
    let keys = keys();
    let (db, _) = support::sqlite_test_db().await;
    let app = app_on(&db.url, &keys).await;
    let (tenant, _) = tenant_with_secrets(&app).await;
    let identity = age::x25519::Identity::generate();
    let dir = tempfile::tempdir().unwrap();
    let options = BackupOptions {
        recipients: &[identity.to_public()],
        pepper: &keys.pepper,
        now: chrono::Utc::now(),
    };
    let source = Source::Sqlite {
        path: db.path.clone(),
    };
    let report = backup::create(&source, dir.path(), &options).await.unwrap();
    assert!(report.path.to_string_lossy().ends_with(".tar.zst.age"));
    let bytes = std::fs::read(&report.path).unwrap();
    for needle in [
        tenant.to_string().as_bytes(),
        b"prod/svc1/key",
        b"audit_events",
    ] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "{} is readable in an encrypted backup",
            String::from_utf8_lossy(needle)
        );
    }
    let target = dir.path().join("restored.db");
    let opts = |ids| RestoreOptions {
        identities: ids,
        force: false,
        pepper: &keys.pepper,
    };
    let target_source = Source::Sqlite {
        path: target.clone(),
    };
    assert!(matches!(
        restore(&report.path, &target_source, &opts(&[])).await,
        Err(BackupError::NeedsIdentity)
    ));
    let restored = restore(
        &report.path,
        &target_source,
        &opts(std::slice::from_ref(&identity)),
    )
    .await
    .unwrap();
    assert!(restored.encrypted);
}

async fn alerts(store: &dyn Store, tenant: TenantId) -> Vec<String> {
    let filter = AuditFilter {
        limit: Some(10_000),
        ..AuditFilter::default()
    };
    store
        .list_audit(tenant, &filter)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.draft.event_type == AuditEventType::AlertRaised)
        .filter_map(|e| e.draft.reason)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_backs_up_and_prunes_only_its_own_expired_files() {
    let keys = keys();
    let (db, _) = support::sqlite_test_db().await;
    let app = app_on(&db.url, &keys).await;
    let (tenant, _) = tenant_with_secrets(&app).await;
    let dir = tempfile::tempdir().unwrap();
    let old = chrono::Utc::now() - chrono::Duration::days(60);
    let stale = backup::backup_file_name(old, false);
    std::fs::write(dir.path().join(&stale), b"an old backup").unwrap();
    std::fs::write(dir.path().join("operator-notes.txt"), b"not ours").unwrap();
    let task = spawn(
        app.clone(),
        Schedule {
            source: Source::Sqlite {
                path: db.path.clone(),
            },
            directory: dir.path().to_owned(),
            interval: Duration::from_secs(1),
            retention: Duration::from_secs(30 * 86_400),
            recipients: Vec::new(),
        },
    );
    let ours = || {
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| backup::parse_backup_name(n).is_some())
            .collect::<Vec<_>>()
    };
    eventually(
        "two scheduled backups",
        Duration::from_secs(30),
        async || ours().len() >= 2 && !ours().contains(&stale),
    )
    .await;
    task.abort();
    assert!(dir.path().join("operator-notes.txt").exists());
    assert!(app.metrics.backup.last_success.get() > 0);
    assert!(app.metrics.backup.last_size.get() > 0);
    assert_eq!(app.metrics.backup.failures.get(), 0);
    assert!(alerts(app.store.as_ref(), tenant).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_that_keep_failing_raise_an_alert_in_every_tenant() {
    let keys = keys();
    let (db, _) = support::sqlite_test_db().await;
    let app = app_on(&db.url, &keys).await;
    let (first, _) = tenant_with_secrets(&app).await;
    let (second, _) = tenant_with_secrets(&app).await;
    let dir = tempfile::tempdir().unwrap();
    // A directory that cannot be created: below a regular file.
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, b"x").unwrap();
    let task = spawn(
        app.clone(),
        Schedule {
            source: Source::Sqlite {
                path: db.path.clone(),
            },
            directory: blocker.join("backups"),
            interval: Duration::from_secs(1),
            retention: Duration::from_secs(86_400),
            recipients: Vec::new(),
        },
    );
    for tenant in [first, second] {
        let raised = eventually("the backup alert", Duration::from_secs(30), async || {
            alerts(app.store.as_ref(), tenant)
                .await
                .into_iter()
                .find(|r| r.starts_with("backup: "))
        })
        .await;
        assert!(raised.contains("backup_io_failed"), "{raised}");
    }
    assert!(app.metrics.backup.failures.get() >= 2);
    // Once per outage, not once per failed attempt.
    let failures = app.metrics.backup.failures.get();
    eventually(
        "more failed attempts",
        Duration::from_secs(30),
        async || app.metrics.backup.failures.get() > failures + 1,
    )
    .await;
    task.abort();
    let backup_alerts = alerts(app.store.as_ref(), first)
        .await
        .into_iter()
        .filter(|r| r.starts_with("backup: "))
        .count();
    assert_eq!(backup_alerts, 1);
}

#[tokio::test]
async fn a_postgres_restore_that_fails_verification_leaves_the_database_empty() {
    let Some(db) = support::postgres_test_db().await else {
        return;
    };
    let Some(target) = agent_secret_testkit::pg::test_database().await else {
        return;
    };
    let keys = keys();
    let app = app_on(&db.service_url, &keys).await;
    tenant_with_secrets(&app).await;
    let dir = tempfile::tempdir().unwrap();
    let options = plain(&keys);
    let report = backup::create(&postgres(&db.admin_url), dir.path(), &options)
        .await
        .unwrap();
    // A manifest that disagrees with its dump (re-sealed with the pepper, so only the
    // restore's own count can tell).
    let work = tempfile::tempdir().unwrap();
    let contents = read_archive(&report.path, &[], work.path(), |_, _| Ok(u64::MAX)).unwrap();
    let mut manifest: Manifest = serde_json::from_slice(&contents.manifest).unwrap();
    let secrets = manifest
        .tables
        .iter_mut()
        .find(|t| t.name == "secrets")
        .unwrap();
    secrets.rows += 1;
    let (sealed, mac) = manifest.seal(&keys.pepper).unwrap();
    let lying = dir.path().join("lying.tar.zst");
    write_archive(&lying, &sealed, &mac, &contents.database, &[]).unwrap();

    let refused = restore(
        &lying,
        &postgres(&target.admin_url),
        &RestoreOptions {
            identities: &[],
            force: false,
            pepper: &keys.pepper,
        },
    )
    .await;
    match refused {
        Err(BackupError::Verification(problems)) => {
            assert!(
                problems.iter().any(|p| p.contains("table secrets")),
                "{problems:?}"
            )
        }
        other => panic!("expected a verification failure, got {other:?}"),
    }
    let admin = target.admin_pool().await;
    let tables: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            .fetch_one(&admin)
            .await
            .unwrap();
    assert_eq!(tables, 0, "nothing that failed verification stays");
}
