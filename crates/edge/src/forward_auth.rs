//! Forward-auth: a listener that answers an ingress's authorization checks (nginx
//! `auth_request`, Caddy `forward_auth`, Traefik ForwardAuth, Envoy `ext_authz`) instead of
//! proxying. This module turns a check into the request it describes — method, URI, host,
//! scheme and client, from the headers the configured ingress sets and no others — and the
//! access decision's answer into the one that ingress expects. Routing and the decision are
//! the proxy's own ([`crate::gateway`]); nothing here decides.
//!
//! Paths of a forward-auth listener:
//! - `/auth`: a status-only answer (nginx `auth_request` passes 401 and 403 on and takes
//!   anything else but 2xx for an error): 200 allowed, 401 to sign in, 403 refused, with
//!   `X-Portcullis-Reason` and, for a redirect, `X-Portcullis-Location`;
//! - `/verify` (Envoy: `/verify` followed by the original path): the answer the proxy itself
//!   would give — the sign-in redirect with its cookie, the landing page or redirect, the
//!   problem — which Caddy, Traefik and Envoy send to the client as it is (nginx: its
//!   `error_page` location asks here);
//! - `/.portcullis/…`: the gateway's own endpoints (the sign-in callback, sign-out, continue),
//!   proxied by the ingress as they are; `/.portcullis/answer?rd=URL` among them gives a
//!   browser the answer for `URL` (for ingress-nginx, whose refusals can only redirect);
//! - anything else: 404.
//!
//! May depend on `access` (problems), `identity` (safe return paths), `config` (the ingress
//! kind) and `http`.

use std::net::IpAddr;

use http::header::{HeaderName, HeaderValue, HOST};
use http::request::Parts;

use access::Problem;
use config::{ForwardAuthConfig, Ingress};

/// The check path of the status-only answer.
pub const AUTH_PATH: &str = "/auth";
/// The check path (Envoy: prefix) of the full answer.
pub const VERIFY_PATH: &str = "/verify";

/// What kind of answer the ingress takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answering {
    /// 200, 401 or 403 and headers only (`/auth`).
    Status,
    /// The proxy's own answer (`/verify`).
    Full,
    /// Not a check: a `/.portcullis/` request the ingress proxied.
    Direct,
}

/// The request a check describes.
#[derive(Debug)]
pub struct Described {
    /// Method, URI (origin form) and headers as the client sent them to the ingress; `Host`
    /// is the original host.
    pub parts: Parts,
    /// The client reached the ingress over TLS.
    pub tls: bool,
    /// The client's address, as the ingress saw it.
    pub client: IpAddr,
    pub answering: Answering,
}

const X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
const X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
const X_ORIGINAL_URL: HeaderName = HeaderName::from_static("x-original-url");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Whether `peer` may ask: only the configured ingress addresses.
pub fn trusts(cfg: &ForwardAuthConfig, peer: IpAddr) -> bool {
    cfg.trusted.iter().any(|n| n.contains(peer))
}

/// The request `parts` (a check, or a proxied `/.portcullis/` request) describes, read with
/// `ingress`'s headers; `tls` and `peer` are the connection's, used where the ingress says
/// nothing. Only call for a trusted peer ([`trusts`]).
pub fn describe(ingress: Ingress, parts: &Parts, tls: bool, peer: IpAddr) -> Result<Described, Problem> {
    let path = parts.uri.path();
    let (answering, envoy_path) = match (ingress, path) {
        (_, AUTH_PATH) => (Answering::Status, None),
        (Ingress::Envoy, p) if p.starts_with("/verify/") => {
            let rest = parts
                .uri
                .path_and_query()
                .map_or(p, |pq| pq.as_str())
                .strip_prefix(VERIFY_PATH);
            (Answering::Full, rest)
        }
        (Ingress::Nginx | Ingress::IngressNginx | Ingress::Caddy | Ingress::Traefik, VERIFY_PATH) => {
            (Answering::Full, None)
        }
        (_, p) if p.starts_with("/.portcullis/") => (Answering::Direct, None),
        (Ingress::Nginx | Ingress::IngressNginx | Ingress::Caddy | Ingress::Traefik | Ingress::Envoy, _) => {
            return Err(Problem::new(
                404,
                "not_a_check",
                "Not Found",
                "This forward-auth listener answers checks at /auth and /verify and serves /.portcullis/.",
            ))
        }
    };
    let h = &parts.headers;
    // ingress-nginx's `auth-url` sends the whole URL (`$scheme://$http_host$request_uri`) in
    // X-Original-URL; the client's own headers pass through with it, so nothing else is read.
    let original_url: Option<http::Uri> = match (ingress, answering) {
        (Ingress::IngressNginx, Answering::Status | Answering::Full) => Some(
            h.get(X_ORIGINAL_URL)
                .and_then(|v| http::Uri::try_from(v.as_bytes()).ok())
                .filter(|u| u.scheme().is_some() && u.authority().is_some())
                .ok_or_else(|| bad(Some(&X_ORIGINAL_URL), "is missing or not an absolute URL"))?,
        ),
        (Ingress::IngressNginx, Answering::Direct)
        | (Ingress::Nginx | Ingress::Caddy | Ingress::Traefik | Ingress::Envoy, _) => None,
    };
    let (method_header, uri_header) = match ingress {
        Ingress::Nginx => (Some(&X_ORIGINAL_METHOD), Some(&X_ORIGINAL_URI)),
        Ingress::IngressNginx => (Some(&X_ORIGINAL_METHOD), Some(&X_ORIGINAL_URL)),
        Ingress::Caddy | Ingress::Traefik => (Some(&X_FORWARDED_METHOD), Some(&X_FORWARDED_URI)),
        Ingress::Envoy => (None, None),
    };
    let method = match (answering, method_header.and_then(|n| h.get(n))) {
        (Answering::Direct, _) | (_, None) => parts.method.clone(),
        (Answering::Status | Answering::Full, Some(v)) => {
            http::Method::from_bytes(v.as_bytes()).map_err(|_| bad(method_header, "is not an HTTP method"))?
        }
    };
    let uri: http::Uri = match (answering, envoy_path, &original_url, uri_header) {
        (Answering::Direct, _, _, _) => parts.uri.path_and_query().map_or("/", |p| p.as_str()).parse(),
        (_, _, Some(url), _) => url.path_and_query().map_or("/", |p| p.as_str()).parse(),
        (_, Some(rest), None, _) => rest.parse(),
        (Answering::Status | Answering::Full, None, None, Some(name)) => match h.get(name) {
            Some(v) if v.as_bytes().starts_with(b"/") => v.as_bytes().try_into(),
            Some(_) => return Err(bad(Some(name), "is not a path (it starts with /)")),
            None => return Err(bad(Some(name), "is missing: the ingress must send the original URI")),
        },
        (Answering::Status | Answering::Full, None, None, None) => {
            return Err(bad(None, "the check names no original path"));
        }
    }
    .map_err(|_| bad(uri_header, "is not a valid request target"))?;
    let host = match ingress {
        // An HTTP/2 check carries the authority in the request target, not `Host`.
        Ingress::Envoy => h.get(HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        }),
        Ingress::Nginx | Ingress::Caddy | Ingress::Traefik => h.get(X_FORWARDED_HOST).cloned(),
        Ingress::IngressNginx => original_url
            .as_ref()
            .and_then(http::Uri::authority)
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
    }
    .or_else(|| h.get(HOST).cloned())
    .ok_or_else(|| {
        bad(
            Some(&X_FORWARDED_HOST),
            "is missing: the ingress must send the original host",
        )
    })?;
    let proto = match &original_url {
        Some(url) => url.scheme_str().map(str::as_bytes),
        None => h.get(X_FORWARDED_PROTO).map(HeaderValue::as_bytes),
    };
    let tls = match proto {
        Some(p) if p.eq_ignore_ascii_case(b"https") => true,
        Some(p) if p.eq_ignore_ascii_case(b"http") => false,
        Some(_) => return Err(bad(Some(&X_FORWARDED_PROTO), "is neither http nor https")),
        None => tls,
    };
    // nginx's `$host` (the host it routed by) has no port: the snippet sends `$server_port`.
    let host = match (ingress, h.get(X_FORWARDED_PORT)) {
        (Ingress::Nginx, Some(port)) => {
            with_port(host, port, tls).ok_or_else(|| bad(Some(&X_FORWARDED_PORT), "is not a port"))?
        }
        (Ingress::Nginx, None) | (Ingress::IngressNginx | Ingress::Caddy | Ingress::Traefik | Ingress::Envoy, _) => {
            host
        }
    };
    let client = match ingress {
        Ingress::Nginx | Ingress::IngressNginx => h.get(X_REAL_IP).and_then(|v| v.to_str().ok()?.trim().parse().ok()),
        // The last entry is the one the ingress added; earlier ones the client may have sent.
        Ingress::Caddy | Ingress::Traefik | Ingress::Envoy => h
            .get_all(X_FORWARDED_FOR)
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok()?.rsplit(',').next()?.trim().parse().ok()),
    }
    .unwrap_or(peer);

    let mut described = http::Request::builder()
        .method(method)
        .uri(uri)
        .body(())
        .map_err(|_| bad(uri_header, "is not a valid request target"))?
        .into_parts()
        .0;
    described.version = parts.version;
    let mut headers = parts.headers.clone();
    // The forwarding headers described the request; they are not part of it.
    for n in [
        &X_ORIGINAL_METHOD,
        &X_ORIGINAL_URI,
        &X_ORIGINAL_URL,
        &X_REAL_IP,
        &X_FORWARDED_METHOD,
        &X_FORWARDED_URI,
        &X_FORWARDED_HOST,
        &X_FORWARDED_PROTO,
        &X_FORWARDED_PORT,
        &X_FORWARDED_FOR,
    ] {
        headers.remove(n);
    }
    headers.insert(HOST, host);
    described.headers = headers;
    Ok(Described {
        parts: described,
        tls,
        client,
        answering,
    })
}

/// `host` with `port` unless that is the scheme's default (or `host` names a port already).
fn with_port(host: HeaderValue, port: &HeaderValue, tls: bool) -> Option<HeaderValue> {
    let port: u16 = std::str::from_utf8(port.as_bytes()).ok()?.trim().parse().ok()?;
    let h = host.to_str().ok()?;
    let has_port = match h.rfind(':') {
        Some(i) => !h[i..].contains(']'),
        None => false,
    };
    if has_port || port == if tls { 443 } else { 80 } {
        return Some(host);
    }
    HeaderValue::from_str(&format!("{h}:{port}")).ok()
}

fn bad(header: Option<&HeaderName>, what: &str) -> Problem {
    let detail = match header {
        Some(h) => format!("The check's {h} {what}."),
        None => format!("The check is not usable: {what}."),
    };
    Problem {
        status: 400,
        reason: "bad_check",
        title: "Bad Request",
        detail: detail.into(),
    }
}

/// Every header an allowed check's answer may carry for the ingress to copy upstream. Each is
/// sent, empty when it does not apply: an ingress copying a fixed list then never leaves a
/// client's own value, or its own placeholder text (Caddy before 2.7), in a missing one's place.
pub const IDENTITY_HEADERS: [HeaderName; 9] = [
    HeaderName::from_static("x-portcullis-user"),
    HeaderName::from_static("x-portcullis-user-id"),
    HeaderName::from_static("x-portcullis-tenant"),
    HeaderName::from_static("x-portcullis-device-id"),
    HeaderName::from_static("x-portcullis-posture"),
    HeaderName::from_static("x-portcullis-posture-age"),
    HeaderName::from_static("x-portcullis-grace-ends"),
    HeaderName::from_static("x-portcullis-decision"),
    HeaderName::from_static("x-portcullis-assertion"),
];

/// On an allowed answer: the request's `Cookie` without the gateway's own cookies (empty when
/// none is left), which the ingress sends to the app in place of the client's.
pub const COOKIE_HEADER: HeaderName = HeaderName::from_static("x-portcullis-cookie");

/// The answer page for one URL: see [`crate::gateway`]'s `answer_for`.
pub const ANSWER_PATH: &str = "/.portcullis/answer";

/// The target of `/.portcullis/answer?rd=…`: a safe path, or the path of a URL on the host
/// the request came to (ingress-nginx appends the whole URL).
pub fn answer_target(parts: &Parts) -> Option<String> {
    let rd = url::form_urlencoded::parse(parts.uri.query()?.as_bytes())
        .find(|(k, _)| k == "rd")
        .map(|(_, v)| v.into_owned())?;
    if rd.starts_with('/') {
        return identity::oidc::safe_return_path(&rd).map(str::to_string);
    }
    let url = http::Uri::try_from(rd.as_str()).ok()?;
    let here = access::host_of(parts)?;
    let same_host = matches!(url.scheme_str(), Some("https" | "http"))
        && url.authority().is_some_and(|a| a.as_str().eq_ignore_ascii_case(here));
    let path = url.path_and_query().map_or("/", |p| p.as_str());
    same_host
        .then(|| identity::oidc::safe_return_path(path).map(str::to_string))
        .flatten()
}

/// A refusal as the status-only answer: 401 when signing in would help, else 403.
pub fn status_only(signs_in: bool) -> u16 {
    if signs_in {
        401
    } else {
        403
    }
}

#[cfg(test)]
mod tests;
