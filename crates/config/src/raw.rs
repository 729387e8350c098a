//! The serde mirror of the configuration file. Private to `config/`: every field is a plain
//! string, number or table so that deserialisation rarely fails and `config::load` can report
//! every semantic error with its key path in one pass. Keys no field takes are collected by
//! `serde_ignored` as the file is read (each one an error), not refused one at a time.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawServer {
    pub threads: Option<i64>,
    pub grace_period: Option<String>,
    pub graceful_shutdown_timeout: Option<String>,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    pub max_request_header_bytes: Option<i64>,
    pub client_read_timeout: Option<String>,
    pub client_keepalive_timeout: Option<String>,
    pub client_keepalive_requests: Option<i64>,
    pub h2_idle_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawAdmin {
    pub listen: Option<String>,
    /// Hex SHA-256 of the admin API token (full rights).
    pub token_sha256: Option<String>,
    /// Hex SHA-256 of a read-only token.
    pub read_only_token_sha256: Option<String>,
    /// Entra app roles granting admin / read-only rights to bearer tokens.
    pub admin_role: Option<String>,
    pub reader_role: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawListener {
    pub name: Option<String>,
    pub address: String,
    pub tls: Option<RawListenerTls>,
    /// The listener answers an ingress's authorization checks instead of proxying.
    pub forward_auth: Option<RawForwardAuth>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawForwardAuth {
    /// `nginx`, `caddy`, `traefik` or `envoy`: which headers describe the request.
    pub ingress: Option<String>,
    /// Addresses (CIDR) of the ingress; checks from anywhere else are refused.
    pub trusted: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawListenerTls {
    #[serde(default)]
    pub certificates: Vec<RawCertificate>,
    pub http2: Option<bool>,
    /// CA that issues device certificates (mTLS); clients may still connect without one.
    pub client_ca: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawCertificate {
    pub cert: String,
    pub key: String,
    #[serde(default)]
    pub server_names: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawUpstream {
    #[serde(default)]
    pub addresses: Vec<String>,
    pub tls: Option<RawUpstreamTls>,
    pub health_check: Option<RawHealthCheck>,
    pub connect_timeout: Option<String>,
    pub total_connect_timeout: Option<String>,
    pub read_timeout: Option<String>,
    pub write_timeout: Option<String>,
    pub idle_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawUpstreamTls {
    pub sni: Option<String>,
    pub ca_file: Option<String>,
    pub verify: Option<bool>,
    pub http2: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawHealthCheck {
    pub kind: Option<String>,
    pub path: Option<String>,
    pub host: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawRoute {
    pub name: Option<String>,
    pub host: Option<String>,
    pub path_prefix: Option<String>,
    pub upstream: String,
    pub require: Option<String>,
    #[serde(default)]
    pub groups_any: Vec<String>,
    pub allow_grace_period: Option<bool>,
    pub max_posture_age: Option<String>,
    pub on_stale: Option<String>,
    pub mode: Option<String>,
    /// Send `X-Portcullis-Assertion` (a signed JWT) to the upstream.
    pub assertion: Option<bool>,
    /// Tell a user in an Intune grace period once per browser session (default true).
    pub grace_notice: Option<bool>,
    /// Close open WebSockets whose device is refused (default true).
    pub follow_posture: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawDevice {
    pub sources: Option<Vec<String>>,
    pub posture_cache_ttl: Option<String>,
    pub unknown_cache_ttl: Option<String>,
    pub lookup_timeout: Option<String>,
    pub change_poll_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawLanding {
    pub unrecognized: Option<String>,
    pub custom_url: Option<String>,
    pub enrollment_url: Option<String>,
    pub registration_url: Option<String>,
    pub self_service_url: Option<String>,
    pub templates_dir: Option<String>,
    pub support: Option<String>,
    #[serde(default)]
    pub allowed_return_hosts: Vec<String>,
    /// PKCS#8 PEM P-256 key signing `X-Portcullis-Assertion` (default: a key per process).
    pub assertion_key_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawSync {
    pub enabled: Option<bool>,
    pub interval: Option<String>,
    pub intune: Option<bool>,
    pub intune_interval: Option<String>,
    pub full_reconcile: Option<String>,
    pub page_size: Option<i64>,
    pub requests_per_20s: Option<i64>,
    pub node_name: Option<String>,
    pub lease_ttl: Option<String>,
    /// `extensionAttributeN = "template"`: Jamf inventory shared onto Entra devices.
    #[serde(default)]
    pub share: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawJamf {
    pub url: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub api_version: Option<String>,
    pub interval: Option<String>,
    pub page_size: Option<i64>,
    pub webhook_username: Option<String>,
    pub webhook_password: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawStore {
    pub url: Option<String>,
    pub sqlite_path: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<String>,
    pub pool_size: Option<i64>,
    pub connect_timeout: Option<String>,
    pub query_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawEntra {
    pub cloud: Option<String>,
    pub tenant_id: Option<String>,
    #[serde(default)]
    pub allowed_tenants: Vec<String>,
    pub client_id: Option<String>,
    #[serde(default)]
    pub app_id_uris: Vec<String>,
    pub client_secret: Option<String>,
    pub client_certificate: Option<String>,
    pub client_certificate_key: Option<String>,
    pub client_assertion_file: Option<String>,
    pub authority_url: Option<String>,
    pub graph_url: Option<String>,
    pub v1_issuer_url: Option<String>,
    pub clock_skew: Option<String>,
    pub jwks_min_refresh_interval: Option<String>,
    pub group_cache_ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawSession {
    pub cookie_name: Option<String>,
    pub cookie_key: Option<String>,
    pub lifetime: Option<String>,
    pub idle_timeout: Option<String>,
}

/// Sections are kept as raw TOML values and deserialised one item at a time so that one bad
/// item does not hide the errors in the others.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawFile {
    pub server: Option<toml::Value>,
    pub admin: Option<toml::Value>,
    pub entra: Option<toml::Value>,
    pub session: Option<toml::Value>,
    pub device: Option<toml::Value>,
    pub landing: Option<toml::Value>,
    pub store: Option<toml::Value>,
    pub sync: Option<toml::Value>,
    pub jamf: Option<toml::Value>,
    #[serde(default)]
    pub listeners: Vec<toml::Value>,
    #[serde(default)]
    pub upstreams: BTreeMap<String, toml::Value>,
    #[serde(default)]
    pub routes: Vec<toml::Value>,
}
