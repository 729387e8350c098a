//! The identity headers an allowed request carries upstream, computed once for the proxy
//! and for explain.

use std::borrow::Cow;

/// The identity headers an allowed request carries upstream: the verified user, and what the
/// decision knew about the device (id, posture state and its age in seconds). Explain shows
/// the same list.
pub fn identity_values<'a>(
    p: Option<&'a identity::Principal>,
    v: &'a crate::Verdict,
) -> Vec<(&'static str, Cow<'a, str>)> {
    let mut out = Vec::with_capacity(7);
    if let Some(p) = p {
        let user = p.username.as_deref().unwrap_or(&p.object_id);
        out.push(("x-portcullis-user", Cow::Borrowed(user)));
        out.push(("x-portcullis-user-id", Cow::Borrowed(&*p.object_id)));
        out.push(("x-portcullis-tenant", Cow::Borrowed(&*p.tenant)));
    }
    let Some(d) = &v.decision else {
        return out;
    };
    if let Some((id, _)) = &v.device {
        out.push(("x-portcullis-device-id", Cow::Borrowed(id.as_str())));
    }
    match &v.posture {
        Some(p) => {
            let now = base::time::unix_now();
            out.push(("x-portcullis-posture", Cow::Borrowed(p.state.as_str())));
            out.push((
                "x-portcullis-posture-age",
                Cow::Owned(now.saturating_sub(p.as_of).to_string()),
            ));
        }
        None => out.push(("x-portcullis-posture", Cow::Borrowed("none"))),
    }
    out.push(("x-portcullis-decision", Cow::Borrowed(d.reason.as_str())));
    out
}
