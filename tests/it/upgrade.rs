//! The binary upgrade: SIGUSR2 under continuous load, the listening sockets handed to the new
//! process, no request failed, the old process drained and gone.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{bin, client, make_certs, poll_until, pool, Gateway, Upstream};
use crate::tls::tls_listener;

/// What the load saw.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    failures: Mutex<Vec<String>>,
}

impl Tally {
    fn record(&self, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.failures.lock().unwrap().push(e);
            }
        }
    }

    async fn until_more(&self, than: u64, what: &str) {
        poll_until(what, Duration::from_secs(30), || async move {
            let ok = self.ok.load(Ordering::Relaxed);
            if ok > than {
                Ok(())
            } else {
                Err(format!("{ok} requests answered"))
            }
        })
        .await;
    }
}

/// One request on a connection of its own, read to its end.
async fn fresh_connection(addr: std::net::SocketAddr) -> Result<(), String> {
    let mut c = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    c.write_all(b"GET /fresh HTTP/1.1\r\nhost: app.test\r\nconnection: close\r\n\r\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), c.read_to_end(&mut response))
        .await
        .map_err(|_| "no response within 30 s".to_string())?
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    if text.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(format!(
            "fresh connection: {}",
            text.lines().next().unwrap_or("(nothing)")
        ))
    }
}

/// The PID the old process's log names as its successor, once the `nth` (from 1) upgrade has
/// happened.
fn successor(log: &str, nth: usize) -> Option<u32> {
    log.lines()
        .filter(|l| l.contains("upgrade: the new process is serving"))
        .nth(nth - 1)?
        .split_whitespace()
        .find_map(|w| w.strip_prefix("pid="))?
        .parse()
        .ok()
}

/// Running and not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().map(|r| !r.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// Stops a process this test started indirectly (the upgrade's new process is not its child).
struct Reap(Vec<u32>);

impl Drop for Reap {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// Installs a new binary at `exe` as a package manager does: a new file renamed over the old.
fn replace(exe: &Path) {
    let new = exe.with_extension("new");
    std::fs::copy(bin(), &new).unwrap();
    std::fs::rename(&new, exe).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_upgrade_under_load_drops_no_request_and_the_old_process_exits_drained() {
    let app = Upstream::start("app").await;
    let dir = tempfile::tempdir().unwrap();
    let exe: PathBuf = dir.path().join("portcullis");
    std::fs::copy(bin(), &exe).unwrap();
    let body = format!(
        "[server]\nthreads = 2\ngrace_period = \"5s\"\n{}
[[routes]]
require = \"none\"
name = \"app\"
upstream = \"app\"
",
        pool("app", &[app.addr], "")
    );
    // An HTTPS listener (HTTP/2 by ALPN) beside the harness's plain one.
    let tls_port = crate::harness::free_port();
    let mut ca = None;
    let mut gw = Gateway::start_from(&exe, &body, |dir| {
        make_certs(dir, &["localhost"]);
        ca = Some(dir.join("ca.pem"));
        tls_listener(dir, tls_port, &["localhost"])
    })
    .await;
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca.unwrap()).unwrap()).unwrap();
    let mut reap = Reap(Vec::new());

    let (tally, stop) = (Arc::new(Tally::default()), Arc::new(AtomicBool::new(false)));
    let mut load = Vec::new();
    for _ in 0..3 {
        // Kept-alive connections, as browsers and API clients hold them.
        let (tally, stop, url) = (tally.clone(), stop.clone(), gw.url("/kept"));
        load.push(tokio::spawn(async move {
            let http = client();
            while !stop.load(Ordering::Relaxed) {
                let outcome = match http.get(&url).header("host", "app.test").send().await {
                    Ok(r) if r.status() == 200 => r.bytes().await.map(|_| ()).map_err(|e| format!("body: {e}")),
                    Ok(r) => Err(format!("kept-alive: {}", r.status())),
                    Err(e) => Err(format!("kept-alive: {e:?}")),
                };
                tally.record(outcome);
            }
        }));
    }
    for http2 in [false, true] {
        // Kept-alive TLS connections, HTTP/1.1 and HTTP/2 (which gets GOAWAY at the drain).
        let (tally, stop, ca) = (tally.clone(), stop.clone(), ca.clone());
        let url = format!("https://localhost:{tls_port}/tls");
        load.push(tokio::spawn(async move {
            let b = reqwest::Client::builder()
                .no_proxy()
                .add_root_certificate(ca)
                .resolve("localhost", ([127, 0, 0, 1], tls_port).into());
            let http = if http2 {
                b.http2_prior_knowledge()
            } else {
                b.http1_only()
            }
            .build()
            .unwrap();
            while !stop.load(Ordering::Relaxed) {
                let outcome = match http.get(&url).send().await {
                    Ok(r) if r.status() == 200 => r.bytes().await.map(|_| ()).map_err(|e| format!("tls body: {e}")),
                    Ok(r) => Err(format!("tls: {}", r.status())),
                    Err(e) => Err(format!("tls (http2 {http2}): {e:?}")),
                };
                tally.record(outcome);
            }
        }));
    }
    for _ in 0..3 {
        // A connection per request: these reach the listening sockets during the hand-over.
        let (tally, stop, addr) = (tally.clone(), stop.clone(), gw.http);
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                tally.record(fresh_connection(addr).await);
            }
        }));
    }
    tally.until_more(300, "load running").await;

    // A new process that cannot start (here: the file no longer parses) changes nothing: the
    // old one says why and goes on serving.
    let config = gw.log.parent().unwrap().join("portcullis.toml");
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{good}\n[server]\nno_such_key = 1\n")).unwrap();
    gw.signal("USR2");
    let log = gw.log.clone();
    poll_until("the failed upgrade logged", Duration::from_secs(60), || {
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        async move {
            if log.contains("upgrade failed; this process goes on serving") {
                Ok(())
            } else {
                Err(log)
            }
        }
    })
    .await;
    assert!(
        gw.child.try_wait().unwrap().is_none(),
        "the old process is still running"
    );
    let before = tally.ok.load(Ordering::Relaxed);
    tally
        .until_more(before + 100, "load served after the failed upgrade")
        .await;
    std::fs::write(&config, good).unwrap();

    let mut pids = vec![gw.child.id()];
    for nth in 1..=2 {
        replace(&exe);
        let before = tally.ok.load(Ordering::Relaxed);
        if nth == 1 {
            gw.signal("USR2");
        } else {
            let ok = std::process::Command::new("kill")
                .args(["-USR2", &pids[nth - 1].to_string()])
                .status()
                .unwrap();
            assert!(ok.success());
        }
        let log = gw.log.clone();
        let (new_pid, _) = poll_until("the new process serving", Duration::from_secs(60), || {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            async move { successor(&log, nth).ok_or(log) }
        })
        .await;
        reap.0.push(new_pid);
        let old = pids[nth - 1];
        if nth == 1 {
            let (status, _) = poll_until("the old process exited", Duration::from_secs(15), || {
                let exited = gw.child.try_wait().unwrap();
                async move { exited.ok_or_else(|| "still draining".to_string()) }
            })
            .await;
            assert!(status.success(), "the old process exits 0 once drained: {status}");
        } else {
            poll_until("the old process exited", Duration::from_secs(15), || async move {
                if alive(old) {
                    Err("still draining".to_string())
                } else {
                    Ok(())
                }
            })
            .await;
        }
        let logs = std::fs::read_to_string(&gw.log).unwrap();
        assert!(
            logs.contains("listening sockets taken over from the previous process"),
            "{logs}"
        );
        assert!(logs.contains("drained; exiting"), "the old process drained: {logs}");
        // The new process runs the file now at the path, not the one it replaced.
        let running = std::fs::read_link(format!("/proc/{new_pid}/exe")).unwrap();
        assert_eq!(running, exe, "{running:?}");
        // Load goes on, served by the new process alone.
        tally.until_more(before + 300, "load served by the new process").await;
        let ready = client()
            .get(format!("http://{}/readyz", gw.admin))
            .send()
            .await
            .unwrap();
        assert_eq!(ready.status(), 200, "the admin listener was handed over too");
        pids.push(new_pid);
    }
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let failures = tally.failures.lock().unwrap().clone();
    eprintln!(
        "upgrade under load: {} requests answered, {} failed, across one failed and two good upgrades",
        tally.ok.load(Ordering::Relaxed),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} requests failed across two upgrades: {failures:?}",
        failures.len(),
        tally.ok.load(Ordering::Relaxed) + failures.len() as u64
    );
}
