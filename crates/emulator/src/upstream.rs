//! The demo upstream app: answers every request with a JSON echo of what it received
//! (method, path, headers — identity headers included — and body size), plus a few helper
//! paths for tests: `/healthz`, `/slow?ms=N`, `/bytes?n=N` (streamed), `/ws` (WebSocket echo).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, Request};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde::Deserialize;

/// The router; `name` is echoed back so tests can tell instances apart.
pub fn router(name: &str) -> Router {
    let name = name.to_string();
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/slow", any(slow))
        .route("/bytes", get(bytes))
        .route("/ws", get(ws))
        .fallback(move |ci, req| echo(name.clone(), ci, req))
}

/// Serves the app on `listener` until the future is dropped.
pub async fn serve(listener: tokio::net::TcpListener, name: &str) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(name).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}

async fn echo(name: String, ConnectInfo(peer): ConnectInfo<SocketAddr>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    // Count the body as it streams so that large uploads are never held in memory.
    let mut stream = body.into_data_stream();
    let mut size: u64 = 0;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => size += c.len() as u64,
            Err(_) => return StatusCode::BAD_REQUEST.into_response(),
        }
    }
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in &parts.headers {
        headers
            .entry(k.as_str().to_string())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    Json(serde_json::json!({
        "app": name,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_bytes": size,
        "peer": peer.to_string(),
    }))
    .into_response()
}

#[derive(Deserialize)]
struct SlowQuery {
    ms: Option<u64>,
}

async fn slow(Query(q): Query<SlowQuery>) -> &'static str {
    tokio::time::sleep(Duration::from_millis(q.ms.unwrap_or(5000).min(600_000))).await;
    "slow\n"
}

#[derive(Deserialize)]
struct BytesQuery {
    n: Option<u64>,
}

async fn bytes(Query(q): Query<BytesQuery>, _h: HeaderMap) -> Response {
    const CHUNK: usize = 64 * 1024;
    let total = q.n.unwrap_or(1024);
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    let stream = futures_util::stream::unfold(total, move |left| {
        let chunk = chunk.clone();
        async move {
            if left == 0 {
                return None;
            }
            let n = left.min(CHUNK as u64);
            Some((Ok::<_, std::io::Error>(chunk.slice(..n as usize)), left - n))
        }
    });
    Response::builder()
        .header("content-type", "application/octet-stream")
        .header("content-length", total.to_string())
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn ws(up: WebSocketUpgrade) -> Response {
    up.on_upgrade(|mut socket: WebSocket| async move {
        while let Some(Ok(msg)) = socket.recv().await {
            let reply = match msg {
                Message::Text(t) => Message::Text(t),
                Message::Binary(b) => Message::Binary(b),
                Message::Close(_) => break,
                Message::Ping(_) | Message::Pong(_) => continue,
            };
            if socket.send(reply).await.is_err() {
                break;
            }
        }
    })
}
