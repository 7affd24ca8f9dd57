//! KEK lifecycle on every backend: scheduled and forced rotation (once across replicas),
//! rewrap onto the primary version, `kms status` inventory, retire-version refusals, and a
//! rewrap racing secret writes.
//!
//! Two `App`s over one database and one keyring stand in for two control-plane replicas, as
//! they would run on one host with the local backend. On PostgreSQL the store connects as the
//! service role. Each behaviour is an `async fn(&Cluster)`, run once per backend.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use agent_secret_control_plane::audit::{Actor, AuditEventType};
use agent_secret_control_plane::db::Db;
use agent_secret_control_plane::events::Signal;
use agent_secret_control_plane::service::auth::OperatorPrincipal;
use agent_secret_control_plane::service::kms::{self, KeyAdminError};
use agent_secret_control_plane::service::{secrets, tenants, App, Policy, RequestContext};
use agent_secret_control_plane::store::sql::SqlStore;
use agent_secret_control_plane::store::AuditFilter;
use agent_secret_core::api::{PutSecretRequest, WatchEvent};
use agent_secret_core::credential::Pepper;
use agent_secret_core::envelope::{open, SecretAad};
use agent_secret_core::ids::TenantId;
use agent_secret_core::kms::local::{LocalKms, MasterKey};
use agent_secret_core::kms::{KmsError, WrappedDek};
use agent_secret_core::path::SecretPath;
use chrono::Utc;

/// Two replicas of the control plane over one database and one keyring file.
struct Cluster {
    a: Arc<App>,
    b: Arc<App>,
    tenant: TenantId,
    admin: OperatorPrincipal,
    /// The database as its owner/superuser, for damage no API can do.
    raw: Db,
    _keep: Box<dyn std::any::Any + Send + Sync>,
}

impl Cluster {
    async fn sqlite() -> Cluster {
        let (db, store) = support::sqlite_test_db().await;
        let dir = db.dir.path().to_owned();
        let raw = Db::connect(&db.url).await.unwrap();
        Cluster::with(store.clone(), store, &dir, raw, Box::new(db)).await
    }

    async fn postgres() -> Option<Cluster> {
        let db = support::postgres_test_db().await?;
        let (a, b) = (db.service_store().await, db.service_store().await);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        let raw = Db::Postgres(db.admin_pool().await);
        Some(Cluster::with(a, b, &path, raw, Box::new((db, dir))).await)
    }

    async fn with(
        a: SqlStore,
        b: SqlStore,
        dir: &std::path::Path,
        raw: Db,
        keep: Box<dyn std::any::Any + Send + Sync>,
    ) -> Cluster {
        let master = MasterKey::generate();
        let keyring = dir.join("keyring.json");
        let kms_a = LocalKms::open_or_create(&keyring, master.clone_for_test()).unwrap();
        let kms_b = LocalKms::open_or_create(&keyring, master).unwrap();
        let pepper = Arc::new(Pepper::generate());
        let app = |store: SqlStore, kms: LocalKms| {
            let events = agent_secret_control_plane::bootstrap::event_hub(store.db());
            Arc::new(
                App::new(
                    Arc::new(store),
                    Arc::new(kms),
                    pepper.clone(),
                    Policy::default(),
                )
                .with_events(events),
            )
        };
        let a = app(a, kms_a);
        let b = app(b, kms_b);
        let created = tenants::create_tenant(&a, "acme").await.unwrap();
        let admin = OperatorPrincipal {
            tenant: created.tenant_id,
            id: created.admin_operator_id,
            role: agent_secret_core::api::Role::Admin,
        };
        Cluster {
            a,
            b,
            tenant: created.tenant_id,
            admin,
            raw,
            _keep: keep,
        }
    }

    /// Replaces the wrapped DEK of `path` version 1, returning what was there.
    async fn swap_wrapped_dek(&self, path: &str, bytes: Vec<u8>) -> Vec<u8> {
        const SELECT: &str = "SELECT v.wrapped_dek FROM secret_versions v JOIN secrets s \
             ON s.id = v.secret_id WHERE s.path = $1 AND v.version = 1";
        const UPDATE: &str = "UPDATE secret_versions SET wrapped_dek = $2 WHERE version = 1 \
             AND secret_id = (SELECT id FROM secrets WHERE path = $1)";
        match &self.raw {
            Db::Sqlite(pool) => {
                let old: Vec<u8> = sqlx::query_scalar(SELECT)
                    .bind(path)
                    .fetch_one(pool)
                    .await
                    .unwrap();
                sqlx::query(UPDATE)
                    .bind(path)
                    .bind(bytes)
                    .execute(pool)
                    .await
                    .unwrap();
                old
            }
            Db::Postgres(pool) => {
                let old: Vec<u8> = sqlx::query_scalar(SELECT)
                    .bind(path)
                    .fetch_one(pool)
                    .await
                    .unwrap();
                sqlx::query(UPDATE)
                    .bind(path)
                    .bind(bytes)
                    .execute(pool)
                    .await
                    .unwrap();
                old
            }
        }
    }

    async fn put(&self, app: &App, path: &str, value: &str) -> i64 {
        let request = PutSecretRequest {
            value: value.to_owned(),
            sensitivity: None,
            allowed_hosts: vec!["api.example.com".into()],
        };
        secrets::put(app, self.admin, path, request, &RequestContext::default())
            .await
            .unwrap()
            .version
    }

    /// The current value of `path`, decrypted through `app`'s KMS as a sidecar would.
    async fn read(&self, app: &App, path: &str) -> String {
        let path = SecretPath::parse(path).unwrap();
        let stored = app
            .store
            .current_secrets(self.tenant, std::slice::from_ref(&path))
            .await
            .unwrap()
            .pop()
            .expect("the secret exists");
        let aad = SecretAad {
            tenant: self.tenant,
            path: path.as_str(),
            version: stored.record.current_version,
        };
        let plain = open(app.kms.as_ref(), &aad, &stored.envelope)
            .await
            .unwrap();
        String::from_utf8(plain.expose().to_vec()).unwrap()
    }

    /// Every stored DEK of the tenant (all versions of all secrets) unwraps under its key.
    async fn every_dek_unwraps(&self, app: &App) -> usize {
        let all = app
            .store
            .deks_not_under(self.tenant, "no-such-key", "0", None, 100_000)
            .await
            .unwrap();
        for dek in &all {
            let aad = SecretAad {
                tenant: self.tenant,
                path: dek.path.as_str(),
                version: dek.version,
            }
            .to_bytes();
            let wrapped = WrappedDek {
                key_name: dek.key_name.clone(),
                key_version: dek.key_version.clone(),
                ciphertext: dek.wrapped_dek.clone(),
            };
            app.kms
                .unwrap_dek(self.tenant, &wrapped, &aad)
                .await
                .unwrap_or_else(|e| panic!("{} v{}: {e}", dek.path, dek.version));
        }
        all.len()
    }

    async fn events(&self, app: &App, kind: AuditEventType) -> usize {
        let filter = AuditFilter {
            types: vec![kind],
            ..AuditFilter::default()
        };
        app.store
            .list_audit(self.tenant, &filter)
            .await
            .unwrap()
            .len()
    }
}

/// `MasterKey` is deliberately not `Clone`; tests need the same key for two handles.
trait CloneForTest {
    fn clone_for_test(&self) -> MasterKey;
}

impl CloneForTest for MasterKey {
    fn clone_for_test(&self) -> MasterKey {
        MasterKey::from_base64(self.to_base64().expose()).unwrap()
    }
}

/// The key version of the next `kek_rotated` watch event, if one arrives within 5 s.
async fn kek_rotation(
    rx: &mut tokio::sync::broadcast::Receiver<agent_secret_control_plane::events::TenantEvent>,
) -> Option<String> {
    let wait = async {
        loop {
            match rx.recv().await {
                Ok(e) => {
                    if let Signal::Watch(WatchEvent::KekRotated { key_version, .. }) = e.signal {
                        return Some(key_version);
                    }
                }
                Err(_) => return None,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .ok()
        .flatten()
}

fn ninety_days() -> Duration {
    Duration::from_secs(90 * 86_400)
}

async fn rotation_then_rewrap_leaves_every_secret_readable(c: &Cluster) {
    for i in 0..25 {
        c.put(&c.a, &format!("svc/s{i}"), &format!("value-{i}-v1"))
            .await;
        c.put(&c.a, &format!("svc/s{i}"), &format!("value-{i}-v2"))
            .await;
    }
    let before = kms::status(&c.a, c.tenant).await.unwrap();
    assert_eq!(before.primary_version, "1");
    assert_eq!(before.deks_not_on_primary, 0);

    let key = kms::rotate(&c.a, c.tenant, &Actor::system()).await.unwrap();
    assert_eq!(key.key_version, "2");
    let rotated = kms::status(&c.a, c.tenant).await.unwrap();
    assert_eq!(rotated.primary_version, "2");
    assert_eq!(rotated.deks_not_on_primary, 50, "{rotated:?}");

    // A small batch makes the rewrap cross several transactions and cursor pages.
    let progress = std::sync::Mutex::new(Vec::new());
    let report = kms::rewrap(&c.b, c.tenant, 7, &Actor::system(), &|n| {
        progress.lock().unwrap().push(n)
    })
    .await
    .unwrap();
    assert_eq!(
        (report.rewrapped, report.skipped, report.failed),
        (50, 0, 0)
    );
    assert_eq!(progress.lock().unwrap().last(), Some(&50));

    let after = kms::status(&c.a, c.tenant).await.unwrap();
    assert_eq!(after.deks_not_on_primary, 0, "{after:?}");
    assert!(
        after.versions.iter().all(|v| v.primary || v.deks == 0),
        "{after:?}"
    );
    for i in 0..25 {
        assert_eq!(
            c.read(&c.b, &format!("svc/s{i}")).await,
            format!("value-{i}-v2")
        );
    }
    assert_eq!(c.every_dek_unwraps(&c.a).await, 50);
    assert_eq!(c.events(&c.a, AuditEventType::KmsRotated).await, 1);
    assert!(c.events(&c.a, AuditEventType::KmsRewrapped).await >= 8);

    // Idempotent: a second run finds nothing to do and writes no event.
    let events = c.events(&c.a, AuditEventType::KmsRewrapped).await;
    let again = kms::rewrap(&c.a, c.tenant, 7, &Actor::system(), &|_| {})
        .await
        .unwrap();
    assert_eq!((again.rewrapped, again.skipped, again.failed), (0, 0, 0));
    assert_eq!(c.events(&c.a, AuditEventType::KmsRewrapped).await, events);
}

async fn scheduled_rotation_happens_once_across_replicas(c: &Cluster) {
    c.put(&c.a, "svc/one", "v").await;
    let (mut watch_a, mut watch_b) = (c.a.events.subscribe(), c.b.events.subscribe());
    let now = Utc::now();
    // Not due yet: nothing changes.
    let step = kms::rotate_if_due(&c.a, c.tenant, ninety_days(), now)
        .await
        .unwrap();
    assert!(step.rotated.is_none());
    // Due (the clock moved 91 days): both replicas check at once; exactly one rotates.
    let later = now + chrono::Duration::days(91);
    let (sa, sb) = tokio::join!(
        kms::rotate_if_due(&c.a, c.tenant, ninety_days(), later),
        kms::rotate_if_due(&c.b, c.tenant, ninety_days(), later),
    );
    let (sa, sb) = (sa.unwrap(), sb.unwrap());
    assert_eq!(
        usize::from(sa.rotated.is_some()) + usize::from(sb.rotated.is_some()),
        1,
        "{sa:?} {sb:?}"
    );
    assert_eq!(usize::from(sa.announced) + usize::from(sb.announced), 1);
    assert_eq!(
        c.a.kms.key_info(c.tenant).await.unwrap().primary_version,
        "2"
    );
    assert_eq!(c.events(&c.a, AuditEventType::KmsRotated).await, 1);
    // The new primary is only seconds old, so the next pass does nothing.
    let step = kms::rotate_if_due(&c.b, c.tenant, ninety_days(), Utc::now())
        .await
        .unwrap();
    assert_eq!(step, kms::Step::default());

    // The announcing replica's sidecars hear it; on PostgreSQL (NOTIFY) every replica's do.
    let (announcer, other) = if sa.announced {
        (&mut watch_a, &mut watch_b)
    } else {
        (&mut watch_b, &mut watch_a)
    };
    assert_eq!(kek_rotation(announcer).await.as_deref(), Some("2"));
    if !c.a.events.is_local() {
        assert_eq!(kek_rotation(other).await.as_deref(), Some("2"));
    }
    // New writes are wrapped under the new primary at once, even on the replica whose
    // keyring handle did not rotate.
    c.put(&c.a, "svc/two", "v").await;
    c.put(&c.b, "svc/three", "v").await;
    let status = kms::status(&c.a, c.tenant).await.unwrap();
    assert_eq!(status.deks_not_on_primary, 1, "{status:?}");
}

async fn a_rotation_by_another_process_is_recorded_and_announced_once(c: &Cluster) {
    // First observation records silently.
    let (info, announced) = kms::observe(&c.a, c.tenant, &Actor::system())
        .await
        .unwrap();
    assert_eq!((info.primary_version.as_str(), announced), ("1", false));
    // The CLI (another process) rotates the keyring file; this replica's scheduler sees it.
    c.b.kms.rotate(c.tenant).await.unwrap();
    let mut announced = HashMap::new();
    agent_secret_control_plane::rotation::check_all(&c.a, ninety_days(), &mut announced).await;
    agent_secret_control_plane::rotation::check_all(&c.b, ninety_days(), &mut HashMap::new()).await;
    assert_eq!(announced.get(&c.tenant).map(String::as_str), Some("2"));
    assert_eq!(c.events(&c.a, AuditEventType::KmsRotated).await, 1);
    let recorded = c.a.store.recorded_key(c.tenant).await.unwrap().unwrap();
    assert_eq!(recorded.primary_version, "2");
    assert!(recorded.rotation_claimed_at.is_none());
}

async fn retire_version_is_refused_until_no_dek_uses_it(c: &Cluster) {
    const NOW: Duration = Duration::ZERO;
    c.put(&c.a, "svc/old", "old-value").await;
    kms::rotate(&c.a, c.tenant, &Actor::system()).await.unwrap();
    // A DEK wrapped under version 1 that is in no row (say, in an old backup).
    let dek = agent_secret_core::envelope::Dek::generate();
    let aad = SecretAad {
        tenant: c.tenant,
        path: "svc/x",
        version: 1,
    }
    .to_bytes();
    let backup =
        c.a.kms
            .wrap_dek_under(c.tenant, &dek, &aad, "1")
            .await
            .unwrap();
    assert_eq!(backup.key_version, "1");

    let err = kms::retire_version(&c.a, c.tenant, "2", NOW, &Actor::system())
        .await
        .unwrap_err();
    assert!(matches!(err, KeyAdminError::Primary { .. }), "{err}");
    assert_eq!(err.code(), "key_version_is_primary");

    let err = kms::retire_version(&c.a, c.tenant, "1", NOW, &Actor::system())
        .await
        .unwrap_err();
    assert!(matches!(err, KeyAdminError::InUse { deks: 1, .. }), "{err}");
    assert_eq!(err.code(), "key_version_in_use");
    assert_eq!(
        c.read(&c.a, "svc/old").await,
        "old-value",
        "nothing was disabled"
    );

    kms::rewrap(&c.a, c.tenant, 100, &Actor::system(), &|_| {})
        .await
        .unwrap();
    // Writes may still be wrapping under version 1 right after the rotation: the grace
    // period refuses, and says until when.
    let err = kms::retire_version(
        &c.a,
        c.tenant,
        "1",
        Duration::from_secs(3600),
        &Actor::system(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, KeyAdminError::TooSoon { .. }), "{err}");
    assert_eq!(err.code(), "retire_too_soon");
    assert_eq!(c.events(&c.a, AuditEventType::KmsVersionRetired).await, 0);

    kms::retire_version(&c.a, c.tenant, "1", NOW, &Actor::system())
        .await
        .unwrap();
    // The intent, then the outcome.
    let events =
        c.a.store
            .list_audit(
                c.tenant,
                &AuditFilter {
                    types: vec![AuditEventType::KmsVersionRetired],
                    ..AuditFilter::default()
                },
            )
            .await
            .unwrap();
    let outcomes: Vec<_> = events
        .iter()
        .map(|e| (e.draft.success, e.draft.reason.clone().unwrap_or_default()))
        .collect();
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    assert!(
        !outcomes[0].0 && outcomes[0].1.ends_with("retiring"),
        "{outcomes:?}"
    );
    assert!(
        outcomes[1].0 && outcomes[1].1.ends_with("disabled"),
        "{outcomes:?}"
    );
    assert_eq!(c.read(&c.b, "svc/old").await, "old-value");

    // The version no longer unwraps, on either replica, nor wraps.
    for app in [&c.a, &c.b] {
        let err = app
            .kms
            .unwrap_dek(c.tenant, &backup, &aad)
            .await
            .unwrap_err();
        assert!(matches!(err, KmsError::VersionDisabled { .. }), "{err}");
    }
    let err =
        c.b.kms
            .wrap_dek_under(c.tenant, &dek, &aad, "1")
            .await
            .unwrap_err();
    assert!(matches!(err, KmsError::VersionDisabled { .. }), "{err}");

    // Unknown versions are refused before anything is disabled or written.
    let before = c.events(&c.a, AuditEventType::KmsVersionRetired).await;
    let err = kms::retire_version(&c.a, c.tenant, "9", NOW, &Actor::system())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "kms_unknown_key_version", "{err}");
    // The intent event and the failure are both on record.
    assert_eq!(
        c.events(&c.a, AuditEventType::KmsVersionRetired).await,
        before + 2
    );
}

/// In the style of OpenBao's transit policy fuzzing: writers keep adding versions and secrets
/// while rotations and rewraps run on the other replica. Nothing may be lost: every secret
/// reads back its last written value and every stored DEK unwraps.
async fn concurrent_rewrap_and_writes_lose_nothing(c: &Cluster) {
    for i in 0..10 {
        c.put(&c.a, &format!("race/s{i}"), "v0").await;
    }
    let writer = {
        let (app, admin) = (c.a.clone(), c.admin);
        tokio::spawn(async move {
            let mut last = HashMap::new();
            for round in 1..=8 {
                for i in 0..12 {
                    let path = format!("race/s{i}");
                    let value = format!("v{round}-{i}");
                    let request = PutSecretRequest {
                        value: value.clone(),
                        sensitivity: None,
                        allowed_hosts: vec!["api.example.com".into()],
                    };
                    secrets::put(&app, admin, &path, request, &RequestContext::default())
                        .await
                        .unwrap();
                    last.insert(path, value);
                }
                tokio::task::yield_now().await;
            }
            last
        })
    };
    for _ in 0..3 {
        kms::rotate(&c.b, c.tenant, &Actor::system()).await.unwrap();
        kms::rewrap(&c.b, c.tenant, 5, &Actor::system(), &|_| {})
            .await
            .unwrap();
    }
    let last = writer.await.unwrap();
    // A final pass catches DEKs written under an older primary while the last one ran.
    let report = kms::rewrap(&c.b, c.tenant, 5, &Actor::system(), &|_| {})
        .await
        .unwrap();
    assert_eq!(report.failed, 0);
    for (path, value) in &last {
        assert_eq!(&c.read(&c.a, path).await, value, "{path}");
        assert_eq!(&c.read(&c.b, path).await, value, "{path}");
    }
    assert_eq!(c.every_dek_unwraps(&c.a).await, 10 + 8 * 12);
    let status = kms::status(&c.a, c.tenant).await.unwrap();
    assert_eq!(status.primary_version, "4");
    assert_eq!(status.deks_not_on_primary, 0, "{status:?}");
}

async fn a_forced_rotation_is_refused_while_another_holds_the_lease(c: &Cluster) {
    kms::observe(&c.a, c.tenant, &Actor::system())
        .await
        .unwrap();
    let now = Utc::now();
    assert!(c
        .a
        .store
        .claim_rotation(c.tenant, "1", now, now - chrono::Duration::minutes(10))
        .await
        .unwrap());
    let err = kms::rotate(&c.b, c.tenant, &Actor::system())
        .await
        .unwrap_err();
    assert!(matches!(err, KeyAdminError::RotationInProgress), "{err}");
    assert_eq!(
        c.b.kms.key_info(c.tenant).await.unwrap().primary_version,
        "1"
    );
    // A lease older than its lifetime is taken over.
    assert!(c
        .b
        .store
        .claim_rotation(
            c.tenant,
            "1",
            now + chrono::Duration::minutes(11),
            now + chrono::Duration::seconds(1)
        )
        .await
        .unwrap());
    c.b.store.release_rotation(c.tenant).await.unwrap();
    kms::rotate(&c.b, c.tenant, &Actor::system()).await.unwrap();
    assert_eq!(
        c.a.kms.key_info(c.tenant).await.unwrap().primary_version,
        "2"
    );
}

/// Two replicas rewrapping at once read the same DEKs; the compare-and-swap lets exactly one
/// replace each, and the other counts it as skipped instead of overwriting it.
async fn parallel_rewraps_replace_each_dek_once(c: &Cluster) {
    for i in 0..40 {
        c.put(&c.a, &format!("par/s{i}"), "v").await;
    }
    kms::rotate(&c.a, c.tenant, &Actor::system()).await.unwrap();
    let actor = Actor::system();
    let (ra, rb) = tokio::join!(
        kms::rewrap(&c.a, c.tenant, 40, &actor, &|_| {}),
        kms::rewrap(&c.b, c.tenant, 40, &actor, &|_| {}),
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.rewrapped + rb.rewrapped, 40, "{ra:?} {rb:?}");
    assert_eq!(ra.failed + rb.failed, 0);
    assert_eq!(c.every_dek_unwraps(&c.b).await, 40);
    let status = kms::status(&c.a, c.tenant).await.unwrap();
    assert_eq!(status.deks_not_on_primary, 0);
}

/// A DEK that cannot be unwrapped is reported and skipped, the others move on; once it is
/// repaired, a second run finishes the job: rewrap is resumable from whatever the table holds.
async fn a_rewrap_with_a_broken_dek_reports_it_and_a_rerun_finishes(c: &Cluster) {
    for i in 0..6 {
        c.put(&c.a, &format!("rw/s{i}"), &format!("v{i}")).await;
    }
    kms::rotate(&c.a, c.tenant, &Actor::system()).await.unwrap();
    let good = c.swap_wrapped_dek("rw/s3", vec![0; 60]).await;

    let first = kms::rewrap(&c.a, c.tenant, 2, &Actor::system(), &|_| {})
        .await
        .unwrap();
    assert_eq!((first.rewrapped, first.failed), (5, 1), "{first:?}");
    let status = kms::status(&c.a, c.tenant).await.unwrap();
    assert_eq!(status.deks_not_on_primary, 1, "{status:?}");

    c.swap_wrapped_dek("rw/s3", good).await;
    let second = kms::rewrap(&c.b, c.tenant, 2, &Actor::system(), &|_| {})
        .await
        .unwrap();
    assert_eq!((second.rewrapped, second.failed), (1, 0), "{second:?}");
    let status = kms::status(&c.a, c.tenant).await.unwrap();
    assert_eq!(status.deks_not_on_primary, 0, "{status:?}");
    for i in 0..6 {
        assert_eq!(c.read(&c.b, &format!("rw/s{i}")).await, format!("v{i}"));
    }
}

agent_secret_testkit::backend_suite!(
    Cluster:
    rotation_then_rewrap_leaves_every_secret_readable,
    scheduled_rotation_happens_once_across_replicas,
    a_rotation_by_another_process_is_recorded_and_announced_once,
    retire_version_is_refused_until_no_dek_uses_it,
    concurrent_rewrap_and_writes_lose_nothing,
    a_forced_rotation_is_refused_while_another_holds_the_lease,
    parallel_rewraps_replace_each_dek_once,
    a_rewrap_with_a_broken_dek_reports_it_and_a_rerun_finishes,
);
