//! PostgreSQL's own defences, tested as the roles production uses.
//!
//! Row-level security only means something for a role that is not the tables' owner, not a
//! superuser and not BYPASSRLS, so the isolation tests connect as that service role and run
//! queries with the tenant filter deliberately left out. The append-only audit log is checked
//! twice: the service role lacks the privileges, and even the owner is stopped by the trigger;
//! an owner who disables the trigger can edit history, and the hash chain then shows where.
//!
//! Needs `AGENT_SECRET_STORE_TEST_DATABASE_URL` (see `support`); skipped without it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use agent_secret_control_plane::audit::{
    now_micros, Actor, AuditDraft, AuditEventType, ChainVerifier,
};
use agent_secret_control_plane::store::sql::SqlStore;
use agent_secret_control_plane::store::{
    AgentRecord, AgentStore, ApprovalStore, ArchiveStore, AuditFilter, AuditStore, CheckpointStore,
    KeyStore, NewSecretVersion, NewSession, OperatorAccountStore, SecretStore, SidecarRecord,
    SidecarStore, SinkCursorStore, TenantStore, TokenRecord, TokenStore,
};
use agent_secret_core::api::{Sensitivity, TokenStatus};
use agent_secret_core::envelope::Envelope;
use agent_secret_core::host::HostPattern;
use agent_secret_core::ids::{AgentId, SidecarId, TenantId, TokenId};
use agent_secret_core::path::SecretPath;
use agent_secret_core::scope::Scope;
use chrono::Duration;
use sqlx::{PgPool, Postgres, Transaction};
use support::{TestDb, SERVICE_ROLE};
use uuid::Uuid;

/// Every row-level-secured table and the column holding its tenant.
const TENANT_TABLES: [(&str, &str); 18] = [
    ("tenants", "SELECT id FROM tenants"),
    ("operators", "SELECT tenant_id FROM operators"),
    ("sidecars", "SELECT tenant_id FROM sidecars"),
    ("agents", "SELECT tenant_id FROM agents"),
    ("secrets", "SELECT tenant_id FROM secrets"),
    ("secret_versions", "SELECT tenant_id FROM secret_versions"),
    ("tokens", "SELECT tenant_id FROM tokens"),
    ("audit_events", "SELECT tenant_id FROM audit_events"),
    ("tenant_keys", "SELECT tenant_id FROM tenant_keys"),
    (
        "secret_tombstones",
        "SELECT tenant_id FROM secret_tombstones",
    ),
    (
        "approval_requests",
        "SELECT tenant_id FROM approval_requests",
    ),
    (
        "approval_decisions",
        "SELECT tenant_id FROM approval_decisions",
    ),
    (
        "token_reservations",
        "SELECT tenant_id FROM token_reservations",
    ),
    ("audit_keys", "SELECT tenant_id FROM audit_keys"),
    (
        "audit_sink_cursors",
        "SELECT tenant_id FROM audit_sink_cursors",
    ),
    ("audit_archives", "SELECT tenant_id FROM audit_archives"),
    (
        "operator_accounts",
        "SELECT tenant_id FROM operator_accounts",
    ),
    (
        "operator_sessions",
        "SELECT tenant_id FROM operator_sessions",
    ),
];

/// The tables read before a tenant is known, outside row-level security. They map names and
/// ids to a tenant and hold nothing secret.
const UNCONFINED_TABLES: [&str; 2] = ["credential_index", "operator_logins"];

fn draft(t: AuditEventType) -> AuditDraft {
    AuditDraft::new(t, Actor::system())
}

/// A tenant with an operator, a sidecar, an agent, a token, a secret and a few audit events.
async fn seed_tenant(store: &SqlStore) -> TenantId {
    let (tenant, admin) = support::tenant_records();
    store
        .create_tenant(&tenant, &admin, draft(AuditEventType::TenantCreated))
        .await
        .unwrap();
    // The admin's account (password, TOTP) and a session.
    store
        .set_password(
            tenant.id,
            admin.id,
            "$2b$04$hash",
            now_micros(),
            draft(AuditEventType::OperatorPasswordSet),
        )
        .await
        .unwrap();
    store
        .start_session(
            &NewSession {
                tenant_id: tenant.id,
                operator_id: admin.id,
                id_hash: *tenant
                    .id
                    .0
                    .as_bytes()
                    .repeat(2)
                    .first_chunk::<32>()
                    .unwrap(),
                csrf_hash: [9; 32],
                created_at: now_micros(),
                expires_at: now_micros() + Duration::hours(1),
                ip: None,
                user_agent: None,
            },
            None,
            draft(AuditEventType::SessionCreated),
        )
        .await
        .unwrap();
    let sidecar = SidecarRecord {
        id: SidecarId::new(),
        tenant_id: tenant.id,
        name: "edge".into(),
        key_hash: vec![7; 32],
        created_at: now_micros(),
        revoked_at: None,
        last_seen_at: None,
        last_version: None,
    };
    store
        .create_sidecar(&sidecar, draft(AuditEventType::SidecarCreated))
        .await
        .unwrap();
    let agent = AgentRecord {
        id: AgentId::new(),
        tenant_id: tenant.id,
        name: "bot".into(),
        trust_tier: 0,
        key_id: Uuid::now_v7(),
        key_hash: vec![2; 32],
        created_at: now_micros(),
        key_rotated_at: None,
        revoked_at: None,
        ceiling: Vec::new(),
        created_by: None,
    };
    store
        .create_agent(&agent, draft(AuditEventType::AgentCreated))
        .await
        .unwrap();
    let now = now_micros();
    let token = TokenRecord {
        id: TokenId::new(),
        tenant_id: tenant.id,
        agent_id: agent.id,
        scopes: vec![Scope::parse("secrets:read:**").unwrap()],
        key_hash: vec![3; 32],
        status: TokenStatus::Active,
        approved_sensitivity: Sensitivity::Standard,
        ip_allowlist: vec![],
        max_uses: None,
        uses: 0,
        expires_at: now + Duration::hours(1),
        created_at: now,
        revoked_at: None,
    };
    store
        .insert_token(&token, draft(AuditEventType::TokenIssued))
        .await
        .unwrap();
    // A counted use of a limited token leaves a reservation row.
    let limited = TokenRecord {
        id: TokenId::new(),
        max_uses: Some(5),
        ..token.clone()
    };
    store
        .insert_token(&limited, draft(AuditEventType::TokenIssued))
        .await
        .unwrap();
    let reserved = agent_secret_control_plane::store::TokenUse {
        id: limited.id,
        now,
        audit: vec![draft(AuditEventType::SecretRead)],
        reservation: Some(agent_secret_control_plane::store::NewReservation {
            id: Uuid::new_v4(),
            sidecar: agent_secret_core::ids::SidecarId::new(),
            deadline: now + Duration::minutes(1),
        }),
    };
    store
        .consume_token_uses(tenant.id, vec![reserved])
        .await
        .unwrap();
    // A pending token with its approval request and one human's decision.
    let pending = TokenRecord {
        id: TokenId::new(),
        status: TokenStatus::PendingApproval,
        ..token.clone()
    };
    let unlocks = agent_secret_core::api::Unlocks {
        agent_id: agent.id.to_string(),
        trust_tier: 0,
        scopes: vec!["secrets:read:**".into()],
        secrets: vec![],
        ceiling_additions: vec![],
        ttl_seconds: 3600,
        ip_allowlist: vec![],
        max_uses: None,
    };
    let request = agent_secret_control_plane::store::ApprovalRecord {
        id: agent_secret_core::ids::ApprovalId::new(),
        tenant_id: tenant.id,
        token_id: Some(pending.id),
        agent_id: agent.id,
        requested_by: format!("agent:{}", agent.id),
        status: agent_secret_core::api::ApprovalStatus::Pending,
        digest: agent_secret_core::policy::approval::digest(&unlocks),
        unlocks,
        required_approvals: 2,
        delay_seconds: 0,
        time_lock_until: None,
        created_at: now,
        expires_at: now + Duration::hours(1),
        decided_at: None,
    };
    let issued = store
        .issue_token(agent_secret_control_plane::store::NewToken {
            token: &pending,
            approval: Some(&request),
            audit: vec![draft(AuditEventType::ApprovalRequested)],
            allowed: &|_| true,
        })
        .await
        .unwrap();
    assert_eq!(
        issued,
        agent_secret_control_plane::store::IssueOutcome::Issued
    );
    let decision = agent_secret_control_plane::store::DecisionRecord {
        request_id: request.id,
        operator_id: admin.id,
        approve: true,
        digest: request.digest,
        comment: None,
        decided_at: now,
    };
    store
        .record_decision(
            tenant.id,
            &decision,
            draft(AuditEventType::ApprovalApproved),
        )
        .await
        .unwrap();
    let secret = NewSecretVersion {
        path: SecretPath::parse("production/openai/api_key").unwrap(),
        version: 1,
        sensitivity: Sensitivity::Standard,
        allowed_hosts: vec![HostPattern::parse("api.openai.com").unwrap()],
        envelope: Envelope {
            key_name: "k".into(),
            key_version: "1".into(),
            wrapped_dek: vec![4; 48],
            nonce: vec![5; 12],
            ciphertext: vec![6; 40],
        },
    };
    store
        .put_secret_version(tenant.id, &secret, draft(AuditEventType::SecretWrite))
        .await
        .unwrap();
    // A deleted secret leaves a tombstone (its last version).
    let gone = NewSecretVersion {
        path: SecretPath::parse("old/deleted").unwrap(),
        ..secret
    };
    store
        .put_secret_version(tenant.id, &gone, draft(AuditEventType::SecretWrite))
        .await
        .unwrap();
    store
        .delete_secret(tenant.id, &gone.path, draft(AuditEventType::SecretDelete))
        .await
        .unwrap();
    store
        .insert_audit_key(
            tenant.id,
            &agent_secret_control_plane::store::AuditKeyRecord {
                key_id: "k1".into(),
                public_key: vec![7; 32],
                envelope: gone.envelope.clone(),
                created_at: now,
            },
        )
        .await
        .unwrap();
    assert!(store
        .advance_sink_cursor(tenant.id, "splunk", 0, 3)
        .await
        .unwrap());
    tenant.id
}

async fn seeded() -> Option<(TestDb, SqlStore, TenantId, TenantId)> {
    let db = support::postgres_test_db().await?;
    let store = db.service_store().await;
    let a = seed_tenant(&store).await;
    let b = seed_tenant(&store).await;
    for tenant in [a, b] {
        store
            .record_primary(
                tenant,
                &format!("tenant-{tenant}"),
                "1",
                draft(AuditEventType::KmsRotated),
            )
            .await
            .unwrap();
    }
    // The owner archives each tenant's first event, so
    // audit_archives has rows to confine too.
    let owner = SqlStore::new(
        agent_secret_control_plane::db::Db::connect(&db.owner_url)
            .await
            .unwrap(),
    );
    for tenant in [a, b] {
        // A consumer that has read one event holds the archive to that one: the tests below
        // edit later events.
        assert!(store
            .advance_sink_cursor(tenant, "slow", 0, 1)
            .await
            .unwrap());
        let report = agent_secret_control_plane::service::audit_archive::archive(
            &owner,
            tenant,
            now_micros(),
            Actor::system(),
            &mut Vec::new(),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(report.through_seq, 1);
    }
    Some((db, store, a, b))
}

async fn begin_as(pool: &PgPool, tenant: Option<TenantId>) -> Transaction<'static, Postgres> {
    let mut tx = pool.begin().await.unwrap();
    if let Some(t) = tenant {
        sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
            .bind(t.to_string())
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx
}

/// Runs one statement in its own transaction as `pool`'s role, tenant set, and returns the
/// database error's SQLSTATE and message.
async fn refused(pool: &PgPool, tenant: TenantId, sql: &'static str) -> (String, String) {
    let mut tx = begin_as(pool, Some(tenant)).await;
    let err = sqlx::query(sql).execute(&mut *tx).await.expect_err(sql);
    let db_err = err.as_database_error().expect("a database error");
    (
        db_err.code().unwrap_or_default().into_owned(),
        db_err.message().to_owned(),
    )
}

async fn chain_report(
    store: &SqlStore,
    tenant: TenantId,
) -> agent_secret_control_plane::audit::ChainReport {
    let events = store
        .list_audit(tenant, &AuditFilter::default())
        .await
        .unwrap();
    // The database's chain starts after the last archive (seeded() archives a prefix).
    let mut verifier = match store.audit_archive(tenant).await.unwrap() {
        Some(m) => ChainVerifier::starting_at(m.through_seq + 1, m.through_hash),
        None => ChainVerifier::default(),
    };
    events.iter().for_each(|e| verifier.push(e));
    verifier.finish(store.audit_head(tenant).await.unwrap())
}

#[tokio::test]
async fn queries_without_a_tenant_filter_see_only_the_current_tenant() {
    let Some((db, _store, a, b)) = seeded().await else {
        return;
    };
    let service = db.service_pool().await;
    let mut tx = begin_as(&service, Some(a)).await;
    for (table, sql) in TENANT_TABLES {
        let tenants: Vec<String> = sqlx::query_scalar(sql).fetch_all(&mut *tx).await.unwrap();
        assert!(
            !tenants.is_empty(),
            "{table}: tenant A's own rows are visible"
        );
        assert!(
            tenants.iter().all(|t| *t == a.to_string()),
            "{table}: `{sql}` as tenant A returned tenant B's rows"
        );
        assert!(!tenants.contains(&b.to_string()));
    }
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn queries_with_no_tenant_set_see_nothing() {
    let Some((db, _store, _a, _b)) = seeded().await else {
        return;
    };
    let service = db.service_pool().await;
    let mut tx = begin_as(&service, None).await;
    for (table, sql) in TENANT_TABLES {
        let rows: Vec<String> = sqlx::query_scalar(sql).fetch_all(&mut *tx).await.unwrap();
        assert!(
            rows.is_empty(),
            "{table}: {} rows visible with no tenant set",
            rows.len()
        );
    }
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn the_tenant_setting_does_not_outlive_its_transaction() {
    let Some((db, _store, a, _b)) = seeded().await else {
        return;
    };
    // One connection, so the second query surely reuses the first one's session.
    let service = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&db.service_url)
        .await
        .unwrap();
    let mut tx = begin_as(&service, Some(a)).await;
    let inside: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM secrets")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let after: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM secrets")
        .fetch_one(&service)
        .await
        .unwrap();
    assert_eq!(
        (inside, after),
        (1, 0),
        "SET LOCAL must end with the transaction"
    );
}

#[tokio::test]
async fn rows_cannot_be_written_into_or_moved_to_another_tenant() {
    let Some((db, _store, a, b)) = seeded().await else {
        return;
    };
    let service = db.service_pool().await;
    let mut tx = begin_as(&service, Some(a)).await;
    let err = sqlx::query(
        "INSERT INTO sidecars (id, tenant_id, name, key_hash, created_at) \
         VALUES ($1, $2, 'x', '\\x00', 0)",
    )
    .bind(Uuid::now_v7().to_string())
    .bind(b.to_string())
    .execute(&mut *tx)
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("row-level security"),
        "an insert for tenant B while acting as A must be refused: {err}"
    );
    tx.rollback().await.unwrap();

    let (code, _) = refused(&service, a, "UPDATE secrets SET tenant_id = 'other'").await;
    assert_eq!(code, "42501", "the service may not rewrite tenant_id");
}

#[tokio::test]
async fn the_service_role_cannot_update_delete_or_truncate_audit_events() {
    let Some((db, store, a, _b)) = seeded().await else {
        return;
    };
    let service = db.service_pool().await;
    for sql in [
        "UPDATE audit_events SET reason = 'edited'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
    ] {
        let (code, message) = refused(&service, a, sql).await;
        assert_eq!(
            code, "42501",
            "{sql}: expected permission denied, got {message}"
        );
    }
    assert!(chain_report(&store, a).await.valid);
}

#[tokio::test]
async fn the_owner_is_refused_by_the_append_only_trigger() {
    let Some((db, store, a, _b)) = seeded().await else {
        return;
    };
    let owner = db.owner_pool().await;
    for sql in [
        "UPDATE audit_events SET reason = 'edited' WHERE seq = 2",
        "DELETE FROM audit_events WHERE seq = 2",
        "TRUNCATE audit_events",
    ] {
        let (_, message) = refused(&owner, a, sql).await;
        assert!(message.contains("append-only"), "{sql}: {message}");
    }
    let report = chain_report(&store, a).await;
    assert!(report.valid, "{report:?}");
}

#[tokio::test]
async fn an_edit_with_the_trigger_disabled_breaks_the_chain_at_that_event() {
    let Some((db, store, a, b)) = seeded().await else {
        return;
    };
    assert!(chain_report(&store, a).await.valid);
    let owner = db.owner_pool().await;
    let mut tx = begin_as(&owner, Some(a)).await;
    for sql in [
        "ALTER TABLE audit_events DISABLE TRIGGER USER",
        "UPDATE audit_events SET success = false, reason = 'tampered' WHERE seq = 3",
        "ALTER TABLE audit_events ENABLE TRIGGER USER",
    ] {
        sqlx::query(sql).execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();

    let report = chain_report(&store, a).await;
    assert!(!report.valid, "an edited event must break the chain");
    assert_eq!(report.first_bad_seq, Some(3), "{report:?}");
    assert!(
        chain_report(&store, b).await.valid,
        "tenant B's chain is untouched"
    );
}

#[tokio::test]
async fn the_service_role_is_confined_by_construction() {
    let Some(db) = support::postgres_test_db().await else {
        return;
    };
    let admin = db.admin_pool().await;
    let (superuser, bypass): (bool, bool) =
        sqlx::query_as("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1")
            .bind(SERVICE_ROLE)
            .fetch_one(&admin)
            .await
            .unwrap();
    assert!(
        !superuser && !bypass,
        "the service role must be NOSUPERUSER NOBYPASSRLS"
    );

    let tables: Vec<(String, String, bool, bool)> = sqlx::query_as(
        "SELECT c.relname::text, pg_get_userbyid(c.relowner)::text, c.relrowsecurity, \
                c.relforcerowsecurity \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname <> '_sqlx_migrations'",
    )
    .fetch_all(&admin)
    .await
    .unwrap();
    assert_eq!(
        tables.len(),
        TENANT_TABLES.len() + UNCONFINED_TABLES.len(),
        "{tables:?}"
    );
    for (table, owner, rls, forced) in &tables {
        assert_ne!(
            owner, SERVICE_ROLE,
            "{table} must not be owned by the service role"
        );
        let tenant_table = TENANT_TABLES.iter().any(|(t, _)| t == table);
        assert!(
            tenant_table || UNCONFINED_TABLES.contains(&table.as_str()),
            "{table} is neither a tenant table nor a known unconfined one"
        );
        assert_eq!(
            (*rls, *forced),
            (tenant_table, tenant_table),
            "{table}: ENABLE + FORCE row level security exactly on tenant tables"
        );
        let truncate: bool = sqlx::query_scalar("SELECT has_table_privilege($1, $2, 'TRUNCATE')")
            .bind(SERVICE_ROLE)
            .bind(table)
            .fetch_one(&admin)
            .await
            .unwrap();
        assert!(!truncate, "{table}: the service must never TRUNCATE");
    }
    let (update, delete, update_any_column): (bool, bool, bool) = sqlx::query_as(
        "SELECT has_table_privilege($1, 'audit_events', 'UPDATE'), \
                has_table_privilege($1, 'audit_events', 'DELETE'), \
                has_any_column_privilege($1, 'audit_events', 'UPDATE')",
    )
    .bind(SERVICE_ROLE)
    .fetch_one(&admin)
    .await
    .unwrap();
    assert!(
        !update && !delete && !update_any_column,
        "the service must not UPDATE or DELETE audit_events"
    );
}

/// The login index is read without a tenant, so it must hold nothing a login could be won
/// with: names and ids only, no hash of any kind.
#[tokio::test]
async fn the_login_index_holds_no_secret_material() {
    let Some((db, _store, a, _b)) = seeded().await else {
        return;
    };
    let admin = db.admin_pool().await;
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns \
         WHERE table_name = 'operator_logins' ORDER BY ordinal_position",
    )
    .fetch_all(&admin)
    .await
    .unwrap();
    assert_eq!(
        columns,
        ["tenant_name", "username", "tenant_id", "operator_id"],
        "operator_logins grew a column: is it secret?"
    );
    let service = db.service_pool().await;
    let mut tx = begin_as(&service, None).await;
    let rows: Vec<String> = sqlx::query_scalar("SELECT tenant_id FROM operator_logins")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert!(
        rows.contains(&a.to_string()),
        "login finds a tenant before RLS applies"
    );
}
