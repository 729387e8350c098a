//! The gateway's error body: `application/problem+json` (RFC 9457) with a stable `reason`
//! code, or the same as a small HTML page for browser navigations. The one builder for the
//! proxy's own answers, the admin API and the Jamf webhooks.

use std::borrow::Cow;

/// A response body in both shapes: a small page, or problem+json.
#[derive(Debug, Clone)]
pub struct Problem {
    pub status: u16,
    /// Stable machine-readable reason code, e.g. `upstream_unreachable`.
    pub reason: &'static str,
    pub title: &'static str,
    pub detail: Cow<'static, str>,
}

impl Problem {
    pub const fn new(status: u16, reason: &'static str, title: &'static str, detail: &'static str) -> Self {
        Self {
            status,
            reason,
            title,
            detail: Cow::Borrowed(detail),
        }
    }

    /// A problem with no more to say than its status (404, 413, 431, …).
    pub fn for_status(status: u16) -> Self {
        let reason = match status {
            404 => "no_route",
            413 => "body_too_large",
            431 => "headers_too_large",
            _ => "error",
        };
        let title = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|c| c.canonical_reason())
            .unwrap_or("Error");
        Self::new(status, reason, title, "")
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

    pub fn html(&self) -> String {
        use crate::html::escape;
        crate::html::page(
            self.title,
            &format!(
                "<p>{detail}</p><p>Reason: <code>{reason}</code></p>",
                detail = escape(&self.detail),
                reason = escape(self.reason),
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_shapes_carry_the_reason_and_escape() {
        let p = Problem::new(400, "bad_thing", "Bad Request", "<script>");
        assert!(p.html().contains("&lt;script&gt;"));
        let v: serde_json::Value = serde_json::from_str(&p.json()).unwrap();
        assert_eq!(v["type"], "urn:portcullis:problem:bad_thing");
        assert_eq!(v["status"], 400);
        assert_eq!(v["reason"], "bad_thing");
        assert_eq!(v["detail"], "<script>");
        assert_eq!(Problem::for_status(431).reason, "headers_too_large");
        assert_eq!(Problem::for_status(431).title, "Request Header Fields Too Large");
    }
}
