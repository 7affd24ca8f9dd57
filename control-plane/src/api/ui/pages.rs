//! The dashboard's pages: login, the approval queue and one request with its decision form
//! (the listings of secrets, agents and operators are `listings`).

use std::sync::Arc;

use agent_secret_core::api::{ApprovalInfo, ApprovalStatus, DecideApproval, LoginRequest};
use agent_secret_core::ids::{ApprovalId, TenantId};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

use super::{form_token, refuse_post, SameSite, Visitor};
use crate::api::extract::Ctx;
use crate::api::handlers::sessions::cookie;
use crate::service::decisions::{self, human_decider};
use crate::service::{approvals, sessions, App, ServiceError};

/// The header bar of every page after login.
pub(super) struct Nav {
    pub(super) current: &'static str,
    pub(super) pending: usize,
    pub(super) csrf: String,
    pub(super) role: &'static str,
}

pub(super) async fn nav(
    app: &App,
    visitor: &Visitor,
    current: &'static str,
) -> Result<Nav, Response> {
    let pending = approvals::list(app, visitor.0.human.tenant, Some(ApprovalStatus::Pending))
        .await
        .map_err(failure)?
        .approvals
        .len();
    Ok(Nav {
        current,
        pending,
        csrf: form_token(app, &visitor.0),
        role: visitor.0.human.role.as_str(),
    })
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    error: Option<&'a str>,
    notice: Option<&'a str>,
    tenant: &'a str,
    username: &'a str,
}

#[derive(Template)]
#[template(path = "approvals.html")]
struct ApprovalsPage {
    nav: Nav,
    rows: Vec<Row>,
}

pub(super) struct Row {
    id: String,
    status: &'static str,
    summary: String,
    highest: &'static str,
    agent: String,
    counted: u8,
    required: u8,
    created: String,
    expires: String,
}

#[derive(Template)]
#[template(path = "approval.html")]
struct ApprovalPage<'a> {
    nav: Nav,
    a: ApprovalInfo,
    error: Option<&'a str>,
    lock_until: Option<String>,
    expires: String,
}

pub(super) fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a dashboard template failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

/// A service error as a page: the message is safe to show (no secrets, see `ServiceError`).
pub(super) fn failure(e: ServiceError) -> Response {
    failure_message(e).into_response()
}

/// The status and the words a page shows for a service error: its own message, except for
/// failures of the server's parts, which are logged where they happen and not detailed here.
pub(super) fn failure_message(e: ServiceError) -> (StatusCode, String) {
    let status = e.code().http_status().unwrap_or(500);
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let message = match e {
        ServiceError::Store(_) | ServiceError::Kms(_) | ServiceError::Internal(_) => {
            "Something went wrong on the server; it is logged.".to_owned()
        }
        other => other.to_string(),
    };
    (status, message)
}

fn utc(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[derive(Deserialize)]
pub struct LoginQuery {
    expired: Option<String>,
    enrolled: Option<String>,
    password_changed: Option<String>,
}

pub async fn login_form(Query(q): Query<LoginQuery>) -> Response {
    let error = q
        .expired
        .is_some()
        .then_some("Your session ended. Log in again.");
    let notice = match (q.enrolled.is_some(), q.password_changed.is_some()) {
        (true, _) => Some("Authenticator set up. Log in with a code."),
        (_, true) => Some("Password changed. Log in with the new one."),
        _ => None,
    };
    render(
        StatusCode::OK,
        &LoginPage {
            error,
            notice,
            tenant: "",
            username: "",
        },
    )
}

#[derive(Deserialize)]
pub struct LoginForm {
    tenant: String,
    username: String,
    password: String,
    #[serde(default)]
    totp_code: String,
}

pub async fn login(
    State(app): State<Arc<App>>,
    SameSite(same): SameSite,
    Ctx(ctx): Ctx,
    Form(form): Form<LoginForm>,
) -> Response {
    if !same {
        return (StatusCode::FORBIDDEN, "Log in from this site's own form.").into_response();
    }
    let request = LoginRequest {
        tenant: form.tenant.clone(),
        username: form.username.clone(),
        password: form.password,
        totp_code: Some(form.totp_code).filter(|c| !c.is_empty()),
    };
    match sessions::login(&app, &request, &ctx).await {
        Ok(outcome) => {
            let cookie = match cookie(
                outcome.cookie_value.expose(),
                app.sessions.absolute_timeout.as_secs(),
            ) {
                Ok(c) => c,
                Err(e) => return e.into_response(),
            };
            let mut headers = HeaderMap::new();
            headers.insert(header::SET_COOKIE, cookie);
            (headers, Redirect::to("/ui/approvals")).into_response()
        }
        Err(e) => {
            let (status, message) = match &e {
                ServiceError::RateLimited { .. } => (
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many failed attempts. Wait a while before trying again.",
                ),
                ServiceError::Forbidden(_) => (
                    StatusCode::FORBIDDEN,
                    "Your role needs an authenticator (TOTP): set it up first (link below).",
                ),
                _ => (
                    StatusCode::UNAUTHORIZED,
                    "Wrong tenant, username, password or authenticator code.",
                ),
            };
            render(
                status,
                &LoginPage {
                    error: Some(message),
                    notice: None,
                    tenant: &form.tenant,
                    username: &form.username,
                },
            )
        }
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub async fn logout(
    State(app): State<Arc<App>>,
    visitor: Visitor,
    SameSite(same): SameSite,
    Ctx(ctx): Ctx,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(refused) = refuse_post(same, &app, &visitor.0, &form.csrf) {
        return refused;
    }
    if let Err(e) = sessions::logout(&app, &visitor.0, &ctx).await {
        return failure(e);
    }
    let mut headers = HeaderMap::new();
    if let Ok(cleared) = cookie("", 0) {
        headers.insert(header::SET_COOKIE, cleared);
    }
    (headers, Redirect::to("/ui/login")).into_response()
}

pub async fn approvals(State(app): State<Arc<App>>, visitor: Visitor) -> Response {
    let nav = match nav(&app, &visitor, "approvals").await {
        Ok(nav) => nav,
        Err(page) => return page,
    };
    match queue(&app, visitor.0.human.tenant).await {
        Ok(rows) => render(StatusCode::OK, &ApprovalsPage { nav, rows }),
        Err(e) => failure(e),
    }
}

/// The queue alone, as the live updates send it (`live`).
#[derive(Template)]
#[template(path = "queue.html")]
pub(super) struct QueueFragment {
    rows: Vec<Row>,
}

impl QueueFragment {
    pub(super) async fn of(app: &App, tenant: TenantId) -> Result<Self, ServiceError> {
        Ok(Self {
            rows: queue(app, tenant).await?,
        })
    }

    /// How many requests are pending.
    pub(super) fn pending(&self) -> usize {
        self.rows.iter().filter(|r| r.status == "pending").count()
    }
}

/// The queue's rows: pending first, each group newest first (as listed; a stable sort).
async fn queue(app: &App, tenant: TenantId) -> Result<Vec<Row>, ServiceError> {
    let mut all = approvals::list(app, tenant, None).await?.approvals;
    all.sort_by_key(|a| a.status != ApprovalStatus::Pending);
    Ok(all
        .into_iter()
        .map(|a| Row {
            summary: summary(&a),
            highest: a.unlocks.highest_sensitivity().as_str(),
            status: a.status.as_str(),
            agent: a.agent_id.clone(),
            counted: a.approvals_counted,
            required: a.required_approvals,
            created: utc(a.created_at),
            expires: utc(a.expires_at),
            id: a.id,
        })
        .collect())
}

fn summary(a: &ApprovalInfo) -> String {
    let secrets = a.unlocks.secrets.len();
    match (&a.token_id, secrets) {
        (None, _) => format!(
            "widen the ceiling by {}",
            a.unlocks.ceiling_additions.join(" ")
        ),
        (Some(_), 1) => a.unlocks.secrets[0].path.clone(),
        (Some(_), n) => format!("{n} secrets under {}", a.unlocks.scopes.join(" ")),
    }
}

async fn approval_page(
    app: &App,
    visitor: &Visitor,
    id: ApprovalId,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let nav = match nav(app, visitor, "approvals").await {
        Ok(nav) => nav,
        Err(page) => return page,
    };
    let a = match approvals::show(app, visitor.0.human.tenant, id).await {
        Ok(a) => a,
        Err(e) => return failure(e),
    };
    let page = ApprovalPage {
        nav,
        lock_until: a.time_lock_until.map(utc),
        expires: utc(a.expires_at),
        a,
        error,
    };
    render(status, &page)
}

pub async fn approval(
    State(app): State<Arc<App>>,
    visitor: Visitor,
    Path(id): Path<String>,
) -> Response {
    let Ok(id) = id.parse::<ApprovalId>() else {
        return (StatusCode::NOT_FOUND, "No such approval request.").into_response();
    };
    approval_page(&app, &visitor, id, None, StatusCode::OK).await
}

#[derive(Deserialize)]
pub struct DecideForm {
    #[serde(default)]
    csrf: String,
    decision: String,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    digest: String,
    #[serde(default)]
    confirm: String,
}

pub async fn decide(
    State(app): State<Arc<App>>,
    visitor: Visitor,
    SameSite(same): SameSite,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    Form(form): Form<DecideForm>,
) -> Response {
    if let Some(refused) = refuse_post(same, &app, &visitor.0, &form.csrf) {
        return refused;
    }
    let Ok(id) = id.parse::<ApprovalId>() else {
        return (StatusCode::NOT_FOUND, "No such approval request.").into_response();
    };
    let approve = match form.decision.as_str() {
        "approve" => true,
        "deny" => false,
        _ => return (StatusCode::BAD_REQUEST, "Choose approve or deny.").into_response(),
    };
    if form.confirm != "yes" {
        let message = "Confirm that you reviewed the request first.";
        return approval_page(&app, &visitor, id, Some(message), StatusCode::BAD_REQUEST).await;
    }
    let decided = match human_decider(&app, visitor.0.human).await {
        Ok(decider) => {
            let body = DecideApproval {
                comment: Some(form.comment).filter(|c| !c.trim().is_empty()),
                digest: Some(form.digest).filter(|d| !d.is_empty()),
            };
            decisions::decide(&app, decider, id, approve, &body, &ctx).await
        }
        Err(e) => Err(e),
    };
    match decided {
        Ok(_) => Redirect::to(&format!("/ui/approvals/{id}")).into_response(),
        Err(e) => {
            let status = StatusCode::from_u16(e.code().http_status().unwrap_or(500))
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let message = e.to_string();
            approval_page(&app, &visitor, id, Some(&message), status).await
        }
    }
}
