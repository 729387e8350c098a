//! The command line: check-config, start-up failures, version.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::bin;

#[test]
fn check_config_lists_every_error_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"
[server]
grace_period = "soon"

[[listeners]]
address = "0.0.0.0:80800"

[[listeners]]
address = "127.0.0.1:8443"
tls = { certificates = [{ cert = "missing.pem", key = "missing-key.pem" }] }

[upstreams.app]
addresses = ["10.0.0.1:99999"]

[[routes]]
require = "none"
upstream = "app"

[[routes]]
require = "none"
upstream = "ghost"
"#,
    )
    .unwrap();
    let out = Command::new(bin()).arg("check-config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "server.grace_period",
        "listeners[0].address",
        r#"upstreams.app.addresses[0]: "10.0.0.1:99999" is not a valid socket address"#,
        "routes[1].upstream",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }

    // With the values fixed, the missing certificate files are reported with their key.
    let fixed = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"soon\"", "\"1s\"")
        .replace("80800", "8080")
        .replace("99999", "9999")
        .replace("ghost", "app");
    std::fs::write(
        &path,
        fixed.replace(
            "[[routes]]\nrequire = \"none\"\nupstream = \"app\"\n\n[[routes]]\nrequire = \"none\"",
            "[[routes]]\nrequire = \"none\"\npath_prefix = \"/x\"",
        ),
    )
    .unwrap();
    let out = Command::new(bin()).arg("check-config").arg(&path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("listeners[1].tls.certificates[0].cert"), "{err}");
}

#[test]
fn check_config_names_every_unknown_key_of_the_example_file() {
    // As a new user would: two unknown keys appended to one table of the example file.
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/portcullis.example.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("portcullis.toml");
    std::fs::write(
        &path,
        example.replacen("[admin]\n", "[admin]\ncolour = \"blue\"\nflavour = \"mint\"\n", 1),
    )
    .unwrap();
    let out = Command::new(bin()).arg("check-config").arg(&path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains("2 error(s)")
            && err.contains("admin.colour: unknown key")
            && err.contains("admin.flavour: unknown key"),
        "{err}"
    );
}

#[test]
fn check_config_refuses_a_non_hex_admin_token_hash_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.toml");
    // 64 bytes, not 64 hex digits: multi-byte characters, and a leading '+'.
    for hash in ["é".repeat(32), format!("+{}", "f".repeat(63))] {
        std::fs::write(
            &path,
            format!(
                "[admin]\ntoken_sha256 = \"{hash}\"\n[[listeners]]\naddress = \"127.0.0.1:8080\"\n[upstreams.app]\naddresses = [\"127.0.0.1:9\"]\n[[routes]]\nrequire = \"none\"\nupstream = \"app\"\n"
            ),
        )
        .unwrap();
        let out = Command::new(bin()).arg("check-config").arg(&path).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{hash}: {err}");
        assert!(err.contains("admin.token_sha256: must be 64 hex digits"), "{err}");
    }
}

#[test]
fn check_config_accepts_the_shipped_examples() {
    // config/demo.toml is checked by the demo itself: it names certificates the demo generates.
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/portcullis.example.toml");
    let out = Command::new(bin()).arg("check-config").arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));
}

#[test]
fn serve_exits_non_zero_when_the_port_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        format!(
            "[admin]\nlisten = \"127.0.0.1:{}\"\n[[listeners]]\naddress = \"127.0.0.1:{port}\"\n\
             [upstreams.a]\naddresses = [\"127.0.0.1:1\"]\n[[routes]]\nrequire = \"none\"\nupstream = \"a\"\n",
            crate::harness::free_port()
        ),
    )
    .unwrap();
    let started = Instant::now();
    let out = Command::new(bin())
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("listeners[0]") && err.contains("cannot listen") && err.contains("in use"),
        "{err}"
    );
}

/// The proxy workers' sockets use SO_REUSEPORT, which would let a second process of the same
/// user share the port and take part of the connections; the start-up check must refuse it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_gateway_cannot_share_a_running_gateways_port() {
    let app = crate::harness::Upstream::start("a").await;
    let body = format!(
        "[server]\nthreads = 2\n{}\n[[routes]]\nrequire = \"none\"\nupstream = \"a\"\n",
        crate::harness::pool("a", &[app.addr], "")
    );
    let gw = crate::harness::Gateway::start(&body).await;
    let err = refused_second_gateway(&format!(
        "[admin]\nlisten = \"127.0.0.1:{}\"\n[[listeners]]\naddress = \"{}\"\n\
         [upstreams.a]\naddresses = [\"127.0.0.1:1\"]\n[[routes]]\nrequire = \"none\"\nupstream = \"a\"\n",
        crate::harness::free_port(),
        gw.http
    ))
    .await;
    assert!(err.contains("listeners[0]") && err.contains("in use"), "{err}");
    // Every connection still reaches the first gateway.
    for _ in 0..20 {
        let r = crate::harness::client().get(gw.url("/")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
}

#[test]
fn version_and_help() {
    let out = Command::new(bin()).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    let out = Command::new(bin()).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in ["serve", "check-config", "demo"] {
        assert!(help.contains(cmd), "{help}");
    }
}

#[test]
fn check_config_reads_the_app_credential_and_assertion_key_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("files.toml");
    std::fs::write(dir.path().join("not-a-key.pem"), "hello").unwrap();
    std::fs::write(
        &path,
        r#"
[entra]
tenant_id = "11111111-2222-3333-4444-555555555555"
client_id = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
client_certificate = "missing-app.pem"
client_certificate_key = "missing-app-key.pem"

[landing]
assertion_key_file = "not-a-key.pem"
templates_dir = "no-such-templates"

[[listeners]]
address = "127.0.0.1:8080"

[upstreams.app]
addresses = ["127.0.0.1:9"]

[[routes]]
upstream = "app"
"#,
    )
    .unwrap();
    let out = Command::new(bin()).arg("check-config").arg(&path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("entra.client_certificate"), "{err}");
    assert!(err.contains("landing.assertion_key_file"), "{err}");
    assert!(
        err.contains("landing.templates_dir") && err.contains("is not a directory"),
        "{err}"
    );
}

#[test]
fn check_config_checks_the_keys_from_the_environment() {
    // The settings key is read where `serve` reads it, so a bad one fails the check, not the
    // start; its value never appears in the message.
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/portcullis.example.toml");
    let secret_looking = "bm90LTMyLWJ5dGVz-secret-value";
    let out = Command::new(bin())
        .arg("check-config")
        .arg(&path)
        .env("PORTCULLIS_SETTINGS_KEY", secret_looking)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("PORTCULLIS_SETTINGS_KEY"), "{err}");
    assert!(!err.contains(secret_looking), "the key's value leaked: {err}");
    let out = Command::new(bin())
        .arg("check-config")
        .arg(&path)
        .env("PORTCULLIS_SETTINGS_KEY_FILE", "/nonexistent/portcullis-key")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains("PORTCULLIS_SETTINGS_KEY_FILE") && err.contains("/nonexistent/portcullis-key"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_gateway_on_another_nodes_sqlite_file_is_refused() {
    let app = crate::harness::Upstream::start("a").await;
    let db = tempfile::tempdir().unwrap();
    let store = db.path().join("shared.db");
    let body = format!(
        "[store]\nurl = \"sqlite://{}\"\n{}\n[[routes]]\nrequire = \"none\"\nupstream = \"a\"\n",
        store.display(),
        crate::harness::pool("a", &[app.addr], "")
    );
    let gw = crate::harness::Gateway::start(&body).await;
    let err = refused_second_gateway(&format!(
        "[admin]\nlisten = \"127.0.0.1:{}\"\n[[listeners]]\naddress = \"127.0.0.1:{}\"\n{body}",
        crate::harness::free_port(),
        crate::harness::free_port(),
    ))
    .await;
    assert!(
        err.contains("in use by another gateway process") && err.contains("postgres://"),
        "the message says why and what to do instead: {err}"
    );
    assert_eq!(
        crate::harness::client().get(gw.url("/")).send().await.unwrap().status(),
        200
    );
}

/// Starts a second gateway with `config`, which must refuse to start (not serve); its stderr.
async fn refused_second_gateway(config: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("second.toml");
    std::fs::write(&path, config).unwrap();
    let second = tokio::process::Command::new(bin())
        .args(["serve", "--config"])
        .arg(&path)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), second)
        .await
        .expect("the second gateway must refuse to start, not serve")
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}
