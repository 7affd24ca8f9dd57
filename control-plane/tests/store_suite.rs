//! The storage suite: one set of behaviours, run against every backend.
//!
//! Each behaviour is an `async fn(&Harness)` below; `backend_suite!` turns the list into a
//! `#[tokio::test]` per backend (`sqlite::name` always, `postgres::name` when
//! `AGENT_SECRET_STORE_TEST_DATABASE_URL` is set), each on a fresh database. On PostgreSQL the
//! store connects as the service role, exactly as the control plane runs; the harness's own
//! inspection queries run as superuser so they see what is really stored.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use agent_secret_control_plane::audit::{
    now_micros, Actor, AuditDraft, AuditEventType, ChainVerifier,
};
use agent_secret_control_plane::db::Db;
use agent_secret_control_plane::store::sql::SqlStore;
use agent_secret_control_plane::store::{
    AgentRecord, AuditFilter, AuditKeyRecord, CheckpointDue, NewSecretVersion, OperatorRecord,
    SidecarRecord, SnapshotAsk, Store, StoreError, TenantRecord, TokenRecord, TokenUse, UseOutcome,
};
use agent_secret_core::api::{Role, Sensitivity, TokenStatus};
use agent_secret_core::credential::CredentialKind;
use agent_secret_core::envelope::{seal, Envelope, SecretAad};
use agent_secret_core::host::HostPattern;
use agent_secret_core::ids::{AgentId, OperatorId, SidecarId, TenantId, TokenId};
use agent_secret_core::kms::local::{LocalKms, MasterKey};
use agent_secret_core::kms::Kms;
use agent_secret_core::path::SecretPath;
use agent_secret_core::scope::Scope;
use agent_secret_core::secret::SecretBytes;
use chrono::Duration;
use support::{SqliteTestDb, TestDb};
use uuid::Uuid;

/// Marker reason that the test-only trigger refuses to insert into audit_events.
const FAIL_AUDIT: &str = "fail-audit-test";

const SQLITE_FAILING_AUDIT_TRIGGER: &str = "CREATE TRIGGER fail_audit_test \
     BEFORE INSERT ON audit_events WHEN NEW.reason = 'fail-audit-test' \
     BEGIN SELECT RAISE(ABORT, 'audit insert refused by test trigger'); END;";
const POSTGRES_FAILING_AUDIT_TRIGGER: &str = r#"
CREATE FUNCTION fail_audit_test() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.reason = 'fail-audit-test' THEN
        RAISE EXCEPTION 'audit insert refused by test trigger';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER fail_audit_test BEFORE INSERT ON audit_events
    FOR EACH ROW EXECUTE FUNCTION fail_audit_test();
"#;

enum Backend {
    Sqlite(SqliteTestDb),
    Postgres { db: TestDb, admin: sqlx::PgPool },
}

/// A store on a fresh database, plus backend-specific access for inspection.
struct Harness {
    store: SqlStore,
    backend: Backend,
}

impl Harness {
    async fn sqlite() -> Harness {
        let (db, store) = support::sqlite_test_db().await;
        Harness {
            store,
            backend: Backend::Sqlite(db),
        }
    }

    async fn postgres() -> Option<Harness> {
        let db = support::postgres_test_db().await?;
        let store = db.service_store().await;
        let admin = db.admin_pool().await;
        Some(Harness {
            store,
            backend: Backend::Postgres { db, admin },
        })
    }

    fn store(&self) -> &dyn Store {
        &self.store
    }

    /// Counts rows with full visibility (SQLite directly, PostgreSQL as superuser).
    /// `sql` has one parameter, the tenant id.
    async fn count(&self, sql: &'static str, tenant: TenantId) -> i64 {
        match (&self.backend, self.store.db()) {
            (Backend::Postgres { admin, .. }, _) => sqlx::query_scalar(sql)
                .bind(tenant.to_string())
                .fetch_one(admin)
                .await
                .unwrap(),
            (Backend::Sqlite(_), Db::Sqlite(pool)) => sqlx::query_scalar(sql)
                .bind(tenant.to_string())
                .fetch_one(pool)
                .await
                .unwrap(),
            _ => unreachable!("harness and store disagree on the backend"),
        }
    }

    /// Installs a trigger (as the schema owner) that makes audit inserts with the
    /// `fail-audit-test` reason fail, as a full disk or a lost connection would.
    async fn install_failing_audit_trigger(&self) {
        match (&self.backend, self.store.db()) {
            (Backend::Postgres { db, .. }, _) => {
                let owner = db.owner_pool().await;
                sqlx::raw_sql(POSTGRES_FAILING_AUDIT_TRIGGER)
                    .execute(&owner)
                    .await
                    .unwrap();
                owner.close().await;
            }
            (Backend::Sqlite(_), Db::Sqlite(pool)) => {
                sqlx::raw_sql(SQLITE_FAILING_AUDIT_TRIGGER)
                    .execute(pool)
                    .await
                    .unwrap();
            }
            _ => unreachable!("harness and store disagree on the backend"),
        }
    }

    /// Everything the database holds, as bytes: SQLite's files, or a `pg_dump`.
    fn stored_bytes(&self) -> Option<Vec<u8>> {
        match &self.backend {
            Backend::Sqlite(db) => Some(db.raw_bytes()),
            Backend::Postgres { db, .. } => db.pg_dump(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Fixtures

fn draft(event_type: AuditEventType) -> AuditDraft {
    AuditDraft::new(event_type, Actor::system())
}

fn path(s: &str) -> SecretPath {
    SecretPath::parse(s).unwrap()
}

async fn new_tenant(store: &dyn Store) -> (TenantRecord, OperatorRecord) {
    let (tenant, admin) = support::tenant_records();
    store
        .create_tenant(&tenant, &admin, draft(AuditEventType::TenantCreated))
        .await
        .unwrap();
    (tenant, admin)
}

async fn new_agent(store: &dyn Store, tenant: TenantId) -> AgentRecord {
    let agent = AgentRecord {
        id: AgentId::new(),
        tenant_id: tenant,
        name: "ci-bot".into(),
        trust_tier: 1,
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
    agent
}

fn token(
    tenant: TenantId,
    agent: AgentId,
    status: TokenStatus,
    max_uses: Option<i64>,
    ttl: Duration,
) -> TokenRecord {
    let now = now_micros();
    TokenRecord {
        id: TokenId::new(),
        tenant_id: tenant,
        agent_id: agent,
        scopes: vec![Scope::parse("secrets:read:production/openai/*").unwrap()],
        key_hash: vec![3; 32],
        status,
        approved_sensitivity: Sensitivity::Standard,
        ip_allowlist: vec![
            "10.0.0.0/8".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ],
        max_uses,
        uses: 0,
        expires_at: now + ttl,
        created_at: now,
        revoked_at: None,
    }
}

async fn new_token(
    store: &dyn Store,
    tenant: TenantId,
    agent: AgentId,
    max_uses: Option<i64>,
) -> TokenRecord {
    let t = token(
        tenant,
        agent,
        TokenStatus::Active,
        max_uses,
        Duration::hours(1),
    );
    store
        .insert_token(&t, draft(AuditEventType::TokenIssued))
        .await
        .unwrap();
    t
}

/// A stand-in envelope; `tag` makes versions distinguishable.
fn envelope(tag: u8) -> Envelope {
    Envelope {
        key_name: "tenant-key".into(),
        key_version: "1".into(),
        wrapped_dek: vec![tag; 48],
        nonce: vec![tag; 12],
        ciphertext: vec![tag; 40],
    }
}

fn version(p: &str, version: i64, env: Envelope) -> NewSecretVersion {
    NewSecretVersion {
        path: path(p),
        version,
        sensitivity: Sensitivity::Standard,
        allowed_hosts: vec![HostPattern::parse("api.openai.com").unwrap()],
        envelope: env,
    }
}

async fn put(store: &dyn Store, tenant: TenantId, p: &str, v: i64) {
    store
        .put_secret_version(
            tenant,
            &version(p, v, envelope(v as u8)),
            draft(AuditEventType::SecretWrite).path(p),
        )
        .await
        .unwrap();
}

async fn audit_count(store: &dyn Store, tenant: TenantId, t: AuditEventType) -> usize {
    let filter = AuditFilter {
        types: vec![t],
        ..AuditFilter::default()
    };
    store.list_audit(tenant, &filter).await.unwrap().len()
}

/// The tenant's whole chain verifies against its head.
async fn assert_chain_valid(store: &dyn Store, tenant: TenantId) {
    let events = store
        .list_audit(tenant, &AuditFilter::default())
        .await
        .unwrap();
    let mut verifier = ChainVerifier::default();
    events.iter().for_each(|e| verifier.push(e));
    let report = verifier.finish(store.audit_head(tenant).await.unwrap());
    assert!(report.valid, "{report:?}");
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Raw bytes (SQLite files) or the lowercase hex a `pg_dump` prints for bytea.
fn contains_raw_or_hex(haystack: &[u8], needle: &[u8]) -> bool {
    contains(haystack, needle) || contains(haystack, hex::encode(needle).as_bytes())
}

// ---------------------------------------------------------------------------------------
// The suite

async fn store_answers_ping(h: &Harness) {
    h.store().ping().await.unwrap();
}

async fn tenant_is_created_with_its_admin_and_first_audit_event(h: &Harness) {
    let store = h.store();
    let (tenant, admin) = new_tenant(store).await;
    assert_eq!(
        store.get_tenant(tenant.id).await.unwrap(),
        Some(tenant.clone())
    );
    assert_eq!(store.get_tenant(TenantId::new()).await.unwrap(), None);
    assert_eq!(
        store.list_operators(tenant.id).await.unwrap(),
        vec![admin.clone()]
    );
    assert_eq!(
        store.lookup_credential(admin.id.as_uuid()).await.unwrap(),
        Some((tenant.id, CredentialKind::Operator))
    );
    let head = store
        .audit_head(tenant.id)
        .await
        .unwrap()
        .expect("a chain head");
    assert_eq!(head.0, 1, "tenant.created starts the chain");
}

async fn tenant_names_are_unique(h: &Harness) {
    let store = h.store();
    let (tenant, _) = new_tenant(store).await;
    let twin = TenantRecord {
        id: TenantId::new(),
        name: tenant.name.clone(),
        created_at: now_micros(),
    };
    let admin = OperatorRecord {
        id: OperatorId::new(),
        tenant_id: twin.id,
        name: "admin".into(),
        role: Role::Admin,
        key_hash: vec![1; 32],
        created_at: now_micros(),
        revoked_at: None,
    };
    let err = store
        .create_tenant(&twin, &admin, draft(AuditEventType::TenantCreated))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(store.get_tenant(twin.id).await.unwrap(), None);
    assert_eq!(
        store.lookup_credential(admin.id.as_uuid()).await.unwrap(),
        None
    );
}

async fn credential_index_resolves_every_principal_to_its_tenant(h: &Harness) {
    let store = h.store();
    let (tenant, _) = new_tenant(store).await;
    let agent = new_agent(store, tenant.id).await;
    let tok = new_token(store, tenant.id, agent.id, None).await;
    let sidecar = SidecarRecord {
        id: SidecarId::new(),
        tenant_id: tenant.id,
        name: "edge-1".into(),
        key_hash: vec![4; 32],
        created_at: now_micros(),
        revoked_at: None,
        last_seen_at: None,
        last_version: None,
    };
    store
        .create_sidecar(&sidecar, draft(AuditEventType::SidecarCreated))
        .await
        .unwrap();
    for (id, kind) in [
        (agent.key_id, CredentialKind::Agent),
        (tok.id.as_uuid(), CredentialKind::Token),
        (sidecar.id.as_uuid(), CredentialKind::Sidecar),
    ] {
        assert_eq!(
            store.lookup_credential(id).await.unwrap(),
            Some((tenant.id, kind)),
            "{kind:?} credential must resolve to its tenant"
        );
    }
    assert_eq!(store.lookup_credential(Uuid::now_v7()).await.unwrap(), None);
    // The agent is indexed by its key id, not its id.
    assert_eq!(
        store.lookup_credential(agent.id.as_uuid()).await.unwrap(),
        None
    );
}

async fn operators_are_created_listed_and_confined_to_their_tenant(h: &Harness) {
    let store = h.store();
    let (tenant, admin) = new_tenant(store).await;
    let (other, _) = new_tenant(store).await;
    let approver = OperatorRecord {
        id: OperatorId::new(),
        tenant_id: tenant.id,
        name: "alice".into(),
        role: Role::Approver,
        key_hash: vec![5; 32],
        created_at: now_micros() + Duration::seconds(1),
        revoked_at: None,
    };
    store
        .create_operator(&approver, draft(AuditEventType::OperatorCreated))
        .await
        .unwrap();
    assert_eq!(
        store.get_operator(tenant.id, approver.id).await.unwrap(),
        Some(approver.clone())
    );
    assert_eq!(
        store.get_operator(other.id, approver.id).await.unwrap(),
        None
    );
    assert_eq!(
        store.list_operators(tenant.id).await.unwrap(),
        vec![admin, approver.clone()]
    );
    let dup = store
        .create_operator(&approver, draft(AuditEventType::OperatorCreated))
        .await
        .unwrap_err();
    assert!(matches!(dup, StoreError::Conflict(_)), "{dup:?}");
}

async fn sidecars_are_listed_and_revoked_once(h: &Harness) {
    let store = h.store();
    let (tenant, _) = new_tenant(store).await;
    let sidecar = SidecarRecord {
        id: SidecarId::new(),
        tenant_id: tenant.id,
        name: "edge-1".into(),
        key_hash: vec![4; 32],
        created_at: now_micros(),
        revoked_at: None,
        last_seen_at: None,
        last_version: None,
    };
    store
        .create_sidecar(&sidecar, draft(AuditEventType::SidecarCreated))
        .await
        .unwrap();
    assert_eq!(
        store.list_sidecars(tenant.id).await.unwrap(),
        vec![sidecar.clone()]
    );
    // A heartbeat is recorded without an audit event.
    let seen = now_micros();
    store
        .sidecar_seen(tenant.id, sidecar.id, seen, Some("0.9.1"))
        .await
        .unwrap();
    let beat = store
        .get_sidecar(tenant.id, sidecar.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (beat.last_seen_at, beat.last_version.as_deref()),
        (Some(seen), Some("0.9.1"))
    );
    let at = now_micros();
    let revoke = || {
        store.revoke_sidecar(
            tenant.id,
            sidecar.id,
            at,
            draft(AuditEventType::SidecarRevoked),
        )
    };
    assert!(revoke().await.unwrap(), "first revocation revokes");
    assert!(!revoke().await.unwrap(), "second revocation is a no-op");
    assert_eq!(
        audit_count(store, tenant.id, AuditEventType::SidecarRevoked).await,
        1
    );
    let stored = store
        .get_sidecar(tenant.id, sidecar.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.revoked_at, Some(at));
    assert!(!store
        .revoke_sidecar(
            tenant.id,
            SidecarId::new(),
            at,
            draft(AuditEventType::SidecarRevoked)
        )
        .await
        .unwrap());
}

async fn agents_are_found_by_id_and_by_key(h: &Harness) {
    let store = h.store();
    let (tenant, _) = new_tenant(store).await;
    let (other, _) = new_tenant(store).await;
    let agent = new_agent(store, tenant.id).await;
    assert_eq!(
        store.get_agent(tenant.id, agent.id).await.unwrap(),
        Some(agent.clone())
    );
    assert_eq!(
        store
            .get_agent_by_key(tenant.id, agent.key_id)
            .await
            .unwrap(),
        Some(agent.clone())
    );
    assert_eq!(store.get_agent(other.id, agent.id).await.unwrap(), None);
    assert_eq!(
        store
            .get_agent_by_key(other.id, agent.key_id)
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.list_agents(tenant.id).await.unwrap(), vec![agent]);
    assert!(store.list_agents(other.id).await.unwrap().is_empty());
}

async fn secret_versions_advance_one_at_a_time(h: &Harness) {
    let store = h.store();
    let (tenant, _) = new_tenant(store).await;
    let p = "production/openai/api_key";
    let v1 = store
        .put_secret_version(
            tenant.id,
            &version(p, 1, envelope(1)),
            draft(AuditEventType::SecretWrite),
        )
        .await
        .unwrap();
    assert_eq!(v1.current_version, 1);
    let v2 = store
        .put_secret_version(
            tenant.id,
            &version(p, 2, envelope(2)),
            draft(AuditEventType::SecretWrite),
        )
        .await
        .unwrap();
    assert_eq!(
        (v2.id, v2.current_version, v2.created_at),
        (v1.id, 2, v1.created_at)
    );
    assert_eq!(
        store.get_secret(tenant.id, &path(p)).await.unwrap(),
        Some(v2.clone())
    );

    for stale in [1, 2, 4, 0] {
        let err = store
            .put_secret_version(
                tenant.id,
                &version(p, stale, envelope(9)),
                draft(AuditEventType::SecretWrite),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict(_)),
            "version {stale}: {err:?}"
        );
    }
    let err = store
        .put_secret_version(
            tenant.id,
            &version("new/secret", 2, envelope(9)),
            draft(AuditEventType::SecretWrite),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(_)),
        "a new secret starts at 1: {err:?}"
    );
    assert_eq!(
        store
            .get_secret(tenant.id, &path("new/secret"))
            .await
            .unwrap(),
        None
    );

    let versions = store
        .list_secret_versions(tenant.id, &path(p))
        .await
        .unwrap();
    assert_eq!(
        versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        vec![2, 1],
        "newest first"
    );
    let (other, _) = new_tenant(store).await;
    assert!(store
        .list_secret_versions(other.id, &path(p))
        .await
        .unwrap()
        .is_empty());

    let current = store.current_secrets(tenant.id, &[path(p)]).await.unwrap();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0].record, v2);
    assert_eq!(
        current[0].envelope,
        envelope(2),
        "the current envelope is version 2's"
    );
    assert_eq!(
        audit_count(store, tenant.id, AuditEventType::SecretWrite).await,
        2
    );
}

async fn secrets_are_confined_to_their_tenant(h: &Harness) {
    let store = h.store();
    let (tenant, _) = new_tenant(store).await;
    let (other, _) = new_tenant(store).await;
    put(store, tenant.id, "shared/name", 1).await;
    assert_eq!(
        store
            .get_secret(other.id, &path("shared/name"))
            .await
            .unwrap(),
        None
    );
    assert!(store.list_secrets(other.id, None).await.unwrap().is_empty());
    assert!(store
        .current_secrets(other.id, &[path("shared/name")])
        .await
        .unwrap()
        .is_empty());
    // The same path in another tenant is another secret, starting at version 1.
    put(store, other.id, "shared/name", 1).await;
}

async fn list_secrets_by_prefix_matches_whole_segments(h: &Harness) {
    let store = h.store();
    let (tenant, _) = new_tenant(store).await;
    for p in ["b", "ab/x", "a/y/z", "a", "a/x", "a.b/c", "a_b", "a-b/c"] {
        put(store, tenant.id, p, 1).await;
    }
    let listed = |prefix: Option<&'static str>| async move {
        let prefix = prefix.map(path);
        store
            .list_secrets(tenant.id, prefix.as_ref())
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.path.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        listed(Some("a")).await,
        ["a", "a/x", "a/y/z"],
        "`a` must not list `ab/x`"
    );
    assert_eq!(listed(Some("a/y")).await, ["a/y/z"]);
    assert_eq!(listed(Some("a/y/z")).await, ["a/y/z"]);
    assert!(listed(Some("c")).await.is_empty());
    assert_eq!(
        listed(None).await,
        ["a", "a-b/c", "a.b/c", "a/x", "a/y/z", "a_b", "ab/x", "b"],
        "all secrets, in bytewise path order on every backend"
    );
}

async fn deleting_a_secret_removes_all_its_versions(h: &Harness) {
    let store = h.store();
    let (tenant, _) = new_tenant(store).await;
    let p = "ci/deploy_key";
    put(store, tenant.id, p, 1).await;
    put(store, tenant.id, p, 2).await;
    put(store, tenant.id, "ci/other", 1).await;
    let versions = "SELECT COUNT(*) FROM secret_versions WHERE tenant_id = $1";
    assert_eq!(h.count(versions, tenant.id).await, 3);

    let secret = path(p);
    let del = || store.delete_secret(tenant.id, &secret, draft(AuditEventType::SecretDelete));
    assert!(del().await.unwrap(), "an existing secret is deleted");
    assert!(!del().await.unwrap(), "a missing secret is not");
    assert_eq!(
        audit_count(store, tenant.id, AuditEventType::SecretDelete).await,
        1
    );
    assert_eq!(store.get_secret(tenant.id, &path(p)).await.unwrap(), None);
    assert!(store
        .current_secrets(tenant.id, &[path(p)])
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        h.count(versions, tenant.id).await,
        1,
        "only ci/other's version is left"
    );
    // The path can be reused, above the last version it reached (never from version 1 again:
    // a sidecar may still cache (path, 1)).
    assert_eq!(
        store
            .last_secret_version(tenant.id, &path(p))
            .await
            .unwrap(),
        2
    );
    put(store, tenant.id, p, 3).await;
}

async fn current_secrets_returns_only_existing_paths(h: &Harness) {
    let store = h.store();
    let (tenant, _) = new_tenant(store).await;
    put(store, tenant.id, "x/one", 1).await;
    put(store, tenant.id, "x/two", 1).await;
    put(store, tenant.id, "x/two", 2).await;
    assert!(store
        .current_secrets(tenant.id, &[])
        .await
        .unwrap()
        .is_empty());
    let found = store
        .current_secrets(
            tenant.id,
            &[path("x/two"), path("x/missing"), path("x/one")],
        )
        .await
        .unwrap();
    let summary: Vec<_> = found
        .iter()
        .map(|s| {
            (
                s.record.path.as_str(),
                s.record.current_version,
                s.envelope.nonce[0],
            )
        })
        .collect();
    assert_eq!(summary, [("x/one", 1, 1), ("x/two", 2, 2)]);
}

async fn a_resolve_snapshot_reads_secrets_only_for_an_admitted_token(h: &Harness) {
    let store = h.store();
    let (tenant, _) = new_tenant(store).await;
    let (other, _) = new_tenant(store).await;
    let agent = new_agent(store, tenant.id).await;
    let tok = new_token(store, tenant.id, agent.id, None).await;
    put(store, tenant.id, "x/one", 1).await;
    put(store, tenant.id, "x/two", 1).await;
    put(store, tenant.id, "x/two", 2).await;
    put(store, other.id, "x/one", 1).await;
    let asked = [path("x/two"), path("x/missing"), path("x/one")];
    let admitted = std::sync::atomic::AtomicUsize::new(0);
    let admit = |t: &TokenRecord| {
        admitted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        t.id == tok.id
    };

    let (found, secrets) = store
        .resolve_snapshot(tenant.id, tok.id, &asked, &admit)
        .await
        .unwrap();
    assert_eq!(found, Some(tok.clone()));
    let summary: Vec<_> = secrets
        .iter()
        .map(|s| {
            (
                s.record.tenant_id,
                s.record.path.as_str(),
                s.record.current_version,
                s.envelope.nonce[0],
            )
        })
        .collect();
    assert_eq!(
        summary,
        [(tenant.id, "x/one", 1, 1), (tenant.id, "x/two", 2, 2)],
        "the current versions of the paths that exist, in path order"
    );

    let refuse = |_: &TokenRecord| false;
    let (found, secrets) = store
        .resolve_snapshot(tenant.id, tok.id, &asked, &refuse)
        .await
        .unwrap();
    assert_eq!(found, Some(tok.clone()));
    assert!(secrets.is_empty(), "a refused token reads no secret");

    let (found, secrets) = store
        .resolve_snapshot(other.id, tok.id, &asked, &admit)
        .await
        .unwrap();
    assert_eq!(
        (found, secrets.len()),
        (None, 0),
        "not another tenant's token"
    );
    let (found, secrets) = store
        .resolve_snapshot(tenant.id, TokenId::new(), &asked, &admit)
        .await
        .unwrap();
    assert_eq!((found, secrets.len()), (None, 0), "an unknown id");
    let (found, secrets) = store
        .resolve_snapshot(tenant.id, tok.id, &[], &admit)
        .await
        .unwrap();
    assert_eq!(
        (found, secrets.len()),
        (Some(tok), 0),
        "no paths, nothing read"
    );
    assert_eq!(
        admitted.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "admit is asked only about a found token with paths to read"
    );
}

/// A batch of resolves reads in one transaction what each would have read alone: per ask, its
/// own token and only the secrets its own admission allows, whatever the others asked.
async fn a_batch_of_snapshots_answers_each_resolve_as_if_alone(h: &Harness) {
    let store = h.store();
    let (tenant, _) = new_tenant(store).await;
    let (other, _) = new_tenant(store).await;
    let agent = new_agent(store, tenant.id).await;
    let admitted_token = new_token(store, tenant.id, agent.id, None).await;
    let refused_token = new_token(store, tenant.id, agent.id, None).await;
    let other_agent = new_agent(store, other.id).await;
    let foreign_token = new_token(store, other.id, other_agent.id, None).await;
    put(store, tenant.id, "x/one", 1).await;
    put(store, tenant.id, "x/two", 1).await;
    put(store, tenant.id, "x/two", 2).await;
    put(store, tenant.id, "x/three", 1).await;
    put(store, other.id, "x/one", 1).await;

    let first = [path("x/two"), path("x/one")];
    let second = [path("x/three"), path("x/missing")];
    let both = [path("x/one"), path("x/three")];
    let unknown = TokenId::new();
    let asked = [
        SnapshotAsk {
            id: admitted_token.id,
            paths: &first,
        },
        SnapshotAsk {
            id: refused_token.id,
            paths: &first,
        },
        SnapshotAsk {
            id: admitted_token.id,
            paths: &second,
        },
        SnapshotAsk {
            id: foreign_token.id,
            paths: &first,
        },
        SnapshotAsk {
            id: unknown,
            paths: &first,
        },
        SnapshotAsk {
            id: admitted_token.id,
            paths: &[],
        },
        SnapshotAsk {
            id: admitted_token.id,
            paths: &both,
        },
    ];
    let admit = |_: usize, t: &TokenRecord| t.id == admitted_token.id;
    let answers = store
        .resolve_snapshots(tenant.id, &asked, &admit)
        .await
        .unwrap();
    type Answer<'a> = (Option<TokenId>, Vec<(&'a str, i64)>);
    let summary: Vec<Answer<'_>> = answers
        .iter()
        .map(|(token, secrets)| {
            (
                token.as_ref().map(|t| t.id),
                secrets
                    .iter()
                    .map(|s| {
                        assert_eq!(s.record.tenant_id, tenant.id, "never another tenant's row");
                        (s.record.path.as_str(), s.record.current_version)
                    })
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (Some(admitted_token.id), vec![("x/one", 1), ("x/two", 2)]),
            (Some(refused_token.id), vec![]),
            (Some(admitted_token.id), vec![("x/three", 1)]),
            (None, vec![]),
            (None, vec![]),
            (Some(admitted_token.id), vec![]),
            (Some(admitted_token.id), vec![("x/one", 1), ("x/three", 1)]),
        ],
        "each ask answered in order, as if alone"
    );
    // The same answers one at a time.
    for (i, ask) in asked.iter().enumerate() {
        let alone = store
            .resolve_snapshot(tenant.id, ask.id, ask.paths, &|t| admit(i, t))
            .await
            .unwrap();
        assert_eq!(alone, answers[i], "ask {i}");
    }
    // A batch larger than any padding step, all for one token.
    let many: Vec<SnapshotAsk<'_>> = (0..37)
        .map(|_| SnapshotAsk {
            id: admitted_token.id,
            paths: &first,
        })
        .collect();
    let answers = store
        .resolve_snapshots(tenant.id, &many, &admit)
        .await
        .unwrap();
    assert_eq!(answers.len(), 37);
    assert!(answers.iter().all(|(t, s)| t.is_some() && s.len() == 2));
}

async fn tokens_are_stored_read_and_revoked_once(h: &Harness) {
    let store = h.store();
    let (tenant, _) = new_tenant(store).await;
    let (other, _) = new_tenant(store).await;
    let agent = new_agent(store, tenant.id).await;
    let tok = new_token(store, tenant.id, agent.id, Some(3)).await;
    assert_eq!(
        store.get_token(tenant.id, tok.id).await.unwrap(),
        Some(tok.clone())
    );
    assert_eq!(store.get_token(other.id, tok.id).await.unwrap(), None);

    let pending = token(
        tenant.id,
        agent.id,
        TokenStatus::PendingApproval,
        None,
        Duration::minutes(5),
    );
    store
        .insert_token(&pending, draft(AuditEventType::TokenIssued))
        .await
        .unwrap();
    assert_eq!(
        store
            .get_token(tenant.id, pending.id)
            .await
            .unwrap()
            .map(|t| t.status),
        Some(TokenStatus::PendingApproval)
    );

    // Listed newest first, by agent or all, never another tenant's.
    let listed = store.list_tokens(tenant.id, None, 10).await.unwrap();
    assert_eq!(
        listed.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![pending.id, tok.id]
    );
    assert_eq!(
        store
            .list_tokens(tenant.id, Some(agent.id), 1)
            .await
            .unwrap()[0]
            .id,
        pending.id
    );
    assert!(store
        .list_tokens(other.id, None, 10)
        .await
        .unwrap()
        .is_empty());
    let stranger = AgentId::new();
    assert!(store
        .list_tokens(tenant.id, Some(stranger), 10)
        .await
        .unwrap()
        .is_empty());

    let at = now_micros();
    let revoke = || store.revoke_token(tenant.id, tok.id, at, draft(AuditEventType::TokenRevoked));
    assert!(revoke().await.unwrap());
    assert!(!revoke().await.unwrap(), "revoking twice writes nothing");
    let stored = store.get_token(tenant.id, tok.id).await.unwrap().unwrap();
    assert_eq!(
        (stored.status, stored.revoked_at),
        (TokenStatus::Revoked, Some(at))
    );
    assert_eq!(
        audit_count(store, tenant.id, AuditEventType::TokenRevoked).await,
        1
    );
    assert!(
        !store
            .revoke_token(
                other.id,
                pending.id,
                at,
                draft(AuditEventType::TokenRevoked)
            )
            .await
            .unwrap(),
        "another tenant cannot revoke it"
    );
}

async fn a_token_cannot_reference_another_tenants_agent(h: &Harness) {
    let store = h.store();
    let (tenant, _) = new_tenant(store).await;
    let (other, _) = new_tenant(store).await;
    let foreign_agent = new_agent(store, other.id).await;
    let tok = token(
        tenant.id,
        foreign_agent.id,
        TokenStatus::Active,
        None,
        Duration::hours(1),
    );
    let result = store
        .insert_token(&tok, draft(AuditEventType::TokenIssued))
        .await;
    assert!(result.is_err(), "the composite foreign key must refuse it");
    assert_eq!(
        store.lookup_credential(tok.id.as_uuid()).await.unwrap(),
        None
    );
}

async fn rotating_an_agent_key_revokes_its_tokens_and_swaps_the_credential(h: &Harness) {
    let store = h.store();
    let (tenant, _) = new_tenant(store).await;
    let agent = new_agent(store, tenant.id).await;
    let bystander = new_agent(store, tenant.id).await;
    let t1 = new_token(store, tenant.id, agent.id, None).await;
    let t2 = new_token(store, tenant.id, agent.id, Some(2)).await;
    let already = new_token(store, tenant.id, agent.id, None).await;
    let earlier = now_micros() - Duration::minutes(1);
    store
        .revoke_token(
            tenant.id,
            already.id,
            earlier,
            draft(AuditEventType::TokenRevoked),
        )
        .await
        .unwrap();
    let theirs = new_token(store, tenant.id, bystander.id, None).await;

    let new_key = Uuid::now_v7();
    let at = now_micros();
    let revoked = store
        .rotate_agent_key(
            tenant.id,
            agent.id,
            new_key,
            vec![9; 32],
            at,
            draft(AuditEventType::AgentKeyRotated),
        )
        .await
        .unwrap();
    assert_eq!(revoked, 2, "both unrevoked tokens of the agent");

    assert_eq!(
        store.lookup_credential(agent.key_id).await.unwrap(),
        None,
        "old key is gone"
    );
    assert_eq!(
        store.lookup_credential(new_key).await.unwrap(),
        Some((tenant.id, CredentialKind::Agent))
    );
    let rotated = store
        .get_agent_by_key(tenant.id, new_key)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (rotated.id, rotated.key_hash.clone(), rotated.key_rotated_at),
        (agent.id, vec![9; 32], Some(at))
    );
    assert_eq!(
        store
            .get_agent_by_key(tenant.id, agent.key_id)
            .await
            .unwrap(),
        None
    );
    for t in [&t1, &t2] {
        let stored = store.get_token(tenant.id, t.id).await.unwrap().unwrap();
        assert_eq!(
            (stored.status, stored.revoked_at),
            (TokenStatus::Revoked, Some(at))
        );
    }
    let kept = store
        .get_token(tenant.id, already.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        kept.revoked_at,
        Some(earlier),
        "an earlier revocation keeps its time"
    );
    let untouched = store
        .get_token(tenant.id, theirs.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        untouched.status,
        TokenStatus::Active,
        "another agent's token survives"
    );
    assert_eq!(
        audit_count(store, tenant.id, AuditEventType::AgentKeyRotated).await,
        1
    );
}

async fn a_revoked_agent_cannot_be_issued_a_token(h: &Harness) {
    let store = h.store();
    let (tenant, _) = new_tenant(store).await;
    let agent = new_agent(store, tenant.id).await;
    let bystander = new_agent(store, tenant.id).await;
    store
        .revoke_agent(
            tenant.id,
            agent.id,
            now_micros(),
            draft(AuditEventType::AgentRevoked),
            draft(AuditEventType::TokenRevoked),
        )
        .await
        .unwrap();
    let late = token(
        tenant.id,
        agent.id,
        TokenStatus::Active,
        None,
        Duration::hours(1),
    );
    let refused = store
        .insert_token(&late, draft(AuditEventType::TokenIssued))
        .await;
    assert!(
        matches!(refused, Err(StoreError::Conflict(_))),
        "a token was issued to a revoked agent: {refused:?}"
    );
    assert!(store.get_token(tenant.id, late.id).await.unwrap().is_none());
    // Other agents are unaffected.
    new_token(store, tenant.id, bystander.id, None).await;
}

async fn rotating_an_unknown_agent_is_not_found(h: &Harness) {
    let store = h.store();
    let (tenant, _) = new_tenant(store).await;
    let (other, _) = new_tenant(store).await;
    let agent = new_agent(store, other.id).await;
    for id in [AgentId::new(), agent.id] {
        let err = store
            .rotate_agent_key(
                tenant.id,
                id,
                Uuid::now_v7(),
                vec![9; 32],
                now_micros(),
                draft(AuditEventType::AgentKeyRotated),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NotFound), "{err:?}");
    }
}

async fn parallel_uses_of_a_max_uses_token_count_exactly_max(h: &Harness) {
    let store = h.store();
    let (tenant, _) = new_tenant(store).await;
    let agent = new_agent(store, tenant.id).await;
    let tok = new_token(store, tenant.id, agent.id, Some(5)).await;

    let mut uses = tokio::task::JoinSet::new();
    for i in 0..100 {
        let store: Arc<dyn Store> = Arc::new(h.store.clone());
        uses.spawn(async move {
            let read = draft(AuditEventType::SecretRead).reason(format!("use {i}"));
            store
                .consume_token_use(tenant.id, tok.id, now_micros(), vec![read])
                .await
        });
    }
    let mut counted = Vec::new();
    let mut refused = 0;
    while let Some(outcome) = uses.join_next().await {
        match outcome.unwrap() {
            Ok(UseOutcome::Counted { uses }) => counted.push(uses),
            Ok(UseOutcome::Refused) => refused += 1,
            Err(e) => panic!("a use failed instead of counting or being refused: {e}"),
        }
    }
    counted.sort_unstable();
    assert_eq!(
        counted,
        [1, 2, 3, 4, 5],
        "exactly max_uses uses are counted, each once"
    );
    assert_eq!(refused, 95);
    let stored = store.get_token(tenant.id, tok.id).await.unwrap().unwrap();
    assert_eq!(stored.uses, 5);
    assert_eq!(
        audit_count(store, tenant.id, AuditEventType::SecretRead).await,
        5,
        "only counted uses are audited"
    );
}

/// Replicas racing to record expiries: every live token that ran out gets exactly one
/// `token.expired`, a revoked one none (its revocation was its end), a live one nothing yet.
async fn each_expiry_is_recorded_once_however_many_sweepers_race(h: &Harness) {
    let store = h.store();
    let (tenant, _) = new_tenant(store).await;
    let agent = new_agent(store, tenant.id).await;
    let mut expired = Vec::new();
    for _ in 0..40 {
        let t = token(
            tenant.id,
            agent.id,
            TokenStatus::Active,
            None,
            Duration::seconds(-5),
        );
        store
            .insert_token(&t, draft(AuditEventType::TokenIssued))
            .await
            .unwrap();
        expired.push(t.id);
    }
    let revoked = token(
        tenant.id,
        agent.id,
        TokenStatus::Active,
        None,
        Duration::seconds(-5),
    );
    store
        .insert_token(&revoked, draft(AuditEventType::TokenIssued))
        .await
        .unwrap();
    assert!(store
        .revoke_token(
            tenant.id,
            revoked.id,
            now_micros() - Duration::seconds(10),
            draft(AuditEventType::TokenRevoked)
        )
        .await
        .unwrap());
    let live = new_token(store, tenant.id, agent.id, None).await;

    let mut sweepers = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let store: Arc<dyn Store> = Arc::new(h.store.clone());
        sweepers.spawn(async move {
            let mut claimed = 0;
            loop {
                let n = store
                    .record_token_expiries(tenant.id, now_micros(), 7)
                    .await
                    .unwrap();
                claimed += n;
                if n < 7 {
                    return claimed;
                }
            }
        });
    }
    let mut claimed = 0;
    while let Some(n) = sweepers.join_next().await {
        claimed += n.unwrap();
    }
    assert_eq!(
        claimed, 41,
        "every expired token claimed once, the revoked one too"
    );
    let events = store
        .list_audit(
            tenant.id,
            &AuditFilter {
                types: vec![AuditEventType::TokenExpired],
                ..AuditFilter::default()
            },
        )
        .await
        .unwrap();
    let mut actors: Vec<String> = events.iter().map(|e| e.draft.actor.0.clone()).collect();
    actors.sort();
    let mut want: Vec<String> = expired.iter().map(|id| format!("token:{id}")).collect();
    want.sort();
    assert_eq!(
        actors, want,
        "one event per live expired token, none for the revoked one"
    );
    assert!(!actors.contains(&format!("token:{}", live.id)));
    assert_eq!(
        store
            .record_token_expiries(tenant.id, now_micros(), 7)
            .await
            .unwrap(),
        0,
        "a later sweep finds nothing"
    );
    let head = store.audit_head(tenant.id).await.unwrap();
    let mut verifier = ChainVerifier::default();
    for e in store
        .list_audit(tenant.id, &AuditFilter::default())
        .await
        .unwrap()
    {
        verifier.push(&e);
    }
    assert!(verifier.finish(head).valid);
}

/// Replicas asking at once for a checkpoint of the same head: exactly one writes it, it names
/// the head it follows, and nothing is due again until new events arrive.
async fn one_checkpoint_per_head_however_many_replicas_ask(h: &Harness) {
    let store = h.store();
    let (tenant, _) = new_tenant(store).await;
    for _ in 0..3 {
        store
            .append_audit(tenant.id, draft(AuditEventType::SecretWrite))
            .await
            .unwrap();
    }
    let due = CheckpointDue {
        every_events: 1,
        every: Duration::hours(1),
    };
    let mut askers = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let store: Arc<dyn Store> = Arc::new(h.store.clone());
        askers.spawn(async move {
            let sign = |seq: i64, head: [u8; 32]| {
                draft(AuditEventType::AuditCheckpoint)
                    .reason(format!("{seq}:{}", hex::encode(head)))
            };
            store
                .append_checkpoint(tenant.id, now_micros(), due, &sign)
                .await
                .unwrap()
        });
    }
    let mut written = Vec::new();
    while let Some(event) = askers.join_next().await {
        written.extend(event.unwrap());
    }
    assert_eq!(written.len(), 1, "one checkpoint of the head");
    let checkpoint = &written[0];
    assert_eq!(
        checkpoint.draft.reason.as_deref(),
        Some(
            format!(
                "{}:{}",
                checkpoint.seq - 1,
                hex::encode(checkpoint.prev_hash)
            )
            .as_str()
        ),
        "it signs the event right before it"
    );
    let sign = |_: i64, _: [u8; 32]| draft(AuditEventType::AuditCheckpoint);
    let again = store.append_checkpoint(tenant.id, now_micros(), due, &sign);
    assert!(again.await.unwrap().is_none(), "nothing new since: not due");
    store
        .append_audit(tenant.id, draft(AuditEventType::SecretWrite))
        .await
        .unwrap();
    let again = store.append_checkpoint(tenant.id, now_micros(), due, &sign);
    assert!(again.await.unwrap().is_some(), "one new event: due again");
}

/// Audit keys are stored per tenant (the service role may insert and read them) and listed
/// oldest first.
async fn audit_keys_are_kept_per_tenant(h: &Harness) {
    let store = h.store();
    let (a, _) = new_tenant(store).await;
    let (b, _) = new_tenant(store).await;
    for (i, tag) in [(0, 1u8), (1, 2u8)] {
        store
            .insert_audit_key(
                a.id,
                &AuditKeyRecord {
                    key_id: format!("key-{i}"),
                    public_key: vec![tag; 32],
                    envelope: envelope(tag),
                    created_at: now_micros() + Duration::seconds(i),
                },
            )
            .await
            .unwrap();
    }
    let keys = store.audit_keys(a.id).await.unwrap();
    let ids: Vec<&str> = keys.iter().map(|k| k.key_id.as_str()).collect();
    assert_eq!(ids, ["key-0", "key-1"]);
    assert_eq!(keys[1].public_key, vec![2u8; 32]);
    assert!(keys[1].envelope == envelope(2));
    assert!(store.audit_keys(b.id).await.unwrap().is_empty());
}

/// Group commit: one transaction counts each use as if alone (in order, per token), writes
/// events only for counted uses, keeps the chain valid, and on failure counts nothing at all.
/// Uses of many tokens, each used once, are counted by one statement; each still gets exactly
/// the outcome it would get alone: counted from the token's own tally, or refused (exhausted,
/// expired, revoked, pending approval), with duplicates and reservations counted one by one.
async fn single_uses_of_many_tokens_are_counted_together_as_if_alone(h: &Harness) {
    let store = h.store();
    let (tenant, _) = new_tenant(store).await;
    let agent = new_agent(store, tenant.id).await;
    let fresh = new_token(store, tenant.id, agent.id, None).await;
    let used = new_token(store, tenant.id, agent.id, None).await;
    let last_use = new_token(store, tenant.id, agent.id, Some(3)).await;
    let exhausted = new_token(store, tenant.id, agent.id, Some(1)).await;
    let revoked = new_token(store, tenant.id, agent.id, None).await;
    let twice = new_token(store, tenant.id, agent.id, None).await;
    let expired = token(
        tenant.id,
        agent.id,
        TokenStatus::Active,
        None,
        Duration::seconds(-1),
    );
    let pending = token(
        tenant.id,
        agent.id,
        TokenStatus::PendingApproval,
        None,
        Duration::hours(1),
    );
    for t in [&expired, &pending] {
        store
            .insert_token(t, draft(AuditEventType::TokenIssued))
            .await
            .unwrap();
    }
    let at = now_micros();
    for (t, n) in [(&used, 4), (&last_use, 2), (&exhausted, 1)] {
        for _ in 0..n {
            let counted = store
                .consume_token_use(tenant.id, t.id, at, vec![draft(AuditEventType::SecretRead)])
                .await
                .unwrap();
            assert!(matches!(counted, UseOutcome::Counted { .. }));
        }
    }
    store
        .revoke_token(
            tenant.id,
            revoked.id,
            at,
            draft(AuditEventType::TokenRevoked),
        )
        .await
        .unwrap();
    let one = |id: TokenId| TokenUse {
        id,
        now: now_micros(),
        audit: vec![draft(AuditEventType::SecretRead)],
        reservation: None,
    };
    let reads_before = audit_count(store, tenant.id, AuditEventType::SecretRead).await;
    let outcomes = store
        .consume_token_uses(
            tenant.id,
            vec![
                one(twice.id),
                one(fresh.id),
                one(exhausted.id),
                one(used.id),
                one(expired.id),
                one(twice.id),
                one(last_use.id),
                one(revoked.id),
                one(pending.id),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        [
            UseOutcome::Counted { uses: 1 },
            UseOutcome::Counted { uses: 1 },
            UseOutcome::Refused,
            UseOutcome::Counted { uses: 5 },
            UseOutcome::Refused,
            UseOutcome::Counted { uses: 2 },
            UseOutcome::Counted { uses: 3 },
            UseOutcome::Refused,
            UseOutcome::Refused,
        ]
    );
    assert_eq!(
        audit_count(store, tenant.id, AuditEventType::SecretRead).await,
        reads_before + 5,
        "only the counted uses are audited"
    );
    let again = store
        .consume_token_uses(tenant.id, vec![one(last_use.id), one(fresh.id)])
        .await
        .unwrap();
    assert_eq!(
        again,
        [UseOutcome::Refused, UseOutcome::Counted { uses: 2 }],
        "the grouped count is the stored count"
    );
    assert_chain_valid(store, tenant.id).await;
}

async fn a_batch_of_uses_counts_each_as_if_alone_and_fails_as_one(h: &Harness) {
    let store = h.store();
    let (tenant, _) = new_tenant(store).await;
    let agent = new_agent(store, tenant.id).await;
    let two = new_token(store, tenant.id, agent.id, Some(2)).await;
    let free = new_token(store, tenant.id, agent.id, None).await;
    let expired = token(
        tenant.id,
        agent.id,
        TokenStatus::Active,
        None,
        Duration::seconds(-1),
    );
    store
        .insert_token(&expired, draft(AuditEventType::TokenIssued))
        .await
        .unwrap();
    let one = |id: TokenId, n: usize| TokenUse {
        id,
        now: now_micros(),
        audit: vec![draft(AuditEventType::SecretRead).reason(format!("use {n}"))],
        reservation: None,
    };
    let reads_before = audit_count(store, tenant.id, AuditEventType::SecretRead).await;
    let outcomes = store
        .consume_token_uses(
            tenant.id,
            vec![
                one(two.id, 0),
                one(free.id, 1),
                one(two.id, 2),
                one(expired.id, 3),
                one(two.id, 4),
                one(free.id, 5),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        [
            UseOutcome::Counted { uses: 1 },
            UseOutcome::Counted { uses: 1 },
            UseOutcome::Counted { uses: 2 },
            UseOutcome::Refused,
            UseOutcome::Refused,
            UseOutcome::Counted { uses: 2 },
        ]
    );
    assert_eq!(
        audit_count(store, tenant.id, AuditEventType::SecretRead).await,
        reads_before + 4,
        "only the counted uses are audited"
    );
    assert_chain_valid(store, tenant.id).await;

    // All refused: nothing is written.
    let head = store.audit_head(tenant.id).await.unwrap();
    let refused = store
        .consume_token_uses(tenant.id, vec![one(two.id, 6), one(expired.id, 7)])
        .await
        .unwrap();
    assert_eq!(refused, [UseOutcome::Refused, UseOutcome::Refused]);
    assert_eq!(store.audit_head(tenant.id).await.unwrap(), head);

    // One failing event fails the whole batch: no use counted for anyone.
    h.install_failing_audit_trigger().await;
    let mut poisoned = one(free.id, 8);
    poisoned.audit = vec![draft(AuditEventType::SecretRead).reason(FAIL_AUDIT)];
    let failed = store
        .consume_token_uses(tenant.id, vec![one(free.id, 9), poisoned])
        .await;
    assert!(failed.is_err(), "{failed:?}");
    let stored = store.get_token(tenant.id, free.id).await.unwrap().unwrap();
    assert_eq!(stored.uses, 2, "the batch rolled back as one");
    assert_eq!(store.audit_head(tenant.id).await.unwrap(), head);
}

async fn expired_revoked_and_inactive_tokens_refuse_uses(h: &Harness) {
    let store = h.store();
    let (tenant, _) = new_tenant(store).await;
    let agent = new_agent(store, tenant.id).await;
    let use_it = |id: TokenId| {
        store.consume_token_use(
            tenant.id,
            id,
            now_micros(),
            vec![draft(AuditEventType::SecretRead)],
        )
    };

    let expired = token(
        tenant.id,
        agent.id,
        TokenStatus::Active,
        None,
        Duration::seconds(-1),
    );
    let pending = token(
        tenant.id,
        agent.id,
        TokenStatus::PendingApproval,
        None,
        Duration::hours(1),
    );
    let denied = token(
        tenant.id,
        agent.id,
        TokenStatus::Denied,
        None,
        Duration::hours(1),
    );
    for t in [&expired, &pending, &denied] {
        store
            .insert_token(t, draft(AuditEventType::TokenIssued))
            .await
            .unwrap();
    }
    let revoked = new_token(store, tenant.id, agent.id, None).await;
    store
        .revoke_token(
            tenant.id,
            revoked.id,
            now_micros(),
            draft(AuditEventType::TokenRevoked),
        )
        .await
        .unwrap();
    let head = store.audit_head(tenant.id).await.unwrap();

    for (what, id) in [
        ("expired", expired.id),
        ("pending", pending.id),
        ("denied", denied.id),
        ("revoked", revoked.id),
        ("unknown", TokenId::new()),
    ] {
        assert_eq!(
            use_it(id).await.unwrap(),
            UseOutcome::Refused,
            "{what} token"
        );
    }
    assert_eq!(
        store.audit_head(tenant.id).await.unwrap(),
        head,
        "refusals write nothing"
    );

    let unlimited = new_token(store, tenant.id, agent.id, None).await;
    assert_eq!(
        use_it(unlimited.id).await.unwrap(),
        UseOutcome::Counted { uses: 1 }
    );
    assert_eq!(
        use_it(unlimited.id).await.unwrap(),
        UseOutcome::Counted { uses: 2 }
    );
    // A use at the exact expiry instant is refused: expires_at is exclusive.
    let at_expiry = store
        .consume_token_use(tenant.id, unlimited.id, unlimited.expires_at, vec![])
        .await
        .unwrap();
    assert_eq!(at_expiry, UseOutcome::Refused);
}

async fn audit_chain_of_many_operations_verifies(h: &Harness) {
    let store = h.store();
    let (tenant, _) = new_tenant(store).await;
    let (other, _) = new_tenant(store).await;
    let agent = new_agent(store, tenant.id).await;
    let tok = new_token(store, tenant.id, agent.id, Some(2)).await;
    put(store, tenant.id, "a/b", 1).await;
    put(store, tenant.id, "a/b", 2).await;
    put(store, other.id, "a/b", 1).await;
    store
        .consume_token_use(
            tenant.id,
            tok.id,
            now_micros(),
            vec![
                draft(AuditEventType::SecretRead).destination("api.openai.com"),
                draft(AuditEventType::SecretRead)
                    .client(Some("10.1.2.3".into()), Some("curl/8".into())),
            ],
        )
        .await
        .unwrap();
    store
        .append_audit(
            tenant.id,
            draft(AuditEventType::AuthFailed).failed("bad_token"),
        )
        .await
        .unwrap();
    store
        .delete_secret(tenant.id, &path("a/b"), draft(AuditEventType::SecretDelete))
        .await
        .unwrap();
    store
        .rotate_agent_key(
            tenant.id,
            agent.id,
            Uuid::now_v7(),
            vec![7; 32],
            now_micros(),
            draft(AuditEventType::AgentKeyRotated),
        )
        .await
        .unwrap();

    for (t, expected) in [(tenant.id, 10), (other.id, 2)] {
        let events = store.list_audit(t, &AuditFilter::default()).await.unwrap();
        let head = store.audit_head(t).await.unwrap();
        let mut verifier = ChainVerifier::default();
        events.iter().for_each(|e| verifier.push(e));
        let report = verifier.finish(head);
        assert!(report.valid, "{report:?}");
        assert_eq!(report.events_checked, expected);
        assert_eq!(head.map(|h| h.0), Some(expected));
        assert!(events.iter().all(|e| e.tenant_id == t));
    }
    let stored = store
        .list_audit(tenant.id, &AuditFilter::default())
        .await
        .unwrap();
    let read = &stored[5];
    assert_eq!(read.draft.event_type, AuditEventType::SecretRead);
    assert_eq!(
        read.draft.destination_host.as_deref(),
        Some("api.openai.com")
    );
    assert_eq!(stored[6].draft.ip.as_deref(), Some("10.1.2.3"));
    assert_eq!(stored[7].draft.reason.as_deref(), Some("bad_token"));
    assert!(!stored[7].draft.success);
}

async fn list_audit_filters_by_type_time_and_seq(h: &Harness) {
    let store = h.store();
    let (tenant, _) = new_tenant(store).await; // seq 1: tenant.created
    let t0 = now_micros() + Duration::hours(1);
    for (i, t) in [
        AuditEventType::SecretRead,
        AuditEventType::AuthFailed,
        AuditEventType::SecretRead,
        AuditEventType::TokenIssued,
    ]
    .into_iter()
    .enumerate()
    {
        let mut d = draft(t);
        d.occurred_at = t0 + Duration::seconds(i as i64);
        store.append_audit(tenant.id, d).await.unwrap(); // seq 2..=5
    }
    let seqs = |filter: AuditFilter| async move {
        store
            .list_audit(tenant.id, &filter)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.seq)
            .collect::<Vec<_>>()
    };
    assert_eq!(seqs(AuditFilter::default()).await, [1, 2, 3, 4, 5]);
    let reads = AuditFilter {
        types: vec![AuditEventType::SecretRead],
        ..Default::default()
    };
    assert_eq!(seqs(reads).await, [2, 4]);
    let two_types = AuditFilter {
        types: vec![AuditEventType::AuthFailed, AuditEventType::TokenIssued],
        ..Default::default()
    };
    assert_eq!(seqs(two_types).await, [3, 5]);
    let window = AuditFilter {
        since: Some(t0 + Duration::seconds(1)),
        until: Some(t0 + Duration::seconds(2)),
        ..Default::default()
    };
    assert_eq!(seqs(window).await, [3, 4], "since and until are inclusive");
    let page = AuditFilter {
        after_seq: Some(2),
        limit: Some(2),
        ..Default::default()
    };
    assert_eq!(seqs(page).await, [3, 4]);
    let (other, _) = new_tenant(store).await;
    assert_eq!(
        store
            .list_audit(other.id, &AuditFilter::default())
            .await
            .unwrap()
            .len(),
        1,
        "another tenant sees only its own chain"
    );
}

async fn a_failed_audit_insert_changes_nothing(h: &Harness) {
    let store = h.store();
    let (tenant, _) = new_tenant(store).await;
    let agent = new_agent(store, tenant.id).await;
    let tok = new_token(store, tenant.id, agent.id, Some(3)).await;
    put(store, tenant.id, "kept/secret", 1).await;
    h.install_failing_audit_trigger().await;
    let failing = |t: AuditEventType| draft(t).reason(FAIL_AUDIT);
    let head = store.audit_head(tenant.id).await.unwrap();

    let new_secret = store
        .put_secret_version(
            tenant.id,
            &version("fail/x", 1, envelope(1)),
            failing(AuditEventType::SecretWrite),
        )
        .await;
    assert!(new_secret.is_err(), "a write whose audit fails must fail");
    assert_eq!(
        store.get_secret(tenant.id, &path("fail/x")).await.unwrap(),
        None
    );

    let update = store
        .put_secret_version(
            tenant.id,
            &version("kept/secret", 2, envelope(2)),
            failing(AuditEventType::SecretWrite),
        )
        .await;
    assert!(update.is_err());
    let kept = store
        .current_secrets(tenant.id, &[path("kept/secret")])
        .await
        .unwrap();
    assert_eq!(
        (kept[0].record.current_version, &kept[0].envelope),
        (1, &envelope(1))
    );
    assert_eq!(
        h.count(
            "SELECT COUNT(*) FROM secret_versions WHERE tenant_id = $1",
            tenant.id
        )
        .await,
        1,
        "no orphan version row"
    );

    let used = store
        .consume_token_use(
            tenant.id,
            tok.id,
            now_micros(),
            vec![
                draft(AuditEventType::SecretRead),
                failing(AuditEventType::SecretRead),
            ],
        )
        .await;
    assert!(used.is_err(), "a use whose audit fails must fail");
    assert_eq!(
        store
            .get_token(tenant.id, tok.id)
            .await
            .unwrap()
            .unwrap()
            .uses,
        0,
        "no use counted"
    );

    let rotated = store
        .rotate_agent_key(
            tenant.id,
            agent.id,
            Uuid::now_v7(),
            vec![8; 32],
            now_micros(),
            failing(AuditEventType::AgentKeyRotated),
        )
        .await;
    assert!(rotated.is_err());
    assert_eq!(
        store.get_agent(tenant.id, agent.id).await.unwrap(),
        Some(agent.clone())
    );
    assert!(
        store
            .lookup_credential(agent.key_id)
            .await
            .unwrap()
            .is_some(),
        "old key still valid"
    );
    assert_eq!(
        store
            .get_token(tenant.id, tok.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        TokenStatus::Active
    );

    let deleted = store
        .delete_secret(
            tenant.id,
            &path("kept/secret"),
            failing(AuditEventType::SecretDelete),
        )
        .await;
    assert!(deleted.is_err());
    assert!(store
        .get_secret(tenant.id, &path("kept/secret"))
        .await
        .unwrap()
        .is_some());

    assert_eq!(
        store.audit_head(tenant.id).await.unwrap(),
        head,
        "the chain did not move"
    );
    // The store still works for events the trigger lets through.
    assert_eq!(
        store
            .consume_token_use(
                tenant.id,
                tok.id,
                now_micros(),
                vec![draft(AuditEventType::SecretRead)]
            )
            .await
            .unwrap(),
        UseOutcome::Counted { uses: 1 }
    );
}

async fn secret_plaintext_never_reaches_the_database(h: &Harness) {
    const PLAINTEXT: &str = "sk-live-CANARY-5f0c2a9e-do-not-store";
    let store = h.store();
    let (tenant, _) = new_tenant(store).await;
    let keyring = tempfile::tempdir().unwrap();
    let kms =
        LocalKms::open_or_create(keyring.path().join("keyring"), MasterKey::generate()).unwrap();
    kms.create_tenant_key(tenant.id).await.unwrap();
    let p = path("production/openai/api_key");
    let aad = SecretAad {
        tenant: tenant.id,
        path: p.as_str(),
        version: 1,
    };
    let sealed = seal(&kms, &aad, &SecretBytes::new(PLAINTEXT.as_bytes().to_vec()))
        .await
        .unwrap();
    let new = NewSecretVersion {
        path: p.clone(),
        version: 1,
        sensitivity: Sensitivity::Sensitive,
        allowed_hosts: vec![HostPattern::parse("api.openai.com").unwrap()],
        envelope: sealed.clone(),
    };
    store
        .put_secret_version(
            tenant.id,
            &new,
            draft(AuditEventType::SecretWrite).path(p.as_str()),
        )
        .await
        .unwrap();
    let stored = store.current_secrets(tenant.id, &[p]).await.unwrap();
    assert_eq!(
        stored[0].envelope, sealed,
        "the envelope round-trips byte for byte"
    );

    let Some(bytes) = h.stored_bytes() else {
        return;
    };
    assert!(
        contains_raw_or_hex(&bytes, &sealed.ciphertext),
        "control: the ciphertext must be visible in what we search"
    );
    assert!(
        !contains_raw_or_hex(&bytes, PLAINTEXT.as_bytes()),
        "the secret value was found in the database in the clear"
    );
}

agent_secret_testkit::backend_suite!(
    Harness:
    store_answers_ping,
    tenant_is_created_with_its_admin_and_first_audit_event,
    tenant_names_are_unique,
    credential_index_resolves_every_principal_to_its_tenant,
    operators_are_created_listed_and_confined_to_their_tenant,
    sidecars_are_listed_and_revoked_once,
    agents_are_found_by_id_and_by_key,
    secret_versions_advance_one_at_a_time,
    secrets_are_confined_to_their_tenant,
    list_secrets_by_prefix_matches_whole_segments,
    deleting_a_secret_removes_all_its_versions,
    current_secrets_returns_only_existing_paths,
    a_resolve_snapshot_reads_secrets_only_for_an_admitted_token,
    a_batch_of_snapshots_answers_each_resolve_as_if_alone,
    tokens_are_stored_read_and_revoked_once,
    a_token_cannot_reference_another_tenants_agent,
    rotating_an_agent_key_revokes_its_tokens_and_swaps_the_credential,
    rotating_an_unknown_agent_is_not_found,
    a_revoked_agent_cannot_be_issued_a_token,
    parallel_uses_of_a_max_uses_token_count_exactly_max,
    each_expiry_is_recorded_once_however_many_sweepers_race,
    one_checkpoint_per_head_however_many_replicas_ask,
    audit_keys_are_kept_per_tenant,
    a_batch_of_uses_counts_each_as_if_alone_and_fails_as_one,
    single_uses_of_many_tokens_are_counted_together_as_if_alone,
    expired_revoked_and_inactive_tokens_refuse_uses,
    audit_chain_of_many_operations_verifies,
    list_audit_filters_by_type_time_and_seq,
    a_failed_audit_insert_changes_nothing,
    secret_plaintext_never_reaches_the_database,
);

/// SQLite has no roles, so the append-only trigger is the only guard: prove it holds.
#[tokio::test]
async fn sqlite_audit_events_refuse_update_and_delete() {
    let h = Harness::sqlite().await;
    let (tenant, _) = new_tenant(h.store()).await;
    let Db::Sqlite(pool) = h.store.db() else {
        unreachable!()
    };
    for sql in [
        "UPDATE audit_events SET reason = 'edited'",
        "DELETE FROM audit_events WHERE seq = 1",
        "DELETE FROM audit_events",
    ] {
        let err = sqlx::query(sql).execute(pool).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    assert_eq!(
        h.count(
            "SELECT COUNT(*) FROM audit_events WHERE tenant_id = $1",
            tenant.id
        )
        .await,
        1
    );
    let events = h
        .store()
        .list_audit(tenant.id, &AuditFilter::default())
        .await
        .unwrap();
    assert_eq!(events[0].draft.reason, None, "the event is unchanged");
}

#[tokio::test]
async fn sqlite_in_memory_database_is_shared_by_every_query() {
    let db = Db::connect("sqlite::memory:").await.unwrap();
    db.migrate().await.unwrap();
    let sql_store = SqlStore::new(db);
    let store: &dyn Store = &sql_store;
    let (tenant, _) = new_tenant(store).await;
    put(store, tenant.id, "mem/x", 1).await;
    assert!(store
        .get_secret(tenant.id, &path("mem/x"))
        .await
        .unwrap()
        .is_some());
}
