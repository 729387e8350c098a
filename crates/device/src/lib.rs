//! Devices: identifying the device of a request, computing its posture from the store, and
//! the posture cache the request path reads (with the change follower that keeps it current).
//!
//! May depend on `policy` (posture types), `store` (read traits), `config` types and `base`.
//! Never on `access`, `proxy`, `admin` or `sync`.

pub mod cache;
pub mod changes;
pub mod identify;
pub mod posture;

pub use cache::{CacheSettings, Lookup, PostureCache};

use std::sync::Arc;

use identify::CertIdentity;
use policy::DeviceSource;
use store::PostureStore;

/// Device identification and posture for the request path.
pub struct Devices {
    pub cache: Arc<PostureCache>,
    pub store: Arc<dyn PostureStore>,
    sources: Vec<DeviceSource>,
    /// Certificate CN/serial → Entra device id (through Jamf inventory), with negatives.
    by_serial: moka::future::Cache<String, Option<String>>,
}

impl Devices {
    /// Devices as `[device]` configures them, over `store`.
    pub fn from_config(cfg: &config::DeviceConfig, store: Arc<dyn PostureStore>) -> Self {
        let cache = Arc::new(PostureCache::new(
            store.clone(),
            CacheSettings {
                positive_ttl: cfg.posture_cache_ttl,
                negative_ttl: cfg.unknown_cache_ttl,
                lookup_timeout: cfg.lookup_timeout,
                capacity: 1_000_000,
                ..CacheSettings::default()
            },
        ));
        Self::new(store, cache, cfg.sources.clone())
    }

    pub fn new(store: Arc<dyn PostureStore>, cache: Arc<PostureCache>, sources: Vec<DeviceSource>) -> Self {
        let by_serial = moka::future::Cache::builder()
            .max_capacity(100_000)
            .time_to_live(std::time::Duration::from_secs(60))
            .build();
        Self {
            cache,
            store,
            sources,
            by_serial,
        }
    }

    /// The device of a request and where its identity came from, trying the configured sources
    /// in order: the bearer token's `deviceid` claim, the client certificate, the device bound
    /// to the browser session at sign-in.
    pub async fn identify(
        &self,
        token_device: Option<&str>,
        session_device: Option<&str>,
        cert: Option<&CertIdentity>,
    ) -> Option<(String, DeviceSource)> {
        for source in &self.sources {
            let found = match source {
                DeviceSource::TokenClaim => token_device.map(str::to_string),
                DeviceSource::Session => session_device.map(str::to_string),
                DeviceSource::ClientCertificate => match cert {
                    Some(c) => match &c.device_id {
                        Some(d) => Some(d.clone()),
                        None => self.by_serial(c).await,
                    },
                    None => None,
                },
            };
            if let Some(d) = found {
                return Some((d.to_ascii_lowercase(), *source));
            }
        }
        None
    }

    async fn by_serial(&self, c: &CertIdentity) -> Option<String> {
        for candidate in c.common_name.iter().chain(std::iter::once(&c.serial)) {
            let store = self.store.clone();
            let key = candidate.clone();
            let timeout = self.cache.lookup_timeout();
            // Under the look-up timeout; an error is not cached (the next request asks again),
            // an answer is, negative ones included.
            let found = self
                .by_serial
                .try_get_with(key.clone(), async move {
                    let computer = tokio::time::timeout(timeout, store.computer_by_serial(&key))
                        .await
                        .map_err(|_| store::StoreError::Timeout(timeout))??;
                    Ok::<_, store::StoreError>(
                        computer.and_then(|c| c.accounts.iter().find_map(|a| a.entra_device_id.clone())),
                    )
                })
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "serial look-up failed");
                    None
                });
            if found.is_some() {
                return found;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests;
