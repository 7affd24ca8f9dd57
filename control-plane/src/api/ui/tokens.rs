//! Tokens (filtered by agent and state, newest first) and sidecars (last seen, version), with
//! revocation of either for admins.

use std::sync::Arc;

use agent_secret_core::api::{SidecarInfo, TokenInfo, TokenStatus};
use agent_secret_core::ids::{SidecarId, TokenId};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

use super::listings::refused_or_failure;
use super::pages::{nav, render, Nav};
use super::{refuse_post, SameSite, Visitor};
use crate::api::extract::Ctx;
use crate::service::auth::Principal;
use crate::service::{sidecars, tokens, App};

/// The states a token can be listed by, in the filter's order.
const STATES: [TokenStatus; 5] = [
    TokenStatus::PendingApproval,
    TokenStatus::Active,
    TokenStatus::Denied,
    TokenStatus::Revoked,
    TokenStatus::Expired,
];

#[derive(Template)]
#[template(path = "tokens.html")]
struct TokensPage {
    nav: Nav,
    agent: String,
    status: String,
    states: Vec<&'static str>,
    rows: Vec<TokenInfo>,
    done: bool,
}

#[derive(Template)]
#[template(path = "sidecars.html")]
struct SidecarsPage {
    nav: Nav,
    rows: Vec<SidecarInfo>,
    done: bool,
}

#[derive(Deserialize)]
pub struct TokenFilter {
    #[serde(default)]
    agent: String,
    #[serde(default)]
    status: String,
    done: Option<String>,
}

pub async fn list(
    State(app): State<Arc<App>>,
    visitor: Visitor,
    Query(q): Query<TokenFilter>,
) -> Response {
    let nav = match nav(&app, &visitor, "tokens").await {
        Ok(nav) => nav,
        Err(page) => return page,
    };
    let agent = q.agent.trim().to_owned();
    let agent_id = match agent.as_str() {
        "" => None,
        raw => match raw.parse() {
            Ok(id) => Some(id),
            Err(_) => return (StatusCode::BAD_REQUEST, "That is not an agent id.").into_response(),
        },
    };
    let status = TokenStatus::parse(q.status.trim());
    match tokens::list(&app, visitor.0.human.into(), agent_id, status, Some(200)).await {
        Ok(list) => render(
            StatusCode::OK,
            &TokensPage {
                nav,
                agent,
                status: status.map(|s| s.as_str()).unwrap_or_default().to_owned(),
                states: STATES.iter().map(TokenStatus::as_str).collect(),
                rows: list.tokens,
                done: q.done.is_some(),
            },
        ),
        Err(e) => refused_or_failure(nav, e),
    }
}

#[derive(Deserialize)]
pub struct RevokeForm {
    #[serde(default)]
    csrf: String,
    /// Where to go back to: the agent's page when it came from there.
    #[serde(default)]
    back: String,
}

pub async fn revoke(
    State(app): State<Arc<App>>,
    visitor: Visitor,
    SameSite(same): SameSite,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    Form(form): Form<RevokeForm>,
) -> Response {
    if let Some(refused) = refuse_post(same, &app, &visitor.0, &form.csrf) {
        return refused;
    }
    let Ok(id) = id.parse::<TokenId>() else {
        return (StatusCode::NOT_FOUND, "No such token.").into_response();
    };
    let caller = Principal::Operator(visitor.0.human.into());
    match tokens::revoke(&app, caller, id, &ctx).await {
        Ok(token) if form.back == "agent" => {
            Redirect::to(&format!("/ui/agents/{}?done=revoked", token.agent_id)).into_response()
        }
        Ok(_) => Redirect::to("/ui/tokens?done=revoked").into_response(),
        Err(e) => match nav(&app, &visitor, "tokens").await {
            Ok(nav) => refused_or_failure(nav, e),
            Err(page) => page,
        },
    }
}

#[derive(Deserialize)]
pub struct DoneQuery {
    done: Option<String>,
}

pub async fn sidecar_list(
    State(app): State<Arc<App>>,
    visitor: Visitor,
    Query(q): Query<DoneQuery>,
) -> Response {
    let nav = match nav(&app, &visitor, "sidecars").await {
        Ok(nav) => nav,
        Err(page) => return page,
    };
    match sidecars::list(&app, visitor.0.human.into()).await {
        Ok(list) => render(
            StatusCode::OK,
            &SidecarsPage {
                nav,
                rows: list.sidecars,
                done: q.done.is_some(),
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

pub async fn sidecar_revoke(
    State(app): State<Arc<App>>,
    visitor: Visitor,
    SameSite(same): SameSite,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    Form(form): Form<ConfirmForm>,
) -> Response {
    if let Some(refused) = refuse_post(same, &app, &visitor.0, &form.csrf) {
        return refused;
    }
    let Ok(id) = id.parse::<SidecarId>() else {
        return (StatusCode::NOT_FOUND, "No such sidecar.").into_response();
    };
    if form.confirm != "yes" {
        return (
            StatusCode::BAD_REQUEST,
            "Tick the box to confirm the revocation first.",
        )
            .into_response();
    }
    match sidecars::revoke(&app, visitor.0.human.into(), id, &ctx).await {
        Ok(_) => Redirect::to("/ui/sidecars?done=revoked").into_response(),
        Err(e) => match nav(&app, &visitor, "sidecars").await {
            Ok(nav) => refused_or_failure(nav, e),
            Err(page) => page,
        },
    }
}
