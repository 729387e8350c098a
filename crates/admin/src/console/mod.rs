//! The admin console: server-rendered pages under `/console/` on the admin listener — the
//! Conditional Access settings (Jamf Pro's "macOS Intune Integration" page: read, Edit, Save
//! with Run Test, Run Test, Send Update and its job), computers with their Conditional Access
//! inventory state and history, the sync's health, What If and the audit trail.
//!
//! It has no logic of its own over the data: every page is an in-process call of the admin
//! API's router ([`Console::call`]) as the session's caller (a request extension, see
//! [`crate::api::Credential`]), so validation, roles, audit and errors are the API's. What it
//! adds is the browser's side: sessions ([`session`]), CSRF tokens, forms, templates
//! ([`pages`]) and embedded assets ([`assets`]).
//!
//! May depend on `crate::api` and `crate::body`, `store` (session rows), `base`; nothing else.

mod assets;
mod pages;
pub mod session;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::api::{self, Caller, Role};
use session::Session;

/// What the console works with.
pub struct Console {
    /// The admin API's routes, called in-process.
    api_router: Router,
    api: api::Api,
    pages: pages::Pages,
    /// Sign-in with Entra (the gateway's app and its app roles), when `[entra]` is set.
    identity: Option<Arc<identity::Identity>>,
}

/// An API answer: its status, headers and JSON body (`Null` when it had none).
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    fn ok(&self) -> bool {
        self.status.is_success()
    }

    /// The problem's detail, for a page to show.
    fn detail(&self) -> String {
        self.body["detail"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("The admin API answered {}.", self.status))
    }
}

impl Console {
    pub fn new(api_router: Router, api: api::Api, identity: Option<Arc<identity::Identity>>) -> Self {
        Self {
            api_router,
            api,
            pages: pages::Pages::new(identity.is_some()),
            identity,
        }
    }

    /// Stores a new session for `caller`; the cookie's value, or the page saying why not.
    async fn open_session(&self, caller: Caller, via: &str, next: &str) -> Result<String, Response> {
        let (Ok(cookie), Ok(csrf)) = (base::seal::random_token(32), base::seal::random_token(24)) else {
            tracing::error!("console sign-in refused: the random source failed");
            return Err(self.pages.sign_in(
                StatusCode::SERVICE_UNAVAILABLE,
                next,
                Some("The system's random source failed; try again."),
            ));
        };
        let expires = base::time::unix_now_i64() + session::SESSION_TTL_SECS;
        let s = Session {
            caller,
            csrf,
            via: via.into(),
            expires_at: expires,
            flash: None,
        };
        if let Err(e) = self
            .api
            .store
            .put_session(&session::key(&cookie), &json!(s).to_string(), expires)
            .await
        {
            tracing::warn!(error = %e, "console sign-in: cannot store the session");
            return Err(self.pages.sign_in(
                StatusCode::SERVICE_UNAVAILABLE,
                next,
                Some("The store is unavailable; try again in a moment."),
            ));
        }
        tracing::info!(actor = %s.caller.name, role = ?s.caller.role, via, "signed in to the console");
        Ok(cookie)
    }

    /// GET on the admin API as `caller`.
    pub async fn get(&self, caller: &Caller, uri: &str) -> Answer {
        self.call(caller, Method::GET, uri, &[], None).await
    }

    /// Calls the admin API as `caller`.
    pub async fn call(
        &self,
        caller: &Caller,
        method: Method,
        uri: &str,
        extra: &[(header::HeaderName, String)],
        body: Option<Value>,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(uri);
        for (name, value) in extra {
            req = req.header(name, value);
        }
        let body = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        let Ok(mut req) = req.body(body) else {
            return Answer {
                status: StatusCode::BAD_REQUEST,
                headers: HeaderMap::new(),
                body: json!({ "detail": "That address cannot be asked for." }),
            };
        };
        req.extensions_mut().insert(caller.clone());
        let resp = match self.api_router.clone().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, 16 << 20).await.unwrap_or_default();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    /// Rewrites the request's session with `flash` (or without one).
    async fn set_flash(&self, headers: &HeaderMap, s: &Session, flash: Option<Value>) -> bool {
        let Some(cookie) = session::cookie(headers) else {
            return false;
        };
        let next = Session { flash, ..s.clone() };
        let written = self
            .api
            .store
            .put_session(&session::key(cookie), &json!(next).to_string(), s.expires_at)
            .await;
        if let Err(e) = &written {
            tracing::warn!(error = %e, "console: cannot update the session");
        }
        written.is_ok()
    }

    /// After a change: the settings page, by a redirect carrying the report in the session
    /// (so a reload repeats nothing), or the page itself when the store cannot take it.
    async fn after_change(
        &self,
        headers: &HeaderMap,
        s: &Session,
        test: Option<Value>,
        notice: Option<&str>,
    ) -> Response {
        let flash = json!({ "test": test, "notice": notice });
        if self.set_flash(headers, s, Some(flash)).await {
            return Redirect::to("/console/conditional-access").into_response();
        }
        settings_page(self, s, test, notice).await
    }

    /// The session a request's cookie names, if it is live.
    async fn session(&self, headers: &HeaderMap) -> Option<Session> {
        let cookie = session::cookie(headers)?;
        let now = base::time::unix_now_i64();
        let data = self.api.store.session(&session::key(cookie), now).await.ok()??;
        serde_json::from_str(&data).ok()
    }
}

/// The console's routes, under `/console`.
pub fn router(console: Arc<Console>) -> Router {
    Router::new()
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(overview))
        .route("/console/sign-in", get(sign_in_page).post(sign_in))
        .route("/console/sign-in/entra", get(sign_in_entra))
        .route("/console/callback", post(callback))
        .route("/console/sign-out", post(sign_out))
        .route("/console/conditional-access", get(settings).post(save_settings))
        .route("/console/conditional-access/edit", get(edit_settings))
        .route("/console/conditional-access/test", post(run_test))
        .route("/console/conditional-access/send-update", post(send_update))
        .route("/console/jobs/{id}", get(job))
        .route("/console/computers", get(computers))
        .route("/console/computers/{id}", get(computer))
        .route("/console/what-if", get(what_if))
        .route("/console/audit", get(audit))
        .route("/console/sync/{source}", post(sync_now))
        .route("/console/reload", post(reload))
        .route("/console/devices/{id}", get(device))
        .route("/console/assets/{name}", get(assets::serve))
        .with_state(console)
}

type C = State<Arc<Console>>;

/// A signed-in page's session, or the way to sign in.
async fn signed_in(c: &Console, headers: &HeaderMap, uri: &axum::http::Uri) -> Result<Session, Response> {
    match c.session(headers).await {
        Some(s) => Ok(s),
        None => {
            let asked = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
            let back: String = url::form_urlencoded::byte_serialize(asked.as_bytes()).collect();
            Err(Redirect::to(&format!("/console/sign-in?next={back}")).into_response())
        }
    }
}

/// A state-changing form's session: signed in, from this site, with the session's CSRF token.
async fn form_session(c: &Console, headers: &HeaderMap, csrf: Option<&str>) -> Result<Session, Response> {
    if session::cross_site(headers) {
        return Err(c.pages.message(
            StatusCode::FORBIDDEN,
            "Refused",
            "This form was sent from another site. Open the console and try again.",
            None,
        ));
    }
    let Some(s) = c.session(headers).await else {
        return Err(Redirect::to("/console/sign-in").into_response());
    };
    match csrf {
        Some(t) if base::ct_eq(t.as_bytes(), s.csrf.as_bytes()) => Ok(s),
        Some(_) | None => Err(c.pages.message(
            StatusCode::FORBIDDEN,
            "Refused",
            "This form has expired or did not come from the console. Reload the page and try again.",
            Some(&s),
        )),
    }
}

/// A change needs an admin: a reader's request is refused here, as the API would refuse it.
fn refuse_reader(c: &Console, s: &Session) -> Option<Response> {
    match s.caller.role {
        Role::Admin => None,
        Role::Reader => Some(c.pages.message(
            StatusCode::FORBIDDEN,
            "Read-only",
            "You may read but not change anything.",
            Some(s),
        )),
    }
}

/// An unknown page under `/console/` (the admin listener's one fallback sends these here).
pub async fn not_found(c: &Console, headers: &HeaderMap) -> Response {
    let s = c.session(headers).await;
    c.pages.message(
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no such page in the console.",
        s.as_ref(),
    )
}

#[derive(Deserialize)]
struct Next {
    next: Option<String>,
    signed_out: Option<String>,
}

/// Only console paths: never another site.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with("/console/") && !n.starts_with("//") && !n.contains('\\') => n,
        Some(_) | None => "/console/",
    }
}

async fn sign_in_page(State(c): C, Query(q): Query<Next>) -> Response {
    if q.signed_out.is_some() {
        return c.pages.signed_out();
    }
    c.pages.sign_in(StatusCode::OK, safe_next(q.next.as_deref()), None)
}

#[derive(Deserialize)]
struct SignIn {
    token: String,
    next: Option<String>,
}

async fn sign_in(State(c): C, headers: HeaderMap, Form(f): Form<SignIn>) -> Response {
    let next = safe_next(f.next.as_deref());
    if session::cross_site(&headers) {
        return c.pages.sign_in(
            StatusCode::FORBIDDEN,
            next,
            Some("This sign-in was sent from another site."),
        );
    }
    let mut bearer = HeaderMap::new();
    let Ok(value) = HeaderValue::from_str(&format!("Bearer {}", f.token.trim())) else {
        return c
            .pages
            .sign_in(StatusCode::UNAUTHORIZED, next, Some("That token is not valid here."));
    };
    bearer.insert(header::AUTHORIZATION, value);
    let caller = match api::authenticate(&c.api, &bearer).await {
        Ok(caller) => caller,
        Err(_) => {
            return c
                .pages
                .sign_in(StatusCode::UNAUTHORIZED, next, Some("That token is not valid here."))
        }
    };
    let cookie = match c.open_session(caller, "token", next).await {
        Ok(cookie) => cookie,
        Err(r) => return r,
    };
    let mut r = Redirect::to(next).into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, session::set_cookie(&headers, Some(&cookie)));
    r
}

/// Where Entra sends the browser back: this console's callback, on the host the browser used
/// (Entra accepts only redirect URIs registered on the app, so a forged Host gets nowhere).
fn redirect_uri(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let tls = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    format!("{}://{host}/console/callback", if tls { "https" } else { "http" })
}

async fn sign_in_entra(State(c): C, headers: HeaderMap, Query(q): Query<Next>) -> Response {
    let next = safe_next(q.next.as_deref());
    let Some(id) = &c.identity else {
        return c.pages.sign_in(
            StatusCode::NOT_FOUND,
            next,
            Some("Sign-in with Microsoft needs an [entra] section."),
        );
    };
    match id.oidc.start(&id.sealer, &redirect_uri(&headers), next) {
        Ok(start) => {
            let mut r = Redirect::to(&start.authorize_url).into_response();
            r.headers_mut().insert(
                header::SET_COOKIE,
                session::set_login_cookie(&headers, Some(&start.login_cookie)),
            );
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "console sign-in with Entra cannot start");
            c.pages.sign_in(
                StatusCode::SERVICE_UNAVAILABLE,
                next,
                Some("Sign-in with Microsoft cannot start; try again."),
            )
        }
    }
}

/// Entra's form_post: the code, redeemed with the sealed state; the ID token's app roles make
/// the caller, as the API honours them.
async fn callback(State(c): C, headers: HeaderMap, Form(params): Form<Vec<(String, String)>>) -> Response {
    let Some(id) = &c.identity else {
        return c.pages.sign_in(
            StatusCode::NOT_FOUND,
            "/console/",
            Some("Sign-in with Microsoft needs an [entra] section."),
        );
    };
    let (session, next) = match id
        .oidc
        .finish(&id.sealer, session::login_cookie(&headers), &params)
        .await
    {
        Ok(done) => done,
        Err(e) => {
            tracing::warn!(error = %e, "console sign-in with Entra failed");
            let mut r = c.pages.sign_in(
                StatusCode::BAD_REQUEST,
                "/console/",
                Some(&format!("Sign-in with Microsoft failed: {e}.")),
            );
            r.headers_mut()
                .insert(header::SET_COOKIE, session::set_login_cookie(&headers, None));
            return r;
        }
    };
    let next = safe_next(Some(&next)).to_string();
    let caller = match api::caller_of(&c.api, &id.validator, &session.principal) {
        Ok(caller) => caller,
        Err(refused) => {
            let text = refused.to_string();
            let mut r = c.pages.sign_in(StatusCode::FORBIDDEN, &next, Some(&text));
            r.headers_mut()
                .insert(header::SET_COOKIE, session::set_login_cookie(&headers, None));
            return r;
        }
    };
    let cookie = match c.open_session(caller, "entra", &next).await {
        Ok(cookie) => cookie,
        Err(r) => return r,
    };
    // A page of ours moves on: the SameSite=Strict session cookie is not sent on a navigation
    // that a cross-site POST (Entra's) started, so a redirect here would land signed out.
    let mut r = c.pages.continue_to(&next);
    let h = r.headers_mut();
    h.append(header::SET_COOKIE, session::set_cookie(&headers, Some(&cookie)));
    h.append(header::SET_COOKIE, session::set_login_cookie(&headers, None));
    r
}

#[derive(Deserialize)]
struct CsrfOnly {
    csrf: Option<String>,
}

async fn sign_out(State(c): C, headers: HeaderMap, Form(f): Form<CsrfOnly>) -> Response {
    if form_session(&c, &headers, f.csrf.as_deref()).await.is_ok() {
        if let Some(cookie) = session::cookie(&headers) {
            if let Err(e) = c.api.store.remove_session(&session::key(cookie)).await {
                tracing::warn!(error = %e, "console sign-out: cannot remove the session row (it expires by itself)");
            }
        }
    }
    let mut r = Redirect::to("/console/sign-in?signed_out=1").into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, session::set_cookie(&headers, None));
    r
}

#[derive(Deserialize)]
struct OverviewQuery {
    /// The source a "Sync now" just woke.
    woke: Option<String>,
}

async fn overview(State(c): C, headers: HeaderMap, uri: axum::http::Uri, Query(q): Query<OverviewQuery>) -> Response {
    let s = match signed_in(&c, &headers, &uri).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let status = c.get(&s.caller, "/api/v1/sync/status").await;
    if !status.ok() {
        return c
            .pages
            .message(status.status, "Sync status unavailable", &status.detail(), Some(&s));
    }
    let decisions = c.get(&s.caller, "/api/v1/decisions").await;
    let chart = chart(&decisions.body["minutes"]);
    c.pages.render(
        "overview.html",
        &s,
        json!({
            "nav": "overview", "status": status.body, "decisions": decisions.body, "chart": chart,
            // Only a known source is named back.
            "woke": q.woke.filter(|w| matches!(w.as_str(), "entra" | "intune" | "jamf" | "all")),
        }),
    )
}

/// The last hour's decisions as bars (allowed below, refused on top), one per minute, in a
/// 600 × 120 box: geometry for the template's SVG.
fn chart(minutes: &Value) -> Value {
    const W: f64 = 600.0;
    const H: f64 = 120.0;
    let minutes = minutes.as_array().cloned().unwrap_or_default();
    let n = |m: &Value, k: &str| m[k].as_u64().unwrap_or(0);
    let peak = minutes
        .iter()
        .map(|m| n(m, "allow") + n(m, "report_only") + n(m, "deny"))
        .max()
        .unwrap_or(0);
    let slot = W / 60.0;
    let offset = 60usize.saturating_sub(minutes.len());
    let bars: Vec<Value> = minutes
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let allowed = n(m, "allow") + n(m, "report_only");
            let denied = n(m, "deny");
            let scale = |v: u64| {
                if peak == 0 {
                    0.0
                } else {
                    (v as f64) / (peak as f64) * (H - 4.0)
                }
            };
            let (ah, dh) = (scale(allowed), scale(denied));
            json!({
                "x": format!("{:.1}", (offset + i) as f64 * slot + 1.0),
                "w": format!("{:.1}", slot - 2.0),
                "allow_y": format!("{:.1}", H - ah), "allow_h": format!("{:.1}", ah),
                "deny_y": format!("{:.1}", H - ah - dh), "deny_h": format!("{:.1}", dh),
                "title": format!("{} allowed, {} refused", allowed, denied),
                "at": m["at"],
            })
        })
        .collect();
    let total = |k: &str| minutes.iter().map(|m| n(m, k)).sum::<u64>();
    json!({ "bars": bars, "peak": peak, "allowed": total("allow") + total("report_only"), "denied": total("deny") })
}

async fn settings(State(c): C, headers: HeaderMap, uri: axum::http::Uri) -> Response {
    let s = match signed_in(&c, &headers, &uri).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    // What the change just before did, shown once.
    if let Some(flash) = s.flash.clone() {
        c.set_flash(&headers, &s, None).await;
        let test = Some(flash["test"].clone()).filter(|t| !t.is_null());
        return settings_page(&c, &s, test, flash["notice"].as_str()).await;
    }
    settings_page(&c, &s, None, None).await
}

/// The read view, with what just happened (a save, Run Test or a notice) above it.
async fn settings_page(c: &Console, s: &Session, test: Option<Value>, notice: Option<&str>) -> Response {
    let current = c.get(&s.caller, "/api/v1/conditional-access").await;
    if !current.ok() {
        return c
            .pages
            .message(current.status, "Conditional Access", &current.detail(), Some(s));
    }
    let consent = c.get(&s.caller, "/api/v1/conditional-access/consent-url").await;
    c.pages.render(
        "settings.html",
        s,
        json!({
            "nav": "settings",
            "settings": current.body,
            "consent_url": consent.ok().then(|| consent.body["url"].clone()),
            "test": test,
            "notice": notice,
        }),
    )
}

async fn edit_settings(State(c): C, headers: HeaderMap, uri: axum::http::Uri) -> Response {
    let s = match signed_in(&c, &headers, &uri).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Some(r) = refuse_reader(&c, &s) {
        return r;
    }
    let current = c.get(&s.caller, "/api/v1/conditional-access").await;
    if !current.ok() {
        return c
            .pages
            .message(current.status, "Conditional Access", &current.detail(), Some(&s));
    }
    let etag = current
        .headers
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    c.pages.render(
        "settings_edit.html",
        &s,
        json!({
            "nav": "settings", "form": current.body, "etag": etag, "error": null, "conflict": null,
            "loaded": current.body["shared_attributes"]["attributes"],
        }),
    )
}

/// The Edit form as the browser sends it: checkboxes are absent when off.
#[derive(Deserialize)]
struct SettingsForm {
    csrf: Option<String>,
    etag: String,
    enabled: Option<String>,
    connection_type: String,
    national_cloud: String,
    tenant_id: String,
    application_id: String,
    #[serde(default)]
    client_secret: String,
    landing: String,
    #[serde(default)]
    landing_url: String,
    /// One attribute a line: `extensionAttribute10 = jamf:{managed}`.
    #[serde(default)]
    shared_attributes: String,
    /// The lines as the form showed them: unchanged, the attributes are left as they are (the
    /// configuration file's stay the file's).
    #[serde(default)]
    shared_attributes_loaded: String,
}

impl SettingsForm {
    /// The attribute lines as a map.
    fn attributes(&self) -> BTreeMap<String, String> {
        parse_attributes(&self.shared_attributes)
    }

    /// The API's body: an empty secret field keeps the stored secret.
    fn body(&self) -> Value {
        let landing = match self.landing.as_str() {
            "custom" => json!({ "kind": "custom", "url": self.landing_url.trim() }),
            other => json!({ "kind": other }),
        };
        let mut b = json!({
            "enabled": self.enabled.is_some(),
            "connection_type": self.connection_type,
            "national_cloud": self.national_cloud,
            "tenant_id": self.tenant_id.trim(),
            "application_id": self.application_id.trim(),
            "landing": landing,
        });
        let attributes = self.attributes();
        if attributes != parse_attributes(&self.shared_attributes_loaded) {
            b["shared_attributes"] = json!(attributes);
        }
        if !self.client_secret.is_empty() {
            b["client_secret"] = json!(self.client_secret);
        }
        b
    }

    /// What the form shows again after a failed save: never the secret typed.
    fn redisplay(&self, secret: &Value) -> Value {
        json!({
            "enabled": self.enabled.is_some(),
            "connection_type": self.connection_type,
            "national_cloud": self.national_cloud,
            "tenant_id": self.tenant_id,
            "application_id": self.application_id,
            "client_secret": secret,
            "landing": match self.landing.as_str() {
                "custom" => json!({ "kind": "custom", "url": self.landing_url }),
                other => json!({ "kind": other }),
            },
            "shared_attributes": { "attributes": self.attributes() },
        })
    }
}

async fn save_settings(State(c): C, headers: HeaderMap, Form(f): Form<SettingsForm>) -> Response {
    let s = match form_session(&c, &headers, f.csrf.as_deref()).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Some(r) = refuse_reader(&c, &s) {
        return r;
    }
    let saved = c
        .call(
            &s.caller,
            Method::PUT,
            "/api/v1/conditional-access",
            &[(header::IF_MATCH, f.etag.clone())],
            Some(f.body()),
        )
        .await;
    if saved.ok() {
        let test = saved.body["test"].clone();
        let notice = match test["ok"].as_bool() {
            None => "Saved. The sync does not run on this node, so Run Test did not run.",
            Some(true) => "Saved. Run Test passed with the new settings.",
            Some(false) => {
                "Saved, but Run Test failed with the new settings: the step below says why. Fix it and save again."
            }
        };
        return c
            .after_change(&headers, &s, (!test.is_null()).then_some(test), Some(notice))
            .await;
    }
    // The form again, with what went wrong; a stale save shows what someone else changed.
    let current = c.get(&s.caller, "/api/v1/conditional-access").await;
    let secret = current.body["client_secret"].clone();
    let (status, error, conflict, etag) = if saved.status == StatusCode::PRECONDITION_FAILED {
        let mut changed = Vec::new();
        let mine = f.redisplay(&secret);
        for field in [
            "enabled",
            "connection_type",
            "national_cloud",
            "tenant_id",
            "application_id",
            "landing",
        ] {
            if current.body[field] != mine[field] {
                changed.push(
                    json!({ "field": field, "theirs": shown(&current.body[field]), "yours": shown(&mine[field]) }),
                );
            }
        }
        let (theirs, yours) = (
            &current.body["shared_attributes"]["attributes"],
            &mine["shared_attributes"]["attributes"],
        );
        if theirs != yours {
            changed.push(json!({ "field": "shared_attributes", "theirs": shown(theirs), "yours": shown(yours) }));
        }
        let fresh = current
            .headers
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        (StatusCode::CONFLICT, None, Some(changed), fresh)
    } else {
        (saved.status, Some(saved.detail()), None, f.etag.clone())
    };
    let mut r = c.pages.render(
        "settings_edit.html",
        &s,
        json!({
            "nav": "settings", "form": f.redisplay(&secret), "etag": etag, "error": error, "conflict": conflict,
            // What is stored now: the next save sends the attributes only if they differ.
            "loaded": current.body["shared_attributes"]["attributes"],
        }),
    );
    *r.status_mut() = status;
    r
}

/// Attribute lines (`name = value`) as a map; a line without `=` is kept whole as a name, for
/// the API to refuse by name.
fn parse_attributes(lines: &str) -> BTreeMap<String, String> {
    lines
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.trim().to_string(), v.trim().to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect()
}

/// A setting's value as the stale-edit table shows it, in words.
fn shown(v: &Value) -> String {
    match v {
        Value::Bool(true) => "enabled".into(),
        Value::Bool(false) => "disabled".into(),
        Value::String(s) => s.replace('_', " "),
        Value::Object(o) => match o.get("kind").and_then(Value::as_str) {
            Some("registration") => "the device registration page".into(),
            Some("access_denied") => "the access denied page".into(),
            Some(_) => format!("the custom URL {}", o.get("url").and_then(Value::as_str).unwrap_or("")),
            None if o.is_empty() => "none".into(),
            None => o
                .iter()
                .map(|(k, v)| format!("{k} = {}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join("; "),
        },
        Value::Null | Value::Number(_) | Value::Array(_) => v.to_string(),
    }
}

async fn run_test(State(c): C, headers: HeaderMap, Form(f): Form<CsrfOnly>) -> Response {
    let s = match form_session(&c, &headers, f.csrf.as_deref()).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Some(r) = refuse_reader(&c, &s) {
        return r;
    }
    let report = c
        .call(&s.caller, Method::POST, "/api/v1/conditional-access/test", &[], None)
        .await;
    if !report.ok() {
        return c.pages.message(report.status, "Run Test", &report.detail(), Some(&s));
    }
    c.after_change(&headers, &s, Some(report.body), None).await
}

#[derive(Deserialize)]
struct SendUpdateForm {
    csrf: Option<String>,
    #[serde(default)]
    computer: String,
}

async fn send_update(State(c): C, headers: HeaderMap, Form(f): Form<SendUpdateForm>) -> Response {
    let s = match form_session(&c, &headers, f.csrf.as_deref()).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Some(r) = refuse_reader(&c, &s) {
        return r;
    }
    let body = match f.computer.trim() {
        "" => json!({}),
        id => json!({ "computer": id }),
    };
    let started = c
        .call(
            &s.caller,
            Method::POST,
            "/api/v1/conditional-access/send-update",
            &[],
            Some(body),
        )
        .await;
    match started.body["job"].as_str() {
        Some(id) if started.ok() => Redirect::to(&format!("/console/jobs/{}", encode(id))).into_response(),
        Some(_) | None => c
            .pages
            .message(started.status, "Send Update", &started.detail(), Some(&s)),
    }
}

#[derive(Deserialize)]
struct JobQuery {
    format: Option<String>,
}

async fn job(
    State(c): C,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Path(id): Path<String>,
    Query(q): Query<JobQuery>,
) -> Response {
    let s = match signed_in(&c, &headers, &uri).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let j = c.get(&s.caller, &format!("/api/v1/jobs/{}", encode(&id))).await;
    if q.format.as_deref() == Some("json") {
        // For the page's progress script: the same job, same-origin, with the session.
        return (j.status, axum::Json(j.body)).into_response();
    }
    if !j.ok() {
        return c.pages.message(j.status, "Job", &j.detail(), Some(&s));
    }
    c.pages
        .render("job.html", &s, json!({ "nav": "settings", "job": j.body }))
}

#[derive(Deserialize)]
struct ComputersQuery {
    filter: Option<String>,
    state: Option<String>,
    after: Option<String>,
}

async fn computers(State(c): C, headers: HeaderMap, uri: axum::http::Uri, Query(q): Query<ComputersQuery>) -> Response {
    let s = match signed_in(&c, &headers, &uri).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let query = {
        // (The serializer is not Send: finished before the call.)
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        query.append_pair("limit", "25");
        for (k, v) in [("filter", &q.filter), ("state", &q.state), ("after", &q.after)] {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                query.append_pair(k, v);
            }
        }
        query.finish()
    };
    let page = c.get(&s.caller, &format!("/api/v1/computers?{query}")).await;
    let error = (!page.ok()).then(|| page.detail());
    c.pages.render(
        "computers.html",
        &s,
        json!({
            "nav": "computers", "page": page.body, "error": error,
            "filter": q.filter, "state": q.state, "after": q.after,
        }),
    )
}

#[derive(Deserialize)]
struct TabQuery {
    tab: Option<String>,
}

async fn computer(
    State(c): C,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Path(id): Path<String>,
    Query(q): Query<TabQuery>,
) -> Response {
    let s = match signed_in(&c, &headers, &uri).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let one = c.get(&s.caller, &format!("/api/v1/computers/{}", encode(&id))).await;
    if !one.ok() {
        return c.pages.message(one.status, "Computer", &one.detail(), Some(&s));
    }
    let history = c
        .get(&s.caller, &format!("/api/v1/computers/{}/history", encode(&id)))
        .await;
    c.pages.render(
        "computer.html",
        &s,
        json!({
            "nav": "computers", "computer": one.body, "history": history.body["items"],
            "tab": if q.tab.as_deref() == Some("history") { "history" } else { "inventory" },
        }),
    )
}

#[derive(Deserialize)]
struct WhatIfQuery {
    url: Option<String>,
    user: Option<String>,
    device: Option<String>,
    device_source: Option<String>,
    browser: Option<String>,
}

async fn what_if(State(c): C, headers: HeaderMap, uri: axum::http::Uri, Query(q): Query<WhatIfQuery>) -> Response {
    let s = match signed_in(&c, &headers, &uri).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let given = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let asked = given(&q.url).is_some();
    let (answer, error) = if asked {
        let mut question = json!({ "url": given(&q.url), "browser": q.browser.is_some() });
        if let Some(u) = given(&q.user) {
            question["user"] = json!(u);
        }
        if let Some(d) = given(&q.device) {
            question["device_id"] = json!(d);
            question["device_source"] = json!(given(&q.device_source).unwrap_or_else(|| "token".into()));
        }
        let a = c
            .call(&s.caller, Method::POST, "/api/v1/explain", &[], Some(question))
            .await;
        if a.ok() {
            (Some(a.body), None)
        } else {
            (None, Some(a.detail()))
        }
    } else {
        (None, None)
    };
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default();
    c.pages.render(
        "what_if.html",
        &s,
        json!({
            "nav": "what_if",
            "q": { "url": q.url, "user": q.user, "device": q.device, "device_source": q.device_source.as_deref().unwrap_or("token"), "browser": q.browser.is_some() },
            "answer": answer,
            "response_json": answer.as_ref().map(|a| pretty(&a["response"])),
            "evidence_json": answer.as_ref().map(|a| pretty(&a["evidence"])),
            "error": error,
        }),
    )
}

#[derive(Deserialize)]
struct AuditQuery {
    before: Option<i64>,
}

/// "Sync now" for one source (or `all`): the API wakes the loop; back to the Overview, which
/// says so.
async fn sync_now(State(c): C, headers: HeaderMap, Path(source): Path<String>, Form(f): Form<CsrfOnly>) -> Response {
    let s = match form_session(&c, &headers, f.csrf.as_deref()).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Some(r) = refuse_reader(&c, &s) {
        return r;
    }
    let woke = c
        .call(
            &s.caller,
            Method::POST,
            &format!("/api/v1/sync/{}/run", encode(&source)),
            &[],
            None,
        )
        .await;
    if !woke.ok() {
        return c.pages.message(woke.status, "Sync now", &woke.detail(), Some(&s));
    }
    Redirect::to(&format!("/console/?woke={}", encode(&source))).into_response()
}

/// Reload: the node reads its configuration file again; the page shows what it did.
async fn reload(State(c): C, headers: HeaderMap, Form(f): Form<CsrfOnly>) -> Response {
    let s = match form_session(&c, &headers, f.csrf.as_deref()).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Some(r) = refuse_reader(&c, &s) {
        return r;
    }
    let done = c.call(&s.caller, Method::POST, "/api/v1/reload", &[], None).await;
    if !done.ok() {
        return c.pages.message(done.status, "Reload", &done.detail(), Some(&s));
    }
    c.pages
        .render("reloaded.html", &s, json!({ "nav": "overview", "r": done.body }))
}

/// One device's posture as the gateway would use it now, with every source's evidence.
async fn device(State(c): C, headers: HeaderMap, uri: axum::http::Uri, Path(id): Path<String>) -> Response {
    let s = match signed_in(&c, &headers, &uri).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let p = c
        .get(&s.caller, &format!("/api/v1/devices/{}/posture", encode(&id)))
        .await;
    if !p.ok() {
        return c.pages.message(p.status, "Device", &p.detail(), Some(&s));
    }
    c.pages
        .render("device.html", &s, json!({ "nav": "computers", "d": p.body }))
}

async fn audit(State(c): C, headers: HeaderMap, uri: axum::http::Uri, Query(q): Query<AuditQuery>) -> Response {
    let s = match signed_in(&c, &headers, &uri).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let path = match q.before {
        Some(b) => format!("/api/v1/audit?limit=25&before={b}"),
        None => "/api/v1/audit?limit=25".to_string(),
    };
    let page = c.get(&s.caller, &path).await;
    if !page.ok() {
        return c.pages.message(page.status, "Audit", &page.detail(), Some(&s));
    }
    c.pages
        .render("audit.html", &s, json!({ "nav": "audit", "page": page.body }))
}

/// A path segment, percent-encoded for the API's URL.
fn encode(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}
