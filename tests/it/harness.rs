//! Test harness: real upstream apps on 127.0.0.1:0 inside the test runtime, and the real
//! `portcullis` binary as a child process with a generated configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::task::JoinHandle;

/// How often [`poll_until`] looks again.
const POLL_EVERY: Duration = Duration::from_millis(25);

/// Polls `probe` until it returns `Ok(value)`, and returns the value and how long it took.
/// After `within`, fails with `what` and the last `Err(observation)`, so a failure says what
/// was seen. The one way the integration tests wait for something to happen: no fixed sleeps.
pub async fn poll_until<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    loop {
        match probe().await {
            Ok(v) => return (v, started.elapsed()),
            Err(seen) => assert!(
                started.elapsed() < within,
                "{what}: not within {within:?}; last seen: {seen}"
            ),
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// A port that was free a moment ago, and that this test process has not handed out before:
/// the kernel may give a just-released port straight back, and a gateway whose listener and
/// admin port collide refuses its configuration. Taken from 10000–27999, below the kernel's
/// ephemeral range (where the source ports of every outgoing connection — the tests', the
/// gateways', nginx's — come from, so a port handed out there can be taken before its server
/// binds it) and below the demo tests' port offsets.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let seed = std::collections::hash_map::RandomState::new();
    for attempt in 0u64.. {
        let mut h = seed.build_hasher();
        h.write_u64(attempt);
        let port = 10_000 + (h.finish() % 18_000) as u16;
        let mut given = GIVEN.lock().unwrap();
        if given.contains(&port) || std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        given.push(port);
        return port;
    }
    unreachable!("an unbounded loop")
}

/// The demo upstream app, running until dropped.
pub struct Upstream {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Upstream {
    pub async fn start(name: &str) -> Self {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let name = name.to_string();
        let task = tokio::spawn(async move {
            let _ = portcullis::emulator::upstream::serve(l, &name).await;
        });
        Self { addr, task }
    }

    /// Stops accepting and drops every connection.
    pub fn kill(&self) {
        self.task.abort();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A running gateway process.
pub struct Gateway {
    pub child: Child,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    /// Holds the configuration and log until the gateway is dropped.
    _dir: TempDir,
    pub log: PathBuf,
}

fn spawn(exe: &Path, config: &Path, log: &Path, env: &[(&str, String)]) -> Child {
    Command::new(exe)
        .args(["serve", "--config"])
        .arg(config)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_portcullis")
}

impl Gateway {
    /// Starts `serve` with `[admin]` and one plain HTTP listener added to `body` (which must
    /// hold the upstreams, routes and anything else).
    pub async fn start(body: &str) -> Self {
        Self::start_with(body, |_| String::new()).await
    }

    /// Like `start`, with extra environment variables for the process.
    pub async fn start_env(body: &str, env: &[(&str, String)]) -> Self {
        Self::launch(body, |_| String::new(), env).await
    }

    /// Like `start`; `extra` gets the temp dir and returns more listeners/config to append.
    pub async fn start_with(body: &str, extra: impl FnOnce(&Path) -> String) -> Self {
        Self::launch(body, extra, &[]).await
    }

    /// `start_with` and `start_env` at once.
    pub async fn start_full(body: &str, extra: impl FnOnce(&Path) -> String, env: &[(&str, String)]) -> Self {
        Self::launch(body, extra, env).await
    }

    /// Like `start`, running the binary at `exe` (a copy, for a test that replaces it).
    pub async fn start_from(exe: &Path, body: &str, extra: impl FnOnce(&Path) -> String) -> Self {
        Self::launch_from(exe, body, extra, &[]).await
    }

    async fn launch(body: &str, extra: impl FnOnce(&Path) -> String, env: &[(&str, String)]) -> Self {
        Self::launch_from(Path::new(bin()), body, extra, env).await
    }

    async fn launch_from(exe: &Path, body: &str, extra: impl FnOnce(&Path) -> String, env: &[(&str, String)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let more = extra(dir.path());
        let cfg = format!(
            "[admin]\nlisten = \"{admin}\"\n\n[[listeners]]\nname = \"http\"\naddress = \"{http}\"\n\n{more}\n{body}\n"
        );
        let cfg = if cfg.contains("[server]") {
            cfg
        } else {
            format!("[server]\ngrace_period = \"5s\"\n{cfg}")
        };
        let path = dir.path().join("portcullis.toml");
        std::fs::write(&path, cfg).unwrap();
        let log = dir.path().join("gateway.log");
        let child = spawn(exe, &path, &log, env);
        let mut gw = Self {
            child,
            http,
            admin,
            _dir: dir,
            log,
        };
        gw.wait_ready().await;
        gw
    }

    /// Stops the process (kill -9) and starts it again with the same configuration.
    pub async fn restart(mut self) -> Self {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let path = self._dir.path().join("portcullis.toml");
        self.log = self._dir.path().join("gateway-restarted.log");
        self.child = spawn(Path::new(bin()), &path, &self.log, &[]);
        self.wait_ready().await;
        self
    }

    async fn wait_ready(&mut self) {
        let (client, url, log) = (client(), format!("http://{}/readyz", self.admin), self.log.clone());
        let child = &mut self.child;
        poll_until("gateway ready", Duration::from_secs(30), || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "gateway exited with {status}:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            let (client, url, log) = (&client, &url, &log);
            async move {
                match client.get(url).send().await {
                    Ok(r) if r.status() == 200 => Ok(()),
                    Ok(r) => Err(format!(
                        "{}\n{}",
                        r.status(),
                        std::fs::read_to_string(log).unwrap_or_default()
                    )),
                    Err(e) => Err(format!("{e}\n{}", std::fs::read_to_string(log).unwrap_or_default())),
                }
            }
        })
        .await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The metrics once they contain `needle` (or after 5 s, for the assertion to show them):
    /// request counters are recorded in the logging phase, after the client has its response.
    pub async fn metrics_with(&self, needle: &str) -> String {
        let started = Instant::now();
        loop {
            let m = self.metrics().await;
            if m.contains(needle) || started.elapsed() > Duration::from_secs(5) {
                return m;
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    pub async fn metrics(&self) -> String {
        client()
            .get(format!("http://{}/metrics", self.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Peak resident memory of the gateway process, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client that never uses a proxy from the environment.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub async fn echo(resp: reqwest::Response) -> serde_json::Value {
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    assert_eq!(status, 200, "expected 200 from the app, got: {body}");
    serde_json::from_str(&body).unwrap()
}

/// `[upstreams.NAME]` with the given addresses and extra lines.
pub fn pool(name: &str, addrs: &[SocketAddr], extra: &str) -> String {
    let list: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    format!("[upstreams.{name}]\naddresses = [{}]\n{extra}\n", list.join(", "))
}

/// A CA and one leaf certificate per name, written as `ca.pem`, `NAME.pem`, `NAME-key.pem`.
pub fn make_certs(dir: &Path, names: &[&str]) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "test CA");
    std::fs::write(dir.join("ca.pem"), ca.self_signed(&ca_key).unwrap().pem()).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    for n in names {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![n.to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        std::fs::write(dir.join(format!("{n}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{n}-key.pem")), key.serialize_pem()).unwrap();
    }
}

/// The Entra/Graph emulator, in the test's runtime.
pub struct Emulator {
    pub url: String,
    pub state: std::sync::Arc<portcullis::emulator::EntraState>,
    task: JoinHandle<()>,
}

impl Emulator {
    pub async fn start() -> Self {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let state = std::sync::Arc::new(portcullis::emulator::EntraState::new(&url).unwrap());
        let st = state.clone();
        let task = tokio::spawn(async move {
            let _ = portcullis::emulator::serve(l, st).await;
        });
        Self { url, state, task }
    }

    /// The `[entra]` section pointing at this emulator.
    pub fn entra_section(&self, extra: &str) -> String {
        use portcullis::emulator::personas::*;
        format!(
            "[entra]\ntenant_id = \"{TENANT_ID}\"\nclient_id = \"{GATEWAY_CLIENT_ID}\"\napp_id_uris = [\"{GATEWAY_APP_ID_URI}\"]\n\
             client_secret = \"{GATEWAY_CLIENT_SECRET}\"\nauthority_url = \"{0}\"\ngraph_url = \"{0}\"\n{extra}\n",
            self.url
        )
    }

    pub async fn token(&self, query: &str) -> String {
        let v: serde_json::Value = client()
            .get(format!("{}/_emulator/token?{query}", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["access_token"].as_str().unwrap().to_string()
    }

    /// An app-only token by client credentials (the gateway's app) for `scope`.
    pub async fn app_token(&self, scope: &str) -> String {
        use portcullis::emulator::personas::*;
        let v: serde_json::Value = client()
            .post(format!("{}/{TENANT_ID}/oauth2/v2.0/token", self.url))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", GATEWAY_CLIENT_ID),
                ("client_secret", GATEWAY_CLIENT_SECRET),
                ("scope", scope),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["access_token"].as_str().expect("an app token").to_string()
    }

    pub async fn jwks_fetches(&self) -> u64 {
        self.state.jwks_fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub async fn fault(&self, body: serde_json::Value) {
        let r = client()
            .post(format!("{}/_emulator/faults", self.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }

    pub async fn clear_faults(&self) {
        client()
            .delete(format!("{}/_emulator/faults", self.url))
            .send()
            .await
            .unwrap();
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The close frame a WebSocket gets within `within` (whatever messages come first); panics
/// when it ends without one, or gets none in time.
pub async fn close_frame<S>(ws: &mut S, within: Duration) -> tokio_tungstenite::tungstenite::protocol::CloseFrame
where
    S: futures_util::Stream<
            Item = Result<tokio_tungstenite::tungstenite::Message, tokio_tungstenite::tungstenite::Error>,
        > + Unpin,
{
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    tokio::time::timeout(within, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("the socket ended without a close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("the socket is closed")
    .expect("with a close frame")
}
