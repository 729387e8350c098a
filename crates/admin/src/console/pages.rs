//! The console's pages: minijinja templates embedded in the binary (auto-escaped), rendered
//! with the session's name, role and CSRF token, and sent with a Content-Security-Policy that
//! allows only this origin's stylesheet and script — no inline code, no other origin.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use minijinja::Environment;
use serde_json::{json, Value};

use super::session::Session;

const TEMPLATES: [(&str, &str); 15] = [
    ("reloaded.html", include_str!("templates/reloaded.html")),
    ("device.html", include_str!("templates/device.html")),
    ("continue.html", include_str!("templates/continue.html")),
    ("layout.html", include_str!("templates/layout.html")),
    ("sign_in.html", include_str!("templates/sign_in.html")),
    ("message.html", include_str!("templates/message.html")),
    ("overview.html", include_str!("templates/overview.html")),
    ("settings.html", include_str!("templates/settings.html")),
    ("settings_edit.html", include_str!("templates/settings_edit.html")),
    ("test_report.html", include_str!("templates/test_report.html")),
    ("job.html", include_str!("templates/job.html")),
    ("computers.html", include_str!("templates/computers.html")),
    ("computer.html", include_str!("templates/computer.html")),
    ("what_if.html", include_str!("templates/what_if.html")),
    ("audit.html", include_str!("templates/audit.html")),
];

const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub struct Pages {
    env: Environment<'static>,
    /// The sign-in page offers "Sign in with Microsoft".
    entra: bool,
}

impl Pages {
    pub fn new(entra: bool) -> Self {
        let mut env = Environment::new();
        for (name, text) in TEMPLATES {
            // Built-in templates: a syntax error is caught by the tests, never by a user.
            if let Err(e) = env.add_template(name, text) {
                tracing::error!(template = name, error = %e, "console template does not parse");
            }
        }
        env.add_function("asset", |name: String| super::assets::url(&name));
        env.add_filter("when", when);
        env.add_filter("ago", ago);
        env.add_filter("duration", duration);
        Self { env, entra }
    }

    /// Page `name` for `s`'s caller, with `ctx` (an object) and what every page needs.
    pub fn render(&self, name: &str, s: &Session, mut ctx: Value) -> Response {
        ctx["me"] = json!({ "name": s.caller.name, "admin": s.caller.role == crate::api::Role::Admin, "via": s.via });
        ctx["csrf"] = json!(s.csrf);
        self.html(StatusCode::OK, name, ctx)
    }

    /// A page that only says something (an error, a refusal), in the layout when signed in.
    pub fn message(&self, status: StatusCode, title: &str, text: &str, s: Option<&Session>) -> Response {
        let ctx = json!({ "title": title, "text": text, "status": status.as_u16() });
        let mut r = match s {
            Some(s) => self.render("message.html", s, ctx),
            None => self.html(status, "message.html", ctx),
        };
        *r.status_mut() = status;
        r
    }

    pub fn sign_in(&self, status: StatusCode, next: &str, error: Option<&str>) -> Response {
        self.html(
            status,
            "sign_in.html",
            json!({ "next": next, "error": error, "entra": self.entra }),
        )
    }

    /// The sign-in page after signing out, saying so.
    pub fn signed_out(&self) -> Response {
        let ctx = json!({ "next": "/console/", "error": null, "entra": self.entra, "signed_out": true });
        self.html(StatusCode::OK, "sign_in.html", ctx)
    }

    /// "Signed in": a page of ours that moves the browser on to `next` (a console path).
    pub fn continue_to(&self, next: &str) -> Response {
        self.html(StatusCode::OK, "continue.html", json!({ "next": next }))
    }

    fn html(&self, status: StatusCode, name: &str, ctx: Value) -> Response {
        let body = match self.env.get_template(name).and_then(|t| t.render(&ctx)) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(template = name, error = %e, "console page failed to render");
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "The page failed to render; see the log.",
                )
                    .into_response();
            }
        };
        let mut r = (status, body).into_response();
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        r
    }
}

/// Unix seconds as `2026-12-01 21:30 UTC`.
fn when(secs: Option<i64>) -> String {
    match secs.and_then(base::time::rfc3339) {
        Some(t) => format!("{} {} UTC", &t[..10], &t[11..16]),
        None => "never".into(),
    }
}

/// Unix seconds as "3 min ago".
fn ago(secs: Option<i64>) -> String {
    match secs {
        Some(t) => format!("{} ago", duration(Some(base::time::unix_now_i64() - t))),
        None => "never".into(),
    }
}

/// Seconds as "45 s", "3 min", "2 h 5 min", "4 days".
fn duration(secs: Option<i64>) -> String {
    let Some(s) = secs else { return "—".into() };
    let s = s.max(0);
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        3600..=86_399 => match (s % 3600) / 60 {
            0 => format!("{} h", s / 3600),
            m => format!("{} h {m} min", s / 3600),
        },
        _ => format!("{} days", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Caller, Role};

    fn session(role: Role) -> Session {
        Session {
            caller: Caller {
                role,
                name: "admin-token".into(),
            },
            csrf: "csrf-token".into(),
            via: "token".into(),
            expires_at: 0,
            flash: None,
        }
    }

    #[test]
    fn every_template_parses_and_pages_carry_the_policy() {
        let p = Pages::new(true);
        for (name, _) in TEMPLATES {
            assert!(p.env.get_template(name).is_ok(), "{name}");
        }
        let r = p.message(
            StatusCode::NOT_FOUND,
            "Not found",
            "<script>x</script>",
            Some(&session(Role::Reader)),
        );
        assert_eq!(r.status(), 404);
        assert_eq!(r.headers()[header::CONTENT_SECURITY_POLICY], CSP);
        assert!(!CSP.contains("unsafe-inline"));
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(duration(Some(42)), "42 s");
        assert_eq!(duration(Some(180)), "3 min");
        assert_eq!(duration(Some(7500)), "2 h 5 min");
        assert_eq!(duration(Some(7200)), "2 h");
        assert_eq!(duration(Some(4 * 86_400 + 5)), "4 days");
        assert_eq!(duration(None), "—");
        assert_eq!(when(Some(1_764_579_600)), "2025-12-01 09:00 UTC");
        assert_eq!(when(None), "never");
    }
}
