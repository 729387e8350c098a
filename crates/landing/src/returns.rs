//! Signed return URLs: where a user goes back to after a custom landing page. The gateway
//! signs the URL it hands out (HMAC-SHA256) and, when the user comes back through
//! `/.portcullis/continue`, accepts only a URL it signed, with an http(s) scheme and a host it
//! serves or the admin allowed: no open redirect.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;

/// Signs and checks return URLs.
pub struct ReturnSigner {
    key: hmac::Key,
}

impl ReturnSigner {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    pub fn sign(&self, url: &str) -> String {
        URL_SAFE_NO_PAD.encode(hmac::sign(&self.key, url.as_bytes()).as_ref())
    }

    /// The URL to redirect to, if `url` carries a valid signature and points at an allowed host.
    pub fn verify<'a>(&self, url: &'a str, sig: &str, host_allowed: impl Fn(&str) -> bool) -> Option<&'a str> {
        let raw = URL_SAFE_NO_PAD.decode(sig).ok()?;
        hmac::verify(&self.key, url.as_bytes(), &raw).ok()?;
        let parsed = url::Url::parse(url).ok()?;
        if !matches!(parsed.scheme(), "https" | "http") || !parsed.username().is_empty() || parsed.password().is_some()
        {
            return None;
        }
        let host = parsed.host_str()?.to_ascii_lowercase();
        host_allowed(&host).then_some(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_signed_urls_to_allowed_hosts() {
        let s = ReturnSigner::new(b"k");
        let allowed = |h: &str| h == "app.example.com";
        let good = "https://app.example.com/a?b=1";
        assert_eq!(s.verify(good, &s.sign(good), allowed), Some(good));
        assert_eq!(s.verify(good, "forged", allowed), None);
        for hostile in [
            "https://evil.test/",
            "//evil.test/x",
            "javascript:alert(1)",
            "https://user@app.example.com/",
        ] {
            assert_eq!(s.verify(hostile, &s.sign(hostile), allowed), None, "{hostile}");
        }
        assert_eq!(ReturnSigner::new(b"other").verify(good, &s.sign(good), allowed), None);
    }
}
