//! The OpenAPI 3 document of the admin API, generated from the handlers' `#[utoipa::path]`
//! annotations in [`super::api`] and served at `/api/v1/openapi.json` (unauthenticated: it
//! holds no data, and a UI or client generator needs it before it has a token).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::api;

#[derive(OpenApi)]
#[openapi(
    info(title = "Portcullis admin API", description = "Conditional Access settings, Run Test, Send Update, inventory state and history, posture, decision explanations (What If), sync and audit. Errors are application/problem+json."),
    paths(
        api::get_settings,
        api::put_settings,
        api::run_test,
        api::consent_url,
        api::send_update,
        api::job,
        api::sync_status,
        api::sync_now,
        api::audit,
        api::computers,
        api::computer,
        api::history,
        api::posture,
        api::explain,
    ),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct AdminApi;

/// Every operation takes `Authorization: Bearer` (an admin or read-only token, or an Entra
/// access token with a Portcullis app role).
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document as JSON, built once.
pub fn document() -> &'static str {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DOC.get_or_init(|| {
        AdminApi::openapi()
            .to_json()
            .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    })
}
