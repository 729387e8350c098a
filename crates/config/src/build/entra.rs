//! Builders for `[entra]` and `[session]`.

use std::path::Path;
use std::time::Duration;

use super::*;

pub(super) fn build_entra(raw: RawEntra, base: &Path, c: &mut Collector) -> Option<EntraConfig> {
    let cloud = match raw.cloud.as_deref() {
        None => Some(base::cloud::NationalCloud::Global),
        Some(s) => c.take("entra.cloud", s.parse::<base::cloud::NationalCloud>()),
    };
    let guid = |c: &mut Collector, key: &str, v: Option<&str>| -> Option<String> {
        match v {
            None => {
                c.push(key, "is required");
                None
            }
            Some(g) if base::is_guid(g) => Some(g.to_ascii_lowercase()),
            Some(g) => {
                c.push(key, format!("{g:?} is not a GUID"));
                None
            }
        }
    };
    let tenant_id = guid(c, "entra.tenant_id", raw.tenant_id.as_deref());
    let client_id = guid(c, "entra.client_id", raw.client_id.as_deref());
    let mut allowed_tenants = Vec::new();
    for (i, t) in raw.allowed_tenants.iter().enumerate() {
        if let Some(t) = guid(c, &format!("entra.allowed_tenants[{i}]"), Some(t)) {
            if t == base::cloud::CONSUMER_TENANT {
                c.push(
                    format!("entra.allowed_tenants[{i}]"),
                    "the consumer (Microsoft account) tenant cannot be allowed",
                );
            }
            allowed_tenants.push(t);
        }
    }
    let url = |c: &mut Collector, key: &str, v: Option<String>, default: String| -> String {
        let v = v.unwrap_or(default);
        match values::service_url(&v) {
            Ok(u) => u,
            Err(e) => {
                c.push(key, e);
                v
            }
        }
    };
    let cloud = cloud?;
    let hosts = cloud.hosts();
    let authority_url = url(
        c,
        "entra.authority_url",
        raw.authority_url,
        format!("https://{}", hosts.login),
    );
    let graph_url = url(c, "entra.graph_url", raw.graph_url, format!("https://{}", hosts.graph));
    let v1_issuer_url = url(
        c,
        "entra.v1_issuer_url",
        raw.v1_issuer_url,
        format!("https://{}", hosts.v1_issuer),
    );
    let clock_skew = dur(c, "entra.clock_skew".into(), raw.clock_skew, Duration::from_secs(60));
    let jwks_min_refresh_interval = dur(
        c,
        "entra.jwks_min_refresh_interval".into(),
        raw.jwks_min_refresh_interval,
        Duration::from_secs(300),
    );
    let group_cache_ttl = dur(
        c,
        "entra.group_cache_ttl".into(),
        raw.group_cache_ttl,
        Duration::from_secs(600),
    );
    let secret = raw.client_secret.filter(|s| !s.is_empty()).map(Secret::new);
    let credential = match (
        secret,
        raw.client_certificate,
        raw.client_certificate_key,
        raw.client_assertion_file,
    ) {
        (None, None, None, None) => None,
        (Some(s), None, None, None) => Some(ClientCredentialConfig::Secret(s)),
        (None, Some(cert), Some(key), None) => Some(ClientCredentialConfig::Certificate {
            cert: resolve(base, &cert),
            key: resolve(base, &key),
        }),
        (None, None, None, Some(f)) => Some(ClientCredentialConfig::AssertionFile(resolve(base, &f))),
        (None, Some(_), None, None) => {
            c.push(
                "entra.client_certificate_key",
                "is required with entra.client_certificate",
            );
            None
        }
        (None, None, Some(_), None) => {
            c.push(
                "entra.client_certificate",
                "is required with entra.client_certificate_key",
            );
            None
        }
        (Some(_), _, _, _) | (None, Some(_), _, Some(_)) | (None, None, Some(_), Some(_)) => {
            c.push(
                "entra",
                "use one credential: client_secret, client_certificate (+ _key) or client_assertion_file",
            );
            None
        }
    };
    let (tenant_id, client_id) = (tenant_id?, client_id?);
    // The home tenant always comes first: code that needs "the gateway's own tenant" (admin
    // app roles) reads `allowed_tenants[0]`.
    allowed_tenants.retain(|t| *t != tenant_id);
    allowed_tenants.insert(0, tenant_id.clone());
    Some(EntraConfig {
        cloud,
        tenant_id,
        allowed_tenants,
        client_id,
        app_id_uris: raw.app_id_uris,
        credential,
        authority_url,
        graph_url,
        v1_issuer_url,
        clock_skew,
        jwks_min_refresh_interval,
        group_cache_ttl,
    })
}

pub(super) fn build_session(raw: RawSession, c: &mut Collector) -> SessionConfig {
    let cookie_name = raw.cookie_name.unwrap_or_else(|| "__Host-portcullis".into());
    if cookie_name.is_empty()
        || !cookie_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        c.push(
            "session.cookie_name",
            format!("{cookie_name:?} is not a valid cookie name"),
        );
    }
    let cookie_key = raw.cookie_key.map(|k| {
        use base64::Engine;
        let ok = base64::engine::general_purpose::STANDARD
            .decode(k.trim())
            .map(|b| b.len() == 32)
            .unwrap_or(false);
        if !ok {
            // Never echo the value: it is a secret.
            c.push(
                "session.cookie_key",
                "must be 32 random bytes in standard base64 (e.g. `openssl rand -base64 32`)",
            );
        }
        Secret::new(k.trim().to_string())
    });
    SessionConfig {
        cookie_name,
        cookie_key,
        lifetime: dur(
            c,
            "session.lifetime".into(),
            raw.lifetime,
            Duration::from_secs(12 * 3600),
        ),
        idle_timeout: dur(
            c,
            "session.idle_timeout".into(),
            raw.idle_timeout,
            Duration::from_secs(2 * 3600),
        ),
    }
}
