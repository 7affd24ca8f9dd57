//! The OpenAPI document, generated from the handlers' annotations.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::handlers;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Agent Secret Store control plane",
        description = "Secrets for AI agents that never see raw credentials. Errors are `{\"error\": {\"code\", \"message\"}}` with stable codes."
    ),
    paths(
        handlers::sidecars::create_sidecar,
        handlers::sidecars::list_sidecars,
        handlers::sidecars::revoke_sidecar,
        handlers::agents::create_agent,
        handlers::agents::list_agents,
        handlers::agents::get_agent,
        handlers::agents::rotate_agent_key,
        handlers::agents::revoke_agent,
        handlers::agents::allow_scopes,
        handlers::agents::deny_scopes,
        handlers::agents::request_access,
        handlers::agents::set_trust_tier,
        handlers::approvals::list_approvals,
        handlers::approvals::get_approval,
        handlers::approvals::approve,
        handlers::approvals::deny,
        handlers::operators::create_operator,
        handlers::operators::list_operators,
        handlers::operators::revoke_operator,
        handlers::operators::set_password,
        handlers::operators::enroll_totp,
        handlers::operators::confirm_totp,
        handlers::operators::disable_operator,
        handlers::sessions::login,
        handlers::sessions::whoami,
        handlers::sessions::logout,
        handlers::secrets::put_secret,
        handlers::secrets::list_secrets,
        handlers::secrets::get_secret,
        handlers::secrets::delete_secret,
        handlers::tokens::issue_token,
        handlers::tokens::kubernetes_token,
        handlers::tokens::list_tokens,
        handlers::tokens::get_token,
        handlers::tokens::revoke_token,
        handlers::audit::export_audit,
        handlers::audit::verify_audit,
        handlers::audit::public_keys,
        handlers::sidecar::resolve_secrets,
        handlers::sidecar::release_use,
        handlers::sidecar::watch,
        handlers::sidecar::sidecar_audit,
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
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "__Host-ass_session",
                "Human operator session from `POST /v1/session/login`; unsafe requests also need \
                 its `X-CSRF-Token` and a same-origin `Origin`",
            ))),
        );
    }
}

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
