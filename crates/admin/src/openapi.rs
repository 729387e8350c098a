//! The OpenAPI 3 document of the admin API, generated from the handlers' `#[utoipa::path]`
//! annotations in [`super::api`] and the body types of [`super::body`], and served at
//! `/api/v1/openapi.json` (unauthenticated: it holds no data, and a UI or client generator needs
//! it before it has a token). [`Errors`] adds what every operation can answer: every error is
//! problem+json.

use utoipa::openapi::content::Content;
use utoipa::openapi::header::Header;
use utoipa::openapi::response::Response;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{Modify, OpenApi};

use super::{api, body};

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
        api::decisions,
        api::reload,
    ),
    components(schemas(body::Problem, body::SyncSource, store::RegistrationState)),
    modifiers(&BearerAuth, &Errors),
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

/// The errors every operation may answer, and their one body. Authentication comes first, so
/// any operation may answer 401 (no or an unknown credential) or 403 (a read-only or role-less
/// credential, or an Entra admin from another tenant); any may meet the store failing (503 with
/// Retry-After while it is away, 500 when it refused). One that takes parameters or a body may
/// find them bad (400), and a body may be too large (413).
struct Errors;

impl Modify for Errors {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let problem = || Content::new(Some(Ref::from_schema_name("Problem")));
        let retry_after = || {
            Header::builder()
                .schema(utoipa::openapi::ObjectBuilder::new().schema_type(utoipa::openapi::Type::Integer))
                .description(Some("Seconds to wait before trying again"))
                .build()
        };
        for item in doc.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in operations.into_iter().flatten() {
                let takes_input = op.parameters.as_ref().is_some_and(|p| !p.is_empty());
                let has_body = op.request_body.is_some();
                let mut common = vec![
                    ("401", "No credential, or one this gateway does not know"),
                    (
                        "403",
                        "The credential may not do this (read-only, no Portcullis role, or another tenant's)",
                    ),
                    ("500", "The store refused, or holds what this version cannot read"),
                    ("503", "The store is away or slow; try again (Retry-After)"),
                ];
                if takes_input || has_body {
                    common.push(("400", "A bad parameter or body; the detail names it"));
                }
                if has_body {
                    common.push(("413", "The body is too large"));
                }
                let responses = &mut op.responses.responses;
                for (status, description) in common {
                    responses
                        .entry(status.to_string())
                        .or_insert_with(|| RefOr::T(Response::new(description)));
                }
                for (status, response) in responses.iter_mut() {
                    let RefOr::T(response) = response else { continue };
                    if status.starts_with('4') || status.starts_with('5') {
                        response.content.clear();
                        response.content.insert("application/problem+json".into(), problem());
                        if status == "503" || status == "429" {
                            response.headers.insert("Retry-After".into(), retry_after());
                        }
                    }
                }
            }
        }
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
