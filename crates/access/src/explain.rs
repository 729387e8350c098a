//! "What If": the decision the gateway would make now for a URL (or route), a token or a user,
//! and a device — through the same code a request runs ([`Access::evaluate`] and
//! [`Access::answer`], the same [`RouteTable`] snapshot), without a request and without sending
//! anything upstream. The admin API's `POST /api/v1/explain` is its only caller.
//!
//! Uses the rest of this crate, `config` (typed values), `identity`, `device`, `policy` and
//! `landing`.

use std::sync::Arc;

use arc_swap::ArcSwap;
use serde_json::{json, Value};

use crate::routing::normalize_host;
use crate::{Access, PostureLookup, Problem, Route, RouteTable, Subject, Verdict};
use config::HostPattern;
use device::identify::CertIdentity;
use identity::{Principal, TokenVersion};
use landing::{Answer, Registration};
use policy::{Decision, Landing, Outcome, PostureState, Reason, Require};

/// Longest user id, device id or URL taken.
const MAX_FIELD: usize = 2048;

/// The question, as the API takes it (a JSON object; see [`Question::from_json`]). No `Debug`:
/// it may hold a token.
#[derive(Default)]
pub struct Question {
    /// The URL a client would ask for (`https://app.example.com/path`); or give `route`.
    pub url: Option<String>,
    /// A route by name, with `path` (default: the route's prefix); its host must be exact.
    pub route: Option<String>,
    pub path: Option<String>,
    /// An Entra access token, validated as a bearer token would be.
    pub token: Option<String>,
    /// Or a user (object id or UPN) without a token: groups come from Graph, as for overage.
    pub user: Option<String>,
    /// The device; with `device_source = token` (the default) it replaces the token's
    /// `deviceid` claim.
    pub device_id: Option<String>,
    /// How the device is identified: `token` (default), `certificate` or `session`.
    pub device_source: Option<String>,
    /// Answer as for a browser navigation (HTML pages and redirects) instead of an API client.
    pub browser: bool,
}

impl Question {
    /// Reads a question, naming the field of every mistake (serde's own messages would not for
    /// a wrong type) and never echoing a value, as a token may be in it.
    pub fn from_json(body: &[u8]) -> Result<Self, ExplainError> {
        let v: Value = serde_json::from_slice(body).map_err(|e| invalid("body", format!("not JSON ({e})")))?;
        let Value::Object(fields) = v else {
            return Err(invalid("body", "must be a JSON object"));
        };
        let mut q = Self::default();
        for (key, value) in fields {
            let slot = match key.as_str() {
                "url" => &mut q.url,
                "route" => &mut q.route,
                "path" => &mut q.path,
                "token" => &mut q.token,
                "user" => &mut q.user,
                "device_id" => &mut q.device_id,
                "device_source" => &mut q.device_source,
                "browser" => {
                    q.browser = match value {
                        Value::Bool(b) => b,
                        Value::Null => false,
                        Value::Number(_) | Value::String(_) | Value::Array(_) | Value::Object(_) => {
                            return Err(invalid(key, "must be true or false"))
                        }
                    };
                    continue;
                }
                _ => return Err(invalid(
                    key,
                    "is not a field of a question (url, route, path, token, user, device_id, device_source, browser)",
                )),
            };
            *slot = match value {
                Value::String(s) => Some(s),
                Value::Null => None,
                Value::Bool(_) | Value::Number(_) | Value::Array(_) | Value::Object(_) => {
                    return Err(invalid(key, "must be a string"))
                }
            };
        }
        Ok(q)
    }
}

/// A question that cannot be answered as asked.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ExplainError {
    ExplainError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// What a question is about: the route (if any matches), the URL, and the path routing saw.
type Target<U> = (Option<Arc<Route<U>>>, String, String);

/// Answers "What If" questions; the admin API holds one without knowing the data plane.
#[async_trait::async_trait]
pub trait Explain: Send + Sync {
    async fn explain(&self, q: &Question) -> Result<Value, ExplainError>;
}

/// Answers questions against the live routing table and access components. `U` is the data
/// plane's upstream type, never looked at here.
pub struct Explainer<U> {
    pub routes: Arc<ArcSwap<RouteTable<U>>>,
    pub access: Arc<Access>,
}

#[async_trait::async_trait]
impl<U: Send + Sync> Explain for Explainer<U> {
    async fn explain(&self, q: &Question) -> Result<Value, ExplainError> {
        self.answer(q).await
    }
}

impl<U: Send + Sync> Explainer<U> {
    pub async fn answer(&self, q: &Question) -> Result<Value, ExplainError> {
        let subject = Who::of(q)?;
        let device = DeviceGiven::of(q)?;
        if matches!(device, DeviceGiven::Session(_)) && q.token.is_some() {
            // A request carries a bearer token or a session, never both.
            return Err(invalid("device_source", "session goes with user, not with token"));
        }
        let (route, url, path) = self.target(q)?;
        if !crate::routing::path_is_safe(&path) {
            // The proxy refuses these before routing.
            let base = json!({ "url": url, "route": null });
            return Ok(finish(
                base,
                "deny",
                "bad_path",
                None,
                json!({ "status": 400 }),
                Value::Null,
            ));
        }
        let base = json!({ "url": url, "route": route.as_ref().map(|r| r.name.as_str()) });
        if path.starts_with("/.portcullis/") {
            // The proxy answers these itself (sign-in callback, sign-out, continue, keys).
            return Ok(finish(
                base,
                "gateway",
                "gateway_endpoint",
                None,
                json!({ "answered_by_gateway": true }),
                Value::Null,
            ));
        }
        let Some(route) = route else {
            return Ok(finish(
                base,
                "deny",
                "no_route",
                None,
                json!({ "status": 404 }),
                Value::Null,
            ));
        };
        let policy = policy_view(&route);
        if route.policy.require == Require::Nothing {
            return Ok(finish(
                base,
                "allow",
                "open_route",
                None,
                json!({ "forwarded_upstream": true }),
                json!({ "policy": policy }),
            ));
        }
        let Some(id) = self.access.identity() else {
            // Configuration refuses protected routes without [entra]; the proxy answers 500.
            return Ok(finish(
                base,
                "deny",
                Reason::Unauthenticated.as_str(),
                None,
                json!({ "status": 500, "body": { "reason": "internal_error" } }),
                json!({ "policy": policy }),
            ));
        };
        let id: &identity::Identity = &id;
        let (principal, credential) = match subject {
            Who::Token(t) => match crate::auth::bearer_principal(id, t).await {
                Ok(p) => (p, "bearer"),
                Err(e) => {
                    let evidence =
                        json!({ "policy": policy, "credential": { "kind": "bearer", "error": e.to_string() } });
                    let problem = crate::refused_token(&e);
                    let response = problem_view(&problem, q.browser, crate::auth::www_authenticate(true).1);
                    return Ok(finish(
                        base,
                        "deny",
                        e.reason(),
                        Some(Landing::SignIn),
                        response,
                        evidence,
                    ));
                }
            },
            Who::User(u) => (Arc::new(synthetic(u, id.validator.tenants())), "user"),
            Who::Nobody => {
                let response = if q.browser {
                    json!({ "status": 302, "redirect": "sign-in with Entra ID" })
                } else {
                    problem_view(
                        &crate::auth::unauthenticated(),
                        false,
                        crate::auth::www_authenticate(false).1,
                    )
                };
                let evidence = json!({ "policy": policy, "credential": null });
                return Ok(finish(
                    base,
                    "deny",
                    Reason::Unauthenticated.as_str(),
                    Some(Landing::SignIn),
                    response,
                    evidence,
                ));
            }
        };
        let mut subject = Subject {
            principal: principal.clone(),
            token_device: if credential == "bearer" {
                principal.device_id.clone()
            } else {
                None
            },
            session_device: None,
            cert: None,
        };
        device.apply(&mut subject);
        let mut v = Verdict::default();
        let decision = self
            .access
            .evaluate(id, &subject, &route.policy, &route.groups_any, &mut v)
            .await;
        let response = match decision {
            Decision {
                outcome: Outcome::Deny(landing),
                reason,
                ..
            } => {
                let answer = self
                    .access
                    .answer(&mut v, &principal, landing, reason, &url, q.browser)
                    .await;
                answer_view(answer)
            }
            Decision {
                outcome: Outcome::Allow,
                ..
            } => {
                let mut headers: serde_json::Map<String, Value> = crate::identity_values(Some(&principal), &v)
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), Value::from(v.into_owned())))
                    .collect();
                if route.assertion {
                    headers.insert(
                        "x-portcullis-assertion".into(),
                        "(an ES256 assertion signed per request)".into(),
                    );
                }
                match crate::grace::deadline(&v).filter(|_| route.grace_notice && q.browser) {
                    // The first navigation of a browser session gets the notice; the next ones
                    // go through with these headers.
                    Some(until) => json!({
                        "forwarded_upstream": false,
                        "grace_notice": { "status": 200, "until": base::time::rfc3339(i64::try_from(until).unwrap_or(i64::MAX)) },
                        "identity_headers": headers,
                    }),
                    None => json!({ "forwarded_upstream": true, "identity_headers": headers }),
                }
            }
        };
        let landing = match decision.outcome {
            Outcome::Deny(l) => Some(l),
            Outcome::Allow => None,
        };
        let evidence = json!({
            "policy": policy,
            "credential": {
                "kind": credential,
                "object_id": principal.object_id,
                "username": principal.username,
                "tenant": principal.tenant,
                "expires_at": (credential == "bearer").then_some(principal.expires_at),
                "groups_in_token": principal.groups.len(),
                "groups_overage": principal.groups_overage,
                "device_claim": (credential == "bearer").then(|| principal.device_id.clone()).flatten(),
            },
            "groups": v.groups.map(|g| g.as_str()),
            "device": v.device.as_ref().map(|(d, s)| json!({ "id": d, "source": s.as_str() })),
            "posture_lookup": v.lookup.map(PostureLookup::as_str),
            "posture": v.posture.as_deref().map(|p| posture_view(p, v.now)),
            "registration": v.registration.as_ref().map(|r| match r {
                Registration::Enroll => json!({ "step": "enroll" }),
                Registration::Register { computer } => json!({ "step": "register", "computer": computer }),
            }),
            "would_deny": decision.would_deny.map(Landing::as_str),
            "decided_at": v.now,
        });
        Ok(finish(
            base,
            match decision.outcome {
                Outcome::Allow => "allow",
                Outcome::Deny(_) => "deny",
            },
            decision.reason.as_str(),
            landing,
            response,
            evidence,
        ))
    }

    /// The route, the URL it is explained for, and the path routing saw. The path is taken as
    /// sent, not normalised (`..`, `%2e`), exactly as the proxy routes it.
    fn target(&self, q: &Question) -> Result<Target<U>, ExplainError> {
        let table = self.routes.load();
        match (&q.url, &q.route) {
            (Some(_), Some(_)) => Err(invalid("route", "give url or route, not both")),
            (None, None) => Err(invalid("url", "required (or give route)")),
            (Some(_), None) if q.path.is_some() => Err(invalid("path", "goes with route, not url")),
            (Some(raw), None) => {
                if raw.len() > MAX_FIELD {
                    return Err(invalid("url", "too long"));
                }
                if raw.contains('#') {
                    return Err(invalid("url", "a fragment never reaches the gateway; leave it out"));
                }
                let u: http::Uri = raw
                    .parse()
                    .map_err(|e| invalid("url", format!("not an absolute URL: {e}")))?;
                if !matches!(u.scheme_str(), Some("https" | "http")) {
                    return Err(invalid("url", "must start with http:// or https://"));
                }
                let host = u
                    .authority()
                    .and_then(|a| normalize_host(a.as_str()))
                    .ok_or_else(|| invalid("url", "has no usable host"))?;
                let route = table.router.find(&host, u.path()).cloned();
                Ok((route, raw.clone(), u.path().to_string()))
            }
            (None, Some(name)) => {
                let route = table
                    .router
                    .all()
                    .find(|r| r.name == *name)
                    .cloned()
                    .ok_or_else(|| invalid("route", format!("no route is named {name:?}")))?;
                let HostPattern::Exact(host) = &route.host else {
                    return Err(invalid(
                        "route",
                        format!("route {name:?} answers for more than one host; give url instead"),
                    ));
                };
                let path_and_query = q.path.as_deref().unwrap_or(&route.path_prefix);
                if !path_and_query.starts_with('/') || path_and_query.len() > MAX_FIELD || path_and_query.contains('#')
                {
                    return Err(invalid("path", "must start with / (no fragment, shorter than 2 KiB)"));
                }
                let path = path_and_query.split('?').next().unwrap_or(path_and_query);
                let url = format!("https://{host}{path_and_query}");
                // The path may lead to a longer prefix of another route of the same host.
                let route = table.router.find(host, path).cloned();
                Ok((route, url, path.to_string()))
            }
        }
    }
}

enum Who<'a> {
    Token(&'a str),
    User(&'a str),
    Nobody,
}

impl<'a> Who<'a> {
    fn of(q: &'a Question) -> Result<Self, ExplainError> {
        match (&q.token, &q.user) {
            (Some(_), Some(_)) => Err(invalid("user", "give token or user, not both")),
            (Some(t), None) => Ok(Self::Token(t.trim())),
            (None, Some(u)) => {
                let u = u.trim();
                // Object ids are GUIDs; UPNs are name@domain of a restricted alphabet.
                let allowed = |c: char| c.is_ascii_alphanumeric() || "-._@'+".contains(c);
                let starts_well = u.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
                if !starts_well || u.len() > 256 || !u.chars().all(allowed) || u.matches('@').count() > 1 {
                    return Err(invalid("user", "an object id or a user principal name"));
                }
                Ok(Self::User(u))
            }
            (None, None) => Ok(Self::Nobody),
        }
    }
}

enum DeviceGiven {
    None,
    Token(String),
    Certificate(String),
    Session(String),
}

impl DeviceGiven {
    fn of(q: &Question) -> Result<Self, ExplainError> {
        let source = q.device_source.as_deref().unwrap_or("token");
        let Some(id) = q.device_id.as_deref().map(str::trim) else {
            return match source {
                "token" | "certificate" | "session" => Ok(Self::None),
                _ => Err(invalid("device_source", "token, certificate or session")),
            };
        };
        if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            return Err(invalid("device_id", "an Entra device id (a GUID)"));
        }
        let id = id.to_ascii_lowercase();
        match source {
            "token" => Ok(Self::Token(id)),
            "certificate" => Ok(Self::Certificate(id)),
            "session" => Ok(Self::Session(id)),
            _ => Err(invalid("device_source", "token, certificate or session")),
        }
    }

    fn apply(self, s: &mut Subject) {
        match self {
            Self::None => {}
            Self::Token(d) => s.token_device = Some(Arc::from(d)),
            Self::Session(d) => s.session_device = Some(Arc::from(d)),
            Self::Certificate(d) => {
                s.cert = Some(CertIdentity {
                    device_id: Some(d),
                    common_name: None,
                    serial: String::new(),
                })
            }
        }
    }
}

/// A user named without a token: no groups in hand, so they are resolved through Graph as for
/// a token with group overage.
fn synthetic(user: &str, tenants: &[String]) -> Principal {
    Principal {
        tenant: Arc::from(tenants.first().map_or("", String::as_str)),
        object_id: Arc::from(user),
        username: user.contains('@').then(|| Arc::from(user)),
        name: None,
        groups: Arc::from(Vec::new()),
        groups_overage: true,
        roles: Arc::from(Vec::new()),
        device_id: None,
        version: TokenVersion::V2,
        expires_at: 0,
        delegated: true,
    }
}

fn finish(
    mut base: Value,
    outcome: &str,
    reason: &str,
    landing: Option<Landing>,
    response: Value,
    evidence: Value,
) -> Value {
    if let Value::Object(m) = &mut base {
        m.insert("outcome".into(), outcome.into());
        m.insert("reason".into(), reason.into());
        m.insert("landing".into(), landing.map(Landing::as_str).into());
        m.insert("response".into(), response);
        m.insert("evidence".into(), evidence);
    }
    base
}

fn policy_view<U>(r: &Route<U>) -> Value {
    json!({
        "require": r.policy.require.as_str(),
        "allow_grace_period": r.policy.allow_grace_period,
        "max_posture_age": r.policy.max_posture_age,
        "on_stale": r.policy.on_stale.as_str(),
        "mode": r.policy.mode.as_str(),
        "groups_any": r.groups_any.iter().map(|g| &**g).collect::<Vec<_>>(),
    })
}

fn posture_view(p: &policy::Posture, now: u64) -> Value {
    let reasons = match &p.state {
        PostureState::NonCompliant { reasons } => reasons.clone(),
        PostureState::Unsupported { reason } => vec![reason.clone()],
        PostureState::InGrace { until } => vec![format!("in grace until {until}")],
        PostureState::Compliant
        | PostureState::NotRegistered { .. }
        | PostureState::Disabled
        | PostureState::Unknown => Vec::new(),
    };
    json!({
        "state": p.state.as_str(),
        "source": p.source.as_str(),
        "as_of": p.as_of,
        "age_seconds": now.saturating_sub(p.as_of),
        "computer_name": p.computer_name,
        "reasons": reasons,
    })
}

/// A problem the proxy writes itself, as the client would get it.
fn problem_view(p: &Problem, browser: bool, www_authenticate: String) -> Value {
    if browser {
        return json!({ "status": p.status, "content_type": "text/html", "www_authenticate": www_authenticate });
    }
    let body: Value = serde_json::from_str(&p.json()).unwrap_or(Value::Null);
    json!({
        "status": p.status, "content_type": "application/problem+json", "body": body,
        "www_authenticate": www_authenticate,
    })
}

fn answer_view(a: Answer) -> Value {
    match a {
        Answer::Redirect { location } => json!({ "status": 302, "location": location }),
        Answer::Page { status, .. } => json!({ "status": status, "content_type": "text/html" }),
        Answer::Problem { status, json } => {
            let body: Value = serde_json::from_str(&json).unwrap_or(Value::Null);
            json!({ "status": status, "content_type": "application/problem+json", "body": body })
        }
    }
}
