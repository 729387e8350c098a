//! Header hygiene between client and upstream, on a plain `http::HeaderMap` so that every data
//! plane shares it: client-sent `X-Portcullis-*` headers removed, `X-Forwarded-For/Proto/Host`
//! set (appended to only for trusted proxies), `Forwarded` dropped from untrusted clients,
//! split `Cookie` fields joined, the gateway's own cookies removed, and the verified identity
//! headers added. Hop-by-hop fields are the data plane's to remove.

use std::net::IpAddr;

use http::header::{HeaderMap, HeaderName, HeaderValue, COOKIE};

/// Prefix of every header the gateway vouches for; clients may never set one.
pub const IDENTITY_PREFIX: &str = "x-portcullis-";

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// Facts about the downstream connection needed to rewrite forwarding headers.
#[derive(Debug, Clone, Copy)]
pub struct Downstream<'a> {
    /// The client's address as `X-Forwarded-For` names it ([`client_value`]; the data plane
    /// makes it once per connection).
    pub client: Option<&'a HeaderValue>,
    /// The client address is one of `server.trusted_proxies`.
    pub trusted: bool,
    pub tls: bool,
    /// The `Host` (or `:authority`) the client asked for.
    pub host: Option<&'a HeaderValue>,
}

/// A client address as forwarding headers name it: an IPv4-mapped IPv6 address as IPv4.
pub fn client_value(ip: IpAddr) -> HeaderValue {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    // An address's text form is always a valid header value.
    HeaderValue::try_from(ip.to_string()).unwrap_or(HeaderValue::from_static("unknown"))
}

/// Applies every forwarding rule to the headers of a request about to be sent upstream.
pub fn sanitize(h: &mut HeaderMap, d: Downstream<'_>) {
    strip_identity_headers(h);
    forwarding_headers(h, d);
    join_cookies(h);
}

/// Removes the hop-by-hop fields (RFC 9110 §7.6.1): those `Connection` names, and the fixed
/// set. An upgrade request (`Connection: upgrade` with `Upgrade`) keeps both, so that the data
/// plane can pass the upgrade on.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Most messages carry none of these: one pass over the names instead of a removal (a hash
    // and a probe) per field.
    if !h.keys().any(is_hop_by_hop) {
        return;
    }
    let upgrade = h.contains_key(http::header::UPGRADE)
        && h.get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    let named: Vec<HeaderName> = h
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| !(upgrade && n == http::header::UPGRADE))
        .collect();
    for n in named {
        h.remove(&n);
    }
    for n in [
        http::header::TE,
        http::header::TRAILER,
        http::header::TRANSFER_ENCODING,
        http::header::PROXY_AUTHORIZATION,
        KEEP_ALIVE,
        PROXY_CONNECTION,
    ] {
        h.remove(n);
    }
    if upgrade {
        h.insert(http::header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        h.remove(http::header::CONNECTION);
        h.remove(http::header::UPGRADE);
    }
}

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// A field [`strip_hop_by_hop`] acts on.
fn is_hop_by_hop(n: &HeaderName) -> bool {
    use http::header::{CONNECTION, PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
    [
        CONNECTION,
        UPGRADE,
        TE,
        TRAILER,
        TRANSFER_ENCODING,
        PROXY_AUTHORIZATION,
        KEEP_ALIVE,
        PROXY_CONNECTION,
    ]
    .contains(n)
}

/// Adds the verified identity headers (after every client-sent copy was removed); `memo`
/// keeps the claims' values for the connection.
pub fn identity_headers(h: &mut HeaderMap, v: &crate::Verdict, memo: &crate::HeaderMemo) {
    crate::identity_headers::insert(h, v, memo);
}

pub fn strip_identity_headers(h: &mut HeaderMap) {
    if !h.keys().any(|k| k.as_str().starts_with(IDENTITY_PREFIX)) {
        return;
    }
    let spoofed: Vec<HeaderName> = h
        .keys()
        .filter(|k| k.as_str().starts_with(IDENTITY_PREFIX))
        .cloned()
        .collect();
    for name in spoofed {
        h.remove(&name);
    }
}

fn forwarding_headers(h: &mut HeaderMap, d: Downstream<'_>) {
    let prior: Option<Vec<u8>> = if d.trusted {
        let all: Vec<&[u8]> = h
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .map(|v| v.as_bytes().trim_ascii())
            .filter(|v| !v.is_empty())
            .collect();
        (!all.is_empty()).then(|| all.join(&b", "[..]))
    } else {
        None
    };
    let xff = match (prior, d.client) {
        (Some(mut p), Some(ip)) => {
            p.extend_from_slice(b", ");
            p.extend_from_slice(ip.as_bytes());
            HeaderValue::from_bytes(&p).ok()
        }
        (Some(p), None) => HeaderValue::from_bytes(&p).ok(),
        (None, Some(ip)) => Some(ip.clone()),
        (None, None) => None,
    };
    h.remove(&X_FORWARDED_FOR);
    // Built from header values and an address: always a valid value.
    if let Some(v) = xff {
        h.insert(X_FORWARDED_FOR, v);
    }
    if !(d.trusted && h.contains_key(&X_FORWARDED_PROTO)) {
        h.insert(
            X_FORWARDED_PROTO,
            HeaderValue::from_static(if d.tls { "https" } else { "http" }),
        );
    }
    if !(d.trusted && h.contains_key(&X_FORWARDED_HOST)) {
        h.remove(&X_FORWARDED_HOST);
        if let Some(v) = d.host {
            h.insert(X_FORWARDED_HOST, v.clone());
        }
    }
    if !d.trusted {
        h.remove(&FORWARDED);
    }
}

/// HTTP/2 clients send one `cookie` field per cookie; HTTP/1.1 upstreams need one field
/// (RFC 9113 §8.2.3).
fn join_cookies(h: &mut HeaderMap) {
    let all = h.get_all(COOKIE);
    if all.iter().nth(1).is_none() {
        return;
    }
    let joined = all
        .iter()
        .map(HeaderValue::as_bytes)
        .collect::<Vec<_>>()
        .join(&b"; "[..]);
    // Joined valid values with "; ": a valid value.
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        h.insert(COOKIE, v);
    }
}

/// Removes the gateway's own cookies from the `Cookie` header sent upstream: they are
/// credentials for the gateway, not for the app. Several `cookie` fields are joined first, and
/// the value is read as bytes: a byte that is not visible ASCII elsewhere in it must not carry
/// the session cookie through.
pub fn strip_own_cookies(h: &mut HeaderMap, names: &[&str]) {
    join_cookies(h);
    let Some(v) = h.get(COOKIE) else {
        return;
    };
    let own = |pair: &[u8]| {
        pair.iter().position(|&c| c == b'=').is_some_and(|eq| {
            let name = pair[..eq].trim_ascii();
            names.iter().any(|n| !n.is_empty() && n.as_bytes() == name)
        })
    };
    if !v.as_bytes().split(|&c| c == b';').any(own) {
        return;
    }
    let kept: Vec<&[u8]> = v
        .as_bytes()
        .split(|&c| c == b';')
        .map(<[u8]>::trim_ascii)
        .filter(|pair| !pair.is_empty() && !own(pair))
        .collect();
    match HeaderValue::from_bytes(&kept.join(&b"; "[..])) {
        Ok(v) if !v.is_empty() => {
            h.insert(COOKIE, v);
        }
        Ok(_) | Err(_) => {
            h.remove(COOKIE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(headers: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn get(h: &HeaderMap, k: &str) -> Option<String> {
        h.get(k).map(|v| v.to_str().unwrap().to_string())
    }

    fn ip() -> HeaderValue {
        client_value(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7)))
    }

    #[test]
    fn client_addresses_are_named_as_forwarding_headers_name_them() {
        assert_eq!(client_value("::ffff:192.0.2.7".parse().unwrap()), "192.0.2.7");
        assert_eq!(client_value("2001:db8::1".parse().unwrap()), "2001:db8::1");
    }

    #[test]
    fn untrusted_client_headers_are_replaced() {
        let mut h = map(&[
            ("X-Portcullis-User", "admin@evil"),
            ("x-portcullis-device-id", "x"),
            ("X-Forwarded-For", "1.2.3.4"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "evil"),
            ("Forwarded", "for=1.2.3.4"),
        ]);
        let (ip, host) = (ip(), HeaderValue::from_static("app"));
        let d = Downstream {
            client: Some(&ip),
            trusted: false,
            tls: false,
            host: Some(&host),
        };
        sanitize(&mut h, d);
        assert!(h.keys().all(|k| !k.as_str().starts_with("x-portcullis-")));
        assert_eq!(get(&h, "x-forwarded-for").unwrap(), "192.0.2.7");
        assert_eq!(get(&h, "x-forwarded-proto").unwrap(), "http");
        assert_eq!(get(&h, "x-forwarded-host").unwrap(), "app");
        assert!(get(&h, "forwarded").is_none());
    }

    #[test]
    fn trusted_proxy_chain_is_appended() {
        let mut h = map(&[
            ("X-Forwarded-For", "1.2.3.4"),
            ("X-Forwarded-For", "5.6.7.8"),
            ("X-Forwarded-Proto", "https"),
        ]);
        let (ip, host) = (ip(), HeaderValue::from_static("app"));
        let d = Downstream {
            client: Some(&ip),
            trusted: true,
            tls: false,
            host: Some(&host),
        };
        sanitize(&mut h, d);
        assert_eq!(get(&h, "x-forwarded-for").unwrap(), "1.2.3.4, 5.6.7.8, 192.0.2.7");
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(get(&h, "x-forwarded-proto").unwrap(), "https");
    }

    #[test]
    fn split_cookies_are_joined() {
        let mut h = map(&[("cookie", "a=1"), ("cookie", "b=2")]);
        let d = Downstream {
            client: None,
            trusted: false,
            tls: true,
            host: None,
        };
        sanitize(&mut h, d);
        assert_eq!(h.get_all("cookie").iter().count(), 1);
        assert_eq!(get(&h, "cookie").unwrap(), "a=1; b=2");
        assert_eq!(get(&h, "x-forwarded-proto").unwrap(), "https");
        assert!(get(&h, "x-forwarded-for").is_none() && get(&h, "x-forwarded-host").is_none());
    }

    #[test]
    fn hop_by_hop_fields_are_removed_and_upgrades_kept() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["accept"]);
        let mut h = map(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "k"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(get(&h, "connection").unwrap(), "upgrade");
        assert_eq!(get(&h, "upgrade").unwrap(), "websocket");
        assert!(get(&h, "sec-websocket-key").is_some());
        let mut h = map(&[("upgrade", "h2c")]);
        strip_hop_by_hop(&mut h);
        assert!(get(&h, "upgrade").is_none(), "no upgrade without Connection: upgrade");
    }

    #[test]
    fn own_cookies_are_removed() {
        let names = ["__Host-portcullis", "__Host-portcullis-login"];
        let mut h = map(&[("cookie", "a=1; __Host-portcullis=s; __Host-portcullis-login=l; b=2")]);
        strip_own_cookies(&mut h, &names);
        assert_eq!(get(&h, "cookie").unwrap(), "a=1; b=2");
        let mut h = map(&[("cookie", "a=1; b=2")]);
        strip_own_cookies(&mut h, &names);
        assert_eq!(get(&h, "cookie").unwrap(), "a=1; b=2", "none of ours: untouched");
        let mut h = map(&[("cookie", "__Host-portcullis=s")]);
        strip_own_cookies(&mut h, &names);
        assert!(get(&h, "cookie").is_none());
        // Split fields (HTTP/2) are joined, and ours go from any of them.
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1"));
        h.append(COOKIE, HeaderValue::from_static("__Host-portcullis=s"));
        strip_own_cookies(&mut h, &names);
        assert_eq!(h.get_all(COOKIE).iter().collect::<Vec<_>>(), ["a=1"]);
        // A byte that is not visible ASCII elsewhere does not keep ours in.
        let mut h = HeaderMap::new();
        h.insert(
            COOKIE,
            HeaderValue::from_bytes(b"x=caf\xc3\xa9; __Host-portcullis=s").unwrap(),
        );
        strip_own_cookies(&mut h, &names);
        assert_eq!(h.get(COOKIE).unwrap().as_bytes(), b"x=caf\xc3\xa9");
    }
}
