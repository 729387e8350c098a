//! Signing keys per tenant, cached as Microsoft prescribes (reference §1.6): fetched at
//! start, refreshed in the background hourly with jitter, each key trusted for 24 h after the
//! fetch that returned it, an unknown `kid` triggering at most one synchronous refresh per
//! 5 minutes per tenant (single-flight), and the last good keys kept when a fetch fails.
//! Each tenant's keys are an immutable [`KeySet`] behind an `ArcSwap`: reads take no lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use aws_lc_rs::signature::{ParsedPublicKey, RsaPublicKeyComponents, RSA_PKCS1_2048_8192_SHA256};
use base64::Engine;
use serde::Deserialize;

/// How long a fetched key is trusted.
pub const KEY_TTL: Duration = Duration::from_secs(24 * 3600);
/// Minimum time between two refreshes caused by unknown key ids.
pub const UNKNOWN_KID_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// Background refresh period (plus up to 10 % jitter).
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(3600);

/// One verification key.
pub struct Key {
    /// RS256 verification with the key parsed once (keys under 2048 bits never verify).
    pub verifier: ParsedPublicKey,
    /// The key's own `issuer` (may hold the `{tenantid}` template).
    pub issuer: Option<String>,
}

/// The RS256 verifier for a JWK's base64url `n` and `e`; `None` when they are not an RSA key.
fn parse_rsa(n: &str, e: &str) -> Option<ParsedPublicKey> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let strip = |v: Vec<u8>| -> Vec<u8> {
        let first = v.iter().position(|b| *b != 0).unwrap_or(v.len());
        v[first..].to_vec()
    };
    let n = strip(b64.decode(n.trim_end_matches('=')).ok()?);
    let e = strip(b64.decode(e.trim_end_matches('=')).ok()?);
    RsaPublicKeyComponents { n, e }
        .to_parsed_public_key(&RSA_PKCS1_2048_8192_SHA256)
        .ok()
}

/// The keys of one tenant as of one fetch.
#[derive(Default)]
pub struct KeySet {
    keys: HashMap<String, Arc<Key>>,
    /// Unix seconds of the fetch; 0 = never fetched.
    fetched_at: u64,
}

impl KeySet {
    /// Parses a JWKS document; keys that are not RSA signing keys are skipped.
    pub fn from_jwks(body: &[u8], fetched_at: u64) -> Result<Self, JwksError> {
        #[derive(Deserialize)]
        struct Doc {
            keys: Vec<Jwk>,
        }
        #[derive(Deserialize)]
        struct Jwk {
            kty: Option<String>,
            #[serde(rename = "use")]
            use_: Option<String>,
            kid: Option<String>,
            n: Option<String>,
            e: Option<String>,
            issuer: Option<String>,
        }
        let doc: Doc = serde_json::from_slice(body).map_err(|e| JwksError::Body(e.to_string()))?;
        let mut keys = HashMap::new();
        for k in doc.keys {
            let (Some("RSA"), Some(kid), Some(n), Some(e)) = (k.kty.as_deref(), k.kid, k.n, k.e) else {
                continue;
            };
            if k.use_.as_deref().is_some_and(|u| u != "sig") {
                continue;
            }
            if let Some(verifier) = parse_rsa(&n, &e) {
                keys.insert(
                    kid,
                    Arc::new(Key {
                        verifier,
                        issuer: k.issuer,
                    }),
                );
            }
        }
        if keys.is_empty() {
            return Err(JwksError::Body("no usable RSA signing key".into()));
        }
        Ok(Self { keys, fetched_at })
    }

    /// A key that is known and still within its TTL at `now` (Unix seconds).
    pub fn get(&self, kid: &str, now: u64) -> Option<&Arc<Key>> {
        if now.saturating_sub(self.fetched_at) > KEY_TTL.as_secs() {
            return None;
        }
        self.keys.get(kid)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Why keys could not be fetched.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JwksError {
    #[error("JWKS request failed: {0}")]
    Http(String),
    #[error("JWKS endpoint answered {0}")]
    Status(u16),
    #[error("JWKS document rejected: {0}")]
    Body(String),
}

/// The key cache of one tenant.
pub struct TenantKeys {
    pub tenant: String,
    url: String,
    keys: ArcSwap<KeySet>,
    /// Unix milliseconds of the last refresh caused by an unknown kid.
    last_unknown_refresh_ms: AtomicU64,
    /// Serialises fetches so that concurrent unknown-kid requests cause one fetch.
    fetch_gate: tokio::sync::Mutex<()>,
    fetches: AtomicU64,
    /// Minimum time between refreshes caused by unknown key ids.
    min_interval: Duration,
}

impl TenantKeys {
    pub fn new(tenant: &str, url: String, min_interval: Duration) -> Self {
        Self {
            tenant: tenant.to_string(),
            url,
            min_interval,
            keys: ArcSwap::from_pointee(KeySet::default()),
            last_unknown_refresh_ms: AtomicU64::new(0),
            fetch_gate: tokio::sync::Mutex::new(()),
            fetches: AtomicU64::new(0),
        }
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<KeySet> {
        self.keys.load_full()
    }

    /// Installs keys directly (tests, and keys loaded from elsewhere).
    pub fn install(&self, set: KeySet) {
        self.keys.store(Arc::new(set));
    }

    /// How many fetches were attempted so far.
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Fetches the JWKS now; on failure the previous keys stay in place.
    pub async fn refresh(&self, http: &reqwest::Client) -> Result<usize, JwksError> {
        let _gate = self.fetch_gate.lock().await;
        self.fetch_locked(http).await
    }

    async fn fetch_locked(&self, http: &reqwest::Client) -> Result<usize, JwksError> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let resp = http
            .get(&self.url)
            .send()
            .await
            .map_err(|e| JwksError::Http(e.without_url().to_string()))?;
        if !resp.status().is_success() {
            return Err(JwksError::Status(resp.status().as_u16()));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| JwksError::Http(e.without_url().to_string()))?;
        let set = KeySet::from_jwks(&body, base::time::unix_now())?;
        let n = set.len();
        self.keys.store(Arc::new(set));
        Ok(n)
    }

    /// Called when a token names a kid we do not know: refreshes at most once per minimum
    /// interval ([`UNKNOWN_KID_INTERVAL`] by default); concurrent callers share one fetch.
    /// Returns whether the kid is known afterwards.
    pub async fn refresh_for_unknown(&self, http: &reqwest::Client, kid: &str) -> bool {
        let now_ms = base::time::unix_now_ms();
        let last = self.last_unknown_refresh_ms.load(Ordering::Acquire);
        if now_ms.saturating_sub(last) < self.min_interval.as_millis() as u64 {
            return self.snapshot().get(kid, base::time::unix_now()).is_some();
        }
        let _gate = self.fetch_gate.lock().await;
        // Another request may have refreshed while we waited for the gate.
        if self.snapshot().get(kid, base::time::unix_now()).is_some() {
            return true;
        }
        let last = self.last_unknown_refresh_ms.load(Ordering::Acquire);
        if base::time::unix_now_ms().saturating_sub(last) < self.min_interval.as_millis() as u64 {
            return false;
        }
        self.last_unknown_refresh_ms
            .store(base::time::unix_now_ms(), Ordering::Release);
        if let Err(e) = self.fetch_locked(http).await {
            tracing::warn!(tenant = %self.tenant, error = %e, "JWKS refresh for an unknown key id failed; keeping the last good keys");
        }
        self.snapshot().get(kid, base::time::unix_now()).is_some()
    }
}

/// Key caches for every allowed tenant.
pub struct Jwks {
    tenants: HashMap<String, Arc<TenantKeys>>,
    http: reqwest::Client,
}

impl Jwks {
    /// `url_for(tenant)` gives the tenant's JWKS URL (`{authority}/{tenant}/discovery/v2.0/keys`).
    pub fn new(
        tenants: &[String],
        url_for: impl Fn(&str) -> String,
        min_interval: Duration,
        http: reqwest::Client,
    ) -> Self {
        let tenants = tenants
            .iter()
            .map(|t| (t.clone(), Arc::new(TenantKeys::new(t, url_for(t), min_interval))))
            .collect();
        Self { tenants, http }
    }

    /// Takes the keys `previous` holds for tenants fetched from the same URL.
    pub fn keep_keys_of(&self, previous: &Jwks) {
        for (tid, t) in &self.tenants {
            if let Some(old) = previous.tenants.get(tid).filter(|old| old.url == t.url) {
                t.keys.store(old.snapshot());
            }
        }
    }

    pub fn tenant(&self, tid: &str) -> Option<&Arc<TenantKeys>> {
        self.tenants.get(tid)
    }

    pub fn tenants(&self) -> impl Iterator<Item = &Arc<TenantKeys>> {
        self.tenants.values()
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Fetches every tenant's keys; errors are returned per tenant.
    pub async fn refresh_all(&self) -> Vec<(String, Result<usize, JwksError>)> {
        let mut out = Vec::new();
        for t in self.tenants.values() {
            out.push((t.tenant.clone(), t.refresh(&self.http).await));
        }
        out
    }

    /// Fetches every tenant's keys, logging failures (the last good keys stay).
    pub async fn refresh_logged(&self) {
        for (tenant, r) in self.refresh_all().await {
            match r {
                Ok(n) => tracing::debug!(%tenant, keys = n, "JWKS refreshed"),
                Err(e) => {
                    tracing::warn!(%tenant, error = %e, "JWKS refresh failed; keeping the last good keys")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: &str = "7d3c5b0e-2f41-4c9a-9b8e-5a1e3f6c2d10";
    const PARTNER: &str = "4b1c2d3e-5f60-4a7b-8c9d-0e1f2a3b4c5d";

    fn jwks(tenants: &[&str], authority: &str) -> Jwks {
        let tenants: Vec<String> = tenants.iter().map(|t| t.to_string()).collect();
        Jwks::new(
            &tenants,
            |t| format!("{authority}/{t}/discovery/v2.0/keys"),
            UNKNOWN_KID_INTERVAL,
            reqwest::Client::new(),
        )
    }

    #[test]
    fn a_reload_keeps_the_keys_of_tenants_fetched_from_the_same_url() {
        let old = jwks(&[HOME], "https://login.example");
        let kept = jwks(&[HOME, PARTNER], "https://login.example");
        kept.keep_keys_of(&old);
        let snapshot = |j: &Jwks, t: &str| j.tenant(t).map(|k| k.snapshot()).unwrap();
        assert!(Arc::ptr_eq(&snapshot(&kept, HOME), &snapshot(&old, HOME)));
        assert!(snapshot(&kept, PARTNER).is_empty(), "a new tenant has nothing to keep");
        // Another authority (a national cloud): its keys are its own.
        let moved = jwks(&[HOME], "https://login.other.example");
        moved.keep_keys_of(&old);
        assert!(!Arc::ptr_eq(&snapshot(&moved, HOME), &snapshot(&old, HOME)));
    }
}
