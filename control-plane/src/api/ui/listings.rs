//! Read-only listings: secrets (metadata only, by path prefix), agents with their tier and
//! ceiling, and operators (admins only; anyone else gets a 403 page).

use std::sync::Arc;

use agent_secret_core::api::{AgentInfo, OperatorInfo, SecretMetadata};
use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::pages::{failure, nav, render, Nav};
use super::Visitor;
use crate::service::{agents, operators, secrets, App, ServiceError};

#[derive(Template)]
#[template(path = "secrets.html")]
struct SecretsPage {
    nav: Nav,
    prefix: String,
    rows: Vec<SecretMetadata>,
}

#[derive(Template)]
#[template(path = "agents.html")]
struct AgentsPage {
    nav: Nav,
    rows: Vec<AgentInfo>,
}

#[derive(Template)]
#[template(path = "operators.html")]
struct OperatorsPage {
    nav: Nav,
    rows: Vec<OperatorInfo>,
}

#[derive(Template)]
#[template(path = "refused.html")]
struct RefusedPage {
    nav: Nav,
    message: String,
}

#[derive(Deserialize)]
pub struct PrefixQuery {
    #[serde(default)]
    prefix: String,
}

pub async fn secrets(
    State(app): State<Arc<App>>,
    visitor: Visitor,
    Query(q): Query<PrefixQuery>,
) -> Response {
    let nav = match nav(&app, &visitor, "secrets").await {
        Ok(nav) => nav,
        Err(page) => return page,
    };
    let prefix = q.prefix.trim().to_owned();
    let filter = Some(prefix.as_str()).filter(|p| !p.is_empty());
    match secrets::list(&app, visitor.0.human.into(), filter).await {
        Ok(list) => render(
            StatusCode::OK,
            &SecretsPage {
                nav,
                prefix,
                rows: list.secrets,
            },
        ),
        Err(e) => refused_or_failure(nav, e),
    }
}

pub async fn agents(State(app): State<Arc<App>>, visitor: Visitor) -> Response {
    let nav = match nav(&app, &visitor, "agents").await {
        Ok(nav) => nav,
        Err(page) => return page,
    };
    match agents::list(&app, visitor.0.human.into()).await {
        Ok(list) => render(
            StatusCode::OK,
            &AgentsPage {
                nav,
                rows: list.agents,
            },
        ),
        Err(e) => refused_or_failure(nav, e),
    }
}

pub async fn operators(State(app): State<Arc<App>>, visitor: Visitor) -> Response {
    let nav = match nav(&app, &visitor, "operators").await {
        Ok(nav) => nav,
        Err(page) => return page,
    };
    match operators::list(&app, visitor.0.human.into()).await {
        Ok(list) => render(
            StatusCode::OK,
            &OperatorsPage {
                nav,
                rows: list.operators,
            },
        ),
        Err(e) => refused_or_failure(nav, e),
    }
}

/// A role that may not see a page gets a page saying so (403); bad input its message.
pub(super) fn refused_or_failure(nav: Nav, e: ServiceError) -> Response {
    match e {
        ServiceError::Forbidden(message) => {
            render(StatusCode::FORBIDDEN, &RefusedPage { nav, message })
        }
        other => failure(other),
    }
}
