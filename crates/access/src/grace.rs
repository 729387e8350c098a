//! The grace-period notice: a user whose device Intune still counts as compliant only until a
//! deadline is told so, on a browser navigation, once per browser session (`routes[].grace_notice`,
//! on by default) — a page with the deadline and a Continue link, which sets a session cookie
//! and goes back to the page asked for. API clients are never interrupted; the app always gets
//! `X-Portcullis-Grace-Ends`.

use base::cookie::find_cookie;
use base::html::escape;
use identity::oidc::safe_return_path;
use policy::PostureState;

use crate::{Problem, Reply, RequestInfo, Verdict};

/// Where the notice's Continue link goes.
pub const ACK_PATH: &str = "/.portcullis/grace_ack";
/// Holds the deadline the user was told about, for the browser session (no `Max-Age`): a new
/// grace period, with another deadline, is told again.
pub const ACK_COOKIE: &str = "__Host-portcullis-grace";

/// The notice for this request, when it is a navigation from a device in its grace period whose
/// deadline the user was not shown yet in this browser session.
pub fn notice(req: &RequestInfo<'_>, v: &Verdict) -> Option<Reply> {
    let until = deadline(v)?;
    if !req.navigation || acknowledged(&req.parts.headers, until) {
        return None;
    }
    let here = req.parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let back = safe_return_path(here).unwrap_or("/");
    let continue_to = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("return_to", back)
        .append_pair("until", &until.to_string())
        .finish();
    let deadline = deadline_text(until);
    let body = format!(
        "<p>Your device does not meet your organisation's security requirements. You can keep \
         working until <strong>{deadline}</strong>; after that, this application will be blocked on \
         this device until it is fixed.</p><p>Self Service or Company Portal shows what needs \
         attention.</p><p><a class=\"action\" href=\"{ACK_PATH}?{query}\">Continue</a></p>",
        deadline = escape(&deadline),
        query = escape(&continue_to),
    );
    Some(Reply::Body {
        status: 200,
        content_type: "text/html; charset=utf-8",
        body: base::html::page("Your device needs attention soon", &body),
    })
}

/// The end of the grace period the decision's device is in, if it is in one.
pub fn deadline(v: &Verdict) -> Option<u64> {
    match v.posture.as_ref()?.state {
        PostureState::InGrace { until } => Some(until),
        PostureState::Compliant
        | PostureState::NonCompliant { .. }
        | PostureState::NotRegistered { .. }
        | PostureState::Disabled
        | PostureState::Unsupported { .. }
        | PostureState::Unknown => None,
    }
}

/// `/.portcullis/grace_ack?return_to=PATH&until=SECS`: remembers, for the browser session,
/// that the user saw the notice for this deadline, and goes back (only to a path on this host).
pub fn ack(parts: &http::request::Parts) -> Reply {
    let params: Vec<(String, String)> = parts
        .uri
        .query()
        .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let (Some(back), Some(until)) = (
        get("return_to").and_then(safe_return_path),
        get("until").and_then(|u| u.parse::<u64>().ok()),
    ) else {
        return Reply::problem(Problem::new(
            400,
            "bad_request",
            "Bad Request",
            "The link needs return_to (a path on this site) and until (Unix seconds).",
        ));
    };
    Reply::Redirect {
        status: 303,
        location: back.to_string(),
        headers: vec![(
            "set-cookie",
            format!("{ACK_COOKIE}={until}; Path=/; HttpOnly; Secure; SameSite=Lax"),
        )],
    }
}

fn acknowledged(h: &http::HeaderMap, until: u64) -> bool {
    let cookies = h
        .get_all(http::header::COOKIE)
        .into_iter()
        .filter_map(|v| v.to_str().ok());
    find_cookie(cookies, ACK_COOKIE).is_some_and(|v| v == until.to_string())
}

/// "3 December 2026, 10:00 UTC".
fn deadline_text(until: u64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let Some(t) = i64::try_from(until).ok().and_then(base::time::rfc3339) else {
        return "the deadline".into();
    };
    // RFC 3339: YYYY-MM-DDTHH:MM:SSZ.
    let (date, time) = t.split_once('T').unwrap_or((&t, ""));
    let mut parts = date.split('-');
    let (Some(y), Some(m), Some(d)) = (parts.next(), parts.next(), parts.next()) else {
        return t;
    };
    let month = m
        .parse::<usize>()
        .ok()
        .and_then(|m| MONTHS.get(m.wrapping_sub(1)))
        .unwrap_or(&"");
    let day = d.trim_start_matches('0');
    format!("{day} {month} {y}, {} UTC", time.get(..5).unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_read_as_dates() {
        assert_eq!(deadline_text(1_800_000_000), "15 January 2027, 08:00 UTC");
    }
}
