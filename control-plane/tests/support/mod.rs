//! Test databases for every backend: a migrated SQLite file in a temp dir, and a fresh
//! PostgreSQL database set up the way production runs it (`agent_secret_testkit::pg` makes it;
//! this module migrates it as the owner and grants the service role).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::ops::Deref;
use std::path::PathBuf;

use agent_secret_control_plane::db::Db;
use agent_secret_control_plane::store::sql::SqlStore;
#[allow(unused_imports)] // each test crate uses a different subset
pub use agent_secret_testkit::pg::{postgres_url, DATABASE_URL_VAR, OWNER_ROLE, SERVICE_ROLE};

/// A migrated, granted PostgreSQL database of its own (dropped with it).
pub struct TestDb(agent_secret_testkit::pg::TestDb);

impl Deref for TestDb {
    type Target = agent_secret_testkit::pg::TestDb;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// A fresh, migrated, granted PostgreSQL database, or `None` when PostgreSQL tests are
/// skipped (see [`postgres_url`]).
pub async fn postgres_test_db() -> Option<TestDb> {
    let db = agent_secret_testkit::pg::test_database().await?;
    let owner = Db::connect(&db.owner_url).await.expect("connect as owner");
    owner.migrate().await.expect("migrate as owner");
    owner
        .apply_grants(SERVICE_ROLE)
        .await
        .expect("grant the service role");
    if let Db::Postgres(pool) = owner {
        pool.close().await;
    }
    Some(TestDb(db))
}

impl TestDb {
    /// The store as the control plane runs it: connected as the service role.
    pub async fn service_store(&self) -> SqlStore {
        SqlStore::new(
            Db::connect(&self.service_url)
                .await
                .expect("connect as service"),
        )
    }
}

/// A new tenant and its first admin operator (a key hash no credential matches), to store
/// with `create_tenant`.
pub fn tenant_records() -> (
    agent_secret_control_plane::store::TenantRecord,
    agent_secret_control_plane::store::OperatorRecord,
) {
    use agent_secret_control_plane::audit::now_micros;
    let tenant = agent_secret_control_plane::store::TenantRecord {
        id: agent_secret_core::ids::TenantId::new(),
        name: format!("tenant-{}", uuid::Uuid::new_v4()),
        created_at: now_micros(),
    };
    let admin = agent_secret_control_plane::store::OperatorRecord {
        id: agent_secret_core::ids::OperatorId::new(),
        tenant_id: tenant.id,
        name: "admin".into(),
        role: agent_secret_core::api::Role::Admin,
        key_hash: vec![1; 32],
        created_at: now_micros(),
        revoked_at: None,
    };
    (tenant, admin)
}

/// A migrated SQLite database in its own temp dir.
pub struct SqliteTestDb {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub url: String,
}

pub async fn sqlite_test_db() -> (SqliteTestDb, SqlStore) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let url = format!("sqlite://{}", path.display());
    let db = Db::connect(&url).await.expect("open sqlite");
    db.migrate().await.expect("migrate sqlite");
    (SqliteTestDb { dir, path, url }, SqlStore::new(db))
}

impl SqliteTestDb {
    /// The raw bytes of the database and its WAL/SHM files: everything SQLite wrote.
    pub fn raw_bytes(&self) -> Vec<u8> {
        let mut all = Vec::new();
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let file = PathBuf::from(format!("{}{suffix}", self.path.display()));
            if let Ok(bytes) = std::fs::read(file) {
                all.extend_from_slice(&bytes);
            }
        }
        all
    }
}
