//! The posture cache over the store: bounded, single-flight on a miss (one store read per
//! device however many requests wait), explicit negative entries for unknown devices with a
//! shorter lifetime, store reads under a timeout, invalidation by device id.
//!
//! A posture is *fresh* for `positive_ttl`; after that the next request re-reads it (one read
//! however many wait). When that read fails — the store is away — the last known posture is
//! kept and served, for up to `retain`: its age (`as_of`, from the store) is what each route's
//! `max_posture_age` and `on_stale` judge, exactly as for a fresh one. Only a device never seen
//! before (or changed since: the change follower drops it) gets `posture_unavailable`.
//! After a read fails because the store is away, the store counts as away for a few seconds:
//! stale postures are served and misses refused at once, without asking it, so an outage costs
//! one timeout per node rather than one per device.

use std::sync::atomic::{AtomicU64, Ordering};
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
    /// How long a posture is fresh (re-read after it).
    pub positive_ttl: Duration,
    pub negative_ttl: Duration,
    pub lookup_timeout: Duration,
    pub capacity: u64,
    /// How long a posture is kept to be served while the store cannot be read.
    pub retain: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            positive_ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(5),
            lookup_timeout: Duration::from_secs(2),
            capacity: 1_000_000,
            retain: Duration::from_secs(24 * 3600),
        }
    }
}

/// How long a stale posture whose re-read failed is served before the store is tried again.
const RETRY_STALE: Duration = Duration::from_secs(5);
/// After a read failed because the store is away, how long it counts as away: stale postures
/// are served and misses refused without asking it, so an outage costs one timeout per node,
/// not one per device.
const AWAY_FOR: Duration = Duration::from_secs(5);

/// A cached look-up and when it was read from the store.
#[derive(Debug, Clone)]
struct Entry {
    lookup: Lookup,
    read_at: tokio::time::Instant,
}

struct Ttl {
    retain: Duration,
    negative: Duration,
}

impl Ttl {
    fn of(&self, v: &Entry) -> Duration {
        match v.lookup {
            Lookup::Found(_) => self.retain,
            Lookup::Unknown => self.negative,
        }
    }
}

impl moka::Expiry<String, Entry> for Ttl {
    fn expire_after_create(&self, _k: &String, v: &Entry, _now: Instant) -> Option<Duration> {
        Some(self.of(v))
    }

    fn expire_after_update(&self, _k: &String, v: &Entry, _now: Instant, _left: Option<Duration>) -> Option<Duration> {
        Some(self.of(v))
    }
}

/// Posture by Entra device id.
pub struct PostureCache {
    store: Arc<dyn PostureStore>,
    cache: Cache<String, Entry>,
    timeout: Duration,
    fresh: Duration,
    /// Milliseconds after `epoch` until which the store counts as away (0: it answers).
    away_until: AtomicU64,
    epoch: tokio::time::Instant,
    /// Every invalidation, for what must follow a device's posture (open WebSockets): `Some`
    /// one device, `None` every device.
    changes: tokio::sync::broadcast::Sender<Option<Arc<str>>>,
}

/// One store read, under the timeout, turned into a look-up.
async fn read(store: Arc<dyn PostureStore>, key: String, timeout: Duration) -> Result<Entry, StoreError> {
    let evidence = tokio::time::timeout(timeout, store.device_evidence(&key))
        .await
        .map_err(|_| StoreError::Timeout(timeout))??;
    Ok(Entry {
        lookup: match posture_from(&key, &evidence, base::time::unix_now_i64()) {
            Some(p) => Lookup::Found(Arc::new(p)),
            None => Lookup::Unknown,
        },
        read_at: tokio::time::Instant::now(),
    })
}

impl PostureCache {
    pub fn new(store: Arc<dyn PostureStore>, s: CacheSettings) -> Self {
        let cache = Cache::builder()
            .max_capacity(s.capacity)
            .expire_after(Ttl {
                retain: s.retain.max(s.positive_ttl),
                negative: s.negative_ttl,
            })
            .build();
        Self {
            store,
            cache,
            timeout: s.lookup_timeout,
            fresh: s.positive_ttl,
            away_until: AtomicU64::new(0),
            epoch: tokio::time::Instant::now(),
            changes: tokio::sync::broadcast::channel(1024).0,
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn store_away(&self) -> bool {
        self.now_ms() < self.away_until.load(Ordering::Relaxed)
    }

    /// Notes a failed read: a transient one (the store away or slow) starts [`AWAY_FOR`].
    fn failed(&self, e: &StoreError) {
        if e.is_transient() {
            let until = self.now_ms().saturating_add(AWAY_FOR.as_millis() as u64);
            self.away_until.store(until, Ordering::Relaxed);
        }
    }

    /// The posture of `device_id` (any case). A miss reads the store once, under the timeout;
    /// errors are not cached. A known posture past its freshness is re-read; if that fails it
    /// is served as it was (its age tells the policy how old it is).
    pub async fn lookup(&self, device_id: &str) -> Result<Lookup, StoreError> {
        // Device ids are GUIDs, nearly always sent in lower case: no copy for those on a hit.
        let key: std::borrow::Cow<'_, str> = if device_id.bytes().any(|b| b.is_ascii_uppercase()) {
            device_id.to_ascii_lowercase().into()
        } else {
            device_id.into()
        };
        let hit = self.cache.get(key.as_ref()).await;
        match hit {
            Some(e) if e.read_at.elapsed() < self.fresh || matches!(e.lookup, Lookup::Unknown) => Ok(e.lookup),
            Some(stale) if self.store_away() => Ok(stale.lookup),
            Some(stale) => match self.refresh(key.into_owned()).await {
                Ok(fresh) => Ok(fresh),
                Err(err) => {
                    self.failed(&err);
                    tracing::warn!(device = device_id, error = %err, "posture re-read failed; serving the last known posture");
                    // Not again for a few seconds: while the store is away, requests for this
                    // device are served at once instead of each waiting out the timeout.
                    let pause = RETRY_STALE.min(self.fresh);
                    let now = tokio::time::Instant::now();
                    let read_at = now.checked_sub(self.fresh.saturating_sub(pause)).unwrap_or(now);
                    self.cache
                        .insert(
                            device_id.to_ascii_lowercase(),
                            Entry {
                                lookup: stale.lookup.clone(),
                                read_at,
                            },
                        )
                        .await;
                    Ok(stale.lookup)
                }
            },
            None if self.store_away() => Err(StoreError::Away),
            None => {
                let (store, timeout, key) = (self.store.clone(), self.timeout, key.into_owned());
                self.cache
                    .try_get_with(key.clone(), read(store, key, timeout))
                    .await
                    .map(|e| e.lookup)
                    .map_err(|e: Arc<StoreError>| {
                        self.failed(&e);
                        (*e).clone()
                    })
            }
        }
    }

    /// Re-reads a stale entry: one read however many requests find it stale (the others wait
    /// for it and take its result).
    async fn refresh(&self, key: String) -> Result<Lookup, StoreError> {
        use moka::ops::compute::{CompResult, Op};
        let (store, timeout, fresh) = (self.store.clone(), self.timeout, self.fresh);
        let (k, again) = (key.clone(), key.clone());
        let r = self
            .cache
            .entry(key)
            .and_try_compute_with(|current| async move {
                if current.as_ref().is_some_and(|c| c.value().read_at.elapsed() < fresh) {
                    // Another request refreshed it meanwhile.
                    return Ok::<_, StoreError>(Op::Nop);
                }
                Ok(Op::Put(read(store, k, timeout).await?))
            })
            .await?;
        match r {
            CompResult::Inserted(e) | CompResult::ReplacedWith(e) | CompResult::Unchanged(e) => {
                Ok(e.into_value().lookup)
            }
            // Invalidated while it was read (the device changed): this request reads it anew.
            CompResult::StillNone(_) | CompResult::Removed(_) => {
                Ok(read(self.store.clone(), again, self.timeout).await?.lookup)
            }
        }
    }

    pub async fn invalidate(&self, device_id: &str) {
        let id = device_id.to_ascii_lowercase();
        self.cache.invalidate(&id).await;
        // Nobody listening is fine: nothing follows this device.
        let _ = self.changes.send(Some(id.into()));
    }

    /// Drops every cached posture (the follower lost track of the change log).
    pub fn invalidate_all(&self) {
        self.cache.invalidate_all();
        let _ = self.changes.send(None);
    }

    /// The invalidations from now on: `Some(device id)` or `None` (every device). A receiver
    /// that falls behind gets `Lagged` and must treat it as every device.
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<Option<Arc<str>>> {
        self.changes.subscribe()
    }

    /// How long a request waits for the store (`device.lookup_timeout`).
    pub fn lookup_timeout(&self) -> Duration {
        self.timeout
    }

    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }

    /// The posture with the oldest evidence among those this node holds — what it enforces
    /// for that device now — with its device id. A walk over the cache: for an admin's page,
    /// never the request path.
    pub fn oldest(&self) -> Option<(String, Arc<Posture>)> {
        self.cache
            .iter()
            .filter_map(|(k, e)| match &e.lookup {
                Lookup::Found(p) => Some(((*k).clone(), p.clone())),
                Lookup::Unknown => None,
            })
            .min_by_key(|(_, p)| p.as_of)
    }
}
