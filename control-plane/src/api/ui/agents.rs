//! An agent's page and what admins do there: create an agent (its key shown once), rotate the
//! key (shown once), set the trust tier, widen or narrow the ceiling, disable it, and revoke
//! its tokens. Every action is the service's own (`service::agents`, `service::ceilings`), so
//! roles, audit and watch events are exactly the API's.

use std::ops::ControlFlow;
use std::sync::Arc;

use agent_secret_core::api::{AgentInfo, TokenInfo};
use agent_secret_core::ids::AgentId;
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

use super::listings::refused_or_failure;
use super::pages::{failure_message, nav, render, Nav};
use super::{refuse_post, SameSite, Visitor};
use crate::api::extract::Ctx;
use crate::service::{agents, ceilings, tokens, App, ServiceError};

#[derive(Template)]
#[template(path = "agent.html")]
struct AgentPage<'a> {
    nav: Nav,
    a: AgentInfo,
    tokens: Vec<TokenInfo>,
    /// The tokens page filtered to this agent.
    tokens_link: String,
    done: Option<&'a str>,
    error: Option<String>,
}

/// A credential shown once, right after it was made.
#[derive(Template)]
#[template(path = "agent_key.html")]
struct AgentKeyPage<'a> {
    nav: Nav,
    id: String,
    heading: &'a str,
    key: String,
    note: String,
}

#[derive(Deserialize)]
pub struct DoneQuery {
    done: Option<String>,
}

/// What a finished action says on the page it returns to (fixed texts: nothing of the request
/// is reflected).
fn done_message(code: &str) -> Option<&'static str> {
    Some(match code {
        "tier" => "Trust tier saved. Pending requests of this agent are evaluated again.",
        "allowed" => "Ceiling widened.",
        "denied" => "Ceiling narrowed; tokens it no longer covers were revoked.",
        "disabled" => "Agent disabled: its key and every token stop working now.",
        "revoked" => "Token revoked.",
        _ => return None,
    })
}

fn no_agent() -> Response {
    (StatusCode::NOT_FOUND, "No such agent.").into_response()
}

async fn agent_page(
    app: &App,
    visitor: &Visitor,
    id: AgentId,
    done: Option<&str>,
    error: Option<(StatusCode, String)>,
) -> Response {
    let nav = match nav(app, visitor, "agents").await {
        Ok(nav) => nav,
        Err(page) => return page,
    };
    let caller = visitor.0.human.into();
    let a = match agents::get(app, caller, id).await {
        Ok(a) => a,
        Err(e) => return refused_or_failure(nav, e),
    };
    let tokens = match tokens::list(app, caller, Some(id), None, Some(50)).await {
        Ok(list) => list.tokens,
        Err(e) => return refused_or_failure(nav, e),
    };
    let (status, error) = match error {
        Some((status, message)) => (status, Some(message)),
        None => (StatusCode::OK, None),
    };
    let done = done.and_then(done_message);
    render(
        status,
        &AgentPage {
            nav,
            tokens_link: format!("/ui/tokens?agent={}", a.id),
            a,
            tokens,
            done,
            error,
        },
    )
}

pub async fn agent(
    State(app): State<Arc<App>>,
    visitor: Visitor,
    Path(id): Path<String>,
    Query(q): Query<DoneQuery>,
) -> Response {
    match id.parse() {
        Ok(id) => agent_page(&app, &visitor, id, q.done.as_deref(), None).await,
        Err(_) => no_agent(),
    }
}

/// After an action: back to the agent's page saying it was done, or the page again with the
/// refusal (a 403 page for a role that may not act).
async fn after(
    app: &App,
    visitor: &Visitor,
    id: AgentId,
    result: Result<(), ServiceError>,
    done: &str,
) -> Response {
    match result {
        Ok(()) => Redirect::to(&format!("/ui/agents/{id}?done={done}")).into_response(),
        Err(ServiceError::Forbidden(message)) => match nav(app, visitor, "agents").await {
            Ok(nav) => refused_or_failure(nav, ServiceError::Forbidden(message)),
            Err(page) => page,
        },
        Err(e) => agent_page(app, visitor, id, None, Some(failure_message(e))).await,
    }
}

#[derive(Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    csrf: String,
    name: String,
    #[serde(default)]
    trust_tier: String,
    /// Scope patterns separated by spaces or lines.
    #[serde(default)]
    allow: String,
}

pub async fn create(
    State(app): State<Arc<App>>,
    visitor: Visitor,
    SameSite(same): SameSite,
    Ctx(ctx): Ctx,
    Form(form): Form<CreateForm>,
) -> Response {
    if let Some(refused) = refuse_post(same, &app, &visitor.0, &form.csrf) {
        return refused;
    }
    let nav = match nav(&app, &visitor, "agents").await {
        Ok(nav) => nav,
        Err(page) => return page,
    };
    let tier = match form.trust_tier.trim() {
        "" => None,
        raw => match raw.parse::<i32>() {
            Ok(t) => Some(t),
            Err(_) => {
                return (StatusCode::BAD_REQUEST, "The trust tier is 0 to 4.").into_response()
            }
        },
    };
    let allow = scopes(&form.allow);
    match agents::create(
        &app,
        visitor.0.human.into(),
        form.name.trim(),
        tier,
        &allow,
        &ctx,
    )
    .await
    {
        Ok(created) => render(
            StatusCode::CREATED,
            &AgentKeyPage {
                nav,
                heading: "Agent created",
                note: format!(
                    "The agent {} may be granted {}.",
                    form.name.trim(),
                    if allow.is_empty() {
                        "nothing yet: widen its ceiling first".to_owned()
                    } else {
                        allow.join(" ")
                    }
                ),
                id: created.id,
                key: created.agent_key,
            },
        ),
        Err(e) => refused_or_failure(nav, e),
    }
}

#[derive(Deserialize)]
pub struct ConfirmForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    confirm: String,
}

pub async fn rotate(
    State(app): State<Arc<App>>,
    visitor: Visitor,
    SameSite(same): SameSite,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    Form(form): Form<ConfirmForm>,
) -> Response {
    let id = match confirmed(&app, &visitor, same, &form, &id).await {
        ControlFlow::Continue(id) => id,
        ControlFlow::Break(refused) => return refused,
    };
    match agents::rotate_key(&app, visitor.0.human.into(), id, &ctx).await {
        Ok(rotated) => match nav(&app, &visitor, "agents").await {
            Ok(nav) => render(
                StatusCode::OK,
                &AgentKeyPage {
                    nav,
                    heading: "Agent key rotated",
                    note: format!(
                        "The old key stopped working, and with it {} token(s).",
                        rotated.tokens_revoked
                    ),
                    id: rotated.id,
                    key: rotated.agent_key,
                },
            ),
            Err(page) => page,
        },
        Err(e) => after(&app, &visitor, id, Err(e), "").await,
    }
}

/// What a confirmed action on an agent passes first: a form from this site with the session's
/// token, an agent id, and the box ticked.
async fn confirmed(
    app: &App,
    visitor: &Visitor,
    same: bool,
    form: &ConfirmForm,
    id: &str,
) -> ControlFlow<Response, AgentId> {
    if let Some(refused) = refuse_post(same, app, &visitor.0, &form.csrf) {
        return ControlFlow::Break(refused);
    }
    let Ok(id) = id.parse::<AgentId>() else {
        return ControlFlow::Break(no_agent());
    };
    if form.confirm != "yes" {
        return ControlFlow::Break(unconfirmed(app, visitor, id).await);
    }
    ControlFlow::Continue(id)
}

async fn unconfirmed(app: &App, visitor: &Visitor, id: AgentId) -> Response {
    let message = "Tick the box to confirm first.".to_owned();
    agent_page(
        app,
        visitor,
        id,
        None,
        Some((StatusCode::BAD_REQUEST, message)),
    )
    .await
}

pub async fn disable(
    State(app): State<Arc<App>>,
    visitor: Visitor,
    SameSite(same): SameSite,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    Form(form): Form<ConfirmForm>,
) -> Response {
    let id = match confirmed(&app, &visitor, same, &form, &id).await {
        ControlFlow::Continue(id) => id,
        ControlFlow::Break(refused) => return refused,
    };
    let result = agents::revoke(&app, visitor.0.human.into(), id, &ctx)
        .await
        .map(drop);
    after(&app, &visitor, id, result, "disabled").await
}

#[derive(Deserialize)]
pub struct TierForm {
    #[serde(default)]
    csrf: String,
    trust_tier: String,
}

pub async fn set_tier(
    State(app): State<Arc<App>>,
    visitor: Visitor,
    SameSite(same): SameSite,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    Form(form): Form<TierForm>,
) -> Response {
    if let Some(refused) = refuse_post(same, &app, &visitor.0, &form.csrf) {
        return refused;
    }
    let Ok(id) = id.parse::<AgentId>() else {
        return no_agent();
    };
    // An unparsable tier goes to the service as -1, which refuses it with the range.
    let tier = form.trust_tier.trim().parse::<i32>().unwrap_or(-1);
    let result = agents::set_trust_tier(&app, visitor.0.human.into(), id, tier, &ctx)
        .await
        .map(drop);
    after(&app, &visitor, id, result, "tier").await
}

#[derive(Deserialize)]
pub struct CeilingForm {
    #[serde(default)]
    csrf: String,
    /// `allow` or `deny`.
    change: String,
    scopes: String,
}

pub async fn ceiling(
    State(app): State<Arc<App>>,
    visitor: Visitor,
    SameSite(same): SameSite,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    Form(form): Form<CeilingForm>,
) -> Response {
    if let Some(refused) = refuse_post(same, &app, &visitor.0, &form.csrf) {
        return refused;
    }
    let Ok(id) = id.parse::<AgentId>() else {
        return no_agent();
    };
    let listed = scopes(&form.scopes);
    let caller = visitor.0.human.into();
    let (result, done) = match form.change.as_str() {
        "allow" => (
            ceilings::allow(&app, caller, id, &listed, &ctx).await,
            "allowed",
        ),
        "deny" => (
            ceilings::deny(&app, caller, id, &listed, &ctx).await,
            "denied",
        ),
        _ => return (StatusCode::BAD_REQUEST, "Choose allow or deny.").into_response(),
    };
    after(&app, &visitor, id, result.map(drop), done).await
}

/// Scope patterns typed into one field, separated by spaces, commas or lines.
pub(super) fn scopes(raw: &str) -> Vec<String> {
    raw.split(|c: char| c.is_whitespace() || c == ',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}
