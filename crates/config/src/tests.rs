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
require = "none"
host = "app.example.com"
path_prefix = "/api"
upstream = "app"

[[routes]]
require = "none"
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
require = "none"
upstream = "nope"

[[routes]]
require = "none"
host = "bad host"
path_prefix = "api"
upstream = "app"

[[routes]]
require = "none"
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
        "routes[2].colour",
    ] {
        assert!(keys.contains(&want), "missing {want} in {errs}");
    }
    let text = errs.to_string();
    assert!(
        text.contains(r#"upstreams.app.addresses[0]: "10.0.0.1:99999" is not a valid socket address"#),
        "{text}"
    );
    assert!(text.contains("colour"), "{text}");
}

#[test]
fn every_unknown_key_is_named_not_only_the_first() {
    let text = format!(
        "{}\n[[routes]]\nrequire = \"none\"\nupstream = \"app\"\ncolour = 1\nflavour = 2\n[bogus]\nx = 1\n",
        "[[listeners]]\naddress = \"127.0.0.1:8080\"\n[server]\nthreadz = 2\nbogus = 1\n[upstreams.app]\naddresses = [\"127.0.0.1:9\"]\nhealth_chek = {}\n"
    );
    let errs = Config::parse(&text, Path::new(".")).unwrap_err();
    let mut keys: Vec<&str> = errs.0.iter().map(|e| e.key.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "bogus",
            "routes[0].colour",
            "routes[0].flavour",
            "server.bogus",
            "server.threadz",
            "upstreams.app.health_chek",
        ],
        "{errs}"
    );
    assert!(errs.0.iter().all(|e| e.message.starts_with("unknown key")), "{errs}");
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
require = "none"
upstream = "a"
[[routes]]
require = "none"
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
        ("PORTCULLIS__ADMIN__LISTEN".to_string(), "127.0.0.1:9999".to_string()),
        ("PORTCULLIS__SERVER__THREADS".to_string(), "3".to_string()),
        ("PORTCULLIS__UPSTREAMS__APP__READ_TIMEOUT".to_string(), "7s".to_string()),
        ("UNRELATED".to_string(), "x".to_string()),
    ];
    let cfg = Config::parse_with_overrides(GOOD, Path::new("."), env, "node").unwrap();
    assert_eq!(cfg.admin.listen.port(), 9999);
    assert_eq!(cfg.server.threads, 3);
    assert_eq!(cfg.upstreams[0].timeouts.read, Duration::from_secs(7));

    let bad = [("PORTCULLIS__SERVER__GRACE_PERIOD__X".to_string(), "1".to_string())];
    let errs = Config::parse_with_overrides(GOOD, Path::new("."), bad, "node").unwrap_err();
    assert_eq!(errs.0[0].key, "PORTCULLIS__SERVER__GRACE_PERIOD__X");
}

const ENTRA: &str = r#"
[entra]
tenant_id = "11111111-2222-3333-4444-555555555555"
client_id = "AAAAAAAA-bbbb-cccc-dddd-eeeeeeeeeeee"
cloud = "us_gov_high"

[[listeners]]
address = "127.0.0.1:8080"

[upstreams.app]
addresses = ["127.0.0.1:8901"]

[[routes]]
upstream = "app"
groups_any = ["aaaaaaaa-0000-0000-0000-000000000001"]
"#;

#[test]
fn entra_section_and_authenticated_default() {
    let cfg = Config::parse(ENTRA, Path::new(".")).unwrap();
    let e = cfg.entra.as_ref().unwrap();
    assert_eq!(e.client_id, "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee");
    assert_eq!(
        e.allowed_tenants,
        vec!["11111111-2222-3333-4444-555555555555".to_string()]
    );
    assert_eq!(e.authority_url, "https://login.microsoftonline.us");
    assert_eq!(e.graph_url, "https://graph.microsoft.us");
    assert_eq!(cfg.routes[0].policy.require, Require::CompliantDevice);
    assert_eq!(cfg.routes[0].policy, RoutePolicy::default());
    assert_eq!(cfg.routes[0].groups_any.len(), 1);
    assert!(cfg.session.cookie_key.is_none());
    assert_eq!(cfg.session.cookie_name, "__Host-portcullis");
}

#[test]
fn the_home_tenant_is_always_the_first_allowed_tenant() {
    let other = "99999999-2222-3333-4444-555555555555";
    let home = "11111111-2222-3333-4444-555555555555";
    let text = ENTRA.replace(
        "cloud = \"us_gov_high\"",
        &format!("cloud = \"us_gov_high\"\nallowed_tenants = [\"{other}\", \"{home}\"]"),
    );
    let cfg = Config::parse(&text, Path::new(".")).unwrap();
    let e = cfg.entra.as_ref().unwrap();
    assert_eq!(e.allowed_tenants, vec![home.to_string(), other.to_string()]);
}

#[test]
fn entra_errors_and_secrets_stay_hidden() {
    let text = ENTRA
        .replace("us_gov_high", "germany")
        .replace("11111111-2222-3333-4444-555555555555", "contoso")
        .replace("aaaaaaaa-0000-0000-0000-000000000001", "engineers")
        + "\n[session]\ncookie_key = \"hunter2-not-base64!\"\n";
    let errs = Config::parse(&text, Path::new(".")).unwrap_err().to_string();
    for key in [
        "entra.cloud",
        "entra.tenant_id",
        "routes[0].groups_any[0]",
        "session.cookie_key",
    ] {
        assert!(errs.contains(key), "{key} missing in {errs}");
    }
    assert!(errs.contains("2021"), "{errs}");
    assert!(!errs.contains("hunter2"), "a secret leaked into an error: {errs}");
    let with_secret = format!("{ENTRA}\n[session]\ncookie_key = \"{}\"\n", "A".repeat(43) + "=");
    let cfg = Config::parse(&with_secret, Path::new(".")).unwrap();
    assert!(
        !format!("{cfg:?}").contains("AAAAAAAAAA"),
        "Debug must not print secrets"
    );
}

#[test]
fn authenticated_routes_need_entra() {
    let text = GOOD.replace("require = \"none\"\nupstream = \"app\"\n", "upstream = \"app\"\n");
    let errs = Config::parse(&text, Path::new(".")).unwrap_err().to_string();
    assert!(errs.contains("routes[1].require") && errs.contains("[entra]"), "{errs}");
}

#[test]
fn one_app_credential_at_most() {
    let cert = ENTRA.replace(
        "cloud = \"us_gov_high\"",
        "client_certificate = \"c.pem\"\nclient_certificate_key = \"k.pem\"",
    );
    let cfg = Config::parse(&cert, Path::new("/etc/p")).unwrap();
    assert!(matches!(
        cfg.entra.unwrap().credential,
        Some(ClientCredentialConfig::Certificate { .. })
    ));
    let both = ENTRA.replace(
        "cloud = \"us_gov_high\"",
        "client_secret = \"s\"\nclient_assertion_file = \"f\"",
    );
    assert!(Config::parse(&both, Path::new("."))
        .unwrap_err()
        .to_string()
        .contains("use one credential"));
    let half = ENTRA.replace("cloud = \"us_gov_high\"", "client_certificate = \"c.pem\"");
    assert!(Config::parse(&half, Path::new("."))
        .unwrap_err()
        .to_string()
        .contains("entra.client_certificate_key"));
}

#[test]
fn enumerated_settings_name_every_valid_value() {
    let text = GOOD.replacen(
        "require = \"none\"",
        "require = \"compliant\"\nmode = \"audit\"\non_stale = \"maybe\"",
        1,
    ) + "\n[device]\nsources = [\"token\", \"serial\"]\n";
    let errs = Config::parse(&text, Path::new(".")).unwrap_err().0;
    let find = |key: &str| {
        errs.iter()
            .find(|e| e.key == key)
            .unwrap_or_else(|| panic!("no error for {key}: {errs:?}"))
            .message
            .clone()
    };
    let m = find("routes[0].require");
    for name in [
        "\"compliant_device\"",
        "\"registered_device\"",
        "\"authenticated\"",
        "\"none\"",
    ] {
        assert!(m.contains(name), "{m}");
    }
    assert!(find("routes[0].mode").contains("\"report_only\""));
    assert!(find("routes[0].on_stale").contains("\"allow_last_known\""));
    assert!(find("device.sources[1]").contains("\"certificate\""));
}

#[test]
fn parsing_reads_no_files_and_takes_the_node_name_it_is_given() {
    // A templates directory that does not exist is the landing's to report (check-config
    // and serve build the landings); parsing only resolves the path.
    let text = format!("{GOOD}\n[landing]\ntemplates_dir = \"/nonexistent/templates\"\n");
    let cfg = Config::parse_with_overrides(&text, Path::new("."), std::iter::empty(), "gw-3").unwrap();
    assert_eq!(
        cfg.landing.templates_dir.as_deref(),
        Some(Path::new("/nonexistent/templates"))
    );
    assert_eq!(cfg.sync.node_name, "gw-3");
}

#[test]
fn store_urls_pick_the_backend_and_never_echo_a_password() {
    let parse = |store: &str| Config::parse(&format!("{GOOD}\n[store]\n{store}\n"), Path::new("/etc/portcullis"));
    match parse("").unwrap().store {
        StoreConfig::Sqlite { path } => assert_eq!(path, Path::new("/etc/portcullis/portcullis.db")),
        other => panic!("{other:?}"),
    }
    match parse("url = \"sqlite:///var/lib/p.db\"").unwrap().store {
        StoreConfig::Sqlite { path } => assert_eq!(path, Path::new("/var/lib/p.db")),
        other => panic!("{other:?}"),
    }
    match parse("sqlite_path = \"p.db\"").unwrap().store {
        StoreConfig::Sqlite { path } => assert_eq!(path, Path::new("/etc/portcullis/p.db")),
        other => panic!("{other:?}"),
    }
    let cfg = parse(
        "url = \"postgres://gw:hunter2@db.example.com:5433/portcullis?sslmode=verify-full&target_session_attrs=read-write\"\npool_size = 4\nconnect_timeout = \"3s\"",
    )
    .unwrap();
    let StoreConfig::Postgres(p) = &cfg.store else { panic!() };
    assert_eq!(p.display, "postgres://gw@db.example.com:5433/portcullis");
    assert_eq!(
        (p.pool_size, p.connect_timeout, p.query_timeout),
        (4, Duration::from_secs(3), Duration::from_secs(10))
    );
    assert!(
        !format!("{:?} {}", cfg.store, cfg.summary()).contains("hunter2"),
        "the password never prints"
    );
    let p = parse("url = \"postgres://gw@db/p\"\npassword_file = \"pg-pass\"").unwrap();
    let StoreConfig::Postgres(p) = p.store else { panic!() };
    assert_eq!(p.password_file.as_deref(), Some(Path::new("/etc/portcullis/pg-pass")));

    let errs = parse("url = \"mysql://root:hunter2@db/p\"").unwrap_err().to_string();
    assert!(errs.contains("store.url") && !errs.contains("hunter2"), "{errs}");
    let errs = parse("url = \"postgres://:hunter2@/p\"").unwrap_err().to_string();
    assert!(errs.contains("store.url") && !errs.contains("hunter2"), "{errs}");
    let errs = parse("sqlite_path = \"a.db\"\npassword = \"x\"")
        .unwrap_err()
        .to_string();
    assert!(errs.contains("store.password: is for a postgres://"), "{errs}");
    let errs = parse("url = \"postgres://db/p\"\npassword = \"x\"\npassword_file = \"f\"")
        .unwrap_err()
        .to_string();
    assert!(errs.contains("store.password_file"), "{errs}");
    let errs = parse("url = \"postgres://db/p\"\npool_size = 0")
        .unwrap_err()
        .to_string();
    assert!(errs.contains("store.pool_size"), "{errs}");
    let errs = parse("url = \"postgres://db/p\"\nquery_timeout = \"5s\"")
        .unwrap_err()
        .to_string();
    assert!(
        errs.contains("store.query_timeout: must be longer than store.connect_timeout"),
        "{errs}"
    );
    let errs = parse("sqlite_path = \"a.db\"\nquery_timeout = \"20s\"")
        .unwrap_err()
        .to_string();
    assert!(errs.contains("store.query_timeout: is for a postgres://"), "{errs}");
}

#[test]
fn forward_auth_listeners_name_their_ingress_and_whom_they_trust() {
    let with = |listener: &str| {
        GOOD.replace(
            "address = \"127.0.0.1:8080\"",
            &format!("address = \"127.0.0.1:8080\"\n\n[[listeners]]\naddress = \"127.0.0.1:9091\"\n{listener}"),
        )
    };
    let cfg = Config::parse(&with("forward_auth = { ingress = \"caddy\" }"), Path::new("/")).unwrap();
    let fa = cfg.listeners[1].forward_auth.as_ref().unwrap();
    assert_eq!(fa.ingress, Ingress::Caddy);
    // Loopback by default: the ingress on the same host.
    assert!(fa.trusted.iter().any(|n| n.contains("127.0.0.9".parse().unwrap())));
    assert!(fa.trusted.iter().any(|n| n.contains("::1".parse().unwrap())));
    assert!(!fa.trusted.iter().any(|n| n.contains("10.0.0.1".parse().unwrap())));
    assert!(cfg.listeners[0].forward_auth.is_none());

    let cfg = Config::parse(
        &with("forward_auth = { ingress = \"nginx\", trusted = [\"10.1.0.0/16\"] }"),
        Path::new("/"),
    )
    .unwrap();
    let fa = cfg.listeners[1].forward_auth.as_ref().unwrap();
    assert!(fa.trusted[0].contains("10.1.2.3".parse().unwrap()));
    assert!(!fa.trusted[0].contains("127.0.0.1".parse().unwrap()));

    let errors = Config::parse(
        &with("forward_auth = { ingress = \"haproxy\", trusted = [\"10.0.0.0/40\"], mode = \"x\" }"),
        Path::new("/"),
    )
    .unwrap_err();
    let keys: Vec<&str> = errors.0.iter().map(|e| e.key.as_str()).collect();
    for key in [
        "listeners[1].forward_auth.ingress",
        "listeners[1].forward_auth.trusted[0]",
        "listeners[1].forward_auth.mode",
    ] {
        assert!(keys.contains(&key), "{key} not in {keys:?}");
    }
    let errors = Config::parse(&with("forward_auth = { trusted = [] }"), Path::new("/")).unwrap_err();
    let keys: Vec<&str> = errors.0.iter().map(|e| e.key.as_str()).collect();
    assert!(keys.contains(&"listeners[1].forward_auth.ingress"), "{keys:?}");
    assert!(keys.contains(&"listeners[1].forward_auth.trusted"), "{keys:?}");
}
