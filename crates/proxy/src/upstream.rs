//! Upstream pools: a round-robin load balancer over resolved addresses, active health checks
//! through pingora-load-balancing, and the peer settings (timeouts, TLS verification, SNI)
//! for each connection. Names are resolved once when the pool is built, never on the
//! request path (`HttpPeer::new` would resolve blocking and panic on failure).

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use pingora::lb::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora::lb::selection::RoundRobin;
use pingora::lb::{discovery, Backend, Backends, LoadBalancer};
use pingora::prelude::HttpPeer;
use pingora::protocols::ALPN;
use pingora::utils::tls::{parse_x509, WrappedX509};

use config::{HealthCheckConfig, HealthCheckKind, UpstreamConfig, UpstreamTimeouts};

/// One configured pool, ready for the request path.
pub struct UpstreamPool {
    pub name: String,
    pub lb: Arc<LoadBalancer<RoundRobin>>,
    settings: PoolSettings,
}

/// A pool whose balancer has not been handed to its health-check service yet.
pub struct PendingPool {
    /// Populated with the static backends; has its health check set when one is configured.
    lb: LoadBalancer<RoundRobin>,
    pub has_health_check: bool,
    settings: PoolSettings,
}

/// The rest of a [`PendingPool`] once its balancer was taken out.
pub struct PoolRest {
    settings: PoolSettings,
}

impl PoolRest {
    /// Completes the pool with the balancer the request path will select from (the same one
    /// its health-check service updates, when there is one).
    pub fn finish(self, lb: Arc<LoadBalancer<RoundRobin>>) -> UpstreamPool {
        UpstreamPool {
            name: self.settings.name.clone(),
            lb,
            settings: self.settings,
        }
    }
}

struct PoolSettings {
    name: String,
    /// How many distinct backends a request may try (for connect failover).
    size: usize,
    tls: Option<PeerTls>,
    timeouts: UpstreamTimeouts,
}

struct PeerTls {
    sni: String,
    verify: bool,
    http2: bool,
    ca: Option<Arc<[WrappedX509]>>,
}

/// Why a pool could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("{key}: cannot resolve {addr}: {reason}")]
    Resolve { key: String, addr: String, reason: String },
    #[error("{key}: {reason}")]
    CaFile { key: String, reason: String },
    #[error("{key}: {reason}")]
    Backend { key: String, reason: String },
}

impl PendingPool {
    /// Resolves addresses (blocking DNS: call at start-up only) and prepares the balancer.
    pub fn build(cfg: &UpstreamConfig) -> Result<Self, PoolError> {
        let key = format!("upstreams.{}", cfg.name);
        let mut backends = std::collections::BTreeSet::new();
        for (i, a) in cfg.addresses.iter().enumerate() {
            let akey = || format!("{key}.addresses[{i}]");
            let resolved: Vec<SocketAddr> = (a.host.as_str(), a.port)
                .to_socket_addrs()
                .map_err(|e| PoolError::Resolve {
                    key: akey(),
                    addr: a.to_string(),
                    reason: e.to_string(),
                })?
                .collect();
            if resolved.is_empty() {
                return Err(PoolError::Resolve {
                    key: akey(),
                    addr: a.to_string(),
                    reason: "no addresses".into(),
                });
            }
            for sa in resolved {
                let b = Backend::new(&sa.to_string()).map_err(|e| PoolError::Backend {
                    key: akey(),
                    reason: e.to_string(),
                })?;
                backends.insert(b);
            }
        }
        let tls = match &cfg.tls {
            None => None,
            Some(t) => {
                let ca = match &t.ca_file {
                    None => None,
                    Some(path) => Some(load_ca(path).map_err(|reason| PoolError::CaFile {
                        key: format!("{key}.tls.ca_file"),
                        reason,
                    })?),
                };
                if !t.verify {
                    tracing::warn!(pool = %cfg.name, "upstream TLS verification is turned off for this pool");
                }
                Some(PeerTls {
                    sni: t.sni.clone(),
                    verify: t.verify,
                    http2: t.http2,
                    ca,
                })
            }
        };
        let settings = PoolSettings {
            name: cfg.name.clone(),
            size: backends.len(),
            tls,
            timeouts: cfg.timeouts,
        };
        let mut lb = LoadBalancer::<RoundRobin>::from_backends(Backends::new(discovery::Static::new(backends)));
        // Static discovery never blocks: fill the selector now so the first request finds backends.
        if let Some(Err(e)) = futures_util::FutureExt::now_or_never(lb.update()) {
            return Err(PoolError::Backend {
                key,
                reason: e.to_string(),
            });
        }
        if let Some(hc) = &cfg.health_check {
            lb.set_health_check(settings.health_check(hc));
            lb.health_check_frequency = Some(hc.interval);
        }
        Ok(Self {
            lb,
            has_health_check: cfg.health_check.is_some(),
            settings,
        })
    }

    pub fn into_parts(self) -> (LoadBalancer<RoundRobin>, PoolRest) {
        (
            self.lb,
            PoolRest {
                settings: self.settings,
            },
        )
    }
}

impl UpstreamPool {
    /// How many distinct backends a request may try.
    pub fn size(&self) -> usize {
        self.settings.size
    }

    /// Picks the next healthy backend not in `exclude` (addresses that already failed for
    /// this request) and prepares the peer.
    pub fn peer(&self, exclude: &[SocketAddr]) -> Option<(SocketAddr, Box<HttpPeer>)> {
        let backend = self.lb.select_with(b"", 256, |b, healthy| {
            healthy && b.addr.as_inet().is_some_and(|a| !exclude.contains(a))
        })?;
        let addr = *backend.addr.as_inet()?;
        let s = &self.settings;
        let mut peer = match &s.tls {
            Some(t) => {
                let mut p = HttpPeer::new(addr, true, t.sni.clone());
                t.apply(&mut p);
                p
            }
            None => HttpPeer::new(addr, false, String::new()),
        };
        let o = &mut peer.options;
        o.connection_timeout = Some(s.timeouts.connect);
        o.total_connection_timeout = Some(s.timeouts.total_connect);
        o.read_timeout = Some(s.timeouts.read);
        o.write_timeout = Some(s.timeouts.write);
        o.idle_timeout = Some(s.timeouts.idle);
        Some((addr, Box::new(peer)))
    }
}

impl PoolSettings {
    fn health_check(&self, hc: &HealthCheckConfig) -> Box<dyn HealthCheck + Send + Sync> {
        match &hc.kind {
            HealthCheckKind::Tcp => {
                let mut c = match &self.tls {
                    Some(t) => TcpHealthCheck::new_tls(&t.sni),
                    None => TcpHealthCheck::new(),
                };
                c.peer_template.options.connection_timeout = Some(hc.timeout);
                c.peer_template.options.total_connection_timeout = Some(hc.timeout);
                c
            }
            HealthCheckKind::Http { path, host } => {
                let mut c = HttpHealthCheck::new(host, self.tls.is_some());
                if let Ok(mut req) = pingora::http::RequestHeader::build("GET", path.as_bytes(), None) {
                    if req.insert_header("Host", host.as_str()).is_ok()
                        && req.insert_header("User-Agent", "portcullis-health-check").is_ok()
                    {
                        c.req = req;
                    }
                }
                c.peer_template.options.connection_timeout = Some(hc.timeout);
                c.peer_template.options.read_timeout = Some(hc.timeout);
                if let Some(t) = &self.tls {
                    c.peer_template.sni = t.sni.clone();
                    t.apply(&mut c.peer_template);
                }
                // 2xx and 3xx mean the app answers; pingora's default accepts only 200.
                c.validator = Some(Box::new(|resp: &pingora::http::ResponseHeader| {
                    if (200..400).contains(&resp.status.as_u16()) {
                        Ok(())
                    } else {
                        pingora::Error::e_explain(
                            pingora::ErrorType::Custom("unhealthy status"),
                            format!("health check answered {}", resp.status),
                        )
                    }
                }));
                Box::new(c)
            }
        }
    }
}

impl PeerTls {
    fn apply(&self, peer: &mut HttpPeer) {
        peer.options.verify_cert = self.verify;
        peer.options.verify_hostname = self.verify;
        peer.options.ca = self.ca.clone();
        if self.http2 {
            peer.options.alpn = ALPN::H2H1;
        }
    }
}

fn load_ca(path: &std::path::Path) -> Result<Arc<[WrappedX509]>, String> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let certs = base::pem::read_certs(path)?;
    let mut out = Vec::with_capacity(certs.len());
    for c in certs {
        // WrappedX509::new panics on an unparsable certificate; check first.
        X509Certificate::from_der(c.as_ref())
            .map_err(|e| format!("{}: unparsable certificate ({e})", path.display()))?;
        out.push(WrappedX509::new(c.to_vec(), parse_x509));
    }
    Ok(out.into())
}
