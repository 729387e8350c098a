//! Checks as each ingress sends them, in the shapes their documentation gives (nginx's
//! `auth_request` with the documented snippet, Caddy's `forward_auth`, Traefik's ForwardAuth,
//! Envoy's HTTP `ext_authz` with `path_prefix = "/verify"`).

use super::*;

fn request(method: &str, target: &str, headers: &[(&str, &str)]) -> Parts {
    let mut b = http::Request::builder().method(method).uri(target);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    b.body(()).unwrap().into_parts().0
}

const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn host(d: &Described) -> &str {
    d.parts.headers[HOST].to_str().unwrap()
}

#[test]
fn nginx_auth_request_with_the_documented_snippet() {
    let check = request(
        "GET",
        "/auth",
        &[
            ("host", "portcullis"),
            ("x-original-method", "POST"),
            ("x-original-uri", "/docs/page?q=1"),
            ("x-forwarded-host", "app.contoso.test"),
            ("x-forwarded-proto", "https"),
            ("x-real-ip", "203.0.113.7"),
            ("authorization", "Bearer abc"),
            ("cookie", "portcullis=sealed"),
            ("accept", "text/html"),
            // What a client sent and nginx passed on: not nginx's to describe with.
            ("x-forwarded-uri", "/public"),
            ("x-forwarded-method", "GET"),
        ],
    );
    let d = describe(Ingress::Nginx, &check, false, PEER).unwrap();
    assert_eq!(d.answering, Answering::Status);
    assert_eq!(d.parts.method, http::Method::POST);
    assert_eq!(d.parts.uri, "/docs/page?q=1");
    assert_eq!(host(&d), "app.contoso.test");
    assert!(d.tls);
    assert_eq!(d.client, "203.0.113.7".parse::<IpAddr>().unwrap());
    // The credentials and the browser's headers stay; the forwarding headers are gone.
    for kept in ["authorization", "cookie", "accept"] {
        assert!(d.parts.headers.contains_key(kept), "{kept}");
    }
    for gone in ["x-original-uri", "x-forwarded-uri", "x-forwarded-host", "x-real-ip"] {
        assert!(!d.parts.headers.contains_key(gone), "{gone}");
    }
    // The same check at /verify (nginx's error_page location) wants the full answer.
    let mut full = check.clone();
    full.uri = "/verify".parse().unwrap();
    assert_eq!(
        describe(Ingress::Nginx, &full, false, PEER).unwrap().answering,
        Answering::Full
    );
}

#[test]
fn caddy_and_traefik_forward_auth() {
    // Both send a GET to the configured URI with the original headers and X-Forwarded-*.
    for ingress in [Ingress::Caddy, Ingress::Traefik] {
        let check = request(
            "GET",
            "/verify",
            &[
                ("host", "app.contoso.test"),
                ("x-forwarded-method", "DELETE"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "app.contoso.test:8443"),
                ("x-forwarded-uri", "/api/items/7"),
                ("x-forwarded-for", "198.51.100.1, 203.0.113.9"),
                // A client's own header, passed through: ignored for these ingresses.
                ("x-original-uri", "/public"),
            ],
        );
        let d = describe(ingress, &check, false, PEER).unwrap();
        assert_eq!(d.answering, Answering::Full, "{ingress:?}");
        assert_eq!(d.parts.method, http::Method::DELETE);
        assert_eq!(d.parts.uri, "/api/items/7");
        assert_eq!(host(&d), "app.contoso.test:8443");
        assert!(d.tls);
        // The last address is the one the ingress added.
        assert_eq!(d.client, "203.0.113.9".parse::<IpAddr>().unwrap());
    }
}

#[test]
fn envoy_ext_authz_http_service() {
    // path_prefix "/verify": the original path follows it; method, Host and headers are the
    // original request's.
    let check = request(
        "POST",
        "/verify/api/items?page=2",
        &[
            ("host", "app.contoso.test"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-request-id", "5b1f"),
            ("x-envoy-expected-rq-timeout-ms", "200"),
            ("content-length", "0"),
            ("x-forwarded-host", "evil.test"),
        ],
    );
    let d = describe(Ingress::Envoy, &check, false, PEER).unwrap();
    assert_eq!(d.answering, Answering::Full);
    assert_eq!(d.parts.method, http::Method::POST);
    assert_eq!(d.parts.uri, "/api/items?page=2");
    assert_eq!(host(&d), "app.contoso.test", "Envoy's Host is the original authority");
    assert_eq!(d.client, "203.0.113.9".parse::<IpAddr>().unwrap());
    // Envoy has no bare /verify check: the prefix is always followed by a path.
    let bare = request("GET", "/verify", &[("host", "app.contoso.test")]);
    assert_eq!(describe(Ingress::Envoy, &bare, false, PEER).unwrap_err().status, 404);
}

#[test]
fn own_endpoints_are_served_as_proxied() {
    let callback = request(
        "POST",
        "/.portcullis/callback",
        &[
            ("host", "app.contoso.test"),
            ("x-forwarded-proto", "https"),
            ("x-original-uri", "/elsewhere"),
        ],
    );
    for ingress in [Ingress::Nginx, Ingress::Caddy, Ingress::Traefik, Ingress::Envoy] {
        let d = describe(ingress, &callback, false, PEER).unwrap();
        assert_eq!(d.answering, Answering::Direct);
        assert_eq!(d.parts.method, http::Method::POST);
        assert_eq!(d.parts.uri, "/.portcullis/callback");
        assert!(d.tls);
        assert_eq!(d.client, PEER);
    }
}

#[test]
fn bad_checks_are_refused_with_what_is_wrong() {
    // (name, check path, headers, status, reason)
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], u16, &'a str);
    let cases: &[Case] = &[
        ("other path", "/", &[("host", "a.test")], 404, "not_a_check"),
        (
            "no original URI",
            "/auth",
            &[("x-forwarded-host", "a.test")],
            400,
            "bad_check",
        ),
        (
            "absolute URI",
            "/auth",
            &[("x-original-uri", "http://evil.test/x"), ("x-forwarded-host", "a.test")],
            400,
            "bad_check",
        ),
        (
            "bad method",
            "/auth",
            &[
                ("x-original-uri", "/"),
                ("x-original-method", "G E T"),
                ("x-forwarded-host", "a.test"),
            ],
            400,
            "bad_check",
        ),
        (
            "bad scheme",
            "/auth",
            &[
                ("x-original-uri", "/"),
                ("x-forwarded-host", "a.test"),
                ("x-forwarded-proto", "gopher"),
            ],
            400,
            "bad_check",
        ),
        ("no host", "/auth", &[("x-original-uri", "/")], 400, "bad_check"),
    ];
    for (name, target, headers, status, reason) in cases {
        let p = describe(Ingress::Nginx, &request("GET", target, headers), false, PEER).unwrap_err();
        assert_eq!((p.status, p.reason), (*status, *reason), "{name}: {}", p.detail);
    }
}

#[test]
fn ingress_nginx_auth_url() {
    // The controller sets X-Original-URL, X-Original-Method and X-Real-IP, and passes the
    // client's headers on: a client's X-Original-URI or X-Forwarded-Host must not count.
    let check = request(
        "GET",
        "/auth",
        &[
            ("host", "portcullis.portcullis.svc"),
            ("x-original-url", "https://app.contoso.test/reports/q3?x=1"),
            ("x-original-method", "GET"),
            ("x-real-ip", "203.0.113.7"),
            ("x-sent-from", "nginx-ingress-controller"),
            ("x-auth-request-redirect", "/reports/q3?x=1"),
            ("x-original-uri", "/public"),
            ("x-forwarded-host", "other.test"),
            ("x-forwarded-proto", "http"),
        ],
    );
    let d = describe(Ingress::IngressNginx, &check, false, PEER).unwrap();
    assert_eq!(d.answering, Answering::Status);
    assert_eq!(d.parts.uri, "/reports/q3?x=1");
    assert_eq!(host(&d), "app.contoso.test");
    assert!(d.tls, "the scheme is the URL's");
    assert_eq!(d.client, "203.0.113.7".parse::<IpAddr>().unwrap());
    let mut without = check.clone();
    without.headers.remove("x-original-url");
    let p = describe(Ingress::IngressNginx, &without, false, PEER).unwrap_err();
    assert_eq!((p.status, p.reason), (400, "bad_check"));
    let mut relative = check;
    relative
        .headers
        .insert("x-original-url", HeaderValue::from_static("/reports"));
    assert_eq!(
        describe(Ingress::IngressNginx, &relative, false, PEER)
            .unwrap_err()
            .status,
        400
    );
}

#[test]
fn the_answer_page_only_answers_for_this_host() {
    let asked = |target: &str| request("GET", target, &[("host", "app.contoso.test")]);
    let target = |t: &str| answer_target(&asked(t));
    assert_eq!(
        target("/.portcullis/answer?rd=%2Freports%3Fq%3D1").as_deref(),
        Some("/reports?q=1")
    );
    assert_eq!(
        target("/.portcullis/answer?rd=https%3A%2F%2Fapp.contoso.test%2Freports").as_deref(),
        Some("/reports")
    );
    for bad in [
        "/.portcullis/answer",
        "/.portcullis/answer?rd=https%3A%2F%2Fevil.test%2Fx",
        "/.portcullis/answer?rd=%2F%2Fevil.test%2Fx",
        "/.portcullis/answer?rd=javascript%3Aalert(1)",
    ] {
        assert_eq!(target(bad), None, "{bad}");
    }
}

#[test]
fn nginx_host_and_port_are_the_ones_it_routed_by() {
    let check = |host: &str, port: Option<&str>, proto: &str| {
        let mut headers = vec![
            ("x-original-uri", "/"),
            ("x-forwarded-host", host),
            ("x-forwarded-proto", proto),
        ];
        if let Some(p) = port {
            headers.push(("x-forwarded-port", p));
        }
        describe(Ingress::Nginx, &request("GET", "/auth", &headers), false, PEER)
    };
    let host_of = |d: Result<Described, Problem>| d.map(|d| host(&d).to_string()).map_err(|p| p.status);
    assert_eq!(
        host_of(check("wiki.test", Some("443"), "https")),
        Ok("wiki.test".into())
    );
    assert_eq!(
        host_of(check("wiki.test", Some("8443"), "https")),
        Ok("wiki.test:8443".into())
    );
    assert_eq!(host_of(check("wiki.test", Some("80"), "http")), Ok("wiki.test".into()));
    assert_eq!(host_of(check("[::1]", Some("8443"), "https")), Ok("[::1]:8443".into()));
    assert_eq!(host_of(check("wiki.test", None, "https")), Ok("wiki.test".into()));
    assert_eq!(host_of(check("wiki.test", Some("x"), "https")), Err(400));
}
