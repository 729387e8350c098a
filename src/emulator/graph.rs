//! The Microsoft Graph emulator. Today: `POST /v1.0/users/{id}/getMemberObjects` for group
//! overage; devices, managed devices and `$batch` come with the sync loop.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::entra::EntraState;
use super::faults::Endpoint;
use super::personas;

fn graph_error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({ "error": { "code": code, "message": message, "innerError": { "request-id": super::entra::random_text(12) } } }))).into_response()
}

/// Only app tokens issued by the emulator's token endpoint are accepted.
fn authorized(s: &EntraState, headers: &HeaderMap) -> Result<(), Response> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match token {
        Some(t) if s.app_tokens.lock().unwrap_or_else(|e| e.into_inner()).contains(t) => Ok(()),
        Some(_) => Err(graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Access token validation failure.",
        )),
        None => Err(graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Access token is empty.",
        )),
    }
}

/// POST /v1.0/users/{id}/getMemberObjects
pub async fn get_member_objects(
    State(s): State<Arc<EntraState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorized(&s, &headers) {
        return r;
    }
    if let Some(r) = s.faults.take(Endpoint::Graph).await {
        return r;
    }
    let id = id.to_ascii_lowercase();
    match personas::all().into_iter().find(|p| p.object_id == id || p.upn() == id) {
        Some(p) => Json(json!({ "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(Edm.String)", "value": p.groups })).into_response(),
        None => graph_error(StatusCode::NOT_FOUND, "Request_ResourceNotFound", &format!("Resource '{id}' does not exist or one of its queried reference-property objects are not present.")),
    }
}
