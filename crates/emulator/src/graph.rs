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

/// `$select`: only the listed properties (and `id` and `@`-annotations, which Graph always
/// sends) of `v`.
fn select(mut v: serde_json::Value, sel: Option<&str>) -> serde_json::Value {
    if let (Some(sel), Some(obj)) = (sel, v.as_object_mut()) {
        let wanted: Vec<&str> = sel.split(',').map(str::trim).collect();
        obj.retain(|k, _| k == "id" || k.starts_with('@') || wanted.contains(&k.as_str()));
    }
    v
}

/// `$filter`: the subset of OData the gateway's peers use — `prop eq 'text'`, `prop eq true`,
/// `prop eq null`, joined by `and` — on the properties `allowed` names; anything else is Graph's
/// 400, never ignored (a client would believe it had filtered).
struct Filter(Vec<(String, serde_json::Value)>);

impl Filter {
    fn parse(expr: Option<&str>, allowed: &[&str]) -> Result<Self, Response> {
        let unsupported = |why: String| graph_error(StatusCode::BAD_REQUEST, "Request_UnsupportedQuery", &why);
        let Some(expr) = expr else { return Ok(Self(Vec::new())) };
        let mut terms = Vec::new();
        for term in expr.split(" and ") {
            let mut parts = term.trim().splitn(3, ' ');
            let (Some(prop), Some(op), Some(value)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(unsupported(format!(
                    "Unsupported or invalid query filter clause: '{term}'."
                )));
            };
            if !op.eq_ignore_ascii_case("eq") {
                return Err(unsupported(format!("Unsupported filter operator '{op}'.")));
            }
            let Some(prop) = allowed.iter().find(|a| a.eq_ignore_ascii_case(prop)) else {
                return Err(unsupported(format!("Unsupported property '{prop}' in a filter.")));
            };
            let value = match value.trim() {
                "true" => json!(true),
                "false" => json!(false),
                "null" => serde_json::Value::Null,
                v if v.len() >= 2 && v.starts_with('\'') && v.ends_with('\'') => {
                    json!(v[1..v.len() - 1].replace("''", "'"))
                }
                v => return Err(unsupported(format!("Invalid filter value '{v}'."))),
            };
            terms.push(((*prop).to_string(), value));
        }
        Ok(Self(terms))
    }

    /// Strings compare without case, as the directory does.
    fn matches(&self, v: &serde_json::Value) -> bool {
        self.0.iter().all(|(prop, want)| match (&v[prop.as_str()], want) {
            (serde_json::Value::String(a), serde_json::Value::String(b)) => a.eq_ignore_ascii_case(b),
            (a, b) => a == b,
        })
    }
}

/// A paging link: `base` with the query's `$top`, `$select` and `$filter` carried on and a
/// `$skiptoken`.
fn next_link(base: &str, q: &std::collections::HashMap<String, String>, skiptoken: &str) -> String {
    let mut link = format!("{base}?$skiptoken={skiptoken}");
    for key in ["$top", "$select", "$filter"] {
        if let Some(v) = q.get(key) {
            let v: String = url::form_urlencoded::byte_serialize(v.as_bytes()).collect();
            link.push_str(&format!("&{key}={v}"));
        }
    }
    link
}

/// One page of a collection: `$filter` on the properties `filterable` names, `$skiptoken`
/// (an offset), `$top`, `$select`, and a next link that carries them on.
fn list_page(
    q: &std::collections::HashMap<String, String>,
    items: impl Iterator<Item = serde_json::Value>,
    filterable: &[&str],
    base: &str,
    context: &str,
) -> Response {
    let filter = match Filter::parse(q.get("$filter").map(String::as_str), filterable) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let offset = match q.get("$skiptoken").map(|t| decode(t)) {
        None => 0,
        Some(Some(v)) if v.len() == 1 => v[0] as usize,
        Some(_) => return graph_error(StatusCode::BAD_REQUEST, "BadRequest", "Invalid $skiptoken."),
    };
    let top = page_size(q.get("$top").map(String::as_str));
    let sel = q.get("$select").map(String::as_str);
    let mut rest = items.filter(|v| filter.matches(v)).skip(offset);
    let page: Vec<_> = rest.by_ref().take(top).map(|v| select(v, sel)).collect();
    let mut body = json!({ "@odata.context": context, "value": page });
    if rest.next().is_some() {
        body["@odata.nextLink"] = json!(next_link(base, q, &encode(&[(offset + top) as u64])));
    }
    Json(body).into_response()
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

/// Page size of the emulated directory collections (Graph: default 100, `$top` up to 999).
fn page_size(top: Option<&str>) -> usize {
    top.and_then(|t| t.parse::<usize>().ok()).unwrap_or(100).clamp(1, 999)
}

fn encode(parts: &[u64]) -> String {
    use base64::Engine;
    let text = parts.iter().map(u64::to_string).collect::<Vec<_>>().join(".");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

fn decode(token: &str) -> Option<Vec<u64>> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).ok()?;
    String::from_utf8(raw)
        .ok()?
        .split('.')
        .map(|p| p.parse().ok())
        .collect()
}

/// GET /v1.0/devices/delta — `$select` (first call), `$skiptoken` (next pages of a round),
/// `$deltatoken` (a later round), `$top` (page size).
pub async fn devices_delta(
    State(s): State<Arc<EntraState>>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    if let Err(r) = authorized(&s, &headers) {
        return r;
    }
    if let Some(r) = s.faults.take(Endpoint::Graph).await {
        return r;
    }
    let top = page_size(q.get("$top").map(String::as_str));
    let dir = s.directory.lock().unwrap_or_else(|e| e.into_inner());
    let base = format!("{}/v1.0/devices/delta", s.base_url);
    let gone = || {
        let mut r = graph_error(
            StatusCode::GONE,
            "resyncRequired",
            "The delta token is no longer valid; start a full synchronization.",
        );
        if let Ok(v) = format!("{base}?$deltatoken=").parse() {
            r.headers_mut().insert("location", v);
        }
        r
    };
    // (since, offset, snapshot) of the round this page belongs to.
    let (since, offset, snapshot) = match (q.get("$skiptoken"), q.get("$deltatoken")) {
        (Some(t), _) => match decode(t).as_deref() {
            Some(&[generation, since, offset, snapshot]) if generation == dir.generation => {
                (since, offset as usize, snapshot)
            }
            Some(_) => return gone(),
            None => return graph_error(StatusCode::BAD_REQUEST, "BadRequest", "Invalid $skiptoken."),
        },
        (None, Some(t)) if t.is_empty() => (0, 0, dir.version),
        (None, Some(t)) => match decode(t).as_deref() {
            Some(&[generation, version]) if generation == dir.generation => (version, 0, dir.version),
            Some(_) => return gone(),
            None => return graph_error(StatusCode::BAD_REQUEST, "BadRequest", "Invalid $deltatoken."),
        },
        (None, None) => (0, 0, dir.version),
    };
    let partial = s.partial_delta.load(std::sync::atomic::Ordering::Relaxed);
    let (page, more) = dir.changes(since, offset, top, partial);
    let n = page.len();
    let sel = q.get("$select").map(String::as_str);
    let page: Vec<_> = page.into_iter().map(|d| select(d, sel)).collect();
    let mut body = json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#devices",
        "value": page,
    });
    // The links carry the page size and the selection on (Graph keeps both in its tokens).
    let mut top_q = if q.contains_key("$top") {
        format!("&$top={top}")
    } else {
        String::new()
    };
    if let Some(sel) = sel {
        top_q.push_str(&format!("&$select={sel}"));
    }
    if more {
        let t = encode(&[dir.generation, since, (offset + n) as u64, snapshot]);
        body["@odata.nextLink"] = json!(format!("{base}?$skiptoken={t}{top_q}"));
    } else {
        let t = encode(&[dir.generation, snapshot.max(since)]);
        body["@odata.deltaLink"] = json!(format!("{base}?$deltatoken={t}{top_q}"));
    }
    Json(body).into_response()
}

/// GET /v1.0/devices — live devices: `$top`, `$skiptoken`, `$select`, `$filter`.
pub async fn devices_list(
    State(s): State<Arc<EntraState>>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    if let Err(r) = authorized(&s, &headers) {
        return r;
    }
    if let Some(r) = s.faults.take(Endpoint::Graph).await {
        return r;
    }
    let dir = s.directory.lock().unwrap_or_else(|e| e.into_inner());
    let live = dir
        .devices
        .values()
        .filter(|d| d.removed.is_none())
        .map(super::directory::Device::to_json);
    list_page(
        &q,
        live,
        &[
            "id",
            "deviceId",
            "displayName",
            "operatingSystem",
            "accountEnabled",
            "isCompliant",
            "isManaged",
            "trustType",
        ],
        &format!("{}/v1.0/devices", s.base_url),
        "https://graph.microsoft.com/v1.0/$metadata#devices",
    )
}

/// GET /v1.0/devices/{id} — one device by object id (`$select`), as the sync re-reads an
/// object a delta page sent only partly.
pub async fn device_by_id(
    State(s): State<Arc<EntraState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    one_device(&s, &headers, &q, |d| d.object_id == id, &id).await
}

/// GET /v1.0/devices(deviceId='{id}') — one device by its device id (the alternate key the
/// share step writes through); any other `/v1.0/{segment}` is Graph's unknown-segment error.
pub async fn device_by_key(
    State(s): State<Arc<EntraState>>,
    headers: HeaderMap,
    Path(segment): Path<String>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    let Some(key) = segment
        .strip_prefix("devices(deviceId='")
        .and_then(|rest| rest.strip_suffix("')"))
    else {
        let message = format!("Resource not found for the segment '{segment}'.");
        return graph_error(StatusCode::BAD_REQUEST, "BadRequest", &message);
    };
    let key = key.to_ascii_lowercase();
    one_device(&s, &headers, &q, |d| d.device_id == key, &key).await
}

async fn one_device(
    s: &EntraState,
    headers: &HeaderMap,
    q: &std::collections::HashMap<String, String>,
    matches: impl Fn(&super::directory::Device) -> bool,
    name: &str,
) -> Response {
    if let Err(r) = authorized(s, headers) {
        return r;
    }
    if let Some(r) = s.faults.take(Endpoint::Graph).await {
        return r;
    }
    let found = {
        let dir = s.directory.lock().unwrap_or_else(|e| e.into_inner());
        dir.devices
            .values()
            .find(|d| d.removed.is_none() && matches(d))
            .map(super::directory::Device::to_json)
    };
    match found {
        Some(mut d) => {
            d = select(d, q.get("$select").map(String::as_str));
            if let Some(o) = d.as_object_mut() {
                o.insert(
                    "@odata.context".into(),
                    json!("https://graph.microsoft.com/v1.0/$metadata#devices/$entity"),
                );
            }
            Json(d).into_response()
        }
        None => graph_error(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            &format!(
                "Resource '{name}' does not exist or one of its queried reference-property objects are not present."
            ),
        ),
    }
}

/// GET /v1.0/deviceManagement/managedDevices — `$top`, `$skiptoken`, `$select`, `$filter`.
pub async fn managed_devices(
    State(s): State<Arc<EntraState>>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    if let Err(r) = authorized(&s, &headers) {
        return r;
    }
    if let Some(r) = s.faults.take(Endpoint::Intune).await {
        return r;
    }
    let dir = s.directory.lock().unwrap_or_else(|e| e.into_inner());
    list_page(
        &q,
        dir.managed.iter().map(super::directory::ManagedDevice::to_json),
        &[
            "id",
            "azureADDeviceId",
            "operatingSystem",
            "serialNumber",
            "userPrincipalName",
            "complianceState",
            "managementAgent",
        ],
        &format!("{}/v1.0/deviceManagement/managedDevices", s.base_url),
        "https://graph.microsoft.com/v1.0/$metadata#deviceManagement/managedDevices",
    )
}

#[derive(serde::Deserialize)]
pub struct ComplianceBody {
    #[serde(rename = "isCompliant")]
    is_compliant: Option<bool>,
    #[serde(rename = "accountEnabled")]
    account_enabled: Option<bool>,
}

/// POST /_emulator/devices/{deviceId}/compliance {"isCompliant": false}
pub async fn set_compliance(
    State(s): State<Arc<EntraState>>,
    Path(device_id): Path<String>,
    Json(b): Json<ComplianceBody>,
) -> Response {
    let found = s
        .directory
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .update_by_device_id(&device_id, |d| {
            if let Some(c) = b.is_compliant {
                d.is_compliant = Some(c);
            }
            if let Some(e) = b.account_enabled {
                d.account_enabled = e;
            }
        });
    if found {
        StatusCode::NO_CONTENT.into_response()
    } else {
        graph_error(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            &format!("no device {device_id}"),
        )
    }
}

#[derive(serde::Deserialize)]
pub struct RemoveBody {
    reason: Option<String>,
}

/// POST /_emulator/devices/{deviceId}/remove {"reason": "deleted" | "changed"}
pub async fn remove_device(
    State(s): State<Arc<EntraState>>,
    Path(device_id): Path<String>,
    Json(b): Json<RemoveBody>,
) -> Response {
    let mut dir = s.directory.lock().unwrap_or_else(|e| e.into_inner());
    let id = device_id.to_ascii_lowercase();
    let Some(object_id) = dir
        .devices
        .values()
        .find(|d| d.device_id == id)
        .map(|d| d.object_id.clone())
    else {
        return graph_error(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            &format!("no device {device_id}"),
        );
    };
    let reason = if b.reason.as_deref() == Some("changed") {
        "changed"
    } else {
        "deleted"
    };
    dir.remove(&object_id, reason);
    StatusCode::NO_CONTENT.into_response()
}

/// POST /_emulator/delta/expire — every outstanding delta or skip token answers 410.
pub async fn expire_delta(State(s): State<Arc<EntraState>>) -> StatusCode {
    s.directory.lock().unwrap_or_else(|e| e.into_inner()).generation += 1;
    StatusCode::NO_CONTENT
}

#[derive(serde::Deserialize)]
pub struct SeedBody {
    devices: usize,
}

/// POST /_emulator/directory/seed {"devices": N} — replaces the directory with the personas
/// plus N synthetic devices (deterministic).
pub async fn seed_directory(State(s): State<Arc<EntraState>>, Json(b): Json<SeedBody>) -> Response {
    if b.devices > 1_000_000 {
        return graph_error(StatusCode::BAD_REQUEST, "BadRequest", "at most 1,000,000 devices");
    }
    let dir = tokio::task::spawn_blocking(move || super::directory::Directory::seeded(b.devices)).await;
    match dir {
        Ok(d) => {
            *s.directory.lock().unwrap_or_else(|e| e.into_inner()) = d;
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => graph_error(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", &e.to_string()),
    }
}

/// POST /v1.0/$batch — up to 20 requests; supports `PATCH /devices(deviceId='…')` with
/// `{"extensionAttributes": {…}}`. Inner statuses are per request (the outer 200 means nothing
/// about them); the `batch_item` fault makes inner requests answer 429 with `Retry-After`.
pub async fn batch(
    State(s): State<Arc<EntraState>>,
    headers: HeaderMap,
    Json(body): Json<serde_json::Value>,
) -> Response {
    if let Err(r) = authorized(&s, &headers) {
        return r;
    }
    if let Some(r) = s.faults.take(Endpoint::Graph).await {
        return r;
    }
    let Some(requests) = body.get("requests").and_then(|r| r.as_array()) else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "The batch has no requests array.",
        );
    };
    if requests.len() > 20 {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "A batch holds at most 20 requests.",
        );
    }
    let mut responses = Vec::new();
    for r in requests {
        let id = r.get("id").and_then(|v| v.as_str()).unwrap_or("").to_string();
        if let Some(fault) = s.faults.take(Endpoint::BatchItem).await {
            let status = fault.status().as_u16();
            let retry = fault
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let mut hdrs = serde_json::Map::new();
            if let Some(r) = retry {
                hdrs.insert("Retry-After".into(), json!(r));
            }
            responses.push(json!({ "id": id, "status": status, "headers": hdrs, "body": { "error": { "code": "TooManyRequests", "message": "Throttled" } } }));
            continue;
        }
        let method = r.get("method").and_then(|v| v.as_str()).unwrap_or("");
        let url = r.get("url").and_then(|v| v.as_str()).unwrap_or("");
        // Items may name their URL relative to the version ("/devices…") or absolutely
        // ("https://graph.microsoft.com/v1.0/devices…"), as the SDKs' batch builders do.
        let url = url.split_once("/v1.0").map_or(url, |(_, rest)| rest);
        let device_id = url
            .strip_prefix("/devices(deviceId='")
            .and_then(|rest| rest.strip_suffix("')"))
            .map(str::to_string);
        let attrs = r
            .get("body")
            .and_then(|b| b.get("extensionAttributes"))
            .and_then(|a| a.as_object())
            .cloned();
        let (status, body) = match (method, device_id, attrs) {
            ("PATCH", Some(d), Some(attrs)) => {
                let found = s
                    .directory
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .update_by_device_id(&d, |dev| {
                        for (k, v) in &attrs {
                            match v.as_str() {
                                Some(text) => {
                                    dev.extension_attributes.insert(k.clone(), text.to_string());
                                }
                                None => {
                                    dev.extension_attributes.remove(k);
                                }
                            }
                        }
                    });
                if found {
                    (204, serde_json::Value::Null)
                } else {
                    (
                        404,
                        json!({ "error": { "code": "Request_ResourceNotFound", "message": format!("Resource '{d}' does not exist") } }),
                    )
                }
            }
            _ => (
                400,
                json!({ "error": { "code": "BadRequest", "message": "Only PATCH /devices(deviceId='…') with extensionAttributes is emulated." } }),
            ),
        };
        responses.push(json!({ "id": id, "status": status, "headers": {}, "body": body }));
    }
    Json(json!({ "responses": responses })).into_response()
}

/// GET /_emulator/devices/{deviceId} — the device as the emulator holds it (tests).
pub async fn device_state(State(s): State<Arc<EntraState>>, Path(device_id): Path<String>) -> Response {
    let dir = s.directory.lock().unwrap_or_else(|e| e.into_inner());
    let id = device_id.to_ascii_lowercase();
    match dir.devices.values().find(|d| d.device_id == id) {
        Some(d) => Json(d.to_json()).into_response(),
        None => graph_error(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            &format!("no device {device_id}"),
        ),
    }
}

/// GET /v1.0/deviceManagement/complianceManagementPartners — a Jamf Device Compliance partner.
pub async fn compliance_partners(State(s): State<Arc<EntraState>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&s, &headers) {
        return r;
    }
    if let Some(r) = s.faults.take(Endpoint::Intune).await {
        return r;
    }
    let heartbeat =
        humantime::format_rfc3339_seconds(std::time::SystemTime::now() - std::time::Duration::from_secs(300))
            .to_string();
    Json(json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#deviceManagement/complianceManagementPartners",
        "value": [{
            "id": "c0000000-0000-4000-8000-00000000000f",
            "displayName": "Jamf Device Compliance",
            "partnerState": "enabled",
            "lastHeartbeatDateTime": heartbeat,
            "macOsOnboarded": true,
            "iosOnboarded": false,
            "androidOnboarded": false,
        }],
    }))
    .into_response()
}

#[derive(serde::Deserialize)]
pub struct NewDevice {
    #[serde(rename = "deviceId")]
    device_id: String,
    #[serde(rename = "displayName")]
    display_name: Option<String>,
    #[serde(rename = "isCompliant")]
    is_compliant: Option<bool>,
    #[serde(rename = "accountEnabled")]
    account_enabled: Option<bool>,
    #[serde(rename = "operatingSystemVersion")]
    os_version: Option<String>,
}

/// POST /_emulator/devices {"deviceId": …, "displayName"?, "isCompliant"?, "accountEnabled"?}
/// — registers a new device (the next delta carries it).
pub async fn add_device(State(s): State<Arc<EntraState>>, Json(b): Json<NewDevice>) -> Response {
    if !base::is_guid(&b.device_id) {
        return graph_error(StatusCode::BAD_REQUEST, "BadRequest", "deviceId must be a GUID");
    }
    let id = b.device_id.to_ascii_lowercase();
    let mut dir = s.directory.lock().unwrap_or_else(|e| e.into_inner());
    if dir.devices.values().any(|d| d.device_id == id && d.removed.is_none()) {
        return graph_error(
            StatusCode::CONFLICT,
            "Request_MultipleObjectsWithSameKeyValue",
            "the device exists",
        );
    }
    dir.insert(super::directory::Device {
        object_id: format!("0a{}", &id[2..]),
        device_id: id,
        display_name: b.display_name.unwrap_or_else(|| "New Mac".into()),
        account_enabled: b.account_enabled.unwrap_or(true),
        is_compliant: b.is_compliant,
        is_managed: true,
        os_version: b.os_version.unwrap_or_else(|| "14.5".into()),
        extension_attributes: Default::default(),
        version: 0,
        removed: None,
    });
    StatusCode::CREATED.into_response()
}

#[cfg(test)]
mod filter_tests {
    use super::Filter;
    use serde_json::json;

    #[test]
    fn eq_terms_match_without_case_and_anything_else_is_refused() {
        let allowed = ["deviceId", "accountEnabled", "operatingSystem"];
        let f = Filter::parse(Some("deviceId eq 'D1' and accountEnabled eq true"), &allowed).unwrap();
        assert!(f.matches(&json!({ "deviceId": "d1", "accountEnabled": true })));
        assert!(!f.matches(&json!({ "deviceId": "d1", "accountEnabled": false })));
        assert!(!f.matches(&json!({ "deviceId": "d2", "accountEnabled": true })));
        let quoted = Filter::parse(Some("operatingSystem eq 'O''Brien'"), &allowed).unwrap();
        assert!(quoted.matches(&json!({ "operatingSystem": "o'brien" })));
        assert!(Filter::parse(None, &allowed).unwrap().matches(&json!({})));
        for bad in [
            "deviceId ne 'x'",
            "serialNumber eq 'x'",
            "deviceId eq x",
            "deviceId",
            "startswith(deviceId,'x')",
        ] {
            assert!(Filter::parse(Some(bad), &allowed).is_err(), "{bad}");
        }
    }
}
