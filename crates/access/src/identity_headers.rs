//! The identity headers an allowed request carries upstream: their list ([`identity_values`],
//! which explain shows) and, for the request path, [`insert`], which puts the same list into a
//! header map without copying a claim per request ([`HeaderMemo`]).

use std::borrow::Cow;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use http::header::{HeaderMap, HeaderName, HeaderValue};

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
            out.push(("x-portcullis-posture", Cow::Borrowed(p.state.as_str())));
            out.push(("x-portcullis-posture-age", Cow::Owned(posture_age(v, p).to_string())));
            if let Some(ends) = grace_ends(p) {
                out.push(("x-portcullis-grace-ends", Cow::Owned(ends)));
            }
        }
        None => out.push(("x-portcullis-posture", Cow::Borrowed("none"))),
    }
    out.push(("x-portcullis-decision", Cow::Borrowed(d.reason.as_str())));
    out
}

/// When an Intune grace period ends (RFC 3339), for a device in one: the app can warn the user
/// before access stops.
fn grace_ends(p: &policy::Posture) -> Option<String> {
    let policy::PostureState::InGrace { until } = p.state else {
        return None;
    };
    base::time::rfc3339(i64::try_from(until).ok()?)
}

/// Seconds since the posture was confirmed, at the time of the decision.
fn posture_age(v: &crate::Verdict, p: &policy::Posture) -> u64 {
    v.now.saturating_sub(p.as_of)
}

/// The header values of the last principal and device a connection sent, kept so that a
/// keep-alive client re-sending one credential (the token and session caches hand back the
/// same `Arc<Principal>`) costs no copy of its claims into header values per request. One per
/// connection; reads and replacements are lock-free.
#[derive(Default)]
pub struct HeaderMemo {
    principal: ArcSwapOption<PrincipalValues>,
    device: ArcSwapOption<DeviceValue>,
}

impl std::fmt::Debug for HeaderMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderMemo").finish_non_exhaustive()
    }
}

struct PrincipalValues {
    of: Arc<identity::Principal>,
    /// user, user-id, tenant; `None` for a claim that is not a valid header value.
    values: [Option<HeaderValue>; 3],
}

struct DeviceValue {
    id: String,
    value: Option<HeaderValue>,
}

impl HeaderMemo {
    fn principal(&self, p: &Arc<identity::Principal>) -> Arc<PrincipalValues> {
        if let Some(hit) = self.principal.load_full().filter(|m| Arc::ptr_eq(&m.of, p)) {
            return hit;
        }
        let user = p.username.as_deref().unwrap_or(&p.object_id);
        let made = Arc::new(PrincipalValues {
            of: p.clone(),
            values: [user, &*p.object_id, &*p.tenant].map(|v| HeaderValue::from_str(v).ok()),
        });
        self.principal.store(Some(made.clone()));
        made
    }

    fn device(&self, id: &str) -> Option<HeaderValue> {
        if let Some(hit) = self.device.load().as_ref().filter(|m| m.id == id) {
            return hit.value.clone();
        }
        let value = HeaderValue::from_str(id).ok();
        self.device.store(Some(Arc::new(DeviceValue {
            id: id.to_string(),
            value: value.clone(),
        })));
        value
    }
}

/// Inserts [`identity_values`] into `h` (after every client-sent copy was removed), the claims'
/// values from `memo`. A verified claim that is not a valid header value is left out rather
/// than mangled.
pub fn insert(h: &mut HeaderMap, v: &crate::Verdict, memo: &HeaderMemo) {
    // Constants: `from_static` outside a const context checks the name on every call.
    const NAMES: [HeaderName; 3] = [
        HeaderName::from_static("x-portcullis-user"),
        HeaderName::from_static("x-portcullis-user-id"),
        HeaderName::from_static("x-portcullis-tenant"),
    ];
    const DEVICE_ID: HeaderName = HeaderName::from_static("x-portcullis-device-id");
    const POSTURE: HeaderName = HeaderName::from_static("x-portcullis-posture");
    const POSTURE_AGE: HeaderName = HeaderName::from_static("x-portcullis-posture-age");
    const DECISION: HeaderName = HeaderName::from_static("x-portcullis-decision");
    const GRACE_ENDS: HeaderName = HeaderName::from_static("x-portcullis-grace-ends");
    let mut put = |name: HeaderName, value: Option<HeaderValue>| match value {
        Some(value) => {
            h.insert(name, value);
        }
        None => tracing::warn!(
            header = name.as_str(),
            "identity value is not a valid header value; not sent"
        ),
    };
    if let Some(p) = &v.principal {
        let values = memo.principal(p);
        for (name, value) in NAMES.into_iter().zip(values.values.iter()) {
            put(name, value.clone());
        }
    }
    let Some(d) = &v.decision else {
        return;
    };
    if let Some((id, _)) = &v.device {
        put(DEVICE_ID, memo.device(id));
    }
    match &v.posture {
        Some(p) => {
            put(POSTURE, Some(HeaderValue::from_static(p.state.as_str())));
            put(POSTURE_AGE, Some(HeaderValue::from(posture_age(v, p))));
            if let Some(ends) = grace_ends(p) {
                put(GRACE_ENDS, HeaderValue::try_from(ends).ok());
            }
        }
        None => put(POSTURE, Some(HeaderValue::from_static("none"))),
    }
    put(DECISION, Some(HeaderValue::from_static(d.reason.as_str())));
}

#[cfg(test)]
mod tests {
    use super::*;
    use identity::{Principal, TokenVersion};
    use policy::{Decision, DeviceSource, EvidenceSource, Outcome, Posture, PostureState, Reason};

    fn principal(user: &str) -> Arc<Principal> {
        Arc::new(Principal {
            tenant: Arc::from("7d2c5b8e-0000-4000-8000-000000000001"),
            object_id: Arc::from(format!("oid-{}", user.len())),
            username: Some(Arc::from(user)),
            name: None,
            groups: Arc::from(Vec::new()),
            groups_overage: false,
            roles: Arc::from(Vec::new()),
            device_id: None,
            version: TokenVersion::V2,
            expires_at: 0,
            delegated: true,
        })
    }

    fn verdict(p: &Arc<Principal>, device: &str) -> crate::Verdict {
        crate::Verdict {
            principal: Some(p.clone()),
            device: Some((device.to_string(), DeviceSource::TokenClaim)),
            posture: Some(Arc::new(Posture {
                state: PostureState::Compliant,
                source: EvidenceSource::IntuneManagedDevice,
                as_of: 1_000,
                computer_name: None,
            })),
            decision: Some(Decision {
                outcome: Outcome::Allow,
                reason: Reason::Compliant,
                would_deny: None,
            }),
            now: 1_042,
            ..crate::Verdict::default()
        }
    }

    fn inserted(v: &crate::Verdict, memo: &HeaderMemo) -> Vec<(String, String)> {
        let mut h = HeaderMap::new();
        insert(&mut h, v, memo);
        h.iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
            .collect()
    }

    fn listed(v: &crate::Verdict) -> Vec<(String, String)> {
        identity_values(v.principal.as_deref(), v)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.into_owned()))
            .collect()
    }

    #[test]
    fn the_request_path_sends_exactly_what_explain_lists_and_the_memo_follows_the_connection() {
        let memo = HeaderMemo::default();
        let (alice, bob) = (principal("alice@example.com"), principal("bob@example.com"));
        let v = verdict(&alice, "dev-1");
        assert_eq!(inserted(&v, &memo), listed(&v));
        assert!(listed(&v).contains(&("x-portcullis-posture-age".into(), "42".into())));
        // Same principal again: served from the memo, still the same values.
        assert_eq!(inserted(&v, &memo), listed(&v));
        // Another principal and another device on the same connection replace the memo.
        let v = verdict(&bob, "dev-2");
        let sent = inserted(&v, &memo);
        assert_eq!(sent, listed(&v));
        assert!(sent.contains(&("x-portcullis-user".into(), "bob@example.com".into())));
        assert!(sent.contains(&("x-portcullis-device-id".into(), "dev-2".into())));
        // A claim that is no header value is left out, the rest sent.
        let v = verdict(&principal("eve\nx-portcullis-user: admin"), "dev-2");
        let sent = inserted(&v, &memo);
        assert!(sent.iter().all(|(k, _)| k != "x-portcullis-user"));
        assert!(sent.iter().any(|(k, _)| k == "x-portcullis-user-id"));
        // A device in its grace period: the app is told when it ends.
        let mut v = verdict(&alice, "dev-1");
        v.posture = Some(Arc::new(Posture {
            state: PostureState::InGrace { until: 1_800_000_000 },
            ..(**v.posture.as_ref().unwrap()).clone()
        }));
        let sent = inserted(&v, &memo);
        assert_eq!(sent, listed(&v));
        assert!(sent.contains(&("x-portcullis-grace-ends".into(), "2027-01-15T08:00:00Z".into())));
        // Without a decision (an open route), only the user.
        let mut v = verdict(&alice, "dev-1");
        v.decision = None;
        assert_eq!(inserted(&v, &memo), listed(&v));
        assert_eq!(listed(&v).len(), 3);
    }
}
