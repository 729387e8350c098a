//! Builders for `[sync]` and `[jamf]`.

use std::time::Duration;

use super::*;

pub(super) fn build_sync(raw: RawSync, has_credential: bool, host_name: &str, c: &mut Collector) -> SyncConfig {
    let enabled = raw.enabled.unwrap_or(has_credential);
    if enabled && !has_credential {
        c.push("sync.enabled", "the sync needs [entra] with an app credential (client_secret, client_certificate or client_assertion_file)");
    }
    // The host name: a restarted gateway takes its own lease back at once. Several gateways
    // on one host sharing a store need distinct names.
    let node_name = raw.node_name.unwrap_or_else(|| host_name.to_string());
    for k in raw.share.keys() {
        let n = k.strip_prefix("extensionAttribute").and_then(|n| n.parse::<u8>().ok());
        if !n.is_some_and(|n| (1..=15).contains(&n)) {
            c.push(
                format!("sync.share.{k}"),
                "keys are extensionAttribute1 to extensionAttribute15",
            );
        }
    }
    let interval = dur(c, "sync.interval".into(), raw.interval, Duration::from_secs(60));
    // Three missed renewals (one per round) before another node may take over, never under 30 s
    // unless set; the leader stops its round at 80 % of it by its own clock.
    let lease_ttl = dur(
        c,
        "sync.lease_ttl".into(),
        raw.lease_ttl,
        (interval * 3).max(Duration::from_secs(30)),
    );
    if lease_ttl < interval * 2 || lease_ttl < Duration::from_secs(2) {
        c.push(
            "sync.lease_ttl",
            format!("must be at least twice sync.interval ({interval:?}) and 2 s: the leader renews it once a round"),
        );
    }
    SyncConfig {
        enabled,
        interval,
        lease_ttl,
        intune: raw.intune.unwrap_or(true),
        intune_interval: dur(
            c,
            "sync.intune_interval".into(),
            raw.intune_interval,
            Duration::from_secs(15 * 60),
        ),
        full_reconcile: dur(
            c,
            "sync.full_reconcile".into(),
            raw.full_reconcile,
            Duration::from_secs(24 * 3600),
        ),
        page_size: positive(c, "sync.page_size", raw.page_size, 999, 999) as u32,
        requests_per_20s: positive(c, "sync.requests_per_20s", raw.requests_per_20s, 1000, 2000) as u32,
        node_name,
        share: raw.share,
    }
}

pub(super) fn build_jamf(raw: RawJamf, c: &mut Collector) -> Option<JamfConfig> {
    let url = match raw.url.as_deref().map(values::service_url) {
        Some(Ok(u)) => Some(u),
        Some(Err(e)) => {
            c.push("jamf.url", e);
            None
        }
        None => {
            c.push("jamf.url", "is required");
            None
        }
    };
    let client_id = raw.client_id.filter(|s| !s.is_empty());
    if client_id.is_none() {
        c.push(
            "jamf.client_id",
            "is required (a Jamf Pro API client with \"Read Computers\")",
        );
    }
    let client_secret = raw.client_secret.filter(|s| !s.is_empty()).map(Secret::new);
    if client_secret.is_none() {
        c.push(
            "jamf.client_secret",
            "is required (usually from PORTCULLIS__JAMF__CLIENT_SECRET)",
        );
    }
    let api_version = match raw.api_version.as_deref().unwrap_or("v3") {
        "v1" => 1,
        "v3" => 3,
        other => {
            c.push("jamf.api_version", format!("{other:?} is not \"v1\" or \"v3\""));
            3
        }
    };
    Some(JamfConfig {
        url: url?,
        client_id: client_id?,
        client_secret: client_secret?,
        api_version,
        interval: dur(c, "jamf.interval".into(), raw.interval, Duration::from_secs(15 * 60)),
        page_size: positive(c, "jamf.page_size", raw.page_size, 100, 2000) as u32,
        webhook: match (raw.webhook_username, raw.webhook_password.filter(|p| !p.is_empty())) {
            (Some(u), Some(p)) => Some((u, Secret::new(p))),
            (None, None) => None,
            (Some(_), None) | (None, Some(_)) => {
                c.push(
                    "jamf.webhook_password",
                    "webhook_username and webhook_password go together",
                );
                None
            }
        },
    })
}
