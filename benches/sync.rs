//! The initial Entra sync of a large tenant from the emulator: 100,000 devices (or
//! `SYNC_BENCH_DEVICES`) over real HTTP on loopback into a fresh SQLite store, with the page
//! size the gateway uses (999). Prints the wall time and rate of each of three runs, the store's
//! size on disk, and the memory the posture cache holds when every synced device is in it.
//! `cargo bench --features demo --bench sync`; `SYNC_BENCH_DEVICES=1000000 cargo bench --features demo --bench sync` for a
//! million (`SYNC_BENCH_RUNS=1` for one run). Each run is repeated on PostgreSQL (a fresh schema
//! on `PORTCULLIS_TEST_POSTGRES`, default `postgres://postgres@127.0.0.1:5432/test`) unless
//! `SYNC_BENCH_POSTGRES=0`.

use std::sync::Arc;
use std::time::{Duration, Instant};

// The gateway's allocator, so that the memory figures are the gateway's.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use portcullis::emulator::{personas, EntraState};
use portcullis::identity::app_token::AppTokens;
use portcullis::identity::credential::ClientCredential;
use portcullis::store::sqlite::SqliteStore;
use portcullis::sync::entra;
use portcullis::sync::graph::{GraphClient, RetryPolicy};

fn main() {
    let devices: usize = std::env::var("SYNC_BENCH_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let state = Arc::new(EntraState::new(&url).expect("emulator"));
        *state.directory.lock().expect("lock") = portcullis::emulator::directory::Directory::seeded(devices);
        tokio::spawn(portcullis::emulator::serve(listener, state));
        let cred = ClientCredential::load(&portcullis::config::ClientCredentialConfig::Secret(
            portcullis::config::Secret::new(personas::GATEWAY_CLIENT_SECRET),
        ))
        .expect("credential");
        let http = reqwest::Client::builder().no_proxy().build().expect("client");
        let tokens = Arc::new(AppTokens::new(
            &url,
            personas::TENANT_ID,
            personas::GATEWAY_CLIENT_ID,
            &format!("{url}/.default"),
            Some(Arc::new(cred)),
            http.clone(),
        ));
        let graph = GraphClient::new(&url, tokens, http, RetryPolicy::default(), 2000);
        let runs: u32 = std::env::var("SYNC_BENCH_RUNS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3);
        for run in 1..=runs {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = SqliteStore::open(&dir.path().join("bench.db")).await.expect("store");
            let started = Instant::now();
            let stats = entra::sync(&graph, &store, 999).await.expect("sync");
            let took = started.elapsed();
            println!(
                "run {run}: {} devices in {} pages, {:.2} s, {:.0} devices/s",
                stats.upserted,
                stats.pages,
                took.as_secs_f64(),
                stats.upserted as f64 / took.as_secs_f64().max(f64::EPSILON)
            );
            let db_bytes: u64 = std::fs::read_dir(dir.path())
                .map(|d| d.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
                .unwrap_or(0);
            println!("  store on disk: {:.1} MiB", db_bytes as f64 / 1048576.0);
            store.close().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            if std::env::var("SYNC_BENCH_POSTGRES").as_deref() != Ok("0") {
                let (settings, schema) = portcullis::store::postgres::testing::fresh_schema()
                    .await
                    .expect("PostgreSQL (PORTCULLIS_TEST_POSTGRES, or SYNC_BENCH_POSTGRES=0)");
                let store = portcullis::store::postgres::PgStore::open(&settings)
                    .await
                    .expect("store");
                let started = Instant::now();
                let stats = entra::sync(&graph, &store, 999).await.expect("sync");
                let took = started.elapsed();
                println!(
                    "run {run} (PostgreSQL, schema {schema}): {} devices in {} pages, {:.2} s, {:.0} devices/s",
                    stats.upserted,
                    stats.pages,
                    took.as_secs_f64(),
                    stats.upserted as f64 / took.as_secs_f64().max(f64::EPSILON)
                );
                sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                    .execute(store.pool())
                    .await
                    .expect("drop the bench schema");
                store.close().await;
            }
        }
        cache_memory(devices).await;
    });
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// The memory the gateway's posture cache holds with `n` devices in it: the gateway's own
/// `device::PostureCache`, filled through its lookup path (a miss, one store read, the entry
/// inserted) from a store that answers at once with the evidence of a synced Mac (an Entra
/// device, compliant, and the Jamf computer with its name and user account).
async fn cache_memory(n: usize) {
    use portcullis::device::{CacheSettings, Lookup, PostureCache};
    let cache = PostureCache::new(
        Arc::new(Macs),
        CacheSettings {
            capacity: n as u64,
            ..CacheSettings::default()
        },
    );
    let before = rss_kib();
    let started = Instant::now();
    for i in 0..n {
        let found = cache.lookup(&mac_id(i)).await.expect("lookup");
        assert!(matches!(found, Lookup::Found(_)));
    }
    let took = started.elapsed();
    let after = rss_kib();
    println!(
        "posture cache with {} devices: {:.0} MiB ({:.0} bytes per device); filled at {:.0} lookups/s",
        cache.entry_count(),
        (after.saturating_sub(before)) as f64 / 1024.0,
        (after.saturating_sub(before)) as f64 * 1024.0 / n.max(1) as f64,
        n as f64 / took.as_secs_f64().max(f64::EPSILON)
    );
    // Every device again: hits now, no store read.
    let started = Instant::now();
    for i in 0..n {
        std::hint::black_box(cache.lookup(&mac_id(i)).await.expect("lookup"));
    }
    println!(
        "  then {:.0} hits/s; RSS of this process: {:.0} MiB",
        n as f64 / started.elapsed().as_secs_f64().max(f64::EPSILON),
        rss_kib() as f64 / 1024.0
    );
}

fn mac_id(i: usize) -> String {
    format!("{:08x}-0000-4000-8000-{:012x}", i.wrapping_mul(2_654_435_761) as u32, i)
}

/// A store that knows every device as a compliant, Jamf-managed Mac.
struct Macs;

#[async_trait::async_trait]
impl portcullis::store::PostureStore for Macs {
    async fn device_evidence(
        &self,
        device_id: &str,
    ) -> Result<portcullis::store::DeviceEvidence, portcullis::store::StoreError> {
        use portcullis::store::*;
        let now = portcullis::base::time::unix_now_i64();
        let account = LocalAccount {
            username: "alice".into(),
            account_type: AccountType::Local,
            entra_user_id: Some("0b8f2a4e-1111-4000-8000-000000000001".into()),
            entra_device_id: Some(device_id.into()),
            registration: RegistrationState::Activated,
        };
        Ok(DeviceEvidence {
            entra: Some(EntraDevice {
                device_id: device_id.into(),
                object_id: format!("obj-{device_id}"),
                display_name: Some("Alice's MacBook Pro".into()),
                account_enabled: Some(true),
                is_compliant: Some(true),
                is_managed: Some(true),
                trust_type: None,
                operating_system: Some("MacMDM".into()),
                os_version: Some("15.1".into()),
                compliance_expiration: None,
                last_sign_in: None,
                removed: false,
                seen_at: now,
            }),
            intune: None,
            jamf: Some((
                Computer {
                    jamf_id: "1".into(),
                    udid: None,
                    serial: Some("C02XL0GHJG5H".into()),
                    name: Some(format!("Mac-{}", &device_id[..8])),
                    model: None,
                    os_version: Some("15.1".into()),
                    os_build: None,
                    managed: true,
                    filevault: None,
                    last_inventory: None,
                    last_contact: None,
                    seen_at: now,
                    accounts: Vec::new(),
                },
                account,
            )),
            last_sync: SourceTimes::default(),
        })
    }
    async fn computers_for_user(
        &self,
        _: &str,
        _: Option<&str>,
    ) -> Result<Vec<portcullis::store::Computer>, portcullis::store::StoreError> {
        Ok(Vec::new())
    }
    async fn computer(&self, _: &str) -> Result<Option<portcullis::store::Computer>, portcullis::store::StoreError> {
        Ok(None)
    }
    async fn computer_by_serial(
        &self,
        _: &str,
    ) -> Result<Option<portcullis::store::Computer>, portcullis::store::StoreError> {
        Ok(None)
    }
    async fn computers(
        &self,
        _: Option<&str>,
        _: u32,
    ) -> Result<Vec<portcullis::store::Computer>, portcullis::store::StoreError> {
        Ok(Vec::new())
    }
    async fn changes_since(&self, _: i64, _: u32) -> Result<Vec<(i64, String)>, portcullis::store::StoreError> {
        Ok(Vec::new())
    }
    async fn latest_change(&self) -> Result<i64, portcullis::store::StoreError> {
        Ok(0)
    }
    async fn oldest_change(&self) -> Result<i64, portcullis::store::StoreError> {
        Ok(0)
    }
    async fn epoch(&self) -> Result<String, portcullis::store::StoreError> {
        Ok("bench".into())
    }
}
