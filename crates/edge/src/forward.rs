//! Sending a prepared request to one upstream address over this worker's pooled connections
//! (HTTP/1.1, one pool per worker thread, so taking a connection never crosses threads), and
//! passing an upgrade (WebSocket) through once the upstream agrees to it. The caller has done
//! the header work (hop-by-hop fields, forwarding and identity headers, `Host`).

use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

thread_local! {
    static CLIENT: Client<HttpConnector, Incoming> = {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .build(connector)
    };
}

/// Why a request got no upstream response.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("the request's path does not make an upstream URI")]
    Uri(#[from] http::Error),
    #[error("upstream {addr}: {source}")]
    Upstream {
        addr: SocketAddr,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
}

impl ForwardError {
    /// Nothing reached the upstream application (the connection could not be made), so the
    /// request may go to another backend whatever its method.
    pub fn is_connect(&self) -> bool {
        match self {
            Self::Upstream { source, .. } => source.is_connect(),
            Self::Uri(_) => false,
        }
    }
}

fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.headers().contains_key(http::header::UPGRADE)
}

/// Sends `req` (its path and query kept) to `addr` and returns the upstream's response, its
/// body streaming. On `101 Switching Protocols` to an upgrade request the two upgraded
/// connections are joined until either side closes.
pub async fn forward(mut req: Request<Incoming>, addr: SocketAddr) -> Result<Response<Incoming>, ForwardError> {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_string();
    *req.uri_mut() = Uri::builder()
        .scheme("http")
        .authority(addr.to_string())
        .path_and_query(path)
        .build()?;
    // HTTP/2 clients too: the upstream side speaks HTTP/1.1.
    *req.version_mut() = Version::HTTP_11;
    let downstream = is_upgrade(&req).then(|| hyper::upgrade::on(&mut req));
    let client = CLIENT.with(Client::clone);
    let mut resp = client
        .request(req)
        .await
        .map_err(|source| ForwardError::Upstream { addr, source })?;
    if let (StatusCode::SWITCHING_PROTOCOLS, Some(downstream)) = (resp.status(), downstream) {
        let upstream = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            match tokio::try_join!(downstream, upstream) {
                Ok((down, up)) => {
                    let (mut down, mut up) = (TokioIo::new(down), TokioIo::new(up));
                    if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
                        tracing::debug!(upstream = %addr, error = %e, "upgraded connection ended");
                    }
                }
                Err(e) => tracing::debug!(upstream = %addr, error = %e, "upgrade failed"),
            }
        });
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures_util::{SinkExt, StreamExt};
    use http_body_util::{BodyExt, Full};
    use tokio::sync::watch;

    use super::*;
    use crate::serve::{self, Conn, Handler, Listener};

    /// The upstream: answers with its method, path, headers and body.
    struct App;

    impl Handler for App {
        type Body = Full<bytes::Bytes>;
        type Error = std::convert::Infallible;

        async fn call(&self, req: Request<Incoming>, _: Arc<Conn>) -> Response<Self::Body> {
            let head = format!("{} {} {:?}", req.method(), req.uri(), req.headers().get("x-test"));
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Response::new(Full::new(
                format!("{head} body={}", String::from_utf8_lossy(&body)).into(),
            ))
        }
    }

    /// The proxy: forwards everything to `upstream`; 502 when it cannot.
    struct Proxy {
        upstream: SocketAddr,
    }

    impl Handler for Proxy {
        type Body = http_body_util::Either<Incoming, Full<bytes::Bytes>>;
        type Error = Box<dyn std::error::Error + Send + Sync>;

        async fn call(&self, req: Request<Incoming>, _: Arc<Conn>) -> Response<Self::Body> {
            match forward(req, self.upstream).await {
                Ok(r) => r.map(http_body_util::Either::Left),
                Err(e) => {
                    let mut r = Response::new(http_body_util::Either::Right(Full::new(e.to_string().into())));
                    *r.status_mut() = if e.is_connect() {
                        StatusCode::BAD_GATEWAY
                    } else {
                        StatusCode::INTERNAL_SERVER_ERROR
                    };
                    r
                }
            }
        }
    }

    fn addr() -> SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    fn settings() -> serve::Settings {
        serve::Settings {
            workers: 1,
            handshake_timeout: Duration::from_secs(5),
            drain: Duration::from_secs(2),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_and_bodies_go_through_and_a_dead_upstream_is_a_connect_error() {
        let (app, proxy) = (addr(), addr());
        let (stop, shutdown) = watch::channel(false);
        let a = serve::start(
            settings(),
            &[Listener {
                address: app,
                tls: None,
            }],
            Arc::new(App),
            shutdown.clone(),
        )
        .unwrap();
        let p = serve::start(
            settings(),
            &[Listener {
                address: proxy,
                tls: None,
            }],
            Arc::new(Proxy { upstream: app }),
            shutdown,
        )
        .unwrap();
        let http = reqwest::Client::new();
        for i in 0..5 {
            let body = http
                .post(format!("http://{proxy}/a/b?c=d&e"))
                .header("x-test", format!("v{i}"))
                .body(format!("payload {i}"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            assert_eq!(body, format!("POST /a/b?c=d&e Some(\"v{i}\") body=payload {i}"));
        }
        // A backend that is not there: a connect error (which may go to another backend).
        let dead = addr();
        let (stop_dead, shutdown_dead) = watch::channel(false);
        let to_dead = addr();
        let d = serve::start(
            settings(),
            &[Listener {
                address: to_dead,
                tls: None,
            }],
            Arc::new(Proxy { upstream: dead }),
            shutdown_dead,
        )
        .unwrap();
        let r = http.get(format!("http://{to_dead}/")).send().await.unwrap();
        assert_eq!(r.status(), 502, "{}", r.text().await.unwrap());
        stop.send(true).unwrap();
        stop_dead.send(true).unwrap();
        tokio::task::spawn_blocking(move || {
            a.join();
            p.join();
            d.join();
        })
        .await
        .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_websocket_upgrade_is_passed_through() {
        let ws = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = ws.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = ws.accept().await {
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                        return;
                    };
                    while let Some(Ok(m)) = ws.next().await {
                        if m.is_text() && ws.send(m).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let proxy = addr();
        let (stop, shutdown) = watch::channel(false);
        let p = serve::start(
            settings(),
            &[Listener {
                address: proxy,
                tls: None,
            }],
            Arc::new(Proxy { upstream }),
            shutdown,
        )
        .unwrap();
        let (mut client, resp) = tokio_tungstenite::connect_async(format!("ws://{proxy}/chat"))
            .await
            .unwrap();
        assert_eq!(resp.status(), 101);
        for i in 0..3 {
            client.send(format!("hello {i}").into()).await.unwrap();
            let echo = client.next().await.unwrap().unwrap();
            assert_eq!(echo.into_text().unwrap().as_str(), format!("hello {i}"));
        }
        drop(client);
        stop.send(true).unwrap();
        tokio::task::spawn_blocking(move || p.join()).await.unwrap();
    }
}
