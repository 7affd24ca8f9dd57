//! The self-service TOTP enrollment's ticket on a manual clock (`service::enrollment`, as the
//! dashboard calls it): it lives 10 minutes, names one operator, and dies with a newer
//! enrollment or a disabled operator. The forms themselves are tested over HTTPS in
//! `tests/tests/dashboard_enroll.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use agent_secret_control_plane::db::Db;
use agent_secret_control_plane::service::auth::OperatorPrincipal;
use agent_secret_control_plane::service::enrollment::{self, EnrollmentError, SelfEnrollment};
use agent_secret_control_plane::service::sessions::{Clock, SessionSettings};
use agent_secret_control_plane::service::{operators, tenants, App, Policy, RequestContext};
use agent_secret_control_plane::store::sql::SqlStore;
use agent_secret_core::api::{Role, SetPasswordRequest};
use agent_secret_core::credential::Pepper;
use agent_secret_core::ids::OperatorId;
use agent_secret_core::kms::local::{LocalKms, MasterKey};
use chrono::{TimeZone, Utc};

const PASSWORD: &str = "correct horse battery staple";

struct Setup {
    app: Arc<App>,
    admin: OperatorPrincipal,
    clock: Clock,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&format!(
        "sqlite://{}",
        dir.path().join("store.db").display()
    ))
    .await
    .unwrap();
    db.migrate().await.unwrap();
    let kms = LocalKms::open_or_create(dir.path().join("keyring"), MasterKey::generate()).unwrap();
    // Mid-step, so a code stays valid while the clock is not moved.
    let clock = Clock::manual(Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 10).unwrap());
    let app = Arc::new(
        App::new(
            Arc::new(SqlStore::new(db)),
            Arc::new(kms),
            Arc::new(Pepper::generate()),
            Policy::default(),
        )
        .with_sessions(SessionSettings {
            bcrypt_cost: 4,
            clock: clock.clone(),
            ..SessionSettings::default()
        }),
    );
    let created = tenants::create_tenant(&app, "acme").await.unwrap();
    let admins = app.store.list_operators(created.tenant_id).await.unwrap();
    let admin = OperatorPrincipal {
        tenant: created.tenant_id,
        id: admins[0].id,
        role: Role::Admin,
    };
    Setup {
        app,
        admin,
        clock,
        _dir: dir,
    }
}

fn ctx() -> RequestContext {
    RequestContext {
        ip: Some("203.0.113.7".parse().unwrap()),
        user_agent: None,
    }
}

impl Setup {
    async fn approver(&self, name: &str) -> OperatorId {
        let created = operators::create(&self.app, self.admin, name, Role::Approver, &ctx())
            .await
            .unwrap();
        let id: OperatorId = created.id.parse().unwrap();
        let password = SetPasswordRequest {
            password: PASSWORD.into(),
            current_password: None,
        };
        operators::set_password(&self.app, self.admin, id, &password, &ctx())
            .await
            .unwrap();
        id
    }

    async fn begin(&self, name: &str) -> SelfEnrollment {
        enrollment::begin(&self.app, "acme", name, PASSWORD, &ctx())
            .await
            .unwrap()
    }

    fn code(&self, started: &SelfEnrollment) -> String {
        let totp = totp_rs::Builder::new()
            .with_algorithm(totp_rs::Algorithm::SHA1)
            .with_digits(6)
            .with_step_duration(30)
            .with_secret(totp_rs::Secret::try_from_base32(started.secret.expose()).unwrap())
            .build()
            .unwrap();
        totp.generate(u64::try_from(self.clock.now().timestamp()).unwrap())
            .to_string()
    }

    async fn confirm(&self, ticket: &str, code: &str) -> Result<(), EnrollmentError> {
        enrollment::confirm(&self.app, ticket, code, &ctx())
            .await
            .map(|_| ())
    }
}

#[tokio::test]
async fn a_ticket_expires_after_ten_minutes() {
    let s = setup().await;
    s.approver("erin").await;
    let started = s.begin("erin").await;
    s.clock.advance(Duration::from_secs(10 * 60 + 1));
    let late = s.confirm(started.ticket.as_str(), &s.code(&started)).await;
    assert!(matches!(late, Err(EnrollmentError::BadTicket)), "{late:?}");

    let again = s.begin("erin").await;
    s.clock.advance(Duration::from_secs(9 * 60));
    s.confirm(again.ticket.as_str(), &s.code(&again))
        .await
        .expect("confirmed within its 10 minutes");
}

#[tokio::test]
async fn a_ticket_names_one_operator_and_one_enrollment() {
    let s = setup().await;
    s.approver("erin").await;
    let frank = s.approver("frank").await;
    let erins = s.begin("erin").await;
    let franks = s.begin("frank").await;

    // Erin's ticket with Frank's id in it: the MAC no longer matches.
    let erin_id = erins.human.id.to_string();
    let forged = erins.ticket.as_str().replace(&erin_id, &frank.to_string());
    let r = s.confirm(&forged, &s.code(&franks)).await;
    assert!(matches!(r, Err(EnrollmentError::BadTicket)), "{r:?}");

    // A newer enrollment voids Frank's ticket, whatever the code.
    let newer = s.begin("frank").await;
    let r = s.confirm(franks.ticket.as_str(), &s.code(&newer)).await;
    assert!(matches!(r, Err(EnrollmentError::BadTicket)), "{r:?}");

    // A disabled operator cannot confirm.
    operators::disable(&s.app, s.admin, frank, &ctx())
        .await
        .unwrap();
    let r = s.confirm(newer.ticket.as_str(), &s.code(&newer)).await;
    assert!(
        matches!(r, Err(EnrollmentError::Service(_))),
        "disabled: {r:?}"
    );
    s.confirm(erins.ticket.as_str(), &s.code(&erins))
        .await
        .expect("Erin's own ticket still works");
}
