//! `portcullis demo` as a newcomer runs it: the real binary as a child process (with a port
//! offset), read like a person reads it — its printed CA path and admin token — and every
//! persona's outcome, the compliance flip, HTTPS with the printed CA, the browser sign-in
//! through the emulator's persona picker, the admin API, and a clean Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::harness::{client, poll_until};
use crate::identity::Browser;

/// The demo's ports before the offset (DESIGN.md §8), and node-1's of a two-node demo.
const PORTS: [u16; 12] = [8443, 8080, 9090, 8900, 8901, 8091, 8092, 8543, 8180, 9190, 8191, 8192];

struct Demo {
    child: tokio::process::Child,
    offset: u16,
    ca: PathBuf,
    admin_token: String,
    summary: String,
    /// What the demo printed after its summary (node readiness, the sync leader).
    later: std::sync::Arc<std::sync::Mutex<String>>,
    _data: tempfile::TempDir,
}

impl Demo {
    fn port(&self, base: u16) -> u16 {
        base + self.offset
    }

    fn http(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port(8080))
    }

    fn emulator(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port(8900))
    }

    fn admin(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port(9090))
    }

    async fn token(&self, persona: &str) -> String {
        let v: serde_json::Value = client()
            .get(self.emulator(&format!("/_emulator/token?persona={persona}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["access_token"].as_str().unwrap().to_string()
    }

    async fn call(&self, persona: &str) -> reqwest::Response {
        client()
            .get(self.http("/hello"))
            .bearer_auth(self.token(persona).await)
            .send()
            .await
            .unwrap()
    }
}

/// An offset under which all five demo ports are free right now.
fn free_offset() -> u16 {
    for _ in 0..200 {
        let offset = 20_000 + (rand_u16() % 30_000);
        let free = PORTS
            .iter()
            .all(|p| std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], p + offset))).is_ok());
        if free {
            return offset;
        }
    }
    panic!("no free demo port offset found");
}

fn rand_u16() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let p = l.local_addr().unwrap().port();
    p.wrapping_mul(7919) ^ (std::process::id() as u16)
}

/// Starts the demo; with `own_data`, in a directory of the test's (`--data`), else in the
/// demo's own fresh temporary directory.
async fn start(own_data: bool) -> Demo {
    start_with(own_data, &[]).await
}

async fn start_with(own_data: bool, args: &[&str]) -> Demo {
    // Another process may take one of the ports between the look and the demo's bind (an
    // ephemeral port of some test's client): then again, on other ports.
    for attempt in 0.. {
        match try_start(own_data, args).await {
            Ok(demo) => return demo,
            Err(log) if log.contains("in use") && attempt < 2 => continue,
            Err(log) => panic!("the demo exited early:\n{log}"),
        }
    }
    unreachable!("the loop returns or panics")
}

/// The demo started and ready, or what it logged when it exited early.
async fn try_start(own_data: bool, args: &[&str]) -> Result<Demo, String> {
    let data = tempfile::tempdir().unwrap();
    let offset = free_offset();
    let mut cmd = tokio::process::Command::new(crate::harness::bin());
    cmd.args(["demo", "--port-offset", &offset.to_string()]).args(args);
    if own_data {
        cmd.arg("--data").arg(data.path());
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::File::create(data.path().join("demo.log")).unwrap(),
        ))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut summary = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut admin_token = None;
    loop {
        let next = tokio::time::timeout_at(deadline.into(), lines.next_line())
            .await
            .expect("the demo printed its summary")
            .unwrap();
        let Some(line) = next else {
            let log = std::fs::read_to_string(data.path().join("demo.log")).unwrap_or_default();
            return Err(format!("{summary}\n{log}"));
        };
        summary.push_str(&line);
        summary.push('\n');
        if let Some(t) = line.strip_prefix("admin token: ") {
            admin_token = Some(t.trim().to_string());
        }
        if line.starts_with("Stop with Ctrl-C") {
            break;
        }
    }
    let admin_token = admin_token.expect("the summary has an `admin token: …` line");
    // Keep draining stdout so the demo never blocks on a full pipe.
    let later = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = later.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    let ca = summary
        .split("development CA: ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .map(PathBuf::from)
        .expect("the summary names the development CA");
    let demo = Demo {
        child,
        offset,
        ca,
        admin_token,
        summary,
        later,
        _data: data,
    };
    let ready = demo.admin("/readyz");
    let left = deadline.saturating_duration_since(Instant::now());
    poll_until("the demo ready", left, || async {
        match client().get(&ready).send().await {
            Ok(r) if r.status() == 200 => Ok(()),
            Ok(r) => Err(r.status().to_string()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    Ok(demo)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_prints_its_summary_and_every_persona_gets_its_outcome() {
    let d = start(true).await;
    // The summary says where everything is and gives commands to paste.
    for needle in [
        &format!("https://127.0.0.1:{}/", d.port(8443)),
        &format!("http://127.0.0.1:{}/", d.port(8080)),
        &format!("http://127.0.0.1:{}/api/v1/", d.port(9090)),
        &"/_emulator/devices/d1000000-0000-4000-8000-00000000000a/compliance".to_string(),
        &"explain --url".to_string(),
    ] {
        assert!(
            d.summary.contains(needle.as_str()),
            "summary lacks {needle}:\n{}",
            d.summary
        );
    }

    // Every persona, as DESIGN.md §8 says.
    let r = d.call("alice").await;
    assert_eq!(r.status(), 200);
    let echo: serde_json::Value = r.json().await.unwrap();
    assert_eq!(echo["headers"]["x-portcullis-decision"], json!(["compliant"]));
    assert_eq!(
        echo["headers"]["x-portcullis-user"],
        json!(["alice@contoso.test"]),
        "{echo}"
    );
    let r = d.call("erin").await;
    assert_eq!(r.status(), 200);
    let echo: serde_json::Value = r.json().await.unwrap();
    assert_eq!(echo["headers"]["x-portcullis-decision"], json!(["device_in_grace"]));
    assert!(
        echo["headers"]["x-portcullis-grace-ends"][0]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{echo}"
    );
    // In a browser, erin is told by when to fix her Mac, once per browser session: a page with
    // the deadline and Continue, which remembers it and goes back to the page asked for.
    let navigate = |cookie: Option<String>| {
        let d = &d;
        async move {
            let mut r = client()
                .get(d.http("/hello?x=1"))
                .bearer_auth(d.token("erin").await)
                .header("accept", "text/html");
            if let Some(c) = cookie {
                r = r.header("cookie", c);
            }
            r.send().await.unwrap()
        }
    };
    let r = navigate(None).await;
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(
        page.contains("Your device needs attention soon") && page.contains(" UTC</strong>"),
        "{page}"
    );
    let href = page
        .split("href=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .map(|h| h.replace("&amp;", "&"))
        .unwrap_or_else(|| panic!("{page}"));
    assert!(
        href.starts_with("/.portcullis/grace_ack?return_to=%2Fhello%3Fx%3D1&until="),
        "{href}"
    );
    let no_redirects = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirects.get(d.http(&href)).send().await.unwrap();
    assert_eq!(
        (r.status().as_u16(), r.headers()["location"].to_str().unwrap()),
        (303, "/hello?x=1")
    );
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let r = navigate(Some(cookie.clone())).await;
    assert_eq!(r.status(), 200);
    let echo: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        echo["headers"]["x-portcullis-decision"],
        json!(["device_in_grace"]),
        "the app, this time"
    );
    assert!(
        !echo["headers"]["cookie"].to_string().contains("portcullis-grace"),
        "gateway cookies stay here: {echo}"
    );
    // Another deadline is told again.
    assert_eq!(
        navigate(Some(cookie.replace('=', "=1"))).await.headers()["content-type"],
        "text/html; charset=utf-8"
    );
    let r = d.call("bob").await;
    assert_eq!(r.status(), 403);
    let p: serde_json::Value = r.json().await.unwrap();
    assert_eq!(p["reason"], "device_noncompliant", "{p}");
    for (persona, words) in [
        ("carol", "not yet registered with Microsoft Entra ID"),
        ("dave", "Enroll this Mac"),
    ] {
        let r = client()
            .get(d.http("/hello"))
            .bearer_auth(d.token(persona).await)
            .header("accept", "text/html")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{persona}");
        let html = r.text().await.unwrap();
        assert!(html.contains(words), "{persona}'s landing says {words:?}:\n{html}");
    }
    let r = client().get(d.http("/hello")).send().await.unwrap();
    assert_eq!(r.status(), 401, "no token");
    // The printed way to get a token: `portcullis emulator token alice --url …`.
    let out = std::process::Command::new(crate::harness::bin())
        .args(["emulator", "token", "alice", "--url", &d.emulator("")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap();
    let r = client()
        .get(d.http("/hello"))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_https_with_http2_browser_sign_in_and_the_admin_api() {
    let d = start(true).await;
    // HTTPS with the printed CA (and HTTP/2).
    let https = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&d.ca).unwrap()).unwrap())
        .resolve("localhost", SocketAddr::from(([127, 0, 0, 1], d.port(8443))))
        .build()
        .unwrap();
    let r = https
        .get(format!("https://localhost:{}/hello", d.port(8443)))
        .bearer_auth(d.token("alice").await)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);

    // A person in a browser: the persona picker, then the app or the landing page.
    for (persona, status, words) in [
        ("alice", 200, "alice@contoso.test"),
        ("bob", 403, "device_noncompliant"),
    ] {
        let b = Browser::new(&d.ca, d.port(8443));
        let r = b.sign_in("/hello", persona).await;
        assert_eq!(r.status(), status, "{persona} in a browser");
        let body = r.text().await.unwrap();
        assert!(body.contains(words), "{persona}: {body}");
    }

    // The admin API with the printed token.
    let r = client()
        .get(d.admin("/api/v1/computers"))
        .bearer_auth(&d.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["items"].as_array().unwrap().len() >= 4, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_enforces_a_compliance_flip_and_exits_cleanly_on_ctrl_c() {
    let mut d = start(true).await;
    // The compliance flip: alice is refused within seconds (sync interval 2 s).
    let r = client()
        .post(d.emulator("/_emulator/devices/d1000000-0000-4000-8000-00000000000a/compliance"))
        .json(&json!({ "isCompliant": false }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let (p, took) = poll_until("alice refused after the flip", Duration::from_secs(15), || async {
        let r = d.call("alice").await;
        match r.status().as_u16() {
            403 => Ok(r.json::<serde_json::Value>().await.unwrap()),
            other => Err(other.to_string()),
        }
    })
    .await;
    assert_eq!(p["reason"], "device_noncompliant");
    eprintln!("compliance flip enforced after {took:?}");

    // Ctrl-C: a clean, prompt exit.
    let pid = d.child.id().unwrap().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = tokio::time::timeout(Duration::from_secs(15), d.child.wait())
        .await
        .expect("the demo stopped within 15 s of Ctrl-C")
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_removes_its_temporary_directory_on_ctrl_c() {
    let mut d = start(false).await;
    let dir = d
        .summary
        .lines()
        .find_map(|l| l.trim().strip_prefix("data directory: "))
        .map(PathBuf::from)
        .expect("the summary names the data directory");
    assert!(dir.join("ca.pem").exists(), "{}", dir.display());
    let pid = d.child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::time::timeout(Duration::from_secs(15), d.child.wait())
        .await
        .expect("the demo stopped")
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!dir.exists(), "{} is left behind", dir.display());
}

/// `portcullis demo --nodes 2 --store postgres://…`: two gateway processes on one database
/// (a fresh schema), both enforcing, the compliance flip reaching both, the leader named; a
/// second node without PostgreSQL is refused before anything starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_two_nodes_on_one_postgres() {
    let out = std::process::Command::new(crate::harness::bin())
        .args(["demo", "--nodes", "2", "--port-offset", &free_offset().to_string()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--nodes 2 or more needs --store postgres://"),
        "{err}"
    );

    let (_, schema) = portcullis::store::postgres::testing::fresh_schema()
        .await
        .expect("PostgreSQL for the tests");
    let url = portcullis::store::postgres::testing::url_for_schema(&schema);
    let mut d = start_with(false, &["--nodes", "2", "--store", &url]).await;
    assert!(
        d.summary
            .contains(&format!("node-1: https://127.0.0.1:{}/", d.port(8543))),
        "{}",
        d.summary
    );
    let node1 = format!("http://127.0.0.1:{}/hello", d.port(8180));
    let call = |url: String, persona: &'static str| {
        let d = &d;
        async move {
            // 0: not listening (yet).
            match client().get(url).bearer_auth(d.token(persona).await).send().await {
                Ok(r) => r.status().as_u16(),
                Err(_) => 0,
            }
        }
    };
    poll_until("node-1 serving", Duration::from_secs(30), || async {
        match call(node1.clone(), "alice").await {
            200 => Ok(()),
            other => Err(other.to_string()),
        }
    })
    .await;
    assert_eq!(call(d.http("/hello"), "alice").await, 200);
    assert_eq!(call(node1.clone(), "bob").await, 403);
    let (leader, _) = poll_until("the leader named", Duration::from_secs(15), || async {
        let later = d.later.lock().unwrap().clone();
        later
            .lines()
            .find_map(|l| l.strip_prefix("sync leader: ").map(str::to_string))
            .ok_or(later)
    })
    .await;
    assert!(leader == "node-0" || leader == "node-1", "{leader}");
    // The flip, synced by whichever node leads, is enforced by both.
    let r = client()
        .post(d.emulator("/_emulator/devices/d1000000-0000-4000-8000-00000000000a/compliance"))
        .json(&json!({ "isCompliant": false }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    poll_until("alice refused on both nodes", Duration::from_secs(15), || async {
        match (
            call(d.http("/hello"), "alice").await,
            call(node1.clone(), "alice").await,
        ) {
            (403, 403) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // Ctrl-C stops the cluster: node-1 goes with node-0.
    let pid = d.child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::time::timeout(Duration::from_secs(15), d.child.wait())
        .await
        .expect("the demo stopped")
        .unwrap();
    assert!(status.success(), "{status:?}");
    poll_until("node-1 gone", Duration::from_secs(10), || async {
        match client().get(&node1).send().await {
            Err(_) => Ok(()),
            Ok(r) => Err(r.status().to_string()),
        }
    })
    .await;
}
