//! What the gateway answers when it answers a request itself: typed values that only the data
//! plane turns into bytes. Browser navigations get HTML; every other client gets
//! `application/problem+json` (DESIGN.md §2).

pub use base::problem::Problem;

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

/// A top-level browser navigation (as opposed to XHR/fetch or an API client): only these
/// ever get HTML pages or redirects.
pub fn is_navigation(req: &http::request::Parts) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
