//! Builders for `[[routes]]`: host, prefix, upstream and the access policy.

use std::time::Duration;

use super::*;

pub(super) fn build_route(
    raw: RawRoute,
    key: &str,
    upstreams: &[UpstreamConfig],
    has_entra: bool,
    c: &mut Collector,
) -> Option<RouteConfig> {
    let require = named(
        c,
        &format!("{key}.require"),
        raw.require.as_deref().unwrap_or(Require::CompliantDevice.as_str()),
        &Require::ALL,
        Require::as_str,
    );
    if require.is_some_and(|r| r != Require::Nothing) && !has_entra {
        c.push(
            format!("{key}.require"),
            "this route requires signed-in users (the default) but there is no [entra] section; add one, or set require = \"none\" to open the route explicitly",
        );
    }
    let on_stale = named(
        c,
        &format!("{key}.on_stale"),
        raw.on_stale.as_deref().unwrap_or(OnStale::Deny.as_str()),
        &OnStale::ALL,
        OnStale::as_str,
    );
    let mode = named(
        c,
        &format!("{key}.mode"),
        raw.mode.as_deref().unwrap_or(Mode::Enforce.as_str()),
        &Mode::ALL,
        Mode::as_str,
    );
    let max_posture_age = dur(
        c,
        format!("{key}.max_posture_age"),
        raw.max_posture_age,
        Duration::from_secs(24 * 3600),
    );
    for (i, g) in raw.groups_any.iter().enumerate() {
        if !base::is_guid(g) {
            c.push(
                format!("{key}.groups_any[{i}]"),
                format!("{g:?} is not a group object id (GUID)"),
            );
        }
    }
    if require == Some(Require::Nothing) && !raw.groups_any.is_empty() {
        c.push(
            format!("{key}.groups_any"),
            "groups need signed-in users; remove require = \"none\"",
        );
    }
    let host = match &raw.host {
        None => Some(HostPattern::Any),
        Some(h) => c.take(&format!("{key}.host"), values::host_pattern(h)),
    };
    let path_prefix = c.take(
        &format!("{key}.path_prefix"),
        values::path_prefix(raw.path_prefix.as_deref().unwrap_or("/")),
    );
    let upstream = upstreams.iter().position(|u| u.name == raw.upstream);
    if upstream.is_none() {
        c.push(
            format!("{key}.upstream"),
            format!("{:?} is not a pool defined under [upstreams]", raw.upstream),
        );
    }
    let (host, path_prefix, upstream, require, on_stale, mode) =
        (host?, path_prefix?, upstream?, require?, on_stale?, mode?);
    let policy = RoutePolicy {
        require,
        allow_grace_period: raw.allow_grace_period.unwrap_or(true),
        max_posture_age: max_posture_age.as_secs(),
        on_stale,
        mode,
    };
    let name = raw.name.unwrap_or_else(|| {
        let h = match &host {
            HostPattern::Any => "*".to_string(),
            HostPattern::Exact(h) => h.clone(),
            HostPattern::Suffix(s) => format!("*{s}"),
        };
        format!("{h}{path_prefix}")
    });
    let groups_any = raw.groups_any.iter().map(|g| g.to_ascii_lowercase()).collect();
    Some(RouteConfig {
        name,
        host,
        path_prefix,
        upstream,
        policy,
        groups_any,
        assertion: raw.assertion.unwrap_or(false),
        grace_notice: raw.grace_notice.unwrap_or(true),
        follow_posture: raw.follow_posture.unwrap_or(true),
    })
}
