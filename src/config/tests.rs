use super::*;

const GOOD: &str = r#"
[server]
grace_period = "2s"
trusted_proxies = ["10.0.0.0/8"]

[admin]
listen = "127.0.0.1:9090"

[[listeners]]
address = "127.0.0.1:8080"

[upstreams.app]
addresses = ["127.0.0.1:8901", "localhost:8902"]
health_check = { kind = "http", path = "/healthz", interval = "1s" }

[[routes]]
host = "app.example.com"
path_prefix = "/api"
upstream = "app"

[[routes]]
upstream = "app"
"#;

#[test]
fn good_file_parses() {
    let cfg = Config::parse(GOOD, Path::new("/etc/portcullis")).unwrap();
    assert_eq!(cfg.server.grace_period, Duration::from_secs(2));
    assert_eq!(cfg.routes.len(), 2);
    assert_eq!(cfg.routes[0].name, "app.example.com/api");
    assert_eq!(cfg.routes[1].host, HostPattern::Any);
    assert_eq!(cfg.upstreams[0].addresses[1].host, "localhost");
    assert!(matches!(
        cfg.upstreams[0].health_check.as_ref().unwrap().kind,
        HealthCheckKind::Http { .. }
    ));
    assert!(cfg.summary().contains("2 route(s)"));
}

#[test]
fn every_error_is_reported_with_its_key() {
    let bad = r#"
[server]
grace_period = "forever"
threads = 0
trusted_proxies = ["10.0.0.0/40"]

[[listeners]]
address = "127.0.0.1:99999"

[[listeners]]
address = "127.0.0.1:8443"
tls = { certificates = [] }

[upstreams.app]
addresses = ["10.0.0.1:99999", "ok:80"]
health_check = { kind = "udp" }

[[routes]]
upstream = "nope"

[[routes]]
host = "bad host"
path_prefix = "api"
upstream = "app"

[[routes]]
upstream = "app"
colour = "blue"
"#;
    let errs = Config::parse(bad, Path::new(".")).unwrap_err();
    let keys: Vec<&str> = errs.0.iter().map(|e| e.key.as_str()).collect();
    for want in [
        "server.threads",
        "server.grace_period",
        "server.trusted_proxies[0]",
        "listeners[0].address",
        "listeners[1].tls.certificates",
        "upstreams.app.addresses[0]",
        "upstreams.app.health_check.kind",
        "routes[0].upstream",
        "routes[1].host",
        "routes[1].path_prefix",
        "routes[2]",
    ] {
        assert!(keys.contains(&want), "missing {want} in {errs}");
    }
    let text = errs.to_string();
    assert!(
        text.contains(
            r#"upstreams.app.addresses[0]: "10.0.0.1:99999" is not a valid socket address"#
        ),
        "{text}"
    );
    assert!(text.contains("colour"), "{text}");
}

#[test]
fn syntax_error_is_reported() {
    let errs = Config::parse("[server\nthreads=1", Path::new(".")).unwrap_err();
    assert_eq!(errs.0.len(), 1);
    let errs = Config::parse("bogus = 1", Path::new(".")).unwrap_err();
    assert!(errs.to_string().contains("bogus"), "{errs}");
}

#[test]
fn duplicate_routes_and_addresses_are_refused() {
    let text = r#"
[[listeners]]
address = "127.0.0.1:8080"
[[listeners]]
address = "127.0.0.1:8080"
[upstreams.a]
addresses = ["127.0.0.1:1"]
[[routes]]
upstream = "a"
[[routes]]
upstream = "a"
path_prefix = "/"
"#;
    let errs = Config::parse(text, Path::new(".")).unwrap_err().to_string();
    assert!(errs.contains("listeners[1].address"), "{errs}");
    assert!(errs.contains("routes[1]"), "{errs}");
}

#[test]
fn environment_overrides_file_values() {
    let env = [
        (
            "PORTCULLIS__ADMIN__LISTEN".to_string(),
            "127.0.0.1:9999".to_string(),
        ),
        ("PORTCULLIS__SERVER__THREADS".to_string(), "3".to_string()),
        (
            "PORTCULLIS__UPSTREAMS__APP__READ_TIMEOUT".to_string(),
            "7s".to_string(),
        ),
        ("UNRELATED".to_string(), "x".to_string()),
    ];
    let cfg = Config::parse_with_overrides(GOOD, Path::new("."), env).unwrap();
    assert_eq!(cfg.admin.listen.port(), 9999);
    assert_eq!(cfg.server.threads, 3);
    assert_eq!(cfg.upstreams[0].timeouts.read, Duration::from_secs(7));

    let bad = [(
        "PORTCULLIS__SERVER__GRACE_PERIOD__X".to_string(),
        "1".to_string(),
    )];
    let errs = Config::parse_with_overrides(GOOD, Path::new("."), bad).unwrap_err();
    assert_eq!(errs.0[0].key, "PORTCULLIS__SERVER__GRACE_PERIOD__X");
}
