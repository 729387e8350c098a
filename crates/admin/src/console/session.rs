//! Console sessions: server-side rows in the store's session table (so every node behind one
//! load balancer knows them), keyed by the SHA-256 of the cookie's random value (a database
//! reader cannot sign in with what the table holds). A session holds the caller it
//! authenticated, a CSRF token for every form, and how the admin signed in; it lasts
//! [`SESSION_TTL_SECS`] and ends at sign-out.

use axum::http::{header, HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};

use crate::api::Caller;

/// How long a console session lasts: a working day.
pub const SESSION_TTL_SECS: i64 = 8 * 3600;
/// The cookie where the browser is in a secure context (TLS, or loopback — which browsers treat
/// as secure): `__Host-` pins it to this host and path `/`.
const SECURE_COOKIE: &str = "__Host-portcullis-console";
/// Plain HTTP to another host cannot carry a Secure cookie, nor so a `__Host-` name.
const PLAIN_COOKIE: &str = "portcullis-console";
/// The sign-in with Entra in flight (sealed state, nonce and PKCE verifier), for ten minutes.
/// SameSite=None: Entra's form_post callback is a cross-site POST.
const SECURE_LOGIN_COOKIE: &str = "__Host-portcullis-console-login";
const PLAIN_LOGIN_COOKIE: &str = "portcullis-console-login";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub caller: Caller,
    /// Every state-changing form carries it.
    pub csrf: String,
    /// `token` (the admin or read-only token, pasted) or `entra`.
    pub via: String,
    /// When the session ends (Unix seconds): a rewrite keeps it.
    #[serde(default)]
    pub expires_at: i64,
    /// What a change just did (a save's or Run Test's report), shown once by the page the
    /// browser is sent to after its POST, so that reloading that page repeats nothing.
    #[serde(default)]
    pub flash: Option<serde_json::Value>,
}

/// The store key of the session the cookie value names.
pub fn key(cookie: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cookie.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("console:{hex}")
}

/// The session cookie's value in a request, under either name.
pub fn cookie(headers: &HeaderMap) -> Option<&str> {
    find(headers, SECURE_COOKIE, PLAIN_COOKIE).filter(|v| v.len() <= 128)
}

/// The sign-in in flight's sealed state.
pub fn login_cookie(headers: &HeaderMap) -> Option<&str> {
    find(headers, SECURE_LOGIN_COOKIE, PLAIN_LOGIN_COOKIE).filter(|v| v.len() <= 4096)
}

fn find<'a>(headers: &'a HeaderMap, secure: &str, plain: &str) -> Option<&'a str> {
    let values = || headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok());
    base::cookie::find_cookie(values(), secure)
        .or_else(|| base::cookie::find_cookie(values(), plain))
        .filter(|v| !v.is_empty())
}

/// Whether the browser reached the console in a secure context: over TLS (a proxy in front
/// says so) or on a loopback host. A forged `X-Forwarded-Proto` only makes the cookie Secure,
/// which a plain-HTTP browser then refuses: no weaker, just no session.
pub fn secure_context(headers: &HeaderMap) -> bool {
    let forwarded_tls = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    };
    forwarded_tls || name.eq_ignore_ascii_case("localhost") || name.starts_with("127.") || name == "::1"
}

/// `Set-Cookie` for a new session (`value`), or to end it (`None`).
pub fn set_cookie(headers: &HeaderMap, value: Option<&str>) -> HeaderValue {
    set(
        headers,
        (SECURE_COOKIE, PLAIN_COOKIE),
        "Strict",
        value,
        SESSION_TTL_SECS,
    )
}

/// `Set-Cookie` for a sign-in in flight (`value`: its sealed state), or to clear it.
pub fn set_login_cookie(headers: &HeaderMap, value: Option<&str>) -> HeaderValue {
    let ttl = i64::try_from(identity::oidc::LOGIN_TTL.as_secs()).unwrap_or(600);
    set(headers, (SECURE_LOGIN_COOKIE, PLAIN_LOGIN_COOKIE), "None", value, ttl)
}

fn set(headers: &HeaderMap, names: (&str, &str), same_site: &str, value: Option<&str>, ttl: i64) -> HeaderValue {
    let (name, secure) = if secure_context(headers) {
        (names.0, "; Secure")
    } else {
        (names.1, "")
    };
    let text = match value {
        Some(v) => format!("{name}={v}; Path=/; HttpOnly; SameSite={same_site}; Max-Age={ttl}{secure}"),
        None => format!("{name}=; Path=/; HttpOnly; SameSite={same_site}; Max-Age=0{secure}"),
    };
    // Built from fixed text and base64url tokens: always a valid header value.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("portcullis-console=; Max-Age=0"))
}

/// A state-changing request from another site, by what the browser says of it: refused
/// before its CSRF token is even looked at.
pub fn cross_site(headers: &HeaderMap) -> bool {
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if let Some(site) = fetch_site {
        return !(site.eq_ignore_ascii_case("same-origin") || site.eq_ignore_ascii_case("none"));
    }
    // Older browsers: the Origin must be this host.
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match (headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()), host) {
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .is_none_or(|(_, authority)| !authority.eq_ignore_ascii_case(host)),
        (Some(_), None) => true,
        (None, _) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn the_cookie_is_host_pinned_and_secure_where_the_browser_allows_it() {
        let local = set_cookie(&headers(&[("host", "127.0.0.1:9090")]), Some("abc"));
        assert_eq!(
            local,
            "__Host-portcullis-console=abc; Path=/; HttpOnly; SameSite=Strict; Max-Age=28800; Secure"
        );
        let proxied = headers(&[("host", "admin.example.com"), ("x-forwarded-proto", "https")]);
        assert!(set_cookie(&proxied, Some("abc"))
            .to_str()
            .unwrap()
            .starts_with("__Host-"));
        let plain = set_cookie(&headers(&[("host", "admin.example.com")]), Some("abc"));
        assert_eq!(
            plain,
            "portcullis-console=abc; Path=/; HttpOnly; SameSite=Strict; Max-Age=28800"
        );
        assert!(secure_context(&headers(&[("host", "[::1]:9090")])));
        assert!(secure_context(&headers(&[("host", "localhost")])));
    }

    #[test]
    fn cookies_are_read_under_either_name_and_keyed_by_their_hash() {
        let h = headers(&[("cookie", "a=1; __Host-portcullis-console=tok")]);
        assert_eq!(cookie(&h), Some("tok"));
        assert_eq!(cookie(&headers(&[("cookie", "portcullis-console=p")])), Some("p"));
        assert_eq!(cookie(&headers(&[("cookie", "portcullis-console=")])), None);
        assert_ne!(key("tok"), "console:tok");
        assert!(key("tok").starts_with("console:") && key("tok").len() == 8 + 64);
    }

    #[test]
    fn cross_site_requests_are_told_apart() {
        assert!(!cross_site(&headers(&[("sec-fetch-site", "same-origin")])));
        assert!(cross_site(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(
            cross_site(&headers(&[("sec-fetch-site", "same-site")])),
            "a sibling app is another origin"
        );
        let ours = headers(&[("host", "127.0.0.1:9090"), ("origin", "http://127.0.0.1:9090")]);
        assert!(!cross_site(&ours));
        let theirs = headers(&[("host", "127.0.0.1:9090"), ("origin", "http://evil.example")]);
        assert!(cross_site(&theirs));
        assert!(cross_site(&headers(&[("host", "h"), ("origin", "null")])));
        assert!(
            !cross_site(&headers(&[("host", "h")])),
            "no word from the browser: the CSRF token decides"
        );
    }
}
