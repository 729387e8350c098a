//! Builders for `[server]` and `[admin]`.

use std::time::Duration;

use super::*;

pub(super) fn build_server(v: Option<toml::Value>, c: &mut Collector) -> Option<ServerSettings> {
    let raw: RawServer = match v {
        Some(v) => item(c, "server", v)?,
        None => RawServer::default(),
    };
    let trusted_proxies = raw
        .trusted_proxies
        .iter()
        .enumerate()
        .filter_map(|(i, s)| c.take(&format!("server.trusted_proxies[{i}]"), values::ip_net(s)))
        .collect();
    let keepalive_requests = match raw.client_keepalive_requests {
        None | Some(0) => None,
        Some(n) => Some(positive(c, "server.client_keepalive_requests", Some(n), 1, i64::from(u32::MAX)) as u32),
    };
    Some(ServerSettings {
        threads: positive(c, "server.threads", raw.threads, default_threads(), 1024) as usize,
        grace_period: dur(
            c,
            "server.grace_period".into(),
            raw.grace_period,
            Duration::from_secs(10),
        ),
        graceful_shutdown_timeout: dur(
            c,
            "server.graceful_shutdown_timeout".into(),
            raw.graceful_shutdown_timeout,
            Duration::from_secs(5),
        ),
        trusted_proxies,
        max_request_header_bytes: positive(
            c,
            "server.max_request_header_bytes",
            raw.max_request_header_bytes,
            128 * 1024,
            1024 * 1024,
        ) as usize,
        client_read_timeout: dur(
            c,
            "server.client_read_timeout".into(),
            raw.client_read_timeout,
            Duration::from_secs(60),
        ),
        client_keepalive_timeout: dur(
            c,
            "server.client_keepalive_timeout".into(),
            raw.client_keepalive_timeout,
            Duration::from_secs(60),
        ),
        client_keepalive_requests: keepalive_requests,
        h2_idle_timeout: dur(
            c,
            "server.h2_idle_timeout".into(),
            raw.h2_idle_timeout,
            Duration::from_secs(120),
        ),
    })
}

pub(super) fn default_threads() -> i64 {
    std::thread::available_parallelism()
        .map(|n| n.get() as i64)
        .unwrap_or(2)
}

pub(super) fn build_admin(v: Option<toml::Value>, c: &mut Collector) -> AdminSettings {
    let default: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 9090));
    let raw: RawAdmin = match v {
        Some(v) => item(c, "admin", v).unwrap_or_default(),
        None => RawAdmin::default(),
    };
    let listen = match raw.listen {
        None => default,
        Some(s) => c.take("admin.listen", values::socket_addr(&s)).unwrap_or(default),
    };
    let mut hash = |key: &str, v: Option<String>| -> Option<[u8; 32]> {
        let v = v?;
        match base::sha256_from_hex(&v) {
            Some(h) => Some(h),
            None => {
                c.push(key, "must be 64 hex digits: the SHA-256 of the token (sha256sum)");
                None
            }
        }
    };
    AdminSettings {
        listen,
        token_sha256: hash("admin.token_sha256", raw.token_sha256),
        read_only_token_sha256: hash("admin.read_only_token_sha256", raw.read_only_token_sha256),
        admin_role: raw.admin_role.unwrap_or_else(|| "Portcullis.Admin".into()),
        reader_role: raw.reader_role.unwrap_or_else(|| "Portcullis.Reader".into()),
    }
}
