//! Configuration: the only place where strings from the file become typed values.
//!
//! `load`/`parse` read a TOML file into [`Config`], reporting *every* problem with its key path
//! (`routes[2].upstream: ...`). Other modules receive typed values only. Depends on nothing else
//! in the crate.

mod errors;
mod raw;
mod values;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

use policy::{DeviceSource, Mode, OnStale, Require, RoutePolicy};

pub use base::Secret;
pub use errors::{ConfigError, ConfigErrors};
pub use values::{landing_url, service_url, HostPattern, HostPort, IpNet};

use errors::Collector;
use raw::*;

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerSettings,
    pub admin: AdminSettings,
    /// Present when users sign in with Entra ID.
    pub entra: Option<EntraConfig>,
    pub session: SessionConfig,
    pub device: DeviceConfig,
    pub landing: LandingConfig,
    pub store: StoreConfig,
    pub sync: SyncConfig,
    /// Present when inventory comes from Jamf Pro.
    pub jamf: Option<JamfConfig>,
    pub listeners: Vec<ListenerConfig>,
    pub upstreams: Vec<UpstreamConfig>,
    pub routes: Vec<RouteConfig>,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Worker threads of the proxy service.
    pub threads: usize,
    /// After SIGTERM/SIGINT: time in-flight requests get to finish.
    pub grace_period: Duration,
    /// After the grace period: time the runtimes get to stop.
    pub graceful_shutdown_timeout: Duration,
    /// Clients whose `X-Forwarded-*` headers are trusted and appended to.
    pub trusted_proxies: Vec<IpNet>,
    /// Request line plus headers; larger requests get 431.
    pub max_request_header_bytes: usize,
    /// Reading a request's header and body from the client.
    pub client_read_timeout: Duration,
    /// Idle time allowed between two requests on one HTTP/1.1 connection.
    pub client_keepalive_timeout: Duration,
    /// Requests served on one HTTP/1.1 connection before it is closed; `None`: unlimited.
    pub client_keepalive_requests: Option<u32>,
    /// Idle time after which an HTTP/2 connection with no open stream is closed.
    pub h2_idle_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct AdminSettings {
    pub listen: SocketAddr,
    /// SHA-256 of the admin token (32 bytes); usually `PORTCULLIS__ADMIN__TOKEN_SHA256`.
    pub token_sha256: Option<[u8; 32]>,
    pub read_only_token_sha256: Option<[u8; 32]>,
    /// Entra app role that grants admin rights (default `Portcullis.Admin`).
    pub admin_role: String,
    /// Entra app role that grants read-only rights (default `Portcullis.Reader`).
    pub reader_role: String,
}

#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub name: String,
    pub address: SocketAddr,
    pub tls: Option<ListenerTls>,
}

#[derive(Debug, Clone)]
pub struct ListenerTls {
    /// The first certificate is the default when no SNI name matches.
    pub certificates: Vec<CertificateConfig>,
    pub http2: bool,
    /// CA of device certificates; `None`: no client certificates are asked for.
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct CertificateConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Names this certificate answers for; empty: the DNS names in its SAN extension.
    pub server_names: Vec<String>,
    /// Key path of this entry, for errors found when the files are read.
    pub key_path: String,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub name: String,
    pub addresses: Vec<HostPort>,
    pub tls: Option<UpstreamTls>,
    pub health_check: Option<HealthCheckConfig>,
    pub timeouts: UpstreamTimeouts,
}

#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// Server name sent in SNI and verified against the certificate.
    pub sni: String,
    /// CA bundle to verify the upstream with; `None`: the system roots.
    pub ca_file: Option<PathBuf>,
    /// `false` turns certificate and hostname verification off (logged as a warning at start).
    pub verify: bool,
    pub http2: bool,
}

#[derive(Debug, Clone)]
pub struct HealthCheckConfig {
    pub kind: HealthCheckKind,
    pub interval: Duration,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheckKind {
    Tcp,
    /// `GET path` with `Host: host`; any 2xx/3xx is healthy.
    Http {
        path: String,
        host: String,
    },
}

#[derive(Debug, Clone, Copy)]
pub struct UpstreamTimeouts {
    pub connect: Duration,
    /// TCP connect plus TLS handshake.
    pub total_connect: Duration,
    pub read: Duration,
    pub write: Duration,
    /// How long an idle pooled upstream connection is kept.
    pub idle: Duration,
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub name: String,
    pub host: HostPattern,
    pub path_prefix: String,
    /// Index into [`Config::upstreams`].
    pub upstream: usize,
    /// What the route demands (require, grace, posture age, on_stale, mode).
    pub policy: RoutePolicy,
    /// Group object ids; a user must be in at least one. Empty: no group check.
    pub groups_any: Vec<String>,
    /// Send a signed identity assertion to the upstream.
    pub assertion: bool,
}

/// How devices are identified and their posture cached.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// Tried in this order.
    pub sources: Vec<DeviceSource>,
    pub posture_cache_ttl: Duration,
    pub unknown_cache_ttl: Duration,
    pub lookup_timeout: Duration,
    pub change_poll_interval: Duration,
}

/// Where devices that Entra does not recognise are sent: the file's `landing.unrecognized` and
/// the run-time settings' landing choice are this one type (serialised as
/// `{"kind": "registration" | "access_denied" | "custom", "url": …}`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LandingChoice {
    /// The registration page: enroll with Jamf, or register with Entra.
    Registration,
    AccessDenied,
    /// 302 to this URL with `reason` and a signed `return_to`.
    Custom {
        url: String,
    },
}

/// Landing pages.
#[derive(Debug, Clone)]
pub struct LandingConfig {
    pub unrecognized: LandingChoice,
    /// Jamf Pro enrollment portal (for computers Jamf does not manage).
    pub enrollment_url: Option<String>,
    /// Where a Jamf-managed Mac registers with Entra (the Self Service policy URL).
    pub registration_url: Option<String>,
    /// Templates that replace the built-in ones (same file names).
    pub templates_dir: Option<PathBuf>,
    /// Who to contact, shown on every page.
    pub support: Option<String>,
    /// Hosts besides the routed ones that `return_to` may point at.
    pub allowed_return_hosts: Vec<String>,
    /// Key signing `X-Portcullis-Assertion`; `None`: a fresh key per process.
    pub assertion_key_file: Option<PathBuf>,
}

/// The sync loop with Microsoft Graph.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// Default: on when Entra has an app credential.
    pub enabled: bool,
    pub interval: Duration,
    pub intune: bool,
    pub intune_interval: Duration,
    pub full_reconcile: Duration,
    pub page_size: u32,
    pub requests_per_20s: u32,
    /// This node's name in the leader lease (default: the host name).
    pub node_name: String,
    /// Jamf attributes shared onto Entra devices: `extensionAttributeN` → template.
    pub share: std::collections::BTreeMap<String, String>,
}

/// Jamf Pro inventory.
#[derive(Debug, Clone)]
pub struct JamfConfig {
    pub url: String,
    pub client_id: String,
    /// Usually from `PORTCULLIS__JAMF__CLIENT_SECRET`.
    pub client_secret: Secret,
    /// `computers-inventory` version: 1 or 3.
    pub api_version: u8,
    pub interval: Duration,
    pub page_size: u32,
    /// HTTP Basic credentials Jamf Pro webhooks must carry; `None`: webhooks are off.
    pub webhook: Option<(String, Secret)>,
}

/// The store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub sqlite_path: PathBuf,
}

/// Entra ID: the tenant and the gateway's own app registration.
#[derive(Debug, Clone)]
pub struct EntraConfig {
    pub cloud: base::cloud::NationalCloud,
    /// The tenant users sign in to (lower-case GUID).
    pub tenant_id: String,
    /// Tenants whose tokens are accepted; `tenant_id` first (the admin API trusts app roles
    /// only from it).
    pub allowed_tenants: Vec<String>,
    /// The gateway's application (client) id.
    pub client_id: String,
    /// Further accepted audiences of v1 access tokens (App ID URIs).
    pub app_id_uris: Vec<String>,
    /// How the gateway proves it is the app: needed for browser sign-in and group look-ups.
    pub credential: Option<ClientCredentialConfig>,
    /// Sign-in authority base, default from the cloud (`https://login.microsoftonline.com`).
    pub authority_url: String,
    /// Microsoft Graph base, default from the cloud (`https://graph.microsoft.com`).
    pub graph_url: String,
    /// Base of v1 token issuers (`https://sts.windows.net`).
    pub v1_issuer_url: String,
    pub clock_skew: Duration,
    /// Minimum time between JWKS refreshes caused by unknown key ids (Microsoft: 5 min).
    pub jwks_min_refresh_interval: Duration,
    /// How long resolved group memberships (overage) are reused.
    pub group_cache_ttl: Duration,
}

/// The gateway's app credential towards Entra.
#[derive(Debug, Clone)]
pub enum ClientCredentialConfig {
    /// A client secret (usually from `PORTCULLIS__ENTRA__CLIENT_SECRET`).
    Secret(Secret),
    /// A certificate registered on the app; its private key signs client assertions.
    Certificate { cert: PathBuf, key: PathBuf },
    /// Secretless (workload identity federation): a client assertion read from this file,
    /// re-read on every use (the platform rotates it).
    AssertionFile(PathBuf),
}

impl ClientCredentialConfig {
    /// The file's key for this credential, for errors about it.
    pub fn key(&self) -> &'static str {
        match self {
            Self::Secret(_) => "entra.client_secret",
            Self::Certificate { .. } => "entra.client_certificate",
            Self::AssertionFile(_) => "entra.client_assertion_file",
        }
    }

    /// What kind of credential it is, as the admin API names it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Secret(_) => "client_secret",
            Self::Certificate { .. } => "certificate",
            Self::AssertionFile(_) => "assertion_file",
        }
    }
}

/// Browser sessions.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub cookie_name: String,
    /// 32 bytes sealing cookies; `None`: a random key per process (sessions do not survive a
    /// restart and are not shared between nodes; logged as a warning).
    pub cookie_key: Option<Secret>,
    /// A session ends this long after sign-in, whatever the refreshes.
    pub lifetime: Duration,
    /// A session unused this long ends.
    pub idle_timeout: Duration,
}

impl Config {
    /// Reads and validates the file at `path`, with overrides from the process environment
    /// (see [`Config::parse_with_overrides`]).
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                key: String::new(),
                message: format!("cannot read {}: {e}", path.display()),
            }])
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Self::parse_with_overrides(&text, base, std::env::vars())
    }

    /// Parses `text`; relative file paths in it are taken relative to `base_dir`.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Self, ConfigErrors> {
        Self::parse_with_overrides(text, base_dir, std::iter::empty())
    }

    /// Parses `text` after applying overrides: a variable `PORTCULLIS__ADMIN__LISTEN=...` sets
    /// `admin.listen`; `__` separates table names (lower-cased). This is how secrets are kept
    /// out of the file; the value is taken as a TOML value when it parses as one (numbers,
    /// booleans, arrays), else as a string.
    pub fn parse_with_overrides(
        text: &str,
        base_dir: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigErrors> {
        let file_error = |message: String| {
            ConfigErrors(vec![ConfigError {
                key: String::new(),
                message,
            }])
        };
        let mut table: toml::Table = toml::from_str(text).map_err(|e| file_error(toml_message(&e)))?;
        for (name, value) in env {
            if let Some(path) = name.strip_prefix(ENV_PREFIX) {
                set_path(&mut table, path, &value).map_err(|message| {
                    ConfigErrors(vec![ConfigError {
                        key: name.clone(),
                        message,
                    }])
                })?;
            }
        }
        let file: RawFile = toml::Value::Table(table)
            .try_into()
            .map_err(|e| file_error(toml_message(&e)))?;
        let mut c = Collector::default();
        let cfg = build(file, base_dir, &mut c);
        match cfg {
            Some(cfg) if c.is_empty() => Ok(cfg),
            _ => Err(c.finish()),
        }
    }

    /// One line for `check-config` and the start-up log.
    pub fn summary(&self) -> String {
        let tls = self.listeners.iter().filter(|l| l.tls.is_some()).count();
        format!(
            "{} listener(s) ({} TLS), {} upstream pool(s), {} route(s), admin on {}",
            self.listeners.len(),
            tls,
            self.upstreams.len(),
            self.routes.len(),
            self.admin.listen
        )
    }
}

/// Environment variables with this prefix override file values.
pub const ENV_PREFIX: &str = "PORTCULLIS__";

fn set_path(table: &mut toml::Table, path: &str, value: &str) -> Result<(), String> {
    let keys: Vec<String> = path.split("__").map(|k| k.to_ascii_lowercase()).collect();
    let Some((last, parents)) = keys.split_last() else {
        return Err("empty override".into());
    };
    let mut t = table;
    for k in parents {
        let entry = t
            .entry(k.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t = entry
            .as_table_mut()
            .ok_or_else(|| format!("{k:?} is not a table; only table keys can be overridden"))?;
    }
    let parsed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    t.insert(last.clone(), parsed);
    Ok(())
}

fn toml_message(e: &toml::de::Error) -> String {
    // toml's Display repeats the offending source line; the message plus line/column is enough.
    e.message().to_string()
}

fn item<T: DeserializeOwned>(c: &mut Collector, key: &str, v: toml::Value) -> Option<T> {
    match T::deserialize(v) {
        Ok(t) => Some(t),
        Err(e) => {
            c.push(key, e.message().to_string());
            None
        }
    }
}

fn dur(c: &mut Collector, key: String, v: Option<String>, default: Duration) -> Duration {
    match v {
        None => default,
        Some(s) => c.take(&key, values::duration(&s)).unwrap_or(default),
    }
}

fn positive(c: &mut Collector, key: &str, v: Option<i64>, default: i64, max: i64) -> i64 {
    match v {
        None => default,
        Some(n) if (1..=max).contains(&n) => n,
        Some(n) => {
            c.push(key, format!("{n} is out of range (1 to {max})"));
            default
        }
    }
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn build(file: RawFile, base: &Path, c: &mut Collector) -> Option<Config> {
    let server = build_server(file.server, c);
    let admin = build_admin(file.admin, c);
    let entra = file
        .entra
        .and_then(|v| item::<RawEntra>(c, "entra", v))
        .and_then(|raw| build_entra(raw, base, c));
    let device = build_device(
        file.device
            .and_then(|v| item::<RawDevice>(c, "device", v))
            .unwrap_or_default(),
        c,
    );
    let landing = build_landing(
        file.landing
            .and_then(|v| item::<RawLanding>(c, "landing", v))
            .unwrap_or_default(),
        base,
        c,
    );
    let store = StoreConfig {
        sqlite_path: resolve(
            base,
            &file
                .store
                .and_then(|v| item::<RawStore>(c, "store", v))
                .and_then(|s| s.sqlite_path)
                .unwrap_or_else(|| "portcullis.db".into()),
        ),
    };
    let has_credential = entra.as_ref().is_some_and(|e| e.credential.is_some());
    let sync = build_sync(
        file.sync
            .and_then(|v| item::<RawSync>(c, "sync", v))
            .unwrap_or_default(),
        has_credential,
        c,
    );
    let jamf = file
        .jamf
        .and_then(|v| item::<RawJamf>(c, "jamf", v))
        .and_then(|raw| build_jamf(raw, c));
    let session = build_session(
        file.session
            .and_then(|v| item::<RawSession>(c, "session", v))
            .unwrap_or_default(),
        c,
    );

    let mut listeners = Vec::new();
    if file.listeners.is_empty() {
        c.push("listeners", "at least one listener is required");
    }
    for (i, v) in file.listeners.into_iter().enumerate() {
        let key = format!("listeners[{i}]");
        if let Some(raw) = item::<RawListener>(c, &key, v) {
            if let Some(l) = build_listener(raw, &key, base, c) {
                listeners.push(l);
            }
        }
    }
    for (i, l) in listeners.iter().enumerate() {
        if listeners[..i].iter().any(|o| o.address == l.address) || l.address == admin.listen {
            c.push(
                format!("listeners[{i}].address"),
                format!("{} is used twice", l.address),
            );
        }
    }

    let mut upstreams = Vec::new();
    for (name, v) in file.upstreams {
        let key = format!("upstreams.{name}");
        if let Some(raw) = item::<RawUpstream>(c, &key, v) {
            if let Some(u) = build_upstream(name, raw, &key, base, c) {
                upstreams.push(u);
            }
        }
    }

    let mut routes = Vec::new();
    if file.routes.is_empty() {
        c.push("routes", "at least one route is required");
    }
    for (i, v) in file.routes.into_iter().enumerate() {
        let key = format!("routes[{i}]");
        if let Some(raw) = item::<RawRoute>(c, &key, v) {
            if let Some(r) = build_route(raw, &key, &upstreams, entra.is_some(), c) {
                routes.push((i, r));
            }
        }
    }
    for (n, (i, r)) in routes.iter().enumerate() {
        if let Some((j, _)) = routes[..n]
            .iter()
            .find(|(_, o)| o.host == r.host && o.path_prefix == r.path_prefix)
        {
            c.push(
                format!("routes[{i}]"),
                format!("same host and path_prefix as routes[{j}]; one of them could never match"),
            );
        }
        if routes[..n].iter().any(|(_, o)| o.name == r.name) {
            c.push(format!("routes[{i}].name"), format!("{:?} is used twice", r.name));
        }
    }

    Some(Config {
        server: server?,
        admin,
        entra,
        session,
        device,
        landing,
        store,
        sync,
        jamf,
        listeners,
        upstreams,
        routes: routes.into_iter().map(|(_, r)| r).collect(),
    })
}

fn build_server(v: Option<toml::Value>, c: &mut Collector) -> Option<ServerSettings> {
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

fn default_threads() -> i64 {
    std::thread::available_parallelism()
        .map(|n| n.get() as i64)
        .unwrap_or(2)
}

fn build_admin(v: Option<toml::Value>, c: &mut Collector) -> AdminSettings {
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
        // Byte slicing below needs ASCII; from_str_radix alone would also take a leading '+'.
        let bytes: Option<Vec<u8>> = (v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| {
                (0..32)
                    .map(|i| u8::from_str_radix(&v[2 * i..2 * i + 2], 16).ok())
                    .collect()
            })
            .flatten();
        match bytes.and_then(|b| <[u8; 32]>::try_from(b).ok()) {
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

fn build_listener(raw: RawListener, key: &str, base: &Path, c: &mut Collector) -> Option<ListenerConfig> {
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
    Some(ListenerConfig {
        name: raw.name.unwrap_or_else(|| key.to_string()),
        address: address?,
        tls,
    })
}

fn build_upstream(name: String, raw: RawUpstream, key: &str, base: &Path, c: &mut Collector) -> Option<UpstreamConfig> {
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

fn build_route(
    raw: RawRoute,
    key: &str,
    upstreams: &[UpstreamConfig],
    has_entra: bool,
    c: &mut Collector,
) -> Option<RouteConfig> {
    let require = match raw.require.as_deref().unwrap_or("compliant_device") {
        "none" => Some(Require::Nothing),
        "authenticated" => Some(Require::Authenticated),
        "registered_device" => Some(Require::RegisteredDevice),
        "compliant_device" => Some(Require::CompliantDevice),
        other => {
            c.push(
                format!("{key}.require"),
                format!("{other:?} is not a requirement (\"compliant_device\", \"registered_device\", \"authenticated\" or \"none\")"),
            );
            None
        }
    };
    if require.is_some_and(|r| r != Require::Nothing) && !has_entra {
        c.push(
            format!("{key}.require"),
            "this route requires signed-in users (the default) but there is no [entra] section; add one, or set require = \"none\" to open the route explicitly",
        );
    }
    let on_stale = match raw.on_stale.as_deref().unwrap_or("deny") {
        "deny" => Some(OnStale::Deny),
        "allow_last_known" => Some(OnStale::AllowLastKnown),
        other => {
            c.push(
                format!("{key}.on_stale"),
                format!("{other:?} is not \"deny\" or \"allow_last_known\""),
            );
            None
        }
    };
    let mode = match raw.mode.as_deref().unwrap_or("enforce") {
        "enforce" => Some(Mode::Enforce),
        "report_only" => Some(Mode::ReportOnly),
        other => {
            c.push(
                format!("{key}.mode"),
                format!("{other:?} is not \"enforce\" or \"report_only\""),
            );
            None
        }
    };
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
    })
}

fn build_entra(raw: RawEntra, base: &Path, c: &mut Collector) -> Option<EntraConfig> {
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

fn build_sync(raw: RawSync, has_credential: bool, c: &mut Collector) -> SyncConfig {
    let enabled = raw.enabled.unwrap_or(has_credential);
    if enabled && !has_credential {
        c.push("sync.enabled", "the sync needs [entra] with an app credential (client_secret, client_certificate or client_assertion_file)");
    }
    // The host name: a restarted gateway takes its own lease back at once. Several gateways
    // on one host sharing a store need distinct names.
    let node_name = raw.node_name.unwrap_or_else(|| {
        std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "node".into())
    });
    for k in raw.share.keys() {
        let n = k.strip_prefix("extensionAttribute").and_then(|n| n.parse::<u8>().ok());
        if !n.is_some_and(|n| (1..=15).contains(&n)) {
            c.push(
                format!("sync.share.{k}"),
                "keys are extensionAttribute1 to extensionAttribute15",
            );
        }
    }
    SyncConfig {
        enabled,
        interval: dur(c, "sync.interval".into(), raw.interval, Duration::from_secs(60)),
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

fn build_jamf(raw: RawJamf, c: &mut Collector) -> Option<JamfConfig> {
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

fn build_device(raw: RawDevice, c: &mut Collector) -> DeviceConfig {
    let mut sources = Vec::new();
    let names = raw
        .sources
        .unwrap_or_else(|| vec!["token".into(), "certificate".into(), "session".into()]);
    for (i, s) in names.iter().enumerate() {
        let src = match s.as_str() {
            "token" => DeviceSource::TokenClaim,
            "certificate" => DeviceSource::ClientCertificate,
            "session" => DeviceSource::Session,
            other => {
                c.push(
                    format!("device.sources[{i}]"),
                    format!("{other:?} is not a device source (token, certificate, session)"),
                );
                continue;
            }
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

fn build_landing(raw: RawLanding, base: &Path, c: &mut Collector) -> LandingConfig {
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
    if let Some(d) = &templates_dir {
        if !d.is_dir() {
            c.push("landing.templates_dir", format!("{} is not a directory", d.display()));
        }
    }
    LandingConfig {
        unrecognized,
        enrollment_url: url(c, "landing.enrollment_url", raw.enrollment_url),
        registration_url: url(c, "landing.registration_url", raw.registration_url),
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

fn build_session(raw: RawSession, c: &mut Collector) -> SessionConfig {
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

#[cfg(test)]
mod tests;
