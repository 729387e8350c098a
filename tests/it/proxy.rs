//! The data plane end to end: routing, balancing, failover, header hygiene, errors,
//! WebSocket, streaming, limits, shutdown.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};

use crate::harness::{client, echo, free_port, poll_until, pool, Gateway, Upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_and_longest_prefix() {
    let (a, b, c) = (
        Upstream::start("a").await,
        Upstream::start("b").await,
        Upstream::start("c").await,
    );
    let body = format!(
        "{}{}{}
[[routes]]
require = \"none\"
name = \"a-host\"
host = \"a.test\"
upstream = \"a\"

[[routes]]
require = \"none\"
name = \"b-api\"
host = \"a.test\"
path_prefix = \"/api\"
upstream = \"b\"

[[routes]]
require = \"none\"
name = \"wild\"
host = \"*.wild.test\"
upstream = \"c\"

[[routes]]
require = \"none\"
name = \"default\"
upstream = \"c\"
",
        pool("a", &[a.addr], ""),
        pool("b", &[b.addr], ""),
        pool("c", &[c.addr], "")
    );
    let gw = Gateway::start(&body).await;
    let http = client();
    let app = |host: &'static str, path: &'static str| {
        let req = http.get(gw.url(path)).header("host", host);
        async move {
            echo(req.send().await.unwrap()).await["app"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    assert_eq!(app("a.test", "/").await, "a");
    assert_eq!(app("A.TEST:8080", "/x").await, "a");
    assert_eq!(app("a.test", "/api").await, "b");
    assert_eq!(app("a.test", "/api/v1/users").await, "b");
    assert_eq!(app("a.test", "/apiary").await, "a");
    assert_eq!(app("x.wild.test", "/").await, "c");
    assert_eq!(app("other.test", "/").await, "c");

    let m = gw
        .metrics_with(r#"portcullis_http_requests_total{route="b-api",status_class="2xx"} 2"#)
        .await;
    assert!(
        m.contains(r#"portcullis_http_requests_total{route="b-api",status_class="2xx"} 2"#),
        "{m}"
    );
    assert!(
        m.contains(r#"portcullis_http_requests_total{route="a-host",status_class="2xx"} 3"#),
        "{m}"
    );
    assert!(m.contains("portcullis_http_request_duration_seconds_bucket"), "{m}");
    assert!(m.contains("portcullis_build_info"), "{m}");
    assert!(m.contains("portcullis_active_connections"), "{m}");
    // One access-log line per request, with route, status, duration and upstream.
    let logs = gw.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("/api/v1/users"))
        .expect("access log line");
    assert!(
        line.contains("b-api")
            && line.contains("200")
            && line.contains("duration_ms")
            && line.contains(&b.addr.to_string()),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrouted_request_gets_404_problem() {
    let a = Upstream::start("a").await;
    let body = format!(
        "{}\n[[routes]]\nrequire = \"none\"\nhost = \"a.test\"\nupstream = \"a\"\n",
        pool("a", &[a.addr], "")
    );
    let gw = Gateway::start(&body).await;
    let r = client()
        .get(gw.url("/"))
        .header("host", "nope.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let p: serde_json::Value = r.json().await.unwrap();
    assert_eq!(p["reason"], "no_route");
    assert_eq!(p["status"], 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_then_failover_when_one_upstream_dies() {
    let (a1, a2) = (Upstream::start("a1").await, Upstream::start("a2").await);
    let body = format!(
        "{}\n[[routes]]\nrequire = \"none\"\nupstream = \"a\"\n",
        pool(
            "a",
            &[a1.addr, a2.addr],
            "health_check = { kind = \"http\", path = \"/healthz\", interval = \"200ms\" }"
        )
    );
    let gw = Gateway::start(&body).await;
    let http = client();
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(
            echo(http.get(gw.url("/")).send().await.unwrap()).await["app"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let distinct: BTreeSet<_> = seen.iter().collect();
    assert_eq!(distinct.len(), 2, "round robin should use both: {seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0] != w[1]),
        "strict alternation expected: {seen:?}"
    );

    a2.kill();
    // Right away, connect failures (and idle connections a2 closed) fail over to the live
    // backend: no request is lost.
    for i in 0..6 {
        let r = http.get(gw.url("/")).send().await.unwrap();
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        assert_eq!(status, 200, "request {i} after the kill: {body}\n{}", gw.logs());
        assert!(body.contains(r#""app":"a1""#), "{body}");
    }
    // After a few health-check rounds (200 ms each) a2 is marked down and no longer even
    // tried: a round of requests then adds no connect failure.
    let refused = |m: &str| {
        m.lines()
            .find(|l| l.starts_with("portcullis_upstream_errors_total") && l.contains("connect_refused"))
            .map(|l| l.rsplit(' ').next().unwrap().to_string())
    };
    let round = || async {
        let before = gw.metrics().await;
        for _ in 0..6 {
            assert_eq!(echo(http.get(gw.url("/")).send().await.unwrap()).await["app"], "a1");
        }
        let after = gw.metrics().await;
        assert!(refused(&before).is_some(), "connect failures are counted: {before}");
        if refused(&before) == refused(&after) {
            Ok(())
        } else {
            Err(format!("{:?} -> {:?}", refused(&before), refused(&after)))
        }
    };
    let (_, took) = poll_until("a2 marked down by the health check", Duration::from_secs(5), round).await;
    assert!(
        took < Duration::from_secs(2),
        "three 200 ms health-check rounds took {took:?}"
    );
    round().await.expect("a2 must not be tried once marked down");
}

/// An upstream that reads each request's header and closes the connection without answering,
/// counting the requests by method.
async fn closer() -> (std::net::SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::AsyncReadExt;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let method = String::from_utf8_lossy(&buf)
                    .split(' ')
                    .next()
                    .unwrap_or("")
                    .to_string();
                log.lock().unwrap().push(method);
                // Dropping the socket closes it: the gateway sees the connection end unanswered.
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_requests_go_to_the_next_backend_when_one_closes_unanswered() {
    let good = Upstream::start("good").await;
    let (bad, seen) = closer().await;
    let body = format!(
        "{}\n[[routes]]\nrequire = \"none\"\nupstream = \"a\"\n",
        pool("a", &[bad, good.addr], "")
    );
    let gw = Gateway::start(&body).await;
    // A fresh client per request: no connection reuse between the client and the gateway
    // either, so each request is judged on its own.
    for i in 0..8 {
        let r = client().get(gw.url("/get")).send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        assert_eq!(status, 200, "GET {i}: {text}\n{}", gw.logs());
        assert!(text.contains(r#""app":"good""#), "{text}");
    }
    let gets = seen.lock().unwrap().iter().filter(|m| *m == "GET").count();
    assert!(gets >= 1, "round robin must have sent some GETs to the closing backend");
    let m = gw.metrics().await;
    let protocol = m
        .lines()
        .find(|l| l.starts_with("portcullis_upstream_errors_total") && l.contains("\"protocol\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok());
    assert_eq!(protocol, Some(gets as f64), "each unanswered try is counted: {m}");

    // A POST is never sent twice: the one the closing backend swallowed is answered 502.
    let mut refused = 0;
    for _ in 0..4 {
        let r = client().post(gw.url("/post")).body("x").send().await.unwrap();
        match r.status().as_u16() {
            200 => {}
            502 => {
                let p: serde_json::Value = r.json().await.unwrap();
                assert_eq!(p["reason"], "upstream_unreachable");
                refused += 1;
            }
            s => panic!("unexpected status {s}"),
        }
    }
    let posts = seen.lock().unwrap().iter().filter(|m| *m == "POST").count();
    assert!(refused >= 1, "round robin must have sent a POST to the closing backend");
    assert_eq!(
        posts, refused,
        "every POST the closing backend saw was answered 502, none replayed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_identity_headers_and_forwarding_from_untrusted_client() {
    let a = Upstream::start("a").await;
    let body = one_open_route("", &a);
    let gw = Gateway::start(&body).await;
    let e = echo(
        client()
            .get(gw.url("/"))
            .header("host", "app.test")
            .header("X-Portcullis-User", "admin@evil.test")
            .header("x-portcullis-device-id", "forged")
            .header("X-Forwarded-For", "1.2.3.4")
            .header("X-Forwarded-Proto", "https")
            .header("Forwarded", "for=1.2.3.4")
            .header("Connection", "keep-alive, X-Hop")
            .header("X-Hop", "secret")
            .header("Keep-Alive", "timeout=5")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let h = e["headers"].as_object().unwrap();
    assert!(h.keys().all(|k| !k.starts_with("x-portcullis-")), "{h:?}");
    assert_eq!(h["x-forwarded-for"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(h["x-forwarded-proto"], serde_json::json!(["http"]));
    assert_eq!(h["x-forwarded-host"], serde_json::json!(["app.test"]));
    assert!(!h.contains_key("forwarded"));
    assert!(
        !h.contains_key("x-hop"),
        "Connection-nominated headers are hop-by-hop: {h:?}"
    );
    assert!(!h.contains_key("keep-alive"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_from_trusted_proxy_are_appended() {
    let a = Upstream::start("a").await;
    let body = format!(
        "[server]\ntrusted_proxies = [\"127.0.0.0/8\"]\n\n{}\n[[routes]]\nrequire = \"none\"\nupstream = \"a\"\n",
        pool("a", &[a.addr], "")
    );
    let gw = Gateway::start(&body).await;
    let e = echo(
        client()
            .get(gw.url("/"))
            .header("X-Forwarded-For", "1.2.3.4")
            .header("X-Forwarded-Proto", "https")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        e["headers"]["x-forwarded-for"],
        serde_json::json!(["1.2.3.4, 127.0.0.1"])
    );
    assert_eq!(e["headers"]["x-forwarded-proto"], serde_json::json!(["https"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_upstream_gives_502_and_slow_one_504() {
    let slow = Upstream::start("slow").await;
    let dead = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let body = format!(
        "{}{}
[[routes]]
require = \"none\"
path_prefix = \"/dead\"
upstream = \"dead\"

[[routes]]
require = \"none\"
upstream = \"slow\"
",
        pool("dead", &[dead], ""),
        pool("slow", &[slow.addr], "read_timeout = \"300ms\"")
    );
    let gw = Gateway::start(&body).await;
    let http = client();

    let r = http.get(gw.url("/dead")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let p: serde_json::Value = r.json().await.unwrap();
    assert_eq!(p["reason"], "upstream_unreachable");

    let r = http
        .get(gw.url("/dead"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(r.text().await.unwrap().contains("Bad Gateway"));

    let started = Instant::now();
    let r = http.get(gw.url("/slow?ms=5000")).send().await.unwrap();
    assert_eq!(r.status(), 504);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    let p: serde_json::Value = r.json().await.unwrap();
    assert_eq!(p["reason"], "upstream_timeout");

    let m = gw
        .metrics_with(r#"portcullis_upstream_errors_total{kind="read_timeout",route="*/"} 1"#)
        .await;
    assert!(
        m.contains(r#"portcullis_upstream_errors_total{kind="read_timeout",route="*/"} 1"#),
        "{m}"
    );
    assert!(m.contains(r#"status_class="5xx"} 2"#), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_the_gateway() {
    let a = Upstream::start("a").await;
    let body = one_open_route("", &a);
    let gw = Gateway::start(&body).await;
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/ws", gw.http))
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    for i in 0..3 {
        ws.send(tokio_tungstenite::tungstenite::Message::text(format!("hello {i}")))
            .await
            .unwrap();
        let m = ws.next().await.unwrap().unwrap();
        assert_eq!(m.into_text().unwrap().as_str(), format!("hello {i}"));
    }
    ws.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_megabytes_stream_both_ways_in_bounded_memory() {
    const SIZE: u64 = 100 * 1024 * 1024;
    let a = Upstream::start("a").await;
    let body = one_open_route("", &a);
    let gw = Gateway::start(&body).await;
    let baseline = gw.peak_rss_kib();

    // Upload: 100 MB generated on the fly, counted by the app.
    let chunk = bytes::Bytes::from(vec![b'u'; 64 * 1024]);
    let chunks = (SIZE / chunk.len() as u64) as usize;
    let stream = futures_util::stream::iter((0..chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let r = client()
        .post(gw.url("/upload"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(echo(r).await["body_bytes"], SIZE);

    // Download: 100 MB streamed by the app, counted here.
    let r = client().get(gw.url(&format!("/bytes?n={SIZE}"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut got = 0u64;
    let mut s = r.bytes_stream();
    while let Some(c) = s.next().await {
        got += c.unwrap().len() as u64;
    }
    assert_eq!(got, SIZE);

    let peak = gw.peak_rss_kib();
    eprintln!("gateway peak RSS: {baseline} KiB before, {peak} KiB after streaming 2 x 100 MB");
    assert!(
        peak - baseline < 40 * 1024,
        "gateway memory grew by {} KiB while streaming 2 x 100 MB",
        peak - baseline
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_431() {
    let a = Upstream::start("a").await;
    let body = one_open_route("[server]\nmax_request_header_bytes = 4096\n\n", &a);
    let gw = Gateway::start(&body).await;
    let r = client()
        .get(gw.url("/"))
        .header("x-big", "y".repeat(8000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    let r = client()
        .get(gw.url("/"))
        .header("x-small", "y".repeat(100))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish_then_exits() {
    let a = Upstream::start("a").await;
    let body = one_open_route("", &a);
    let mut gw = Gateway::start(&body).await;
    let url = gw.url("/slow?ms=1000");
    let inflight = tokio::spawn(async move { client().get(url).send().await.map(|r| r.status()) });
    poll_until("the slow request in flight", Duration::from_secs(5), || async {
        let m = gw.metrics().await;
        match m.lines().find(|l| l.starts_with("portcullis_requests_in_flight ")) {
            Some(l) if l.ends_with(" 1") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    gw.signal("TERM");
    let status = inflight.await.unwrap();
    let status = status.unwrap_or_else(|e| panic!("in-flight request completes: {e}\n{}", gw.logs()));
    assert_eq!(status, 200);
    let exit = exited(&mut gw).await;
    assert!(exit.success(), "{exit}\n{}", gw.logs());
    // The listener is closed: new connections are refused.
    assert!(client().get(gw.url("/")).send().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_is_closed_after_client_keepalive_requests() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = Upstream::start("a").await;
    let body = one_open_route("[server]\nclient_keepalive_requests = 2\n\n", &a);
    let gw = Gateway::start(&body).await;
    let mut s = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    // Three requests at once; the gateway answers two and closes.
    let one = "GET /get HTTP/1.1\r\nHost: a.test\r\n\r\n";
    s.write_all(one.repeat(3).as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the gateway must close the connection, not hang");
    let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
    assert_eq!(text.matches("http/1.1 200").count(), 2, "{text}");
    assert_eq!(
        text.matches("connection: close").count(),
        1,
        "only the last one says close: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_open_at_sigterm_lives_through_the_grace_period_then_is_closed() {
    let a = Upstream::start("a").await;
    let body = one_open_route("[server]\ngrace_period = \"1500ms\"\n\n", &a);
    let mut gw = Gateway::start(&body).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", gw.http))
        .await
        .unwrap();
    // The upgraded connection counts (once its HTTP exchange has handed it over, and the
    // readiness probe's connection is gone).
    let m = gw.metrics_with("portcullis_active_connections 1\n").await;
    assert!(
        m.contains("portcullis_active_connections 1\n"),
        "the upgraded connection counts: {m}"
    );
    let started = Instant::now();
    gw.signal("TERM");
    // Draining (the listener no longer accepts): the socket still carries messages.
    let http = gw.http;
    poll_until("the drain began", Duration::from_secs(5), || async move {
        match tokio::net::TcpStream::connect(http).await {
            Ok(_) => Err("still accepting".to_string()),
            Err(_) => Ok(()),
        }
    })
    .await;
    ws.send(tokio_tungstenite::tungstenite::Message::text("still here"))
        .await
        .unwrap();
    let echoed = ws.next().await.unwrap().unwrap();
    assert_eq!(echoed.into_text().unwrap().as_str(), "still here");
    // Then the grace period ends: the connection is closed and the process exits.
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    assert!(end.is_ok(), "the WebSocket is closed at the end of the grace period");
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );
    let exit = exited(&mut gw).await;
    assert!(exit.success(), "{exit}\n{}", gw.logs());
}

/// `[server]` lines (may be empty), pool `a` and one open route to it.
fn one_open_route(server: &str, a: &Upstream) -> String {
    format!(
        "{server}{}\n[[routes]]\nrequire = \"none\"\nupstream = \"a\"\n",
        pool("a", &[a.addr], "")
    )
}

/// The gateway's exit status, once it exited (at most 5 s).
async fn exited(gw: &mut Gateway) -> std::process::ExitStatus {
    let child = &mut gw.child;
    let (exit, _) = poll_until("the gateway exited", Duration::from_secs(5), || {
        let exited = child.try_wait().unwrap();
        async move { exited.ok_or_else(|| "still running".to_string()) }
    })
    .await;
    exit
}
