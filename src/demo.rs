//! `portcullis demo`: the gateway with `config/demo.toml` in front of the demo upstream app,
//! in one process on loopback, with a development certificate made at start (DESIGN.md §8;
//! the emulator and the store join as their components land).

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::{Config, ConfigErrors};

/// The embedded demo configuration.
pub const DEMO_TOML: &str = include_str!("../config/demo.toml");
/// Where the demo upstream app listens, before the port offset.
pub const APP_PORT: u16 = 8901;

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub port_offset: u16,
    pub data: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("data directory {path}: {source}")]
    Data {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Certs(#[from] crate::devcert::DevCertError),
    #[error("demo configuration: {0}")]
    Config(ConfigErrors),
    #[error("--port-offset {0} pushes a port past 65535")]
    Offset(u16),
    #[error("demo app on {addr}: {source}")]
    App {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Start(#[from] crate::app::StartError),
}

/// Runs the demo until Ctrl-C.
pub fn run(opts: DemoOptions) -> Result<(), DemoError> {
    let data = match &opts.data {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("portcullis-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&data).map_err(|source| DemoError::Data {
        path: data.clone(),
        source,
    })?;
    let certs = crate::devcert::generate(&data, "gateway", &["localhost", "127.0.0.1"])?;
    let cfg = demo_config(&data, opts.port_offset)?;

    let app_addr = SocketAddr::from(([127, 0, 0, 1], shift(APP_PORT, opts.port_offset)?));
    let app_listener = std::net::TcpListener::bind(app_addr).map_err(|source| DemoError::App {
        addr: app_addr,
        source,
    })?;
    std::thread::Builder::new()
        .name("demo-app".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build();
            let result = rt.and_then(|rt| {
                rt.block_on(async {
                    app_listener.set_nonblocking(true)?;
                    let l = tokio::net::TcpListener::from_std(app_listener)?;
                    crate::emulator::upstream::serve(l, "demo-app").await
                })
            });
            if let Err(e) = result {
                tracing::error!(error = %e, "demo app stopped");
            }
        })
        .map_err(|source| DemoError::App {
            addr: app_addr,
            source,
        })?;

    print_summary(&cfg, &certs.ca_cert, &data);
    crate::app::serve(cfg)?;
    Ok(())
}

/// The demo configuration with certificates in `data` and every port shifted by `offset`.
pub fn demo_config(data: &std::path::Path, offset: u16) -> Result<Config, DemoError> {
    let mut cfg = Config::parse(DEMO_TOML, data).map_err(DemoError::Config)?;
    cfg.admin
        .listen
        .set_port(shift(cfg.admin.listen.port(), offset)?);
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

fn print_summary(cfg: &Config, ca: &std::path::Path, data: &std::path::Path) {
    let find = |name: &str| {
        cfg.listeners
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.address)
    };
    let (https, http) = (find("https"), find("http"));
    println!("Portcullis demo");
    println!("  data directory: {}", data.display());
    if let Some(a) = https {
        println!(
            "  gateway (HTTPS): https://{a}/   (development CA: {})",
            ca.display()
        );
    }
    if let Some(a) = http {
        println!("  gateway (HTTP):  http://{a}/");
    }
    println!(
        "  admin:           http://{}/metrics  /healthz  /readyz",
        cfg.admin.listen
    );
    if let Some(u) = cfg.upstreams.first().and_then(|u| u.addresses.first()) {
        println!("  demo app:        http://{u}/");
    }
    println!();
    println!("Try:");
    if let Some(a) = http {
        println!("  curl -s http://{a}/hello | python3 -m json.tool");
    }
    if let Some(a) = https {
        println!(
            "  curl -s --cacert {} https://localhost:{}/hello",
            ca.display(),
            a.port()
        );
    }
    println!(
        "  curl -s http://{}/metrics | grep portcullis_http_requests_total",
        cfg.admin.listen
    );
    println!("Stop with Ctrl-C.");
}
