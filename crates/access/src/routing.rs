//! Request routing: `Host` + path prefix → route. Exact hosts are tried first, then wildcard
//! domains (longest first), then the host-less default routes; inside each, the longest
//! matching prefix wins. Prefixes match whole path segments: `/app` matches `/app` and
//! `/app/x`, never `/apple`. Immutable once built.

use std::collections::HashMap;
use std::sync::Arc;

use config::HostPattern;

/// Something that can be routed to; kept generic so the table can be tested on its own.
pub trait Prefixed {
    fn path_prefix(&self) -> &str;
}

/// The routing table.
#[derive(Debug)]
pub struct Router<R> {
    exact: HashMap<String, Vec<Arc<R>>>,
    /// `(".example.com", routes)`, longest suffix first.
    suffix: Vec<(String, Vec<Arc<R>>)>,
    any: Vec<Arc<R>>,
}

impl<R: Prefixed> Router<R> {
    pub fn new(routes: impl IntoIterator<Item = (HostPattern, Arc<R>)>) -> Self {
        let mut exact: HashMap<String, Vec<Arc<R>>> = HashMap::new();
        let mut suffix: Vec<(String, Vec<Arc<R>>)> = Vec::new();
        let mut any = Vec::new();
        for (host, r) in routes {
            match host {
                HostPattern::Any => any.push(r),
                HostPattern::Exact(h) => exact.entry(h).or_default().push(r),
                HostPattern::Suffix(s) => match suffix.iter_mut().find(|(k, _)| *k == s) {
                    Some((_, v)) => v.push(r),
                    None => suffix.push((s, vec![r])),
                },
            }
        }
        let by_len = |v: &mut Vec<Arc<R>>| v.sort_by_key(|r| std::cmp::Reverse(r.path_prefix().len()));
        exact.values_mut().for_each(by_len);
        suffix.iter_mut().for_each(|(_, v)| by_len(v));
        by_len(&mut any);
        suffix.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        Self { exact, suffix, any }
    }

    /// Whether some route answers for `host` (lower case, no port).
    pub fn serves(&self, host: &str) -> bool {
        !self.any.is_empty()
            || self.exact.contains_key(host)
            || self
                .suffix
                .iter()
                .any(|(s, _)| host.len() > s.len() && host.ends_with(s.as_str()))
    }

    /// Every route (for look-ups by name).
    pub fn all(&self) -> impl Iterator<Item = &Arc<R>> {
        self.exact
            .values()
            .flatten()
            .chain(self.suffix.iter().flat_map(|(_, v)| v))
            .chain(&self.any)
    }

    /// `host` must be lower case without a port (see [`normalize_host`]).
    pub fn find(&self, host: &str, path: &str) -> Option<&Arc<R>> {
        if let Some(r) = self.exact.get(host).and_then(|v| first_match(v, path)) {
            return Some(r);
        }
        for (s, v) in &self.suffix {
            if host.len() > s.len() && host.ends_with(s.as_str()) {
                if let Some(r) = first_match(v, path) {
                    return Some(r);
                }
            }
        }
        first_match(&self.any, path)
    }
}

fn first_match<'a, R: Prefixed>(routes: &'a [Arc<R>], path: &str) -> Option<&'a Arc<R>> {
    routes.iter().find(|r| prefix_matches(r.path_prefix(), path))
}

/// Whether a request path is safe to route by prefix. Routing matches the path as sent, and the
/// app (or an ingress in front, which forwards its normalised path) may normalise it
/// afterwards: `/status/../admin` would match an open `/status` route and reach `/admin`
/// unchecked, and so would `/%61dmin` or `//admin` a route for `/admin`'s neighbours. So dot
/// segments, encoded or raw backslashes and slashes inside a segment, percent-encoded
/// unreserved characters (RFC 3986 §2.3: never to be encoded, always decoded by normalisers)
/// and empty segments are refused, not rewritten.
pub fn path_is_safe(path: &str) -> bool {
    // One pass over the bytes, no copy: this runs on every request.
    let b = path.as_bytes();
    if b.contains(&b'\\') || b.windows(2).any(|w| w == b"//") {
        return false;
    }
    let encoded = |i: usize, hi: u8, lo: u8| {
        b.get(i + 1) == Some(&hi) && b.get(i + 2).is_some_and(|c| c.eq_ignore_ascii_case(&lo))
    };
    let unreserved = |i: usize| {
        let hex = |j: usize| b.get(j).and_then(|c| (*c as char).to_digit(16));
        match (hex(i + 1), hex(i + 2)) {
            (Some(hi), Some(lo)) => {
                let c = (hi * 16 + lo) as u8;
                c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
            }
            (None, _) | (_, None) => false,
        }
    };
    if (0..b.len()).any(|i| b[i] == b'%' && (encoded(i, b'2', b'f') || encoded(i, b'5', b'c') || unreserved(i))) {
        return false;
    }
    b.split(|&c| c == b'/').all(|seg| !is_dot_segment(seg))
}

/// `.` or `..`, each dot possibly sent as `%2e` (any case).
fn is_dot_segment(mut seg: &[u8]) -> bool {
    let mut dots = 0;
    while !seg.is_empty() {
        seg = match seg {
            [b'.', rest @ ..] => rest,
            [b'%', b'2', e, rest @ ..] if e.eq_ignore_ascii_case(&b'e') => rest,
            _ => return false,
        };
        dots += 1;
    }
    dots == 1 || dots == 2
}

/// Segment-aware prefix match.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    path.starts_with(prefix)
        && (prefix.ends_with('/') || path.len() == prefix.len() || path.as_bytes()[prefix.len()] == b'/')
}

/// Lower-cases a `Host`/`:authority` value and drops its port; `None` if it is not a
/// plausible host.
pub fn normalize_host(raw: &str) -> Option<std::borrow::Cow<'_, str>> {
    let raw = raw.trim();
    let host = if let Some(rest) = raw.strip_prefix('[') {
        // [v6]:port
        let end = rest.find(']')?;
        &raw[..end + 2]
    } else {
        match raw.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => raw,
        }
    };
    let host = host.trim_end_matches('.');
    if host.is_empty()
        || host
            .bytes()
            .any(|b| b.is_ascii_control() || b == b' ' || b == b'/' || b == b'@')
    {
        return None;
    }
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Some(std::borrow::Cow::Owned(host.to_ascii_lowercase()))
    } else {
        Some(std::borrow::Cow::Borrowed(host))
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn dot_segments_and_encoded_separators_are_unsafe() {
        for ok in [
            "/",
            "/a/b",
            "/a.b/c..d/",
            "/.well-known/x",
            "/a/...",
            "/a%20b",
            "/a%3Ab",
            "/caf%C3%A9",
        ] {
            assert!(path_is_safe(ok), "{ok}");
        }
        for bad in [
            "/status/../admin",
            "/status/..",
            "/./admin",
            "/status/%2e%2e/admin",
            "/status/%2E./admin",
            "/status/.%2e",
            "/status%2f..%2fadmin",
            "/status%2Fadmin",
            "/status\\..\\admin",
            "/status/%5c../admin",
            // What a normaliser turns into another route's path.
            "/%61dmin",
            "/adm%69n",
            "/%2e%2e%2e",
            "/a%7Eb",
            "//admin",
            "/status//admin",
        ] {
            assert!(!path_is_safe(bad), "{bad}");
        }
    }

    use super::*;

    /// The rule as first written (lower-case copy, substring search, per-segment decoding):
    /// the one-pass version must agree with it on every path over the characters that matter.
    fn reference(path: &str) -> bool {
        if path.contains('\\') || path.contains("//") {
            return false;
        }
        let lower = path.to_ascii_lowercase();
        if lower.contains("%2f") || lower.contains("%5c") {
            return false;
        }
        // %XX of an unreserved character (over this alphabet: `%2e`, `%5f`, `%5F`... and `%2E`).
        let bytes = lower.as_bytes();
        for i in 0..bytes.len() {
            if bytes[i] == b'%' && i + 2 < bytes.len() {
                if let Ok(c) = u8::from_str_radix(&lower[i + 1..i + 3], 16) {
                    if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
                        return false;
                    }
                }
            }
        }
        lower.split('/').all(|seg| {
            let seg = seg.replace("%2e", ".");
            seg != "." && seg != ".."
        })
    }

    #[test]
    fn the_one_pass_check_agrees_with_the_reference_rule_on_every_short_path() {
        const ALPHABET: &[u8] = b"/.%2eEfF5cCx\\";
        let mut path = Vec::new();
        for len in 0..=5u32 {
            for mut n in 0..ALPHABET.len().pow(len) {
                path.clear();
                for _ in 0..len {
                    path.push(ALPHABET[n % ALPHABET.len()]);
                    n /= ALPHABET.len();
                }
                let p = std::str::from_utf8(&path).unwrap();
                assert_eq!(path_is_safe(p), reference(p), "{p:?}");
            }
        }
    }

    #[derive(Debug)]
    struct R(&'static str, &'static str);
    impl Prefixed for R {
        fn path_prefix(&self) -> &str {
            self.1
        }
    }

    fn router() -> Router<R> {
        Router::new([
            (
                HostPattern::Exact("app.example.com".into()),
                Arc::new(R("app-root", "/")),
            ),
            (
                HostPattern::Exact("app.example.com".into()),
                Arc::new(R("app-api", "/api")),
            ),
            (
                HostPattern::Exact("app.example.com".into()),
                Arc::new(R("app-api-v2", "/api/v2/")),
            ),
            (HostPattern::Suffix(".example.com".into()), Arc::new(R("wild", "/"))),
            (
                HostPattern::Suffix(".eu.example.com".into()),
                Arc::new(R("wild-eu", "/")),
            ),
            (
                HostPattern::Exact("only-admin.example.com".into()),
                Arc::new(R("admin", "/admin")),
            ),
            (HostPattern::Any, Arc::new(R("default", "/"))),
        ])
    }

    fn name(r: &Router<R>, host: &str, path: &str) -> Option<&'static str> {
        r.find(host, path).map(|r| r.0)
    }

    #[test]
    fn longest_prefix_and_host_order() {
        let r = router();
        assert_eq!(name(&r, "app.example.com", "/"), Some("app-root"));
        assert_eq!(name(&r, "app.example.com", "/api"), Some("app-api"));
        assert_eq!(name(&r, "app.example.com", "/api/x"), Some("app-api"));
        assert_eq!(name(&r, "app.example.com", "/apix"), Some("app-root"));
        assert_eq!(name(&r, "app.example.com", "/api/v2/users"), Some("app-api-v2"));
        assert_eq!(name(&r, "x.example.com", "/"), Some("wild"));
        assert_eq!(name(&r, "a.b.eu.example.com", "/"), Some("wild-eu"));
        assert_eq!(name(&r, "example.com", "/"), Some("default"));
        // An exact host whose prefixes do not match falls through to wildcards.
        assert_eq!(name(&r, "only-admin.example.com", "/other"), Some("wild"));
        assert_eq!(name(&r, "other.org", "/z"), Some("default"));
    }

    #[test]
    fn no_default_route() {
        let r = Router::new([(HostPattern::Exact("a".into()), Arc::new(R("a", "/x")))]);
        assert!(r.find("a", "/y").is_none());
        assert!(r.find("b", "/x").is_none());
    }

    #[test]
    fn hosts_are_normalized() {
        assert_eq!(normalize_host("App.Example.COM:8443").unwrap(), "app.example.com");
        assert_eq!(normalize_host("[::1]:8080").unwrap(), "[::1]");
        assert_eq!(normalize_host("example.com.").unwrap(), "example.com");
        assert!(normalize_host("").is_none());
        assert!(normalize_host("a b").is_none());
        assert!(normalize_host("user@host").is_none());
    }
}
