//! The request path's side of identity: finding the credential (bearer token, else session
//! cookie), checking it, renewing sessions, starting and finishing browser sign-in, sign-out,
//! and the group check. Responses are written by the gateway from the outcomes here.

use std::sync::Arc;

use pingora::http::RequestHeader;
use pingora::proxy::Session as HttpSession;

use super::respond::{self, Problem};
use crate::identity::cookie::{find_cookie, random_token};
use crate::identity::jwks::unix_now;
use crate::identity::oidc::{safe_return_path, SignInError, CALLBACK_PATH};
use crate::identity::{Identity, Principal, TokenError};

const SESSION_PURPOSE: &str = "portcullis-session";
/// Renew a session this long before its ID token expires.
const RENEW_BEFORE_SECS: u64 = 120;
/// Largest callback body read (Entra posts a code and a state).
const MAX_CALLBACK_BODY: usize = 16 * 1024;

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
    User(Arc<Principal>, AuthSource),
    /// No credential at all (or an expired/unknown session).
    Missing,
    /// A bearer token that failed validation.
    Invalid(TokenError),
}

/// The bearer token of an `Authorization: Bearer …` header. Tokens in query strings are never
/// looked at.
fn bearer(req: &RequestHeader) -> Option<&str> {
    let v = req.headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn cookies(req: &RequestHeader) -> impl Iterator<Item = &str> {
    req.headers
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

pub async fn authenticate(id: &Identity, req: &RequestHeader) -> AuthOutcome {
    if let Some(token) = bearer(req) {
        return match bearer_principal(id, token).await {
            Ok(p) => AuthOutcome::User(p, AuthSource::Bearer),
            Err(e) => AuthOutcome::Invalid(e),
        };
    }
    let Some(sid) = find_cookie(cookies(req), &id.cookie_name)
        .and_then(|c| id.sealer.open(SESSION_PURPOSE, c))
        .and_then(|b| String::from_utf8(b).ok())
    else {
        return AuthOutcome::Missing;
    };
    let Some(session) = id.sessions.get(&sid).await else {
        return AuthOutcome::Missing;
    };
    let now = unix_now();
    if now.saturating_sub(session.signed_in_at) > id.session_lifetime.as_secs() {
        id.sessions.remove(&sid).await;
        return AuthOutcome::Missing;
    }
    if session.principal.expires_at > now + RENEW_BEFORE_SECS {
        return AuthOutcome::User(session.principal, AuthSource::Session);
    }
    match id.oidc.refresh(&session).await {
        Ok(renewed) => {
            let p = renewed.principal.clone();
            id.sessions.put(&sid, renewed).await;
            AuthOutcome::User(p, AuthSource::Session)
        }
        Err(e) => {
            tracing::info!(user = %session.principal.object_id, error = %e, "session renewal failed; signing in again");
            id.sessions.remove(&sid).await;
            AuthOutcome::Missing
        }
    }
}

/// `scheme://host` of the request as the client sees it.
fn origin(req: &RequestHeader, tls: bool) -> Option<String> {
    let host = req
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers.get(http::header::HOST).and_then(|v| v.to_str().ok()))?;
    super::routing::normalize_host(host)?;
    Some(format!("{}://{host}", if tls { "https" } else { "http" }))
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
pub async fn start_sign_in(id: &Identity, s: &mut HttpSession, tls: bool) -> pingora::Result<u16> {
    let req = s.req_header();
    let here = req.uri.path_and_query().map_or("/", |p| p.as_str());
    let return_to = safe_return_path(here).unwrap_or("/").to_string();
    let Some(origin) = origin(req, tls) else {
        let p = Problem {
            status: 400,
            reason: "bad_request",
            title: "Bad Request",
            detail: "The request has no usable Host.",
        };
        respond::write_problem(s, &p, true).await?;
        return Ok(400);
    };
    match id
        .oidc
        .start(&id.sealer, &format!("{origin}{CALLBACK_PATH}"), &return_to)
    {
        Ok(start) => {
            let cookie = login_cookie(id, &start.login_cookie, crate::identity::oidc::LOGIN_TTL.as_secs());
            respond::write_redirect(s, 302, &start.authorize_url, &[("set-cookie", cookie)]).await?;
            Ok(302)
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot start a sign-in");
            let p = Problem {
                status: 500,
                reason: "internal_error",
                title: "Internal Server Error",
                detail: "Sign-in could not be started.",
            };
            respond::write_problem(s, &p, false).await?;
            Ok(500)
        }
    }
}

/// `/.portcullis/callback`: finishes a sign-in and sends the browser back where it started.
pub async fn callback(id: &Identity, s: &mut HttpSession) -> pingora::Result<u16> {
    let mut params: Vec<(String, String)> = s
        .req_header()
        .uri
        .query()
        .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    if s.req_header().method == http::Method::POST {
        let mut body = Vec::new();
        while let Some(chunk) = s.read_request_body().await? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_CALLBACK_BODY {
                let p = Problem {
                    status: 413,
                    reason: "body_too_large",
                    title: "Content Too Large",
                    detail: "",
                };
                respond::write_problem(s, &p, false).await?;
                return Ok(413);
            }
        }
        params.extend(url::form_urlencoded::parse(&body).into_owned());
    }
    let login = find_cookie(cookies(s.req_header()), &id.login_cookie_name).map(str::to_owned);
    let clear_login = login_cookie(id, "", 0);
    let result = id.oidc.finish(&id.sealer, login.as_deref(), &params).await;
    let (session, return_to) = match result {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "sign-in failed");
            let detail = e.to_string();
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
            let p = Problem {
                status,
                reason: "sign_in_failed",
                title: "Sign-in failed",
                detail: &detail,
            };
            respond::write_problem_with(s, &p, true, &[("set-cookie", clear_login)]).await?;
            return Ok(status);
        }
    };
    let (Ok(sid), user) = (random_token(32), session.principal.object_id.clone()) else {
        return Ok(500);
    };
    id.sessions.put(&sid, session).await;
    let Ok(sealed) = id.sealer.seal(SESSION_PURPOSE, sid.as_bytes()) else {
        return Ok(500);
    };
    tracing::info!(%user, "signed in");
    let cookies = [
        ("set-cookie", session_cookie(id, &sealed, id.session_lifetime.as_secs())),
        ("set-cookie", clear_login),
    ];
    respond::write_redirect(s, 303, &return_to, &cookies).await?;
    Ok(303)
}

/// `/.portcullis/sign_out`: ends the session.
pub async fn sign_out(id: &Identity, s: &mut HttpSession) -> pingora::Result<u16> {
    if let Some(sid) = find_cookie(cookies(s.req_header()), &id.cookie_name)
        .and_then(|c| id.sealer.open(SESSION_PURPOSE, c))
        .and_then(|b| String::from_utf8(b).ok())
    {
        id.sessions.remove(&sid).await;
    }
    let p = Problem {
        status: 200,
        reason: "signed_out",
        title: "Signed out",
        detail: "You are signed out.",
    };
    respond::write_problem_with(s, &p, true, &[("set-cookie", session_cookie(id, "", 0))]).await?;
    Ok(200)
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
pub fn unauthenticated() -> Problem<'static> {
    Problem {
        status: 401,
        reason: "unauthenticated",
        title: "Unauthorized",
        detail: "Sign in with your organisation account, or send an Entra ID access token as a bearer token.",
    }
}

pub fn www_authenticate(invalid: bool) -> (&'static str, String) {
    let v = if invalid {
        r#"Bearer realm="portcullis", error="invalid_token""#
    } else {
        r#"Bearer realm="portcullis""#
    };
    ("www-authenticate", v.to_string())
}

/// Removes the gateway's own cookies from the `Cookie` header sent upstream: they are
/// credentials for the gateway, not for the app.
pub fn strip_own_cookies(req: &mut RequestHeader, names: &[&str]) -> pingora::Result<()> {
    let Some(v) = req.headers.get(http::header::COOKIE).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let kept: Vec<&str> = v
        .split(';')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .filter(|pair| pair.split_once('=').is_none_or(|(k, _)| !names.contains(&k.trim())))
        .collect();
    let kept = kept.join("; ");
    req.remove_header(&http::header::COOKIE);
    if !kept.is_empty() {
        req.insert_header(http::header::COOKIE, kept)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        assert!(bearer(&r).is_none());
        r.insert_header("authorization", "Basic abc").unwrap();
        assert!(bearer(&r).is_none());
        r.insert_header("authorization", "bearer abc.def.ghi").unwrap();
        assert_eq!(bearer(&r), Some("abc.def.ghi"));
    }

    #[test]
    fn own_cookies_are_removed() {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.insert_header("cookie", "a=1; __Host-portcullis=s; __Host-portcullis-login=l; b=2")
            .unwrap();
        strip_own_cookies(&mut r, &["__Host-portcullis", "__Host-portcullis-login"]).unwrap();
        assert_eq!(r.headers.get("cookie").unwrap(), "a=1; b=2");
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.insert_header("cookie", "__Host-portcullis=s").unwrap();
        strip_own_cookies(&mut r, &["__Host-portcullis"]).unwrap();
        assert!(r.headers.get("cookie").is_none());
    }
}
