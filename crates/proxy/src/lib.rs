//! The data plane on pingora: listeners and downstream TLS, the request path's adapter
//! ([`Gateway`]), upstream pools with health checks and failover, header hygiene, and the one
//! writer of the gateway's own responses. The access decision itself is in the `access` crate
//! and knows nothing of pingora.
//!
//! May depend on `access`, `config` (typed values only), `metrics`, `identity`, `device`,
//! `landing`, `policy` and `base`. Never on `admin`, `sync` or `store`.

mod gateway;
pub mod headers;
pub mod respond;
pub mod tls;
pub mod upstream;

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::apps::{HttpServerOptions, ServerApp};
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{L4BufferSettings, ListenerConfig, TcpSocketOptions};
use pingora::protocols::Stream;
use pingora::server::configuration::ServerConf;
use pingora::server::{ListenFds, Server, ShutdownWatch};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

pub use gateway::{Gateway, ProxySettings, Route, RouteTable};

use config::{Config, ConfigError};
use metrics::Metrics;
use tls::SniResolver;
use upstream::{PendingPool, PoolError, UpstreamPool};

/// The pingora server configuration for `[server]`. pingora's pid file and upgrade socket
/// are per process in the temporary directory: graceful upgrade is not used (yet).
pub fn server_conf(s: &config::ServerSettings) -> ServerConf {
    let tmp = std::env::temp_dir();
    let pid = std::process::id();
    ServerConf {
        threads: s.threads,
        // One runtime per thread, like nginx's workers: with work stealing the threads kept
        // waking each other for connections already being served (futex traffic in perf);
        // without it, interleaved wrk runs against the demo served 24-27 % more requests per
        // second (docs/benchmarks.md). The proxy itself runs one single-threaded service per
        // worker ([`services`]).
        work_stealing: false,
        grace_period_seconds: Some(s.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(s.graceful_shutdown_timeout.as_secs()),
        pid_file: tmp.join(format!("portcullis-{pid}.pid")).display().to_string(),
        upgrade_sock: tmp.join(format!("portcullis-{pid}.sock")).display().to_string(),
        ..ServerConf::default()
    }
}

/// Builds every upstream pool of `[upstreams]` (DNS resolved once, here; never on the request
/// path). A pool with a health check gets a background service on `server` that owns its
/// balancer; the request path shares it.
pub fn build_pools(
    upstreams: &[config::UpstreamConfig],
    server: &mut Server,
) -> Result<Vec<Arc<UpstreamPool>>, PoolError> {
    let mut pools = Vec::with_capacity(upstreams.len());
    for u in upstreams {
        let pending = PendingPool::build(u)?;
        let has_health_check = pending.has_health_check;
        let (lb, rest) = pending.into_parts();
        let lb = if has_health_check {
            let bg = background_service(&format!("health check {}", u.name), lb);
            let shared = bg.task();
            server.add_service(bg);
            shared
        } else {
            Arc::new(lb)
        };
        pools.push(Arc::new(rest.finish(lb)));
    }
    Ok(pools)
}

/// Builds the routing snapshot from the configuration and the finished pools (same order as
/// `cfg.upstreams`).
pub fn route_table(cfg: &Config, pools: &[Arc<UpstreamPool>], metrics: &Metrics) -> RouteTable {
    let routes = cfg.routes.iter().map(|r| {
        let route = Route {
            name: r.name.clone(),
            host: r.host.clone(),
            path_prefix: r.path_prefix.clone(),
            upstream: pools[r.upstream].clone(),
            metrics: metrics.route(&r.name),
            policy: r.policy,
            groups_any: r.groups_any.iter().map(|g| Arc::from(g.as_str())).collect(),
            assertion: r.assertion,
        };
        (r.host.clone(), Arc::new(route))
    });
    RouteTable {
        router: access::routing::Router::new(routes),
        unrouted: metrics.route("none"),
    }
}

/// Loads every listener's certificates; all problems are returned with their keys.
pub fn load_tls(cfg: &Config) -> Result<Vec<Option<Arc<SniResolver>>>, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut out = Vec::new();
    for (i, l) in cfg.listeners.iter().enumerate() {
        match &l.tls {
            None => out.push(None),
            Some(t) => {
                if let Some(ca) = &t.client_ca {
                    if let Err(message) = tls::client_verifier(ca) {
                        errors.push(ConfigError {
                            key: format!("listeners[{i}].tls.client_ca"),
                            message,
                        });
                    }
                }
                match SniResolver::load(t) {
                    Ok(r) => out.push(Some(Arc::new(r))),
                    Err(e) => errors.extend(e),
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// The proxy's listening services: one per worker thread, each a single-threaded runtime
/// with its own copy of every listener (`SO_REUSEPORT`, so the kernel spreads connections
/// over the workers, as nginx does) and its own upstream connection pool.
///
/// One service with several threads would share one pingora connection pool, whose idle
/// connections are each watched by a task on a *random* thread of the service: taking a
/// pooled connection then costs two cross-thread wake-ups per request, and losing the race
/// with the watcher drops the connection and opens a new one ("failed to acquire reusable
/// stream"). Measured in docs/benchmarks.md.
pub fn services(
    cfg: &Config,
    server_conf: &Arc<pingora::server::configuration::ServerConf>,
    routes: Arc<ArcSwap<RouteTable>>,
    resolvers: Vec<Option<Arc<SniResolver>>>,
    metrics: &Metrics,
    access: Arc<access::Access>,
) -> pingora::Result<Vec<Worker<CountedConnections<pingora::proxy::HttpProxy<Gateway>>>>> {
    let s = &cfg.server;
    let settings = ProxySettings {
        trusted_proxies: s.trusted_proxies.clone(),
        max_request_header_bytes: s.max_request_header_bytes,
        client_read_timeout: s.client_read_timeout,
        client_keepalive_timeout: s.client_keepalive_timeout,
    };
    let workers = s.threads.max(1);
    let mut out = Vec::with_capacity(workers);
    for worker in 0..workers {
        let gateway = Gateway::new(routes.clone(), settings.clone(), metrics.clone(), access.clone());
        let mut proxy = pingora::proxy::http_proxy(server_conf, gateway);
        let mut opts = HttpServerOptions::default();
        opts.keepalive_request_limit = s.client_keepalive_requests;
        opts.h2_idle_timeout = Some(s.h2_idle_timeout);
        proxy.server_options = Some(opts);

        let app = CountedConnections {
            inner: Arc::new(proxy),
            gauge: metrics.active_connections.clone(),
        };
        let mut service = Service::new(format!("portcullis proxy {worker}"), app);
        for (l, resolver) in cfg.listeners.iter().zip(&resolvers) {
            let mut sock = TcpSocketOptions::default();
            sock.so_reuseport = Some(workers > 1);
            let listener = ListenerConfig::tcp(l.address.to_string())
                .l4_buffer(buffers())
                .tcp_socket_options(sock);
            match (&l.tls, resolver) {
                (Some(t), Some(resolver)) => {
                    let mut tls = match &t.client_ca {
                        Some(ca) => {
                            let verifier = tls::client_verifier(ca)
                                .map_err(|e| pingora::Error::explain(pingora::ErrorType::InvalidCert, e))?;
                            let mut tls = TlsSettings::with_callbacks(Box::new(tls::CaptureClientCert))?;
                            tls.set_client_cert_verifier(verifier);
                            tls
                        }
                        None => TlsSettings::intermediate("", "")?,
                    };
                    tls.set_cert_resolver(resolver.clone());
                    if t.http2 {
                        tls.enable_h2();
                    }
                    service.add_listener(listener.tls(tls));
                }
                (None, _) => service.add_listener(listener),
                (Some(_), None) => {
                    // load_tls returns a resolver for every TLS listener; never serve one in clear.
                    return Err(pingora::Error::explain(
                        pingora::ErrorType::InvalidCert,
                        format!("listener {}: no certificates loaded", l.name),
                    ));
                }
            }
        }
        out.push(Worker(service));
    }
    Ok(out)
}

/// One proxy worker: a listening service on one thread that binds its own listening sockets.
/// pingora would otherwise hand every service on the same address the one socket from its
/// table of listening fds, and each service would close that fd when it stops; the table only
/// serves pingora's binary upgrade (SIGQUIT), which the gateway does not use.
pub struct Worker<A>(Service<A>);

impl<A> Worker<A> {
    /// `service` on a thread of its own (also the floor benchmark's minimal pingora proxy).
    pub fn new(service: Service<A>) -> Self {
        Self(service)
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> pingora::services::Service for Worker<A> {
    async fn start_service(&mut self, _fds: Option<ListenFds>, shutdown: ShutdownWatch, listeners_per_fd: usize) {
        pingora::services::Service::start_service(&mut self.0, None, shutdown, listeners_per_fd).await;
    }

    fn name(&self) -> &str {
        pingora::services::Service::name(&self.0)
    }

    fn threads(&self) -> Option<usize> {
        Some(1)
    }
}

/// Client connection buffers. pingora's default write buffer (1460 bytes) sends a response's
/// header and a body of more than a few hundred bytes in two `send`s, and the client wakes
/// twice; 16 KiB lets both go out in one. pingora buffers only bodies of known length and
/// flushes at their end, and flushes every chunk of a chunked (streaming) body, so nothing
/// real-time waits in it. Measured in docs/benchmarks.md.
pub fn buffers() -> L4BufferSettings {
    L4BufferSettings {
        read: None,
        write: Some(16 * 1024),
    }
}

/// Wraps the proxy application to count open client connections: pingora has no hook for
/// connection open/close, but every connection is one `process_new` call.
pub struct CountedConnections<A> {
    inner: Arc<A>,
    gauge: prometheus::IntGauge,
}

struct Open(prometheus::IntGauge);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for CountedConnections<A> {
    async fn process_new(self: &Arc<Self>, session: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        self.gauge.inc();
        let _open = Open(self.gauge.clone());
        self.inner.process_new(session, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}
