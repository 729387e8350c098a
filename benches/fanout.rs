//! Fan-out between nodes on one PostgreSQL: how long after a posture change commits on one node
//! another node's posture cache has let go of the old posture (LISTEN/NOTIFY, then a read of the
//! change log). Two stores on one fresh schema stand for two nodes; the follower's poll is set to
//! 30 s so only the notification can be what brings a change in time. 1,000 changes; prints
//! p50, p99 and the maximum. `cargo bench --features demo --bench fanout` with PostgreSQL at
//! `PORTCULLIS_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432/test`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis::device::{CacheSettings, Lookup, PostureCache};
use portcullis::policy::PostureState;
use portcullis::store::postgres::{testing, PgStore};
use portcullis::store::{EntraDevice, InventoryWriter};

const CHANGES: usize = 1000;
const DEVICE: &str = "fa000000-0000-4000-8000-000000000001";

fn device(compliant: bool) -> EntraDevice {
    EntraDevice {
        device_id: DEVICE.into(),
        object_id: "fa-object".into(),
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
        seen_at: portcullis::base::time::unix_now_i64(),
    }
}

async fn compliant(cache: &PostureCache) -> bool {
    match cache.lookup(DEVICE).await.expect("lookup") {
        Lookup::Found(p) => matches!(p.state, PostureState::Compliant),
        Lookup::Unknown => false,
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (settings, schema) = testing::fresh_schema()
            .await
            .expect("PostgreSQL (PORTCULLIS_TEST_POSTGRES)");
        let writer = PgStore::open(&settings).await.expect("writer node");
        let follower = Arc::new(PgStore::open(&settings).await.expect("follower node"));
        writer.upsert_entra_devices(&[device(true)]).await.expect("seed");
        let cache = Arc::new(PostureCache::new(
            follower.clone(),
            CacheSettings {
                positive_ttl: Duration::from_secs(3600),
                ..CacheSettings::default()
            },
        ));
        let (_stop_tx, stop) = tokio::sync::watch::channel(false);
        tokio::spawn(portcullis::device::changes::follow_changes(
            follower.clone(),
            cache.clone(),
            Duration::from_secs(30),
            stop,
        ));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut state = true;
        let mut took = Vec::with_capacity(CHANGES);
        for i in 0..CHANGES {
            assert_eq!(compliant(&cache).await, state, "change {i}: cached before the flip");
            state = !state;
            writer.upsert_entra_devices(&[device(state)]).await.expect("flip");
            let committed = Instant::now();
            loop {
                if compliant(&cache).await == state {
                    break;
                }
                assert!(
                    committed.elapsed() < Duration::from_secs(10),
                    "change {i} never arrived"
                );
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            took.push(committed.elapsed());
        }
        took.sort();
        let pct = |p: f64| took[((took.len() as f64 * p).ceil() as usize).saturating_sub(1)];
        println!(
            "fan-out over {CHANGES} changes (schema {schema}): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            pct(0.50).as_secs_f64() * 1000.0,
            pct(0.99).as_secs_f64() * 1000.0,
            took[took.len() - 1].as_secs_f64() * 1000.0
        );
        sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(writer.pool())
            .await
            .expect("drop the bench schema");
    });
}
