//! Audit retention on both backends: an archive moves a verified prefix of a tenant's chain
//! into a file that verifies offline, deletes it from the database in one transaction with a
//! marker and an `audit.archived` event, and online verification then starts from the marker
//! and passes; a second archive chains on from the first. It stops at what a SIEM sink has
//! not delivered yet, refuses a broken chain without deleting anything, and on PostgreSQL the
//! service role cannot archive at all.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use agent_secret_control_plane::audit::{now_micros, Actor, AuditDraft, AuditEventType};
use agent_secret_control_plane::audit_file::verify_jsonl;
use agent_secret_control_plane::db::Db;
use agent_secret_control_plane::service::audit_archive::{archive, ArchiveError};
use agent_secret_control_plane::service::principal::OperatorPrincipal;
use agent_secret_control_plane::service::{audit_log, App, Policy};
use agent_secret_control_plane::store::sql::SqlStore;
use agent_secret_control_plane::store::{ArchiveStore, AuditFilter, Store};
use agent_secret_core::api::Role;
use agent_secret_core::credential::Pepper;
use agent_secret_core::ids::{OperatorId, TenantId};
use agent_secret_core::kms::local::{LocalKms, MasterKey};
use chrono::Duration;

fn draft(event_type: AuditEventType, reason: &str) -> AuditDraft {
    AuditDraft::new(event_type, Actor::system()).reason(reason)
}

async fn new_tenant(store: &dyn Store) -> (TenantId, OperatorId) {
    let (tenant, admin) = support::tenant_records();
    // Created long ago, so its first event falls in the archived range too.
    let mut created = draft(AuditEventType::TenantCreated, "t");
    created.occurred_at = now_micros() - Duration::days(50);
    store.create_tenant(&tenant, &admin, created).await.unwrap();
    (tenant.id, admin.id)
}

/// Appends `n` events `age` in the past.
async fn events(store: &dyn Store, tenant: TenantId, n: usize, age: Duration, label: &str) {
    for i in 0..n {
        let mut d = draft(AuditEventType::SecretWrite, &format!("{label} {i}"));
        d.occurred_at = now_micros() - age;
        store.append_audit(tenant, d).await.unwrap();
    }
}

/// The service's own online verification, as `GET /v1/audit/verify` runs it.
async fn verify_online(
    store: Arc<dyn Store>,
    tenant: TenantId,
    admin: OperatorId,
) -> agent_secret_control_plane::audit::ChainReport {
    let dir = tempfile::tempdir().unwrap();
    let kms = LocalKms::open_or_create(dir.path().join("keyring"), MasterKey::generate()).unwrap();
    let app = App::new(
        store,
        Arc::new(kms),
        Arc::new(Pepper::generate()),
        Policy::default(),
    );
    let caller = OperatorPrincipal {
        tenant,
        id: admin,
        role: Role::Admin,
    };
    audit_log::verify(&app, caller).await.unwrap()
}

async fn remaining_seqs(store: &dyn Store, tenant: TenantId) -> Vec<i64> {
    let filter = AuditFilter {
        limit: Some(10_000),
        ..AuditFilter::default()
    };
    let events = store.list_audit(tenant, &filter).await.unwrap();
    events.iter().map(|e| e.seq).collect()
}

/// The archive flow on a store connected as the tables' owner.
async fn archives_a_prefix_and_verification_goes_on(owner: Arc<dyn Store>) {
    let store = owner.as_ref();
    let (tenant, admin) = new_tenant(store).await;
    events(store, tenant, 20, Duration::days(40), "old").await;
    events(store, tenant, 5, Duration::days(1), "recent").await;
    let actor = Actor("cli:test".into());

    let mut file = Vec::new();
    let cutoff = now_micros() - Duration::days(30);
    let report = archive(store, tenant, cutoff, actor.clone(), &mut file)
        .await
        .unwrap()
        .unwrap();
    // The tenant's creation and the 20 old events; the recent ones stay.
    assert_eq!(
        (report.first_seq, report.through_seq, report.events),
        (1, 21, 21)
    );
    assert_eq!(report.held_back_by, None);
    let offline = verify_jsonl(&file[..], None).unwrap();
    assert!(offline.valid, "{offline:?}");
    assert_eq!(offline.first_seq, Some(report.first_seq));
    assert_eq!(offline.last_seq, Some(report.through_seq));
    assert_eq!(
        report.file_sha256,
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&file))
    );
    let left = remaining_seqs(store, tenant).await;
    assert_eq!(left.first(), Some(&(report.through_seq + 1)));
    let online = verify_online(owner.clone(), tenant, admin).await;
    assert!(online.valid, "{online:?}");
    assert_eq!(online.archived_through, Some(report.through_seq));
    let archived = store
        .list_audit(
            tenant,
            &AuditFilter {
                types: vec![AuditEventType::AuditArchived],
                ..AuditFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(archived.len(), 1);
    assert!(archived[0]
        .draft
        .reason
        .as_deref()
        .unwrap()
        .contains(&report.file_sha256));

    // A second archive continues the chain from the first one's marker.
    let mut second = Vec::new();
    let report2 = archive(store, tenant, now_micros(), actor, &mut second)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report2.first_seq, report.through_seq + 1);
    let offline2 = verify_jsonl(&second[..], None).unwrap();
    assert!(offline2.valid, "{offline2:?}");
    // The two files are one chain: the second starts from the first one's last hash.
    let first_head = offline.head_hash.clone().unwrap();
    let line: serde_json::Value =
        serde_json::from_slice(second.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(line["prev_hash"].as_str().unwrap(), first_head);
    let online = verify_online(owner.clone(), tenant, admin).await;
    assert!(online.valid, "{online:?}");
    assert_eq!(online.archived_through, Some(report2.through_seq));
    // Appending goes on as before.
    store
        .append_audit(tenant, draft(AuditEventType::SecretWrite, "after"))
        .await
        .unwrap();
    assert!(verify_online(owner.clone(), tenant, admin).await.valid);
}

/// An archive never takes what a SIEM sink has not delivered yet.
async fn a_lagging_sink_holds_the_archive_back(store: &dyn Store) {
    let (tenant, _) = new_tenant(store).await;
    events(store, tenant, 10, Duration::days(40), "old").await;
    assert!(store
        .advance_sink_cursor(tenant, "splunk", 0, 0)
        .await
        .unwrap());
    let mut file = Vec::new();
    let none = archive(store, tenant, now_micros(), Actor::system(), &mut file)
        .await
        .unwrap();
    assert!(none.is_none(), "nothing delivered, nothing archived");
    assert_eq!(remaining_seqs(store, tenant).await.len(), 11);
    assert!(store
        .advance_sink_cursor(tenant, "splunk", 0, 4)
        .await
        .unwrap());
    let report = archive(store, tenant, now_micros(), Actor::system(), &mut file)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((report.first_seq, report.through_seq), (1, 4));
    assert_eq!(report.held_back_by.as_deref(), Some("sink:splunk"));
}

#[tokio::test]
async fn sqlite_archives_and_verification_goes_on() {
    let (_db, store) = support::sqlite_test_db().await;
    let store: Arc<dyn Store> = Arc::new(store);
    archives_a_prefix_and_verification_goes_on(store.clone()).await;
    a_lagging_sink_holds_the_archive_back(store.as_ref()).await;
}

#[tokio::test]
async fn sqlite_refuses_to_archive_a_broken_chain() {
    let (db, store) = support::sqlite_test_db().await;
    let (tenant, _) = new_tenant(&store).await;
    events(&store, tenant, 5, Duration::days(40), "old").await;
    // Someone with the file edits history behind the triggers' back.
    let Db::Sqlite(pool) = store.db() else {
        unreachable!()
    };
    sqlx::raw_sql(
        "DROP TRIGGER audit_events_no_update; \
         UPDATE audit_events SET reason = 'forged' WHERE seq = 3",
    )
    .execute(pool)
    .await
    .unwrap();
    let mut file = Vec::new();
    let err = archive(&store, tenant, now_micros(), Actor::system(), &mut file)
        .await
        .unwrap_err();
    assert!(matches!(err, ArchiveError::Broken { seq: 3, .. }), "{err}");
    assert_eq!(
        remaining_seqs(&store, tenant).await.len(),
        6,
        "nothing deleted"
    );
    drop(db);
}

#[tokio::test]
async fn postgres_archives_as_the_owner_and_never_as_the_service_role() {
    let Some(db) = support::postgres_test_db().await else {
        return;
    };
    let owner: Arc<dyn Store> = Arc::new(SqlStore::new(Db::connect(&db.owner_url).await.unwrap()));
    archives_a_prefix_and_verification_goes_on(owner.clone()).await;
    a_lagging_sink_holds_the_archive_back(owner.as_ref()).await;

    // The service role: the same call fails and changes nothing.
    let service = db.service_store().await;
    let (tenant, _) = new_tenant(&service).await;
    events(&service, tenant, 5, Duration::days(40), "old").await;
    let mut file = Vec::new();
    let err = archive(&service, tenant, now_micros(), Actor::system(), &mut file)
        .await
        .unwrap_err();
    assert!(matches!(err, ArchiveError::Store(_)), "{err}");
    assert_eq!(remaining_seqs(&service, tenant).await.len(), 6);
    assert!(service.audit_archive(tenant).await.unwrap().is_none());
}
