//! The soak: the release gateway (`portcullis serve`, a child process with a configuration file,
//! as in production) in front of the demo app, fed by the emulator (Entra, Graph and Jamf Pro, in
//! this process), under a fixed request rate for a long time, with what production brings:
//!
//! - a realistic mix: alice's one bearer token over and over (50 %), one of 20,000 distinct
//!   valid tokens (20 %), browser sessions signed in through the real flow (15 %), bob's
//!   noncompliant Mac (10 %, refused with 403), and a Mac whose compliance flips every minute
//!   (5 %, 200 or 403 as it stands; either within 10 s of a flip);
//! - open WebSockets: four on alice's Mac that must stay up, echoing every 5 s, and one on the
//!   flipping Mac, which the gateway must cut (close 1008) when it falls out of compliance;
//! - a reload (SIGHUP) every five minutes (`--reload-every SECONDS`).
//!
//! First the saturation rate of that mix is measured (closed loop, 10 s); then the soak runs at
//! `--load` (default 80 %) of it, open loop: latency counts from when a request was due, so a
//! stall shows. Every `--window` seconds one line: requests, errors (5xx or no response),
//! unexpected answers, p50/p99 latency, the gateway's RSS, open descriptors and threads. At the
//! end: totals and the slope of RSS and descriptors after the warm-up.
//!
//! `benches/load/soak.sh` builds it and draws the chart; by hand:
//! `cargo run --release --features demo --example soak -- --gateway target/release/portcullis
//!  --duration 1800 --out /tmp/soak`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use portcullis::emulator::{personas, EntraState};
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};

const FLIP_DEVICE: &str = "d1000000-0000-4000-8000-0000000f11b0";
const BOB_DEVICE_REFUSED: u16 = 403;
/// Requests in flight at most, and kept-alive connections: the same in the saturation run and
/// the soak, so that 80 % of one is 80 % of the other.
const CONNECTIONS: usize = 64;

struct Args {
    gateway: PathBuf,
    duration: u64,
    window: u64,
    load: f64,
    out: PathBuf,
    /// Seconds between reloads.
    reload_every: u64,
}

fn args() -> Args {
    let mut a = Args {
        gateway: PathBuf::from("target/release/portcullis"),
        duration: 1800,
        window: 30,
        load: 0.8,
        out: PathBuf::from("target/soak"),
        reload_every: 300,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--gateway" => a.gateway = value.into(),
            "--duration" => a.duration = value.parse().expect("--duration SECONDS"),
            "--window" => a.window = value.parse().expect("--window SECONDS"),
            "--load" => a.load = value.parse().expect("--load FRACTION"),
            "--out" => a.out = value.into(),
            "--reload-every" => a.reload_every = value.parse().expect("--reload-every SECONDS"),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

/// What one window saw.
#[derive(Default)]
struct Window {
    ok: u64,
    refused: u64,
    errors: u64,
    unexpected: u64,
    latencies_us: Vec<u32>,
    notes: Vec<String>,
}

impl Shared {
    /// A note on the current window (what happened in it, for the samples).
    fn note(&self, what: impl Into<String>) {
        self.window.lock().expect("window").notes.push(what.into());
    }
}

#[derive(Default)]
struct Shared {
    window: Mutex<Window>,
    /// The flipping Mac's compliance, and when it last changed (ms since start).
    flip_compliant: AtomicBool,
    flip_at_ms: AtomicU64,
    ws_errors: AtomicU64,
    ws_cuts: AtomicU64,
    ws_cut_late: AtomicU64,
    ws_echoes: AtomicU64,
}

/// The credentials of each kind of request.
struct Mix {
    alice: String,
    distinct: Vec<String>,
    sessions: Vec<String>,
    bob: String,
    flip: String,
}

enum Kind {
    Alice,
    Distinct(usize),
    Session(usize),
    Bob,
    Flip,
}

fn kind(i: u64) -> Kind {
    let i = i as usize;
    match i % 20 {
        0..=9 => Kind::Alice,
        // Each distinct token once per pass over the pool.
        r @ 10..=13 => Kind::Distinct(i / 20 * 4 + (r - 10)),
        14..=16 => Kind::Session(i / 20),
        17 | 18 => Kind::Bob,
        _ => Kind::Flip,
    }
}

fn main() {
    let mut args = args();
    std::fs::create_dir_all(&args.out).expect("out dir");
    // The configuration names files relative to itself: give it absolute paths.
    args.out = std::fs::canonicalize(&args.out).expect("out dir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(args));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn run(args: Args) {
    let started = Instant::now();
    // The emulator and the demo app, in this process.
    let emu_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let emu = format!("http://{}", emu_listener.local_addr().expect("addr"));
    let state = Arc::new(EntraState::new(&emu).expect("emulator"));
    tokio::spawn(portcullis::emulator::serve(emu_listener, state.clone()));
    let app_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let app = app_listener.local_addr().expect("addr");
    tokio::spawn(async move { portcullis::emulator::upstream::serve(app_listener, "demo-app").await });

    let (port, admin) = (free_port(), free_port());
    let base = format!("http://127.0.0.1:{port}");
    state.register_redirect(personas::GATEWAY_CLIENT_ID, &format!("{base}/.portcullis/callback"));
    let config = args.out.join("portcullis.toml");
    std::fs::write(
        &config,
        format!(
            r#"[server]
threads = 2
grace_period = "2s"

[admin]
listen = "127.0.0.1:{admin}"

[entra]
tenant_id = "{tenant}"
client_id = "{client}"
app_id_uris = ["{app_id_uri}"]
client_secret = "{secret}"
authority_url = "{emu}"
graph_url = "{emu}"

[[listeners]]
name = "http"
address = "127.0.0.1:{port}"

[upstreams.demo-app]
addresses = ["{app}"]
health_check = {{ kind = "http", path = "/healthz", interval = "2s" }}

[sync]
interval = "2s"
intune_interval = "10s"

[jamf]
url = "{emu}"
client_id = "portcullis-jamf-client"
client_secret = "portcullis-jamf-secret"
interval = "10s"

[device]
change_poll_interval = "500ms"

[store]
url = "sqlite://{db}"

[[routes]]
name = "demo-app"
upstream = "demo-app"
"#,
            tenant = personas::TENANT_ID,
            client = personas::GATEWAY_CLIENT_ID,
            app_id_uri = personas::GATEWAY_APP_ID_URI,
            secret = personas::GATEWAY_CLIENT_SECRET,
            db = args.out.join("soak.db").display(),
        ),
    )
    .expect("config");
    let log = std::fs::File::create(args.out.join("gateway.log")).expect("log");
    // No access line per request (as in the load comparison); warnings and errors are kept.
    let mut gateway = std::process::Command::new(&args.gateway)
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info,access=off")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start the gateway");
    let pid = gateway.id();
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(CONNECTIONS)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let ready = format!("http://127.0.0.1:{admin}/readyz");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !http.get(&ready).send().await.is_ok_and(|r| r.status() == 200) {
        if let Ok(Some(status)) = gateway.try_wait() {
            panic!(
                "soak: the gateway exited ({status}); see {}",
                args.out.join("gateway.log").display()
            );
        }
        assert!(Instant::now() < deadline, "soak: the gateway not ready within 120 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A Mac of alice's whose compliance the soak flips.
    let added = http
        .post(format!("{emu}/_emulator/devices"))
        .json(&serde_json::json!({"deviceId": FLIP_DEVICE, "displayName": "Flipping Mac", "isCompliant": true}))
        .send()
        .await
        .expect("add the flipping Mac");
    assert!(added.status().is_success(), "add device: {}", added.status());
    let token = |query: String| {
        let (http, emu) = (http.clone(), emu.clone());
        async move {
            let v: serde_json::Value = http
                .get(format!("{emu}/_emulator/token?{query}"))
                .send()
                .await
                .expect("token")
                .json()
                .await
                .expect("token json");
            v["access_token"].as_str().expect("access_token").to_string()
        }
    };
    let now = portcullis::base::time::unix_now_i64();
    let mut distinct = Vec::with_capacity(20_000);
    for i in 0..20_000 {
        distinct.push(token(format!("persona=alice&exp={}", now + 7200 + i)).await);
    }
    let alice = token(format!("persona=alice&exp={}", now + 7200)).await;
    let bob = token(format!("persona=bob&exp={}", now + 7200)).await;
    let flip = token(format!("persona=alice&deviceid={FLIP_DEVICE}&exp={}", now + 7200)).await;
    // The sync has brought the devices in when alice and the flipping Mac get through.
    for t in [&alice, &flip] {
        let url = format!("{base}/hello");
        wait("the devices synced", || async {
            http.get(&url)
                .bearer_auth(t)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
    }
    let mut sessions = Vec::new();
    for _ in 0..10 {
        let out = std::process::Command::new("python3")
            .args(["benches/load/session.py", &base, "alice"])
            .output()
            .expect("session.py");
        assert!(
            out.status.success(),
            "sign-in: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        sessions.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    let mix = Arc::new(Mix {
        alice,
        distinct,
        sessions,
        bob,
        flip,
    });
    let shared = Arc::new(Shared::default());
    shared.flip_compliant.store(true, Ordering::SeqCst);
    println!("soak: ready after {:.0} s", started.elapsed().as_secs_f64());

    // Saturation: the mix in a closed loop, CONNECTIONS at a time, for 10 s.
    let sat = saturation(&http, &base, &mix, &shared).await;
    let rate = (sat * args.load).max(1.0);
    println!(
        "soak: saturation {sat:.0} requests/s; soaking at {rate:.0}/s ({:.0} %) for {} s",
        args.load * 100.0,
        args.duration
    );
    *shared.window.lock().expect("window") = Window::default();

    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    // WebSockets.
    let ws_url = format!("ws://127.0.0.1:{port}/ws");
    let mut tasks = Vec::new();
    for _ in 0..4 {
        tasks.push(tokio::spawn(steady_socket(
            ws_url.clone(),
            mix.alice.clone(),
            shared.clone(),
            stop.clone(),
        )));
    }
    tasks.push(tokio::spawn(flip_socket(
        ws_url.clone(),
        mix.flip.clone(),
        shared.clone(),
        stop.clone(),
        t0,
    )));
    // Flips and reloads.
    tasks.push(tokio::spawn({
        let (http, emu, shared, stop) = (http.clone(), emu.clone(), shared.clone(), stop.clone());
        let reload_every = args.reload_every.max(1);
        async move {
            let (mut minute, mut reloads) = (0u64, 0u64);
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let due = t0.elapsed().as_secs() / reload_every;
                if due > reloads {
                    reloads = due;
                    let _ = std::process::Command::new("kill")
                        .args(["-HUP", &pid.to_string()])
                        .status();
                    shared.note("reload");
                }
                let m = t0.elapsed().as_secs() / 60;
                if m == minute {
                    continue;
                }
                minute = m;
                let compliant = !shared.flip_compliant.load(Ordering::SeqCst);
                shared
                    .flip_at_ms
                    .store(t0.elapsed().as_millis() as u64, Ordering::SeqCst);
                shared.flip_compliant.store(compliant, Ordering::SeqCst);
                let r = http
                    .post(format!("{emu}/_emulator/devices/{FLIP_DEVICE}/compliance"))
                    .json(&serde_json::json!({ "isCompliant": compliant }))
                    .send()
                    .await;
                if !r.is_ok_and(|r| r.status().is_success()) {
                    shared.note("flip failed");
                }
            }
        }
    }));
    // The open-loop load: request i is due at t0 + i / rate.
    tasks.push(tokio::spawn({
        let (http, base, mix, shared, stop) = (http.clone(), base.clone(), mix.clone(), shared.clone(), stop.clone());
        async move {
            // As many in flight as the saturation run had: more would only queue in the kernel.
            let limit = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS));
            let mut i = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            while !stop.load(Ordering::SeqCst) {
                tick.tick().await;
                let due_now = (t0.elapsed().as_secs_f64() * rate) as u64;
                while i < due_now {
                    let due = t0 + Duration::from_secs_f64(i as f64 / rate);
                    let permit = limit.clone().acquire_owned().await.expect("semaphore");
                    let (http, base, mix, shared) = (http.clone(), base.clone(), mix.clone(), shared.clone());
                    tokio::spawn(async move {
                        one(&http, &base, &mix, &shared, i, due, t0).await;
                        drop(permit);
                    });
                    i += 1;
                }
            }
        }
    }));

    let mut rows = Vec::new();
    let tsv_path = args.out.join("soak.tsv");
    let header = "t_s\trequests\trate\terrors\tunexpected\trefused\tp50_ms\tp99_ms\trss_mib\tfds\tthreads\tws_echoes\tws_errors\tws_cuts\tnotes";
    println!("{header}");
    let mut tsv = vec![header.to_string()];
    let mut last_echoes = 0;
    let mut next = t0;
    while t0.elapsed() < Duration::from_secs(args.duration) {
        next += Duration::from_secs(args.window);
        tokio::time::sleep_until(next.into()).await;
        let w = std::mem::take(&mut *shared.window.lock().expect("window"));
        let mut lat = w.latencies_us;
        lat.sort_unstable();
        let pct = |p: f64| {
            lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0) as f64
                / 1000.0
        };
        let (rss, fds, threads) = proc_stats(pid);
        let echoes = shared.ws_echoes.load(Ordering::SeqCst);
        let row = Row {
            t: t0.elapsed().as_secs_f64(),
            requests: w.ok + w.refused + w.errors + w.unexpected,
            errors: w.errors,
            unexpected: w.unexpected,
            rss,
            fds,
        };
        let line = format!(
            "{:.0}\t{}\t{:.0}\t{}\t{}\t{}\t{:.2}\t{:.2}\t{:.1}\t{}\t{}\t{}\t{}\t{}\t{}",
            row.t,
            row.requests,
            row.requests as f64 / args.window as f64,
            w.errors,
            w.unexpected,
            w.refused,
            pct(0.5),
            pct(0.99),
            rss,
            fds,
            threads,
            echoes - last_echoes,
            shared.ws_errors.load(Ordering::SeqCst),
            shared.ws_cuts.load(Ordering::SeqCst),
            if w.notes.is_empty() {
                "-".to_string()
            } else {
                w.notes.join(",")
            },
        );
        last_echoes = echoes;
        println!("{line}");
        tsv.push(line);
        std::fs::write(&tsv_path, tsv.join("\n") + "\n").expect("write tsv");
        rows.push(row);
        if let Ok(Some(status)) = gateway.try_wait() {
            panic!("the gateway exited: {status}");
        }
    }
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = gateway.wait();

    // After the warm-up (the first fifth): how RSS and descriptors move.
    let warm: Vec<&Row> = rows.iter().skip(rows.len() / 5).collect();
    let slope = |f: &dyn Fn(&Row) -> f64| {
        let n = warm.len() as f64;
        let (mx, my) = (
            warm.iter().map(|r| r.t).sum::<f64>() / n,
            warm.iter().map(|r| f(r)).sum::<f64>() / n,
        );
        let cov: f64 = warm.iter().map(|r| (r.t - mx) * (f(r) - my)).sum();
        let var: f64 = warm.iter().map(|r| (r.t - mx).powi(2)).sum();
        if var > 0.0 {
            cov / var * 3600.0
        } else {
            0.0
        }
    };
    let total: u64 = rows.iter().map(|r| r.requests).sum();
    let errors: u64 = rows.iter().map(|r| r.errors).sum();
    let unexpected: u64 = rows.iter().map(|r| r.unexpected).sum();
    let logs = std::fs::read_to_string(args.out.join("gateway.log")).unwrap_or_default();
    let summary = format!(
        "soak: {total} requests in {} s at {rate:.0}/s (saturation {sat:.0}/s): {errors} errors (5xx or no answer), {unexpected} unexpected answers; \
         WebSockets: {} echoes, {} errors, {} cut on a flip ({} later than 5 s); reloads applied: {}; \
         after warm-up RSS {:.1} → {:.1} MiB (slope {:+.2} MiB/h), descriptors {} → {} (slope {:+.1}/h)",
        args.duration,
        shared.ws_echoes.load(Ordering::SeqCst),
        shared.ws_errors.load(Ordering::SeqCst),
        shared.ws_cuts.load(Ordering::SeqCst),
        shared.ws_cut_late.load(Ordering::SeqCst),
        logs.matches("configuration reloaded").count(),
        warm.first().map_or(0.0, |r| r.rss),
        warm.last().map_or(0.0, |r| r.rss),
        slope(&|r| r.rss),
        warm.first().map_or(0, |r| r.fds),
        warm.last().map_or(0, |r| r.fds),
        slope(&|r| r.fds as f64),
    );
    println!("{summary}");
    std::fs::write(args.out.join("summary.txt"), summary + "\n").expect("summary");
}

struct Row {
    t: f64,
    requests: u64,
    errors: u64,
    unexpected: u64,
    rss: f64,
    fds: u64,
}

async fn wait<F, Fut>(what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(120);
    while !probe().await {
        assert!(Instant::now() < deadline, "soak: {what}: not within 120 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// RSS (MiB), open descriptors and threads of `pid`.
fn proc_stats(pid: u32) -> (f64, u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()))
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    (field("VmRSS:") as f64 / 1024.0, fds, field("Threads:"))
}

/// One request of the mix; its outcome into the current window.
async fn one(http: &reqwest::Client, base: &str, mix: &Mix, shared: &Shared, i: u64, due: Instant, t0: Instant) {
    let url = format!("{base}/hello");
    let (req, expect) = match kind(i) {
        Kind::Alice => (http.get(&url).bearer_auth(&mix.alice), Some(200)),
        Kind::Distinct(n) => (
            http.get(&url).bearer_auth(&mix.distinct[n % mix.distinct.len()]),
            Some(200),
        ),
        Kind::Session(n) => (
            http.get(&url).header("cookie", &mix.sessions[n % mix.sessions.len()]),
            Some(200),
        ),
        Kind::Bob => (http.get(&url).bearer_auth(&mix.bob), Some(BOB_DEVICE_REFUSED)),
        Kind::Flip => {
            let since = t0.elapsed().as_millis() as u64 - shared.flip_at_ms.load(Ordering::SeqCst);
            let expect = if since < 10_000 && shared.flip_at_ms.load(Ordering::SeqCst) > 0 {
                None
            } else if shared.flip_compliant.load(Ordering::SeqCst) {
                Some(200)
            } else {
                Some(403)
            };
            (http.get(&url).bearer_auth(&mix.flip), expect)
        }
    };
    let outcome = match req.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let body = r.bytes().await;
            match (status, body) {
                (_, Err(e)) => Err(format!("body: {e}")),
                (s, Ok(_)) if s >= 500 => Err(format!("status {s}")),
                (s, Ok(_)) => Ok(s),
            }
        }
        Err(e) => Err(format!("{e}")),
    };
    let took = due.elapsed().as_micros().min(u32::MAX as u128) as u32;
    let mut w = shared.window.lock().expect("window");
    w.latencies_us.push(took);
    match outcome {
        Ok(s) if expect.is_none_or(|e| e == s) => {
            if s == 200 {
                w.ok += 1
            } else {
                w.refused += 1
            }
        }
        Ok(s) => {
            w.unexpected += 1;
            if w.notes.len() < 3 {
                w.notes.push(format!("unexpected {s}"));
            }
        }
        Err(e) => {
            w.errors += 1;
            if w.notes.len() < 3 {
                w.notes.push(e);
            }
        }
    }
}

/// Closed loop, [`CONNECTIONS`] at a time, 10 s: requests per second.
async fn saturation(http: &reqwest::Client, base: &str, mix: &Arc<Mix>, shared: &Arc<Shared>) -> f64 {
    let counter = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs(10);
    let mut workers = Vec::new();
    for w in 0..CONNECTIONS as u64 {
        let (http, base, mix, shared, counter) = (
            http.clone(),
            base.to_string(),
            mix.clone(),
            shared.clone(),
            counter.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut i = w;
            while Instant::now() < end {
                one(&http, &base, &mix, &shared, i, Instant::now(), t0).await;
                counter.fetch_add(1, Ordering::Relaxed);
                i += CONNECTIONS as u64;
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    counter.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64()
}

async fn connect(
    url: &str,
    token: &str,
) -> Result<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>, String> {
    let mut req = url.into_client_request().map_err(|e| e.to_string())?;
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().map_err(|_| "header".to_string())?,
    );
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(s, _)| s)
        .map_err(|e| e.to_string())
}

/// A WebSocket on alice's compliant Mac: it must echo every 5 s for the whole soak.
async fn steady_socket(url: String, token: String, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        let mut ws = match connect(&url, &token).await {
            Ok(ws) => ws,
            Err(e) => {
                shared.ws_errors.fetch_add(1, Ordering::SeqCst);
                shared.note(format!("ws connect: {e}"));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while !stop.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let sent = ws.send(Message::text("ping")).await;
            let echo = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
            match (sent, echo) {
                (Ok(()), Ok(Some(Ok(Message::Text(_))))) => {
                    shared.ws_echoes.fetch_add(1, Ordering::SeqCst);
                }
                (sent, echo) => {
                    shared.ws_errors.fetch_add(1, Ordering::SeqCst);
                    shared.note(format!("ws lost: {sent:?} {echo:?}"));
                    break;
                }
            }
        }
    }
}

/// A WebSocket on the flipping Mac: open while it is compliant, cut by the gateway with 1008
/// when it is not (counted, and late when more than 5 s after the flip).
async fn flip_socket(url: String, token: String, shared: Arc<Shared>, stop: Arc<AtomicBool>, t0: Instant) {
    while !stop.load(Ordering::SeqCst) {
        if !shared.flip_compliant.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        let since_flip = t0.elapsed().as_millis() as u64 - shared.flip_at_ms.load(Ordering::SeqCst);
        if shared.flip_at_ms.load(Ordering::SeqCst) > 0 && since_flip < 10_000 {
            // The gateway may not know of the flip back yet.
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        let Ok(mut ws) = connect(&url, &token).await else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        loop {
            match tokio::time::timeout(Duration::from_secs(1), ws.next()).await {
                Err(_) if stop.load(Ordering::SeqCst) => return,
                Err(_) => continue,
                Ok(Some(Ok(Message::Close(Some(frame))))) if u16::from(frame.code) == 1008 => {
                    shared.ws_cuts.fetch_add(1, Ordering::SeqCst);
                    let since = t0.elapsed().as_millis() as u64 - shared.flip_at_ms.load(Ordering::SeqCst);
                    if shared.flip_compliant.load(Ordering::SeqCst) || since > 5_000 {
                        shared.ws_cut_late.fetch_add(1, Ordering::SeqCst);
                    }
                    break;
                }
                Ok(other) => {
                    shared.ws_errors.fetch_add(1, Ordering::SeqCst);
                    shared.note(format!("flip ws: {other:?}"));
                    break;
                }
            }
        }
    }
}
