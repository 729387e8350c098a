//! The posture cache over the store: bounded, single-flight on a miss (one store read per
//! device however many requests wait), explicit negative entries for unknown devices with a
//! shorter lifetime, store reads under a timeout, invalidation by device id.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::future::Cache;

use super::posture::posture_from;
use policy::Posture;
use store::{PostureStore, StoreError};

/// A cached lookup: the posture, or the explicit fact that no source knows the device.
#[derive(Debug, Clone)]
pub enum Lookup {
    Found(Arc<Posture>),
    Unknown,
}

/// Cache settings.
#[derive(Debug, Clone, Copy)]
pub struct CacheSettings {
    pub positive_ttl: Duration,
    pub negative_ttl: Duration,
    pub lookup_timeout: Duration,
    pub capacity: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            positive_ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(5),
            lookup_timeout: Duration::from_secs(2),
            capacity: 1_000_000,
        }
    }
}

struct Ttl {
    positive: Duration,
    negative: Duration,
}

impl moka::Expiry<String, Lookup> for Ttl {
    fn expire_after_create(&self, _k: &String, v: &Lookup, _now: Instant) -> Option<Duration> {
        Some(match v {
            Lookup::Found(_) => self.positive,
            Lookup::Unknown => self.negative,
        })
    }
}

/// Posture by Entra device id.
pub struct PostureCache {
    store: Arc<dyn PostureStore>,
    cache: Cache<String, Lookup>,
    timeout: Duration,
}

impl PostureCache {
    pub fn new(store: Arc<dyn PostureStore>, s: CacheSettings) -> Self {
        let cache = Cache::builder()
            .max_capacity(s.capacity)
            .expire_after(Ttl {
                positive: s.positive_ttl,
                negative: s.negative_ttl,
            })
            .build();
        Self {
            store,
            cache,
            timeout: s.lookup_timeout,
        }
    }

    /// The posture of `device_id` (any case). A miss reads the store once, under the timeout;
    /// errors are not cached.
    pub async fn lookup(&self, device_id: &str) -> Result<Lookup, StoreError> {
        let key = device_id.to_ascii_lowercase();
        if let Some(hit) = self.cache.get(&key).await {
            return Ok(hit);
        }
        let store = self.store.clone();
        let timeout = self.timeout;
        let k = key.clone();
        self.cache
            .try_get_with(key, async move {
                let evidence = tokio::time::timeout(timeout, store.device_evidence(&k))
                    .await
                    .map_err(|_| StoreError::Timeout(timeout))??;
                Ok::<_, StoreError>(match posture_from(&k, &evidence, base::time::unix_now_i64()) {
                    Some(p) => Lookup::Found(Arc::new(p)),
                    None => Lookup::Unknown,
                })
            })
            .await
            .map_err(|e: Arc<StoreError>| (*e).clone())
    }

    pub async fn invalidate(&self, device_id: &str) {
        self.cache.invalidate(&device_id.to_ascii_lowercase()).await;
    }

    /// Drops every cached posture (the follower lost track of the change log).
    pub fn invalidate_all(&self) {
        self.cache.invalidate_all();
    }

    /// How long a request waits for the store (`device.lookup_timeout`).
    pub fn lookup_timeout(&self) -> Duration {
        self.timeout
    }

    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }
}
