//! Any check an ingress could send — any path, any forwarding header values — is described or
//! refused with a 4xx, for every ingress kind; never a panic. A described request's URI is in
//! origin form, and the answer page's target is always a path on this host.
#![no_main]
use libfuzzer_sys::fuzz_target;
use portcullis::config::Ingress;
use portcullis::edge::forward_auth::{answer_target, describe};

const HEADERS: [&str; 11] = [
    "host",
    "x-original-method",
    "x-original-uri",
    "x-original-url",
    "x-real-ip",
    "x-forwarded-method",
    "x-forwarded-uri",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-for",
];

fuzz_target!(|data: &[u8]| {
    // The first line is the check's path; each further line a header value, in HEADERS' order.
    let mut lines = data.split(|&b| b == b'\n');
    let Some(target) = lines.next().and_then(|t| std::str::from_utf8(t).ok()) else {
        return;
    };
    let Ok(mut req) = http::Request::get(target).body(()) else {
        return;
    };
    for (name, value) in HEADERS.iter().zip(lines) {
        if let Ok(v) = http::HeaderValue::from_bytes(value) {
            req.headers_mut().insert(*name, v);
        }
    }
    let (parts, ()) = req.into_parts();
    for ingress in [Ingress::Nginx, Ingress::IngressNginx, Ingress::Caddy, Ingress::Traefik, Ingress::Envoy] {
        match describe(ingress, &parts, false, std::net::Ipv4Addr::LOCALHOST.into()) {
            Ok(d) => assert!(d.parts.uri.scheme().is_none() && d.parts.uri.path().starts_with('/')),
            Err(p) => assert!((400..500).contains(&p.status)),
        }
    }
    if let Some(t) = answer_target(&parts) {
        assert!(t.starts_with('/') && !t.starts_with("//"));
    }
});
