//! One request as the access decision sees it: read once off the request by the data plane.

use device::identify::CertIdentity;

/// The parts of a request the decision reads. Built once per request by the data plane.
pub struct RequestInfo<'a> {
    /// Method, URI and headers as the client sent them.
    pub parts: &'a http::request::Parts,
    /// The connection is TLS (the client sees `https`).
    pub tls: bool,
    /// A top-level browser navigation ([`crate::is_navigation`]): only these get pages and
    /// redirects.
    pub navigation: bool,
    /// The verified client certificate of the connection, if any.
    pub client_cert: Option<&'a CertIdentity>,
}

impl<'a> RequestInfo<'a> {
    /// `navigation`: [`crate::is_navigation`] of `parts`, which the data plane already knows.
    pub fn new(
        parts: &'a http::request::Parts,
        tls: bool,
        client_cert: Option<&'a CertIdentity>,
        navigation: bool,
    ) -> Self {
        Self {
            parts,
            tls,
            navigation,
            client_cert,
        }
    }

    /// Host the client asked for: `:authority` (HTTP/2, absolute-form) or the `Host` header.
    pub fn host(&self) -> Option<&'a str> {
        host_of(self.parts)
    }

    /// `scheme://host/path?query` of the request as the client sent it.
    pub fn original_url(&self) -> String {
        let here = self.parts.uri.path_and_query().map_or("/", |p| p.as_str());
        format!("{}://{}{here}", self.scheme(), self.host().unwrap_or_default())
    }

    pub fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }
}

/// Host the client asked for: `:authority` (HTTP/2, absolute-form) or the `Host` header. The
/// one implementation the proxy and the access decision share.
pub fn host_of(parts: &http::request::Parts) -> Option<&str> {
    parts
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| parts.headers.get(http::header::HOST).and_then(|v| v.to_str().ok()))
}
