//! The floor of a reverse proxy on hyper 1, for `benches/load/floor.sh`: nothing but
//! forwarding — no authentication, no header work, no metrics. One current-thread runtime per
//! worker thread, each with its own `SO_REUSEPORT` listener and its own pooled client, the way
//! Portcullis runs its workers; mimalloc, as Portcullis.
//!
//! `cargo run --release --features floor --example floor_hyper -- LISTEN UPSTREAM WORKERS`

use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Body = http_body_util::Either<Incoming, http_body_util::Empty<bytes::Bytes>>;

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, upstream, workers] = args.as_slice() else {
        return Err("usage: floor_hyper LISTEN UPSTREAM WORKERS".into());
    };
    let listen: SocketAddr = listen.parse().map_err(|e| format!("LISTEN: {e}"))?;
    let upstream: SocketAddr = upstream.parse().map_err(|e| format!("UPSTREAM: {e}"))?;
    let workers: usize = workers.parse().map_err(|e| format!("WORKERS: {e}"))?;
    let threads: Vec<_> = (0..workers)
        .map(|i| {
            std::thread::Builder::new()
                .name(format!("floor-hyper-{i}"))
                .spawn(move || worker(listen, upstream))
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    for t in threads {
        t.join().map_err(|_| "a worker panicked".to_string())??;
    }
    Ok(())
}

fn worker(listen: SocketAddr, upstream: SocketAddr) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
        socket.set_reuseport(true).map_err(|e| e.to_string())?;
        socket.set_reuseaddr(true).map_err(|e| e.to_string())?;
        socket.bind(listen).map_err(|e| format!("{listen}: {e}"))?;
        let listener = socket.listen(1024).map_err(|e| e.to_string())?;
        let client: Client<_, Incoming> = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build_http();
        let authority = upstream.to_string();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (client, authority) = (client.clone(), authority.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    let (client, authority) = (client.clone(), authority.clone());
                    async move {
                        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
                        let uri = format!("http://{authority}{path}");
                        match uri.parse() {
                            Ok(u) => *req.uri_mut() = u,
                            Err(_) => return Ok::<_, hyper::Error>(status(StatusCode::BAD_REQUEST)),
                        }
                        Ok(match client.request(req).await {
                            Ok(r) => r.map(http_body_util::Either::Left),
                            Err(_) => status(StatusCode::BAD_GATEWAY),
                        })
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

fn status(code: StatusCode) -> Response<Body> {
    let mut r = Response::new(http_body_util::Either::Right(http_body_util::Empty::new()));
    *r.status_mut() = code;
    r
}
