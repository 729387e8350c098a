//! One configured upstream as the request path uses it: its [`Pool`] of resolved addresses,
//! the connector (TCP, and TLS with the pool's SNI, CA and ALPN), the timeouts, the active
//! health check, and the per-worker HTTP client. Names are resolved once when the pool is
//! built, never on the request path.

use std::cell::RefCell;
use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::Uri;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::ServerName;

use config::{HealthCheckKind, UpstreamConfig, UpstreamTimeouts};

use crate::body::ReqBody;
use crate::pool::{Check, Pool};

/// TCP connect, then TLS when the pool has it, bounded as a whole by `total_connect`.
#[derive(Clone)]
pub struct Connector {
    inner: HttpsConnector<Tcp>,
    total: Duration,
}

/// The TCP step, with its failures marked as [`TcpFailed`] so that a TLS failure after it
/// can be told apart.
#[derive(Clone)]
pub struct Tcp(HttpConnector);

/// The TCP connection could not be made (refused, unreachable, timed out).
#[derive(Debug, thiserror::Error)]
#[error("TCP connect: {0}")]
pub struct TcpFailed(#[source] pub BoxError);

impl tower_service::Service<Uri> for Tcp {
    type Response = TokioIo<tokio::net::TcpStream>;
    type Error = TcpFailed;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, TcpFailed>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TcpFailed>> {
        self.0.poll_ready(cx).map_err(|e| TcpFailed(Box::new(e)))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.0.call(uri);
        Box::pin(async move { connecting.await.map_err(|e| TcpFailed(Box::new(e))) })
    }
}

/// The connect step took longer than the pool's `total_connect`.
#[derive(Debug, thiserror::Error)]
#[error("connecting (TCP and TLS) took longer than {0:?}")]
pub struct ConnectTimedOut(pub Duration);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for Connector {
    type Response = MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (connecting, total) = (self.inner.call(uri), self.total);
        Box::pin(async move {
            match tokio::time::timeout(total, connecting).await {
                Ok(done) => done,
                Err(_) => Err(Box::new(ConnectTimedOut(total)) as BoxError),
            }
        })
    }
}

/// The HTTP client of one pool on one worker.
pub type UpstreamClient = Client<Connector, ReqBody>;

/// One configured pool, ready for the request path.
pub struct UpstreamPool {
    pub name: String,
    pub pool: Pool,
    pub timeouts: UpstreamTimeouts,
    /// `https` or `http`: the scheme of the URIs the client is given.
    scheme: http::uri::Scheme,
    connector: Connector,
    /// HTTP/2 to this upstream (TLS pools with `http2`, by ALPN).
    http2: bool,
    pub health_check: Option<HealthCheck>,
    /// Index of this pool's client in each worker's table.
    id: usize,
}

/// How and how often a pool's backends are checked.
#[derive(Debug, Clone)]
pub struct HealthCheck {
    pub check: Check,
    pub interval: Duration,
    pub timeout: Duration,
}

/// Why a pool could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("{key}: cannot resolve {addr}: {reason}")]
    Resolve { key: String, addr: String, reason: String },
    #[error("{key}: {reason}")]
    CaFile { key: String, reason: String },
    #[error("{key}: {reason}")]
    Tls { key: String, reason: String },
}

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Each worker's clients, by pool id: a pooled connection is driven by the runtime that
    /// opened it, so connections are never shared between workers.
    static CLIENTS: RefCell<Vec<Option<UpstreamClient>>> = const { RefCell::new(Vec::new()) };
}

impl UpstreamPool {
    /// Resolves addresses (blocking DNS: call at start-up only) and prepares the connector.
    pub fn build(cfg: &UpstreamConfig) -> Result<Self, PoolError> {
        let key = format!("upstreams.{}", cfg.name);
        let mut addrs = std::collections::BTreeSet::new();
        for (i, a) in cfg.addresses.iter().enumerate() {
            let resolve_error = |reason: String| PoolError::Resolve {
                key: format!("{key}.addresses[{i}]"),
                addr: a.to_string(),
                reason,
            };
            let resolved: Vec<SocketAddr> = (a.host.as_str(), a.port)
                .to_socket_addrs()
                .map_err(|e| resolve_error(e.to_string()))?
                .collect();
            if resolved.is_empty() {
                return Err(resolve_error("no addresses".into()));
            }
            addrs.extend(resolved);
        }
        let addrs: Vec<SocketAddr> = addrs.into_iter().collect();

        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(cfg.timeouts.connect));
        let tls_config = client_tls(cfg, &key)?;
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config)
            .https_or_http();
        let builder = match &cfg.tls {
            Some(t) => {
                let name = ServerName::try_from(t.sni.clone()).map_err(|e| PoolError::Tls {
                    key: format!("{key}.tls.sni"),
                    reason: format!("{:?} is not a server name ({e})", t.sni),
                })?;
                builder.with_server_name_resolver(FixedServerNameResolver::new(name))
            }
            None => builder,
        };
        let http2 = cfg.tls.as_ref().is_some_and(|t| t.http2);
        let inner = if http2 {
            builder.enable_http1().enable_http2().wrap_connector(Tcp(http))
        } else {
            builder.enable_http1().wrap_connector(Tcp(http))
        };
        let health_check = cfg.health_check.as_ref().map(|hc| HealthCheck {
            check: match &hc.kind {
                HealthCheckKind::Tcp => Check::Tcp,
                HealthCheckKind::Http { path, host } => Check::Http {
                    path: path.clone(),
                    host: host.clone(),
                },
            },
            interval: hc.interval,
            timeout: hc.timeout,
        });
        Ok(Self {
            name: cfg.name.clone(),
            pool: Pool::new(cfg.name.clone(), &addrs),
            timeouts: cfg.timeouts,
            scheme: if cfg.tls.is_some() {
                http::uri::Scheme::HTTPS
            } else {
                http::uri::Scheme::HTTP
            },
            connector: Connector {
                inner,
                total: cfg.timeouts.total_connect,
            },
            http2,
            health_check,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// How many distinct backends a request may try.
    pub fn size(&self) -> usize {
        self.pool.size()
    }

    pub fn scheme(&self) -> &http::uri::Scheme {
        &self.scheme
    }

    /// Sends `req` on this worker's client for the pool (made on first use).
    pub fn request(&self, req: http::Request<ReqBody>) -> hyper_util::client::legacy::ResponseFuture {
        CLIENTS.with(|clients| {
            let mut clients = clients.borrow_mut();
            if clients.len() <= self.id {
                clients.resize(self.id + 1, None);
            }
            clients[self.id].get_or_insert_with(|| self.new_client()).request(req)
        })
    }

    fn new_client(&self) -> UpstreamClient {
        let mut b = Client::builder(TokioExecutor::new());
        b.timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(self.timeouts.idle)
            .pool_max_idle_per_host(256);
        if self.http2 {
            b.http2_keep_alive_interval(Some(Duration::from_secs(30)));
        }
        b.build(self.connector.clone())
    }

    /// Checks every backend until `stop` turns true (run it on a runtime of its own: it does not
    /// share the workers' clients).
    pub async fn run_checks(self: Arc<Self>, hc: HealthCheck, stop: tokio::sync::watch::Receiver<bool>) {
        let client = self.new_client();
        let probe = |addr: SocketAddr| {
            let (client, connector, check, scheme) = (
                client.clone(),
                self.connector.clone(),
                hc.check.clone(),
                self.scheme.clone(),
            );
            async move { probe(&client, connector, &check, scheme, addr).await }
        };
        self.pool.run_checks(probe, hc.interval, hc.timeout, stop).await;
    }
}

/// One probe: a connection (TCP, and TLS for TLS pools) for [`Check::Tcp`]; `GET path` with
/// the configured `Host` answering 2xx or 3xx for [`Check::Http`].
async fn probe(
    client: &UpstreamClient,
    mut connector: Connector,
    check: &Check,
    scheme: http::uri::Scheme,
    addr: SocketAddr,
) -> Result<(), String> {
    let uri = |path: &str| {
        Uri::builder()
            .scheme(scheme.clone())
            .authority(addr.to_string())
            .path_and_query(path)
            .build()
            .map_err(|e| e.to_string())
    };
    match check {
        Check::Tcp => {
            let uri = uri("/")?;
            std::future::poll_fn(|cx| tower_service::Service::poll_ready(&mut connector, cx))
                .await
                .map_err(|e| e.to_string())?;
            tower_service::Service::call(&mut connector, uri)
                .await
                .map(drop)
                .map_err(|e| crate::failure::chain(&*e))
        }
        Check::Http { path, host } => {
            let req = http::Request::builder()
                .uri(uri(path)?)
                .header(http::header::HOST, host.as_str())
                .header(http::header::USER_AGENT, "portcullis-health-check")
                .body(ReqBody::empty())
                .map_err(|e| e.to_string())?;
            let resp = client.request(req).await.map_err(|e| crate::failure::chain(&e))?;
            let status = resp.status().as_u16();
            if (200..400).contains(&status) {
                Ok(())
            } else {
                Err(format!("answered {status}"))
            }
        }
    }
}

/// The client TLS configuration of a pool: its CA file (else the Mozilla roots of
/// `webpki-roots`, as reqwest uses), or no verification at all when `verify = false`.
fn client_tls(cfg: &UpstreamConfig, key: &str) -> Result<rustls::ClientConfig, PoolError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| PoolError::Tls {
            key: key.to_string(),
            reason: e.to_string(),
        })?;
    let Some(t) = &cfg.tls else {
        // Never used for a handshake: the pool's URIs are `http`.
        return Ok(builder
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth());
    };
    if !t.verify {
        tracing::warn!(pool = %cfg.name, "upstream TLS verification is turned off for this pool");
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth());
    }
    let mut roots = rustls::RootCertStore::empty();
    match &t.ca_file {
        Some(path) => {
            let ca_error = |reason: String| PoolError::CaFile {
                key: format!("{key}.tls.ca_file"),
                reason,
            };
            for c in base::pem::read_certs(path).map_err(ca_error)? {
                roots
                    .add(c)
                    .map_err(|e| ca_error(format!("{}: not a usable CA certificate ({e})", path.display())))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// `verify = false`: any certificate is accepted (signatures are still checked, so the
/// handshake is with whoever holds the key of the certificate shown).
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
