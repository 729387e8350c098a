//! The admin console: server-rendered pages under `/console/` on the admin listener — the
//! Conditional Access settings (Jamf Pro's "macOS Intune Integration" page: read, Edit, Save
//! with Run Test, Run Test, Send Update and its job), computers with their Conditional Access
//! inventory state and history, the sync's health, What If and the audit trail.
//!
//! It has no logic of its own over the data: every page is an in-process call of the admin
//! API's router ([`Console::call`]) as the session's caller (a request extension, see
//! [`crate::api::Credential`]), so validation, roles, audit and errors are the API's. What it
//! adds is the browser's side: sessions ([`session`]) and signing in ([`auth`]), CSRF tokens,
//! forms, templates ([`pages`]) and embedded assets ([`assets`]). The Conditional Access pages
//! are in [`conditional_access`]; the read-only pages and the Overview's actions here.
//!
//! May depend on `crate::api` and `crate::body`, `store` (session rows), `base`; nothing else.

mod assets;
mod auth;
mod conditional_access;
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
use crate::path_segment;
use session::Session;

/// What the console works with.
pub struct Console {
    /// The admin API's routes, called in-process.
    api_router: Router,
    api: api::Api,
    pages: pages::Pages,
    /// Sign-in with Entra (the gateway's app and its app roles), when `[entra]` is set.
    identity: Option<Arc<identity::CurrentIdentity>>,
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
    pub fn new(api_router: Router, api: api::Api) -> Self {
        let identity = api.auth.identity.clone();
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
        conditional_access::settings_page(self, s, test, notice).await
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
        .route("/console/sign-in", get(auth::sign_in_page).post(auth::sign_in))
        .route("/console/sign-in/entra", get(auth::sign_in_entra))
        .route("/console/callback", post(auth::callback))
        .route("/console/sign-out", post(auth::sign_out))
        .route(
            "/console/conditional-access",
            get(conditional_access::settings).post(conditional_access::save_settings),
        )
        .route(
            "/console/conditional-access/edit",
            get(conditional_access::edit_settings),
        )
        .route("/console/conditional-access/test", post(conditional_access::run_test))
        .route(
            "/console/conditional-access/send-update",
            post(conditional_access::send_update),
        )
        .route("/console/jobs/{id}", get(conditional_access::job))
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
/// [`form_session`] for a form that changes something: a read-only user is refused.
async fn admin_form(c: &Console, headers: &HeaderMap, csrf: Option<&str>) -> Result<Session, Response> {
    let s = form_session(c, headers, csrf).await?;
    match refuse_reader(c, &s) {
        Some(refused) => Err(refused),
        None => Ok(s),
    }
}

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
struct CsrfOnly {
    csrf: Option<String>,
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
    let one = c
        .get(&s.caller, &format!("/api/v1/computers/{}", path_segment(&id)))
        .await;
    if !one.ok() {
        return c.pages.message(one.status, "Computer", &one.detail(), Some(&s));
    }
    let history = c
        .get(&s.caller, &format!("/api/v1/computers/{}/history", path_segment(&id)))
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

/// "Sync now" for one source (or `all`): the API wakes the loop; back to the Overview, which
/// says so.
async fn sync_now(State(c): C, headers: HeaderMap, Path(source): Path<String>, Form(f): Form<CsrfOnly>) -> Response {
    let s = match admin_form(&c, &headers, f.csrf.as_deref()).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let woke = c
        .call(
            &s.caller,
            Method::POST,
            &format!("/api/v1/sync/{}/run", path_segment(&source)),
            &[],
            None,
        )
        .await;
    if !woke.ok() {
        return c.pages.message(woke.status, "Sync now", &woke.detail(), Some(&s));
    }
    Redirect::to(&format!("/console/?woke={}", path_segment(&source))).into_response()
}

/// Reload: the node reads its configuration file again; the page shows what it did.
async fn reload(State(c): C, headers: HeaderMap, Form(f): Form<CsrfOnly>) -> Response {
    let s = match admin_form(&c, &headers, f.csrf.as_deref()).await {
        Ok(s) => s,
        Err(r) => return r,
    };
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
        .get(&s.caller, &format!("/api/v1/devices/{}/posture", path_segment(&id)))
        .await;
    if !p.ok() {
        return c.pages.message(p.status, "Device", &p.detail(), Some(&s));
    }
    c.pages
        .render("device.html", &s, json!({ "nav": "computers", "d": p.body }))
}

#[derive(Deserialize)]
struct AuditQuery {
    before: Option<i64>,
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
