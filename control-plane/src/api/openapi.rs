//! The OpenAPI document, generated from the handlers' annotations.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::handlers;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Agent Secret Store control plane",
        description = "Secrets for AI agents that never see raw credentials. Errors are `{\"error\": {\"code\", \"message\"}}` with stable codes."
    ),
    paths(
        handlers::create_sidecar,
        handlers::list_sidecars,
        handlers::revoke_sidecar,
        handlers::create_agent,
        handlers::list_agents,
        handlers::get_agent,
        handlers::rotate_agent_key,
        handlers::revoke_agent,
        handlers::create_operator,
        handlers::list_operators,
        handlers::revoke_operator,
        handlers::put_secret,
        handlers::list_secrets,
        handlers::get_secret,
        handlers::delete_secret,
        handlers::issue_token,
        handlers::get_token,
        handlers::revoke_token,
        handlers::export_audit,
        handlers::verify_audit,
        handlers::resolve_secrets,
        handlers::release_use,
        handlers::watch,
        handlers::sidecar_audit,
    ),
    modifiers(&BearerSchemes)
)]
pub struct ApiDoc;

struct BearerSchemes;

impl Modify for BearerSchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, description) in [
            ("operator", "Operator API token (`asso_…`)"),
            ("agent", "Agent key (`assa_…`)"),
            ("sidecar", "Sidecar key (`assc_…`)"),
        ] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(description))
                        .build(),
                ),
            );
        }
    }
}

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
