//! TLS on both sides: SNI certificate choice, HTTP/2 from clients, verified TLS upstreams.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::harness::{client, echo, free_port, make_certs, poll_until, pool, Gateway, Upstream};

pub fn tls_listener(dir: &Path, port: u16, names: &[&str]) -> String {
    let certs: Vec<String> = names
        .iter()
        .map(|n| format!("{{ cert = \"{0}/{n}.pem\", key = \"{0}/{n}-key.pem\" }}", dir.display()))
        .collect();
    format!(
        "[[listeners]]\nname = \"https\"\naddress = \"127.0.0.1:{port}\"\ntls = {{ certificates = [{}], http2 = true }}\n",
        certs.join(", ")
    )
}

fn tls_client(dir: &Path, port: u16) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(dir.join("ca.pem")).unwrap()).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(ca)
        .resolve("a.test", addr)
        .resolve("b.test", addr)
        .resolve("c.test", addr)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_right_certificate_and_h2_is_negotiated() {
    let app = Upstream::start("app").await;
    let port = free_port();
    let mut dir_path = None;
    let body = format!(
        "{}\n[[routes]]\nrequire = \"none\"\nupstream = \"app\"\n",
        pool("app", &[app.addr], "")
    );
    let gw = Gateway::start_with(&body, |dir| {
        make_certs(dir, &["a.test", "b.test"]);
        dir_path = Some(dir.to_path_buf());
        tls_listener(dir, port, &["a.test", "b.test"])
    })
    .await;
    let dir = dir_path.unwrap();
    let http = tls_client(&dir, port);
    // Each leaf is valid for one name only: a wrong choice fails verification.
    for host in ["a.test", "b.test"] {
        let r = http.get(format!("https://{host}:{port}/x")).send().await.unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2, "ALPN should pick h2");
        let e = echo(r).await;
        assert_eq!(e["headers"]["x-forwarded-proto"], serde_json::json!(["https"]));
        assert_eq!(e["headers"]["host"], serde_json::json!([format!("{host}:{port}")]));
        assert_eq!(e["version"], "HTTP/1.1", "the upstream is spoken to in HTTP/1.1");
    }
    // Unknown names get the first (default) certificate, which does not verify for them.
    let err = http.get(format!("https://c.test:{port}/")).send().await.unwrap_err();
    assert!(format!("{err:?}").to_lowercase().contains("certificate"), "{err:?}");

    // HTTP/2 sends one cookie field per cookie; the upstream gets them joined.
    let e = echo(
        http.get(format!("https://a.test:{port}/c"))
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(e["headers"]["cookie"], serde_json::json!(["a=1; b=2"]));
    // The readiness probe completes real TLS handshakes: a clean start logs no error.
    let logs = gw.logs();
    let start = logs.split("ready").next().unwrap_or("");
    assert!(!start.contains("ERROR"), "errors while starting:\n{start}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_upstream_is_verified_with_its_ca_and_sni() {
    let app = Upstream::start("app").await;
    // Gateway B terminates TLS for b.test in front of the app; gateway A uses it as a TLS upstream.
    let b_port = free_port();
    let mut dir_b = None;
    let body_b = format!(
        "{}\n[[routes]]\nrequire = \"none\"\nupstream = \"app\"\n",
        pool("app", &[app.addr], "")
    );
    let b = Gateway::start_with(&body_b, |dir| {
        make_certs(dir, &["b.test"]);
        dir_b = Some(dir.to_path_buf());
        tls_listener(dir, b_port, &["b.test"])
    })
    .await;
    let ca = dir_b.unwrap().join("ca.pem");
    let upstream: SocketAddr = format!("127.0.0.1:{b_port}").parse().unwrap();
    let body_a = format!(
        "{}{}{}
[[routes]]
require = \"none\"
path_prefix = \"/good\"
upstream = \"good\"

[[routes]]
require = \"none\"
path_prefix = \"/over-h2\"
upstream = \"h2\"

[[routes]]
require = \"none\"
path_prefix = \"/wrong-name\"
upstream = \"wrong\"
",
        pool(
            "good",
            &[upstream],
            &format!("tls = {{ sni = \"b.test\", ca_file = \"{}\" }}", ca.display())
        ),
        pool(
            "wrong",
            &[upstream],
            &format!("tls = {{ sni = \"other.test\", ca_file = \"{}\" }}", ca.display())
        ),
        pool(
            "h2",
            &[upstream],
            &format!(
                "tls = {{ sni = \"b.test\", ca_file = \"{}\", http2 = true }}",
                ca.display()
            )
        ),
    );
    let a = Gateway::start(&body_a).await;
    let e = echo(client().get(a.url("/good")).send().await.unwrap()).await;
    assert_eq!(e["app"], "app");
    let r = client().get(a.url("/wrong-name")).send().await.unwrap();
    assert_eq!(r.status(), 502, "a certificate for another name must be refused");
    let m = a.metrics().await;
    assert!(m.contains(r#"kind="tls""#), "{m}");
    // `http2 = true`: the upstream leg speaks HTTP/2 (ALPN), whatever the client spoke.
    let e = echo(client().get(a.url("/over-h2")).send().await.unwrap()).await;
    assert_eq!(e["app"], "app");
    // The client's leg is HTTP/1.1 at A; B got HTTP/2 from A.
    poll_until("both gateways logged the request", Duration::from_secs(5), || {
        let line = |logs: String| {
            logs.lines()
                .find(|l| l.contains("path=\"/over-h2\""))
                .map(str::to_string)
        };
        let (at_a, at_b) = (line(a.logs()), line(b.logs()));
        async move {
            match (&at_a, &at_b) {
                (Some(x), Some(y)) if x.contains("protocol=HTTP/1.1") && y.contains("protocol=HTTP/2.0") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
}

/// One HTTP/1.1 request on an open connection, kept alive: the status line.
async fn request_on(conn: &mut tokio::net::TcpStream) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    conn.write_all(b"GET /kept HTTP/1.1\r\nHost: kept\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = Vec::new();
    // The echo's body is JSON: read until its closing brace.
    while !got.ends_with(b"}") {
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
            .await
            .expect("an answer on the kept connection")
            .unwrap();
        assert!(n > 0, "the kept connection was closed");
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).lines().next().unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_routes_and_certificates_without_dropping_a_connection() {
    let (one, two) = (Upstream::start("one").await, Upstream::start("two").await);
    let port = free_port();
    let mut dir_path = None;
    let body = format!(
        "{}\n[[routes]]\nrequire = \"none\"\nupstream = \"app\"\n",
        pool("app", &[one.addr], "")
    );
    const ADMIN: &str = "reload-admin-token-0123456789";
    let hash = portcullis::base::to_hex(ring::digest::digest(&ring::digest::SHA256, ADMIN.as_bytes()).as_ref());
    let gw = Gateway::start_full(
        &body,
        |dir| {
            make_certs(dir, &["a.test", "b.test"]);
            dir_path = Some(dir.to_path_buf());
            tls_listener(dir, port, &["a.test"])
        },
        &[("PORTCULLIS__ADMIN__TOKEN_SHA256", hash)],
    )
    .await;
    let dir = dir_path.unwrap();
    let config = dir.join("portcullis.toml");
    let api_reload = || async {
        let r = client()
            .post(format!("http://{}/api/v1/reload", gw.admin))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json::<serde_json::Value>().await.unwrap()
    };
    let https = tls_client(&dir, port);
    let app = |r: reqwest::Response| async move { echo(r).await["app"].as_str().unwrap_or_default().to_string() };
    assert_eq!(app(client().get(gw.url("/x")).send().await.unwrap()).await, "one");
    assert!(
        https.get(format!("https://b.test:{port}/")).send().await.is_err(),
        "b.test is not served yet"
    );
    let mut kept = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    assert!(request_on(&mut kept).await.contains("200"));
    let forwarded_for = || async {
        let r = client()
            .get(gw.url("/x"))
            .header("x-forwarded-for", "203.0.113.7")
            .send()
            .await
            .unwrap();
        echo(r).await["headers"]["x-forwarded-for"].to_string()
    };
    assert!(
        !forwarded_for().await.contains("203.0.113.7"),
        "127.0.0.1 is no trusted proxy yet"
    );

    // A new pool address and a second certificate (the SNI set grows); SIGHUP applies both.
    let text = std::fs::read_to_string(&config).unwrap();
    let good = text
        .replace(&format!("\"{}\"", one.addr), &format!("\"{}\"", two.addr))
        .replace(
            &format!("key = \"{0}/a.test-key.pem\" }}", dir.display()),
            &format!(
                "key = \"{0}/a.test-key.pem\" }}, {{ cert = \"{0}/b.test.pem\", key = \"{0}/b.test-key.pem\" }}",
                dir.display()
            ),
        );
    // And 127.0.0.1 becomes a trusted proxy.
    let good = good.replacen("[server]\n", "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n", 1);
    assert_ne!(good, text);
    std::fs::write(&config, &good).unwrap();
    gw.signal("HUP");
    poll_until("the reloaded route", Duration::from_secs(10), || async {
        let r = client().get(gw.url("/x")).send().await.map_err(|e| e.to_string())?;
        match app(r).await.as_str() {
            "two" => Ok(()),
            other => Err(other.to_string()),
        }
    })
    .await;
    let r = https.get(format!("https://b.test:{port}/")).send().await.unwrap();
    assert_eq!(app(r).await, "two", "the new certificate, by SNI");
    assert!(
        request_on(&mut kept).await.contains("200"),
        "the connection open across the reload still serves"
    );
    assert!(gw.logs().contains("configuration reloaded"), "{}", gw.logs());
    assert!(
        forwarded_for().await.contains("203.0.113.7"),
        "the reloaded trusted proxies"
    );
    assert!(!gw.logs().contains("applies only at the next start"), "{}", gw.logs());

    // A bad file changes nothing, and says why, key by key.
    std::fs::write(
        &config,
        good.replace("[[routes]]\n", "[[routes]]\ncolour = \"blue\"\nflavour = 1\n"),
    )
    .unwrap();
    gw.signal("HUP");
    poll_until("the refusal in the log", Duration::from_secs(10), || async {
        let logs = gw.logs();
        if logs.contains("reload refused") && logs.contains("routes[0].colour") && logs.contains("routes[0].flavour") {
            Ok(())
        } else {
            Err("no refusal yet".to_string())
        }
    })
    .await;
    assert_eq!(app(client().get(gw.url("/x")).send().await.unwrap()).await, "two");
    // The admin API's reload answers what the log says.
    let refused = api_reload().await;
    assert_eq!(refused["applied"], false, "{refused}");
    let keys: Vec<&str> = refused["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["key"].as_str())
        .collect();
    assert_eq!(keys, ["routes[0].colour", "routes[0].flavour"], "{refused}");

    // A renewed certificate file applies without a signal: a.test's files now hold b.test's
    // certificate, which does not verify for a.test.
    std::fs::write(&config, &good).unwrap();
    std::fs::copy(dir.join("b.test.pem"), dir.join("a.test.pem")).unwrap();
    std::fs::copy(dir.join("b.test-key.pem"), dir.join("a.test-key.pem")).unwrap();
    poll_until("the renewed certificate", Duration::from_secs(15), || async {
        // A new client: a pooled connection would keep its old handshake.
        match tls_client(&dir, port)
            .get(format!("https://a.test:{port}/"))
            .send()
            .await
        {
            Err(e) if format!("{e:?}").to_lowercase().contains("certificate") => Ok(()),
            Err(e) => Err(format!("{e:?}")),
            Ok(r) => Err(format!("still served: {}", r.status())),
        }
    })
    .await;
    assert!(request_on(&mut kept).await.contains("200"));
    let applied = api_reload().await;
    assert_eq!(applied["applied"], true, "{applied}");
    assert!(
        applied["summary"].as_str().unwrap().contains("2 listener(s) (1 TLS)"),
        "{applied}"
    );
}
