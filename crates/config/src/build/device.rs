//! Builders for `[device]` and `[landing]`.

use std::path::Path;
use std::time::Duration;

use super::*;

pub(super) fn build_device(raw: RawDevice, c: &mut Collector) -> DeviceConfig {
    let mut sources = Vec::new();
    let names = raw
        .sources
        .unwrap_or_else(|| DeviceSource::ALL.iter().map(|s| s.as_str().to_string()).collect());
    for (i, s) in names.iter().enumerate() {
        let key = format!("device.sources[{i}]");
        let Some(src) = named(c, &key, s, &DeviceSource::ALL, DeviceSource::as_str) else {
            continue;
        };
        if sources.contains(&src) {
            c.push(format!("device.sources[{i}]"), format!("{s:?} is listed twice"));
        }
        sources.push(src);
    }
    DeviceConfig {
        sources,
        posture_cache_ttl: dur(
            c,
            "device.posture_cache_ttl".into(),
            raw.posture_cache_ttl,
            Duration::from_secs(60),
        ),
        unknown_cache_ttl: dur(
            c,
            "device.unknown_cache_ttl".into(),
            raw.unknown_cache_ttl,
            Duration::from_secs(5),
        ),
        lookup_timeout: dur(
            c,
            "device.lookup_timeout".into(),
            raw.lookup_timeout,
            Duration::from_secs(2),
        ),
        change_poll_interval: dur(
            c,
            "device.change_poll_interval".into(),
            raw.change_poll_interval,
            Duration::from_secs(1),
        ),
    }
}

pub(super) fn build_landing(raw: RawLanding, base: &Path, c: &mut Collector) -> LandingConfig {
    let url = |c: &mut Collector, key: &str, v: Option<String>| -> Option<String> {
        let v = v?;
        match values::landing_url(&v) {
            Ok(()) => Some(v),
            Err(e) => {
                c.push(key, e);
                None
            }
        }
    };
    let custom_url = url(c, "landing.custom_url", raw.custom_url);
    let unrecognized = match raw.unrecognized.as_deref().unwrap_or("registration") {
        "registration" => LandingChoice::Registration,
        "access_denied" => LandingChoice::AccessDenied,
        "custom" => match custom_url {
            Some(url) => LandingChoice::Custom { url },
            None => {
                c.push(
                    "landing.custom_url",
                    "is required when landing.unrecognized = \"custom\"",
                );
                LandingChoice::AccessDenied
            }
        },
        other => {
            c.push(
                "landing.unrecognized",
                format!("{other:?} is not \"registration\", \"access_denied\" or \"custom\""),
            );
            LandingChoice::Registration
        }
    };
    let templates_dir = raw.templates_dir.map(|d| resolve(base, &d));
    LandingConfig {
        unrecognized,
        enrollment_url: url(c, "landing.enrollment_url", raw.enrollment_url),
        registration_url: url(c, "landing.registration_url", raw.registration_url),
        self_service_url: url(c, "landing.self_service_url", raw.self_service_url),
        templates_dir,
        support: raw.support,
        allowed_return_hosts: raw
            .allowed_return_hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        assertion_key_file: raw.assertion_key_file.map(|p| resolve(base, &p)),
    }
}
