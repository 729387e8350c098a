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
use serde_json::{json, Value};

use identity::{CurrentIdentity, Validator};
use store::Store;
use sync::settings::{ConditionalAccess, LandingChoice, Settings};
use sync::test_connection::TestReport;

use crate::body;
use sync::SyncControl;

/// Who may call the API.
pub struct ApiAuth {
    pub token_sha256: Option<[u8; 32]>,
    pub read_only_token_sha256: Option<[u8; 32]>,
    /// The identity in force, whose validator checks Entra bearer tokens.
    pub identity: Option<Arc<CurrentIdentity>>,
    pub admin_role: String,
    pub reader_role: String,
}

impl ApiAuth {
    /// Authentication as `[admin]` configures it; Entra bearer tokens are honoured when the
    /// gateway has an identity.
    pub fn from_config(cfg: &config::AdminSettings, identity: Option<Arc<CurrentIdentity>>) -> Self {
        Self {
            token_sha256: cfg.token_sha256,
            read_only_token_sha256: cfg.read_only_token_sha256,
            identity,
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
    /// The file's `[entra]` in force, whose credential (`client_secret`, `certificate`,
    /// `assertion_file`) is used while the settings hold no secret of their own.
    pub file_entra: Option<sync::SharedFileEntra>,
    /// "What If" against the live routes and access components.
    pub explainer: Option<Arc<dyn access::explain::Explain>>,
    /// The configuration file's `[sync] share`, in force while the settings set none.
    pub file_share: std::collections::BTreeMap<String, String>,
    /// How many Send Update jobs this node may start now ([`SendUpdateBudget`]).
    pub send_update_budget: Arc<SendUpdateBudget>,
    /// This node's decisions of the last hour, minute by minute.
    pub decisions: Option<Arc<metrics::DecisionHistory>>,
    /// This node's posture cache: the postures it enforces now.
    pub postures: Option<Arc<device::PostureCache>>,
    /// Reads the configuration file again (`POST /api/v1/reload`, as SIGHUP does).
    pub reload: Option<Arc<dyn Reload>>,
}

impl Api {
    /// Which credential the file's `[entra]` gives, if any.
    fn file_credential(&self) -> Option<&'static str> {
        let file = self.file_entra.as_ref()?.load();
        file.entra.credential.as_ref().map(config::ClientCredentialConfig::kind)
    }
}

/// The process's reload, which the admin API may ask for (the app provides it).
pub trait Reload: Send + Sync {
    /// Reads the file again, checks it whole and applies it, or leaves everything as it is.
    fn reload(&self) -> body::Reloaded;
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

/// What a caller may do: an admin reads and changes, a reader only reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
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

/// An authenticated caller: what they may do, and the name the audit trail records.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Caller {
    pub role: Role,
    pub name: String,
}

/// Who is asking: the request's headers (a bearer token) or, for the console's in-process
/// calls, the caller its session authenticated — a request extension, which nothing outside
/// the process can set.
pub struct Credential {
    headers: HeaderMap,
    session: Option<Caller>,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Credential {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self {
            headers: parts.headers.clone(),
            session: parts.extensions.get::<Caller>().cloned(),
        })
    }
}

/// The query string as `T`, read after the caller is authorized (so a request without a
/// credential gets 401 whatever its query), a bad one answered with problem+json.
fn query<T: serde::de::DeserializeOwned>(uri: &Uri) -> Result<T, Box<Response>> {
    Query::<T>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| Box::new(problem(StatusCode::BAD_REQUEST, "invalid_query", e.body_text())))
}

/// A path parameter as axum extracts it; read with [`segment`] once the caller is authorized.
pub type PathArg = Result<Path<String>, axum::extract::rejection::PathRejection>;

/// The path parameter, a bad one (not UTF-8 once decoded) answered with problem+json.
fn segment(p: PathArg) -> Result<String, Box<Response>> {
    p.map(|Path(s)| s)
        .map_err(|e| Box::new(problem(StatusCode::BAD_REQUEST, "invalid_path", e.body_text())))
}

/// A request body as axum buffers it; read with [`body_bytes`] once the caller is authorized.
pub type BodyArg = Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>;

/// The body, one too large or cut short answered with problem+json.
fn body_bytes(b: BodyArg) -> Result<axum::body::Bytes, Box<Response>> {
    b.map_err(|e| {
        let status = e.status();
        let reason = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "body_too_large"
        } else {
            "invalid_body"
        };
        Box::new(problem(status, reason, e.body_text()))
    })
}

/// A list's `limit`, within the range the OpenAPI document gives.
fn page_size(limit: Option<u32>) -> Result<u32, Box<Response>> {
    match limit.unwrap_or(body::DEFAULT_LIMIT) {
        l @ body::MIN_LIMIT..=body::MAX_LIMIT => Ok(l),
        _ => Err(Box::new(problem(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("limit: must be {} to {}", body::MIN_LIMIT, body::MAX_LIMIT),
        ))),
    }
}

async fn authorize(api: &Api, cred: &Credential, need: Role) -> Result<Caller, Response> {
    let caller = match &cred.session {
        Some(c) => c.clone(),
        None => authenticate(api, &cred.headers).await?,
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

/// The caller a request's bearer token names: the admin or read-only token, or an Entra token
/// with a Portcullis app role from the gateway's own tenant.
pub async fn authenticate(api: &Api, headers: &HeaderMap) -> Result<Caller, Response> {
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
        let Some(id) = api.auth.identity.as_ref().map(|c| c.load()) else {
            return Err(problem(
                StatusCode::UNAUTHORIZED,
                "token_invalid",
                "The token is not valid here.",
            ));
        };
        let v = &id.validator;
        let p = v.validate(token).await.map_err(|_| {
            problem(
                StatusCode::UNAUTHORIZED,
                "token_invalid",
                "The token is not valid here.",
            )
        })?;
        caller_of(api, v, &p).map_err(|e| problem(StatusCode::FORBIDDEN, "role_missing", e.to_string()))?
    };
    Ok(caller)
}

/// Why an Entra identity may not administer Portcullis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleError {
    OtherTenant,
    NoRole,
}

impl std::fmt::Display for RoleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::OtherTenant => "Admin roles are honoured only from the gateway's own tenant.",
            Self::NoRole => "Your account has no Portcullis admin or reader role.",
        })
    }
}

/// The caller an Entra identity (an access token's, or the console's ID token's) is: its
/// Portcullis app role, honoured only from the gateway's own tenant — another allowed
/// tenant's admin could give themselves one in theirs.
pub fn caller_of(api: &Api, v: &Validator, p: &identity::Principal) -> Result<Caller, RoleError> {
    if v.tenants()
        .first()
        .is_none_or(|home| !home.eq_ignore_ascii_case(&p.tenant))
    {
        return Err(RoleError::OtherTenant);
    }
    let has = |r: &str| p.roles.iter().any(|x| &**x == r);
    let role = if has(&api.auth.admin_role) {
        Role::Admin
    } else if has(&api.auth.reader_role) {
        Role::Reader
    } else {
        return Err(RoleError::NoRole);
    };
    Ok(Caller {
        role,
        name: p.username.as_deref().unwrap_or(&p.object_id).to_string(),
    })
}

fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

/// GET /api/v1/conditional-access
#[utoipa::path(
    get, path = "/api/v1/conditional-access", tag = "conditional-access",
    responses(
        (status = 200, description = "The settings, the secret only as set and when", body = body::Settings,
            headers(("ETag" = String, description = "The settings' version, for If-Match"))),
        (status = 404, description = "No `[entra]` section: nothing to configure")
    )
)]
pub async fn get_settings(State(api): State<Api>, cred: Credential) -> Response {
    if let Err(r) = authorize(&api, &cred, Role::Reader).await {
        return r;
    }
    let Some(s) = &api.settings else {
        return problem(StatusCode::NOT_FOUND, "not_configured", "No [entra] section.");
    };
    (
        [(header::ETAG, etag(s.version()))],
        Json(body::Settings::of(&s.current(), api.file_credential(), &api.file_share)),
    )
        .into_response()
}

/// PUT /api/v1/conditional-access (If-Match required)
#[utoipa::path(
    put, path = "/api/v1/conditional-access", tag = "conditional-access",
    request_body = body::SettingsUpdate,
    params(("If-Match" = String, Header, description = "The ETag read, or `*` for whatever version is current")),
    responses(
        (status = 200, description = "Saved and applied, with Run Test's report on the new values", body = body::Saved,
            headers(("ETag" = String, description = "The new version"))),
        (status = 400, description = "An invalid body or value; the detail names every field"),
        (status = 404, description = "No `[entra]` section: nothing to configure"),
        (status = 412, description = "The settings changed since the ETag was read"),
        (status = 428, description = "No If-Match (send the ETag, or `*`)")
    )
)]
pub async fn put_settings(State(api): State<Api>, cred: Credential, body: BodyArg) -> Response {
    let caller = match authorize(&api, &cred, Role::Admin).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let body = match body_bytes(body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let Some(s) = &api.settings else {
        return problem(StatusCode::NOT_FOUND, "not_configured", "No [entra] section.");
    };
    let Some(expected) = expected_version(cred.headers.get(header::IF_MATCH), s.version()) else {
        return problem(
            StatusCode::PRECONDITION_REQUIRED,
            "if_match_required",
            "Send If-Match with the ETag you read.",
        );
    };
    let b: body::SettingsUpdate = match serde_json::from_slice(&body) {
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
    for (name, template) in b.shared_attributes.iter().flatten() {
        let n = name
            .strip_prefix("extensionAttribute")
            .and_then(|n| n.parse::<u8>().ok());
        if !n.is_some_and(|n| (1..=15).contains(&n)) || name.starts_with("extensionAttribute0") {
            errors.push(format!(
                "shared_attributes: {name:?} is not extensionAttribute1 to extensionAttribute15"
            ));
        }
        if template.chars().count() > 256 || template.chars().any(char::is_control) {
            errors.push(format!(
                "shared_attributes.{name}: at most 256 characters, no control characters"
            ));
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
        shared_attributes: b.shared_attributes.or_else(|| current.shared_attributes.clone()),
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
    let settings = body::Settings::of(&doc, api.file_credential(), &api.file_share);
    let mut audit = json!(settings);
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
        Json(body::Saved {
            version,
            settings,
            test: report,
        }),
    )
        .into_response()
}

/// The version a PUT may replace, from its `If-Match` (RFC 9110 §13.1.1): `*` is whatever is
/// current; a list of entity tags names the current version if one of them does (a weak tag
/// counts, as a proxy may have weakened ours); a list naming no version of these settings is
/// a version that never matches, so the write fails as stale (412). `None`: no If-Match (428).
fn expected_version(if_match: Option<&header::HeaderValue>, current: i64) -> Option<i64> {
    const NEVER: i64 = -1;
    let Ok(v) = if_match?.to_str() else { return Some(NEVER) };
    if v.trim() == "*" {
        return Some(current);
    }
    let versions: Vec<i64> = v
        .split(',')
        .filter_map(|tag| tag.trim().trim_start_matches("W/").trim_matches('"').parse().ok())
        .collect();
    Some(if versions.contains(&current) {
        current
    } else {
        versions.first().copied().unwrap_or(NEVER)
    })
}

/// POST /api/v1/conditional-access/test
#[utoipa::path(
    post, path = "/api/v1/conditional-access/test", tag = "conditional-access",
    responses(
        (status = 200, description = "Run Test: every step with its result (a failed step is still a 200)", body = TestReport),
        (status = 409, description = "The sync is not configured on this node")
    )
)]
pub async fn run_test(State(api): State<Api>, cred: Credential) -> Response {
    let caller = match authorize(&api, &cred, Role::Admin).await {
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
    responses((status = 200, description = "Each source's last success, lag, last error and counts; the sync leader", body = body::SyncStatus))
)]
pub async fn sync_status(State(api): State<Api>, cred: Credential) -> Response {
    if let Err(r) = authorize(&api, &cred, Role::Reader).await {
        return r;
    }
    let now = base::time::unix_now_i64();
    let status = async {
        Ok::<_, store::StoreError>(body::SyncStatus {
            entra: source_status(&*api.store, "entra", now).await?,
            intune: source_status(&*api.store, "intune", now).await?,
            jamf: source_status(&*api.store, "jamf", now).await?,
            share: source_status(&*api.store, "share", now).await?,
            // Who syncs: one node at a time, holding the lease (by the database's clock).
            leader: api.store.lease_holder("sync").await?.map(|(lease, left)| body::Leader {
                node: lease.holder,
                term: lease.term,
                lease_left_seconds: left,
            }),
            this_node: api.node.clone(),
        })
    };
    match status.await {
        Ok(s) => Json(s).into_response(),
        Err(e) => store_problem(&e),
    }
}

/// One source's recent runs as the status shows them.
async fn source_status(store: &dyn Store, source: &str, now: i64) -> Result<body::SourceStatus, store::StoreError> {
    let runs = store.last_runs(source, 50).await?;
    let success = runs.iter().find(|r| r.ok);
    Ok(body::SourceStatus {
        last_success: success.map(|r| r.finished_at),
        lag_seconds: success.map(|r| now - r.finished_at),
        last_error: runs.iter().find(|r| !r.ok).map(|r| body::SourceError {
            at: r.finished_at,
            error: r.error.clone(),
        }),
        last_counts: success.and_then(|r| serde_json::from_str::<Value>(&r.detail).ok()),
    })
}

/// POST /api/v1/sync/{source}/run
#[utoipa::path(
    post, path = "/api/v1/sync/{source}/run", tag = "sync",
    params(("source" = body::SyncSource, Path, description = "What to sync now")),
    responses(
        (status = 202, description = "The sync loop was woken", body = body::Triggered),
        (status = 404, description = "Unknown source"),
        (status = 409, description = "The sync is not configured on this node")
    )
)]
pub async fn sync_now(State(api): State<Api>, cred: Credential, source: PathArg) -> Response {
    let caller = match authorize(&api, &cred, Role::Admin).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let source = match segment(source) {
        Ok(s) => s,
        Err(r) => return *r,
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
            (StatusCode::ACCEPTED, Json(body::Triggered { triggered: source })).into_response()
        }
        None => problem(
            StatusCode::CONFLICT,
            "sync_off",
            "The sync is not configured on this node.",
        ),
    }
}

/// GET /api/v1/audit?before=ID&limit=N
#[utoipa::path(
    get, path = "/api/v1/audit", tag = "audit",
    params(body::AuditQuery),
    responses((status = 200, description = "Audit entries, newest first; secrets masked", body = body::AuditPage))
)]
pub async fn audit(State(api): State<Api>, cred: Credential, uri: Uri) -> Response {
    if let Err(r) = authorize(&api, &cred, Role::Reader).await {
        return r;
    }
    let p: body::AuditQuery = match query(&uri) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let limit = match page_size(p.limit) {
        Ok(l) => l,
        Err(r) => return *r,
    };
    match api.store.audit_log(p.before, limit).await {
        Ok(items) => {
            let next_before = (items.len() as u32 == limit)
                .then(|| items.last().map(|e| e.id))
                .flatten();
            Json(body::AuditPage { items, next_before }).into_response()
        }
        Err(e) => store_problem(&e),
    }
}

/// The Conditional Access inventory state of one account: what Entra knows of the device it
/// registered, as the gateway would use it now.
async fn account_view(api: &Api, a: &store::LocalAccount) -> body::Account {
    let compliance = match &a.entra_device_id {
        Some(d) => match api.store.device_evidence(d).await {
            Ok(e) => {
                let now = base::time::unix_now_i64();
                device::posture::posture_from(&e, now).map(|p| body::Compliance {
                    state: p.state.as_str(),
                    source: p.source.as_str(),
                    as_of: p.as_of,
                    age_seconds: (now as u64).saturating_sub(p.as_of),
                })
            }
            Err(_) => None,
        },
        None => None,
    };
    body::Account {
        username: a.username.clone(),
        account_type: a.account_type,
        entra_user_id: a.entra_user_id.clone(),
        entra_device_id: a.entra_device_id.clone(),
        registration_state: a.registration,
        compliance,
    }
}

async fn computer_view(api: &Api, c: &store::Computer) -> body::Computer {
    let mut accounts = Vec::with_capacity(c.accounts.len());
    for a in &c.accounts {
        accounts.push(account_view(api, a).await);
    }
    body::Computer {
        id: c.jamf_id.clone(),
        name: c.name.clone(),
        serial: c.serial.clone(),
        udid: c.udid.clone(),
        model: c.model.clone(),
        os_version: c.os_version.clone(),
        os_build: c.os_build.clone(),
        managed: c.managed,
        filevault: c.filevault.clone(),
        last_inventory: c.last_inventory,
        last_contact: c.last_contact,
        seen_at: c.seen_at,
        local_user_accounts: accounts,
    }
}

/// GET /api/v1/computers?after=&limit=&filter=&state=
#[utoipa::path(
    get, path = "/api/v1/computers", tag = "inventory",
    params(body::ComputerQuery),
    responses((status = 200, description = "Computers with each account's Conditional Access inventory state", body = body::ComputerPage))
)]
pub async fn computers(State(api): State<Api>, cred: Credential, uri: Uri) -> Response {
    if let Err(r) = authorize(&api, &cred, Role::Reader).await {
        return r;
    }
    let q: body::ComputerQuery = match query(&uri) {
        Ok(q) => q,
        Err(r) => return *r,
    };
    let limit = match page_size(q.limit) {
        Ok(l) => l as usize,
        Err(r) => return *r,
    };
    let needle = q.filter.as_deref().map(str::to_ascii_lowercase);
    let state = match q.state.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None => None,
        Some(s @ ("ACTIVATED" | "DEACTIVATED" | "UNRESPONSIVE" | "UNKNOWN")) => {
            Some(store::RegistrationState::parse(s))
        }
        Some(_) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                "state: must be ACTIVATED, DEACTIVATED, UNRESPONSIVE or UNKNOWN",
            )
        }
    };
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
                .is_none_or(|s| c.accounts.iter().any(|a| a.registration == *s));
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
    Json(body::ComputerPage {
        items,
        next_after: next,
    })
    .into_response()
}

/// GET /api/v1/computers/{id}
#[utoipa::path(
    get, path = "/api/v1/computers/{id}", tag = "inventory",
    params(("id" = String, Path, description = "Jamf computer id")),
    responses(
        (status = 200, description = "One computer and its accounts' Conditional Access inventory state", body = body::Computer),
        (status = 404, description = "No such computer")
    )
)]
pub async fn computer(State(api): State<Api>, cred: Credential, id: PathArg) -> Response {
    if let Err(r) = authorize(&api, &cred, Role::Reader).await {
        return r;
    }
    let id = match segment(id) {
        Ok(id) => id,
        Err(r) => return *r,
    };
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
    responses((status = 200, description = "Inventory sent to Microsoft per username, newest first (empty for an unknown computer)", body = body::History))
)]
pub async fn history(State(api): State<Api>, cred: Credential, id: PathArg) -> Response {
    if let Err(r) = authorize(&api, &cred, Role::Reader).await {
        return r;
    }
    let id = match segment(id) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    match api.store.history(&id, 200).await {
        Ok(h) => {
            let items = h
                .into_iter()
                .map(|e| body::HistoryItem {
                    attributes: serde_json::from_str::<Value>(&e.payload).ok(),
                    username: e.username,
                    entra_device_id: e.entra_device_id,
                    sent_at: e.sent_at,
                    result: e.result,
                })
                .collect();
            Json(body::History { computer: id, items }).into_response()
        }
        Err(e) => store_problem(&e),
    }
}

/// GET /api/v1/devices/{deviceId}/posture — the posture the gateway would use now, with its
/// evidence from every source.
#[utoipa::path(
    get, path = "/api/v1/devices/{device_id}/posture", tag = "inventory",
    params(("device_id" = String, Path, description = "Entra device id")),
    responses((status = 200, description = "The posture the gateway would use now, with every source's evidence", body = body::Posture))
)]
pub async fn posture(State(api): State<Api>, cred: Credential, device: PathArg) -> Response {
    if let Err(r) = authorize(&api, &cred, Role::Reader).await {
        return r;
    }
    let device = match segment(device) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    let e = match api.store.device_evidence(&device).await {
        Ok(e) => e,
        Err(e) => return store_problem(&e),
    };
    let now = base::time::unix_now_i64();
    let p = device::posture::posture_from(&e, now);
    let posture = p.map(|p| {
        let state = p.state.as_str();
        let reasons = match p.state {
            policy::PostureState::NonCompliant { reasons } => reasons,
            policy::PostureState::Unsupported { reason } => vec![reason],
            policy::PostureState::InGrace { until } => vec![format!("in grace until {until}")],
            policy::PostureState::Compliant
            | policy::PostureState::NotRegistered { .. }
            | policy::PostureState::Disabled
            | policy::PostureState::Unknown => Vec::new(),
        };
        body::PostureNow {
            state,
            source: p.source.as_str(),
            as_of: p.as_of,
            age_seconds: (now as u64).saturating_sub(p.as_of),
            reasons,
        }
    });
    Json(body::Posture {
        device_id: device.to_ascii_lowercase(),
        known: posture.is_some(),
        posture,
        evidence: body::Evidence {
            jamf: e.jamf.map(|(c, a)| body::JamfEvidence {
                computer: c.jamf_id,
                name: c.name,
                account: a.username,
                registration_state: a.registration,
            }),
            entra: e.entra,
            intune: e.intune,
            last_sync: body::LastSync {
                entra: e.last_sync.entra,
                intune: e.last_sync.intune,
                jamf: e.last_sync.jamf,
            },
        },
    })
    .into_response()
}

/// GET /api/v1/conditional-access/consent-url — the v2 admin-consent URL for the configured
/// cloud, tenant and application (reference §1.8), with a fresh `state`.
#[utoipa::path(
    get, path = "/api/v1/conditional-access/consent-url", tag = "conditional-access",
    params(body::ConsentQuery),
    responses(
        (status = 200, description = "The v2 admin-consent URL for the cloud, tenant and app, with a fresh state", body = body::ConsentUrl),
        (status = 404, description = "No `[entra]` section: nothing to configure"),
        (status = 409, description = "The stored settings cannot make a URL")
    )
)]
pub async fn consent_url(State(api): State<Api>, cred: Credential, uri: Uri) -> Response {
    if let Err(r) = authorize(&api, &cred, Role::Reader).await {
        return r;
    }
    let q: body::ConsentQuery = match query(&uri) {
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
    Json(body::ConsentUrl {
        url: url.to_string(),
        state,
    })
    .into_response()
}

/// POST /api/v1/conditional-access/send-update — starts a job; see `/api/v1/jobs/{id}`.
#[utoipa::path(
    post, path = "/api/v1/conditional-access/send-update", tag = "conditional-access",
    request_body(content = Option<body::SendUpdate>, description = "One computer, or every computer (`{}`, `null` or no body)"),
    responses(
        (status = 202, description = "A job started", body = body::JobStarted,
            headers(("Location" = String, description = "The job: `/api/v1/jobs/{id}`"))),
        (status = 200, description = "The same work (that computer, or every computer) is already running on some node: that job, no new one", body = body::JobAlreadyRunning,
            headers(("Location" = String, description = "The running job"))),
        (status = 404, description = "No such computer"),
        (status = 409, description = "The sync is not configured on this node"),
        (status = 429, description = "This node started 6 jobs in a row; it may start one every 10 s (Retry-After)")
    )
)]
pub async fn send_update(State(api): State<Api>, cred: Credential, body: BodyArg) -> Response {
    let caller = match authorize(&api, &cred, Role::Admin).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let body = match body_bytes(body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    // No body, `null` and `{}` all mean every computer.
    let b: body::SendUpdate = if body.is_empty() {
        body::SendUpdate::default()
    } else {
        match serde_json::from_slice::<Option<body::SendUpdate>>(&body) {
            Ok(b) => b.unwrap_or_default(),
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
    // The same work already running (on any node): that job, not a second one. Asked first so
    // that a repeated click costs no start; `start_job` below settles a race between nodes.
    match api.store.running_job("send_update", b.computer.as_deref()).await {
        Ok(Some(j)) => return already_running(j),
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
    match api.store.start_job(&running).await {
        Ok(None) => {}
        Ok(Some(j)) => return already_running(j),
        Err(e) => return store_problem(&e),
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
        Json(body::JobStarted { job: id }),
    )
        .into_response()
}

/// The answer to a Send Update whose work another request started: that job.
fn already_running(j: store::Job) -> Response {
    (
        StatusCode::OK,
        [(header::LOCATION, format!("/api/v1/jobs/{}", j.id))],
        Json(body::JobAlreadyRunning {
            job: j.id,
            already_running: true,
            node: j.node,
        }),
    )
        .into_response()
}

/// GET /api/v1/jobs/{id}
#[utoipa::path(
    get, path = "/api/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 200, description = "The job's status and, once finished, its outcome", body = body::Job),
        (status = 404, description = "No such job (jobs are kept a week)")
    )
)]
pub async fn job(State(api): State<Api>, cred: Credential, id: PathArg) -> Response {
    if let Err(r) = authorize(&api, &cred, Role::Reader).await {
        return r;
    }
    let id = match segment(id) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    match api.store.job(&id).await {
        Ok(Some(j)) => Json(body::Job::of(&j)).into_response(),
        Ok(None) => problem(
            StatusCode::NOT_FOUND,
            "not_found",
            "No such job (jobs are kept for a week).",
        ),
        Err(e) => store_problem(&e),
    }
}

/// POST /api/v1/reload — this node reads its configuration file again.
#[utoipa::path(
    post, path = "/api/v1/reload", tag = "operations",
    responses(
        (status = 200, description = "Applied (with the sections only a restart applies), or refused with every error by key; either way the answer says which", body = body::Reloaded),
        (status = 409, description = "This node's configuration was not read from a file")
    )
)]
pub async fn reload(State(api): State<Api>, cred: Credential) -> Response {
    let caller = match authorize(&api, &cred, Role::Admin).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Some(reloader) = api.reload.clone() else {
        return problem(
            StatusCode::CONFLICT,
            "no_file",
            "This node's configuration was not read from a file.",
        );
    };
    // Reading files and building pools blocks: off the async workers.
    let Ok(report) = tokio::task::spawn_blocking(move || reloader.reload()).await else {
        return problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "reload_failed",
            "The reload stopped unexpectedly; see the log.",
        );
    };
    if report.no_file {
        return problem(
            StatusCode::CONFLICT,
            "no_file",
            "This node's configuration was not read from a file.",
        );
    }
    audit_action(
        &api,
        &caller.name,
        "reload",
        json!({ "applied": report.applied, "errors": report.errors.len() }),
    )
    .await;
    Json(report).into_response()
}

/// GET /api/v1/decisions — this node's access decisions of the last hour.
#[utoipa::path(
    get, path = "/api/v1/decisions", tag = "explain",
    responses((status = 200, description = "This node's decisions minute by minute and by reason over the last hour, and the oldest posture it enforces", body = body::Decisions))
)]
pub async fn decisions(State(api): State<Api>, cred: Credential) -> Response {
    if let Err(r) = authorize(&api, &cred, Role::Reader).await {
        return r;
    }
    let now = base::time::unix_now_i64();
    let minutes = api.decisions.as_ref().map(|h| h.last_hour(now)).unwrap_or_default();
    let mut by_reason: std::collections::BTreeMap<(String, String), u64> = std::collections::BTreeMap::new();
    let per_minute = minutes
        .iter()
        .map(|m| {
            let mut out = body::DecisionMinute {
                at: m.at,
                allow: 0,
                deny: 0,
                report_only: 0,
            };
            for ((outcome, reason), n) in &m.counts {
                *by_reason.entry((outcome.clone(), reason.clone())).or_default() += n;
                match outcome.as_str() {
                    "allow" => out.allow += n,
                    "deny" => out.deny += n,
                    _ => out.report_only += n,
                }
            }
            out
        })
        .collect();
    let mut by_reason: Vec<body::ReasonCount> = by_reason
        .into_iter()
        .map(|((outcome, reason), count)| body::ReasonCount { outcome, reason, count })
        .collect();
    by_reason.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
    let oldest_posture = api
        .postures
        .as_ref()
        .and_then(|c| c.oldest())
        .map(|(device_id, p)| body::OldestPosture {
            device_id,
            state: p.state.as_str(),
            source: p.source.as_str(),
            as_of: p.as_of,
            age_seconds: (now as u64).saturating_sub(p.as_of),
        });
    Json(body::Decisions {
        node: api.node.clone(),
        minutes: per_minute,
        by_reason,
        oldest_posture,
    })
    .into_response()
}

/// POST /api/v1/explain — "What If": the decision the gateway would make now, with its reason
/// code, landing, response and every piece of evidence; nothing is sent upstream.
#[utoipa::path(
    post, path = "/api/v1/explain", tag = "explain",
    request_body = body::ExplainQuestion,
    responses(
        (status = 200, description = "The decision, its reason, the landing, what the client would get, and the evidence", body = body::ExplainAnswer),
        (status = 404, description = "This node has no proxy to explain")
    )
)]
pub async fn explain(State(api): State<Api>, cred: Credential, body: BodyArg) -> Response {
    if let Err(r) = authorize(&api, &cred, Role::Reader).await {
        return r;
    }
    let body = match body_bytes(body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
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
mod tests {
    use super::{expected_version, SendUpdateBudget};
    use axum::http::HeaderValue;

    #[test]
    fn if_match_names_the_version_a_put_replaces() {
        let v = |s: &'static str| expected_version(Some(&HeaderValue::from_static(s)), 7);
        assert_eq!(expected_version(None, 7), None, "absent: 428");
        assert_eq!(v("*"), Some(7));
        assert_eq!(v("\"7\""), Some(7));
        assert_eq!(v("W/\"7\""), Some(7), "a proxy may weaken the tag");
        assert_eq!(v("\"3\", \"7\""), Some(7), "any tag of a list");
        assert_eq!(v("\"3\""), Some(3), "stale: the store refuses it (412)");
        assert_eq!(v("\"x\", W/\")\""), Some(-1), "no version named: never matches (412)");
        let binary = HeaderValue::from_bytes(b"\"\xff\"").unwrap();
        assert_eq!(expected_version(Some(&binary), 7), Some(-1));
    }

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
