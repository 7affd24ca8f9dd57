//! The storage suite of operator accounts and human sessions (`OperatorAccountStore`), run on
//! SQLite and, with `AGENT_SECRET_STORE_TEST_DATABASE_URL`, on PostgreSQL as the service role
//! (the `store_suite.rs` pattern, in its own file).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use agent_secret_control_plane::audit::{now_micros, Actor, AuditDraft, AuditEventType};
use agent_secret_control_plane::store::sql::SqlStore;
use agent_secret_control_plane::store::{
    AuditFilter, LockoutPolicy, NewSession, OperatorRecord, OperatorRevocation, SessionStart,
    Store, StoreError, TenantRecord,
};
use agent_secret_core::api::Role;
use agent_secret_core::cipher::Sealed;
use agent_secret_core::ids::{OperatorId, TenantId};
use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

struct Harness {
    store: SqlStore,
    _keep: Box<dyn std::any::Any + Send + Sync>,
}

impl Harness {
    async fn sqlite() -> Harness {
        let (db, store) = support::sqlite_test_db().await;
        Harness {
            store,
            _keep: Box::new(db),
        }
    }

    async fn postgres() -> Option<Harness> {
        let db = support::postgres_test_db().await?;
        let store = db.service_store().await;
        Some(Harness {
            store,
            _keep: Box::new(db),
        })
    }

    fn store(&self) -> &dyn Store {
        &self.store
    }
}

fn draft(event_type: AuditEventType) -> AuditDraft {
    AuditDraft::new(event_type, Actor::system())
}

struct Tenant {
    record: TenantRecord,
    admin: OperatorRecord,
}

async fn new_tenant(store: &dyn Store) -> Tenant {
    let record = TenantRecord {
        id: TenantId::new(),
        name: format!("tenant-{}", Uuid::new_v4()),
        created_at: now_micros(),
    };
    let admin = operator(record.id, "admin", Role::Admin);
    store
        .create_tenant(&record, &admin, draft(AuditEventType::TenantCreated))
        .await
        .unwrap();
    Tenant { record, admin }
}

fn operator(tenant: TenantId, name: &str, role: Role) -> OperatorRecord {
    OperatorRecord {
        id: OperatorId::new(),
        tenant_id: tenant,
        name: name.into(),
        role,
        key_hash: vec![1; 32],
        created_at: now_micros(),
        revoked_at: None,
    }
}

async fn new_operator(store: &dyn Store, tenant: TenantId, name: &str, role: Role) -> OperatorId {
    let op = operator(tenant, name, role);
    store
        .create_operator(&op, draft(AuditEventType::OperatorCreated))
        .await
        .unwrap();
    op.id
}

fn session(tenant: TenantId, op: OperatorId, now: DateTime<Utc>, byte: u8) -> NewSession {
    NewSession {
        tenant_id: tenant,
        operator_id: op,
        id_hash: [byte; 32],
        csrf_hash: [byte.wrapping_add(1); 32],
        created_at: now,
        expires_at: now + Duration::hours(12),
        ip: Some("192.0.2.7".into()),
        user_agent: Some("test".into()),
    }
}

fn sealed_totp() -> Sealed {
    Sealed {
        nonce: vec![4; 12],
        ciphertext: vec![5; 36],
    }
}

async fn events(store: &dyn Store, tenant: TenantId, ty: AuditEventType) -> usize {
    let filter = AuditFilter {
        types: vec![ty],
        ..AuditFilter::default()
    };
    store.list_audit(tenant, &filter).await.unwrap().len()
}

// ---------------------------------------------------------------------------------------

async fn a_password_indexes_the_login_by_tenant_name_and_id(h: &Harness) {
    let s = h.store();
    let t = new_tenant(s).await;
    let alice = new_operator(s, t.record.id, "alice", Role::Approver).await;
    assert_eq!(s.find_login(&t.record.name, "alice").await.unwrap(), None);
    s.set_password(
        t.record.id,
        alice,
        "$2b$04$hash",
        now_micros(),
        draft(AuditEventType::OperatorPasswordSet),
    )
    .await
    .unwrap();
    let want = Some((t.record.id, alice));
    assert_eq!(s.find_login(&t.record.name, "alice").await.unwrap(), want);
    assert_eq!(
        s.find_login(&t.record.id.to_string(), "alice")
            .await
            .unwrap(),
        want
    );
    assert_eq!(s.find_login(&t.record.name, "bob").await.unwrap(), None);
    // A second password keeps the one login entry.
    s.set_password(
        t.record.id,
        alice,
        "$2b$04$other",
        now_micros(),
        draft(AuditEventType::OperatorPasswordSet),
    )
    .await
    .unwrap();
    let account = s.get_account(t.record.id, alice).await.unwrap().unwrap();
    assert_eq!(account.password_hash.as_deref(), Some("$2b$04$other"));
    assert!(
        !format!("{account:?}").contains("$2b$"),
        "Debug must hide the hash"
    );
    // A namesake cannot take over the login name; an unknown operator is not found.
    let namesake = new_operator(s, t.record.id, "alice", Role::Auditor).await;
    let taken = s
        .set_password(
            t.record.id,
            namesake,
            "$2b$04$x",
            now_micros(),
            draft(AuditEventType::OperatorPasswordSet),
        )
        .await;
    assert!(matches!(taken, Err(StoreError::Conflict(_))), "{taken:?}");
    let unknown = s
        .set_password(
            t.record.id,
            OperatorId::new(),
            "$2b$04$x",
            now_micros(),
            draft(AuditEventType::OperatorPasswordSet),
        )
        .await;
    assert!(matches!(unknown, Err(StoreError::NotFound)), "{unknown:?}");
    assert_eq!(
        events(s, t.record.id, AuditEventType::OperatorPasswordSet).await,
        2
    );
}

async fn a_totp_step_is_accepted_once(h: &Harness) {
    let s = h.store();
    let t = new_tenant(s).await;
    let id = t.record.id;
    let op = new_operator(s, id, "approver", Role::Approver).await;
    let enrolled = s
        .set_totp(
            id,
            op,
            &sealed_totp(),
            now_micros(),
            draft(AuditEventType::OperatorTotpEnrolled),
        )
        .await;
    assert!(
        matches!(enrolled, Err(StoreError::NotFound)),
        "no account yet: {enrolled:?}"
    );
    s.set_password(
        id,
        op,
        "$2b$04$h",
        now_micros(),
        draft(AuditEventType::OperatorPasswordSet),
    )
    .await
    .unwrap();
    s.set_totp(
        id,
        op,
        &sealed_totp(),
        now_micros(),
        draft(AuditEventType::OperatorTotpEnrolled),
    )
    .await
    .unwrap();
    let account = s.get_account(id, op).await.unwrap().unwrap();
    assert_eq!(account.totp, Some(sealed_totp()));
    // Sealed under the pepper-derived key, not a KEK: nothing for kms status or retire-version.
    let inventory = s.dek_inventory(id).await.unwrap();
    assert!(inventory.is_empty(), "{inventory:?}");
    // The schema refuses a nonce of the wrong length, or a nonce without its ciphertext.
    for bad in [
        Sealed {
            nonce: vec![4; 11],
            ciphertext: vec![5; 36],
        },
        Sealed {
            nonce: vec![4; 12],
            ciphertext: vec![5; 8],
        },
    ] {
        let refused = s
            .set_totp(
                id,
                op,
                &bad,
                now_micros(),
                draft(AuditEventType::OperatorTotpEnrolled),
            )
            .await;
        assert!(refused.is_err(), "{bad:?} was stored");
    }
    let account = s.get_account(id, op).await.unwrap().unwrap();
    assert_eq!(
        account.totp,
        Some(sealed_totp()),
        "a refused seal changed nothing"
    );
    assert_eq!(account.totp_confirmed_at, None);
    assert!(s
        .confirm_totp(
            id,
            op,
            100,
            now_micros(),
            draft(AuditEventType::OperatorTotpConfirmed)
        )
        .await
        .unwrap());
    assert!(!s
        .confirm_totp(
            id,
            op,
            100,
            now_micros(),
            draft(AuditEventType::OperatorTotpConfirmed)
        )
        .await
        .unwrap());
    let now = now_micros();
    let replay = s
        .start_session(
            &session(id, op, now, 1),
            Some(100),
            draft(AuditEventType::SessionCreated),
        )
        .await
        .unwrap();
    assert_eq!(
        replay,
        SessionStart::TotpReplayed,
        "the confirming code's step is used up"
    );
    let fresh = s
        .start_session(
            &session(id, op, now, 2),
            Some(101),
            draft(AuditEventType::SessionCreated),
        )
        .await
        .unwrap();
    assert_eq!(fresh, SessionStart::Started);
    let again = s
        .start_session(
            &session(id, op, now, 3),
            Some(101),
            draft(AuditEventType::SessionCreated),
        )
        .await
        .unwrap();
    assert_eq!(
        again,
        SessionStart::TotpReplayed,
        "same code twice: second refused"
    );
    assert_eq!(
        events(s, id, AuditEventType::SessionCreated).await,
        1,
        "refusals write nothing"
    );
    let idle_cutoff = now - Duration::minutes(30);
    assert!(s
        .touch_session(id, &[1; 32], now, idle_cutoff)
        .await
        .unwrap()
        .is_none());
    assert!(s
        .touch_session(id, &[3; 32], now, idle_cutoff)
        .await
        .unwrap()
        .is_none());
    assert!(s
        .touch_session(id, &[2; 32], now, idle_cutoff)
        .await
        .unwrap()
        .is_some());
}

async fn sessions_end_idle_absolute_on_logout_and_on_password_change(h: &Harness) {
    let s = h.store();
    let t = new_tenant(s).await;
    let id = t.record.id;
    let op = new_operator(s, id, "auditor", Role::Auditor).await;
    s.set_password(
        id,
        op,
        "$2b$04$h",
        now_micros(),
        draft(AuditEventType::OperatorPasswordSet),
    )
    .await
    .unwrap();
    let t0 = now_micros();
    for byte in [10, 20, 30] {
        s.start_session(
            &session(id, op, t0, byte),
            None,
            draft(AuditEventType::SessionCreated),
        )
        .await
        .unwrap();
    }
    let idle = Duration::minutes(30);
    let live = s
        .touch_session(
            id,
            &[10; 32],
            t0 + Duration::minutes(20),
            t0 + Duration::minutes(20) - idle,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (live.operator_id, live.role, live.csrf_hash),
        (op, Role::Auditor, [11; 32])
    );
    // Touched at +20 min: alive at +45, gone at +51 unless touched.
    let at = t0 + Duration::minutes(45);
    assert!(s
        .touch_session(id, &[10; 32], at, at - idle)
        .await
        .unwrap()
        .is_some());
    // A peek sees the session without keeping it alive: last seen stays at +45.
    let at = t0 + Duration::minutes(60);
    assert!(s
        .peek_session(id, &[10; 32], at, at - idle)
        .await
        .unwrap()
        .is_some());
    let at = t0 + Duration::minutes(76);
    assert!(
        s.peek_session(id, &[10; 32], at, at - idle)
            .await
            .unwrap()
            .is_none(),
        "peeks did not extend it"
    );
    let at = t0 + Duration::minutes(31);
    assert!(
        s.touch_session(id, &[20; 32], at, at - idle)
            .await
            .unwrap()
            .is_none(),
        "idle"
    );
    let late = t0 + Duration::hours(12);
    assert!(
        s.touch_session(id, &[10; 32], late, late - Duration::minutes(1))
            .await
            .unwrap()
            .is_none(),
        "absolute"
    );
    // Another tenant never sees the session.
    let other = new_tenant(s).await;
    assert!(s
        .touch_session(other.record.id, &[30; 32], t0, t0 - idle)
        .await
        .unwrap()
        .is_none());
    assert!(s
        .revoke_session(id, &[30; 32], t0, draft(AuditEventType::SessionRevoked))
        .await
        .unwrap());
    assert!(!s
        .revoke_session(id, &[30; 32], t0, draft(AuditEventType::SessionRevoked))
        .await
        .unwrap());
    assert!(
        s.touch_session(id, &[30; 32], t0, t0 - idle)
            .await
            .unwrap()
            .is_none(),
        "logged out"
    );
    for byte in [40, 50] {
        s.start_session(
            &session(id, op, t0, byte),
            None,
            draft(AuditEventType::SessionCreated),
        )
        .await
        .unwrap();
    }
    let revoked = s
        .set_password(
            id,
            op,
            "$2b$04$new",
            t0,
            draft(AuditEventType::OperatorPasswordSet),
        )
        .await
        .unwrap();
    assert_eq!(
        revoked, 4,
        "every unrevoked row: two live, one idle, one past its end"
    );
    assert!(s
        .touch_session(id, &[40; 32], t0, t0 - idle)
        .await
        .unwrap()
        .is_none());
}

async fn failed_logins_lock_the_account_with_doubling(h: &Harness) {
    let s = h.store();
    let t = new_tenant(s).await;
    let id = t.record.id;
    let op = new_operator(s, id, "approver", Role::Approver).await;
    s.set_password(
        id,
        op,
        "$2b$04$h",
        now_micros(),
        draft(AuditEventType::OperatorPasswordSet),
    )
    .await
    .unwrap();
    let policy = LockoutPolicy {
        max_failures: 3,
        lock_seconds: 60,
        max_lock_seconds: 100,
    };
    let now = now_micros();
    let fail = || draft(AuditEventType::AuthFailed).failed("login: bad_password");
    for _ in 0..2 {
        assert_eq!(
            s.record_login_failure(id, op, now, policy, fail())
                .await
                .unwrap(),
            None
        );
    }
    let first = s
        .record_login_failure(id, op, now, policy, fail())
        .await
        .unwrap();
    assert_eq!(first, Some(now + Duration::seconds(60)));
    for _ in 0..2 {
        s.record_login_failure(id, op, now, policy, fail())
            .await
            .unwrap();
    }
    let second = s
        .record_login_failure(id, op, now, policy, fail())
        .await
        .unwrap();
    assert_eq!(
        second,
        Some(now + Duration::seconds(100)),
        "doubled, capped at the maximum"
    );
    let account = s.get_account(id, op).await.unwrap().unwrap();
    assert_eq!(
        (
            account.failed_logins,
            account.lockouts,
            account.locked_until
        ),
        (0, 2, second)
    );
    assert_eq!(
        events(s, id, AuditEventType::AuthFailed).await,
        6,
        "every failure is audited"
    );
    s.start_session(
        &session(id, op, now, 9),
        None,
        draft(AuditEventType::SessionCreated),
    )
    .await
    .unwrap();
    let account = s.get_account(id, op).await.unwrap().unwrap();
    assert_eq!(
        (
            account.failed_logins,
            account.lockouts,
            account.locked_until
        ),
        (0, 0, None)
    );
}

async fn disabling_revokes_token_and_sessions_but_keeps_the_last_admin(h: &Harness) {
    let s = h.store();
    let t = new_tenant(s).await;
    let id = t.record.id;
    let now = now_micros();
    let last = s
        .disable_operator(id, t.admin.id, now, draft(AuditEventType::OperatorDisabled))
        .await
        .unwrap();
    assert_eq!(last, OperatorRevocation::LastAdmin);
    let op = new_operator(s, id, "approver", Role::Approver).await;
    s.set_password(
        id,
        op,
        "$2b$04$h",
        now,
        draft(AuditEventType::OperatorPasswordSet),
    )
    .await
    .unwrap();
    s.start_session(
        &session(id, op, now, 7),
        None,
        draft(AuditEventType::SessionCreated),
    )
    .await
    .unwrap();
    let done = s
        .disable_operator(id, op, now, draft(AuditEventType::OperatorDisabled))
        .await
        .unwrap();
    assert_eq!(done, OperatorRevocation::Revoked);
    assert!(s
        .get_operator(id, op)
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_some());
    assert!(s
        .get_account(id, op)
        .await
        .unwrap()
        .unwrap()
        .disabled_at
        .is_some());
    assert!(s
        .touch_session(id, &[7; 32], now, now - Duration::minutes(1))
        .await
        .unwrap()
        .is_none());
    let again = s
        .disable_operator(id, op, now, draft(AuditEventType::OperatorDisabled))
        .await
        .unwrap();
    assert_eq!(again, OperatorRevocation::AlreadyRevoked);
    let unknown = s
        .disable_operator(
            id,
            OperatorId::new(),
            now,
            draft(AuditEventType::OperatorDisabled),
        )
        .await
        .unwrap();
    assert_eq!(unknown, OperatorRevocation::NotFound);
    assert_eq!(
        events(s, id, AuditEventType::OperatorDisabled).await,
        1,
        "refusals write nothing"
    );
    // An operator without an account can be disabled too.
    let plain = new_operator(s, id, "bot-admin", Role::Auditor).await;
    let done = s
        .disable_operator(id, plain, now, draft(AuditEventType::OperatorDisabled))
        .await
        .unwrap();
    assert_eq!(done, OperatorRevocation::Revoked);
}

agent_secret_testkit::backend_suite!(
    Harness:
    a_password_indexes_the_login_by_tenant_name_and_id,
    a_totp_step_is_accepted_once,
    sessions_end_idle_absolute_on_logout_and_on_password_change,
    failed_logins_lock_the_account_with_doubling,
    disabling_revokes_token_and_sessions_but_keeps_the_last_admin,
);
