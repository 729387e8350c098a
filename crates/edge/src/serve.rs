//! Listening and serving: workers, listeners, TLS handshakes, HTTP/1.1 and HTTP/2 connections,
//! and the drain at shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls_pki_types::CertificateDer;
use tokio::sync::watch;

/// A listening address, in clear or with TLS.
#[derive(Clone)]
pub struct Listener {
    pub address: SocketAddr,
    /// The server configuration (certificates by SNI, client certificate verification, ALPN
    /// `h2` and `http/1.1` when HTTP/2 is on); `None`: plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// What a request knows of its connection.
#[derive(Debug, Clone)]
pub struct Conn {
    pub peer: SocketAddr,
    /// The listener it came in on.
    pub local: SocketAddr,
    pub tls: bool,
    /// The client's certificate (the leaf), when it presented one the verifier accepted.
    pub client_cert: Option<CertificateDer<'static>>,
}

/// Answers requests. One handler serves every worker; it is called on the worker's thread.
pub trait Handler: Send + Sync + 'static {
    type Body: hyper::body::Body<Data = bytes::Bytes, Error = Self::Error> + Send + 'static;
    type Error: Into<Box<dyn std::error::Error + Send + Sync>>;

    fn call(&self, req: Request<Incoming>, conn: Arc<Conn>) -> impl Future<Output = Response<Self::Body>> + Send;
}

/// Serving settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub workers: usize,
    /// How long a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// At shutdown, how long open connections get to finish their requests.
    pub drain: Duration,
}

/// Why serving could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start worker {worker}: {source}")]
    Worker { worker: usize, source: std::io::Error },
}

/// The running workers.
pub struct Running {
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Waits until every worker has drained and stopped.
    pub fn join(self) {
        for t in self.threads {
            if t.join().is_err() {
                tracing::error!("a data-plane worker panicked");
            }
        }
    }
}

/// Starts `settings.workers` workers serving `listeners` with `handler` until `shutdown` turns
/// true; then each stops accepting and gives open connections `settings.drain` to finish.
/// Every listener is bound before this returns, so a port in use is reported here.
pub fn start<H: Handler>(
    settings: Settings,
    listeners: &[Listener],
    handler: Arc<H>,
    shutdown: watch::Receiver<bool>,
) -> Result<Running, ServeError> {
    let workers = settings.workers.max(1);
    let mut bound = Vec::with_capacity(workers);
    for _ in 0..workers {
        let mut mine = Vec::with_capacity(listeners.len());
        for l in listeners {
            mine.push((bind(l.address, workers > 1)?, l.tls.clone()));
        }
        bound.push(mine);
    }
    let mut threads = Vec::with_capacity(workers);
    for (worker, mine) in bound.into_iter().enumerate() {
        let (handler, shutdown) = (handler.clone(), shutdown.clone());
        let t = std::thread::Builder::new()
            .name(format!("portcullis-edge-{worker}"))
            .spawn(move || run_worker(settings, mine, handler, shutdown))
            .map_err(|source| ServeError::Worker { worker, source })?;
        threads.push(t);
    }
    Ok(Running { threads })
}

/// A listening socket of this worker's own (`SO_REUSEPORT` when there are several workers, so
/// the kernel spreads connections over them as it does over nginx's).
fn bind(address: SocketAddr, reuse_port: bool) -> Result<std::net::TcpListener, ServeError> {
    let err = |source| ServeError::Bind { address, source };
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    if reuse_port {
        socket.set_reuseport(true).map_err(err)?;
    }
    socket.bind(address).map_err(err)?;
    let listener = socket.listen(1024).map_err(err)?;
    listener.into_std().map_err(err)
}

fn run_worker<H: Handler>(
    settings: Settings,
    listeners: Vec<(std::net::TcpListener, Option<Arc<rustls::ServerConfig>>)>,
    handler: Arc<H>,
    mut shutdown: watch::Receiver<bool>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot build a data-plane worker's runtime");
            return;
        }
    };
    rt.block_on(async move {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut accepting = tokio::task::JoinSet::new();
        let (conn_tx, mut conn_rx) = tokio::sync::mpsc::unbounded_channel();
        for (std_listener, tls) in listeners {
            let listener = match std_listener
                .set_nonblocking(true)
                .and_then(|()| tokio::net::TcpListener::from_std(std_listener))
            {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, "cannot use a listening socket");
                    continue;
                }
            };
            let (conn_tx, mut stop_rx) = (conn_tx.clone(), stop_rx.clone());
            accepting.spawn(async move {
                loop {
                    tokio::select! {
                        accepted = listener.accept() => match accepted {
                            Ok((stream, peer)) => {
                                if conn_tx.send((stream, peer, tls.clone())).is_err() {
                                    return;
                                }
                            }
                            // Out of descriptors or a connection reset before accept: keep going.
                            Err(e) => {
                                tracing::warn!(error = %e, "accept failed");
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                        },
                        _ = stop_rx.changed() => return,
                    }
                }
            });
        }
        drop(conn_tx);
        let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
        loop {
            tokio::select! {
                next = conn_rx.recv() => {
                    let Some((stream, peer, tls)) = next else { break };
                    let _ = stream.set_nodelay(true);
                    let local = stream.local_addr().unwrap_or(peer);
                    let (handler, builder) = (handler.clone(), builder.clone());
                    let watcher = graceful.watcher();
                    let handshake = settings.handshake_timeout;
                    let mut stopping = stop_rx.clone();
                    tokio::spawn(async move {
                        match tls {
                            None => {
                                let conn = Arc::new(Conn { peer, local, tls: false, client_cert: None });
                                let io = TokioIo::new(stream);
                                let service = service(handler, conn);
                                let _ = watcher.watch(builder.serve_connection_with_upgrades(io, service).into_owned()).await;
                            }
                            Some(config) => {
                                let accept = tokio_rustls::TlsAcceptor::from(config).accept(stream);
                                // A handshake still going at shutdown is dropped: it has no
                                // request to finish, and must not hold the drain.
                                let stream = tokio::select! {
                                    done = tokio::time::timeout(handshake, accept) => match done {
                                        Ok(Ok(s)) => s,
                                        Ok(Err(e)) => {
                                            tracing::debug!(client = %peer, error = %e, "TLS handshake failed");
                                            return;
                                        }
                                        Err(_) => {
                                            tracing::debug!(client = %peer, "TLS handshake timed out");
                                            return;
                                        }
                                    },
                                    _ = stopping.changed() => return,
                                };
                                let client_cert = stream
                                    .get_ref()
                                    .1
                                    .peer_certificates()
                                    .and_then(|c| c.first())
                                    .map(|c| c.clone().into_owned());
                                let conn = Arc::new(Conn { peer, local, tls: true, client_cert });
                                let io = TokioIo::new(stream);
                                let service = service(handler, conn);
                                let _ = watcher.watch(builder.serve_connection_with_upgrades(io, service).into_owned()).await;
                            }
                        }
                    });
                }
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        break;
                    }
                }
            }
        }
        // Stop accepting (the sockets close), then let open connections finish.
        let _ = stop_tx.send(true);
        drop(stop_rx);
        while accepting.join_next().await.is_some() {}
        tokio::select! {
            () = graceful.shutdown() => {}
            () = tokio::time::sleep(settings.drain) => {
                tracing::warn!(drain = ?settings.drain, "connections still open at the end of the drain; closing them");
            }
        }
    });
}

fn service<H: Handler>(
    handler: Arc<H>,
    conn: Arc<Conn>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<H::Body>,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<Response<H::Body>, std::convert::Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |req| {
        let (handler, conn) = (handler.clone(), conn.clone());
        async move { Ok::<_, std::convert::Infallible>(handler.call(req, conn).await) }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::Full;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use rustls_pki_types::PrivateKeyDer;

    use super::*;

    /// Answers with what it knows of the request and its connection, after `delay_ms` from the
    /// `x-delay-ms` header.
    struct Echo {
        calls: AtomicUsize,
    }

    impl Handler for Echo {
        type Body = Full<bytes::Bytes>;
        type Error = std::convert::Infallible;

        async fn call(&self, req: Request<Incoming>, conn: Arc<Conn>) -> Response<Self::Body> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let delay = req
                .headers()
                .get("x-delay-ms")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(delay)).await;
            let body = format!(
                "{:?} tls={} cert={} peer_ip={} thread={}",
                req.version(),
                conn.tls,
                conn.client_cert.is_some(),
                conn.peer.ip(),
                std::thread::current().name().unwrap_or_default(),
            );
            Response::new(Full::new(body.into()))
        }
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap()
    }

    fn settings(workers: usize) -> Settings {
        Settings {
            workers,
            handshake_timeout: Duration::from_secs(5),
            drain: Duration::from_secs(5),
        }
    }

    struct Pki {
        ca_pem: String,
        server: rustls::ServerConfig,
        client_pem: String,
    }

    /// A CA, a server certificate for localhost (HTTP/2 and HTTP/1.1 by ALPN, client
    /// certificates from the CA verified when presented) and a client certificate.
    fn pki() -> Pki {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let server_key = KeyPair::generate().unwrap();
        let server_cert = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&server_key, &issuer)
            .unwrap();
        let client_key = KeyPair::generate().unwrap();
        let client_cert = CertificateParams::new(vec!["mac-1".to_string()])
            .unwrap()
            .signed_by(&client_key, &issuer)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_cert.der().clone()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
            .allow_unauthenticated()
            .build()
            .unwrap();
        let mut server = rustls::ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![server_cert.der().clone()],
                PrivateKeyDer::try_from(server_key.serialize_der()).unwrap(),
            )
            .unwrap();
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Pki {
            ca_pem: ca_cert.pem(),
            server,
            client_pem: format!("{}{}", client_cert.pem(), client_key.serialize_pem()),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn http1_in_clear_on_every_worker() {
        let port = free_port();
        let address: SocketAddr = ([127, 0, 0, 1], port).into();
        let (stop, shutdown) = watch::channel(false);
        let echo = Arc::new(Echo {
            calls: AtomicUsize::new(0),
        });
        let running = start(settings(2), &[Listener { address, tls: None }], echo.clone(), shutdown).unwrap();
        let mut threads = std::collections::HashSet::new();
        for _ in 0..40 {
            // A new connection each time, so the kernel spreads them over both workers.
            let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
            let body = http
                .get(format!("http://127.0.0.1:{port}/x"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            assert!(
                body.starts_with("HTTP/1.1 tls=false cert=false peer_ip=127.0.0.1"),
                "{body}"
            );
            threads.insert(body.rsplit("thread=").next().unwrap().to_string());
        }
        assert_eq!(echo.calls.load(Ordering::SeqCst), 40);
        assert_eq!(threads.len(), 2, "both workers served: {threads:?}");
        stop.send(true).unwrap();
        tokio::task::spawn_blocking(move || running.join()).await.unwrap();
        assert!(
            reqwest::get(format!("http://127.0.0.1:{port}/x")).await.is_err(),
            "nothing listens after the shutdown"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_negotiates_http2_and_hands_over_the_client_certificate() {
        let pki = pki();
        let port = free_port();
        let address: SocketAddr = ([127, 0, 0, 1], port).into();
        let (stop, shutdown) = watch::channel(false);
        let echo = Arc::new(Echo {
            calls: AtomicUsize::new(0),
        });
        let tls = Some(Arc::new(pki.server));
        let running = start(settings(1), &[Listener { address, tls }], echo, shutdown).unwrap();
        let ca = reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap();
        let url = format!("https://localhost:{port}/x");
        let plain = reqwest::Client::builder()
            .add_root_certificate(ca.clone())
            .resolve("localhost", address)
            .build()
            .unwrap();
        let body = plain.get(&url).send().await.unwrap().text().await.unwrap();
        assert!(body.starts_with("HTTP/2.0 tls=true cert=false"), "{body}");
        let with_cert = reqwest::Client::builder()
            .add_root_certificate(ca)
            .resolve("localhost", address)
            .identity(reqwest::Identity::from_pem(pki.client_pem.as_bytes()).unwrap())
            .http1_only()
            .build()
            .unwrap();
        let body = with_cert.get(&url).send().await.unwrap().text().await.unwrap();
        assert!(body.starts_with("HTTP/1.1 tls=true cert=true"), "{body}");
        // A client that never finishes its handshake does not keep a worker from serving.
        let stalled = tokio::net::TcpStream::connect(address).await.unwrap();
        let body = plain.get(&url).send().await.unwrap().text().await.unwrap();
        assert!(body.contains("tls=true"), "{body}");
        stop.send(true).unwrap();
        let started = std::time::Instant::now();
        tokio::task::spawn_blocking(move || running.join()).await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "a stalled handshake does not hold the drain ({:?})",
            started.elapsed()
        );
        drop(stalled);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_lets_requests_in_flight_finish_and_accepts_no_more() {
        let port = free_port();
        let address: SocketAddr = ([127, 0, 0, 1], port).into();
        let (stop, shutdown) = watch::channel(false);
        let echo = Arc::new(Echo {
            calls: AtomicUsize::new(0),
        });
        let running = start(settings(1), &[Listener { address, tls: None }], echo.clone(), shutdown).unwrap();
        let slow = tokio::spawn(
            reqwest::Client::new()
                .get(format!("http://127.0.0.1:{port}/slow"))
                .header("x-delay-ms", "800")
                .send(),
        );
        while echo.calls.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.send(true).unwrap();
        let joined = tokio::task::spawn_blocking(move || running.join());
        let r = slow.await.unwrap().expect("the request in flight is answered");
        assert_eq!(r.status(), 200);
        assert!(r.text().await.unwrap().starts_with("HTTP/1.1"));
        joined.await.unwrap();
        assert!(
            reqwest::get(format!("http://127.0.0.1:{port}/x")).await.is_err(),
            "no new connections after the shutdown"
        );
    }

    #[test]
    fn a_port_in_use_is_reported_before_anything_starts() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = taken.local_addr().unwrap();
        let (_stop, shutdown) = watch::channel(false);
        let echo = Arc::new(Echo {
            calls: AtomicUsize::new(0),
        });
        match start(settings(1), &[Listener { address, tls: None }], echo, shutdown) {
            Err(ServeError::Bind { address: a, .. }) => assert_eq!(a, address),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("bound a port in use"),
        }
    }
}
