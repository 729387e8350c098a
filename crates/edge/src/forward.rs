//! Sending a prepared request to one backend over this worker's pooled connections, bounded by
//! the pool's timeouts, and passing an upgrade (WebSocket) through once the upstream agrees to
//! it. The caller has done the header work (hop-by-hop fields, forwarding and identity
//! headers, `Host`) and chooses the backend.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;

use crate::body::{Progress, ReqBody};
use crate::failure::ForwardError;
use crate::serve::Held;
use crate::upstream::UpstreamPool;

/// Sends `req` (its path and query kept) to `addr` of `pool`. The wait for the response head
/// is bounded by the pool's read timeout once the request body is sent, and by its write
/// timeout while the upstream takes none of the body. On `101 Switching Protocols` to an
/// upgrade request, `downstream` (the client's side) is joined with the upstream's until
/// either closes, holding its connection's place in the drain.
pub async fn forward(
    pool: &UpstreamPool,
    mut req: Request<ReqBody>,
    addr: SocketAddr,
    progress: Option<&Arc<Progress>>,
    downstream: &mut Option<(OnUpgrade, Held, Option<crate::upgraded::Following>)>,
) -> Result<Response<Incoming>, ForwardError> {
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(pool.scheme().clone());
    uri.authority = pool.pool.authority(addr).cloned();
    uri.path_and_query = Some(
        req.uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
    );
    *req.uri_mut() = Uri::from_parts(uri).map_err(|_| ForwardError::Uri)?;
    // HTTP/2 clients too: the client speaks HTTP/1.1 to the upstream, or HTTP/2 when ALPN says.
    *req.version_mut() = Version::HTTP_11;
    let upgrading = downstream.is_some();
    let t = pool.timeouts;
    let mut sending = std::pin::pin!(pool.request(req));
    let mut frames = progress.map_or(0, |p| p.frames());
    let mut resp = loop {
        let body_done = progress.is_none_or(|p| p.done());
        let wait = if body_done { t.read } else { t.write };
        match tokio::time::timeout(wait, &mut sending).await {
            Ok(Ok(resp)) => break resp,
            Ok(Err(source)) => return Err(ForwardError::Upstream { addr, source }),
            Err(_) if body_done => return Err(ForwardError::ReadTimeout { addr, after: wait }),
            Err(_) => {
                // Still sending the body: a stall is the upstream's only if it took nothing.
                let now = progress.map_or(0, |p| p.frames());
                if now == frames {
                    return Err(ForwardError::WriteTimeout { addr, after: wait });
                }
                frames = now;
            }
        }
    };
    if let (StatusCode::SWITCHING_PROTOCOLS, true) = (resp.status(), upgrading) {
        if let Some((down, held, follow)) = downstream.take() {
            let up = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                let _held = held;
                match tokio::try_join!(down, up) {
                    Ok((down, up)) => {
                        if let Err(e) = crate::upgraded::pipe(TokioIo::new(down), TokioIo::new(up), follow).await {
                            tracing::debug!(upstream = %addr, error = %e, "upgraded connection ended");
                        }
                    }
                    Err(e) => tracing::debug!(upstream = %addr, error = %e, "upgrade failed"),
                }
            });
        }
    }
    Ok(resp)
}
