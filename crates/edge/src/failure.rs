//! Why a request got no upstream response, classified once: the status the client gets, the
//! `portcullis_upstream_errors_total` kind, whether another backend may be tried, and the
//! problem the client is answered with.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::Duration;

use access::Problem;
use metrics::UpstreamErrorKind;

use crate::upstream::{ConnectTimedOut, TcpFailed};

/// A failed try at one backend (or none left to try).
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Every backend of the pool is down or was tried already.
    #[error("pool {0}: no healthy backend left to try")]
    NoBackend(String),
    #[error("upstream {addr}: {}", chain(source))]
    Upstream {
        addr: SocketAddr,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// The request's path does not make an upstream URI (it came from a parsed one, so this
    /// is not expected).
    #[error("the request's path does not make an upstream URI")]
    Uri,
    #[error("upstream {addr}: no response within {after:?}")]
    ReadTimeout { addr: SocketAddr, after: Duration },
    #[error("upstream {addr}: took none of the request body for {after:?}")]
    WriteTimeout { addr: SocketAddr, after: Duration },
}

impl ForwardError {
    /// What the client gets and how the error is counted.
    pub fn classify(&self) -> (u16, UpstreamErrorKind) {
        match self {
            Self::NoBackend(_) => (502, UpstreamErrorKind::NoHealthyBackend),
            Self::Uri => (502, UpstreamErrorKind::Other),
            Self::ReadTimeout { .. } => (504, UpstreamErrorKind::ReadTimeout),
            Self::WriteTimeout { .. } => (504, UpstreamErrorKind::WriteTimeout),
            Self::Upstream { source, .. } if source.is_connect() => {
                let tcp = find::<TcpFailed>(source);
                if find::<ConnectTimedOut>(source).is_some()
                    || tcp.is_some_and(|t| io_kind(&*t.0).is_some_and(|k| k == std::io::ErrorKind::TimedOut))
                {
                    (504, UpstreamErrorKind::ConnectTimeout)
                } else if tcp.is_some() {
                    (502, UpstreamErrorKind::ConnectRefused)
                } else {
                    // TCP was up: the TLS handshake failed (a bad certificate, a wrong name, or
                    // a peer that does not speak TLS).
                    (502, UpstreamErrorKind::Tls)
                }
            }
            Self::Upstream { .. } => (502, UpstreamErrorKind::Protocol),
        }
    }

    /// Nothing reached the upstream application (the connection could not be made), so the
    /// request may go to another backend whatever its method.
    pub fn is_connect(&self) -> bool {
        match self {
            Self::Upstream { source, .. } => source.is_connect(),
            Self::NoBackend(_) | Self::Uri | Self::ReadTimeout { .. } | Self::WriteTimeout { .. } => false,
        }
    }

    /// The connection was made and the upstream ended it (or broke it) without a response: an
    /// idempotent request may go to the next backend (RFC 9110 §9.2.2), as nginx's
    /// `proxy_next_upstream error` does. A timeout is not this: the app may still be working.
    pub fn is_unanswered(&self) -> bool {
        match self {
            Self::Upstream { source, .. } => !source.is_connect(),
            Self::NoBackend(_) | Self::Uri | Self::ReadTimeout { .. } | Self::WriteTimeout { .. } => false,
        }
    }

    /// The problem the client is answered with.
    pub fn problem(&self) -> Problem {
        let (status, kind) = self.classify();
        let (reason, title, detail) = match (status, kind) {
            (504, _) => (
                "upstream_timeout",
                "Gateway Timeout",
                "The application did not answer in time.",
            ),
            (_, UpstreamErrorKind::NoHealthyBackend) => (
                "upstream_unavailable",
                "Bad Gateway",
                "No healthy application server is available.",
            ),
            (_, _) => (
                "upstream_unreachable",
                "Bad Gateway",
                "The application could not be reached.",
            ),
        };
        Problem {
            status,
            reason,
            title,
            detail: Cow::Borrowed(detail),
        }
    }
}

/// The first error of type `T` in `e`'s chain, looking inside `io::Error`s too (whose
/// `source` skips the error they wrap, and which the TLS connector nests).
fn find<'a, T: std::error::Error + 'static>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a T> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(t) = e.downcast_ref::<T>() {
            return Some(t);
        }
        next = match e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

fn io_kind(e: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    find::<std::io::Error>(e).map(std::io::Error::kind)
}

/// An error and its causes on one line (`a: b: c`), for logs and health-check reasons.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(e) = next {
        let s = e.to_string();
        if !out.ends_with(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        next = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use config::{HostPort, UpstreamConfig, UpstreamTimeouts, UpstreamTls};
    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::body::ReqBody;
    use crate::upstream::UpstreamPool;

    fn pool(addr: SocketAddr, tls: bool, total_connect: Duration) -> UpstreamPool {
        UpstreamPool::build(&UpstreamConfig {
            name: "t".into(),
            addresses: vec![HostPort {
                host: addr.ip().to_string(),
                port: addr.port(),
            }],
            tls: tls.then(|| UpstreamTls {
                sni: "app.test".into(),
                ca_file: None,
                verify: true,
                http2: false,
            }),
            health_check: None,
            timeouts: UpstreamTimeouts {
                connect: Duration::from_secs(2),
                total_connect,
                read: Duration::from_secs(2),
                write: Duration::from_secs(2),
                idle: Duration::from_secs(60),
            },
        })
        .unwrap()
    }

    async fn try_once(pool: &UpstreamPool, addr: SocketAddr) -> ForwardError {
        let req = http::Request::get("/").body(ReqBody::empty()).unwrap();
        crate::forward::forward(pool, req, addr, None, &mut None)
            .await
            .expect_err("must fail")
    }

    /// A listener that accepts and then says nothing (kept open), or closes after reading.
    async fn silent(close_after_read: bool) -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut s, _)) = l.accept().await {
                if close_after_read {
                    tokio::spawn(async move {
                        let mut buf = [0u8; 4096];
                        let _ = s.read(&mut buf).await;
                    });
                } else {
                    held.push(s);
                }
            }
        });
        addr
    }

    #[tokio::test]
    async fn each_upstream_failure_gets_its_status_kind_and_retry_rule() {
        let refused = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let e = try_once(&pool(refused, false, Duration::from_secs(2)), refused).await;
        assert_eq!(e.classify(), (502, UpstreamErrorKind::ConnectRefused), "{e}");
        assert!(e.is_connect() && !e.is_unanswered());
        assert_eq!(e.problem().reason, "upstream_unreachable");

        // TLS to a server that never answers the handshake: TCP+TLS bounded by total_connect.
        let mute = silent(false).await;
        let e = try_once(&pool(mute, true, Duration::from_millis(200)), mute).await;
        assert_eq!(e.classify(), (504, UpstreamErrorKind::ConnectTimeout), "{e}");
        assert!(e.is_connect());
        assert_eq!(e.problem().reason, "upstream_timeout");

        // TLS to a server that closes: the handshake fails.
        let closer = silent(true).await;
        let e = try_once(&pool(closer, true, Duration::from_secs(2)), closer).await;
        assert_eq!(e.classify(), (502, UpstreamErrorKind::Tls), "{e}");
        assert!(e.is_connect());

        // Plain HTTP to a server that reads the request and closes: unanswered.
        let e = try_once(&pool(closer, false, Duration::from_secs(2)), closer).await;
        assert_eq!(e.classify(), (502, UpstreamErrorKind::Protocol), "{e}");
        assert!(e.is_unanswered() && !e.is_connect());

        // Plain HTTP to a server that never answers: read timeout, never retried.
        let mut p = pool(mute, false, Duration::from_secs(2));
        p.timeouts.read = Duration::from_millis(200);
        let e = try_once(&p, mute).await;
        assert_eq!(e.classify(), (504, UpstreamErrorKind::ReadTimeout), "{e}");
        assert!(!e.is_unanswered() && !e.is_connect());

        let e = ForwardError::NoBackend("t".into());
        assert_eq!(e.classify(), (502, UpstreamErrorKind::NoHealthyBackend));
        assert_eq!(e.problem().reason, "upstream_unavailable");
    }

    #[test]
    fn chains_read_as_one_line_without_repeats() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] TcpFailed);
        let e = Outer(TcpFailed(Box::new(std::io::Error::other("refused"))));
        // "TCP connect: refused" already ends with its source's text.
        assert_eq!(chain(&e), "outer: TCP connect: refused");
    }
}
