//! The operator's own account in the dashboard: self-service TOTP enrollment before the first
//! login (`/ui/enroll`, no session: the roles that need TOTP cannot log in without it) and,
//! once logged in, the account page with a password change (`/ui/account`).
//!
//! Enrollment shows the secret once, as a QR code rendered here (the `qrcode` crate's SVG, in
//! an `<img>` as a `data:` URL, which the CSP's `img-src data:` allows; no inline style) and as
//! base32 for typing. The confirm form carries the signed ticket of
//! `service::enrollment` in a hidden field, never the secret; the secret is in no URL
//! (the page answers the POST, and every dashboard response is `no-store`).

use std::sync::Arc;

use agent_secret_core::api::SetPasswordRequest;
use askama::Template;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use qrcode::render::svg;
use qrcode::{EcLevel, QrCode};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::pages::{failure, nav, render, Nav};
use super::{refuse_post, SameSite, Visitor};
use crate::api::extract::Ctx;
use crate::api::handlers::sessions::cookie;
use crate::service::enrollment::{self, EnrollmentError, SelfEnrollment};
use crate::service::principal::OperatorPrincipal;
use crate::service::{operators, App, ServiceError};

/// The answer to a form posted from another site.
const CROSS_SITE: &str = "Use this site's own form.";

#[derive(Template)]
#[template(path = "enroll.html")]
struct EnrollPage<'a> {
    error: Option<&'a str>,
    tenant: &'a str,
    username: &'a str,
}

#[derive(Template)]
#[template(path = "enroll_confirm.html")]
struct EnrollConfirmPage<'a> {
    error: Option<&'a str>,
    /// The QR code and the secret: on the first showing only.
    shown: Option<Shown>,
    ticket: &'a str,
}

/// The secret as the confirm page shows it once (wiped when the page is dropped).
struct Shown {
    name: String,
    qr: Zeroizing<String>,
    secret: Zeroizing<String>,
    expires: String,
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage<'a> {
    nav: Nav,
    name: String,
    role: &'static str,
    totp_on: bool,
    min_chars: usize,
    error: Option<&'a str>,
}

pub async fn enroll_form() -> Response {
    render(
        StatusCode::OK,
        &EnrollPage {
            error: None,
            tenant: "",
            username: "",
        },
    )
}

#[derive(Deserialize)]
pub struct EnrollForm {
    tenant: String,
    username: String,
    password: String,
}

/// `POST /ui/enroll`: the password, then the new secret and the confirm form.
pub async fn enroll(
    State(app): State<Arc<App>>,
    SameSite(same): SameSite,
    Ctx(ctx): Ctx,
    Form(form): Form<EnrollForm>,
) -> Response {
    if !same {
        return (StatusCode::FORBIDDEN, CROSS_SITE).into_response();
    }
    let password = Zeroizing::new(form.password);
    let refused = |status, message: &str| {
        render(
            status,
            &EnrollPage {
                error: Some(message),
                tenant: &form.tenant,
                username: &form.username,
            },
        )
    };
    match enrollment::begin(&app, &form.tenant, &form.username, &password, &ctx).await {
        Ok(started) => match shown(&started) {
            Ok(shown) => render(
                StatusCode::OK,
                &EnrollConfirmPage {
                    error: None,
                    shown: Some(shown),
                    ticket: started.ticket.as_str(),
                },
            ),
            Err(e) => {
                tracing::error!(error = %e, "the enrollment QR code failed to render");
                failure(ServiceError::Internal("QR code".into()))
            }
        },
        Err(EnrollmentError::AlreadyEnrolled) => refused(
            StatusCode::CONFLICT,
            "An authenticator is already set up for this account. To replace it, ask an admin \
             to reset it.",
        ),
        Err(EnrollmentError::Service(ServiceError::RateLimited { .. })) => refused(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many failed attempts. Wait a while before trying again.",
        ),
        Err(EnrollmentError::Service(
            ServiceError::Denied { .. } | ServiceError::Unauthenticated,
        )) => refused(
            StatusCode::UNAUTHORIZED,
            "Wrong tenant, username or password.",
        ),
        Err(EnrollmentError::Service(e)) => failure(e),
        Err(EnrollmentError::BadTicket) => failure(ServiceError::Internal("ticket".into())),
    }
}

/// The QR code (an SVG `data:` URL) and the base32 secret of a new enrollment.
fn shown(started: &SelfEnrollment) -> Result<Shown, qrcode::types::QrError> {
    let code =
        QrCode::with_error_correction_level(started.otpauth_url.expose().as_bytes(), EcLevel::M)?;
    let svg = Zeroizing::new(
        code.render::<svg::Color>()
            .min_dimensions(240, 240)
            .quiet_zone(true)
            .build(),
    );
    let qr = Zeroizing::new(format!(
        "data:image/svg+xml;base64,{}",
        STANDARD.encode(svg.as_bytes())
    ));
    Ok(Shown {
        name: started.name.clone(),
        qr,
        secret: Zeroizing::new(started.secret.expose().to_owned()),
        expires: started.expires_at.format("%H:%M UTC").to_string(),
    })
}

#[derive(Deserialize)]
pub struct ConfirmForm {
    #[serde(default)]
    ticket: String,
    #[serde(default)]
    code: String,
}

/// `POST /ui/enroll/confirm`: the ticket and a first code; then the login form.
pub async fn enroll_confirm(
    State(app): State<Arc<App>>,
    SameSite(same): SameSite,
    Ctx(ctx): Ctx,
    Form(form): Form<ConfirmForm>,
) -> Response {
    if !same {
        return (StatusCode::FORBIDDEN, CROSS_SITE).into_response();
    }
    let (status, message) = match enrollment::confirm(&app, &form.ticket, &form.code, &ctx).await {
        Ok(_) => return Redirect::to("/ui/login?enrolled=1").into_response(),
        Err(EnrollmentError::BadTicket) => (
            StatusCode::FORBIDDEN,
            "This setup form expired or was changed. Start the setup again.".to_owned(),
        ),
        Err(EnrollmentError::AlreadyEnrolled) => (
            StatusCode::CONFLICT,
            "Your authenticator is already set up. Log in with a code.".to_owned(),
        ),
        Err(EnrollmentError::Service(ServiceError::RateLimited { .. })) => (
            StatusCode::TOO_MANY_REQUESTS,
            "Too many failed attempts. Wait a while before trying again.".to_owned(),
        ),
        Err(EnrollmentError::Service(ServiceError::Invalid { message, .. })) => (
            StatusCode::BAD_REQUEST,
            format!("{}.", capitalized(&message)),
        ),
        Err(EnrollmentError::Service(e)) => return failure(e),
    };
    // Only a wrong or replayed code keeps the ticket: the person tries the next code.
    let ticket = if status == StatusCode::BAD_REQUEST {
        form.ticket.as_str()
    } else {
        ""
    };
    render(
        status,
        &EnrollConfirmPage {
            error: Some(&message),
            shown: None,
            ticket,
        },
    )
}

fn capitalized(message: &str) -> String {
    let mut chars = message.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// `GET /ui/account`: who is logged in, whether their TOTP is on, the password form.
pub async fn account(State(app): State<Arc<App>>, visitor: Visitor) -> Response {
    account_page(&app, &visitor, None, StatusCode::OK).await
}

async fn account_page(
    app: &App,
    visitor: &Visitor,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let nav = match nav(app, visitor, "account").await {
        Ok(nav) => nav,
        Err(page) => return page,
    };
    let human = visitor.0.human;
    let operator = app.store.get_operator(human.tenant, human.id).await;
    let account = app.store.get_account(human.tenant, human.id).await;
    let (operator, account) = match (operator, account) {
        (Ok(Some(operator)), Ok(account)) => (operator, account),
        (Ok(None), _) => return failure(ServiceError::NotFound("operator")),
        (Err(e), _) | (_, Err(e)) => return failure(ServiceError::Store(e)),
    };
    let page = AccountPage {
        nav,
        name: operator.name,
        role: human.role.as_str(),
        totp_on: account.is_some_and(|a| a.totp_confirmed_at.is_some()),
        min_chars: app.sessions.password_rules.min_chars,
        error,
    };
    render(status, &page)
}

#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    current: String,
    #[serde(default)]
    new: String,
    #[serde(default)]
    repeat: String,
}

/// `POST /ui/account/password`: the operators' service's own rules and current-password
/// check; every session ends (this one too), so the login form follows.
pub async fn change_password(
    State(app): State<Arc<App>>,
    visitor: Visitor,
    SameSite(same): SameSite,
    Ctx(ctx): Ctx,
    Form(form): Form<PasswordForm>,
) -> Response {
    if let Some(refused) = refuse_post(same, &app, &visitor.0, &form.csrf) {
        return refused;
    }
    let repeat = Zeroizing::new(form.repeat);
    if form.new != *repeat {
        let message = "The new password and its repetition differ.";
        return account_page(&app, &visitor, Some(message), StatusCode::BAD_REQUEST).await;
    }
    let request = SetPasswordRequest {
        password: form.new,
        current_password: Some(form.current),
    };
    let me = OperatorPrincipal::from(visitor.0.human);
    match operators::set_password(&app, me, me.id, &request, &ctx).await {
        Ok(_) => {
            let mut headers = HeaderMap::new();
            if let Ok(cleared) = cookie("", 0) {
                headers.insert(header::SET_COOKIE, cleared);
            }
            (headers, Redirect::to("/ui/login?password_changed=1")).into_response()
        }
        Err(e @ (ServiceError::Invalid { .. } | ServiceError::Forbidden(_))) => {
            let status = if matches!(e, ServiceError::Forbidden(_)) {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::BAD_REQUEST
            };
            let message = format!("{}.", capitalized(&e.to_string()));
            account_page(&app, &visitor, Some(&message), status).await
        }
        Err(e) => failure(e),
    }
}
