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
//!
//! The table is this crate's own, not moka: a million devices must fit in the gateway's
//! memory budget (DESIGN.md §6), and moka's bookkeeping alone takes ~300 bytes an entry
//! (measured). Here an entry is a 24-byte key (a GUID as its 128 bits), 24 bytes of slot and
//! the shared posture; 64 shards, each a `HashMap` behind an `RwLock` held only for a map
//! operation (never across an await); a full shard evicts what expired and what was not read
//! since its last eviction (a clock's second chance), then arbitrary entries down to 7/8.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

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
    /// Devices held at most (rounded up to a multiple of the shard count).
    pub capacity: u64,
    /// How long a posture is kept to be served while the store cannot be read, counted from
    /// its last successful read.
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
const SHARDS: usize = 64;

/// A device id as the table keys it: an Entra device id (a GUID, in any case) as its 128 bits,
/// anything else as its lower-case text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Guid([u64; 2]),
    Other(Box<str>),
}

impl Key {
    fn of(device_id: &str) -> Self {
        match parse_guid(device_id) {
            Some(g) => Key::Guid(g),
            None => Key::Other(device_id.to_ascii_lowercase().into()),
        }
    }

    /// The id as the store and the admin API spell it (lower case, hyphenated).
    fn text(&self) -> String {
        match self {
            Key::Guid([hi, lo]) => {
                let h = format!("{hi:016x}{lo:016x}");
                format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
            }
            Key::Other(s) => s.to_string(),
        }
    }
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` in hex digits of either case.
fn parse_guid(s: &str) -> Option<[u64; 2]> {
    let b = s.as_bytes();
    if b.len() != 36 || [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
        return None;
    }
    let mut v: u128 = 0;
    for (i, &c) in b.iter().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            continue;
        }
        let d = (c as char).to_digit(16)?;
        v = (v << 4) | u128::from(d);
    }
    Some([(v >> 64) as u64, v as u64])
}

/// One cached look-up. The posture is shared with the requests that read it.
struct Slot {
    /// `None`: no source knows the device (a negative entry).
    posture: Option<Arc<Posture>>,
    /// The last successful store read, in milliseconds after the cache's epoch.
    read_at: u64,
    /// After a failed re-read: no new try before `read_at + retry_after` (milliseconds).
    retry_after: u32,
    /// Read since the shard's last eviction.
    visited: AtomicBool,
}

/// What a store read gives: the look-up and when it was read.
#[derive(Clone)]
struct Read {
    posture: Option<Arc<Posture>>,
    read_at: u64,
}

/// One store read that every request for the device waits on (single flight). Should the
/// request running it go away, the next waiter runs it.
type Flight = tokio::sync::OnceCell<Result<Read, StoreError>>;

#[derive(Default)]
struct Shard {
    map: RwLock<HashMap<Key, Slot>>,
    flights: Mutex<HashMap<Key, Arc<Flight>>>,
}

/// Drops a flight nobody waits on any more: the one request reading it went away (its client
/// disconnected) before the read ended. Others waiting would run the read themselves.
struct Abandoned<'a> {
    shard: &'a Shard,
    key: &'a Key,
    flight: &'a Arc<Flight>,
}

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        if self.flight.initialized() {
            return;
        }
        let mut flights = lock(&self.shard.flights);
        // The map's reference and this one: nobody else has it (they take it under this lock).
        if Arc::strong_count(self.flight) <= 2 && flights.get(self.key).is_some_and(|f| Arc::ptr_eq(f, self.flight)) {
            flights.remove(self.key);
        }
    }
}

/// Posture by Entra device id.
pub struct PostureCache {
    store: Arc<dyn PostureStore>,
    shards: Box<[Shard]>,
    /// Picks the shard of a non-GUID key (a GUID's own bits pick it otherwise).
    hasher: std::collections::hash_map::RandomState,
    per_shard: usize,
    timeout: Duration,
    fresh: u64,
    negative: u64,
    retain: u64,
    /// Milliseconds after `epoch` until which the store counts as away (0: it answers).
    away_until: AtomicU64,
    epoch: tokio::time::Instant,
    /// Every invalidation, for what must follow a device's posture (open WebSockets): `Some`
    /// one device, `None` every device.
    changes: tokio::sync::broadcast::Sender<Option<Arc<str>>>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn read_lock<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write_lock<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

fn lock<T>(l: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    l.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PostureCache {
    pub fn new(store: Arc<dyn PostureStore>, s: CacheSettings) -> Self {
        let capacity = usize::try_from(s.capacity).unwrap_or(usize::MAX).max(1);
        Self {
            store,
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
            per_shard: capacity.div_ceil(SHARDS),
            timeout: s.lookup_timeout,
            fresh: ms(s.positive_ttl),
            negative: ms(s.negative_ttl),
            retain: ms(s.retain.max(s.positive_ttl)),
            away_until: AtomicU64::new(0),
            epoch: tokio::time::Instant::now(),
            changes: tokio::sync::broadcast::channel(1024).0,
        }
    }

    fn now_ms(&self) -> u64 {
        ms(self.epoch.elapsed())
    }

    fn shard(&self, key: &Key) -> &Shard {
        let h = match key {
            Key::Guid([hi, lo]) => hi ^ lo,
            Key::Other(_) => self.hasher.hash_one(key),
        };
        &self.shards[(h % SHARDS as u64) as usize]
    }

    fn expired(&self, slot: &Slot, now: u64) -> bool {
        let life = if slot.posture.is_some() {
            self.retain
        } else {
            self.negative
        };
        now.saturating_sub(slot.read_at) >= life
    }

    fn store_away(&self) -> bool {
        self.now_ms() < self.away_until.load(Ordering::Relaxed)
    }

    /// Notes a failed read: a transient one (the store away or slow) starts [`AWAY_FOR`].
    fn failed(&self, e: &StoreError) {
        if e.is_transient() {
            let until = self.now_ms().saturating_add(ms(AWAY_FOR));
            self.away_until.store(until, Ordering::Relaxed);
        }
    }

    /// The posture of `device_id` (any case). A miss reads the store once, under the timeout;
    /// errors are not cached. A known posture past its freshness is re-read; if that fails it
    /// is served as it was (its age tells the policy how old it is).
    pub async fn lookup(&self, device_id: &str) -> Result<Lookup, StoreError> {
        let key = Key::of(device_id);
        let now = self.now_ms();
        let hit = read_lock(&self.shard(&key).map).get(&key).and_then(|s| {
            if self.expired(s, now) {
                return None;
            }
            if !s.visited.load(Ordering::Relaxed) {
                s.visited.store(true, Ordering::Relaxed);
            }
            // A negative entry is not re-read: it expires.
            let age = now.saturating_sub(s.read_at);
            let due = s.posture.is_some() && age >= self.fresh && age >= u64::from(s.retry_after);
            Some((s.posture.clone(), due))
        });
        let found = |p: Option<Arc<Posture>>| p.map_or(Lookup::Unknown, Lookup::Found);
        match hit {
            Some((posture, false)) => Ok(found(posture)),
            Some((stale, true)) if self.store_away() => Ok(found(stale)),
            Some((stale, true)) => match self.read_through(key.clone()).await {
                Ok(fresh) => Ok(found(fresh)),
                Err(err) => {
                    self.failed(&err);
                    tracing::warn!(device = device_id, error = %err, "posture re-read failed; serving the last known posture");
                    // Not again for a few seconds: while the store is away, requests for this
                    // device are served at once instead of each waiting out the timeout.
                    let mut map = write_lock(&self.shard(&key).map);
                    if let Some(s) = map.get_mut(&key) {
                        let next = self.now_ms().saturating_sub(s.read_at).saturating_add(ms(RETRY_STALE));
                        s.retry_after = u32::try_from(next).unwrap_or(u32::MAX);
                    }
                    Ok(found(stale))
                }
            },
            None if self.store_away() => Err(StoreError::Away),
            None => self.read_through(key).await.map(found).inspect_err(|e| self.failed(e)),
        }
    }

    /// Reads `key` from the store, joining a read already under way for it, and caches the
    /// result unless the device was invalidated meanwhile (its change may postdate the read).
    async fn read_through(&self, key: Key) -> Result<Option<Arc<Posture>>, StoreError> {
        let shard = self.shard(&key);
        let flight = lock(&shard.flights).entry(key.clone()).or_default().clone();
        let abandoned = Abandoned {
            shard,
            key: &key,
            flight: &flight,
        };
        let (store, timeout) = (self.store.clone(), self.timeout);
        let result = flight
            .get_or_init(|| async {
                let id = key.text();
                let evidence = tokio::time::timeout(timeout, store.device_evidence(&id))
                    .await
                    .map_err(|_| StoreError::Timeout(timeout))??;
                Ok(Read {
                    posture: posture_from(&evidence, base::time::unix_now_i64()).map(Arc::new),
                    read_at: self.now_ms(),
                })
            })
            .await
            .clone();
        drop(abandoned);
        let mut flights = lock(&shard.flights);
        if flights.get(&key).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
            flights.remove(&key);
            if let Ok(read) = &result {
                self.insert(shard, key, read.clone());
            }
        }
        result.map(|r| r.posture)
    }

    fn insert(&self, shard: &Shard, key: Key, read: Read) {
        let mut map = write_lock(&shard.map);
        if map.len() >= self.per_shard && !map.contains_key(&key) {
            self.evict(&mut map);
        }
        map.insert(
            key,
            Slot {
                posture: read.posture,
                read_at: read.read_at,
                retry_after: 0,
                visited: AtomicBool::new(false),
            },
        );
    }

    /// Makes room in a full shard: drops what expired and what nobody read since the last
    /// eviction (the rest lose their mark), then, if that freed too little, arbitrary entries
    /// down to 7/8 of the shard.
    fn evict(&self, map: &mut HashMap<Key, Slot>) {
        let now = self.now_ms();
        map.retain(|_, s| !self.expired(s, now) && s.visited.swap(false, Ordering::Relaxed));
        let target = self.per_shard - self.per_shard / 8;
        let mut excess = map.len().saturating_sub(target.min(self.per_shard - 1));
        if excess > 0 {
            map.retain(|_, _| {
                let keep = excess == 0;
                excess = excess.saturating_sub(1);
                keep
            });
        }
    }

    pub async fn invalidate(&self, device_id: &str) {
        let key = Key::of(device_id);
        let shard = self.shard(&key);
        {
            // Flights first, as `read_through` takes them: a read under way is not cached.
            let mut flights = lock(&shard.flights);
            flights.remove(&key);
            write_lock(&shard.map).remove(&key);
        }
        // Nobody listening is fine: nothing follows this device.
        let _ = self.changes.send(Some(key.text().into()));
    }

    /// Drops every cached posture (the follower lost track of the change log).
    pub fn invalidate_all(&self) {
        for shard in self.shards.iter() {
            let mut flights = lock(&shard.flights);
            flights.clear();
            write_lock(&shard.map).clear();
        }
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

    /// Store reads under way (tests).
    #[cfg(test)]
    pub(crate) fn reads_in_flight(&self) -> usize {
        self.shards.iter().map(|s| lock(&s.flights).len()).sum()
    }

    /// Entries held, expired ones not yet evicted included.
    pub fn entry_count(&self) -> u64 {
        self.shards.iter().map(|s| read_lock(&s.map).len() as u64).sum()
    }

    /// The posture with the oldest evidence among those this node holds — what it enforces
    /// for that device now — with its device id. A walk over the cache, one shard at a time:
    /// for an admin's page, never the request path.
    pub fn oldest(&self) -> Option<(String, Arc<Posture>)> {
        let now = self.now_ms();
        self.shards
            .iter()
            .filter_map(|shard| {
                read_lock(&shard.map)
                    .iter()
                    .filter(|(_, s)| !self.expired(s, now))
                    .filter_map(|(k, s)| s.posture.as_ref().map(|p| (k, p)))
                    .min_by_key(|(_, p)| p.as_of)
                    .map(|(k, p)| (k.text(), p.clone()))
            })
            .min_by_key(|(_, p)| p.as_of)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_key_by_their_bits_in_any_case_and_print_back_lower_case() {
        let id = "0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0";
        let k = Key::of(id);
        assert!(matches!(k, Key::Guid(_)));
        assert_eq!(k, Key::of(&id.to_ascii_lowercase()));
        assert_eq!(k.text(), id.to_ascii_lowercase());
        for other in [
            "",
            "mac-1",
            "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f",
            "0f1e2d3c+4b5a-6978-8796-a5b4c3d2e1f0",
            "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1fg",
            "{0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f}",
        ] {
            assert!(matches!(Key::of(other), Key::Other(_)), "{other}");
        }
        assert_eq!(Key::of("Mac-1").text(), "mac-1");
        // Multi-byte text of a GUID's length is not a GUID, and does not panic.
        assert!(matches!(Key::of("ééééééééééééééééé-ü"), Key::Other(_)));
    }

    #[test]
    fn an_entry_stays_small() {
        assert!(
            std::mem::size_of::<(Key, Slot)>() <= 48,
            "{}",
            std::mem::size_of::<(Key, Slot)>()
        );
        assert!(
            std::mem::size_of::<Posture>() <= 64,
            "{}",
            std::mem::size_of::<Posture>()
        );
    }
}
