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

/// The sections a `computers-inventory` request may ask for, with the key each fills; Jamf
/// sends every key, `null` for the sections not asked for.
const SECTIONS: [(&str, &str); 9] = [
    ("GENERAL", "general"),
    ("HARDWARE", "hardware"),
    ("OPERATING_SYSTEM", "operatingSystem"),
    ("LOCAL_USER_ACCOUNTS", "localUserAccounts"),
    ("DISK_ENCRYPTION", "diskEncryption"),
    ("USER_AND_LOCATION", "userAndLocation"),
    ("SECURITY", "security"),
    ("APPLICATIONS", "applications"),
    ("EXTENSION_ATTRIBUTES", "extensionAttributes"),
];

/// FileVault as Jamf's `diskEncryption` section names it (from the boot partition's state).
fn disk_encryption(c: &Computer) -> Value {
    let (state, percent) = match c.filevault.as_deref() {
        Some("ALL_ENCRYPTED" | "BOOT_ENCRYPTED") => ("ENCRYPTED", 100),
        Some("SOME_ENCRYPTED") => ("ENCRYPTING", 50),
        Some(_) | None => ("UNENCRYPTED", 0),
    };
    let encrypted = percent == 100;
    let users: Vec<&str> = if encrypted {
        c.accounts.iter().map(|a| a.username.as_str()).collect()
    } else {
        Vec::new()
    };
    json!({
        "bootPartitionEncryptionDetails": {
            "partitionName": "Macintosh HD (Boot Partition)",
            "partitionFileVault2State": state,
            "partitionFileVault2Percent": percent,
        },
        "individualRecoveryKeyValidityStatus": if encrypted { "VALID" } else { "NOT_APPLICABLE" },
        "institutionalRecoveryKeyPresent": false,
        "diskEncryptionConfigurationName": if encrypted { "FileVault (Jamf Pro)" } else { "" },
        "fileVault2EnabledUserNames": users,
        "fileVault2EligibilityMessage": "Eligible",
    })
}

/// A computer as `computers-inventory` (v1 and v3) returns it, with every section.
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
        "diskEncryption": disk_encryption(c),
        "userAndLocation": { "username": c.accounts.first().map(|a| a.username.as_str()) },
        "security": null,
        "applications": [],
        "extensionAttributes": [],
    })
}

/// Only the asked-for `sections` of [`computer_json`] (the others `null`).
fn with_sections(mut v: Value, sections: &[&str]) -> Value {
    if let Some(obj) = v.as_object_mut() {
        for (name, key) in SECTIONS {
            if !sections.contains(&name) {
                obj.insert(key.into(), Value::Null);
            }
        }
    }
    v
}

fn jamf_error(status: StatusCode, code: &str, description: String, field: Option<&str>) -> Response {
    (
        status,
        Json(json!({ "httpStatus": status.as_u16(), "errors": [{ "code": code, "description": description, "id": "0", "field": field }] })),
    )
        .into_response()
}

/// One RSQL comparison of `filter` (`field==value`, `field!=value`, `*` as a wildcard in
/// values), joined by `;` (and) and `,` (or, binding looser) — the subset Jamf's examples use.
fn rsql_matches(filter: &str, c: &Value) -> Result<bool, String> {
    let field = |path: &str| -> Result<Option<String>, String> {
        let v = match path {
            "id" | "udid" => c.get(path),
            "general.name"
            | "general.platform"
            | "hardware.serialNumber"
            | "hardware.model"
            | "operatingSystem.version" => {
                let (section, key) = path.split_once('.').unwrap_or((path, ""));
                c.get(section).and_then(|s| s.get(key))
            }
            other => return Err(format!("{other} is not a filterable field")),
        };
        Ok(v.and_then(Value::as_str).map(str::to_string))
    };
    let glob = |pattern: &str, text: &str| {
        let parts: Vec<&str> = pattern.split('*').collect();
        match parts.as_slice() {
            [only] => only.eq_ignore_ascii_case(text),
            [first, middle @ .., last] => {
                let t = text.to_ascii_lowercase();
                let mut rest = t.as_str();
                let Some(after) = rest.strip_prefix(&first.to_ascii_lowercase()) else {
                    return false;
                };
                rest = after;
                for m in middle {
                    match rest.find(&m.to_ascii_lowercase()) {
                        Some(i) => rest = &rest[i + m.len()..],
                        None => return false,
                    }
                }
                rest.ends_with(&last.to_ascii_lowercase())
            }
            [] => false,
        }
    };
    for alternative in filter.split(',') {
        let mut all = true;
        for term in alternative.split(';') {
            let (path, negate, value) = match (term.split_once("!="), term.split_once("==")) {
                (Some((p, v)), _) => (p, true, v),
                (None, Some((p, v))) => (p, false, v),
                (None, None) => return Err(format!("{term:?} is not field==value or field!=value")),
            };
            let value = value.trim_matches('"');
            let hit = field(path.trim())?.is_some_and(|text| glob(value, &text));
            all &= hit != negate;
        }
        if all {
            return Ok(true);
        }
    }
    Ok(false)
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

/// GET /api/v{1,3}/computers-inventory?page=&page-size=&section=&sort=&filter= — only the
/// asked-for sections (GENERAL when none), sorted by `id` or `general.name` (`:asc`/`:desc`,
/// default `id:asc`), filtered by RSQL ([`rsql_matches`]); anything else is Jamf's 400.
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
    // Repeated (`section=A&section=B`) or comma-separated (`section=A,B`, as jamf-pro-sdk sends).
    let mut sections: Vec<&str> = q
        .iter()
        .filter(|(n, _)| n == "section")
        .flat_map(|(_, v)| v.split(','))
        .collect();
    if sections.is_empty() {
        sections.push("GENERAL");
    }
    if let Some(bad) = sections.iter().find(|s| !SECTIONS.iter().any(|(name, _)| name == *s)) {
        return jamf_error(
            StatusCode::BAD_REQUEST,
            "INVALID_FIELD",
            format!("Unknown section {bad}"),
            Some("section"),
        );
    }
    let sort = get("sort").unwrap_or("id:asc");
    let (field, order) = sort.split_once(':').unwrap_or((sort, "asc"));
    if !matches!((field, order), ("id" | "general.name", "asc" | "desc")) {
        return jamf_error(
            StatusCode::BAD_REQUEST,
            "INVALID_SORT",
            format!("Cannot sort by {sort}"),
            Some("sort"),
        );
    }
    let data = s.jamf.lock().unwrap_or_else(|e| e.into_inner());
    // Filtered and sorted on the records; only the page is rendered (directories run to 100,000).
    let mut all: Vec<&Computer> = Vec::with_capacity(data.computers.len());
    for c in &data.computers {
        match get("filter").map(|f| rsql_matches(f, &computer_json(c))) {
            Some(Ok(true)) | None => all.push(c),
            Some(Ok(false)) => {}
            Some(Err(e)) => return jamf_error(StatusCode::BAD_REQUEST, "INVALID_RSQL_FILTER", e, Some("filter")),
        }
    }
    match field {
        "id" => all.sort_by_key(|c| (c.jamf_id.parse::<u64>().unwrap_or(u64::MAX), c.jamf_id.clone())),
        _ => all.sort_by_key(|c| c.name.as_deref().map(str::to_ascii_lowercase)),
    }
    if order == "desc" {
        all.reverse();
    }
    let total = all.len();
    let results: Vec<Value> = all
        .into_iter()
        .skip(page * size)
        .take(size)
        .map(|c| with_sections(computer_json(c), &sections))
        .collect();
    Json(json!({ "totalCount": total, "results": results })).into_response()
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
