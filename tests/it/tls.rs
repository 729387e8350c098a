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
