//! Read-only listings: agents with their tier and ceiling, and operators (admins only; anyone
//! else gets a 403 page).

use std::sync::Arc;

use agent_secret_core::api::{AgentInfo, OperatorInfo};
use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::pages::{failure, nav, render, Nav};
use super::Visitor;
use crate::service::{agents, operators, App, ServiceError};

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
