//! The admin API (`/api/v1/…`, JSON, problem+json errors) — first part: authentication (a
//! static token compared by SHA-256 in constant time, or an Entra bearer token with an admin or
//! reader app role), the Conditional Access settings (GET; PUT with `If-Match`, validation,
//! write-only secret, audit with the secret masked, Run Test on save), Run Test, sync status,
//! sync now, and the audit trail.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::Uri;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use identity::Validator;
use store::Store;
use sync::settings::{ConditionalAccess, ConnectionType, LandingChoice, Settings};
use sync::SyncControl;

/// Who may call the API.
pub struct ApiAuth {
    pub token_sha256: Option<[u8; 32]>,
    pub read_only_token_sha256: Option<[u8; 32]>,
    pub validator: Option<Arc<Validator>>,
    pub admin_role: String,
    pub reader_role: String,
}

impl ApiAuth {
    /// Authentication as `[admin]` configures it; Entra bearer tokens are honoured when the
    /// gateway has a validator.
    pub fn from_config(cfg: &config::AdminSettings, validator: Option<Arc<Validator>>) -> Self {
        Self {
            token_sha256: cfg.token_sha256,
            read_only_token_sha256: cfg.read_only_token_sha256,
            validator,
            admin_role: cfg.admin_role.clone(),
            reader_role: cfg.reader_role.clone(),
        }
    }
}

/// What the API works on.
#[derive(Clone)]
pub struct Api {
    pub auth: Arc<ApiAuth>,
    pub store: Arc<dyn Store>,
    pub settings: Option<Arc<Settings>>,
    pub sync: Option<Arc<dyn SyncControl>>,
    /// This node's name (`sync.node_name`): who runs the jobs it starts.
    pub node: String,
    /// The credential the configuration file provides (`client_secret`, `certificate`,
    /// `assertion_file`), used while the settings hold no secret of their own.
    pub file_credential: Option<&'static str>,
    /// "What If" against the live routes and access components.
    pub explainer: Option<Arc<dyn access::explain::Explain>>,
    /// How many Send Update jobs this node may start now ([`SendUpdateBudget`]).
    pub send_update_budget: Arc<SendUpdateBudget>,
}

/// The Send Update jobs one node may start: a burst of [`SendUpdateBudget::BURST`], then one
/// every [`SendUpdateBudget::EVERY`] (a token bucket). A sweep over every computer is heavy for
/// Jamf Pro and Graph; a script may send a few in a row, not hammer them. (A second request for
/// work already running never counts: it gets the running job.)
#[derive(Debug)]
pub struct SendUpdateBudget {
    /// Tokens left and when they were counted.
    state: std::sync::Mutex<(f64, std::time::Instant)>,
}

impl Default for SendUpdateBudget {
    fn default() -> Self {
        Self {
            state: std::sync::Mutex::new((f64::from(Self::BURST), std::time::Instant::now())),
        }
    }
}

impl SendUpdateBudget {
    pub const BURST: u32 = 6;
    pub const EVERY: std::time::Duration = std::time::Duration::from_secs(10);

    /// Takes one start, or says how long until one is free.
    fn take(&self) -> Result<(), std::time::Duration> {
        // A poisoned lock only means a panic elsewhere mid-update: the count is still a number.
        let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = std::time::Instant::now();
        let refill = now.duration_since(s.1).as_secs_f64() / Self::EVERY.as_secs_f64();
        let tokens = (s.0 + refill).min(f64::from(Self::BURST));
        *s = (tokens, now);
        if tokens >= 1.0 {
            s.0 -= 1.0;
            Ok(())
        } else {
            Err(Self::EVERY.mul_f64(1.0 - tokens))
        }
    }
}

/// A job as `GET /api/v1/jobs/{id}` shows it.
fn job_json(j: &store::Job) -> Value {
    json!({
        "id": j.id,
        "kind": j.kind,
        "status": j.status,
        "node": j.node,
        "started_at": j.started_at,
        "finished_at": j.finished_at,
        "computer": j.computer,
        // Written by this code as JSON; a row that is not reads as its text.
        "result": j.result.as_deref().map(|r| serde_json::from_str::<Value>(r).unwrap_or_else(|_| json!(r))),
    })
}

/// Stores a finished job's outcome, retrying while the store is away (the result must not be
/// lost: the job has run, and Microsoft has the inventory).
async fn finish_job(store: Arc<dyn Store>, job: store::Job) {
    let mut wait = std::time::Duration::from_millis(500);
    for attempt in 1.. {
        // Every store call is bounded (`store.query_timeout`), so this loop cannot hang.
        match store.put_job(&job).await {
            Ok(()) => return,
            Err(e) if e.is_transient() && attempt < 20 => {
                tracing::warn!(job = %job.id, error = %e, "cannot store the job's outcome yet; retrying")
            }
            Err(e) => {
                tracing::error!(job = %job.id, error = %e, status = job.status.as_str(), "the job's outcome is lost");
                return;
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(std::time::Duration::from_secs(30));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Admin,
    Reader,
}

/// An API error, written as problem+json.
pub(crate) fn problem(
    status: StatusCode,
    reason: &'static str,
    detail: impl Into<std::borrow::Cow<'static, str>>,
) -> Response {
    let p = base::problem::Problem {
        status: status.as_u16(),
        reason,
        title: status.canonical_reason().unwrap_or("Error"),
        detail: detail.into(),
    };
    let mut r = (status, [(header::CONTENT_TYPE, "application/problem+json")], p.json()).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        // The store or the sync is away for a moment: say when to try again.
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
    }
    r
}

/// A store failure as the API answers it: 503 with a retry hint while the database is away or
/// slow; 500 when it refused or returned what this version cannot read.
pub(crate) fn store_problem(e: &store::StoreError) -> Response {
    if e.is_transient() {
        problem(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", e.to_string())
    } else {
        tracing::error!(error = %e, "store failure in the admin API");
        problem(StatusCode::INTERNAL_SERVER_ERROR, "store_failed", e.to_string())
    }
}

struct Caller {
    role: Role,
    name: String,
}

/// The query string as `T`, read after the caller is authorized (so a request without a
/// credential gets 401 whatever its query), a bad one answered with problem+json.
fn query<T: serde::de::DeserializeOwned>(uri: &Uri) -> Result<T, Box<Response>> {
    Query::<T>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| Box::new(problem(StatusCode::BAD_REQUEST, "invalid_query", e.body_text())))
}

async fn authorize(api: &Api, headers: &HeaderMap, need: Role) -> Result<Caller, Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .ok_or_else(|| {
            problem(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "Send an admin token or an Entra token as a bearer token.",
            )
        })?;
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let matches = |h: &Option<[u8; 32]>| h.as_ref().is_some_and(|h| base::ct_eq(h, digest.as_ref()));
    let caller = if matches(&api.auth.token_sha256) {
        Caller {
            role: Role::Admin,
            name: "admin-token".into(),
        }
    } else if matches(&api.auth.read_only_token_sha256) {
        Caller {
            role: Role::Reader,
            name: "read-only-token".into(),
        }
    } else {
        let Some(v) = &api.auth.validator else {
            return Err(problem(
                StatusCode::UNAUTHORIZED,
                "token_invalid",
                "The token is not valid here.",
            ));
        };
        let p = v.validate(token).await.map_err(|_| {
            problem(
                StatusCode::UNAUTHORIZED,
                "token_invalid",
                "The token is not valid here.",
            )
        })?;
        // App roles are assigned in the gateway's own tenant; another allowed tenant's admin
        // could give themselves one in theirs.
        if v.tenants()
            .first()
            .is_none_or(|home| !home.eq_ignore_ascii_case(&p.tenant))
        {
            return Err(problem(
                StatusCode::FORBIDDEN,
                "role_missing",
                "Admin roles are honoured only from the gateway's own tenant.",
            ));
        }
        let has = |r: &str| p.roles.iter().any(|x| &**x == r);
        let role = if has(&api.auth.admin_role) {
            Role::Admin
        } else if has(&api.auth.reader_role) {
            Role::Reader
        } else {
            return Err(problem(
                StatusCode::FORBIDDEN,
                "role_missing",
                "Your account has no Portcullis admin or reader role.",
            ));
        };
        Caller {
            role,
            name: p.username.as_deref().unwrap_or(&p.object_id).to_string(),
        }
    };
    if need == Role::Admin && caller.role != Role::Admin {
        return Err(problem(
            StatusCode::FORBIDDEN,
            "read_only",
            "This token may read but not change anything.",
        ));
    }
    Ok(caller)
}

/// The settings as the API shows them: secrets only as "set, when".
fn view(doc: &ConditionalAccess, file_credential: Option<&str>) -> Value {
    json!({
        "enabled": doc.enabled,
        "connection_type": doc.connection,
        "national_cloud": doc.cloud,
        "tenant_id": doc.tenant_id,
        "application_id": doc.application_id,
        "client_secret": {
            "set": doc.client_secret_sealed.is_some(),
            "changed_at": doc.secret_changed_at,
            "file_credential": file_credential,
        },
        "landing": doc.landing,
    })
}

fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

/// GET /api/v1/conditional-access
#[utoipa::path(
    get, path = "/api/v1/conditional-access", tag = "conditional-access",
    responses((status = 200, description = "The settings (secrets only as set/changed-at), with an ETag"), (status = 401, description = "No or unknown credential (problem+json)"), (status = 404, description = "No [entra] section"))
)]
pub async fn get_settings(State(api): State<Api>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&api, &headers, Role::Reader).await {
        return r;
    }
    let Some(s) = &api.settings else {
        return problem(StatusCode::NOT_FOUND, "not_configured", "No [entra] section.");
    };
    (
        [(header::ETAG, etag(s.version()))],
        Json(view(&s.current(), api.file_credential)),
    )
        .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsBody {
    enabled: bool,
    connection_type: ConnectionType,
    national_cloud: String,
    tenant_id: String,
    application_id: String,
    /// Write-only: a new secret; absent keeps the current one.
    client_secret: Option<String>,
    landing: LandingChoice,
}

/// PUT /api/v1/conditional-access (If-Match required)
#[utoipa::path(
    put, path = "/api/v1/conditional-access", tag = "conditional-access",
    request_body(content_type = "application/json", description = "enabled, connection_type, national_cloud, tenant_id, application_id, client_secret (write-only, optional), landing"),
    params(("If-Match" = String, Header, description = "The ETag of the settings read")),
    responses((status = 200, description = "Saved and applied: version, settings, Run Test report"), (status = 400, description = "Invalid body or value; the detail names the field"), (status = 401, description = "No or unknown credential (problem+json)"), (status = 403, description = "A read-only credential for a change (problem+json)"), (status = 412, description = "Stale ETag"), (status = 428, description = "If-Match missing (send the ETag, or * for any version)"))
)]
pub async fn put_settings(State(api): State<Api>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let caller = match authorize(&api, &headers, Role::Admin).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Some(s) = &api.settings else {
        return problem(StatusCode::NOT_FOUND, "not_configured", "No [entra] section.");
    };
    // `If-Match: *` (RFC 9110 §13.1.1): any current version; only an absent or unusable
    // If-Match is refused.
    let if_match = headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    let expected = match if_match {
        Some("*") => Some(s.version()),
        Some(v) => v.trim_start_matches("W/").trim_matches('"').parse::<i64>().ok(),
        None => None,
    };
    let Some(expected) = expected else {
        return problem(
            StatusCode::PRECONDITION_REQUIRED,
            "if_match_required",
            "Send If-Match with the ETag you read.",
        );
    };
    let b: SettingsBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        // serde's message names the field; it never echoes a secret value.
        Err(e) => return problem(StatusCode::BAD_REQUEST, "invalid_settings", e.to_string()),
    };
    let mut errors = Vec::new();
    if let Err(e) = b.national_cloud.parse::<base::cloud::NationalCloud>() {
        errors.push(format!("national_cloud: {e}"));
    }
    if !base::is_guid(&b.tenant_id) {
        errors.push("tenant_id: must be the tenant's GUID".to_string());
    }
    if !base::is_guid(&b.application_id) {
        errors.push("application_id: must be the application (client) ID, a GUID".to_string());
    }
    if let LandingChoice::Custom { url } = &b.landing {
        // The file's rule (config::landing_url), so the API accepts what the file accepts.
        if let Err(e) = config::landing_url(url) {
            errors.push(format!("landing.url: {e}"));
        }
    }
    if b.client_secret.as_deref().is_some_and(str::is_empty) {
        errors.push("client_secret: must not be empty (omit it to keep the current secret)".to_string());
    }
    if !errors.is_empty() {
        return problem(StatusCode::BAD_REQUEST, "invalid_settings", errors.join("; "));
    }
    let current = s.current();
    let mut doc = ConditionalAccess {
        enabled: b.enabled,
        connection: b.connection_type,
        cloud: b.national_cloud.to_ascii_lowercase(),
        tenant_id: b.tenant_id.to_ascii_lowercase(),
        application_id: b.application_id.to_ascii_lowercase(),
        client_secret_sealed: current.client_secret_sealed.clone(),
        secret_changed_at: current.secret_changed_at,
        landing: b.landing,
    };
    if let Some(secret) = &b.client_secret {
        if s.set_client_secret(&mut doc, secret).is_err() {
            return problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "The secret could not be sealed.",
            );
        }
    }
    let saved = match &api.sync {
        Some(sync) => sync
            .save_settings(doc.clone(), expected)
            .await
            .map(|(v, r)| (v, Some(r))),
        None => s.put(&*api.store, doc.clone(), expected).await.map(|v| (v, None)),
    };
    let (version, report) = match saved {
        Ok(v) => v,
        Err(sync::settings::SettingsError::Conflict { current }) => {
            return problem(
                StatusCode::PRECONDITION_FAILED,
                "stale_write",
                format!("The settings changed meanwhile (now version {current}); read them again."),
            )
        }
        Err(sync::settings::SettingsError::Store(e)) => return store_problem(&e),
        Err(e @ (sync::settings::SettingsError::Corrupt(_) | sync::settings::SettingsError::Seal)) => {
            tracing::error!(error = %e, "cannot save the settings");
            return problem(StatusCode::INTERNAL_SERVER_ERROR, "settings_failed", e.to_string());
        }
    };
    let mut audit = view(&doc, api.file_credential);
    audit["client_secret"] = json!(if b.client_secret.is_some() {
        "***changed***"
    } else {
        "unchanged"
    });
    if let Err(e) = api
        .store
        .record_audit(&caller.name, "conditional_access.update", &audit.to_string())
        .await
    {
        tracing::error!(error = %e, "cannot record the audit entry");
    }
    tracing::info!(actor = %caller.name, version, "Conditional Access settings saved");
    (
        [(header::ETAG, etag(version))],
        Json(json!({ "version": version, "settings": view(&doc, api.file_credential), "test": report })),
    )
        .into_response()
}

/// POST /api/v1/conditional-access/test
#[utoipa::path(
    post, path = "/api/v1/conditional-access/test", tag = "conditional-access",
    responses((status = 200, description = "Run Test: ok and every step with its result"), (status = 401, description = "No or unknown credential (problem+json)"), (status = 403, description = "A read-only credential for a change (problem+json)"), (status = 409, description = "The sync is off on this node"))
)]
pub async fn run_test(State(api): State<Api>, headers: HeaderMap) -> Response {
    let caller = match authorize(&api, &headers, Role::Admin).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match &api.sync {
        Some(sync) => {
            let report = sync.test_connection().await;
            audit_action(&api, &caller.name, "run_test", json!({ "ok": report.ok })).await;
            Json(report).into_response()
        }
        None => problem(
            StatusCode::CONFLICT,
            "sync_off",
            "The sync is not configured on this node.",
        ),
    }
}

/// Records an admin action in the audit log; a failure to record is logged, not the action's.
async fn audit_action(api: &Api, who: &str, action: &str, detail: Value) {
    if let Err(e) = api.store.record_audit(who, action, &detail.to_string()).await {
        tracing::error!(error = %e, action, "cannot record the audit entry");
    }
}

/// GET /api/v1/sync/status
#[utoipa::path(
    get, path = "/api/v1/sync/status", tag = "sync",
    responses((status = 200, description = "Per source: last success, lag, last error, counts; the sync leader (node, term, seconds left of its lease; null when none) and this node's name"), (status = 503, description = "The store is unavailable (problem+json, Retry-After)"), (status = 401, description = "No or unknown credential (problem+json)"))
)]
pub async fn sync_status(State(api): State<Api>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&api, &headers, Role::Reader).await {
        return r;
    }
    let now = base::time::unix_now_i64();
    let mut out = serde_json::Map::new();
    for source in ["entra", "intune", "jamf", "share"] {
        let runs = match api.store.last_runs(source, 50).await {
            Ok(r) => r,
            Err(e) => return store_problem(&e),
        };
        let success = runs.iter().find(|r| r.ok);
        let failure = runs.iter().find(|r| !r.ok);
        out.insert(
            source.to_string(),
            json!({
                "last_success": success.map(|r| r.finished_at),
                "lag_seconds": success.map(|r| now - r.finished_at),
                "last_error": failure.map(|r| json!({ "at": r.finished_at, "error": r.error })),
                "last_counts": success.and_then(|r| serde_json::from_str::<Value>(&r.detail).ok()),
            }),
        );
    }
    // Who syncs: one node at a time, holding the lease (by the database's clock).
    let leader = match api.store.lease_holder("sync").await {
        Ok(l) => l.map(|(lease, left)| json!({ "node": lease.holder, "term": lease.term, "lease_left_seconds": left })),
        Err(e) => return store_problem(&e),
    };
    out.insert("leader".into(), leader.unwrap_or(Value::Null));
    out.insert("this_node".into(), json!(api.node));
    Json(Value::Object(out)).into_response()
}

/// POST /api/v1/sync/{source}/run
#[utoipa::path(
    post, path = "/api/v1/sync/{source}/run", tag = "sync",
    params(("source" = String, Path, description = "entra, intune or jamf")),
    responses((status = 202, description = "The loop was woken"), (status = 401, description = "No or unknown credential (problem+json)"), (status = 403, description = "A read-only credential for a change (problem+json)"), (status = 404, description = "Unknown source"), (status = 409, description = "The sync is off on this node"))
)]
pub async fn sync_now(State(api): State<Api>, headers: HeaderMap, Path(source): Path<String>) -> Response {
    let caller = match authorize(&api, &headers, Role::Admin).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if !matches!(source.as_str(), "entra" | "intune" | "jamf" | "all") {
        return problem(
            StatusCode::NOT_FOUND,
            "unknown_source",
            "Sources: entra, intune, jamf, all.",
        );
    }
    match &api.sync {
        Some(sync) => {
            sync.run_now();
            audit_action(&api, &caller.name, "sync_now", json!({ "source": source })).await;
            (StatusCode::ACCEPTED, Json(json!({ "triggered": source }))).into_response()
        }
        None => problem(
            StatusCode::CONFLICT,
            "sync_off",
            "The sync is not configured on this node.",
        ),
    }
}

#[derive(Deserialize)]
pub struct Page {
    before: Option<i64>,
    limit: Option<u32>,
}

/// GET /api/v1/audit?before=ID&limit=N
#[utoipa::path(
    get, path = "/api/v1/audit", tag = "audit",
    params(("before" = Option<i64>, Query, description = "Entries older than this id"), ("limit" = Option<u32>, Query, description = "Page size")),
    responses((status = 200, description = "Audit entries, newest first, and next_before"), (status = 401, description = "No or unknown credential (problem+json)"))
)]
pub async fn audit(State(api): State<Api>, headers: HeaderMap, uri: Uri) -> Response {
    if let Err(r) = authorize(&api, &headers, Role::Reader).await {
        return r;
    }
    let p: Page = match query(&uri) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let limit = p.limit.unwrap_or(50).clamp(1, 500);
    match api.store.audit_log(p.before, limit).await {
        Ok(entries) => {
            let next = (entries.len() as u32 == limit)
                .then(|| entries.last().map(|e| e.id))
                .flatten();
            Json(json!({ "items": entries, "next_before": next })).into_response()
        }
        Err(e) => store_problem(&e),
    }
}

/// The Conditional Access inventory state of one account: what Entra knows of the device it
/// registered, as the gateway would use it now.
async fn account_view(api: &Api, a: &store::LocalAccount) -> Value {
    let posture = match &a.entra_device_id {
        Some(d) => match api.store.device_evidence(d).await {
            Ok(e) => device::posture::posture_from(d, &e, base::time::unix_now_i64()).map(|p| {
                json!({
                    "state": p.state.as_str(),
                    "source": p.source.as_str(),
                    "as_of": p.as_of,
                    "age_seconds": (base::time::unix_now_i64() as u64).saturating_sub(p.as_of),
                })
            }),
            Err(_) => None,
        },
        None => None,
    };
    json!({
        "username": a.username,
        "account_type": a.account_type.as_str(),
        "entra_user_id": a.entra_user_id,
        "entra_device_id": a.entra_device_id,
        "registration_state": a.registration.as_str(),
        "compliance": posture,
    })
}

async fn computer_view(api: &Api, c: &store::Computer) -> Value {
    let mut accounts = Vec::with_capacity(c.accounts.len());
    for a in &c.accounts {
        accounts.push(account_view(api, a).await);
    }
    json!({
        "id": c.jamf_id, "name": c.name, "serial": c.serial, "udid": c.udid, "model": c.model,
        "os_version": c.os_version, "os_build": c.os_build, "managed": c.managed, "filevault": c.filevault,
        "last_inventory": c.last_inventory, "last_contact": c.last_contact, "seen_at": c.seen_at,
        "local_user_accounts": accounts,
    })
}

#[derive(Deserialize)]
pub struct ComputerQuery {
    after: Option<String>,
    limit: Option<u32>,
    /// Substring of the name, serial or a username (case-insensitive).
    filter: Option<String>,
    /// A registration state (ACTIVATED, DEACTIVATED, UNRESPONSIVE, UNKNOWN).
    state: Option<String>,
}

/// GET /api/v1/computers?after=&limit=&filter=&state=
#[utoipa::path(
    get, path = "/api/v1/computers", tag = "inventory",
    params(("after" = Option<String>, Query, description = "Keyset cursor (next_after)"), ("limit" = Option<u32>, Query, description = "Page size"), ("filter" = Option<String>, Query, description = "Substring of name, serial or username"), ("state" = Option<String>, Query, description = "ACTIVATED, DEACTIVATED, UNRESPONSIVE or UNKNOWN")),
    responses((status = 200, description = "Computers with each account's Conditional Access inventory state, and next_after"), (status = 400, description = "Bad filter or cursor"), (status = 401, description = "No or unknown credential (problem+json)"))
)]
pub async fn computers(State(api): State<Api>, headers: HeaderMap, uri: Uri) -> Response {
    if let Err(r) = authorize(&api, &headers, Role::Reader).await {
        return r;
    }
    let q: ComputerQuery = match query(&uri) {
        Ok(q) => q,
        Err(r) => return *r,
    };
    let limit = q.limit.unwrap_or(50).clamp(1, 500) as usize;
    let needle = q.filter.as_deref().map(str::to_ascii_lowercase);
    let state = q.state.as_deref().map(str::to_ascii_uppercase);
    let mut items = Vec::new();
    let mut after = q.after.clone();
    let mut next = None;
    // Pages through the store until `limit` matches (filters are applied here).
    'pages: loop {
        let batch = match api.store.computers(after.as_deref(), 500).await {
            Ok(b) => b,
            Err(e) => return store_problem(&e),
        };
        let Some(last) = batch.last().map(|c| c.jamf_id.clone()) else {
            break;
        };
        for c in &batch {
            let text_ok = needle.as_ref().is_none_or(|n| {
                let has = |v: &Option<String>| {
                    v.as_deref()
                        .is_some_and(|v| v.to_ascii_lowercase().contains(n.as_str()))
                };
                has(&c.name)
                    || has(&c.serial)
                    || c.accounts
                        .iter()
                        .any(|a| a.username.to_ascii_lowercase().contains(n.as_str()))
            });
            let state_ok = state
                .as_ref()
                .is_none_or(|s| c.accounts.iter().any(|a| a.registration.as_str() == s));
            if text_ok && state_ok {
                items.push(computer_view(&api, c).await);
                if items.len() == limit {
                    next = Some(c.jamf_id.clone());
                    break 'pages;
                }
            }
        }
        after = Some(last);
    }
    Json(json!({ "items": items, "next_after": next })).into_response()
}

/// GET /api/v1/computers/{id}
#[utoipa::path(
    get, path = "/api/v1/computers/{id}", tag = "inventory",
    params(("id" = String, Path, description = "Jamf computer id")),
    responses((status = 200, description = "One computer and its accounts' inventory state"), (status = 401, description = "No or unknown credential (problem+json)"), (status = 404, description = "No such computer"))
)]
pub async fn computer(State(api): State<Api>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(r) = authorize(&api, &headers, Role::Reader).await {
        return r;
    }
    match api.store.computer(&id).await {
        Ok(Some(c)) => Json(computer_view(&api, &c).await).into_response(),
        Ok(None) => problem(StatusCode::NOT_FOUND, "not_found", format!("No computer {id}.")),
        Err(e) => store_problem(&e),
    }
}

/// GET /api/v1/computers/{id}/history — inventory sent to Microsoft, newest first.
#[utoipa::path(
    get, path = "/api/v1/computers/{id}/history", tag = "inventory",
    params(("id" = String, Path, description = "Jamf computer id")),
    responses((status = 200, description = "Inventory sent to Microsoft per username, newest first"), (status = 401, description = "No or unknown credential (problem+json)"))
)]
pub async fn history(State(api): State<Api>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(r) = authorize(&api, &headers, Role::Reader).await {
        return r;
    }
    match api.store.history(&id, 200).await {
        Ok(h) => {
            let items: Vec<Value> = h
                .iter()
                .map(|e| {
                    json!({
                        "username": e.username, "entra_device_id": e.entra_device_id, "sent_at": e.sent_at,
                        "attributes": serde_json::from_str::<Value>(&e.payload).unwrap_or(Value::Null), "result": e.result,
                    })
                })
                .collect();
            Json(json!({ "computer": id, "items": items })).into_response()
        }
        Err(e) => store_problem(&e),
    }
}

/// GET /api/v1/devices/{deviceId}/posture — the posture the gateway would use now, with its
/// evidence from every source.
#[utoipa::path(
    get, path = "/api/v1/devices/{device_id}/posture", tag = "inventory",
    params(("device_id" = String, Path, description = "Entra device id")),
    responses((status = 200, description = "The posture the gateway would use now, with the evidence of every source"), (status = 401, description = "No or unknown credential (problem+json)"))
)]
pub async fn posture(State(api): State<Api>, headers: HeaderMap, Path(device): Path<String>) -> Response {
    if let Err(r) = authorize(&api, &headers, Role::Reader).await {
        return r;
    }
    let e = match api.store.device_evidence(&device).await {
        Ok(e) => e,
        Err(e) => return store_problem(&e),
    };
    let now = base::time::unix_now_i64();
    let p = device::posture::posture_from(&device, &e, now);
    let posture = p.as_ref().map(|p| {
        let reasons = match &p.state {
            policy::PostureState::NonCompliant { reasons } => reasons.clone(),
            policy::PostureState::Unsupported { reason } => vec![reason.clone()],
            policy::PostureState::InGrace { until } => vec![format!("in grace until {until}")],
            policy::PostureState::Compliant
            | policy::PostureState::NotRegistered { .. }
            | policy::PostureState::Disabled
            | policy::PostureState::Unknown => Vec::new(),
        };
        json!({
            "state": p.state.as_str(), "source": p.source.as_str(), "as_of": p.as_of,
            "age_seconds": (now as u64).saturating_sub(p.as_of), "reasons": reasons,
        })
    });
    Json(json!({
        "device_id": device.to_ascii_lowercase(),
        "known": p.is_some(),
        "posture": posture,
        "evidence": {
            "entra": e.entra,
            "intune": e.intune,
            "jamf": e.jamf.as_ref().map(|(c, a)| json!({ "computer": c.jamf_id, "name": c.name, "account": a.username, "registration_state": a.registration.as_str() })),
            "last_sync": { "entra": e.last_sync.entra, "intune": e.last_sync.intune, "jamf": e.last_sync.jamf },
        },
    }))
    .into_response()
}

#[derive(Deserialize)]
pub struct ConsentQuery {
    redirect_uri: Option<String>,
}

/// GET /api/v1/conditional-access/consent-url — the v2 admin-consent URL for the configured
/// cloud, tenant and application (reference §1.8), with a fresh `state`.
#[utoipa::path(
    get, path = "/api/v1/conditional-access/consent-url", tag = "conditional-access",
    params(("redirect_uri" = Option<String>, Query, description = "Where Entra returns after consent")),
    responses((status = 200, description = "The v2 admin-consent URL for the cloud and app, and its state"), (status = 400, description = "Bad redirect URI"), (status = 401, description = "No or unknown credential (problem+json)"))
)]
pub async fn consent_url(State(api): State<Api>, headers: HeaderMap, uri: Uri) -> Response {
    if let Err(r) = authorize(&api, &headers, Role::Reader).await {
        return r;
    }
    let q: ConsentQuery = match query(&uri) {
        Ok(q) => q,
        Err(r) => return *r,
    };
    let Some(s) = &api.settings else {
        return problem(StatusCode::NOT_FOUND, "not_configured", "No [entra] section.");
    };
    let doc = s.current();
    let Ok(cloud) = doc.cloud.parse::<base::cloud::NationalCloud>() else {
        return problem(
            StatusCode::CONFLICT,
            "invalid_settings",
            "The stored national cloud is not valid.",
        );
    };
    // A failed random source is an error, never an empty or guessable state.
    let state = match base::seal::random_token(16) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "no consent state: the random source failed");
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "random_unavailable",
                "The system's random source failed; try again.",
            );
        }
    };
    let mut url = match url::Url::parse(&format!(
        "https://{}/{}/v2.0/adminconsent",
        cloud.hosts().login,
        doc.tenant_id
    )) {
        Ok(u) => u,
        Err(e) => return problem(StatusCode::CONFLICT, "invalid_settings", e.to_string()),
    };
    {
        let mut qp = url.query_pairs_mut();
        qp.append_pair("client_id", &doc.application_id);
        qp.append_pair("scope", &cloud.graph_scope());
        if let Some(r) = &q.redirect_uri {
            qp.append_pair("redirect_uri", r);
        }
        qp.append_pair("state", &state);
    }
    Json(json!({ "url": url.to_string(), "state": state })).into_response()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SendUpdateBody {
    /// A Jamf computer id; absent: every computer.
    computer: Option<String>,
}

/// POST /api/v1/conditional-access/send-update — starts a job; see `/api/v1/jobs/{id}`.
#[utoipa::path(
    post, path = "/api/v1/conditional-access/send-update", tag = "conditional-access",
    request_body(content_type = "application/json", description = "Optional: {\"computer\": ID}; empty for every computer"),
    responses((status = 202, description = "Job started: its id, and Location"), (status = 200, description = "The same work (the same computer, or every computer) is already running on some node: that job's id, `already_running: true`, and Location; no new job"), (status = 429, description = "This node started 6 jobs in a row and may start one every 10 s (problem+json, Retry-After)"), (status = 400, description = "Bad body"), (status = 401, description = "No or unknown credential (problem+json)"), (status = 403, description = "A read-only credential for a change (problem+json)"), (status = 404, description = "No such computer"), (status = 409, description = "The sync is off on this node"))
)]
pub async fn send_update(State(api): State<Api>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let caller = match authorize(&api, &headers, Role::Admin).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let b: SendUpdateBody = if body.is_empty() {
        SendUpdateBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => return problem(StatusCode::BAD_REQUEST, "invalid_request", e.to_string()),
        }
    };
    let Some(sync) = api.sync.clone() else {
        return problem(
            StatusCode::CONFLICT,
            "sync_off",
            "The sync is not configured on this node.",
        );
    };
    if let Some(id) = &b.computer {
        match api.store.computer(id).await {
            Ok(Some(_)) => {}
            Ok(None) => return problem(StatusCode::NOT_FOUND, "not_found", format!("No computer {id}.")),
            Err(e) => return store_problem(&e),
        }
    }
    // The same work already running (on any node): that job, not a second one.
    match api.store.running_job("send_update", b.computer.as_deref()).await {
        Ok(Some(j)) => {
            return (
                StatusCode::OK,
                [(header::LOCATION, format!("/api/v1/jobs/{}", j.id))],
                Json(json!({ "job": j.id, "already_running": true, "node": j.node })),
            )
                .into_response();
        }
        Ok(None) => {}
        Err(e) => return store_problem(&e),
    }
    if let Err(wait) = api.send_update_budget.take() {
        let secs = wait.as_secs() + 1;
        let mut r = problem(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "This node starts at most {} Send Updates in a row, then one every {} s; try again in {secs} s.",
                SendUpdateBudget::BURST,
                SendUpdateBudget::EVERY.as_secs()
            ),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        return r;
    }
    let Ok(id) = base::seal::random_token(12) else {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_randomness",
            "The system random source failed; try again.",
        );
    };
    let running = store::Job {
        id: id.clone(),
        kind: "send_update".into(),
        status: store::JobStatus::Running,
        node: api.node.clone(),
        started_at: base::time::unix_now_i64(),
        finished_at: None,
        computer: b.computer.clone(),
        result: None,
    };
    // Stored before it starts: a job nobody could ask about is never acknowledged.
    if let Err(e) = api.store.put_job(&running).await {
        return store_problem(&e);
    }
    audit_action(
        &api,
        &caller.name,
        "send_update",
        json!({ "job": id, "computer": b.computer }),
    )
    .await;
    let store = api.store.clone();
    tokio::spawn(async move {
        let (status, result) = match sync.send_update(running.computer.clone()).await {
            Ok(stats) => (store::JobStatus::Succeeded, json!(stats)),
            Err(e) => (store::JobStatus::Failed, json!({ "error": e.to_string() })),
        };
        let done = store::Job {
            status,
            finished_at: Some(base::time::unix_now_i64()),
            result: Some(result.to_string()),
            ..running
        };
        finish_job(store, done).await;
    });
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/api/v1/jobs/{id}"))],
        Json(json!({ "job": id })),
    )
        .into_response()
}

/// GET /api/v1/jobs/{id}
#[utoipa::path(
    get, path = "/api/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, description = "Status (running, succeeded, failed) and outcome"), (status = 401, description = "No or unknown credential (problem+json)"), (status = 404, description = "No such job (kept a week)"), (status = 503, description = "The store is unavailable (problem+json, Retry-After)"))
)]
pub async fn job(State(api): State<Api>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(r) = authorize(&api, &headers, Role::Reader).await {
        return r;
    }
    match api.store.job(&id).await {
        Ok(Some(j)) => Json(job_json(&j)).into_response(),
        Ok(None) => problem(
            StatusCode::NOT_FOUND,
            "not_found",
            "No such job (jobs are kept for a week).",
        ),
        Err(e) => store_problem(&e),
    }
}

/// POST /api/v1/explain — "What If": the decision the gateway would make now, with its reason
/// code, landing, response and every piece of evidence; nothing is sent upstream.
#[utoipa::path(
    post, path = "/api/v1/explain", tag = "explain",
    request_body(content_type = "application/json", description = "url (or route, with an optional path); token (an Entra access token) or user (object id or UPN; groups then come from Graph); device_id with device_source (token, certificate or session; default token); browser (answer as for a navigation)"),
    responses((status = 200, description = "outcome (allow/deny), reason, landing, the response the client would get, and the evidence: route policy, credential, groups, device and its source, posture look-up, posture, registration step"), (status = 400, description = "A bad question: the body names the field"), (status = 401, description = "No or unknown credential (problem+json)"), (status = 404, description = "This node has no proxy to explain"))
)]
pub async fn explain(State(api): State<Api>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if let Err(r) = authorize(&api, &headers, Role::Reader).await {
        return r;
    }
    let Some(explainer) = &api.explainer else {
        return problem(
            StatusCode::NOT_FOUND,
            "not_configured",
            "This node has no proxy to explain.",
        );
    };
    let q = match access::explain::Question::from_json(&body) {
        Ok(q) => q,
        Err(e) => return problem(StatusCode::BAD_REQUEST, "invalid_request", e.to_string()),
    };
    match explainer.explain(&q).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => problem(StatusCode::BAD_REQUEST, "invalid_request", e.to_string()),
    }
}

#[cfg(test)]
mod budget_tests {
    use super::SendUpdateBudget;

    #[test]
    fn a_burst_then_one_start_every_interval() {
        let b = SendUpdateBudget::default();
        for _ in 0..SendUpdateBudget::BURST {
            assert!(b.take().is_ok());
        }
        let wait = b.take().unwrap_err();
        assert!(
            wait <= SendUpdateBudget::EVERY && wait > SendUpdateBudget::EVERY / 2,
            "{wait:?}"
        );
        // Ten seconds later there is one more, not a new burst.
        b.state.lock().unwrap().1 -= SendUpdateBudget::EVERY;
        assert!(b.take().is_ok());
        assert!(b.take().is_err());
    }
}
