//! The upstream request's headers as a plain `http::HeaderMap`, for the header hygiene the data
//! planes share (`access::upstream_headers`). Hop-by-hop fields are removed before this by
//! pingora 0.9's standard upstream request policy (see the tests in `tests/it/proxy.rs`).

use pingora::http::RequestHeader;

/// Runs `edit` on the parts (method, URI, headers) of the request sent upstream, without
/// pingora's case-preserving header map. pingora keeps that map beside `http::HeaderMap` and does
/// every insert and removal twice, with a name parse each: for the gateway's ten added headers
/// that was about a fifth of its own CPU per request (docs/benchmarks.md, "floor"). Names are
/// case-insensitive (RFC 9110 §5.1); upstreams then see them as they already do for every
/// HTTP/2 client: standard names title-cased, the others lower case. The request-target's bytes
/// and the end-of-stream flag are kept.
pub fn edit_parts(req: &mut RequestHeader, edit: impl FnOnce(&mut http::request::Parts)) -> pingora::Result<()> {
    let raw_path = req.raw_path().to_vec();
    let end_stream = req.send_end_stream();
    let placeholder = RequestHeader::build_no_case(http::Method::GET, b"/", Some(0))?;
    let mut parts: http::request::Parts = std::mem::replace(req, placeholder).into();
    edit(&mut parts);
    *req = RequestHeader::from(parts);
    req.set_raw_path(&raw_path)?;
    if let Some(end) = end_stream {
        req.set_send_end_stream(end);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_case_is_dropped_and_the_target_kept() {
        let mut r = RequestHeader::build("GET", b"/a%2Fb?x=%C3%A9&y", None).unwrap();
        r.append_header("X-Custom-Thing", "1").unwrap();
        r.append_header("X-Custom-Thing", "2").unwrap();
        r.append_header("Content-Type", "text/plain").unwrap();
        assert!(r.has_case());
        edit_parts(&mut r, |p| {
            p.headers
                .insert("x-portcullis-user", http::HeaderValue::from_static("alice"));
        })
        .unwrap();
        assert!(!r.has_case());
        assert_eq!(r.raw_path(), b"/a%2Fb?x=%C3%A9&y");
        let mut wire = Vec::new();
        r.header_to_h1_wire(&mut wire);
        assert_eq!(
            String::from_utf8(wire).unwrap(),
            "x-custom-thing: 1\r\nx-custom-thing: 2\r\nContent-Type: text/plain\r\nx-portcullis-user: alice\r\n",
            "every value kept, in order; standard names title-cased; the edit applied"
        );
    }
}
