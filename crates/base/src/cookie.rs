//! Reading cookies from `Cookie` header values.

/// The value of cookie `name` among all `Cookie` header values.
pub fn find_cookie<'a>(headers: impl Iterator<Item = &'a str>, name: &str) -> Option<&'a str> {
    headers.flat_map(|h| h.split(';')).find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k.trim() == name).then(|| v.trim().trim_matches('"'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_in_split_headers() {
        let h = ["a=1; portcullis=xyz", "b=2"];
        assert_eq!(find_cookie(h.iter().copied(), "portcullis"), Some("xyz"));
        assert_eq!(find_cookie(h.iter().copied(), "b"), Some("2"));
        assert_eq!(find_cookie(h.iter().copied(), "c"), None);
        assert_eq!(find_cookie(["portcullis-login=1"].iter().copied(), "portcullis"), None);
    }
}
