//! pgaudit on a real cluster (docs/pgaudit.md): config/postgres/pgaudit.sql applied to a fresh
//! database, a secret stored through the service (`service::secrets::put`, sealed by the KMS),
//! then read back by the service role the way the store reads (tenant set with
//! `set_config('app.tenant_id', …, true)` in a transaction). The server's log must show the read
//! as a pgaudit object-audit entry, and must hold neither the secret's value nor its ciphertext.
//!
//! Needs `AGENT_SECRET_STORE_TEST_PGAUDIT_LOG`, the server's log file (.ci/run preloads pgaudit
//! and sets it), and `AGENT_SECRET_STORE_TEST_DATABASE_URL`. Without the first the test prints
//! `skipped` and passes, except under `CI=true`; with it, a missing database URL or a server
//! without pgaudit loaded is a failure. Other tests write to the same log at the same time: the
//! test only reads what was appended after it started, and finds its own statement by a unique
//! comment in the SQL text.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agent_secret_control_plane::service::auth::OperatorPrincipal;
use agent_secret_control_plane::service::{secrets, tenants, App, Policy, RequestContext};
use agent_secret_core::api::{PutSecretRequest, Role};
use agent_secret_core::credential::Pepper;
use agent_secret_core::kms::local::{LocalKms, MasterKey};
use base64::Engine;
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool};
use support::{DATABASE_URL_VAR, SERVICE_ROLE};
use uuid::Uuid;

const LOG_VAR: &str = "AGENT_SECRET_STORE_TEST_PGAUDIT_LOG";
/// The very script an operator runs (plain SQL, so it runs here without psql).
const PGAUDIT_SQL: &str = include_str!("../../config/postgres/pgaudit.sql");
/// The role config/postgres/pgaudit.sql creates and names in `pgaudit.role`.
const AUDIT_ROLE: &str = "agent_secret_store_auditor";
/// How long the server may take to append an entry (it is normally there at once).
const LOG_WAIT: Duration = Duration::from_secs(30);
const SECRET_PATH: &str = "production/pgaudit/canary";

/// The log file, or `None` (after printing why) when the test should be skipped.
fn pgaudit_log() -> Option<PathBuf> {
    match std::env::var(LOG_VAR) {
        Ok(path) if !path.trim().is_empty() => Some(PathBuf::from(path)),
        _ if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
            panic!("CI=true but {LOG_VAR} is not set: .ci/run enables pgaudit and sets it")
        }
        _ => {
            println!("skipped: set {LOG_VAR} to the PostgreSQL log file (pgaudit preloaded)");
            None
        }
    }
}

/// The server's log, read directly or, when this process may not read the file (Debian makes
/// it `postgres:adm 0640`), through the server as superuser with `pg_read_binary_file`.
enum ServerLog {
    File(PathBuf),
    ViaServer { admin: PgPool, path: String },
}

impl ServerLog {
    fn open(path: PathBuf, admin: &PgPool) -> ServerLog {
        match std::fs::File::open(&path) {
            Ok(_) => ServerLog::File(path),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                println!("{}: {e}; reading it through the server", path.display());
                ServerLog::ViaServer {
                    admin: admin.clone(),
                    path: path.display().to_string(),
                }
            }
            Err(e) => panic!("{LOG_VAR}={}: {e}", path.display()),
        }
    }

    async fn len(&self) -> u64 {
        match self {
            ServerLog::File(path) => std::fs::metadata(path).expect("stat the log").len(),
            ServerLog::ViaServer { admin, path } => {
                let size: i64 = sqlx::query_scalar("SELECT (pg_stat_file($1)).size")
                    .bind(path)
                    .fetch_one(admin)
                    .await
                    .expect("pg_stat_file on the log");
                u64::try_from(size).unwrap()
            }
        }
    }

    /// Everything appended since `start` (all of it if the file was truncated meanwhile).
    async fn since(&self, start: u64) -> String {
        let bytes = match self {
            ServerLog::File(path) => {
                let all = std::fs::read(path).expect("read the log");
                let from = usize::try_from(start).unwrap();
                if all.len() < from {
                    all
                } else {
                    all[from..].to_vec()
                }
            }
            ServerLog::ViaServer { admin, path } => {
                let end = self.len().await;
                let from = if end < start { 0 } else { start };
                sqlx::query_scalar::<_, Vec<u8>>("SELECT pg_read_binary_file($1, $2, $3)")
                    .bind(path)
                    .bind(i64::try_from(from).unwrap())
                    .bind(i64::try_from(end - from).unwrap())
                    .fetch_one(admin)
                    .await
                    .expect("pg_read_binary_file on the log")
            }
        };
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The first appended line `matches` accepts, polling until [`LOG_WAIT`] has passed.
    async fn eventually(&self, start: u64, what: &str, matches: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + LOG_WAIT;
        loop {
            let appended = self.since(start).await;
            if let Some(line) = appended.lines().find(|line| matches(line)) {
                return line.to_owned();
            }
            if tokio::time::Instant::now() >= deadline {
                let audit: Vec<&str> = appended.lines().filter(|l| l.contains("AUDIT:")).collect();
                let tail = &audit[audit.len().saturating_sub(40)..];
                panic!(
                    "no {what} in the PostgreSQL log after {LOG_WAIT:?}; its last AUDIT lines \
                     since the test started:\n{}",
                    tail.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `bytes` as they could appear in a log line: base64 (both alphabets) and hex (bytea's
/// `\x…` output).
fn encodings(bytes: &[u8]) -> [String; 3] {
    [
        base64::engine::general_purpose::STANDARD.encode(bytes),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
        hex::encode(bytes),
    ]
}

#[tokio::test]
async fn service_reads_of_secrets_are_audited_without_their_values() {
    let Some(log_path) = pgaudit_log() else {
        return;
    };
    let db = support::postgres_test_db().await.unwrap_or_else(|| {
        panic!("{LOG_VAR} is set but {DATABASE_URL_VAR} is not: the pgaudit test needs both")
    });
    let admin = db.admin_pool().await;
    let preloaded: String =
        sqlx::query_scalar("SELECT current_setting('shared_preload_libraries')")
            .fetch_one(&admin)
            .await
            .unwrap();
    assert!(
        preloaded
            .split(',')
            .any(|lib| lib.trim().trim_matches('"') == "pgaudit"),
        "{LOG_VAR} is set but pgaudit is not loaded (shared_preload_libraries = '{preloaded}'): \
         preload it and restart PostgreSQL (docs/pgaudit.md, .ci/run)"
    );
    sqlx::raw_sql(PGAUDIT_SQL)
        .execute(&admin)
        .await
        .expect("config/postgres/pgaudit.sql");
    // Twice: the script is idempotent.
    sqlx::raw_sql(PGAUDIT_SQL)
        .execute(&admin)
        .await
        .expect("config/postgres/pgaudit.sql, second run");
    let log = ServerLog::open(log_path, &admin);
    let start = log.len().await;

    // The service role's sessions carry the settings, and cannot change them.
    let mut service = PgConnection::connect(&db.service_url)
        .await
        .expect("connect as the service role");
    for (name, expected) in [
        ("pgaudit.role", AUDIT_ROLE),
        ("pgaudit.log_parameter", "off"),
        ("pgaudit.log_client", "off"),
    ] {
        let value: String = sqlx::query_scalar("SELECT current_setting($1)")
            .bind(name)
            .fetch_one(&mut service)
            .await
            .unwrap();
        assert_eq!(value, expected, "{name} in the service role's session");
    }
    let refused = sqlx::raw_sql("SET pgaudit.log_parameter = on")
        .execute(&mut service)
        .await
        .expect_err("the service role must not be able to change pgaudit's settings");
    assert_eq!(
        refused
            .as_database_error()
            .and_then(|e| e.code())
            .as_deref(),
        Some("42501"),
        "{refused}"
    );

    // A secret with a value found nowhere else, stored the way the API stores it.
    let keyring = tempfile::tempdir().unwrap();
    let kms =
        LocalKms::open_or_create(keyring.path().join("keyring"), MasterKey::generate()).unwrap();
    let app = App::new(
        Arc::new(db.service_store().await),
        Arc::new(kms),
        Arc::new(Pepper::generate()),
        Policy::default(),
    );
    let created = tenants::create_tenant(&app, "pgaudit").await.unwrap();
    let operator = OperatorPrincipal {
        tenant: created.tenant_id,
        id: created.admin_operator_id,
        role: Role::Admin,
    };
    let plaintext = format!("pgaudit-canary-{}", Uuid::new_v4().simple());
    let request = PutSecretRequest {
        value: plaintext.clone(),
        sensitivity: None,
        allowed_hosts: vec!["api.example.com".into()],
    };
    secrets::put(
        &app,
        operator,
        SECRET_PATH,
        request,
        &RequestContext::default(),
    )
    .await
    .expect("store the secret");

    // The read, as the service role confined to the tenant. The comment makes the statement
    // text, which pgaudit logs, unique to this run.
    let marker = format!("pgaudit-test-{}", Uuid::new_v4().simple());
    let read = format!(
        "/* {marker} */ SELECT v.ciphertext FROM secrets s JOIN secret_versions v \
         ON v.secret_id = s.id AND v.version = s.current_version WHERE s.path = $1"
    );
    let mut tx = service.begin().await.unwrap();
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(created.tenant_id.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    let ciphertexts: Vec<Vec<u8>> = sqlx::query_scalar(AssertSqlSafe(read))
        .bind(SECRET_PATH)
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(ciphertexts.len(), 1, "the service role reads its secret");
    let ciphertext = &ciphertexts[0];
    assert!(!ciphertext.is_empty());
    service.close().await.ok();

    // The entries: `AUDIT: OBJECT,<statement>,<substatement>,READ,SELECT,TABLE,public.<table>,
    // <statement text>,<not logged>` (pgaudit's README, "Format"), one per audited table.
    let prefix: String = sqlx::query_scalar("SHOW log_line_prefix")
        .fetch_one(&admin)
        .await
        .unwrap();
    for table in ["public.secrets", "public.secret_versions"] {
        let entry = format!(",READ,SELECT,TABLE,{table},");
        let line = log
            .eventually(start, &format!("pgaudit READ entry for {table}"), |line| {
                line.contains("AUDIT: OBJECT,") && line.contains(&entry) && line.contains(&marker)
            })
            .await;
        assert!(
            line.contains(",<not logged>"),
            "bind values must not be logged (pgaudit.log_parameter = off): {line}"
        );
        // Attributed to the session, as far as log_line_prefix says who and where.
        if prefix.contains("%u") {
            assert!(
                line.contains(SERVICE_ROLE),
                "not the service role's: {line}"
            );
        }
        if prefix.contains("%d") {
            assert!(line.contains(&db.name), "not this database's: {line}");
        }
    }
    // The write that stored the secret was audited too (only attributable with %d).
    if prefix.contains("%d") {
        log.eventually(
            start,
            "pgaudit WRITE entry for the stored version",
            |line| {
                line.contains("AUDIT: OBJECT,")
                    && line.contains(",WRITE,INSERT,TABLE,public.secret_versions,")
                    && line.contains(&db.name)
            },
        )
        .await;
    } else {
        println!("log_line_prefix = '{prefix}' has no %d: the write entry is not attributable");
    }

    // Neither the value nor the ciphertext, in any usual encoding, reached the log.
    let appended = log.since(start).await;
    assert!(
        !appended.contains(&plaintext),
        "the secret's value was found in the PostgreSQL log"
    );
    for (what, bytes) in [
        ("the secret's value", plaintext.as_bytes()),
        ("the ciphertext", ciphertext.as_slice()),
    ] {
        for encoded in encodings(bytes) {
            assert!(
                !appended.contains(&encoded),
                "{what} was found in the PostgreSQL log ({encoded})"
            );
        }
    }
}
