//! `portcullis demo --nodes N --store postgres://…`: a demo cluster. Node 0 runs in this
//! process with the emulator and the demo app; nodes 1… are this binary again (`demo --node I`,
//! internal), each on the demo's gateway and admin ports shifted by 100·I, all on one store,
//! with one admin token and one session key (so a browser session moves between nodes, and
//! settings sealed on one node open on another). The emulator and the demo app are node 0's.
//!
//! What the children need travels in their environment, never on a command line another user
//! can read: the store URL (it may hold a password), the admin token's hash, the session key.
//! A child exits when its standard input closes, so a parent that dies any way takes its
//! nodes with it.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use config::Config;

use super::DemoError;

/// Node I's own ports are the demo's plus this times I.
pub const NODE_PORT_STEP: u16 = 100;
const MAX_NODES: u16 = 9;
const STORE_ENV: &str = "PORTCULLIS_DEMO_STORE";
const ADMIN_HASH_ENV: &str = "PORTCULLIS_DEMO_ADMIN_SHA256";
const READER_HASH_ENV: &str = "PORTCULLIS_DEMO_READER_SHA256";
const COOKIE_KEY_ENV: &str = "PORTCULLIS_DEMO_COOKIE_KEY";

/// Refuses what cannot work before anything starts.
pub fn check(opts: &super::DemoOptions) -> Result<(), DemoError> {
    if opts.nodes == 0 || opts.nodes > MAX_NODES {
        return Err(DemoError::Nodes(format!("--nodes must be 1 to {MAX_NODES}")));
    }
    let postgres = opts
        .store
        .as_deref()
        .is_some_and(|u| u.starts_with("postgres://") || u.starts_with("postgresql://"));
    if opts.nodes > 1 && !postgres {
        return Err(DemoError::Nodes(
            "--nodes 2 or more needs --store postgres://…: an SQLite store serves one node".into(),
        ));
    }
    Ok(())
}

/// What every node of one demo shares.
pub struct Shared {
    store: Option<String>,
    admin_sha256: [u8; 32],
    reader_sha256: [u8; 32],
    cookie_key: Option<String>,
}

impl Shared {
    /// For a cluster, a fresh session key (32 bytes from the system's random source).
    pub fn new(opts: &super::DemoOptions, admin_sha256: [u8; 32], reader_sha256: [u8; 32]) -> Result<Self, DemoError> {
        let cookie_key = if opts.nodes > 1 {
            let mut key = [0u8; 32];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
                .map_err(|_| DemoError::Nodes("the system random source failed".into()))?;
            Some(base64::engine::general_purpose::STANDARD.encode(key))
        } else {
            None
        };
        Ok(Self {
            store: opts.store.clone(),
            admin_sha256,
            reader_sha256,
            cookie_key,
        })
    }

    /// What a child reads back from its environment.
    fn from_env() -> Result<Self, DemoError> {
        let var = |name: &str| {
            std::env::var(name).map_err(|_| {
                DemoError::Nodes(format!(
                    "--node is internal to `portcullis demo --nodes`: {name} is not set"
                ))
            })
        };
        let admin_sha256 = base::sha256_from_hex(&var(ADMIN_HASH_ENV)?)
            .ok_or_else(|| DemoError::Nodes(format!("{ADMIN_HASH_ENV} is not a SHA-256 in hex")))?;
        let reader_sha256 = base::sha256_from_hex(&var(READER_HASH_ENV)?)
            .ok_or_else(|| DemoError::Nodes(format!("{READER_HASH_ENV} is not a SHA-256 in hex")))?;
        Ok(Self {
            store: Some(var(STORE_ENV)?),
            admin_sha256,
            reader_sha256,
            cookie_key: Some(var(COOKIE_KEY_ENV)?),
        })
    }

    /// Every node's admin and read-only tokens and session key.
    pub fn apply(&self, cfg: &mut Config) {
        cfg.admin.token_sha256 = Some(self.admin_sha256);
        cfg.admin.read_only_token_sha256 = Some(self.reader_sha256);
        if let Some(k) = &self.cookie_key {
            cfg.session.cookie_key = Some(base::Secret::new(k.clone()));
        }
    }
}

/// Names node `i` and moves its listeners and admin API to its own ports (none for node 0);
/// the emulator and the demo app stay node 0's.
pub fn shift_node(cfg: &mut Config, i: u16) -> Result<(), DemoError> {
    let by = NODE_PORT_STEP * i;
    let shift = |p: u16| p.checked_add(by).ok_or(DemoError::Offset(by));
    cfg.admin.listen.set_port(shift(cfg.admin.listen.port())?);
    for l in &mut cfg.listeners {
        l.address.set_port(shift(l.address.port())?);
    }
    cfg.sync.node_name = format!("node-{i}");
    Ok(())
}

/// `portcullis demo --node I`: one more gateway of a demo cluster, until its parent goes.
pub fn run_node(opts: &super::DemoOptions, i: u16) -> Result<(), DemoError> {
    let data = opts
        .data
        .clone()
        .ok_or_else(|| DemoError::Nodes("--node needs --data".into()))?;
    let shared = Shared::from_env()?;
    let mut cfg = super::demo_config(&data, opts.port_offset, shared.store.as_deref())?;
    shared.apply(&mut cfg);
    shift_node(&mut cfg, i)?;
    std::thread::Builder::new()
        .name("demo-parent".into())
        .spawn(|| {
            let mut sink = [0u8; 64];
            while matches!(std::io::stdin().read(&mut sink), Ok(n) if n > 0) {}
            // The parent is gone (or stopping): so is this node.
            std::process::exit(0);
        })
        .map_err(|e| DemoError::Nodes(format!("cannot watch the parent: {e}")))?;
    crate::app::serve_with(
        cfg,
        &crate::app::ProcessEnv,
        Vec::new(),
        crate::app::Upgrades::NotForThisCommand,
    )?;
    Ok(())
}

/// The child processes of a demo cluster.
#[derive(Clone)]
pub struct Children(Arc<Mutex<Vec<(u16, Child)>>>);

impl Children {
    /// Closes each child's standard input (it exits), waits for it briefly, kills it if not.
    pub fn stop(&self) {
        let Ok(mut children) = self.0.lock() else {
            return;
        };
        for (_, c) in children.iter_mut() {
            drop(c.stdin.take());
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        for (_, c) in children.iter_mut() {
            while matches!(c.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    /// Children that exited since the last call, with their status.
    fn exited(&self) -> Vec<(u16, std::process::ExitStatus)> {
        let Ok(mut children) = self.0.lock() else {
            return Vec::new();
        };
        let mut gone = Vec::new();
        children.retain_mut(|(i, c)| match c.try_wait() {
            Ok(Some(status)) => {
                gone.push((*i, status));
                false
            }
            Ok(None) | Err(_) => true,
        });
        gone
    }
}

/// Starts nodes 1…N-1 as children of this process.
pub fn spawn(opts: &super::DemoOptions, data: &std::path::Path, shared: &Shared) -> Result<Children, DemoError> {
    let exe = std::env::current_exe().map_err(|e| DemoError::Nodes(format!("cannot find this program: {e}")))?;
    let hex = base::to_hex(&shared.admin_sha256);
    let mut children = Vec::new();
    for i in 1..opts.nodes {
        let child = Command::new(&exe)
            .args([
                "demo",
                "--node",
                &i.to_string(),
                "--port-offset",
                &opts.port_offset.to_string(),
            ])
            .arg("--data")
            .arg(data)
            .env(STORE_ENV, shared.store.as_deref().unwrap_or_default())
            .env(ADMIN_HASH_ENV, &hex)
            .env(READER_HASH_ENV, base::to_hex(&shared.reader_sha256))
            .env(COOKIE_KEY_ENV, shared.cookie_key.as_deref().unwrap_or_default())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| DemoError::Nodes(format!("cannot start node {i}: {e}")))?;
        children.push((i, child));
    }
    Ok(Children(Arc::new(Mutex::new(children))))
}

/// The other nodes' addresses, for the summary.
pub fn print_nodes(first: &Config, others: &[Config]) {
    println!(
        "  cluster:         {} gateway nodes on one store (node-0 above); each line: its listeners, its admin API",
        others.len() + 1
    );
    for (i, c) in std::iter::once(first).chain(others).enumerate() {
        let ports: Vec<String> = c
            .listeners
            .iter()
            .map(|l| format!("{}://{}/", if l.tls.is_some() { "https" } else { "http" }, l.address))
            .collect();
        println!("    node-{i}: {}  admin http://{}/", ports.join("  "), c.admin.listen);
    }
}

/// Watches the cluster from node 0's side: says when each node is ready, which node leads the
/// sync (and when that changes: stop the leader's process to see another take over), and when
/// a node's process exits.
pub fn watch(first: &Config, others: &[Config], admin_token: &str, children: Children) {
    let admins: Vec<std::net::SocketAddr> = std::iter::once(first).chain(others).map(|c| c.admin.listen).collect();
    let token = admin_token.to_string();
    let spawned = std::thread::Builder::new().name("demo-watch".into()).spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
            return;
        };
        rt.block_on(async move {
            let http = reqwest::Client::new();
            let mut ready = vec![false; admins.len()];
            let mut leader: Option<String> = None;
            loop {
                for (i, status) in children.exited() {
                    println!("node-{i} exited ({status})");
                    ready[usize::from(i)] = true;
                }
                for (i, admin) in admins.iter().enumerate() {
                    if ready[i] {
                        continue;
                    }
                    let url = format!("http://{admin}/readyz");
                    if matches!(http.get(&url).send().await, Ok(r) if r.status().is_success()) {
                        println!("node-{i} is ready");
                        ready[i] = true;
                    }
                }
                let mut now = None;
                for admin in &admins {
                    let url = format!("http://{admin}/api/v1/sync/status");
                    if let Ok(r) = http.get(&url).bearer_auth(&token).send().await {
                        if let Ok(v) = r.json::<serde_json::Value>().await {
                            now = v["leader"]["node"].as_str().map(str::to_string);
                            break;
                        }
                    }
                }
                if now.is_some() && now != leader {
                    println!("sync leader: {}", now.as_deref().unwrap_or_default());
                    leader = now;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot watch the demo cluster");
    }
}
