//! Configuration: the only place where strings from the file become typed values.
//!
//! [`Config::load`] reads the file (and the host name, the default lease name) and hands the
//! text to [`Config::parse_with_overrides`], which is pure: environment overrides (`env`),
//! then the file's tables into typed values, section by section (`build`), reporting *every*
//! problem with its key path (`routes[2].upstream: ...`). Other crates receive typed values
//! only; the files the configuration names (certificates, keys, templates) are read by the
//! components that use them, and `check-config` runs those too.
//!
//! Depends on `policy` (the route policy types and their names) and `base`.

mod build;
mod env;
mod errors;
mod raw;
mod values;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use policy::{DeviceSource, Mode, OnStale, Require, RoutePolicy};

pub use base::Secret;
pub use errors::{ConfigError, ConfigErrors};
pub use values::{landing_url, service_url, HostPattern, HostPort, IpNet};

use build::toml_message;
use env::set_path;
use errors::Collector;
use raw::*;

/// Environment variables with this prefix override file values.
pub const ENV_PREFIX: &str = "PORTCULLIS__";

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
    /// The file it was read from ([`Config::load`]), which a reload reads again; `None` for a
    /// configuration built in memory (the demo).
    pub source: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Data-plane workers: one thread each, a current-thread runtime with its own
    /// `SO_REUSEPORT` listeners and its own upstream connections.
    pub threads: usize,
    /// After SIGTERM/SIGINT: how long open connections get to finish their requests (and
    /// upgraded WebSocket connections, which are then closed). Any duration.
    pub grace_period: Duration,
    /// After the drain: how long the background tasks (sync loop, followers, admin API) get
    /// to stop before the process exits. Any duration.
    pub graceful_shutdown_timeout: Duration,
    /// Clients whose `X-Forwarded-*` headers are trusted and appended to.
    pub trusted_proxies: Vec<IpNet>,
    /// Request line plus headers; larger requests get 431. (hyper also answers 431 to a
    /// header beyond its read buffer, about 400 KB, or with more than 100 fields.)
    pub max_request_header_bytes: usize,
    /// The TLS handshake, and each wait for the next piece of a request body (a client that
    /// stops sending mid-body). Not the request header: see `client_keepalive_timeout`.
    pub client_read_timeout: Duration,
    /// How long a connection may have no request in progress before it is closed: between
    /// two requests of a kept-alive HTTP/1.1 connection, before a new connection's first
    /// request, or while a request header trickles in.
    pub client_keepalive_timeout: Duration,
    /// Requests served on one HTTP/1.1 connection before it is closed (`Connection: close` on
    /// the last response); `None`: unlimited.
    pub client_keepalive_requests: Option<u32>,
    /// An HTTP/2 connection with no open stream for this long is closed with `GOAWAY`;
    /// checked once per period, so it closes between one and two periods after its last
    /// stream ends. A connection that never sent a request is closed after it too.
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
    /// Answers an ingress's authorization checks (nginx `auth_request`, Caddy `forward_auth`,
    /// Traefik ForwardAuth, Envoy `ext_authz`) instead of proxying.
    pub forward_auth: Option<ForwardAuthConfig>,
}

/// A forward-auth listener: which ingress describes the requests, and from where.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardAuthConfig {
    pub ingress: Ingress,
    /// The ingress's addresses: only checks from these are answered (default: loopback).
    pub trusted: Vec<IpNet>,
}

/// The ingress in front of a forward-auth listener, which fixes the headers that describe the
/// original request; any other forwarding header is ignored, so a client cannot add one the
/// ingress passes through unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingress {
    /// `X-Original-Method`, `X-Original-URI`, `X-Forwarded-Host`, `X-Forwarded-Proto`,
    /// `X-Real-IP`, as the documented `auth_request` snippet sets them.
    Nginx,
    /// Kubernetes ingress-nginx's `auth-url`: `X-Original-URL` (the whole URL, set by the
    /// controller), `X-Original-Method`, `X-Real-IP`; it passes the client's headers on too,
    /// so no other is read.
    IngressNginx,
    /// `X-Forwarded-Method`, `-Uri`, `-Host`, `-Proto`, `-For`, as `forward_auth` sets them.
    Caddy,
    /// The same headers, as ForwardAuth sets them.
    Traefik,
    /// The HTTP `ext_authz` check: the original method, `Host` and headers, the original path
    /// after the check prefix, `X-Forwarded-Proto` and `X-Forwarded-For`.
    Envoy,
}

impl Ingress {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Nginx => "nginx",
            Self::IngressNginx => "ingress-nginx",
            Self::Caddy => "caddy",
            Self::Traefik => "traefik",
            Self::Envoy => "envoy",
        }
    }
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
    /// CA bundle to verify the upstream with; `None`: Mozilla's root set built into the
    /// binary (`webpki-roots`), not the system store.
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
    /// TCP connect.
    pub connect: Duration,
    /// TCP connect plus TLS handshake.
    pub total_connect: Duration,
    /// The wait for the response head once the request body is sent, and each wait for the
    /// next piece of the response body.
    pub read: Duration,
    /// The wait while the upstream takes none of the request body.
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
    /// Browser navigations of a user whose device is in an Intune grace period get a notice
    /// with its deadline once per browser session before the app.
    pub grace_notice: bool,
    /// An open WebSocket (or other upgraded connection) is closed when its device is refused
    /// (an enforcing route that requires a device).
    pub follow_posture: bool,
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// Self Service (or Company Portal), offered on the remediation page.
    pub self_service_url: Option<String>,
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
    /// How long the leader's lease lasts without a renewal (default: three intervals, at
    /// least 30 s).
    pub lease_ttl: Duration,
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
pub enum StoreConfig {
    /// The embedded default: one SQLite file, one node.
    Sqlite { path: PathBuf },
    /// Several nodes on one PostgreSQL database.
    Postgres(PostgresConfig),
}

/// `[store] url = "postgres://…"`.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// The URL as written (it may carry `sslmode`, `sslrootcert`, `target_session_attrs`,
    /// `options`); a secret, as it may hold a password.
    pub url: Secret,
    /// `scheme://user@host:port/database`, for logs and `check-config`.
    pub display: String,
    /// `store.password` (usually `PORTCULLIS__STORE__PASSWORD`); wins over the URL's.
    pub password: Option<Secret>,
    /// `store.password_file`: read at start (and by `check-config`), trailing newline dropped.
    pub password_file: Option<PathBuf>,
    pub pool_size: u32,
    pub connect_timeout: Duration,
    /// `store.query_timeout`: the longest any store call may take, from taking a connection to
    /// the answer, so a database that stops answering (a black-holed network) fails calls
    /// instead of hanging them.
    pub query_timeout: Duration,
}

impl StoreConfig {
    /// Where the store is, without secrets.
    pub fn describe(&self) -> String {
        match self {
            Self::Sqlite { path } => format!("SQLite {}", path.display()),
            Self::Postgres(p) => format!("PostgreSQL {}", p.display),
        }
    }
}

/// Entra ID: the tenant and the gateway's own app registration.
#[derive(Debug, Clone, PartialEq)]
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
#[derive(Debug, Clone, PartialEq)]
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
        // The host name names this node in the sync lease unless `sync.node_name` does.
        let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string());
        let host = host.as_deref().ok().filter(|h| !h.is_empty()).unwrap_or("node");
        let mut cfg = Self::parse_with_overrides(&text, base, std::env::vars(), host)?;
        cfg.source = Some(path.to_path_buf());
        Ok(cfg)
    }

    /// Parses `text`; relative file paths in it are taken relative to `base_dir`. The node is
    /// named `node` unless the file names it.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Self, ConfigErrors> {
        Self::parse_with_overrides(text, base_dir, std::iter::empty(), "node")
    }

    /// Parses `text` after applying overrides: a variable `PORTCULLIS__ADMIN__LISTEN=...` sets
    /// `admin.listen`; `__` separates table names (lower-cased). This is how secrets are kept
    /// out of the file; the value is taken as a TOML value when it parses as one (numbers,
    /// booleans, arrays), else as a string.
    pub fn parse_with_overrides(
        text: &str,
        base_dir: &Path,
        env: impl IntoIterator<Item = (String, String)>,
        host_name: &str,
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
        let mut c = Collector::default();
        // Unknown top-level tables are errors in `c`, reported with the rest.
        let Some(file) = build::item::<RawFile>(&mut c, "", toml::Value::Table(table)) else {
            return Err(c.finish());
        };
        let cfg = build::build(file, base_dir, host_name, &mut c);
        match cfg {
            Some(cfg) if c.is_empty() => Ok(cfg),
            _ => Err(c.finish()),
        }
    }

    /// One line for `check-config` and the start-up log.
    pub fn summary(&self) -> String {
        let tls = self.listeners.iter().filter(|l| l.tls.is_some()).count();
        format!(
            "{} listener(s) ({} TLS), {} upstream pool(s), {} route(s), admin on {}, store {}",
            self.listeners.len(),
            tls,
            self.upstreams.len(),
            self.routes.len(),
            self.admin.listen,
            self.store.describe()
        )
    }
}

#[cfg(test)]
mod tests;
