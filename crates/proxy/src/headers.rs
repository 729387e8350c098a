//! Header hygiene between client and upstream: client-sent `X-Portcullis-*` headers removed,
//! `X-Forwarded-For/Proto/Host` set (appended to only for trusted proxies), `Forwarded`
//! dropped from untrusted clients, split `Cookie` fields joined. Hop-by-hop fields are removed
//! before this by pingora 0.9's standard upstream request policy (see the tests).

use std::net::IpAddr;

use pingora::http::RequestHeader;

/// Prefix of every header the gateway vouches for; clients may never set one.
pub const IDENTITY_PREFIX: &str = "x-portcullis-";

/// Facts about the downstream connection needed to rewrite forwarding headers.
#[derive(Debug, Clone, Copy)]
pub struct Downstream<'a> {
    pub client_ip: Option<IpAddr>,
    /// The client address is one of `server.trusted_proxies`.
    pub trusted: bool,
    pub tls: bool,
    /// The `Host` (or `:authority`) the client asked for.
    pub host: Option<&'a str>,
}

/// Applies every rule to a request about to be sent upstream.
pub fn sanitize(req: &mut RequestHeader, d: Downstream<'_>) -> pingora::Result<()> {
    strip_identity_headers(req);
    forwarding_headers(req, d)?;
    join_cookies(req)?;
    Ok(())
}

/// Forgets the client's spelling of header names in the request sent upstream. pingora keeps a
/// case-preserving map beside `http::HeaderMap` and does every insert and removal twice, with a
/// name parse each: for the gateway's ten added headers that was about a fifth of its own CPU per
/// request (docs/benchmarks.md, "floor"). Names are case-insensitive (RFC 9110 §5.1); upstreams
/// then see them as they already do for every HTTP/2 client: standard names title-cased, the
/// others lower case. The request-target's bytes and the end-of-stream flag are kept.
pub fn drop_header_case(req: &mut RequestHeader) -> pingora::Result<()> {
    if !req.has_case() {
        return Ok(());
    }
    let raw_path = req.raw_path().to_vec();
    let end_stream = req.send_end_stream();
    let placeholder = RequestHeader::build_no_case(http::Method::GET, b"/", Some(0))?;
    let parts: http::request::Parts = std::mem::replace(req, placeholder).into();
    *req = RequestHeader::from(parts);
    req.set_raw_path(&raw_path)?;
    if let Some(end) = end_stream {
        req.set_send_end_stream(end);
    }
    Ok(())
}

/// Adds [`access::identity_values`] (after every client-sent copy was removed).
pub fn identity_headers(
    req: &mut RequestHeader,
    p: Option<&identity::Principal>,
    v: &access::Verdict,
) -> pingora::Result<()> {
    for (name, value) in access::identity_values(p, v) {
        // Verified claims are plain text; one that is not a valid header value is left out
        // rather than mangled.
        match http::HeaderValue::from_str(&value) {
            Ok(v) => {
                req.insert_header(name, v)?;
            }
            Err(_) => tracing::warn!(header = name, "identity value is not a valid header value; not sent"),
        }
    }
    Ok(())
}

pub fn strip_identity_headers(req: &mut RequestHeader) {
    if !req.headers.keys().any(|k| k.as_str().starts_with(IDENTITY_PREFIX)) {
        return;
    }
    let spoofed: Vec<http::HeaderName> = req
        .headers
        .keys()
        .filter(|k| k.as_str().starts_with(IDENTITY_PREFIX))
        .cloned()
        .collect();
    for name in spoofed {
        req.remove_header(&name);
    }
}

fn forwarding_headers(req: &mut RequestHeader, d: Downstream<'_>) -> pingora::Result<()> {
    let ip = d.client_ip.map(|ip| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    });
    let prior: Option<String> = if d.trusted {
        let all: Vec<&str> = req
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        (!all.is_empty()).then(|| all.join(", "))
    } else {
        None
    };
    let xff = match (prior, ip) {
        (Some(p), Some(ip)) => Some(format!("{p}, {ip}")),
        (Some(p), None) => Some(p),
        (None, Some(ip)) => Some(ip.to_string()),
        (None, None) => None,
    };
    if req.headers.contains_key("x-forwarded-for") {
        req.remove_header("x-forwarded-for");
    }
    if let Some(xff) = xff {
        req.insert_header("x-forwarded-for", xff)?;
    }
    let keep_prior = |req: &RequestHeader, name: &str| d.trusted && req.headers.get(name).is_some();
    if !keep_prior(req, "x-forwarded-proto") {
        req.insert_header("x-forwarded-proto", if d.tls { "https" } else { "http" })?;
    }
    if !keep_prior(req, "x-forwarded-host") {
        req.remove_header("x-forwarded-host");
        if let Some(h) = d.host {
            req.insert_header("x-forwarded-host", h)?;
        }
    }
    if !d.trusted && req.headers.contains_key("forwarded") {
        req.remove_header("forwarded");
    }
    Ok(())
}

/// HTTP/2 clients send one `cookie` field per cookie; HTTP/1.1 upstreams need one field
/// (RFC 9113 §8.2.3; pingora does not join them, issue #892).
fn join_cookies(req: &mut RequestHeader) -> pingora::Result<()> {
    let all = req.headers.get_all("cookie");
    if all.iter().nth(1).is_none() {
        return Ok(());
    }
    let joined: Vec<&[u8]> = all.iter().map(|v| v.as_bytes()).collect();
    let joined = joined.join(&b"; "[..]);
    req.remove_header("cookie");
    req.insert_header("cookie", joined)?;
    Ok(())
}

/// Removes the gateway's own cookies from the `Cookie` header sent upstream: they are
/// credentials for the gateway, not for the app.
pub fn strip_own_cookies(req: &mut RequestHeader, names: &[&str]) -> pingora::Result<()> {
    let Some(v) = req.headers.get(http::header::COOKIE).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let own = |pair: &str| pair.split_once('=').is_some_and(|(k, _)| names.contains(&k.trim()));
    if !v.split(';').any(own) {
        return Ok(());
    }
    let kept: Vec<&str> = v
        .split(';')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .filter(|pair| !own(pair))
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

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn get(r: &RequestHeader, k: &str) -> Option<String> {
        r.headers.get(k).map(|v| v.to_str().unwrap().to_string())
    }

    const IP: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7)));

    #[test]
    fn untrusted_client_headers_are_replaced() {
        let mut r = req(&[
            ("X-Portcullis-User", "admin@evil"),
            ("x-portcullis-device-id", "x"),
            ("X-Forwarded-For", "1.2.3.4"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "evil"),
            ("Forwarded", "for=1.2.3.4"),
        ]);
        sanitize(
            &mut r,
            Downstream {
                client_ip: IP,
                trusted: false,
                tls: false,
                host: Some("app"),
            },
        )
        .unwrap();
        assert!(r.headers.keys().all(|k| !k.as_str().starts_with("x-portcullis-")));
        assert_eq!(get(&r, "x-forwarded-for").unwrap(), "192.0.2.7");
        assert_eq!(get(&r, "x-forwarded-proto").unwrap(), "http");
        assert_eq!(get(&r, "x-forwarded-host").unwrap(), "app");
        assert!(get(&r, "forwarded").is_none());
    }

    #[test]
    fn trusted_proxy_chain_is_appended() {
        let mut r = req(&[
            ("X-Forwarded-For", "1.2.3.4"),
            ("X-Forwarded-For", "5.6.7.8"),
            ("X-Forwarded-Proto", "https"),
        ]);
        sanitize(
            &mut r,
            Downstream {
                client_ip: IP,
                trusted: true,
                tls: false,
                host: Some("app"),
            },
        )
        .unwrap();
        assert_eq!(get(&r, "x-forwarded-for").unwrap(), "1.2.3.4, 5.6.7.8, 192.0.2.7");
        assert_eq!(get(&r, "x-forwarded-proto").unwrap(), "https");
    }

    #[test]
    fn split_cookies_are_joined() {
        let mut r = req(&[("cookie", "a=1"), ("cookie", "b=2")]);
        sanitize(
            &mut r,
            Downstream {
                client_ip: None,
                trusted: false,
                tls: true,
                host: None,
            },
        )
        .unwrap();
        assert_eq!(r.headers.get_all("cookie").iter().count(), 1);
        assert_eq!(get(&r, "cookie").unwrap(), "a=1; b=2");
        assert_eq!(get(&r, "x-forwarded-proto").unwrap(), "https");
    }

    #[test]
    fn header_case_is_dropped_and_the_target_kept() {
        let mut r = RequestHeader::build("GET", b"/a%2Fb?x=%C3%A9&y", None).unwrap();
        r.append_header("X-Custom-Thing", "1").unwrap();
        r.append_header("X-Custom-Thing", "2").unwrap();
        r.append_header("Content-Type", "text/plain").unwrap();
        assert!(r.has_case());
        drop_header_case(&mut r).unwrap();
        assert!(!r.has_case());
        assert_eq!(r.raw_path(), b"/a%2Fb?x=%C3%A9&y");
        let mut wire = Vec::new();
        r.header_to_h1_wire(&mut wire);
        assert_eq!(
            String::from_utf8(wire).unwrap(),
            "x-custom-thing: 1\r\nx-custom-thing: 2\r\nContent-Type: text/plain\r\n",
            "every value kept, in order; standard names title-cased"
        );
        r.insert_header("x-portcullis-user", "alice").unwrap();
        assert_eq!(get(&r, "x-portcullis-user").unwrap(), "alice");
    }

    #[test]
    fn own_cookies_are_removed() {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.insert_header("cookie", "a=1; __Host-portcullis=s; __Host-portcullis-login=l; b=2")
            .unwrap();
        strip_own_cookies(&mut r, &["__Host-portcullis", "__Host-portcullis-login"]).unwrap();
        assert_eq!(r.headers.get("cookie").unwrap(), "a=1; b=2");
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.insert_header("cookie", "a=1; b=2").unwrap();
        strip_own_cookies(&mut r, &["__Host-portcullis"]).unwrap();
        assert_eq!(r.headers.get("cookie").unwrap(), "a=1; b=2", "none of ours: untouched");
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.insert_header("cookie", "__Host-portcullis=s").unwrap();
        strip_own_cookies(&mut r, &["__Host-portcullis"]).unwrap();
        assert!(r.headers.get("cookie").is_none());
    }
}
