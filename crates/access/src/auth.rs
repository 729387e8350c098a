//! The request path's side of identity: finding the credential (bearer token, else session
//! cookie), checking it, renewing sessions, starting and finishing browser sign-in, sign-out,
//! and the group check. Responses are written by the gateway from the outcomes here.

use std::sync::Arc;

use base::cookie::find_cookie;
use base::seal::random_token;
use base::time::unix_now;
use http::HeaderMap;
use identity::oidc::{safe_return_path, SignInError, CALLBACK_PATH, SIGNED_OUT_PATH, SIGN_OUT_PATH};
use identity::{Identity, Principal, TokenError};

use crate::{Problem, Reply, RequestInfo};

const SESSION_PURPOSE: &str = "portcullis-session";
/// Renew a session this long before its ID token expires.
const RENEW_BEFORE_SECS: u64 = 120;
/// Largest callback body read (Entra posts a code and a state); the data plane refuses a
/// larger one with 413 before calling [`callback`].
pub const MAX_CALLBACK_BODY: usize = 16 * 1024;

/// How the user proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthSource {
    Bearer,
    Session,
}

impl AuthSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bearer => "bearer",
            Self::Session => "session",
        }
    }
}

/// The result of looking at a request's credentials.
pub enum AuthOutcome {
    /// The user, how they proved it, and the browser session's id when it was a session (an
    /// open WebSocket ends with it).
    User(Arc<Principal>, AuthSource, Option<String>),
    /// No credential at all (or an expired/unknown session).
    Missing,
    /// A bearer token that failed validation.
    Invalid(TokenError),
    /// A session cookie, but the sessions cannot be read right now (the store is away).
    SessionsUnavailable,
}

/// The bearer token of an `Authorization: Bearer …` header. Tokens in query strings are never
/// looked at.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    // UTF-8 validation is word-at-a-time where `to_str`'s visible-ASCII check goes byte by
    // byte over a kilobyte of token; the token's own parser refuses anything but base64url.
    let v = std::str::from_utf8(headers.get(http::header::AUTHORIZATION)?.as_bytes()).ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn cookies(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(http::header::COOKIE)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
}

/// A bearer token's user: a valid token that is a user's delegated access token.
pub async fn bearer_principal(id: &Identity, token: &str) -> Result<Arc<Principal>, TokenError> {
    let p = id.validator.validate(token).await?;
    if !p.delegated {
        return Err(TokenError::NotDelegated);
    }
    Ok(p)
}

pub async fn authenticate(id: &Identity, headers: &HeaderMap) -> AuthOutcome {
    if let Some(token) = bearer(headers) {
        return match bearer_principal(id, token).await {
            Ok(p) => AuthOutcome::User(p, AuthSource::Bearer, None),
            Err(e) => AuthOutcome::Invalid(e),
        };
    }
    let Some(sid) = find_cookie(cookies(headers), &id.cookie_name)
        .and_then(|c| id.sealer.open(SESSION_PURPOSE, c))
        .and_then(|b| String::from_utf8(b).ok())
    else {
        return AuthOutcome::Missing;
    };
    let session = match id.sessions.get(&sid).await {
        Ok(Some(s)) => s,
        Ok(None) => return AuthOutcome::Missing,
        Err(identity::session::SessionsUnavailable) => return AuthOutcome::SessionsUnavailable,
    };
    let now = unix_now();
    if now.saturating_sub(session.signed_in_at) > id.session_lifetime.as_secs() {
        id.sessions.remove(&sid).await;
        return AuthOutcome::Missing;
    }
    if session.principal.expires_at > now + RENEW_BEFORE_SECS {
        // The common case: the id moves out, no copy.
        return AuthOutcome::User(session.principal, AuthSource::Session, Some(sid));
    }
    let Some(claim) = id.sessions.claim_renewal(&sid).await else {
        // Another request renews it (on this node or another): a rotated refresh token must be
        // used once. The current tokens are still good, unless they already expired; then wait
        // a moment for the renewed ones.
        if session.principal.expires_at > now {
            return AuthOutcome::User(session.principal, AuthSource::Session, Some(sid));
        }
        for _ in 0..20 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            if let Ok(Some(s)) = id.sessions.reload(&sid).await {
                if s.principal.expires_at > unix_now() {
                    return AuthOutcome::User(s.principal, AuthSource::Session, Some(sid.clone()));
                }
            }
        }
        return AuthOutcome::SessionsUnavailable;
    };
    let outcome = renew(id, &sid, session, now).await;
    id.sessions.release_renewal(&sid, claim).await;
    outcome
}

/// Renews a due session under a won claim. The stored session is read again first: another
/// request may have renewed it just before this claim (then its refresh token is spent, and
/// the renewed session is the one to use).
async fn renew(id: &Identity, sid: &str, cached: identity::session::Session, now: u64) -> AuthOutcome {
    let session = match id.sessions.reload(sid).await {
        Ok(Some(s)) if s.principal.expires_at > now + RENEW_BEFORE_SECS => {
            return AuthOutcome::User(s.principal, AuthSource::Session, Some(sid.to_string()));
        }
        Ok(Some(s)) => s,
        Ok(None) => return AuthOutcome::Missing,
        Err(identity::session::SessionsUnavailable) => cached,
    };
    match id.oidc.refresh(&session).await {
        Ok(renewed) => {
            let p = renewed.principal.clone();
            match id.sessions.put(sid, renewed).await {
                Ok(()) => AuthOutcome::User(p, AuthSource::Session, Some(sid.to_string())),
                // The renewed tokens could not be kept; the old refresh token may be spent.
                Err(identity::session::SessionsUnavailable) => AuthOutcome::SessionsUnavailable,
            }
        }
        Err(e) => {
            tracing::info!(user = %session.principal.object_id, error = %e, "session renewal failed; signing in again");
            id.sessions.remove(sid).await;
            AuthOutcome::Missing
        }
    }
}

/// `scheme://host` of the request as the client sees it.
fn origin(req: &RequestInfo<'_>) -> Option<String> {
    let host = req.host()?;
    crate::routing::normalize_host(host)?;
    Some(format!("{}://{host}", req.scheme()))
}

fn login_cookie(id: &Identity, value: &str, max_age: u64) -> String {
    // SameSite=None: Entra's form_post back to us is a cross-site POST.
    format!(
        "{}={value}; Path=/; Max-Age={max_age}; HttpOnly; Secure; SameSite=None",
        id.login_cookie_name
    )
}

fn session_cookie(id: &Identity, value: &str, max_age: u64) -> String {
    format!(
        "{}={value}; Path=/; Max-Age={max_age}; HttpOnly; Secure; SameSite=Lax",
        id.cookie_name
    )
}

/// Sends a browser to sign in; it comes back to the current URL.
pub fn start_sign_in(id: &Identity, req: &RequestInfo<'_>) -> Reply {
    let here = req.parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let return_to = safe_return_path(here).unwrap_or("/").to_string();
    let Some(origin) = origin(req) else {
        return Reply::problem(Problem::new(
            400,
            "bad_request",
            "Bad Request",
            "The request has no usable Host.",
        ));
    };
    match id
        .oidc
        .start(&id.sealer, &format!("{origin}{CALLBACK_PATH}"), &return_to)
    {
        Ok(start) => Reply::Redirect {
            status: 302,
            location: start.authorize_url,
            headers: vec![(
                "set-cookie",
                login_cookie(id, &start.login_cookie, identity::oidc::LOGIN_TTL.as_secs()),
            )],
        },
        Err(e) => {
            tracing::error!(error = %e, "cannot start a sign-in");
            internal("Sign-in could not be started.")
        }
    }
}

fn internal(detail: &'static str) -> Reply {
    Reply::Problem {
        problem: Problem::new(500, "internal_error", "Internal Server Error", detail),
        close: true,
        headers: Vec::new(),
    }
}

/// `/.portcullis/callback`: finishes a sign-in and sends the browser back where it started.
/// `body` is the form Entra posted (empty for a GET), at most [`MAX_CALLBACK_BODY`] bytes.
pub async fn callback(id: &Identity, parts: &http::request::Parts, body: &[u8]) -> Reply {
    let mut params: Vec<(String, String)> = parts
        .uri
        .query()
        .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    if parts.method == http::Method::POST {
        params.extend(url::form_urlencoded::parse(body).into_owned());
    }
    let login = find_cookie(cookies(&parts.headers), &id.login_cookie_name).map(str::to_owned);
    let clear_login = login_cookie(id, "", 0);
    let result = id.oidc.finish(&id.sealer, login.as_deref(), &params).await;
    let (session, return_to) = match result {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "sign-in failed");
            let status = match e {
                SignInError::Unreachable(_) => 502,
                SignInError::NoSecret | SignInError::Credential(_) | SignInError::Random => 500,
                SignInError::NoLoginState
                | SignInError::StateMismatch
                | SignInError::Provider(_)
                | SignInError::NoCode
                | SignInError::Redeem(_)
                | SignInError::IdToken(_) => 400,
            };
            return Reply::Problem {
                problem: Problem {
                    status,
                    reason: "sign_in_failed",
                    title: "Sign-in failed",
                    detail: e.to_string().into(),
                },
                close: false,
                headers: vec![("set-cookie", clear_login)],
            };
        }
    };
    // A failed random source is an error, never a guessable session id.
    let sid = match random_token(32) {
        Ok(sid) => sid,
        Err(e) => {
            tracing::error!(error = %e, "no session id: the random source failed");
            return internal("The session could not be created.");
        }
    };
    let sealed = match id.sealer.seal(SESSION_PURPOSE, sid.as_bytes()) {
        Ok(sealed) => sealed,
        Err(e) => {
            tracing::error!(error = %e, "cannot seal the session cookie");
            return internal("The session could not be created.");
        }
    };
    let user = session.principal.object_id.clone();
    if id.sessions.put(&sid, session).await.is_err() {
        // A cookie for a session that was never stored would start a sign-in loop.
        return sessions_unavailable();
    }
    tracing::info!(%user, "signed in");
    Reply::Redirect {
        status: 303,
        location: return_to,
        headers: vec![
            ("set-cookie", session_cookie(id, &sealed, id.session_lifetime.as_secs())),
            ("set-cookie", clear_login),
        ],
    }
}

/// `/.portcullis/sign_out`: ends the session.
/// `/.portcullis/sign_out`. A GET (a link, a typed address) only shows a page with a Sign out
/// button: another site must not be able to sign users out with a link or an image. The POST
/// that button sends ends the gateway's session, clears its cookie and goes on to Entra's
/// end-session endpoint, which ends the Entra session too and comes back to
/// `/.portcullis/signed_out`. A POST from another site (by `Sec-Fetch-Site`, else `Origin`) is
/// refused.
pub async fn sign_out(id: &Identity, req: &RequestInfo<'_>) -> Reply {
    let parts = req.parts;
    let method = &parts.method;
    if method == http::Method::GET || method == http::Method::HEAD {
        if !req.navigation {
            return method_not_allowed();
        }
        let body = format!(
            "<p>Sign out of the applications behind this gateway, and of your Microsoft account in this browser?</p>\
             <form method=\"post\" action=\"{SIGN_OUT_PATH}\"><button type=\"submit\">Sign out</button></form>"
        );
        return page(200, "Sign out", &body);
    }
    if method != http::Method::POST {
        return method_not_allowed();
    }
    let Some(origin) = origin(req) else {
        return Reply::problem(Problem::new(
            400,
            "bad_request",
            "Bad Request",
            "The request has no usable Host.",
        ));
    };
    if !same_origin(&parts.headers, &origin) {
        return Reply::problem(Problem::new(
            403,
            "cross_site_request",
            "Forbidden",
            "Sign-out is only accepted from this site's own Sign out button.",
        ));
    }
    if let Some(sid) = find_cookie(cookies(&parts.headers), &id.cookie_name)
        .and_then(|c| id.sealer.open(SESSION_PURPOSE, c))
        .and_then(|b| String::from_utf8(b).ok())
    {
        id.sessions.remove(&sid).await;
    }
    Reply::Redirect {
        // 303: the browser follows with a GET.
        status: 303,
        location: id.oidc.logout_url(&format!("{origin}{SIGNED_OUT_PATH}")),
        headers: vec![("set-cookie", session_cookie(id, "", 0))],
    }
}

/// `/.portcullis/signed_out`: where Entra sends the browser back after sign-out.
pub fn signed_out() -> Reply {
    page(
        200,
        "You are signed out",
        "<p>You are signed out of the applications behind this gateway.</p><p><a class=\"action\" href=\"/\">Sign in again</a></p>",
    )
}

fn page(status: u16, title: &str, body: &str) -> Reply {
    Reply::Body {
        status,
        content_type: "text/html; charset=utf-8",
        body: base::html::page(title, body),
    }
}

fn method_not_allowed() -> Reply {
    Reply::Problem {
        problem: Problem::new(
            405,
            "method_not_allowed",
            "Method Not Allowed",
            "Sign out with a POST (the Sign out page's button sends one).",
        ),
        close: false,
        headers: vec![("allow", "POST".to_string())],
    }
}

/// The request comes from this site: `Sec-Fetch-Site: same-origin` where the browser sends it,
/// else an `Origin` equal to ours (or none: not a browser's cross-site form).
fn same_origin(h: &HeaderMap, origin: &str) -> bool {
    if let Some(site) = h.get("sec-fetch-site") {
        return site.as_bytes() == b"same-origin";
    }
    h.get(http::header::ORIGIN)
        .is_none_or(|o| o.as_bytes() == origin.as_bytes())
}

/// The answer when sign-in needs the store and the store is away: a clear page (problem+json
/// for API clients) with a retry hint, never a redirect that would loop.
pub fn sessions_unavailable() -> Reply {
    Reply::Problem {
        problem: Problem::new(
            503,
            "sign_in_unavailable",
            "Sign-in is unavailable for a moment",
            "Your session cannot be checked right now. Try again in a few seconds.",
        ),
        close: false,
        headers: vec![("retry-after", "5".to_string())],
    }
}

/// Why a user may not use a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupCheck {
    Allow,
    Deny,
    /// Overage and Graph could not tell.
    Unresolved,
}

pub async fn check_groups(id: &Identity, p: &Principal, any_of: &[Arc<str>]) -> GroupCheck {
    if any_of.is_empty() {
        return GroupCheck::Allow;
    }
    let resolved;
    let groups: &[Arc<str>] = if p.groups_overage {
        match id.groups.groups(&p.object_id).await {
            Ok(g) => {
                resolved = g;
                &resolved
            }
            Err(e) => {
                tracing::warn!(user = %p.object_id, error = %e, "group overage could not be resolved");
                return GroupCheck::Unresolved;
            }
        }
    } else {
        &p.groups
    };
    if groups.iter().any(|g| any_of.iter().any(|a| a.eq_ignore_ascii_case(g))) {
        GroupCheck::Allow
    } else {
        GroupCheck::Deny
    }
}

/// Problem bodies for authentication failures.
pub fn unauthenticated() -> Problem {
    Problem::new(
        401,
        "unauthenticated",
        "Unauthorized",
        "Sign in with your organisation account, or send an Entra ID access token as a bearer token.",
    )
}

pub fn www_authenticate(invalid: bool) -> (&'static str, String) {
    let v = if invalid {
        r#"Bearer realm="portcullis", error="invalid_token""#
    } else {
        r#"Bearer realm="portcullis""#
    };
    ("www-authenticate", v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert!(bearer(&h).is_none());
        h.insert("authorization", "Basic abc".parse().unwrap());
        assert!(bearer(&h).is_none());
        h.insert("authorization", "bearer abc.def.ghi".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc.def.ghi"));
    }
}
