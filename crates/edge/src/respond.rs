//! The gateway's own responses on hyper: a rendered reply (`access::Reply::render`, the same
//! for every data plane) as a `Response`.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderName, HeaderValue, CONNECTION};
use hyper::Response;

/// `rendered` as a response; `head`: the request was HEAD (headers only, the length kept).
/// A header the reply could not make valid is left out, logged (replies build their values
/// from the gateway's own text, so this does not happen).
pub fn response(rendered: access::Rendered, head: bool) -> Response<Full<Bytes>> {
    let status = hyper::StatusCode::from_u16(rendered.status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    let length = rendered.body.len();
    let body = if head { Bytes::new() } else { Bytes::from(rendered.body) };
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    for (k, v) in rendered.headers {
        match HeaderValue::try_from(v) {
            Ok(v) => {
                h.append(HeaderName::from_static(k), v);
            }
            Err(_) => tracing::warn!(header = k, "a reply header is not a valid value; left out"),
        }
    }
    h.insert(hyper::header::CONTENT_LENGTH, HeaderValue::from(length));
    if rendered.close {
        h.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn a_problem_page_and_a_head_request() {
        let reply = access::Reply::Problem {
            problem: access::Problem::new(503, "x", "Unavailable", "later"),
            close: true,
            headers: vec![("retry-after", "5".into())],
        };
        let r = response(reply.render(true), false);
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "5");
        assert_eq!(r.headers()["connection"], "close");
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
        let len: usize = r.headers()["content-length"].to_str().unwrap().parse().unwrap();
        let body = r.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len(), len);
        let h = response(reply.render(false), true);
        assert!(h.headers()["content-length"] != "0", "HEAD keeps the length");
        assert!(h.into_body().collect().await.unwrap().to_bytes().is_empty());
    }
}
