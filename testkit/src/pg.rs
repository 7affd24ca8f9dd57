//! PostgreSQL for tests: the superuser URL from `AGENT_SECRET_STORE_TEST_DATABASE_URL`, and a
//! fresh database per test set up the way production runs it.
//!
//! Without the variable PostgreSQL tests print `skipped: set AGENT_SECRET_STORE_TEST_DATABASE_URL`
//! and pass, except under `CI=true`, where a missing URL is a failure (a green CI run must have
//! exercised PostgreSQL).
//!
//! [`test_database`] creates `ass_test_<random>`, owned by an owner role (who runs the
//! migrations), and a service role (LOGIN NOSUPERUSER NOBYPASSRLS, not the owner): tests that
//! prove row-level security must connect as the service role. The roles are cluster-wide and
//! shared by all test databases; they are created idempotently under an advisory lock, so
//! parallel tests do not race. The database is dropped (`WITH (FORCE)`) when the [`TestDb`] is
//! dropped, even if the test panicked.

use sqlx::{Connection, PgConnection, PgPool};

pub const DATABASE_URL_VAR: &str = "AGENT_SECRET_STORE_TEST_DATABASE_URL";
pub const OWNER_ROLE: &str = "ass_test_owner";
pub const SERVICE_ROLE: &str = "ass_test_service";
const OWNER_PASSWORD: &str = "ass-test-owner";
const SERVICE_PASSWORD: &str = "ass-test-service";
/// Serialises role creation across parallel tests (any constant shared by them).
const ROLE_LOCK_KEY: i64 = 0x0a55_7e57;

const CREATE_ROLES: &str = r#"
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ass_test_owner') THEN
        CREATE ROLE ass_test_owner LOGIN PASSWORD 'ass-test-owner';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ass_test_service') THEN
        CREATE ROLE ass_test_service LOGIN PASSWORD 'ass-test-service';
    END IF;
    -- Whatever an earlier run left behind, these are the attributes the tests rely on.
    ALTER ROLE ass_test_owner NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
    ALTER ROLE ass_test_service NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
END
$$"#;

/// A PostgreSQL database of its own, with URLs for its three kinds of connection.
pub struct TestDb {
    /// `ass_test_<random>`.
    pub name: String,
    /// Superuser, connected to this database (bypasses row-level security: use for dumps and
    /// for inspecting what is really stored).
    pub admin_url: String,
    /// The role that owns the schema and ran the migrations.
    pub owner_url: String,
    /// The role the control plane runs as.
    pub service_url: String,
    /// Superuser, connected to the maintenance database (to drop this one).
    maintenance_url: String,
}

/// The superuser URL, or `None` (after printing why) when PostgreSQL tests should be skipped.
/// Panics under `CI=true` without a URL.
pub fn postgres_url() -> Option<String> {
    match std::env::var(DATABASE_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
            panic!("CI=true but {DATABASE_URL_VAR} is not set: PostgreSQL tests must run in CI")
        }
        _ => {
            println!("skipped: set {DATABASE_URL_VAR}");
            None
        }
    }
}

/// A fresh, empty PostgreSQL database owned by [`OWNER_ROLE`], or `None` when PostgreSQL tests
/// are skipped (see [`postgres_url`]). The caller migrates it as the owner and grants
/// [`SERVICE_ROLE`] what the service needs.
pub async fn test_database() -> Option<TestDb> {
    let maintenance_url = postgres_url()?;
    let name = format!("ass_test_{}", uuid::Uuid::new_v4().simple());
    let db = TestDb {
        admin_url: with_database(&maintenance_url, None, &name),
        owner_url: with_database(&maintenance_url, Some((OWNER_ROLE, OWNER_PASSWORD)), &name),
        service_url: with_database(
            &maintenance_url,
            Some((SERVICE_ROLE, SERVICE_PASSWORD)),
            &name,
        ),
        maintenance_url,
        name,
    };

    let mut admin = PgConnection::connect(&db.maintenance_url)
        .await
        .expect("connect to AGENT_SECRET_STORE_TEST_DATABASE_URL");
    let mut tx = admin.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(ROLE_LOCK_KEY)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::raw_sql(CREATE_ROLES)
        .execute(&mut *tx)
        .await
        .expect("create test roles");
    tx.commit().await.unwrap();
    // The name is generated above from a UUID: safe to interpolate.
    let create = format!("CREATE DATABASE \"{}\" OWNER {OWNER_ROLE}", db.name);
    sqlx::raw_sql(sqlx::AssertSqlSafe(create))
        .execute(&mut admin)
        .await
        .expect("create test database");
    admin.close().await.ok();

    // Before PostgreSQL 15 `public` belongs to the bootstrap superuser and anyone may create
    // objects in it; make the owner own it and take CREATE away from everyone else.
    let mut admin_here = PgConnection::connect(&db.admin_url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER SCHEMA public OWNER TO {OWNER_ROLE}; REVOKE CREATE ON SCHEMA public FROM PUBLIC"
    )))
    .execute(&mut admin_here)
    .await
    .expect("hand the public schema to the owner role");
    admin_here.close().await.ok();

    Some(db)
}

impl TestDb {
    pub async fn admin_pool(&self) -> PgPool {
        PgPool::connect(&self.admin_url)
            .await
            .expect("connect as superuser")
    }

    pub async fn owner_pool(&self) -> PgPool {
        PgPool::connect(&self.owner_url)
            .await
            .expect("connect as owner")
    }

    pub async fn service_pool(&self) -> PgPool {
        PgPool::connect(&self.service_url)
            .await
            .expect("connect as service")
    }

    /// `pg_dump` of the whole database (as superuser, so row-level security hides nothing).
    /// `None` if `pg_dump` is not installed (a failure under `CI=true`).
    pub fn pg_dump(&self) -> Option<Vec<u8>> {
        match std::process::Command::new("pg_dump")
            .arg("--dbname")
            .arg(&self.admin_url)
            .output()
        {
            Ok(out) => {
                assert!(
                    out.status.success(),
                    "pg_dump failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                Some(out.stdout)
            }
            Err(e) if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
                panic!("pg_dump is required in CI: {e}")
            }
            Err(e) => {
                println!("skipped pg_dump check: {e}");
                None
            }
        }
    }
}

impl Drop for TestDb {
    /// Best effort: a failure to drop leaves an `ass_test_*` database behind, nothing worse.
    fn drop(&mut self) {
        let url = self.maintenance_url.clone();
        let drop = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        // Drop runs inside the test's runtime, which cannot be blocked on: use a thread with
        // a runtime of its own.
        let dropper = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut conn) = PgConnection::connect(&url).await {
                    if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
                        .execute(&mut conn)
                        .await
                    {
                        eprintln!("could not drop test database: {e}");
                    }
                    conn.close().await.ok();
                }
            });
        });
        dropper.join().ok();
    }
}

/// `url` with its user (if given) and database replaced; host, port and query kept.
pub fn with_database(url: &str, user: Option<(&str, &str)>, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let (scheme, rest) = base.split_once("://").expect("a postgres:// URL");
    let authority = rest.split('/').next().unwrap_or_default();
    let authority = match user {
        Some((name, password)) => {
            let host = authority
                .rsplit_once('@')
                .map_or(authority, |(_, host)| host);
            format!("{name}:{password}@{host}")
        }
        None => authority.to_owned(),
    };
    format!("{scheme}://{authority}/{database}{query}")
}
