//! The Jamf Pro emulator: API-client OAuth (`/api/oauth/token`), computer inventory in the v1
//! and v3 shapes (`/api/v{1,3}/computers-inventory` with `section`, `page`, `page-size`,
//! `{"totalCount", "results"}`), one computer by id (`/api/v3/computers-inventory-detail/{id}`),
//! seeded with the personas' Macs.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use serde_json::{json, Value};

use super::entra::{random_text, EntraState};
use super::faults::Endpoint;
use store::Computer;

/// The emulated Jamf Pro API client.
pub const JAMF_CLIENT_ID: &str = "portcullis-jamf-client";
pub const JAMF_CLIENT_SECRET: &str = "portcullis-jamf-secret";

/// Jamf's inventory and issued tokens.
#[derive(Default)]
pub struct JamfData {
    pub computers: Vec<Computer>,
    tokens: HashSet<String>,
}

impl JamfData {
    pub fn seeded() -> Self {
        let now = base::time::unix_now_i64();
        Self {
            computers: super::fixtures::persona_rows(now).jamf,
            tokens: HashSet::new(),
        }
    }
}

fn rfc3339(t: Option<i64>) -> Value {
    match t.and_then(base::time::rfc3339) {
        Some(s) => json!(s),
        None => Value::Null,
    }
}

/// A computer as `computers-inventory` (v1 and v3) returns it.
pub fn computer_json(c: &Computer) -> Value {
    let accounts: Vec<Value> = c
        .accounts
        .iter()
        .map(|a| {
            json!({
                "username": a.username, "fullName": a.username, "admin": false,
                "userAccountType": a.account_type.as_str(),
                "computerAzureActiveDirectoryId": a.entra_device_id,
                "userAzureActiveDirectoryId": a.entra_user_id,
                "azureActiveDirectoryId": a.registration.as_str(),
            })
        })
        .collect();
    // v1 and v3 name the last check-in alike (Jamf's schema and the jamf-pro-sdk models).
    let general = json!({
        "name": c.name,
        "reportDate": rfc3339(c.last_inventory),
        "lastContactTime": rfc3339(c.last_contact),
        "remoteManagement": { "managed": c.managed, "managementUsername": "jamfadmin" },
        "platform": "Mac",
    });
    json!({
        "id": c.jamf_id,
        "udid": c.udid,
        "general": general,
        "hardware": { "serialNumber": c.serial, "model": c.model, "make": "Apple" },
        "operatingSystem": { "name": "macOS", "version": c.os_version, "build": c.os_build, "fileVault2Status": c.filevault },
        "localUserAccounts": accounts,
        "diskEncryption": { "fileVault2Enabled": c.filevault.as_deref() == Some("ALL_ENCRYPTED") },
    })
}

#[derive(serde::Deserialize)]
pub struct TokenForm {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// POST /api/oauth/token
pub async fn token(State(s): State<Arc<EntraState>>, Form(f): Form<TokenForm>) -> Response {
    if let Some(r) = s.faults.take(Endpoint::Jamf).await {
        return r;
    }
    let ok = f.grant_type.as_deref() == Some("client_credentials")
        && f.client_id.as_deref() == Some(JAMF_CLIENT_ID)
        && f.client_secret.as_deref() == Some(JAMF_CLIENT_SECRET);
    if !ok {
        return (StatusCode::UNAUTHORIZED, Json(json!({ "error": "invalid_client" }))).into_response();
    }
    let t = random_text(24);
    s.jamf
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .tokens
        .insert(t.clone());
    Json(json!({ "access_token": t, "token_type": "Bearer", "expires_in": 1199, "scope": "api-role:1" }))
        .into_response()
}

fn authorized(s: &EntraState, headers: &HeaderMap) -> bool {
    let t = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    t.is_some_and(|t| s.jamf.lock().unwrap_or_else(|e| e.into_inner()).tokens.contains(t))
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({ "httpStatus": 401, "errors": [{ "code": "INVALID_TOKEN", "description": "Unauthorized" }] })),
    )
        .into_response()
}

/// GET /api/v{1,3}/computers-inventory?page=&page-size=&section=
pub async fn inventory(
    State(s): State<Arc<EntraState>>,
    Path(version): Path<String>,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    // v1 and v3 serve the same record shape for the fields emulated here.
    if !matches!(version.as_str(), "v1" | "v3") {
        return StatusCode::NOT_FOUND.into_response();
    }
    if !authorized(&s, &headers) {
        return unauthorized();
    }
    if let Some(r) = s.faults.take(Endpoint::Jamf).await {
        return r;
    }
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let page: usize = get("page").and_then(|p| p.parse().ok()).unwrap_or(0);
    let size: usize = get("page-size")
        .and_then(|p| p.parse().ok())
        .unwrap_or(100)
        .clamp(1, 2000);
    let data = s.jamf.lock().unwrap_or_else(|e| e.into_inner());
    let results: Vec<Value> = data
        .computers
        .iter()
        .skip(page * size)
        .take(size)
        .map(computer_json)
        .collect();
    Json(json!({ "totalCount": data.computers.len(), "results": results })).into_response()
}

/// GET /api/v3/computers-inventory-detail/{id}
pub async fn detail(State(s): State<Arc<EntraState>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    if !authorized(&s, &headers) {
        return unauthorized();
    }
    if let Some(r) = s.faults.take(Endpoint::Jamf).await {
        return r;
    }
    let data = s.jamf.lock().unwrap_or_else(|e| e.into_inner());
    match data.computers.iter().find(|c| c.jamf_id == id) {
        Some(c) => Json(computer_json(c)).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({ "httpStatus": 404, "errors": [{ "code": "NOT_FOUND" }] })),
        )
            .into_response(),
    }
}
