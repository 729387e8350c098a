//! Device compliance enforcement through the real gateway, with tokens from the Entra emulator
//! and posture rows written to a real SQLite store by this test process (the sync is off here;
//! tests/it/sync.rs covers it).

use std::path::{Path, PathBuf};
use std::time::Duration;

use portcullis::emulator::fixtures;
use portcullis::store::sqlite::SqliteStore;
use portcullis::store::*;
use serde_json::json;

use crate::harness::{client, echo, free_port, make_certs, poll_until, pool, Emulator, Gateway, Upstream};
use crate::tls::tls_listener;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub fn entra(device: &str, compliant: Option<bool>, enabled: bool, seen_at: i64) -> EntraDevice {
    EntraDevice {
        device_id: device.into(),
        object_id: format!("obj-{device}"),
        display_name: None,
        account_enabled: Some(enabled),
        is_compliant: compliant,
        is_managed: Some(true),
        trust_type: Some("Workplace".into()),
        operating_system: Some("MacMDM".into()),
        os_version: Some("14.5".into()),
        compliance_expiration: None,
        last_sign_in: None,
        removed: false,
        seen_at,
    }
}

fn computer(jamf_id: &str, device: &str, kind: AccountType, reg: RegistrationState, os: &str) -> Computer {
    Computer {
        jamf_id: jamf_id.into(),
        udid: None,
        serial: Some(format!("SER{jamf_id}")),
        name: Some(format!("Mac {jamf_id}")),
        model: None,
        os_version: Some(os.into()),
        os_build: None,
        managed: true,
        filevault: Some("ALL_ENCRYPTED".into()),
        last_inventory: None,
        last_contact: None,
        seen_at: now(),
        accounts: vec![LocalAccount {
            username: format!("user{jamf_id}"),
            account_type: kind,
            entra_user_id: None,
            entra_device_id: Some(device.into()),
            registration: reg,
        }],
    }
}

/// Device ids for the decision-table rows beyond the personas.
const UNKNOWN: &str = "e0000000-0000-4000-8000-000000000001";
const NOT_REGISTERED: &str = "e0000000-0000-4000-8000-000000000002";
const DISABLED: &str = "e0000000-0000-4000-8000-000000000003";
const UNSUPPORTED: &str = "e0000000-0000-4000-8000-000000000004";
const STALE: &str = "e0000000-0000-4000-8000-000000000005";

/// Personas as last synced at `synced_at`, plus the extra devices, seen now.
pub(crate) async fn seeded_store(path: &Path, synced_at: i64) -> SqliteStore {
    let s = SqliteStore::open(path).await.unwrap();
    portcullis::demo::seed(&s, synced_at).await.unwrap();
    s.upsert_entra_devices(&[
        entra(NOT_REGISTERED, Some(true), true, now()),
        entra(DISABLED, Some(true), false, now()),
        entra(UNSUPPORTED, Some(true), true, now()),
    ])
    .await
    .unwrap();
    s.upsert_computers(&[
        computer(
            "900",
            NOT_REGISTERED,
            AccountType::Local,
            RegistrationState::Deactivated,
            "14.5",
        ),
        computer(
            "901",
            UNSUPPORTED,
            AccountType::Network,
            RegistrationState::Activated,
            "14.5",
        ),
    ])
    .await
    .unwrap();
    s
}

pub(crate) fn config(emu: &Emulator, app: &Upstream, db: &Path, landing: &str, routes: &str) -> String {
    format!(
        "{}{}\n[store]\nsqlite_path = \"{}\"\n\n[device]\nchange_poll_interval = \"200ms\"\n\n[sync]\nenabled = false\n\n[landing]\n{landing}\n\n{routes}\n",
        emu.entra_section(""),
        pool("app", &[app.addr], ""),
        db.display()
    )
}

const ROUTES: &str = "
[[routes]]
name = \"app\"
upstream = \"app\"

[[routes]]
name = \"strict-age\"
path_prefix = \"/fresh\"
upstream = \"app\"
max_posture_age = \"1m\"

[[routes]]
name = \"engineering\"
path_prefix = \"/eng\"
upstream = \"app\"
groups_any = [\"6a000000-0000-4000-8000-000000000002\"]

[[routes]]
name = \"signed\"
path_prefix = \"/signed\"
upstream = \"app\"
assertion = true

[[routes]]
name = \"audit\"
path_prefix = \"/report\"
upstream = \"app\"
mode = \"report_only\"
";

pub(crate) const LANDING: &str =
    "enrollment_url = \"https://jamf.contoso.test/enroll\"\nregistration_url = \"https://selfservice.contoso.test/register\"";

struct Env {
    emu: Emulator,
    _app: Upstream,
    gw: Gateway,
    store: SqliteStore,
    _db: tempfile::TempDir,
}

async fn env(landing: &str, routes: &str) -> Env {
    env_synced(landing, routes, now()).await
}

async fn env_synced(landing: &str, routes: &str, synced_at: i64) -> Env {
    let (emu, app) = (Emulator::start().await, Upstream::start("app").await);
    let db = tempfile::tempdir().unwrap();
    let path = db.path().join("p.db");
    let store = seeded_store(&path, synced_at).await;
    let gw = Gateway::start(&config(&emu, &app, &path, landing, routes)).await;
    Env {
        emu,
        _app: app,
        gw,
        store,
        _db: db,
    }
}

async fn call(e: &Env, path: &str, token_query: Option<&str>, navigation: bool) -> reqwest::Response {
    let mut r = client().get(e.gw.url(path));
    if let Some(q) = token_query {
        r = r.header("authorization", format!("Bearer {}", e.emu.token(q).await));
    }
    if navigation {
        r = r.header("accept", "text/html,application/xhtml+xml");
    }
    r.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_of_the_decision_table_for_browsers_and_api_clients() {
    // The last sync ran two hours ago; the extra devices were seen just now. One device's
    // evidence is two hours old, on a route that accepts one minute.
    let e = env_synced(LANDING, ROUTES, now() - 7200).await;
    e.store
        .upsert_entra_devices(&[entra(STALE, Some(true), true, now() - 7200)])
        .await
        .unwrap();

    let rows: Vec<(&str, &str, Option<String>, u16, &str)> = vec![
        ("no credential", "/", None, 401, "unauthenticated"),
        (
            "bad token",
            "/",
            Some("persona=alice&aud=api://other".into()),
            401,
            "token_invalid",
        ),
        (
            "no device identity (carol)",
            "/",
            Some("persona=carol".into()),
            403,
            "device_unidentified",
        ),
        (
            "no device identity (dave)",
            "/",
            Some("persona=dave".into()),
            403,
            "device_unidentified",
        ),
        (
            "device not in the store",
            "/",
            Some(format!("persona=alice&deviceid={UNKNOWN}")),
            403,
            "device_unknown",
        ),
        (
            "registration deactivated",
            "/",
            Some(format!("persona=alice&deviceid={NOT_REGISTERED}")),
            403,
            "device_not_registered",
        ),
        (
            "device disabled",
            "/",
            Some(format!("persona=alice&deviceid={DISABLED}")),
            403,
            "device_disabled",
        ),
        (
            "not compliant (bob)",
            "/",
            Some("persona=bob".into()),
            403,
            "device_noncompliant",
        ),
        (
            "in grace (erin)",
            "/",
            Some("persona=erin".into()),
            200,
            "device_in_grace",
        ),
        ("compliant (alice)", "/", Some("persona=alice".into()), 200, "compliant"),
        (
            "posture stale",
            "/fresh",
            Some(format!("persona=alice&deviceid={STALE}")),
            403,
            "posture_stale",
        ),
        (
            "stale is fine on a lenient route",
            "/",
            Some(format!("persona=alice&deviceid={STALE}")),
            200,
            "compliant",
        ),
        (
            "alice's two-hour-old posture on the strict route",
            "/fresh",
            Some("persona=alice".into()),
            403,
            "posture_stale",
        ),
        (
            "not in the route's groups (bob)",
            "/eng",
            Some("persona=bob".into()),
            403,
            "group_denied",
        ),
        (
            "in the route's groups (alice)",
            "/eng",
            Some("persona=alice".into()),
            200,
            "compliant",
        ),
        (
            "unsupported: network account",
            "/",
            Some(format!("persona=alice&deviceid={UNSUPPORTED}")),
            403,
            "device_unsupported",
        ),
    ];
    for (name, path, token, status, reason) in &rows {
        // API client: problem+json (or the app's echo).
        let r = call(&e, path, token.as_deref(), false).await;
        assert_eq!(r.status().as_u16(), *status, "{name} (api)");
        if *status == 200 {
            let body = echo(r).await;
            assert_eq!(body["headers"]["x-portcullis-decision"], json!([reason]), "{name}");
        } else {
            assert!(
                r.headers().get("location").is_none(),
                "{name}: API clients are never redirected"
            );
            assert_eq!(r.headers()["content-type"], "application/problem+json", "{name}");
            let p: serde_json::Value = r.json().await.unwrap();
            assert_eq!(p["reason"], *reason, "{name}: {p}");
            let fields: &[&str] = if *status == 403 {
                &["type", "title", "status", "device_id", "landing_url", "posture_as_of"]
            } else {
                &["type", "title", "status"]
            };
            for field in fields {
                assert!(p.get(*field).is_some(), "{name}: {field} missing in {p}");
            }
        }
        // Browser navigation: a page (or sign-in when there is no credential at all).
        let r = {
            let no_follow = reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap();
            let mut req = no_follow.get(e.gw.url(path)).header("accept", "text/html");
            if let Some(q) = token {
                req = req.header("authorization", format!("Bearer {}", e.emu.token(q).await));
            }
            req.send().await.unwrap()
        };
        match (*status, token.is_some()) {
            (401, false) => assert_eq!(r.status(), 302, "{name}: a browser without credential signs in"),
            (401, true) => assert_eq!(r.status(), 401, "{name}: a bad bearer token is never redirected"),
            (200, _) => assert_eq!(r.status(), 200, "{name}"),
            (s, _) => {
                assert_eq!(r.status().as_u16(), s, "{name} (browser)");
                assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
                let html = r.text().await.unwrap();
                assert!(html.contains(reason), "{name}: page shows the reason");
                assert!(html.contains("Device data"), "{name}: page shows the posture age line");
            }
        }
    }
    // The landing pages say what to do: carol registers her Jamf-managed Mac, dave enrolls.
    let carol = call(&e, "/", Some("persona=carol"), true).await.text().await.unwrap();
    assert!(
        carol.contains("Register this Mac") && carol.contains("Carol") && carol.contains("selfservice.contoso.test"),
        "{carol}"
    );
    let dave = call(&e, "/", Some("persona=dave"), true).await.text().await.unwrap();
    assert!(
        dave.contains("Enroll this Mac") && dave.contains("jamf.contoso.test"),
        "{dave}"
    );
    let bob = call(&e, "/", Some("persona=bob"), true).await.text().await.unwrap();
    assert!(
        bob.contains("FileVault") && bob.contains("d1000000-0000-4000-8000-00000000000b"),
        "{bob}"
    );

    let m =
        e.gw.metrics_with(r#"portcullis_decisions_total{outcome="deny",reason="device_noncompliant",route="app"} 3"#)
            .await;
    assert!(
        m.contains(r#"portcullis_decisions_total{outcome="deny",reason="device_noncompliant",route="app"} 3"#),
        "{m}"
    );
    assert!(
        m.contains(r#"portcullis_decisions_total{outcome="allow",reason="compliant",route="app"}"#),
        "{m}"
    );
    // Requests refused before a decision (no credential: API 401 and browser sign-in; a bad
    // token: 401 twice) are counted too.
    for needle in [
        r#"portcullis_decisions_total{outcome="deny",reason="unauthenticated",route="app"} 2"#,
        r#"portcullis_decisions_total{outcome="deny",reason="token_invalid",route="app"} 2"#,
    ] {
        assert!(m.contains(needle), "{needle} in\n{m}");
    }
    let logs = e.gw.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("device_in_grace"))
        .expect("decision log line");
    for field in [
        "route",
        "user",
        "device",
        "device_source",
        "outcome",
        "reason",
        "posture_age",
    ] {
        assert!(line.contains(field), "{field} missing in {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_headers_are_verified_and_spoofs_never_reach_the_app() {
    let e = env(LANDING, ROUTES).await;
    let r = client()
        .get(e.gw.url("/"))
        .header(
            "authorization",
            format!("Bearer {}", e.emu.token("persona=alice").await),
        )
        .header("x-portcullis-device-id", "spoofed")
        .header("x-portcullis-posture", "compliant")
        .header("X-Portcullis-User", "mallory")
        .send()
        .await
        .unwrap();
    let h = echo(r).await["headers"].clone();
    assert_eq!(
        h["x-portcullis-device-id"],
        json!(["d1000000-0000-4000-8000-00000000000a"])
    );
    assert_eq!(h["x-portcullis-posture"], json!(["compliant"]));
    assert_eq!(h["x-portcullis-user"], json!(["alice@contoso.test"]));
    let age: u64 = h["x-portcullis-posture-age"][0].as_str().unwrap().parse().unwrap();
    assert!(age < 60, "{age}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_only_allows_and_reports() {
    let e = env(LANDING, ROUTES).await;
    let r = call(&e, "/report", Some("persona=bob"), false).await;
    assert_eq!(r.status(), 200, "report-only lets bob through");
    let m =
        e.gw.metrics_with(
            r#"portcullis_decisions_total{outcome="report_only",reason="device_noncompliant",route="audit"} 1"#,
        )
        .await;
    assert!(
        m.contains(r#"portcullis_decisions_total{outcome="report_only",reason="device_noncompliant",route="audit"} 1"#),
        "{m}"
    );
    assert!(e.gw.logs().contains("report-only"), "the would-be refusal is logged");
    assert_eq!(
        call(&e, "/report", None, false).await.status(),
        401,
        "authentication is still enforced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posture_changes_reach_the_next_requests_and_survive_a_restart() {
    let e = env(LANDING, ROUTES).await;
    assert_eq!(call(&e, "/", Some("persona=alice"), false).await.status(), 200);
    // The sync (here: this test) writes alice's Mac as non-compliant into the store.
    e.store
        .upsert_entra_devices(&[entra("d1000000-0000-4000-8000-00000000000a", Some(false), true, now())])
        .await
        .unwrap();
    let alice_gets = |want: u16| {
        let e = &e;
        move || async move {
            match call(e, "/", Some("persona=alice"), false).await.status().as_u16() {
                s if s == want => Ok(()),
                s => Err(s.to_string()),
            }
        }
    };
    let (_, took) = poll_until(
        "the change reached enforcement",
        Duration::from_secs(5),
        alice_gets(403),
    )
    .await;
    assert!(took < Duration::from_secs(2), "took {took:?}");
    // And back.
    e.store
        .upsert_entra_devices(&[entra("d1000000-0000-4000-8000-00000000000a", Some(true), true, now())])
        .await
        .unwrap();
    let (_, took) = poll_until(
        "the way back reached enforcement",
        Duration::from_secs(5),
        alice_gets(200),
    )
    .await;
    assert!(took < Duration::from_secs(2), "took {took:?}");

    // Restart (kill -9) on the same store: every posture row is still there.
    let Env {
        emu,
        _app,
        gw,
        store,
        _db,
    } = e;
    let gw = gw.restart().await;
    let e = Env {
        emu,
        _app,
        gw,
        store,
        _db,
    };
    assert_eq!(call(&e, "/", Some("persona=alice"), false).await.status(), 200);
    assert_eq!(call(&e, "/", Some("persona=bob"), false).await.status(), 403);
    assert_eq!(call(&e, "/", Some("persona=erin"), false).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_denied_and_custom_landing_choices() {
    let e = env(&format!("unrecognized = \"access_denied\"\n{LANDING}"), ROUTES).await;
    let html = call(&e, "/", Some("persona=dave"), true).await.text().await.unwrap();
    assert!(
        html.contains("Access denied") && !html.contains("Enroll this Mac"),
        "{html}"
    );

    let e = env(
        "unrecognized = \"custom\"\ncustom_url = \"https://help.contoso.test/device?lang=en\"",
        ROUTES,
    )
    .await;
    let no_follow = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let token = e.emu.token("persona=dave").await;
    let r = no_follow
        .get(e.gw.url("/docs/a?b=1"))
        .header("authorization", format!("Bearer {token}"))
        .header("host", "app.contoso.test")
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let loc = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(loc.host_str(), Some("help.contoso.test"));
    let q: std::collections::HashMap<_, _> = loc.query_pairs().into_owned().collect();
    assert_eq!(q["reason"], "device_unidentified");
    assert_eq!(q["return_to"], "http://app.contoso.test/docs/a?b=1");
    // Back through the gateway with the signed return URL: allowed.
    let back = |return_to: &str, sig: &str| {
        no_follow
            .get(e.gw.url("/.portcullis/continue"))
            .query(&[("return_to", return_to), ("sig", sig)])
            .header("host", "app.contoso.test")
            .send()
    };
    let ok = back(&q["return_to"], &q["sig"]).await.unwrap();
    assert_eq!(ok.status(), 302);
    assert_eq!(ok.headers()["location"], "http://app.contoso.test/docs/a?b=1");
    // Hostile return URLs are refused, signed or not.
    for hostile in [
        "https://evil.test/",
        "//evil.test/x",
        "javascript:alert(1)",
        "http://app.contoso.test.evil.test/",
    ] {
        let r = back(hostile, &q["sig"]).await.unwrap();
        assert_eq!(r.status(), 400, "{hostile}");
        assert!(r.headers().get("location").is_none());
    }
    // A signature the gateway was tricked into making for another Host (the default route
    // answers any name) does not make it an open redirect: continue returns only to its own host.
    let r = no_follow
        .get(e.gw.url("/phish"))
        .header("authorization", format!("Bearer {token}"))
        .header("host", "evil.test")
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    let loc = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    let evil: std::collections::HashMap<_, _> = loc.query_pairs().into_owned().collect();
    assert_eq!(evil["return_to"], "http://evil.test/phish");
    let r = back(&evil["return_to"], &evil["sig"]).await.unwrap();
    assert_eq!(
        r.status(),
        400,
        "continue on app.contoso.test must not send users to evil.test"
    );
    // API clients get the custom URL in problem+json, not a redirect.
    let r = client()
        .get(e.gw.url("/"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let p: serde_json::Value = r.json().await.unwrap();
    assert!(p["landing_url"]
        .as_str()
        .unwrap()
        .starts_with("https://help.contoso.test/device"));
}

/// A device certificate (optionally with `IntuneDeviceId://{id}`) issued by the CA in `dir`
/// named `ca_name`; returns the PEM of cert + key.
fn device_cert(ca_dir: &Path, device_id: Option<&str>, cn: &str) -> Vec<u8> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "MDM device CA");
    std::fs::write(ca_dir.join("mdm-ca.pem"), ca.self_signed(&ca_key).unwrap().pem()).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    if let Some(id) = device_id {
        p.subject_alt_names = vec![SanType::URI(format!("IntuneDeviceId://{id}").try_into().unwrap())];
    }
    let cert = p.signed_by(&key, &issuer).unwrap();
    format!("{}{}", cert.pem(), key.serialize_pem()).into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_identify_devices_and_other_cas_are_refused() {
    let (emu, app) = (Emulator::start().await, Upstream::start("app").await);
    let db = tempfile::tempdir().unwrap();
    let path = db.path().join("p.db");
    let _store = seeded_store(&path, now()).await;
    let certs = tempfile::tempdir().unwrap();
    let good = device_cert(certs.path(), Some("d1000000-0000-4000-8000-00000000000a"), "alice-mac");
    let mdm_ca = certs.path().join("mdm-ca.pem");
    let other_dir = tempfile::tempdir().unwrap();
    let rogue = device_cert(other_dir.path(), Some("d1000000-0000-4000-8000-00000000000a"), "rogue");
    // A certificate without a device id, whose CN is alice's Mac serial: mapped through Jamf.
    let serial_only = {
        let d = tempfile::tempdir().unwrap();
        let pem = device_cert(d.path(), None, &fixtures::serial("alice"));
        (pem, std::fs::read(d.path().join("mdm-ca.pem")).unwrap())
    };
    let port = free_port();
    let mut server_ca: Option<PathBuf> = None;
    let base = config(
        &emu,
        &app,
        &path,
        LANDING,
        "[[routes]]\nname = \"app\"\nupstream = \"app\"\n",
    );
    let gw = Gateway::start_with(&base, |dir| {
        make_certs(dir, &["localhost"]);
        server_ca = Some(dir.join("ca.pem"));
        // Trust both MDM CAs used below (the serial-only certificate has its own).
        let mut bundle = std::fs::read(&mdm_ca).unwrap();
        bundle.extend_from_slice(&serial_only.1);
        std::fs::write(dir.join("mdm-bundle.pem"), bundle).unwrap();
        tls_listener(dir, port, &["localhost"]).replace(
            "http2 = true }",
            &format!(
                "http2 = true, client_ca = \"{}\" }}",
                dir.join("mdm-bundle.pem").display()
            ),
        )
    })
    .await;
    let server_ca = reqwest::Certificate::from_pem(&std::fs::read(server_ca.unwrap()).unwrap()).unwrap();
    let https = |identity: Option<&[u8]>| {
        let mut b = reqwest::Client::builder()
            .no_proxy()
            .add_root_certificate(server_ca.clone())
            .resolve("localhost", std::net::SocketAddr::from(([127, 0, 0, 1], port)));
        if let Some(pem) = identity {
            b = b.identity(reqwest::Identity::from_pem(pem).unwrap());
        }
        b.build().unwrap()
    };
    // dave's token carries no device: the certificate identifies alice's compliant Mac.
    let dave = emu.token("persona=dave").await;
    let url = format!("https://localhost:{port}/x");
    let r = https(Some(&good)).get(&url).bearer_auth(&dave).send().await.unwrap();
    let h = echo(r).await["headers"].clone();
    assert_eq!(
        h["x-portcullis-device-id"],
        json!(["d1000000-0000-4000-8000-00000000000a"])
    );
    let r = https(Some(&serial_only.0))
        .get(&url)
        .bearer_auth(&dave)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "CN mapped to the device through Jamf inventory");
    // No certificate: dave has no device.
    let r = https(None).get(&url).bearer_auth(&dave).send().await.unwrap();
    assert_eq!(r.status(), 403);
    // A certificate from another CA: the handshake is refused.
    let err = https(Some(&rogue)).get(&url).bearer_auth(&dave).send().await;
    assert!(err.is_err(), "a certificate from another CA must be refused: {err:?}");
    drop(gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_assertions_verify_with_the_gateway_jwks() {
    let e = env(LANDING, ROUTES).await;
    let h = echo(call(&e, "/signed/x", Some("persona=alice"), false).await).await["headers"].clone();
    let jwt = h["x-portcullis-assertion"][0]
        .as_str()
        .expect("assertion header")
        .to_string();
    assert!(echo(call(&e, "/", Some("persona=alice"), false).await).await["headers"]
        .get("x-portcullis-assertion")
        .is_none());
    let jwks: jsonwebtoken::jwk::JwkSet = client()
        .get(e.gw.url("/.portcullis/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwks.keys[0]).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&["signed"]);
    v.set_issuer(&["portcullis"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(&jwt, &key, &v)
        .unwrap()
        .claims;
    assert_eq!(claims["sub"], "a1000000-0000-4000-8000-000000000001");
    assert_eq!(claims["device_id"], "d1000000-0000-4000-8000-00000000000a");
    assert_eq!(claims["posture"], "compliant");
    assert_eq!(claims["decision"], "compliant");
    // A client cannot inject its own assertion.
    let r = client()
        .get(e.gw.url("/"))
        .header(
            "authorization",
            format!("Bearer {}", e.emu.token("persona=alice").await),
        )
        .header("x-portcullis-assertion", "forged")
        .send()
        .await
        .unwrap();
    assert!(echo(r).await["headers"].get("x-portcullis-assertion").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_sessions_carry_the_device_bound_at_sign_in() {
    use portcullis::emulator::personas;
    let (emu, app) = (Emulator::start().await, Upstream::start("app").await);
    let db = tempfile::tempdir().unwrap();
    let path = db.path().join("p.db");
    let _store = seeded_store(&path, now()).await;
    let port = free_port();
    let mut ca = None;
    let key = "c2Vzc2lvbnMtc3Vydml2ZS1yZXN0YXJ0cy0zMi1ieXQ="; // 32 bytes, base64
    let routes = format!("[[routes]]\nname = \"app\"\nupstream = \"app\"\n\n[session]\ncookie_key = \"{key}\"\n");
    let base = config(&emu, &app, &path, LANDING, &routes);
    let _gw = Gateway::start_with(&base, |dir| {
        make_certs(dir, &["localhost"]);
        ca = Some(dir.join("ca.pem"));
        tls_listener(dir, port, &["localhost"])
    })
    .await;
    emu.state.register_redirect(
        personas::GATEWAY_CLIENT_ID,
        &format!("https://localhost:{port}/.portcullis/callback"),
    );
    let mut alice: Option<crate::identity::Browser> = None;
    for (persona, status) in [("alice", 200), ("bob", 403)] {
        let b = crate::identity::Browser::new(ca.as_ref().unwrap(), port);
        let r = b.sign_in("/", persona).await;
        assert_eq!(r.status().as_u16(), status, "{persona}");
        if status == 200 {
            let h = echo(r).await["headers"].clone();
            assert_eq!(
                h["x-portcullis-device-id"],
                json!(["d1000000-0000-4000-8000-00000000000a"])
            );
        } else {
            assert!(r.text().await.unwrap().contains("device_noncompliant"));
        }
        if persona == "alice" {
            alice = Some(b);
        }
    }
    let logs = _gw.logs();
    assert!(
        logs.contains("device_source=\"session\""),
        "the device came from the session:\n{logs}"
    );

    // Sessions live in the store, sealed: they survive a crash of the gateway, and the
    // database never holds a refresh token in clear.
    assert!(!_gw.logs().contains("cannot store"), "{}", _gw.logs());
    let gw = _gw.restart().await;
    let alice = alice.unwrap();
    let after = alice.navigate(&format!("{}/", alice.base)).await.status();
    assert_eq!(after, 200, "still signed in after a restart:\n{}", gw.logs());
    let raw = std::fs::read(&path).unwrap();
    let wal = std::fs::read(path.with_extension("db-wal")).unwrap_or_default();
    for bytes in [&raw, &wal] {
        assert!(
            !bytes.windows(9).any(|w| w == b"0.emu-rt."),
            "a refresh token is stored in clear"
        );
    }
    drop(gw);
}

const ADMIN_TOKEN: &str = "explain-admin-token-0123456789abcdef";

/// Runs the same requests through the proxy and through `POST /api/v1/explain`, for every
/// persona and every extra device on every route, as an API client and as a browser, and
/// checks that explain names the outcome, reason, status, landing and identity headers the
/// proxy actually produced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_agrees_with_the_proxy_for_every_persona_route_and_client() {
    let (emu, app) = (Emulator::start().await, Upstream::start("app").await);
    let db = tempfile::tempdir().unwrap();
    let path = db.path().join("p.db");
    let store = seeded_store(&path, now() - 7200).await;
    store
        .upsert_entra_devices(&[entra(STALE, Some(true), true, now() - 7200)])
        .await
        .unwrap();
    let digest = ring::digest::digest(&ring::digest::SHA256, ADMIN_TOKEN.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let routes =
        format!("{ROUTES}\n[[routes]]\nname = \"intranet\"\nhost = \"intranet.contoso.test\"\nupstream = \"app\"\n");
    let gw = Gateway::start_env(
        &config(&emu, &app, &path, LANDING, &routes),
        &[("PORTCULLIS__ADMIN__TOKEN_SHA256", hex)],
    )
    .await;
    let no_follow = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let admin = client();
    let explain_url = format!("http://{}/api/v1/explain", gw.admin);
    let explain = |body: serde_json::Value| {
        let req = admin.post(&explain_url).bearer_auth(ADMIN_TOKEN).json(&body);
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<serde_json::Value>().await.unwrap())
        }
    };

    let mut cases: Vec<(String, Option<String>)> = portcullis::emulator::personas::all()
        .iter()
        .map(|p| (p.name.to_string(), Some(format!("persona={}", p.name))))
        .collect();
    for d in [UNKNOWN, NOT_REGISTERED, DISABLED, UNSUPPORTED, STALE] {
        cases.push((format!("alice on {d}"), Some(format!("persona=alice&deviceid={d}"))));
    }
    cases.push(("wrong audience".into(), Some("persona=alice&aud=api://other".into())));
    cases.push(("no credential".into(), None));

    let mut reasons = std::collections::BTreeSet::new();
    let mut tokens = Vec::new();
    for (name, q) in &cases {
        let token = match q {
            Some(q) => Some(emu.token(q).await),
            None => None,
        };
        tokens.extend(token.clone());
        for route_path in ["/", "/fresh", "/eng", "/signed", "/report"] {
            for browser in [false, true] {
                let mut req = no_follow.get(gw.url(route_path));
                if browser {
                    req = req.header("accept", "text/html,application/xhtml+xml");
                }
                if let Some(t) = &token {
                    req = req.bearer_auth(t);
                }
                let r = req.send().await.unwrap();
                let status = r.status().as_u16();
                let content_type = r
                    .headers()
                    .get("content-type")
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default();
                let body = r.bytes().await.unwrap();
                let (code, x) = explain(json!({ "url": gw.url(route_path), "token": token, "browser": browser })).await;
                let what = format!("{name} {route_path} browser={browser}: proxy {status}, explain {x}");
                assert_eq!(code, 200, "{what}");
                reasons.insert(x["reason"].as_str().unwrap().to_string());
                if status == 200 && x["response"]["grace_notice"].is_object() {
                    // A device in its grace period, in a browser: the notice, once per session.
                    assert_eq!(x["outcome"], "allow", "{what}");
                    assert_eq!(content_type, "text/html; charset=utf-8", "{what}");
                    assert!(
                        String::from_utf8_lossy(&body).contains("needs attention soon"),
                        "{what}"
                    );
                    continue;
                }
                if status == 200 {
                    assert_eq!(x["outcome"], "allow", "{what}");
                    assert_eq!(x["response"]["forwarded_upstream"], true, "{what}");
                    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    let sent = &echo["headers"];
                    assert_eq!(sent["x-portcullis-decision"], json!([x["reason"]]), "{what}");
                    let headers = x["response"]["identity_headers"].as_object().unwrap();
                    assert!(headers.contains_key("x-portcullis-user-id"), "{what}");
                    for (k, v) in headers {
                        match k.as_str() {
                            // Seconds tick between the two; signatures differ per request.
                            "x-portcullis-posture-age" | "x-portcullis-assertion" => {
                                assert!(sent.get(k).is_some(), "{what}: {k} not sent")
                            }
                            _ => assert_eq!(sent[k], json!([v]), "{what}: {k}"),
                        }
                    }
                    continue;
                }
                assert_eq!(x["outcome"], "deny", "{what}");
                assert_eq!(x["response"]["status"], status, "{what}");
                if status == 302 {
                    assert_eq!(x["landing"], "sign_in", "{what}: only sign-in redirects here");
                    assert_eq!(x["reason"], "unauthenticated", "{what}");
                } else if content_type.starts_with("application/problem+json") {
                    let p: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    assert_eq!(p["reason"], x["reason"], "{what}");
                    if status == 403 {
                        assert_eq!(x["response"]["body"]["reason"], p["reason"], "{what}");
                        assert_eq!(x["response"]["body"]["landing_url"], p["landing_url"], "{what}");
                        assert_eq!(x["response"]["body"]["device_id"], p["device_id"], "{what}");
                    }
                } else if content_type.starts_with("text/html") {
                    let html = String::from_utf8_lossy(&body);
                    assert!(html.contains(x["reason"].as_str().unwrap()), "{what}");
                    assert_eq!(x["response"]["content_type"], "text/html", "{what}");
                } else {
                    panic!("{what}: unexpected content type {content_type:?}");
                }
            }
        }
    }
    // The comparison went through every decision the table reaches with these devices.
    for reason in [
        "compliant",
        "device_in_grace",
        "device_noncompliant",
        "device_unidentified",
        "device_unknown",
        "device_not_registered",
        "device_disabled",
        "device_unsupported",
        "posture_stale",
        "group_denied",
        "unauthenticated",
        "token_invalid",
    ] {
        assert!(reasons.contains(reason), "{reason} never compared; saw {reasons:?}");
    }

    // The evidence, in detail. Carol's Mac is managed but not registered: the landing names it.
    let carol = emu.token("persona=carol").await;
    let (_, x) = explain(json!({ "url": gw.url("/"), "token": carol })).await;
    assert_eq!(x["landing"], "unrecognized", "{x}");
    assert_eq!(x["evidence"]["registration"]["step"], "register", "{x}");
    assert_eq!(x["evidence"]["device"], serde_json::Value::Null, "{x}");
    assert_eq!(x["evidence"]["posture_lookup"], "unidentified", "{x}");
    let dave = emu.token("persona=dave").await;
    let (_, x) = explain(json!({ "url": gw.url("/"), "token": dave })).await;
    assert_eq!(x["evidence"]["registration"]["step"], "enroll", "{x}");
    // Bob on the report-only route: let through, with what enforcement would have done.
    let bob = emu.token("persona=bob").await;
    let (_, x) = explain(json!({ "url": gw.url("/report"), "token": bob })).await;
    assert_eq!(x["outcome"], "allow", "{x}");
    assert_eq!(x["evidence"]["would_deny"], "remediation", "{x}");
    assert_eq!(x["evidence"]["policy"]["mode"], "report_only", "{x}");
    assert_eq!(x["evidence"]["posture"]["state"], "noncompliant", "{x}");
    assert_eq!(x["evidence"]["device"]["source"], "token", "{x}");
    // A device given with the token replaces its claim: alice's token on bob's Mac.
    let alice = emu.token("persona=alice").await;
    let bob_device = fixtures_device("bob");
    let (_, x) = explain(json!({ "url": gw.url("/"), "token": alice, "device_id": bob_device })).await;
    assert_eq!(x["reason"], "device_noncompliant", "{x}");
    assert_eq!(x["evidence"]["device"]["id"], bob_device, "{x}");
    // A user without a token: groups through Graph, the device as given.
    let a = &portcullis::emulator::personas::all()[0];
    let (_, x) = explain(json!({ "url": gw.url("/eng"), "user": a.object_id, "device_id": a.device_id })).await;
    assert_eq!(x["outcome"], "allow", "{x}");
    assert_eq!(x["evidence"]["groups"], "member", "{x}");
    assert_eq!(x["evidence"]["credential"]["kind"], "user", "{x}");
    // A route by name (its host is exact), and a device as a client certificate would name it.
    let (_, x) = explain(json!({ "route": "intranet", "path": "/wiki", "user": a.object_id, "device_id": a.device_id, "device_source": "certificate" })).await;
    assert_eq!(x["url"], "https://intranet.contoso.test/wiki", "{x}");
    assert_eq!(x["route"], "intranet", "{x}");
    assert_eq!(x["outcome"], "allow", "{x}");
    assert_eq!(x["evidence"]["device"]["source"], "certificate", "{x}");

    // Dot segments are refused before routing, by the proxy (raw request: HTTP clients
    // normalise them away) and so by explain; the gateway's own endpoints are its own.
    for path in ["/report/../eng", "/report/%2e%2e/eng", "/report%2f..%2feng"] {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(gw.http).await.unwrap();
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: app\r\nAuthorization: Bearer {bob}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
        assert!(answer.contains("bad_path"), "{path}: {answer}");
        let (_, x) = explain(json!({ "url": gw.url(path), "token": bob })).await;
        assert_eq!(
            (x["outcome"].as_str(), x["reason"].as_str()),
            (Some("deny"), Some("bad_path")),
            "{path}: {x}"
        );
    }
    let (_, x) = explain(json!({ "url": gw.url("/.portcullis/jwks.json") })).await;
    assert_eq!(
        (x["outcome"].as_str(), x["reason"].as_str()),
        (Some("gateway"), Some("gateway_endpoint")),
        "{x}"
    );
    // Explain never talks to the upstream: with the app gone it still answers.
    app.kill();
    let (code, x) = explain(json!({ "url": gw.url("/"), "token": alice })).await;
    assert_eq!((code, x["outcome"].as_str()), (200, Some("allow")), "{x}");

    // Bad questions: 400 naming the field; no credential 401; tokens never logged.
    for (body, field) in [
        (json!({}), "url"),
        (json!({ "url": "ftp://x/" }), "url"),
        (json!({ "url": "not a url" }), "url"),
        (json!({ "url": gw.url("/"), "route": "app" }), "route"),
        (json!({ "url": gw.url("/"), "token": "x", "user": "y" }), "user"),
        (json!({ "url": gw.url("/"), "device_id": "not-a-guid!" }), "device_id"),
        (
            json!({ "url": gw.url("/"), "device_id": UNKNOWN, "device_source": "telepathy" }),
            "device_source",
        ),
        (json!({ "url": gw.url("/"), "user": "two words" }), "user"),
        (json!({ "url": gw.url("/"), "user": "../../devices/x?$top=1" }), "user"),
        (json!({ "url": gw.url("/"), "user": ".." }), "user"),
        (json!({ "url": format!("{}#frag", gw.url("/")) }), "url"),
        (json!({ "url": gw.url("/"), "path": "/x" }), "path"),
        (
            json!({ "url": gw.url("/"), "token": "t", "device_id": UNKNOWN, "device_source": "session" }),
            "device_source",
        ),
        (json!({ "route": "nope" }), "route"),
        (json!({ "route": "engineering" }), "route"),
        (json!({ "url": gw.url("/"), "colour": "blue" }), "colour"),
        (json!({ "url": 7 }), "url"),
    ] {
        let (code, p) = explain(body.clone()).await;
        assert_eq!(code, 400, "{body} -> {p}");
        assert!(p["detail"].as_str().unwrap().contains(field), "{body} -> {p}");
    }
    let r = admin.post(&explain_url).body("{").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = admin
        .post(&explain_url)
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // The CLI: a table, --json, exit 0 for allowed and 1 for refused.
    let cli = |args: Vec<String>| {
        let mut cmd = tokio::process::Command::new(crate::harness::bin());
        cmd.arg("admin")
            .args(["--url", &format!("http://{}", gw.admin)])
            .env("PORTCULLIS_ADMIN_TOKEN", ADMIN_TOKEN)
            .args(args);
        async move {
            let out = cmd.output().await.unwrap();
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            (out.status.code(), text(&out.stdout), text(&out.stderr))
        }
    };
    let args = |rest: &[&str]| rest.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let target = gw.url("/");
    let persona = |url: &str, who: &str| {
        cli(args(&[
            "explain",
            "--url",
            url,
            "--persona",
            who,
            "--emulator",
            &emu.url,
        ]))
    };
    let (code, out, err) = persona(&target, "erin").await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("allow (device_in_grace)"), "{out}");
    assert!(out.contains("in_grace from intune"), "{out}");
    let (code, out, err) = persona(&target, "bob").await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.contains("deny (device_noncompliant)"), "{out}");
    assert!(out.contains("remediation"), "{out}");
    let (code, out, err) = cli(args(&[
        "--json",
        "explain",
        "--url",
        &target,
        "--user",
        a.object_id,
        "--device",
        UNKNOWN,
    ]))
    .await;
    assert_eq!(code, Some(1), "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["reason"], "device_unknown", "{v}");
    let (code, _, err) = persona("gopher://x", "alice").await;
    assert_eq!(code, Some(6), "{err}");
    assert!(err.contains("url"), "{err}");
    let (code, _, err) = persona(&target, "mallory").await;
    assert_eq!(code, Some(3), "{err}");

    let logs = gw.logs();
    for t in &tokens {
        assert!(!logs.contains(t.as_str()), "a token reached the logs");
    }
}

fn fixtures_device(persona: &str) -> &'static str {
    portcullis::emulator::personas::all()
        .into_iter()
        .find(|p| p.name == persona)
        .and_then(|p| p.device_id)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_websocket_is_cut_when_its_device_is_refused() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::{Error as WsError, Message};
    let e = env(LANDING, ROUTES).await;
    let open = |persona: &'static str| {
        let e = &e;
        async move {
            let mut req = format!("ws://{}/ws", e.gw.http).into_client_request().unwrap();
            let token = e.emu.token(&format!("persona={persona}")).await;
            req.headers_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
            tokio_tungstenite::connect_async(req).await
        }
    };
    // bob's Mac is not compliant: his never opens.
    match open("bob").await {
        Err(WsError::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("bob's WebSocket: {:?}", other.map(|(_, r)| r.status())),
    }
    let (mut ws, _) = open("alice").await.unwrap();
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap().into_text().unwrap().as_str(), "hello");

    // Her Mac falls out of compliance: the open socket is closed, 1008 with the reason, within
    // the change-propagation time (the change log is read every 200 ms here) and a second.
    let flipped = std::time::Instant::now();
    e.store
        .upsert_entra_devices(&[entra("d1000000-0000-4000-8000-00000000000a", Some(false), true, now())])
        .await
        .unwrap();
    let close = crate::harness::close_frame(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(close.code, CloseCode::Policy);
    assert_eq!(close.reason.as_str(), "device_noncompliant");
    assert!(
        flipped.elapsed() < Duration::from_millis(1200),
        "took {:?}",
        flipped.elapsed()
    );
    // And a new one is refused.
    assert!(open("alice").await.is_err());
}

/// The page dave's browser gets: the enroll page.
async fn dave_page(e: &Env) -> String {
    call(e, "/", Some("persona=dave"), true).await.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_the_landing_pages() {
    let e = env(LANDING, ROUTES).await;
    let first = dave_page(&e).await;
    // (The page escapes the URL's slashes.)
    assert!(first.contains("jamf.contoso.test"), "{first}");
    let config = e.gw.log.parent().unwrap().join("portcullis.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(
            "https://jamf.contoso.test/enroll",
            "https://jamf.example.org/enroll-now",
        ),
    )
    .unwrap();
    e.gw.signal("HUP");
    poll_until(
        "the new enrollment URL on the page",
        Duration::from_secs(10),
        || async {
            let p = dave_page(&e).await;
            if p.contains("jamf.example.org") {
                Ok(())
            } else {
                Err(p.chars().take(200).collect::<String>())
            }
        },
    )
    .await;
    assert!(
        !e.gw.logs().contains("applies only at the next start"),
        "{}",
        e.gw.logs()
    );
}
