//! `portcullis demo`: the gateway with `config/demo.toml` in front of the demo upstream app,
//! in one process on loopback, with a development certificate made at start (DESIGN.md §8;
//! the emulator and the store join as their components land).

use std::net::SocketAddr;
use std::path::PathBuf;

use std::sync::Arc;

use config::{Config, ConfigErrors};
use emulator::{personas, EntraState};
use identity::oidc::{CALLBACK_PATH, SIGNED_OUT_PATH};

mod nodes;

/// The embedded demo configuration.
pub const DEMO_TOML: &str = include_str!("../../config/demo.toml");
/// Where the demo upstream app listens, before the port offset.
pub const APP_PORT: u16 = 8901;
/// Where the emulator listens, before the port offset.
pub const EMULATOR_PORT: u16 = 8900;

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub port_offset: u16,
    pub data: Option<PathBuf>,
    /// Gateway nodes (1 to 9); more than one needs a PostgreSQL `store`.
    pub nodes: u16,
    /// The store URL (`sqlite://…` or `postgres://…`); `None`: SQLite in the data directory.
    pub store: Option<String>,
    /// Run as node `I` of a demo cluster another `portcullis demo` started (internal).
    pub node: Option<u16>,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("data directory {path}: {source}")]
    Data { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Certs(#[from] crate::devcert::DevCertError),
    #[error("demo configuration: {0}")]
    Config(ConfigErrors),
    #[error("--port-offset {0} pushes a port past 65535")]
    Offset(u16),
    #[error("demo app on {addr}: {source}")]
    App { addr: SocketAddr, source: std::io::Error },
    #[error("emulator: {0}")]
    Emulator(String),
    #[error("{0}")]
    Nodes(String),
    #[error("seeding the demo store: {0}")]
    Seed(String),
    #[error(transparent)]
    Start(#[from] crate::app::StartError),
}

/// Runs the demo until Ctrl-C.
pub fn run(opts: DemoOptions) -> Result<(), DemoError> {
    if let Some(i) = opts.node {
        return nodes::run_node(&opts, i);
    }
    nodes::check(&opts)?;
    let data = match &opts.data {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("portcullis-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&data).map_err(|source| DemoError::Data {
        path: data.clone(),
        source,
    })?;
    let certs = crate::devcert::generate(&data, "gateway", &["localhost", "127.0.0.1"])?;
    let mut cfg = demo_config(&data, opts.port_offset, opts.store.as_deref())?;
    // Fresh admin and read-only tokens at every start; only their SHA-256 is held, as in a real
    // deployment.
    let token = || -> Result<(String, [u8; 32]), DemoError> {
        let t = base::seal::random_token(24).map_err(|e| DemoError::Emulator(e.to_string()))?;
        let mut hash = [0u8; 32];
        hash.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, t.as_bytes()).as_ref());
        Ok((t, hash))
    };
    let ((admin_token, admin_hash), (reader_token, reader_hash)) = (token()?, token()?);
    let cluster = nodes::Shared::new(&opts, admin_hash, reader_hash)?;
    cluster.apply(&mut cfg);
    if opts.nodes > 1 {
        nodes::shift_node(&mut cfg, 0)?;
    }
    seed_store(&cfg.store)?;
    let node_cfgs = (1..opts.nodes)
        .map(|i| {
            let mut c = cfg.clone();
            nodes::shift_node(&mut c, i)?;
            Ok(c)
        })
        .collect::<Result<Vec<_>, DemoError>>()?;

    let emu_addr = SocketAddr::from(([127, 0, 0, 1], shift(EMULATOR_PORT, opts.port_offset)?));
    let emu_listener =
        std::net::TcpListener::bind(emu_addr).map_err(|source| DemoError::App { addr: emu_addr, source })?;
    let emu = Arc::new(EntraState::new(&format!("http://{emu_addr}")).map_err(|e| DemoError::Emulator(e.to_string()))?);
    for l in std::iter::once(&cfg).chain(&node_cfgs).flat_map(|c| &c.listeners) {
        let scheme = if l.tls.is_some() { "https" } else { "http" };
        let port = l.address.port();
        for (host, path) in ["127.0.0.1", "localhost"]
            .into_iter()
            .flat_map(|h| [(h, CALLBACK_PATH), (h, SIGNED_OUT_PATH)])
        {
            emu.register_redirect(personas::GATEWAY_CLIENT_ID, &format!("{scheme}://{host}:{port}{path}"));
        }
    }
    // The admin console signs in with Entra too: alice holds the admin app role, bob the reader's.
    for c in std::iter::once(&cfg).chain(&node_cfgs) {
        for host in ["127.0.0.1", "localhost"] {
            let uri = format!("http://{host}:{}/console/callback", c.admin.listen.port());
            emu.register_redirect(personas::GATEWAY_CLIENT_ID, &uri);
        }
    }
    for (persona, role) in [("alice", &cfg.admin.admin_role), ("bob", &cfg.admin.reader_role)] {
        if let Some(p) = personas::find(persona) {
            emu.assign_app_role(p.object_id, role);
        }
    }
    spawn_server("emulator", emu_listener, move |l| emulator::serve(l, emu))
        .map_err(|source| DemoError::App { addr: emu_addr, source })?;

    let app_addr = SocketAddr::from(([127, 0, 0, 1], shift(APP_PORT, opts.port_offset)?));
    let app_listener =
        std::net::TcpListener::bind(app_addr).map_err(|source| DemoError::App { addr: app_addr, source })?;
    spawn_server("demo-app", app_listener, |l| emulator::upstream::serve(l, "demo-app"))
        .map_err(|source| DemoError::App { addr: app_addr, source })?;

    let mut on_exit: Vec<crate::app::ExitHook> = Vec::new();
    if opts.nodes > 1 {
        let children = nodes::spawn(&opts, &data, &cluster)?;
        nodes::watch(&cfg, &node_cfgs, &admin_token, children.clone());
        // The other nodes stop first: the temporary directory holds their certificates.
        on_exit.push(Box::new(move || children.stop()));
    }
    print_summary(&cfg, &node_cfgs, &certs.ca_cert, &data, (&admin_token, &reader_token));
    if opts.data.is_none() {
        // The fresh directory (development CA key, store) was ours; a --data directory is the
        // user's to keep.
        let dir = data.clone();
        on_exit.push(Box::new(move || {
            let _ = std::fs::remove_dir_all(&dir);
        }));
    }
    crate::app::serve_with(
        cfg,
        &crate::app::ProcessEnv,
        on_exit,
        crate::app::Upgrades::NotForThisCommand,
    )?;
    Ok(())
}

/// Writes the personas' devices and computers into the demo store (the sync loop will keep
/// them current from the emulator once it runs).
fn seed_store(cfg: &config::StoreConfig) -> Result<(), DemoError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| DemoError::Seed(e.to_string()))?;
    let store = crate::app::open_store(cfg, &rt).map_err(|e| DemoError::Seed(e.to_string()))?;
    rt.block_on(async {
        seed(&*store, base::time::unix_now_i64())
            .await
            .map_err(|e| DemoError::Seed(e.to_string()))
    })?;
    // Closed here: an SQLite file is locked for the one gateway that opens it next.
    drop(store);
    Ok(())
}

/// Runs an axum server on its own thread and runtime.
fn spawn_server<F, Fut>(name: &str, listener: std::net::TcpListener, serve: F) -> std::io::Result<()>
where
    F: FnOnce(tokio::net::TcpListener) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = std::io::Result<()>>,
{
    let label = name.to_string();
    std::thread::Builder::new().name(name.into()).spawn(move || {
        // Workers named after the server, so that per-thread CPU accounting (top -H,
        // benches/load/cpu_per_request.sh) can tell the demo app from the gateway.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("{label}-rt"))
            .enable_all()
            .build();
        let result = rt.and_then(|rt| {
            rt.block_on(async {
                listener.set_nonblocking(true)?;
                serve(tokio::net::TcpListener::from_std(listener)?).await
            })
        });
        if let Err(e) = result {
            tracing::error!(error = %e, "{label} stopped");
        }
    })?;
    Ok(())
}

/// The demo configuration with certificates in `data`, every port shifted by `offset`, and the
/// store `store` names (default: SQLite in `data`).
pub fn demo_config(data: &std::path::Path, offset: u16, store: Option<&str>) -> Result<Config, DemoError> {
    let text = match store {
        // Through the configuration parser, so the URL is checked (and never echoed) as any
        // operator's is.
        Some(url) => format!(
            "{DEMO_TOML}\n[store]\nurl = \"{}\"\n",
            url.replace('\\', "\\\\").replace('"', "\\\"")
        ),
        None => DEMO_TOML.to_string(),
    };
    let mut cfg = Config::parse(&text, data).map_err(DemoError::Config)?;
    if store.is_none() {
        cfg.store = config::StoreConfig::Sqlite {
            path: data.join("portcullis.db"),
        };
    }
    let emulator = format!("http://127.0.0.1:{}", shift(EMULATOR_PORT, offset)?);
    if let Some(e) = cfg.entra.as_mut() {
        e.authority_url = emulator.clone();
        e.graph_url = emulator.clone();
    }
    if let Some(j) = cfg.jamf.as_mut() {
        j.url = emulator;
    }
    cfg.admin.listen.set_port(shift(cfg.admin.listen.port(), offset)?);
    for l in &mut cfg.listeners {
        l.address.set_port(shift(l.address.port(), offset)?);
    }
    for u in &mut cfg.upstreams {
        for a in &mut u.addresses {
            a.port = shift(a.port, offset)?;
        }
    }
    Ok(cfg)
}

fn shift(port: u16, offset: u16) -> Result<u16, DemoError> {
    port.checked_add(offset).ok_or(DemoError::Offset(offset))
}

fn print_summary(cfg: &Config, others: &[Config], ca: &std::path::Path, data: &std::path::Path, tokens: (&str, &str)) {
    let (admin_token, reader_token) = tokens;
    let find = |name: &str| cfg.listeners.iter().find(|l| l.name == name).map(|l| l.address);
    let (https, http) = (find("https"), find("http"));
    let admin = cfg.admin.listen;
    let emu = cfg.entra.as_ref().map(|e| e.authority_url.clone()).unwrap_or_default();
    println!("Portcullis demo");
    println!("  data directory: {}", data.display());
    if let Some(a) = https {
        println!("  gateway (HTTPS): https://{a}/   (development CA: {})", ca.display());
    }
    if let Some(a) = http {
        println!("  gateway (HTTP):  http://{a}/");
    }
    if let (Some(nginx), Some(caddy)) = (find("checks-nginx"), find("checks-caddy")) {
        println!("  forward-auth:    http://{nginx}/auth for nginx, http://{caddy}/verify for Caddy   (contrib/forward-auth/, docs/forward-auth.md)");
    }
    println!("  admin console:   http://{admin}/console/   (sign in with Microsoft as alice, admin, or bob, read-only; or with a token below)");
    println!("  admin API:       http://{admin}/api/v1/   /metrics  /healthz  /readyz");
    if let Some(u) = cfg.upstreams.first().and_then(|u| u.addresses.first()) {
        println!("  demo app:        http://{u}/");
    }
    println!("  emulator:        {emu}/  (Entra ID, Graph, Jamf Pro; control under /_emulator/)");
    if !others.is_empty() {
        nodes::print_nodes(cfg, others);
    }
    println!("  personas:        alice (compliant), bob (not compliant), carol (not registered),");
    println!("                   dave (not managed), erin (in grace)");
    let exe = std::env::current_exe().map_or_else(|_| "portcullis".to_string(), |p| p.display().to_string());
    // On a line of its own, for scripts (DESIGN.md §8).
    println!("admin token: {admin_token}");
    println!("read-only token: {reader_token}");
    println!();
    println!("Try:");
    let alice_device = personas::all()
        .into_iter()
        .find(|p| p.name == "alice")
        .and_then(|p| p.device_id)
        .unwrap_or_default();
    if let Some(a) = http {
        println!(
            "  TOKEN=$({exe} emulator token alice --url {emu})   # or: curl -s '{emu}/_emulator/token?persona=alice'"
        );
        println!("  curl -s -H \"Authorization: Bearer $TOKEN\" http://{a}/hello   # alice: 200, the app's echo");
        println!("  curl -s -i http://{a}/hello        # no token: 401");
        println!(
            "  # flip alice's Mac to non-compliant in the emulated Entra; within ~2 s the gateway refuses her (403):"
        );
        println!("  curl -s -X POST -H 'content-type: application/json' -d '{{\"isCompliant\": false}}' {emu}/_emulator/devices/{alice_device}/compliance");
        println!("  curl -s -H \"Authorization: Bearer $TOKEN\" http://{a}/hello   # now device_noncompliant");
        println!("  # why? the decision with its evidence, without sending anything upstream:");
        println!("  PORTCULLIS_ADMIN_TOKEN={admin_token} {exe} admin --url http://{admin} explain --url http://{a}/hello --persona alice --emulator {emu}");
    }
    if let Some(a) = https {
        println!(
            "  curl -s --cacert {} -H \"Authorization: Bearer $TOKEN\" https://localhost:{}/hello",
            ca.display(),
            a.port()
        );
        println!(
            "  # in a browser: https://localhost:{}/ (trust the CA above) -> pick a persona",
            a.port()
        );
    }
    println!("  curl -s -H 'Authorization: Bearer {admin_token}' http://{admin}/api/v1/computers");
    println!("  curl -s http://{admin}/metrics | grep portcullis_decisions_total");
    println!("Stop with Ctrl-C.");
}

/// Writes the persona rows into a store.
pub async fn seed<S: store::Store + ?Sized>(store: &S, now: i64) -> Result<(), store::StoreError> {
    let rows = emulator::fixtures::persona_rows(now);
    store.upsert_entra_devices(&rows.entra).await?;
    store.upsert_managed_devices(&rows.intune).await?;
    store.upsert_computers(&rows.jamf).await?;
    for r in &rows.runs {
        store.record_run(r).await?;
    }
    Ok(())
}

/// `portcullis emulator …`.
#[derive(clap::Subcommand)]
pub enum EmulatorCommand {
    /// Serve the emulator (Entra ID, Graph, control API) until Ctrl-C.
    Serve {
        #[arg(long, default_value = "127.0.0.1:8900")]
        listen: std::net::SocketAddr,
        /// Redirect URIs to register for the gateway's app (repeatable).
        #[arg(long = "redirect-uri")]
        redirect_uris: Vec<String>,
        /// Serve HTTPS with this PEM certificate chain (and --tls-key): every URL the emulator
        /// hands out is then `https://localhost:PORT`, as MSAL requires.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<std::path::PathBuf>,
        /// The PKCS#8 PEM key of --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<std::path::PathBuf>,
    },
    /// Print an access token for a persona from a running emulator.
    Token {
        /// alice, bob, carol, dave, erin or olivia.
        persona: String,
        #[arg(long, default_value = "http://127.0.0.1:8900")]
        url: String,
    },
}

/// Runs `portcullis emulator …`.
pub fn emulator(command: EmulatorCommand) -> Result<(), String> {
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    rt.block_on(async {
        match command {
            EmulatorCommand::Serve {
                listen,
                redirect_uris,
                tls_cert,
                tls_key,
            } => {
                let tls = match (&tls_cert, &tls_key) {
                    (Some(cert), Some(key)) => Some(emulator::tls_config(cert, key)?),
                    // clap requires both or neither.
                    (Some(_), None) | (None, Some(_)) | (None, None) => None,
                };
                let base = match tls {
                    Some(_) => format!("https://localhost:{}", listen.port()),
                    None => format!("http://{listen}"),
                };
                let state = emulator::EntraState::new(&base).map_err(|e| e.to_string())?;
                for uri in &redirect_uris {
                    state.register_redirect(emulator::personas::GATEWAY_CLIENT_ID, uri);
                }
                let l = tokio::net::TcpListener::bind(listen)
                    .await
                    .map_err(|e| format!("{listen}: {e}"))?;
                println!("emulator on {base}/ (tenant {})", emulator::personas::TENANT_ID);
                let state = std::sync::Arc::new(state);
                let served = async {
                    match tls {
                        Some(tls) => emulator::serve_tls(l, state, tls).await,
                        None => emulator::serve(l, state).await,
                    }
                };
                tokio::select! {
                    r = served => r.map_err(|e| e.to_string()),
                    _ = tokio::signal::ctrl_c() => Ok(()),
                }
            }
            EmulatorCommand::Token { persona, url } => {
                let token = admin::cli::persona_token(&reqwest::Client::new(), &url, &persona).await?;
                println!("{token}");
                Ok(())
            }
        }
    })
}
