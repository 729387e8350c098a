//! Why a request got no upstream response, classified once: the status the client gets, the
//! `portcullis_upstream_errors_total` kind, whether another backend may be tried, and the
//! problem the client is answered with.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::Duration;

use access::Problem;
use metrics::UpstreamErrorKind;

use crate::upstream::ConnectTimedOut;

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
                if find::<ConnectTimedOut>(source).is_some()
                    || io_kind(source).is_some_and(|k| k == std::io::ErrorKind::TimedOut)
                {
                    (504, UpstreamErrorKind::ConnectTimeout)
                } else if find::<rustls::Error>(source).is_some() {
                    (502, UpstreamErrorKind::Tls)
                } else {
                    (502, UpstreamErrorKind::ConnectRefused)
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
