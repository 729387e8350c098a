//! The posture cache and the change follower against a scripted store, on paused tokio time:
//! single flight, negative entries, the lookup timeout (fail closed), errors never cached,
//! invalidation, and the follower's polling.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use store::{Computer, DeviceEvidence, EntraDevice, PostureStore, StoreError};

use crate::cache::{CacheSettings, Lookup, PostureCache};

/// A store whose evidence reads are counted, take `delay` of (paused) time, and fail on
/// demand; its change log is a list the test appends to.
#[derive(Default)]
struct Scripted {
    evidence: Mutex<HashMap<String, DeviceEvidence>>,
    changes: Mutex<Vec<(i64, String)>>,
    reads: AtomicU32,
    change_reads: AtomicU32,
    delay: Mutex<Duration>,
    failing: AtomicBool,
    epoch: Mutex<String>,
    signal: Option<Arc<tokio::sync::Notify>>,
}

impl Scripted {
    fn set(&self, device: &str, compliant: bool) {
        let e = DeviceEvidence {
            entra: Some(EntraDevice {
                device_id: device.into(),
                object_id: format!("obj-{device}"),
                display_name: None,
                account_enabled: Some(true),
                is_compliant: Some(compliant),
                is_managed: Some(true),
                trust_type: None,
                operating_system: Some("MacMDM".into()),
                os_version: None,
                compliance_expiration: None,
                last_sign_in: None,
                removed: false,
                seen_at: base::time::unix_now_i64(),
            }),
            ..DeviceEvidence::default()
        };
        self.evidence.lock().unwrap().insert(device.into(), e);
    }

    fn change(&self, device: &str) {
        let mut c = self.changes.lock().unwrap();
        let id = c.len() as i64 + 1;
        c.push((id, device.into()));
    }

    fn fail(&self) -> Result<(), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            Err(StoreError::Timeout(Duration::from_secs(9)))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl PostureStore for Scripted {
    async fn device_evidence(&self, device_id: &str) -> Result<DeviceEvidence, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let delay = *self.delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        self.fail()?;
        Ok(self
            .evidence
            .lock()
            .unwrap()
            .get(device_id)
            .cloned()
            .unwrap_or_default())
    }
    async fn computers_for_user(&self, _: &str, _: Option<&str>) -> Result<Vec<Computer>, StoreError> {
        Ok(Vec::new())
    }
    async fn computer(&self, _: &str) -> Result<Option<Computer>, StoreError> {
        Ok(None)
    }
    async fn computer_by_serial(&self, _: &str) -> Result<Option<Computer>, StoreError> {
        Ok(None)
    }
    async fn computers(&self, _: Option<&str>, _: u32) -> Result<Vec<Computer>, StoreError> {
        Ok(Vec::new())
    }
    async fn changes_since(&self, after: i64, limit: u32) -> Result<Vec<(i64, String)>, StoreError> {
        self.change_reads.fetch_add(1, Ordering::SeqCst);
        self.fail()?;
        let c = self.changes.lock().unwrap();
        Ok(c.iter()
            .filter(|(id, _)| *id > after)
            .take(limit as usize)
            .cloned()
            .collect())
    }
    async fn latest_change(&self) -> Result<i64, StoreError> {
        self.fail()?;
        Ok(self.changes.lock().unwrap().last().map_or(0, |(id, _)| *id))
    }
    async fn oldest_change(&self) -> Result<i64, StoreError> {
        self.fail()?;
        Ok(self.changes.lock().unwrap().first().map_or(0, |(id, _)| *id))
    }
    async fn epoch(&self) -> Result<String, StoreError> {
        // Each catch-up starts here: counted as a read of the change log.
        self.change_reads.fetch_add(1, Ordering::SeqCst);
        self.fail()?;
        Ok(self.epoch.lock().unwrap().clone())
    }
    fn change_signal(&self) -> Option<Arc<tokio::sync::Notify>> {
        self.signal.clone()
    }
}

const ALICE: &str = "d1000000-0000-4000-8000-00000000000a";
const DAVE: &str = "d1000000-0000-4000-8000-00000000000d";
const BOB: &str = "d1000000-0000-4000-8000-00000000000b";

fn cache(store: &Arc<Scripted>) -> Arc<PostureCache> {
    Arc::new(PostureCache::new(
        store.clone(),
        CacheSettings {
            lookup_timeout: Duration::from_secs(2),
            ..CacheSettings::default()
        },
    ))
}

fn compliant(l: &Lookup) -> Option<bool> {
    match l {
        Lookup::Found(p) => Some(matches!(p.state, policy::PostureState::Compliant)),
        Lookup::Unknown => None,
    }
}

#[tokio::test(start_paused = true)]
async fn a_miss_reads_the_store_once_however_many_requests_wait() {
    let store = Arc::new(Scripted::default());
    store.set(ALICE, true);
    *store.delay.lock().unwrap() = Duration::from_millis(500);
    let cache = cache(&store);
    let waiting: Vec<_> = (0..16)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.lookup(&ALICE.to_ascii_uppercase()).await })
        })
        .collect();
    for w in waiting {
        assert_eq!(compliant(&w.await.unwrap().unwrap()), Some(true));
    }
    assert_eq!(store.reads.load(Ordering::SeqCst), 1, "single flight");
    // A hit awaits nothing: no time passes, no read.
    let t = tokio::time::Instant::now();
    cache.lookup(ALICE).await.unwrap();
    assert_eq!((t.elapsed(), store.reads.load(Ordering::SeqCst)), (Duration::ZERO, 1));
}

#[tokio::test(start_paused = true)]
async fn unknown_devices_are_cached_as_negative_entries() {
    let store = Arc::new(Scripted::default());
    let cache = cache(&store);
    for _ in 0..3 {
        assert!(matches!(cache.lookup(DAVE).await.unwrap(), Lookup::Unknown));
    }
    assert_eq!(store.reads.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_slow_store_fails_closed_after_the_timeout_and_errors_are_not_cached() {
    let store = Arc::new(Scripted::default());
    store.set(ALICE, true);
    *store.delay.lock().unwrap() = Duration::from_secs(30);
    let cache = cache(&store);
    let t = tokio::time::Instant::now();
    let e = cache.lookup(ALICE).await.unwrap_err();
    assert!(
        matches!(e, StoreError::Timeout(d) if d == Duration::from_secs(2)),
        "{e}"
    );
    assert_eq!(
        t.elapsed(),
        Duration::from_secs(2),
        "the request waited exactly the timeout"
    );
    // The store answers again: once the few seconds it counts as away are over, the next
    // request reads it (the failure itself was not cached).
    *store.delay.lock().unwrap() = Duration::ZERO;
    assert!(
        matches!(cache.lookup(ALICE).await, Err(StoreError::Away)),
        "not asked yet"
    );
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(compliant(&cache.lookup(ALICE).await.unwrap()), Some(true));
    store.failing.store(true, Ordering::SeqCst);
    cache.invalidate(ALICE).await;
    assert!(cache.lookup(ALICE).await.is_err());
    store.failing.store(false, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(compliant(&cache.lookup(ALICE).await.unwrap()), Some(true));
}

#[tokio::test(start_paused = true)]
async fn the_follower_invalidates_changed_devices_each_interval_and_rides_out_errors() {
    let store = Arc::new(Scripted::default());
    store.set(ALICE, true);
    store.change(ALICE); // before the follower starts: not replayed
    let cache = cache(&store);
    assert_eq!(compliant(&cache.lookup(ALICE).await.unwrap()), Some(true));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let follower = tokio::spawn(crate::changes::follow_changes(
        store.clone(),
        cache.clone(),
        Duration::from_secs(1),
        stop,
    ));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(compliant(&cache.lookup(ALICE).await.unwrap()), Some(true));
    assert_eq!(store.reads.load(Ordering::SeqCst), 1, "the old change was not replayed");

    // The sync flips alice: within one interval the cache reads the store again.
    store.set(ALICE, false);
    store.change(ALICE);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(compliant(&cache.lookup(ALICE).await.unwrap()), Some(false));

    // The change log cannot be read for a while: the follower keeps polling and catches up.
    store.failing.store(true, Ordering::SeqCst);
    let polls = store.change_reads.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(store.change_reads.load(Ordering::SeqCst) >= polls + 3, "kept polling");
    store.set(ALICE, true);
    store.change(ALICE);
    store.failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(compliant(&cache.lookup(ALICE).await.unwrap()), Some(true), "caught up");

    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(1), follower)
        .await
        .expect("the follower stops on shutdown")
        .unwrap();
}

/// A follower with a change signal (PostgreSQL's NOTIFY) invalidates at once, without waiting
/// for its poll; one that loses track of the log (another epoch, a rewound log) drops the cache.
#[tokio::test(start_paused = true)]
async fn signals_wake_the_follower_and_lost_track_drops_the_cache() {
    let store = Arc::new(Scripted {
        signal: Some(Arc::new(tokio::sync::Notify::new())),
        epoch: Mutex::new("e1".into()),
        ..Scripted::default()
    });
    store.set(ALICE, true);
    store.set(DAVE, true);
    let cache = cache(&store);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    // A poll interval far longer than the test: only the signal can wake the follower.
    let follower = tokio::spawn(crate::changes::follow_changes(
        store.clone(),
        cache.clone(),
        Duration::from_secs(3600),
        stop,
    ));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(compliant(&cache.lookup(ALICE).await.unwrap()), Some(true));
    assert_eq!(compliant(&cache.lookup(DAVE).await.unwrap()), Some(true));
    store.set(ALICE, false);
    store.change(ALICE);
    store.signal.as_ref().unwrap().notify_one();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        compliant(&cache.lookup(ALICE).await.unwrap()),
        Some(false),
        "woken by the signal"
    );

    // Another database (epoch changed): every cached posture goes, dave's included.
    store.set(DAVE, false);
    *store.epoch.lock().unwrap() = "e2".into();
    store.signal.as_ref().unwrap().notify_one();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        compliant(&cache.lookup(DAVE).await.unwrap()),
        Some(false),
        "epoch change dropped the cache"
    );

    // A rewound log (restored from a backup): the cursor is ahead of it; drop and follow anew.
    store.set(DAVE, true);
    store.changes.lock().unwrap().clear();
    store.signal.as_ref().unwrap().notify_one();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        compliant(&cache.lookup(DAVE).await.unwrap()),
        Some(true),
        "rewound log dropped the cache"
    );
    store.set(ALICE, true);
    store.change(ALICE); // id 1 again, in the restored log
    store.signal.as_ref().unwrap().notify_one();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        compliant(&cache.lookup(ALICE).await.unwrap()),
        Some(true),
        "followed from the restored log's end"
    );

    stop_tx.send(true).unwrap();
    follower.await.unwrap();
}

/// Through an outage a known posture keeps being served after its freshness (its `as_of` lets
/// the policy judge its age); a device never seen gets the error (fail closed); when the store
/// is back, a stale entry is re-read once however many requests find it stale.
#[tokio::test(start_paused = true)]
async fn known_postures_outlive_an_outage_and_are_refreshed_once() {
    let store = Arc::new(Scripted::default());
    store.set(ALICE, true);
    let cache = cache(&store);
    assert_eq!(compliant(&cache.lookup(ALICE).await.unwrap()), Some(true));
    assert_eq!(store.reads.load(Ordering::SeqCst), 1);

    tokio::time::advance(Duration::from_secs(61)).await; // past the 60 s freshness
    store.failing.store(true, Ordering::SeqCst);
    assert_eq!(
        compliant(&cache.lookup(ALICE).await.unwrap()),
        Some(true),
        "the last known posture, not posture_unavailable"
    );
    assert_eq!(store.reads.load(Ordering::SeqCst), 2, "a re-read was tried");
    assert_eq!(compliant(&cache.lookup(ALICE).await.unwrap()), Some(true));
    assert_eq!(
        store.reads.load(Ordering::SeqCst),
        2,
        "not again at once: served without waiting"
    );
    assert!(cache.lookup(DAVE).await.is_err(), "a device never seen fails closed");

    store.failing.store(false, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(6)).await; // the pause after a failed re-read
    store.set(ALICE, false);
    *store.delay.lock().unwrap() = Duration::from_millis(300);
    let reads = store.reads.load(Ordering::SeqCst);
    let waiting: Vec<_> = (0..8)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.lookup(ALICE).await })
        })
        .collect();
    for w in waiting {
        assert_eq!(compliant(&w.await.unwrap().unwrap()), Some(false), "refreshed");
    }
    assert_eq!(
        store.reads.load(Ordering::SeqCst),
        reads + 1,
        "one re-read for eight requests"
    );
}

/// One failed read makes the store count as away: other devices' stale postures are served and
/// misses refused at once, without a read or a wait each; after a few seconds it is asked again.
#[tokio::test(start_paused = true)]
async fn an_away_store_costs_one_timeout_per_node_not_one_per_device() {
    let store = Arc::new(Scripted::default());
    store.set(ALICE, true);
    store.set(BOB, false);
    let cache = cache(&store);
    cache.lookup(ALICE).await.unwrap();
    cache.lookup(BOB).await.unwrap();
    tokio::time::advance(Duration::from_secs(61)).await; // both past their freshness
    *store.delay.lock().unwrap() = Duration::from_secs(3600); // the store hangs
    let started = tokio::time::Instant::now();
    assert_eq!(compliant(&cache.lookup(ALICE).await.unwrap()), Some(true));
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(2),
        "the first finds out, at the timeout"
    );
    let (started, reads) = (tokio::time::Instant::now(), store.reads.load(Ordering::SeqCst));
    assert_eq!(
        compliant(&cache.lookup(BOB).await.unwrap()),
        Some(false),
        "bob's last known posture"
    );
    assert!(
        matches!(cache.lookup(DAVE).await, Err(StoreError::Away)),
        "a device never seen fails closed, at once"
    );
    assert_eq!(started.elapsed(), Duration::ZERO, "nobody else waits");
    assert_eq!(store.reads.load(Ordering::SeqCst), reads, "and the store is not asked");

    *store.delay.lock().unwrap() = Duration::ZERO; // back
    store.set(BOB, true);
    tokio::time::advance(Duration::from_secs(6)).await;
    assert_eq!(
        compliant(&cache.lookup(BOB).await.unwrap()),
        Some(true),
        "re-read once back"
    );
    store.set(DAVE, true);
    assert_eq!(compliant(&cache.lookup(DAVE).await.unwrap()), Some(true));
}

fn device(i: usize) -> String {
    format!("d2000000-0000-4000-8000-{i:012x}")
}

/// Bounded: a flood of devices seen once never grows the cache past its capacity, and does
/// not push out the devices that keep being asked for.
#[tokio::test(start_paused = true)]
async fn the_cache_holds_its_capacity_and_keeps_the_devices_in_use() {
    let store = Arc::new(Scripted::default());
    let in_use: Vec<String> = (0..32).map(device).collect();
    for d in &in_use {
        store.set(d, true);
    }
    let cache = Arc::new(PostureCache::new(
        store.clone(),
        CacheSettings {
            capacity: 640,
            ..CacheSettings::default()
        },
    ));
    for d in &in_use {
        cache.lookup(d).await.unwrap();
    }
    for i in 1_000..6_000 {
        let once = device(i);
        assert!(matches!(cache.lookup(&once).await.unwrap(), Lookup::Unknown));
        for d in &in_use {
            assert_eq!(compliant(&cache.lookup(d).await.unwrap()), Some(true));
        }
        assert!(cache.entry_count() <= 640, "{} entries", cache.entry_count());
    }
    assert_eq!(
        store.reads.load(Ordering::SeqCst),
        32 + 5_000,
        "each device in use was read once: never evicted"
    );
}

/// A posture the store cannot confirm is served for `retain` after its last successful read,
/// not for ever: each failed re-read does not extend it.
#[tokio::test(start_paused = true)]
async fn a_stale_posture_is_retained_from_its_last_good_read_only() {
    let store = Arc::new(Scripted::default());
    store.set(ALICE, true);
    let cache = Arc::new(PostureCache::new(
        store.clone(),
        CacheSettings {
            retain: Duration::from_secs(120),
            ..CacheSettings::default()
        },
    ));
    cache.lookup(ALICE).await.unwrap();
    store.failing.store(true, Ordering::SeqCst);
    let start = tokio::time::Instant::now();
    while start.elapsed() < Duration::from_secs(119) {
        tokio::time::advance(Duration::from_secs(7)).await;
        if start.elapsed() < Duration::from_secs(120) {
            assert_eq!(
                compliant(&cache.lookup(ALICE).await.unwrap()),
                Some(true),
                "{:?}",
                start.elapsed()
            );
        }
    }
    tokio::time::advance(Duration::from_secs(7)).await;
    assert!(cache.lookup(ALICE).await.is_err(), "past retain: fails closed");
}

/// A device invalidated while its read is under way is not cached from that read: the next
/// request reads it again.
#[tokio::test(start_paused = true)]
async fn an_invalidation_during_a_read_is_not_undone_by_it() {
    let store = Arc::new(Scripted::default());
    store.set(ALICE, true);
    *store.delay.lock().unwrap() = Duration::from_millis(500);
    let cache = cache(&store);
    let first = tokio::spawn({
        let cache = cache.clone();
        async move { cache.lookup(ALICE).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    cache.invalidate(ALICE).await;
    store.set(ALICE, false);
    let second = cache.lookup(ALICE).await.unwrap();
    assert_eq!(compliant(&second), Some(false));
    first.await.unwrap().unwrap();
    assert_eq!(
        store.reads.load(Ordering::SeqCst),
        2,
        "a read of its own after the change"
    );
    assert_eq!(compliant(&cache.lookup(ALICE).await.unwrap()), Some(false));
    assert_eq!(store.reads.load(Ordering::SeqCst), 2, "then cached");
}

/// A read whose only request went away (the client disconnected) leaves nothing behind; the
/// next request reads again.
#[tokio::test(start_paused = true)]
async fn an_abandoned_read_leaves_no_flight_behind() {
    let store = Arc::new(Scripted::default());
    store.set(ALICE, true);
    *store.delay.lock().unwrap() = Duration::from_millis(500);
    let cache = cache(&store);
    let gone = tokio::spawn({
        let cache = cache.clone();
        async move { cache.lookup(ALICE).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(cache.reads_in_flight(), 1);
    gone.abort();
    let _ = gone.await;
    assert_eq!(cache.reads_in_flight(), 0, "the abandoned read is forgotten");
    assert_eq!(compliant(&cache.lookup(ALICE).await.unwrap()), Some(true));
    assert_eq!(cache.reads_in_flight(), 0);
}
