//! Database connection, migrations and PostgreSQL privileges for the two supported backends.
//!
//! SQLite is the embedded default (`dev`, single-host installs); PostgreSQL serves production
//! with many control-plane replicas. Both speak the same SQL (see `migrations/`), so the store
//! holds a [`Db`] and runs each statement through [`on_db!`], which expands the same code once
//! per backend with a concretely typed pool. That keeps one SQL text per operation without
//! generic `Database` bounds, and lets the compiler check both expansions.
//!
//! On PostgreSQL the schema is owned by a migration role, and the service runs as a separate
//! role that [`Db::apply_grants`] gives exactly the privileges it needs: never TRUNCATE, never
//! UPDATE or DELETE on the audit log, UPDATE only on the columns that legitimately change.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::AssertSqlSafe;

/// How long a SQLite writer waits for another writer's lock before giving up.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Pool size when the caller does not say (`database.max_connections`' default).
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;
/// A PostgreSQL connection idle at least this long is pinged before it is handed out. sqlx's
/// default pings on *every* checkout, a round trip of its own before each transaction (the
/// resolve path takes two); a connection back in the pool for less than this is almost
/// surely alive, and if the server went away meanwhile that one query fails and the
/// connection is dropped.
const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// What the service role may do, table by table. Everything else stays with the owner.
///
/// * `tenants`: the chain head columns change on every audit append; nothing is deleted.
/// * `credential_index`: rows are added and removed (key rotation), never edited.
/// * `secret_versions`: written once; only the wrapped DEK may be re-wrapped (KEK rotation).
/// * `audit_events`: SELECT and INSERT only — the log is append-only for the service.
/// * `approval_decisions`: SELECT and INSERT only — a human's decision is never rewritten.
const SERVICE_GRANTS: &[&str] = &[
    "GRANT SELECT, INSERT ON tenants TO {role}",
    "GRANT UPDATE (audit_seq, audit_head, audit_checkpoint_seq, audit_checkpoint_at) ON tenants TO {role}",
    // Audit keys are written once and never changed (a new key gets a new key_id).
    "GRANT SELECT, INSERT ON audit_keys TO {role}",
    "GRANT SELECT, INSERT ON audit_sink_cursors TO {role}",
    // Archives are the owner's (`agent-secret-store audit archive`); verification reads them.
    "GRANT SELECT ON audit_archives TO {role}",
    "GRANT UPDATE (last_seq, updated_at) ON audit_sink_cursors TO {role}",
    "GRANT SELECT, INSERT, DELETE ON credential_index TO {role}",
    "GRANT SELECT, INSERT, DELETE ON operators TO {role}",
    "GRANT UPDATE (name, role, key_hash, revoked_at) ON operators TO {role}",
    "GRANT SELECT, INSERT, DELETE ON sidecars TO {role}",
    "GRANT UPDATE (name, key_hash, revoked_at, last_seen_at, last_version) ON sidecars TO {role}",
    "GRANT SELECT, INSERT, DELETE ON agents TO {role}",
    "GRANT UPDATE (name, trust_tier, key_id, key_hash, key_rotated_at) ON agents TO {role}",
    "GRANT UPDATE (ceiling) ON agents TO {role}",
    "GRANT UPDATE (revoked_at) ON agents TO {role}",
    "GRANT SELECT, INSERT ON secret_tombstones TO {role}",
    "GRANT UPDATE (last_version, deleted_at) ON secret_tombstones TO {role}",
    "GRANT SELECT, INSERT, DELETE ON secrets TO {role}",
    "GRANT UPDATE (sensitivity, allowed_hosts, current_version, updated_at) ON secrets TO {role}",
    "GRANT SELECT, INSERT, DELETE ON secret_versions TO {role}",
    "GRANT UPDATE (key_name, key_version, wrapped_dek) ON secret_versions TO {role}",
    "GRANT SELECT, INSERT, DELETE ON tokens TO {role}",
    "GRANT UPDATE (status, approved_sensitivity, uses, revoked_at, expiry_recorded) ON tokens TO {role}",
    "GRANT SELECT, INSERT ON audit_events TO {role}",
    "GRANT SELECT, INSERT ON tenant_keys TO {role}",
    "GRANT UPDATE (key_name, primary_version, observed_at, rotation_claimed_at) ON tenant_keys TO {role}",
    // Reserved uses: released once (released_at), pruned after their deadline.
    "GRANT SELECT, INSERT, DELETE ON token_reservations TO {role}",
    "GRANT UPDATE (released_at) ON token_reservations TO {role}",
    // Approval requests change state and digest; decisions are written once.
    "GRANT SELECT, INSERT ON approval_requests TO {role}",
    "GRANT UPDATE (status, unlocks, digest, required_approvals, delay_seconds, time_lock_until, decided_at) ON approval_requests TO {role}",
    "GRANT SELECT, INSERT ON approval_decisions TO {role}",
    // Operator accounts: never deleted; the login index is written once per account; sessions
    // are only refreshed and revoked.
    "GRANT SELECT, INSERT ON operator_accounts TO {role}",
    "GRANT UPDATE (password_hash, password_changed_at, totp_nonce, totp_ciphertext, \
     totp_confirmed_at, totp_last_step, failed_logins, locked_until, lockouts, disabled_at) ON operator_accounts TO {role}",
    "GRANT SELECT, INSERT ON operator_logins TO {role}",
    "GRANT SELECT, INSERT ON operator_sessions TO {role}",
    "GRANT UPDATE (last_seen_at, revoked_at) ON operator_sessions TO {role}",
];

/// A connection pool to one of the supported backends.
#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL names no supported backend. Holds only the scheme, never credentials.
    #[error("unsupported database URL scheme `{0}` (expected sqlite: or postgres:)")]
    UnsupportedUrl(String),
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("invalid role name `{0}` (expected [a-z_][a-z0-9_]*, at most 63 bytes)")]
    InvalidRole(String),
    #[error("database error: {0}")]
    Query(#[source] sqlx::Error),
}

impl Db {
    /// Connects to `sqlite:PATH` (the file is created if missing), `sqlite::memory:` (one
    /// shared connection, so every query sees the same database), or `postgres://...`.
    pub async fn connect(url: &str) -> Result<Db, DbError> {
        Db::connect_sized(url, DEFAULT_MAX_CONNECTIONS).await
    }

    /// [`connect`](Self::connect) with a pool of at most `max_connections` (an in-memory
    /// SQLite database always has exactly one).
    pub async fn connect_sized(url: &str, max_connections: u32) -> Result<Db, DbError> {
        let max_connections = max_connections.max(1);
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            "sqlite" => connect_sqlite(url, max_connections).await.map(Db::Sqlite),
            "postgres" | "postgresql" => PgPoolOptions::new()
                .max_connections(max_connections)
                .test_before_acquire(false)
                .before_acquire(|conn, meta| {
                    Box::pin(async move {
                        if meta.idle_for >= PING_AFTER_IDLE {
                            sqlx::Connection::ping(conn).await?;
                        }
                        Ok(true)
                    })
                })
                .connect(url)
                .await
                .map(Db::Postgres)
                .map_err(DbError::Connect),
            other => Err(DbError::UnsupportedUrl(other.to_owned())),
        }
    }

    /// `"sqlite"` or `"postgres"`, for logs and metrics.
    pub fn backend(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    /// Applies the pending migrations of this backend. On PostgreSQL run this as the schema
    /// owner, never as the service role (which must not own the tables it is confined by).
    pub async fn migrate(&self) -> Result<(), DbError> {
        match self {
            Db::Sqlite(pool) => sqlx::migrate!("../migrations/sqlite").run(pool).await?,
            Db::Postgres(pool) => sqlx::migrate!("../migrations/postgres").run(pool).await?,
        }
        Ok(())
    }

    /// PostgreSQL only (a no-op on SQLite, which has no roles): run as the tables' owner after
    /// [`Db::migrate`] to give `service_role` exactly the privileges of [`SERVICE_GRANTS`].
    /// Previous table grants of the role are revoked first, so the result does not depend on
    /// history. The role must already exist; it should be NOSUPERUSER NOBYPASSRLS.
    pub async fn apply_grants(&self, service_role: &str) -> Result<(), DbError> {
        let Db::Postgres(pool) = self else {
            return Ok(());
        };
        let role = quote_role(service_role)?;
        let mut tx = pool.begin().await.map_err(DbError::Query)?;
        let preamble = [
            format!("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}"),
            format!("REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {role}"),
            format!("GRANT USAGE ON SCHEMA public TO {role}"),
        ];
        let grants = SERVICE_GRANTS.iter().map(|g| g.replace("{role}", &role));
        for statement in preamble.into_iter().chain(grants) {
            // Safe: the only dynamic part is the role name, validated and quoted above.
            sqlx::query(AssertSqlSafe(statement))
                .execute(&mut *tx)
                .await
                .map_err(DbError::Query)?;
        }
        tx.commit().await.map_err(DbError::Query)
    }
}

/// Opens a SQLite pool: WAL (readers never block the writer), foreign keys on, a busy timeout
/// for writers queueing on `BEGIN IMMEDIATE`, and `secure_delete` so deleted ciphertexts are
/// overwritten rather than left in free pages.
async fn connect_sqlite(url: &str, max_connections: u32) -> Result<SqlitePool, DbError> {
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    let mut options = SqliteConnectOptions::from_str(url)
        .map_err(DbError::Connect)?
        .create_if_missing(true)
        .foreign_keys(true)
        .busy_timeout(SQLITE_BUSY_TIMEOUT)
        .pragma("secure_delete", "ON");
    let mut pool = SqlitePoolOptions::new().max_connections(max_connections);
    if in_memory {
        // An in-memory database lives as long as its last connection: keep exactly one,
        // forever, so all queries share it.
        pool = pool
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None);
    } else {
        options = options.journal_mode(SqliteJournalMode::Wal);
        create_private_file(options.get_filename()).map_err(|e| DbError::Connect(e.into()))?;
    }
    pool.connect_with(options).await.map_err(DbError::Connect)
}

/// Creates a missing database file with mode 0600 (SQLite gives its `-wal` and `-shm` files
/// the database file's mode). It holds only ciphertext and keyed hashes, but those are still
/// nobody else's business.
fn create_private_file(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Validates a PostgreSQL role name and returns it double-quoted for interpolation.
fn quote_role(name: &str) -> Result<String, DbError> {
    let mut chars = name.chars();
    let valid_start = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let valid_rest = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid_start && valid_rest && name.len() <= 63 {
        Ok(format!("\"{name}\""))
    } else {
        Err(DbError::InvalidRole(name.to_owned()))
    }
}

/// Runs `$body` with `$pool` bound to the concrete pool of `$db` (`&SqlitePool` or `&PgPool`).
/// The body is expanded once per backend, so the same SQL constants and row types serve both.
macro_rules! on_db {
    ($db:expr, $pool:ident => $body:block) => {
        match &$db {
            $crate::db::Db::Sqlite($pool) => $body,
            $crate::db::Db::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_db;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_are_validated_before_interpolation() {
        assert_eq!(
            quote_role("ass_service").ok().as_deref(),
            Some("\"ass_service\"")
        );
        for bad in [
            "",
            "Service",
            "a-b",
            "x\"; DROP TABLE tenants; --",
            "1role",
            &"a".repeat(64),
        ] {
            assert!(quote_role(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[tokio::test]
    async fn an_unknown_scheme_is_refused_without_echoing_the_url() {
        let err = Db::connect("mysql://user:hunter2@host/db").await.err();
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("mysql") && !msg.contains("hunter2"), "{msg}");
    }
}
