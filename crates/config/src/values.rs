//! Parsers for the small value types of the configuration file: durations, socket and
//! upstream addresses, CIDR blocks, host patterns and path prefixes. Each returns a message
//! fit to be shown after the key it came from.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// `"10s"`, `"250ms"`, `"1h 30m"`.
pub(crate) fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a valid duration ({e}); write e.g. \"10s\" or \"250ms\""))
}

pub(crate) fn socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.trim().parse::<SocketAddr>().map_err(|_| {
        format!("{s:?} is not a valid socket address (expected ip:port, e.g. \"127.0.0.1:8080\" or \"[::1]:8080\")")
    })
}

/// An upstream address: `ip:port` or `dns-name:port`. Names are resolved when the gateway
/// starts, never on the request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

pub(crate) fn host_port(s: &str) -> Result<HostPort, String> {
    let s = s.trim();
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok(HostPort {
            host: sa.ip().to_string(),
            port: sa.port(),
        });
    }
    let bad = || format!("{s:?} is not a valid socket address (expected host:port with a port from 1 to 65535)");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 || !is_dns_name(host) {
        return Err(bad());
    }
    Ok(HostPort {
        host: host.to_ascii_lowercase(),
        port,
    })
}

pub(crate) fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// An IPv4 or IPv6 network in CIDR notation; a bare address means a single host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client may show up as an IPv4-mapped IPv6 address on a dual-stack socket.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            (IpAddr::V4(_), IpAddr::V6(_)) | (IpAddr::V6(_), IpAddr::V4(_)) => false,
        }
    }
}

pub(crate) fn ip_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    let bad = || format!("{s:?} is not a valid IP address or CIDR block (e.g. \"10.0.0.0/8\", \"::1\")");
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
        None => max,
    };
    Ok(IpNet { addr, prefix })
}

/// Which `Host` values a route answers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Any host: the default route(s).
    Any,
    /// Exactly this host (lower case, no port).
    Exact(String),
    /// `*.example.com`: any single- or multi-label subdomain; stored as `.example.com`.
    Suffix(String),
}

pub(crate) fn host_pattern(s: &str) -> Result<HostPattern, String> {
    let s = s.trim().to_ascii_lowercase();
    if s == "*" {
        return Ok(HostPattern::Any);
    }
    if let Some(rest) = s.strip_prefix("*.") {
        if is_dns_name(rest) {
            return Ok(HostPattern::Suffix(format!(".{rest}")));
        }
    } else if is_dns_name(&s) || s.parse::<IpAddr>().is_ok() {
        return Ok(HostPattern::Exact(s));
    }
    Err(format!(
        "{s:?} is not a valid host (a DNS name, an IP address, \"*.domain\" or \"*\"; no port)"
    ))
}

pub(crate) fn path_prefix(s: &str) -> Result<String, String> {
    if !s.starts_with('/') {
        return Err(format!("{s:?} must start with '/'"));
    }
    if s.bytes()
        .any(|b| b.is_ascii_control() || b == b' ' || b == b'?' || b == b'#')
    {
        return Err(format!(
            "{s:?} must be a plain path (no spaces, '?', '#' or control characters)"
        ));
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_contains() {
        let n = ip_net("10.0.0.0/8").unwrap();
        assert!(n.contains("10.1.2.3".parse().unwrap()));
        assert!(!n.contains("11.0.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.0.0.1".parse().unwrap()));
        let all = ip_net("0.0.0.0/0").unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let one = ip_net("::1").unwrap();
        assert!(one.contains("::1".parse().unwrap()));
        assert!(!one.contains("::2".parse().unwrap()));
        assert!(ip_net("10.0.0.0/33").is_err());
        assert!(ip_net("nonsense").is_err());
    }

    #[test]
    fn host_ports() {
        assert_eq!(host_port("127.0.0.1:80").unwrap().to_string(), "127.0.0.1:80");
        assert_eq!(host_port("[::1]:80").unwrap().to_string(), "[::1]:80");
        assert_eq!(host_port("App.Example.com:443").unwrap().host, "app.example.com");
        assert!(host_port("10.0.0.1:99999").is_err());
        assert!(host_port("10.0.0.1").is_err());
        assert!(host_port("bad host:80").is_err());
        assert!(host_port("x:0").is_err());
    }

    #[test]
    fn hosts_and_paths() {
        assert_eq!(host_pattern("*").unwrap(), HostPattern::Any);
        assert_eq!(
            host_pattern("*.Example.com").unwrap(),
            HostPattern::Suffix(".example.com".into())
        );
        assert_eq!(host_pattern("a.b").unwrap(), HostPattern::Exact("a.b".into()));
        assert!(host_pattern("a.b:80").is_err());
        assert!(path_prefix("api").is_err());
        assert!(path_prefix("/a?b").is_err());
        assert!(duration("10 parsecs").is_err());
        assert_eq!(duration("250ms").unwrap(), Duration::from_millis(250));
    }
}

/// A base URL of a service the gateway calls (Entra, Graph, Jamf Pro): `https://`, or plain
/// `http://` to a loopback address only (the emulator). The one rule for every such key;
/// returns the URL without a trailing slash.
pub fn service_url(v: &str) -> Result<String, String> {
    let bad = || format!("{v:?} must be an https:// URL (plain http only on loopback)");
    let u = url::Url::parse(v).map_err(|_| bad())?;
    let loopback = match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match (u.scheme(), u.host().is_some()) {
        ("https", true) => Ok(v.trim_end_matches('/').to_string()),
        ("http", true) if loopback => Ok(v.trim_end_matches('/').to_string()),
        _ => Err(bad()),
    }
}

/// A page users are sent to (custom landing, enrollment portal, Self Service): an absolute
/// `https://` or `http://` URL, or a Self Service / Company Portal link. The one rule for the
/// file and the admin API.
pub fn landing_url(v: &str) -> Result<(), String> {
    match url::Url::parse(v) {
        Ok(u)
            if matches!(
                u.scheme(),
                "https" | "http" | "selfservice" | "jamfselfservice" | "companyportal"
            ) && (u.has_host() || u.scheme() != "https" && u.scheme() != "http") =>
        {
            Ok(())
        }
        Ok(_) | Err(_) => Err(format!("{v:?} is not an absolute https:// (or Self Service) URL")),
    }
}

#[cfg(test)]
mod url_tests {
    use super::*;

    #[test]
    fn service_urls_are_https_or_loopback_http() {
        assert_eq!(
            service_url("https://login.microsoftonline.com/").unwrap(),
            "https://login.microsoftonline.com"
        );
        for ok in ["http://127.0.0.1:8900", "http://localhost:1", "http://[::1]:8900"] {
            assert!(service_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://login.microsoftonline.com",
            "http://localhost.evil.example",
            "http://127.0.0.1.evil.example",
            "ftp://127.0.0.1",
            "https://",
            "not a url",
        ] {
            assert!(service_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn landing_urls_allow_self_service_links() {
        for ok in [
            "https://help.example.com/device",
            "jamfselfservice://content?entity=policy&id=1",
            "selfservice://x",
        ] {
            assert!(landing_url(ok).is_ok(), "{ok}");
        }
        for bad in ["javascript:alert(1)", "/relative", "https://", "data:text/html,x"] {
            assert!(landing_url(bad).is_err(), "{bad}");
        }
    }
}
