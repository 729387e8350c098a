//! Listening and serving: workers, listeners, TLS handshakes, HTTP/1.1 and HTTP/2 connections,
//! and the drain at shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls_pki_types::CertificateDer;
use tokio::sync::watch;

/// A listening address, in clear or with TLS.
#[derive(Clone)]
pub struct Listener {
    pub address: SocketAddr,
    /// The server configuration (certificates by SNI, client certificate verification, ALPN
    /// `h2` and `http/1.1` when HTTP/2 is on); `None`: plain HTTP.
    pub tls: Option<TlsSlot>,
}

/// What a listening socket's connections are served with.
#[derive(Clone)]
struct Accepting {
    tls: Option<TlsSlot>,
    listener: usize,
}

/// A listener's TLS configuration, replaced whole by a reload: each new connection's handshake
/// takes the one in the slot then; connections already up keep theirs.
pub type TlsSlot = Arc<arc_swap::ArcSwap<rustls::ServerConfig>>;

/// What a request knows of its connection.
#[derive(Debug)]
pub struct Conn {
    pub peer: SocketAddr,
    /// The local address it came in on.
    pub local: SocketAddr,
    /// Which of the listeners it came in on (their order in `start`).
    pub listener: usize,
    pub tls: bool,
    /// The client's certificate (the leaf), when it presented one the verifier accepted.
    pub client_cert: Option<CertificateDer<'static>>,
    /// That certificate as the device identity reads it, parsed once per connection.
    pub client_identity: Option<device::identify::CertIdentity>,
    /// The client's address as `X-Forwarded-For` names it, formatted once per connection.
    pub client_value: http::HeaderValue,
    /// The identity header values of the last principal and device this connection sent.
    pub identity_values: access::HeaderMemo,
    /// Requests started on the connection so far.
    pub requests: AtomicU64,
    started: std::time::Instant,
    /// Requests whose response is not done yet.
    open_streams: AtomicU64,
    /// When the last stream ended, in milliseconds since `started`.
    last_end_ms: AtomicU64,
    /// The connection speaks HTTP/2 (known from its first request).
    h2: std::sync::atomic::AtomicBool,
    /// Set while a draining HTTP/1.1 connection waits for its client's next request
    /// ([`drive`]); a request that starts then wakes `next_request`.
    lingering: std::sync::atomic::AtomicBool,
    next_request: tokio::sync::Notify,
    /// What an upgraded connection holds while it lives on past its HTTP exchange.
    drain: tokio::sync::mpsc::Sender<()>,
    gauge: Option<prometheus::IntGauge>,
}

/// Keeps an upgraded (WebSocket) connection inside the drain and the open-connections count
/// after hyper let go of it.
pub struct Held {
    _open: Open,
    _drain: tokio::sync::mpsc::Sender<()>,
}

impl Conn {
    fn new(
        peer: SocketAddr,
        (local, listener): (SocketAddr, usize),
        client_cert: Option<CertificateDer<'static>>,
        tls: bool,
        drain: tokio::sync::mpsc::Sender<()>,
        gauge: Option<prometheus::IntGauge>,
    ) -> Self {
        let client_identity = client_cert
            .as_ref()
            .and_then(|c| device::identify::cert_identity(c.as_ref()));
        Self {
            peer,
            local,
            listener,
            tls,
            client_cert,
            client_identity,
            client_value: access::upstream_headers::client_value(peer.ip()),
            identity_values: access::HeaderMemo::default(),
            requests: AtomicU64::new(0),
            started: std::time::Instant::now(),
            open_streams: AtomicU64::new(0),
            last_end_ms: AtomicU64::new(0),
            h2: std::sync::atomic::AtomicBool::new(false),
            lingering: std::sync::atomic::AtomicBool::new(false),
            next_request: tokio::sync::Notify::new(),
            drain,
            gauge,
        }
    }

    /// For a connection that was upgraded: the drain waits for it (until the grace period
    /// ends) and it is counted as open, as long as the returned value lives.
    pub fn hold(&self) -> Held {
        Held {
            _open: Open::new(&self.gauge),
            _drain: self.drain.clone(),
        }
    }

    /// Resolves once the connection has had no request in progress for its idle limit (`h1`
    /// for HTTP/1.1, `h2` for HTTP/2), counted from the end of its last response or, before
    /// its first request, from its start. Checked every `min(h1, h2)` (the protocol is known
    /// only from the first request), so an idle connection is found within that much after
    /// its limit. One timer per connection and period, rather than hyper's header-read timer,
    /// which costs a timer per request.
    async fn idle(&self, h1: Duration, h2: Duration) {
        let limit = |c: &Self| if c.h2.load(Ordering::Relaxed) { h2 } else { h1 };
        loop {
            tokio::time::sleep(h1.min(h2)).await;
            let since_last = self
                .started
                .elapsed()
                .saturating_sub(Duration::from_millis(self.last_end_ms.load(Ordering::Relaxed)));
            if self.open_streams.load(Ordering::Relaxed) == 0 && since_last >= limit(self) {
                return;
            }
        }
    }
}

/// Answers requests. One handler serves every worker; it is called on the worker's thread.
pub trait Handler: Send + Sync + 'static {
    type Body: hyper::body::Body<Data = bytes::Bytes, Error = Self::Error> + Send + Unpin + 'static;
    type Error: Into<Box<dyn std::error::Error + Send + Sync>>;

    fn call(&self, req: Request<Incoming>, conn: Arc<Conn>) -> impl Future<Output = Response<Self::Body>> + Send;
}

/// Serving settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub workers: usize,
    /// How long a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// At shutdown, how long open connections get to finish their requests.
    pub drain: Duration,
    /// How long a connection may go with no request in progress (HTTP/1.1 keep-alive
    /// between requests, a new connection before its first request, a request header sent
    /// too slowly) before it is closed ([`Conn::idle`]).
    pub h1_idle_timeout: Duration,
    /// An HTTP/2 connection with no open stream for this long is closed (`GOAWAY`).
    pub h2_idle_timeout: Duration,
    /// Counts open client connections.
    pub connections: Option<prometheus::IntGauge>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            workers: 1,
            handshake_timeout: Duration::from_secs(10),
            drain: Duration::from_secs(30),
            h1_idle_timeout: Duration::from_secs(60),
            h2_idle_timeout: Duration::from_secs(180),
            connections: None,
        }
    }
}

/// Keeps the open-connections gauge right however a connection ends.
struct Open(Option<prometheus::IntGauge>);

impl Open {
    fn new(gauge: &Option<prometheus::IntGauge>) -> Self {
        if let Some(g) = gauge {
            g.inc();
        }
        Self(gauge.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        if let Some(g) = &self.0 {
            g.dec();
        }
    }
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
    threads: Vec<std::thread::JoinHandle<bool>>,
    /// A duplicate of every listening socket the workers accept on, for a binary upgrade to
    /// hand to the new process ([`Running::sockets`]).
    sockets: Vec<std::net::TcpListener>,
}

impl Running {
    /// Duplicates of the listening sockets (several per address with `SO_REUSEPORT`). While
    /// they live, the sockets stay open after the workers stop accepting: connections keep
    /// queueing for whoever else holds them (the new process of an upgrade). Drop them before
    /// a plain shutdown, so that clients are refused rather than left queued.
    pub fn take_sockets(&mut self) -> Vec<std::net::TcpListener> {
        std::mem::take(&mut self.sockets)
    }

    /// The listening sockets, for a binary upgrade to hand over (one that fails can be tried
    /// again).
    pub fn sockets(&self) -> &[std::net::TcpListener] {
        &self.sockets
    }

    /// Waits until every worker has drained and stopped; `true` when every connection finished
    /// within the drain (none had to be cut).
    pub fn join(mut self) -> bool {
        drop(self.take_sockets());
        let mut clean = true;
        for t in self.threads {
            match t.join() {
                Ok(drained) => clean &= drained,
                Err(_) => {
                    tracing::error!("a data-plane worker panicked");
                    clean = false;
                }
            }
        }
        clean
    }
}

/// Starts `settings.workers` workers serving `listeners` with `handler` until `shutdown` turns
/// true; then each stops accepting and gives open connections `settings.drain` to finish.
/// Every listener is bound before this returns, so a port in use is reported here.
///
/// `inherited`: listening sockets handed over by the process this one replaces (a binary
/// upgrade). A listener whose address one of them has takes those — the very sockets, with
/// the connections already queued on them — and binds more only when there are fewer than
/// workers (and the old ones allow `SO_REUSEPORT`); inherited sockets no listener wants are
/// closed.
pub fn start<H: Handler>(
    settings: Settings,
    listeners: &[Listener],
    handler: Arc<H>,
    shutdown: watch::Receiver<bool>,
    mut inherited: Vec<std::net::TcpListener>,
) -> Result<Running, ServeError> {
    let workers = settings.workers.max(1);
    let mut bound: Vec<Vec<(std::net::TcpListener, Accepting)>> = (0..workers).map(|_| Vec::new()).collect();
    let mut sockets = Vec::new();
    for (index, l) in listeners.iter().enumerate() {
        let (mut mine, rest): (Vec<_>, Vec<_>) = inherited
            .into_iter()
            .partition(|s| s.local_addr().is_ok_and(|a| a == l.address));
        inherited = rest;
        if !mine.is_empty() {
            tracing::info!(address = %l.address, sockets = mine.len(), "listening sockets taken over from the previous process");
        }
        while mine.len() < workers {
            match bind(l.address, workers > 1) {
                Ok(s) => mine.push(s),
                // The old process's sockets do not allow SO_REUSEPORT (it ran one worker):
                // share what was handed over.
                Err(e) if !mine.is_empty() => {
                    tracing::info!(address = %l.address, error = %e, "no extra socket beside the inherited ones");
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        for (i, socket) in mine.into_iter().enumerate() {
            sockets.push(socket.try_clone().map_err(|source| ServeError::Bind {
                address: l.address,
                source,
            })?);
            let accepting = Accepting {
                tls: l.tls.clone(),
                listener: index,
            };
            bound[i % workers].push((socket, accepting));
        }
    }
    for s in inherited {
        tracing::info!(address = ?s.local_addr().ok(), "an inherited listening socket no listener uses is closed");
    }
    let mut threads = Vec::with_capacity(workers);
    for (worker, mine) in bound.into_iter().enumerate() {
        let (handler, shutdown) = (handler.clone(), shutdown.clone());
        let t = std::thread::Builder::new()
            .name(format!("portcullis-edge-{worker}"))
            .spawn({
                let settings = settings.clone();
                move || run_worker(settings, mine, handler, shutdown)
            })
            .map_err(|source| ServeError::Worker { worker, source })?;
        threads.push(t);
    }
    Ok(Running { threads, sockets })
}

/// A listening socket of this worker's own (`SO_REUSEPORT` when there are several workers, so
/// the kernel spreads connections over them as it does over nginx's).
fn bind(address: SocketAddr, reuse_port: bool) -> Result<std::net::TcpListener, ServeError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let err = |source| ServeError::Bind { address, source };
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    socket.set_reuse_address(true).map_err(err)?;
    if reuse_port {
        socket.set_reuse_port(true).map_err(err)?;
    }
    socket.bind(&address.into()).map_err(err)?;
    socket.listen(1024).map_err(err)?;
    Ok(socket.into())
}

fn run_worker<H: Handler>(
    settings: Settings,
    listeners: Vec<(std::net::TcpListener, Accepting)>,
    handler: Arc<H>,
    mut shutdown: watch::Receiver<bool>,
) -> bool {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot build a data-plane worker's runtime");
            return false;
        }
    };
    rt.block_on(async move {
        // Every connection task holds a sender; the drain waits until all are dropped.
        let (open_tx, mut open_rx) = tokio::sync::mpsc::channel::<()>(1);
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut accepting = tokio::task::JoinSet::new();
        let (conn_tx, mut conn_rx) = tokio::sync::mpsc::unbounded_channel();
        for (std_listener, on) in listeners {
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
                                if conn_tx.send((stream, peer, on.clone())).is_err() {
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
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // No hyper header-read timer: `drive` closes idle and trickling connections with one
        // timer per connection ([`Conn::idle`]).
        builder.http1().timer(TokioTimer::new()).header_read_timeout(None);
        builder.http2().timer(TokioTimer::new());
        let worker = Worker {
            handler,
            builder: Arc::new(builder),
            settings,
            open: open_tx,
            stop: stop_rx,
        };
        loop {
            tokio::select! {
                next = conn_rx.recv() => {
                    let Some((stream, peer, on)) = next else { break };
                    worker.spawn(stream, peer, on);
                }
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        break;
                    }
                }
            }
        }
        // Stop accepting (the sockets close), then serve what was accepted but not yet picked
        // up (dropping it would reset a client the kernel had already connected), and let open
        // connections finish.
        let _ = stop_tx.send(true);
        while accepting.join_next().await.is_some() {}
        while let Some((stream, peer, on)) = conn_rx.recv().await {
            worker.spawn(stream, peer, on);
        }
        let drain = worker.settings.drain;
        drop(worker);
        tokio::select! {
            _ = open_rx.recv() => true,
            () = tokio::time::sleep(drain) => {
                tracing::warn!(?drain, "connections still open at the end of the drain; closing them");
                false
            }
        }
    })
}

/// What a worker's connections share.
struct Worker<H: Handler> {
    handler: Arc<H>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    settings: Settings,
    /// Every connection task holds a sender; the drain waits until all are dropped.
    open: tokio::sync::mpsc::Sender<()>,
    /// Turns true when the worker stops accepting.
    stop: watch::Receiver<bool>,
}

impl<H: Handler> Worker<H> {
    /// Serves one accepted connection on its own task: the TLS handshake, then HTTP.
    fn spawn(&self, stream: tokio::net::TcpStream, peer: SocketAddr, on: Accepting) {
        let Accepting { tls, listener } = on;
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap_or(peer);
        let (handler, builder) = (self.handler.clone(), self.builder.clone());
        let s = &self.settings;
        let (handshake, h1_idle, h2_idle) = (s.handshake_timeout, s.h1_idle_timeout, s.h2_idle_timeout);
        // Two receivers: the handshake's wait may see the stop, and `drive` must see it too.
        let (mut stopping, stop_for_drive) = (self.stop.clone(), self.stop.clone());
        let (drain, gauge) = (self.open.clone(), s.connections.clone());
        let open = (Open::new(&s.connections), self.open.clone());
        tokio::spawn(async move {
            let _open = open;
            match tls {
                None => {
                    let conn = Arc::new(Conn::new(peer, (local, listener), None, false, drain, gauge));
                    let io = TokioIo::new(stream);
                    let served = builder.serve_connection_with_upgrades(io, service(handler, conn.clone()));
                    drive(served.into_owned(), &conn, h1_idle, h2_idle, stopping).await;
                }
                Some(slot) => {
                    let accept = tokio::time::timeout(
                        handshake,
                        tokio_rustls::TlsAcceptor::from(slot.load_full()).accept(stream),
                    );
                    let mut accept = std::pin::pin!(accept);
                    // A handshake still going at shutdown gets [`LINGER`] more to finish (its
                    // client connected before the listener closed, or to the socket a binary
                    // upgrade handed over), not the whole drain: a stalled one must not hold it.
                    let done = tokio::select! {
                        done = accept.as_mut() => done,
                        _ = stopping.changed() => tokio::time::timeout(LINGER, accept).await.unwrap_or_else(|_| Ok(Err(std::io::ErrorKind::TimedOut.into()))),
                    };
                    let stream = match done {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(client = %peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(client = %peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let client_cert = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| c.clone().into_owned());
                    let conn = Arc::new(Conn::new(peer, (local, listener), client_cert, true, drain, gauge));
                    let io = TokioIo::new(stream);
                    let served = builder.serve_connection_with_upgrades(io, service(handler, conn.clone()));
                    drive(served.into_owned(), &conn, h1_idle, h2_idle, stop_for_drive).await;
                }
            }
        });
    }
}

/// How long a draining HTTP/1.1 connection that is between requests waits for its client's
/// next one. HTTP/1.1 has no `GOAWAY`: closing a kept-alive connection can cross a request the
/// client is sending at that moment, which then fails. Waiting lets that request be answered
/// (with `Connection: close`), which is what keeps a binary upgrade under load at zero failed
/// requests; a client silent this long is one that is not about to send.
const LINGER: Duration = Duration::from_secs(1);

/// Serves one connection until it ends. At shutdown, or once it is idle ([`Conn::idle`]: a
/// kept-alive HTTP/1.1 connection between requests, a client that connected and sent nothing
/// or trickles a request header, an HTTP/2 connection with no open stream), it is asked to
/// finish gracefully (HTTP/1.1: after the response in progress; HTTP/2: `GOAWAY`, open
/// streams complete); an idle one that has not ended one `h1_idle` later is dropped. At
/// shutdown an HTTP/1.1 connection between requests first waits up to [`LINGER`] for its
/// next request.
async fn drive<C>(conn: C, state: &Conn, h1_idle: Duration, h2_idle: Duration, mut stop: watch::Receiver<bool>)
where
    C: hyper_util::server::graceful::GracefulConnection,
    C::Error: std::fmt::Display,
{
    let mut conn = std::pin::pin!(conn);
    let mut finishing = false;
    let mut cut_at: Option<tokio::time::Instant> = None;
    let mut linger_until: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(client = %state.peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.changed(), if !finishing => {
                finishing = true;
                // Set before looking, so that a request starting now either sees it (and wakes
                // `next_request`) or is seen here.
                state.lingering.store(true, Ordering::SeqCst);
                let between_requests = !state.h2.load(Ordering::Relaxed) && state.open_streams.load(Ordering::SeqCst) == 0;
                if between_requests {
                    linger_until = Some(tokio::time::Instant::now() + LINGER.min(h1_idle));
                } else {
                    conn.as_mut().graceful_shutdown();
                }
            }
            () = state.next_request.notified(), if linger_until.is_some() => {
                linger_until = None;
                conn.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep_until(linger_until.unwrap_or_else(tokio::time::Instant::now)), if linger_until.is_some() => {
                linger_until = None;
                conn.as_mut().graceful_shutdown();
            }
            () = state.idle(h1_idle, h2_idle), if !finishing => {
                finishing = true;
                cut_at = Some(tokio::time::Instant::now() + h1_idle);
                conn.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep_until(cut_at.unwrap_or_else(tokio::time::Instant::now)), if cut_at.is_some() => {
                tracing::debug!(client = %state.peer, "idle connection did not finish; closing it");
                return;
            }
        }
    }
}

type Served<B> = Result<Response<Tracked<B>>, std::convert::Infallible>;

fn service<H: Handler>(
    handler: Arc<H>,
    conn: Arc<Conn>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Tracked<H::Body>>,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Served<H::Body>> + Send,
> + Clone {
    hyper::service::service_fn(move |req: Request<Incoming>| {
        let (handler, conn) = (handler.clone(), conn.clone());
        async move {
            let stream = Stream::start(conn.clone(), req.version());
            let resp = handler.call(req, conn).await;
            Ok::<_, std::convert::Infallible>(resp.map(|body| Tracked { body, _stream: stream }))
        }
    })
}

/// One request on a connection, open until its response body is done with (or the request
/// was dropped before it had one: the client reset the stream or went away).
struct Stream(Arc<Conn>);

impl Stream {
    fn start(conn: Arc<Conn>, version: hyper::Version) -> Self {
        if version == hyper::Version::HTTP_2 {
            conn.h2.store(true, Ordering::Relaxed);
        }
        conn.open_streams.fetch_add(1, Ordering::SeqCst);
        conn.requests.fetch_add(1, Ordering::Relaxed);
        if conn.lingering.load(Ordering::SeqCst) {
            conn.next_request.notify_one();
        }
        Self(conn)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let c = &self.0;
        let now = u64::try_from(c.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        c.last_end_ms.store(now, Ordering::Relaxed);
        c.open_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request's [`Stream`] open.
pub struct Tracked<B> {
    body: B,
    _stream: Stream,
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
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
            ..Settings::default()
        }
    }

    /// An echo server on a free loopback port with `settings(1)` changed by `edit`; the
    /// sender keeps it running.
    fn plain_echo(edit: impl FnOnce(&mut Settings)) -> (SocketAddr, (watch::Sender<bool>, Running)) {
        let address: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let (stop, shutdown) = watch::channel(false);
        let echo = Arc::new(Echo {
            calls: AtomicUsize::new(0),
        });
        let mut s = settings(1);
        edit(&mut s);
        let running = start(s, &[Listener { address, tls: None }], echo, shutdown, Vec::new()).unwrap();
        (address, (stop, running))
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
        let running = start(
            settings(2),
            &[Listener { address, tls: None }],
            echo.clone(),
            shutdown,
            Vec::new(),
        )
        .unwrap();
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
        let tls = Some(Arc::new(arc_swap::ArcSwap::from_pointee(pki.server)));
        let running = start(settings(1), &[Listener { address, tls }], echo, shutdown, Vec::new()).unwrap();
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
        let running = start(
            settings(1),
            &[Listener { address, tls: None }],
            echo.clone(),
            shutdown,
            Vec::new(),
        )
        .unwrap();
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

    /// A binary upgrade's core: the sockets one server hands to the next keep the connections
    /// queued on them while neither accepts, and the next serves them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn handed_over_sockets_keep_their_queued_connections() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let address: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let echo = || {
            Arc::new(Echo {
                calls: AtomicUsize::new(0),
            })
        };
        let (stop_old, shutdown) = watch::channel(false);
        let mut old = start(
            settings(2),
            &[Listener { address, tls: None }],
            echo(),
            shutdown,
            Vec::new(),
        )
        .unwrap();
        let sockets = old.take_sockets();
        assert_eq!(sockets.len(), 2, "one socket per worker");
        // A kept-alive connection to the old server, idle when it starts draining.
        let mut kept = tokio::net::TcpStream::connect(address).await.unwrap();
        let get = b"GET /x HTTP/1.1\r\nhost: a\r\n\r\n";
        kept.write_all(get).await.unwrap();
        let first = read_response(&mut kept).await;
        assert!(first.starts_with("HTTP/1.1 200"), "{first}");
        stop_old.send(true).unwrap();
        let old_joined = tokio::task::spawn_blocking(move || old.join());
        // Its client sends the next request as the drain starts: answered, not cut, and then
        // the connection is closed.
        kept.write_all(get).await.unwrap();
        let second = read_response(&mut kept).await;
        assert!(second.starts_with("HTTP/1.1 200"), "{second}");
        let mut rest = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), kept.read(&mut rest))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 0, "closed after its response");
        assert!(old_joined.await.unwrap(), "the old server drained cleanly");
        // Nobody accepts now, yet connections queue instead of being refused ...
        let queued: Vec<_> = futures_join(address, 8).await;
        // ... and the next server, given the sockets, answers every one of them.
        let (stop_new, shutdown) = watch::channel(false);
        let new_echo = echo();
        let new = start(
            settings(2),
            &[Listener { address, tls: None }],
            new_echo.clone(),
            shutdown,
            sockets,
        )
        .unwrap();
        for mut c in queued {
            c.write_all(b"GET /x HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
                .await
                .unwrap();
            let r = read_response(&mut c).await;
            assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        }
        assert_eq!(new_echo.calls.load(Ordering::SeqCst), 8);
        stop_new.send(true).unwrap();
        tokio::task::spawn_blocking(move || new.join()).await.unwrap();
    }

    async fn futures_join(address: SocketAddr, n: usize) -> Vec<tokio::net::TcpStream> {
        let mut v = Vec::new();
        for _ in 0..n {
            v.push(
                tokio::net::TcpStream::connect(address)
                    .await
                    .expect("queued, not refused"),
            );
        }
        v
    }

    /// One response head and a body of the length it gives.
    async fn read_response(c: &mut tokio::net::TcpStream) -> String {
        use tokio::io::AsyncReadExt;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut chunk))
                .await
                .expect("a response within 5 s")
                .unwrap();
            assert!(
                n > 0,
                "connection closed before a response: {}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let len = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    return text;
                }
            }
        }
    }

    #[test]
    fn a_port_in_use_is_reported_before_anything_starts() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = taken.local_addr().unwrap();
        let (_stop, shutdown) = watch::channel(false);
        let echo = Arc::new(Echo {
            calls: AtomicUsize::new(0),
        });
        match start(
            settings(1),
            &[Listener { address, tls: None }],
            echo,
            shutdown,
            Vec::new(),
        ) {
            Err(ServeError::Bind { address: a, .. }) => assert_eq!(a, address),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("bound a port in use"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_http2_connection_is_closed_once_idle_and_not_while_a_stream_is_open() {
        let (address, _server) = plain_echo(|s| s.h2_idle_timeout = Duration::from_millis(300));
        let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
        let conn = tokio::spawn(conn);
        let started = std::time::Instant::now();
        // One stream open for 1 s, more than three idle periods.
        let req = Request::builder()
            .uri(format!("http://{address}/"))
            .header("x-delay-ms", "1000")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.expect("the stream is not cut while open");
        assert_eq!(resp.status(), 200);
        // Then idle: GOAWAY within two idle periods, and the connection ends.
        let ended = tokio::time::timeout(Duration::from_secs(3), conn).await;
        assert!(ended.is_ok(), "an idle HTTP/2 connection is closed");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(1300) && took < Duration::from_millis(2600),
            "closed {took:?} after the start"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_that_stays_silent_is_dropped() {
        use tokio::io::AsyncReadExt;
        let (address, _server) = plain_echo(|s| s.h1_idle_timeout = Duration::from_millis(300));
        let started = std::time::Instant::now();
        let mut silent = tokio::net::TcpStream::connect(address).await.unwrap();
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(3), silent.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "closed, not held: {read:?}");
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_kept_alive_connection_and_a_trickled_header_are_closed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (address, _server) = plain_echo(|s| s.h1_idle_timeout = Duration::from_millis(300));

        // One request answered, then nothing: closed once idle, not before.
        let mut kept = tokio::net::TcpStream::connect(address).await.unwrap();
        let asked = std::time::Instant::now();
        kept.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(3), kept.read_to_end(&mut out)).await;
        assert!(read.is_ok(), "an idle kept-alive connection is closed");
        assert!(
            String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"),
            "answered first"
        );
        assert!(
            asked.elapsed() >= Duration::from_millis(300),
            "kept open until idle: {:?}",
            asked.elapsed()
        );

        // A header that never ends.
        let mut slow = tokio::net::TcpStream::connect(address).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(3), slow.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "a trickled header does not hold the connection");
    }
}
