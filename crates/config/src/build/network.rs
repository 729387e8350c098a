//! Builders for `[[listeners]]` and `[upstreams.*]`.

use std::path::Path;
use std::time::Duration;

use super::*;

pub(super) fn build_listener(raw: RawListener, key: &str, base: &Path, c: &mut Collector) -> Option<ListenerConfig> {
    let address = c.take(&format!("{key}.address"), values::socket_addr(&raw.address));
    let tls = raw.tls.map(|t| {
        if t.certificates.is_empty() {
            c.push(
                format!("{key}.tls.certificates"),
                "a TLS listener needs at least one certificate",
            );
        }
        let certificates = t
            .certificates
            .into_iter()
            .enumerate()
            .map(|(i, rc)| {
                let ckey = format!("{key}.tls.certificates[{i}]");
                for (j, n) in rc.server_names.iter().enumerate() {
                    let n = n.strip_prefix("*.").unwrap_or(n);
                    if !values::is_dns_name(n) {
                        c.push(format!("{ckey}.server_names[{j}]"), format!("{n:?} is not a DNS name"));
                    }
                }
                CertificateConfig {
                    cert: resolve(base, &rc.cert),
                    key: resolve(base, &rc.key),
                    server_names: rc.server_names.iter().map(|n| n.to_ascii_lowercase()).collect(),
                    key_path: ckey,
                }
            })
            .collect();
        ListenerTls {
            certificates,
            http2: t.http2.unwrap_or(true),
            client_ca: t.client_ca.map(|p| resolve(base, &p)),
        }
    });
    let forward_auth = raw.forward_auth.and_then(|f| {
        let fkey = format!("{key}.forward_auth");
        let ingress = match f.ingress.as_deref() {
            Some("nginx") => Some(Ingress::Nginx),
            Some("ingress-nginx") => Some(Ingress::IngressNginx),
            Some("caddy") => Some(Ingress::Caddy),
            Some("traefik") => Some(Ingress::Traefik),
            Some("envoy") => Some(Ingress::Envoy),
            Some(other) => {
                c.push(
                    format!("{fkey}.ingress"),
                    format!("{other:?} is not an ingress (\"nginx\", \"ingress-nginx\", \"caddy\", \"traefik\" or \"envoy\")"),
                );
                None
            }
            None => {
                c.push(
                    format!("{fkey}.ingress"),
                    "required: \"nginx\", \"ingress-nginx\", \"caddy\", \"traefik\" or \"envoy\"",
                );
                None
            }
        };
        let trusted = match f.trusted {
            Some(list) => {
                if list.is_empty() {
                    c.push(format!("{fkey}.trusted"), "at least one address: the ingress's");
                }
                list.iter()
                    .enumerate()
                    .filter_map(|(i, s)| c.take(&format!("{fkey}.trusted[{i}]"), values::ip_net(s)))
                    .collect()
            }
            None => ["127.0.0.0/8", "::1"]
                .iter()
                .filter_map(|s| values::ip_net(s).ok())
                .collect(),
        };
        Some(ForwardAuthConfig {
            ingress: ingress?,
            trusted,
        })
    });
    Some(ListenerConfig {
        name: raw.name.unwrap_or_else(|| key.to_string()),
        address: address?,
        tls,
        forward_auth,
    })
}

pub(super) fn build_upstream(
    name: String,
    raw: RawUpstream,
    key: &str,
    base: &Path,
    c: &mut Collector,
) -> Option<UpstreamConfig> {
    if raw.addresses.is_empty() {
        c.push(format!("{key}.addresses"), "at least one address is required");
    }
    let addresses: Vec<HostPort> = raw
        .addresses
        .iter()
        .enumerate()
        .filter_map(|(i, a)| c.take(&format!("{key}.addresses[{i}]"), values::host_port(a)))
        .collect();
    let tls = raw.tls.map(|t| {
        let sni = match t.sni {
            Some(s) => s.to_ascii_lowercase(),
            None => addresses.first().map(|a| a.host.clone()).unwrap_or_default(),
        };
        if !values::is_dns_name(&sni) && sni.parse::<std::net::IpAddr>().is_err() {
            c.push(
                format!("{key}.tls.sni"),
                format!("{sni:?} is not a DNS name or IP address"),
            );
        }
        UpstreamTls {
            sni,
            ca_file: t.ca_file.map(|p| resolve(base, &p)),
            verify: t.verify.unwrap_or(true),
            http2: t.http2.unwrap_or(false),
        }
    });
    let health_check = raw.health_check.and_then(|h| {
        let hkey = format!("{key}.health_check");
        let kind = match h.kind.as_deref().unwrap_or("tcp") {
            "tcp" => HealthCheckKind::Tcp,
            "http" => {
                let path = h.path.unwrap_or_else(|| "/".into());
                let path = c.take(&format!("{hkey}.path"), values::path_prefix(&path))?;
                let host = h
                    .host
                    .unwrap_or_else(|| addresses.first().map(|a| a.host.clone()).unwrap_or_default());
                HealthCheckKind::Http { path, host }
            }
            other => {
                c.push(
                    format!("{hkey}.kind"),
                    format!("{other:?} is not a health check kind (\"tcp\" or \"http\")"),
                );
                return None;
            }
        };
        Some(HealthCheckConfig {
            kind,
            interval: dur(c, format!("{hkey}.interval"), h.interval, Duration::from_secs(5)),
            timeout: dur(c, format!("{hkey}.timeout"), h.timeout, Duration::from_secs(1)),
        })
    });
    let timeouts = UpstreamTimeouts {
        connect: dur(
            c,
            format!("{key}.connect_timeout"),
            raw.connect_timeout,
            Duration::from_secs(5),
        ),
        total_connect: dur(
            c,
            format!("{key}.total_connect_timeout"),
            raw.total_connect_timeout,
            Duration::from_secs(10),
        ),
        read: dur(
            c,
            format!("{key}.read_timeout"),
            raw.read_timeout,
            Duration::from_secs(60),
        ),
        write: dur(
            c,
            format!("{key}.write_timeout"),
            raw.write_timeout,
            Duration::from_secs(60),
        ),
        idle: dur(
            c,
            format!("{key}.idle_timeout"),
            raw.idle_timeout,
            Duration::from_secs(60),
        ),
    };
    Some(UpstreamConfig {
        name,
        addresses,
        tls,
        health_check,
        timeouts,
    })
}
