//! The data plane on hyper 1: listeners and downstream TLS ([`serve`], [`tls`]), the request
//! path ([`gateway::Gateway`]), upstream pools with health checks and failover ([`upstream`],
//! [`pool`], [`forward`]), bodies streamed with idle bounds ([`body`]), and the gateway's own
//! responses ([`respond`], [`failure`]). The access decision itself is in the `access` crate
//! and knows nothing of hyper.
//!
//! One thread per worker, each a current-thread tokio runtime with its own `SO_REUSEPORT`
//! copy of every listener and its own upstream connections, as nginx's workers: the floor
//! benchmark (docs/benchmarks.md) showed this reaches nginx's CPU per request.
//!
//! May depend on `access`, `config` (typed values only), `metrics`, `identity`, `device`,
//! `policy` and `base`. Never on `admin`, `sync` or `store`.

pub mod body;
pub mod failure;
pub mod forward;
pub mod forward_auth;
pub mod gateway;
pub mod pool;
pub mod respond;
pub mod serve;
pub mod tls;
pub mod upgraded;
pub mod upstream;

use std::sync::Arc;

pub use gateway::{Gateway, ProxySettings, Route, RouteTable};

use config::Config;
use metrics::Metrics;
pub use upstream::{PoolError, UpstreamPool};

/// Builds every upstream pool of `[upstreams]` (DNS resolved once, here; never on the request
/// path). Pools with a health check are returned with it; run it with
/// [`UpstreamPool::run_checks`].
pub fn build_pools(upstreams: &[config::UpstreamConfig]) -> Result<Vec<Arc<UpstreamPool>>, PoolError> {
    upstreams.iter().map(|u| UpstreamPool::build(u).map(Arc::new)).collect()
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
            grace_notice: r.grace_notice,
            follow_posture: r.follow_posture,
        };
        (r.host.clone(), Arc::new(route))
    });
    RouteTable {
        router: access::routing::Router::new(routes),
        unrouted: metrics.route("none"),
    }
}

/// The serving settings and request-path settings of `[server]`.
pub fn settings(s: &config::ServerSettings, metrics: &Metrics) -> (serve::Settings, ProxySettings) {
    (
        serve::Settings {
            workers: s.threads.max(1),
            handshake_timeout: s.client_read_timeout,
            drain: s.grace_period,
            h1_idle_timeout: s.client_keepalive_timeout,
            h2_idle_timeout: s.h2_idle_timeout,
            connections: Some(metrics.active_connections.clone()),
        },
        ProxySettings {
            trusted_proxies: Arc::new(arc_swap::ArcSwap::from_pointee(s.trusted_proxies.clone())),
            max_request_header_bytes: s.max_request_header_bytes,
            client_read_timeout: s.client_read_timeout,
            client_keepalive_requests: s.client_keepalive_requests,
        },
    )
}
