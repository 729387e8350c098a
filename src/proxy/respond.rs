//! Responses the gateway writes itself: error classification (once, exhaustively) and the
//! small HTML page or `application/problem+json` body that goes with it. Browser navigations
//! get HTML; every other client gets problem+json (DESIGN.md §2).

use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType};

use crate::metrics::UpstreamErrorKind;

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

/// A response body in both shapes.
#[derive(Debug, Clone)]
pub struct Problem<'a> {
    pub status: u16,
    /// Stable machine-readable reason code, e.g. `upstream_unreachable`.
    pub reason: &'static str,
    pub title: &'static str,
    pub detail: &'a str,
}

impl<'a> Problem<'a> {
    pub fn for_failure(f: Failure) -> Problem<'static> {
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
            Failure::Status(s) => (status_reason(s), status_title(s), ""),
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
            detail,
        }
    }

    pub fn json(&self) -> String {
        serde_json::json!({
            "type": format!("urn:portcullis:problem:{}", self.reason),
            "title": self.title,
            "status": self.status,
            "reason": self.reason,
            "detail": self.detail,
        })
        .to_string()
    }

    fn html(&self) -> String {
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{status} {title}</title><style>body{{font-family:system-ui,sans-serif;max-width:40rem;\
             margin:3rem auto;padding:0 1rem;line-height:1.5}}code{{background:#eee;padding:0 .25rem}}</style>\
             </head><body><main><h1>{title}</h1><p>{detail}</p><p>Reason: <code>{reason}</code></p></main></body></html>",
            status = self.status,
            title = escape(self.title),
            detail = escape(self.detail),
            reason = escape(self.reason),
        )
    }
}

fn status_reason(s: u16) -> &'static str {
    match s {
        404 => "no_route",
        413 => "body_too_large",
        431 => "headers_too_large",
        _ => "error",
    }
}

fn status_title(s: u16) -> &'static str {
    http::StatusCode::from_u16(s)
        .ok()
        .and_then(|c| c.canonical_reason())
        .unwrap_or("Error")
}

/// HTML-escapes text placed in a page.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A top-level browser navigation (as opposed to XHR/fetch or an API client): only these
/// ever get HTML pages or redirects.
pub fn is_navigation(req: &RequestHeader) -> bool {
    if req.method != http::Method::GET && req.method != http::Method::HEAD {
        return false;
    }
    let header = |n: &str| req.headers.get(n).and_then(|v| v.to_str().ok());
    if let Some(mode) = header("sec-fetch-mode") {
        return mode.eq_ignore_ascii_case("navigate");
    }
    if header("x-requested-with").is_some_and(|v| v.eq_ignore_ascii_case("xmlhttprequest")) {
        return false;
    }
    header("accept").is_some_and(|a| a.contains("text/html"))
}

/// Writes `problem` as a page or problem+json, whichever the client wants.
pub async fn write_problem(session: &mut Session, problem: &Problem<'_>, keepalive: bool) -> pingora::Result<()> {
    write_problem_with(session, problem, keepalive, &[]).await
}

/// Like [`write_problem`], with extra response headers (`WWW-Authenticate`, `Set-Cookie`).
pub async fn write_problem_with(
    session: &mut Session,
    problem: &Problem<'_>,
    keepalive: bool,
    extra: &[(&'static str, String)],
) -> pingora::Result<()> {
    let html = is_navigation(session.req_header());
    let (body, ctype) = if html {
        (problem.html(), "text/html; charset=utf-8")
    } else {
        (problem.json(), "application/problem+json")
    };
    if !keepalive {
        // pingora writes the Connection header from the session's keep-alive state; a header
        // set in the response alone would be overwritten and the client would reuse a closing
        // socket.
        session.set_keepalive(None);
    }
    write_response(session, problem.status, ctype, body, html, extra).await
}

/// A complete response with a body the caller rendered (landing pages, problem JSON).
pub async fn write_body(
    session: &mut Session,
    status: u16,
    content_type: &'static str,
    body: String,
    html: bool,
) -> pingora::Result<()> {
    write_response(session, status, content_type, body, html, &[]).await
}

async fn write_response(
    session: &mut Session,
    status: u16,
    content_type: &'static str,
    body: String,
    html: bool,
    extra: &[(&'static str, String)],
) -> pingora::Result<()> {
    let mut resp = ResponseHeader::build(status, Some(6 + extra.len()))?;
    resp.insert_header("content-type", content_type)?;
    resp.insert_header("content-length", body.len().to_string())?;
    resp.insert_header("cache-control", "no-store")?;
    resp.insert_header("x-content-type-options", "nosniff")?;
    if html {
        resp.insert_header(
            "content-security-policy",
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
        )?;
    }
    for (k, v) in extra {
        resp.append_header(*k, v.as_str())?;
    }
    let head_only = session.req_header().method == http::Method::HEAD;
    session.write_response_header(Box::new(resp), head_only).await?;
    if !head_only {
        session.write_response_body(Some(Bytes::from(body)), true).await?;
    }
    Ok(())
}

/// A redirect with no body.
pub async fn write_redirect(
    session: &mut Session,
    status: u16,
    location: &str,
    extra: &[(&'static str, String)],
) -> pingora::Result<()> {
    let mut resp = ResponseHeader::build(status, Some(4 + extra.len()))?;
    resp.insert_header("location", location)?;
    resp.insert_header("content-length", "0")?;
    resp.insert_header("cache-control", "no-store")?;
    for (k, v) in extra {
        resp.append_header(*k, v.as_str())?;
    }
    session.write_response_header(Box::new(resp), true).await
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
    fn navigation_detection() {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        assert!(!is_navigation(&r));
        r.insert_header("accept", "text/html,application/xhtml+xml").unwrap();
        assert!(is_navigation(&r));
        r.insert_header("sec-fetch-mode", "cors").unwrap();
        assert!(!is_navigation(&r));
        let mut p = RequestHeader::build("POST", b"/", None).unwrap();
        p.insert_header("accept", "text/html").unwrap();
        assert!(!is_navigation(&p));
    }

    #[test]
    fn pages_escape() {
        let p = Problem {
            status: 400,
            reason: "x",
            title: "T",
            detail: "<script>",
        };
        assert!(p.html().contains("&lt;script&gt;"));
        assert!(p.json().contains("\"status\":400"));
    }
}
