//! What the gateway answers when it answers a request itself: typed values that only the data
//! plane turns into bytes. Browser navigations get HTML; every other client gets
//! `application/problem+json` (DESIGN.md §2).

pub use base::problem::Problem;
use http::header::{HeaderName, HeaderValue};

/// A response the gateway writes itself.
#[derive(Debug, Clone)]
pub enum Reply {
    /// `problem` as a page for navigations, problem+json otherwise. `close` ends the
    /// connection after it (the request body may not have been read).
    Problem {
        problem: Problem,
        close: bool,
        headers: Vec<(&'static str, String)>,
    },
    /// A redirect with no body.
    Redirect {
        status: u16,
        location: String,
        headers: Vec<(&'static str, String)>,
    },
    /// A body rendered already (landing pages, problem JSON of a landing, the JWKS).
    Body {
        status: u16,
        content_type: &'static str,
        body: String,
    },
}

impl Reply {
    pub fn problem(problem: Problem) -> Self {
        Self::Problem {
            problem,
            close: false,
            headers: Vec::new(),
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            Self::Problem { problem, .. } => problem.status,
            Self::Redirect { status, .. } | Self::Body { status, .. } => *status,
        }
    }

    /// The reason code the decision log shows for this reply.
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            Self::Problem { problem, .. } => Some(problem.reason),
            Self::Redirect { .. } | Self::Body { .. } => None,
        }
    }
}

/// A [`Reply`] as a response: what every data plane writes, so they cannot differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub status: u16,
    /// In order; the data plane adds nothing but framing (`content-length`, `date`).
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    /// End the connection after it (the request body may not have been read).
    pub close: bool,
}

/// What the gateway's own responses always carry.
const NO_STORE: (&str, &str) = ("cache-control", "no-store");
const PAGE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:";

impl Reply {
    /// The response for a request that `navigation` says is a browser navigation: a problem
    /// becomes a page then, problem+json otherwise.
    pub fn render(&self, navigation: bool) -> Rendered {
        let own = |status: u16, content_type: &'static str, body: String, extra: &[(&'static str, String)], close| {
            let mut headers = vec![
                ("content-type", content_type.to_string()),
                (NO_STORE.0, NO_STORE.1.to_string()),
                ("x-content-type-options", "nosniff".to_string()),
            ];
            if content_type.starts_with("text/html") {
                headers.push(("content-security-policy", PAGE_CSP.to_string()));
            }
            headers.extend(extra.iter().cloned());
            Rendered {
                status,
                headers,
                body,
                close,
            }
        };
        match self {
            Self::Problem {
                problem,
                close,
                headers,
            } => {
                let (body, ctype) = if navigation {
                    (problem.html(), "text/html; charset=utf-8")
                } else {
                    (problem.json(), "application/problem+json")
                };
                own(problem.status, ctype, body, headers, *close)
            }
            Self::Redirect {
                status,
                location,
                headers,
            } => {
                let mut all = vec![("location", location.clone()), (NO_STORE.0, NO_STORE.1.to_string())];
                all.extend(headers.iter().cloned());
                Rendered {
                    status: *status,
                    headers: all,
                    body: String::new(),
                    close: false,
                }
            }
            Self::Body {
                status,
                content_type,
                body,
            } => own(*status, content_type, body.clone(), &[], false),
        }
    }
}

/// A top-level browser navigation (as opposed to XHR/fetch or an API client) that may be
/// redirected: a GET or HEAD that [`wants_page`]. Only these ever get sign-in redirects and
/// landing pages.
pub fn is_navigation(req: &http::request::Parts) -> bool {
    (req.method == http::Method::GET || req.method == http::Method::HEAD) && wants_page(req)
}

/// A browser loading a document to show, of any method (a form's POST too): the gateway's own
/// refusals are rendered as pages for it, not as problem+json a person cannot read.
pub fn wants_page(req: &http::request::Parts) -> bool {
    const SEC_FETCH_MODE: HeaderName = HeaderName::from_static("sec-fetch-mode");
    const X_REQUESTED_WITH: HeaderName = HeaderName::from_static("x-requested-with");
    let header = |n: &HeaderName| req.headers.get(n).map(HeaderValue::as_bytes);
    if let Some(mode) = header(&SEC_FETCH_MODE) {
        return mode.eq_ignore_ascii_case(b"navigate");
    }
    if header(&X_REQUESTED_WITH).is_some_and(|v| v.eq_ignore_ascii_case(b"xmlhttprequest")) {
        return false;
    }
    // A media range list; browsers put text/html first on a navigation.
    header(&http::header::ACCEPT).is_some_and(|a| {
        a.split(|&c| c == b',')
            .any(|range| range.trim_ascii_start().starts_with(b"text/html"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_render_with_their_headers() {
        let p = Reply::Problem {
            problem: Problem::new(503, "x", "Unavailable", "<later>"),
            close: true,
            headers: vec![("retry-after", "5".into())],
        };
        let page = p.render(true);
        assert_eq!((page.status, page.close), (503, true));
        assert!(page.body.contains("&lt;later&gt;"));
        let names: Vec<&str> = page.headers.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            names,
            [
                "content-type",
                "cache-control",
                "x-content-type-options",
                "content-security-policy",
                "retry-after"
            ]
        );
        let api = p.render(false);
        assert_eq!(api.headers[0].1, "application/problem+json");
        assert!(api.headers.iter().all(|(k, _)| *k != "content-security-policy"));
        let r = Reply::Redirect {
            status: 302,
            location: "/there".into(),
            headers: vec![("set-cookie", "a=1".into())],
        }
        .render(true);
        assert_eq!(
            (r.status, r.body.as_str(), r.headers[0].1.as_str(), r.headers[2].0),
            (302, "", "/there", "set-cookie")
        );
    }

    #[test]
    fn navigation_detection() {
        let mut r = http::Request::get("/").body(()).unwrap().into_parts().0;
        assert!(!is_navigation(&r));
        r.headers
            .insert("accept", "text/html,application/xhtml+xml".parse().unwrap());
        assert!(is_navigation(&r));
        r.headers.insert("sec-fetch-mode", "cors".parse().unwrap());
        assert!(!is_navigation(&r));
        let mut p = http::Request::post("/").body(()).unwrap().into_parts().0;
        p.headers.insert("accept", "text/html".parse().unwrap());
        assert!(!is_navigation(&p));
        // A form's POST is no redirectable navigation, but its refusal is a page.
        assert!(wants_page(&p));
        p.headers.insert("sec-fetch-mode", "navigate".parse().unwrap());
        assert!(wants_page(&p) && !is_navigation(&p));
        p.headers.insert("sec-fetch-mode", "cors".parse().unwrap());
        assert!(!wants_page(&p));
    }
}
