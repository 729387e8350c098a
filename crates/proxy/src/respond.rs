//! Responses the gateway writes itself: error classification (once, exhaustively), the
//! problem that goes with each failure, and the one writer of every [`Reply`] — access
//! decisions, sign-in, the gateway's own endpoints and proxy failures alike.

use std::borrow::Cow;

use access::{Problem, Reply};
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType};

use metrics::UpstreamErrorKind;

/// What a failed request turns into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The client went away or broke the connection: nothing can be written.
    ClientGone,
    /// The client sent something we will not process.
    BadRequest(u16),
    /// The upstream could not be reached or answered badly.
    Upstream { status: u16, kind: UpstreamErrorKind },
    /// A status chosen deliberately somewhere in the gateway.
    Status(u16),
    /// A bug or resource failure inside the gateway.
    Internal,
}

impl Failure {
    pub fn classify(e: &Error) -> Self {
        use ErrorType::*;
        if let HTTPStatus(code) = e.etype() {
            return Self::Status(*code);
        }
        match e.esource() {
            ErrorSource::Downstream => match e.etype() {
                ReadError | WriteError | ConnectionClosed => Self::ClientGone,
                ReadTimedout | WriteTimedout => Self::BadRequest(408),
                ConnectTimedout | ConnectRefused | ConnectNoRoute | TLSWantX509Lookup | TLSHandshakeFailure
                | TLSHandshakeTimedout | InvalidCert | HandshakeError | ConnectError | BindError | AcceptError
                | SocketError | ConnectProxyFailure | InvalidHTTPHeader | H1Error | H2Error | H2Downgrade
                | InvalidH2 | HTTPStatus(_) | FileOpenError | FileCreateError | FileReadError | FileWriteError
                | InternalError | UnknownError | Custom(_) | CustomCode(..) => Self::BadRequest(400),
            },
            ErrorSource::Upstream => {
                let (status, kind) = match e.etype() {
                    ConnectTimedout | TLSHandshakeTimedout => (504, UpstreamErrorKind::ConnectTimeout),
                    ReadTimedout => (504, UpstreamErrorKind::ReadTimeout),
                    WriteTimedout => (504, UpstreamErrorKind::WriteTimeout),
                    ConnectRefused | ConnectNoRoute | ConnectError | BindError | SocketError | ConnectProxyFailure => {
                        (502, UpstreamErrorKind::ConnectRefused)
                    }
                    TLSWantX509Lookup | TLSHandshakeFailure | InvalidCert | HandshakeError => {
                        (502, UpstreamErrorKind::Tls)
                    }
                    InvalidHTTPHeader | H1Error | H2Error | H2Downgrade | InvalidH2 | ReadError | WriteError
                    | ConnectionClosed => (502, UpstreamErrorKind::Protocol),
                    Custom(NO_HEALTHY_BACKEND) => (502, UpstreamErrorKind::NoHealthyBackend),
                    AcceptError | HTTPStatus(_) | FileOpenError | FileCreateError | FileReadError | FileWriteError
                    | InternalError | UnknownError | Custom(_) | CustomCode(..) => (502, UpstreamErrorKind::Other),
                };
                Self::Upstream { status, kind }
            }
            ErrorSource::Internal | ErrorSource::Unset => Self::Internal,
        }
    }

    /// The status written to the client; 0 when nothing can be written.
    pub fn status(self) -> u16 {
        match self {
            Self::ClientGone => 0,
            Self::BadRequest(s) | Self::Status(s) => s,
            Self::Upstream { status, .. } => status,
            Self::Internal => 500,
        }
    }
}

/// The `Custom` error type raised when a pool has no healthy backend left to try.
pub const NO_HEALTHY_BACKEND: &str = "no healthy upstream";

/// The problem a failure is answered with.
pub fn problem_for(f: Failure) -> Problem {
    let (reason, title, detail) = match f {
        Failure::Upstream { status: 504, .. } => (
            "upstream_timeout",
            "Gateway Timeout",
            "The application did not answer in time.",
        ),
        Failure::Upstream {
            kind: UpstreamErrorKind::NoHealthyBackend,
            ..
        } => (
            "upstream_unavailable",
            "Bad Gateway",
            "No healthy application server is available.",
        ),
        Failure::Upstream { .. } => (
            "upstream_unreachable",
            "Bad Gateway",
            "The application could not be reached.",
        ),
        Failure::BadRequest(408) => (
            "request_timeout",
            "Request Timeout",
            "The request was not received in time.",
        ),
        Failure::BadRequest(_) => ("bad_request", "Bad Request", "The request could not be understood."),
        Failure::Status(s) => return Problem::for_status(s),
        Failure::Internal | Failure::ClientGone => (
            "internal_error",
            "Internal Server Error",
            "The gateway failed to handle the request.",
        ),
    };
    Problem {
        status: f.status(),
        reason,
        title,
        detail: Cow::Borrowed(detail),
    }
}

/// Writes a reply ([`Reply::render`]: problems become a page for browser navigations and
/// problem+json otherwise).
pub async fn write_reply(session: &mut Session, reply: &Reply) -> pingora::Result<()> {
    let r = reply.render(access::is_navigation(session.req_header().as_ref()));
    if r.close {
        // pingora writes the Connection header from the session's keep-alive state; a header
        // set in the response alone would be overwritten and the client would reuse a closing
        // socket.
        session.set_keepalive(None);
    }
    let mut resp = ResponseHeader::build(r.status, Some(r.headers.len() + 1))?;
    for (k, v) in &r.headers {
        resp.append_header(*k, v.as_str())?;
    }
    resp.insert_header("content-length", r.body.len().to_string())?;
    let head_only = r.body.is_empty() || session.req_header().method == http::Method::HEAD;
    session.write_response_header(Box::new(resp), head_only).await?;
    if !head_only {
        session.write_response_body(Some(Bytes::from(r.body)), true).await?;
    }
    Ok(())
}

/// Writes `problem` as a page or problem+json, keeping the connection open.
pub async fn write_problem(session: &mut Session, problem: Problem) -> pingora::Result<()> {
    write_reply(session, &Reply::problem(problem)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let up = |t| Failure::classify(&Error::new_up(t));
        assert_eq!(up(ErrorType::ConnectRefused).status(), 502);
        assert_eq!(up(ErrorType::ConnectTimedout).status(), 504);
        assert_eq!(up(ErrorType::ReadTimedout).status(), 504);
        assert_eq!(
            up(ErrorType::Custom(NO_HEALTHY_BACKEND)),
            Failure::Upstream {
                status: 502,
                kind: UpstreamErrorKind::NoHealthyBackend
            }
        );
        assert_eq!(
            Failure::classify(&Error::new_down(ErrorType::ConnectionClosed)),
            Failure::ClientGone
        );
        assert_eq!(Failure::classify(&Error::new_down(ErrorType::H1Error)).status(), 400);
        assert_eq!(Failure::classify(&Error::new(ErrorType::HTTPStatus(413))).status(), 413);
    }

    #[test]
    fn pages_escape() {
        assert_eq!(problem_for(Failure::Status(431)).reason, "headers_too_large");
        let p = Problem::new(400, "x", "T", "<script>");
        assert!(p.html().contains("&lt;script&gt;"));
        assert!(p.json().contains("\"status\":400"));
    }
}
