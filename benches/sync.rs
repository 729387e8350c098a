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

/// The memory the gateway's posture cache holds with `n` devices in it: the same moka cache
/// type, key and value the gateway uses (`device::Lookup` of an `Arc<Posture>`), filled with
/// postures shaped like a synced Mac's.
async fn cache_memory(n: usize) {
    use portcullis::device::Lookup;
    use portcullis::policy::{EvidenceSource, Posture, PostureState};
    let before = rss_kib();
    let cache: moka::future::Cache<String, Lookup> = moka::future::Cache::builder().max_capacity(n as u64).build();
    {
        for i in 0..n {
            let id = format!("d{i:07}-0000-4000-8000-000000000000");
            let posture = Posture {
                device_id: id.clone(),
                state: PostureState::Compliant,
                source: EvidenceSource::EntraDevice,
                as_of: 1_764_000_000,
                computer_name: Some(format!("Mac {i}")),
            };
            cache.insert(id, Lookup::Found(std::sync::Arc::new(posture))).await;
        }
        cache.run_pending_tasks().await;
    }
    let after = rss_kib();
    println!(
        "posture cache with {} devices: {:.0} MiB ({:.0} bytes per device)",
        cache.entry_count(),
        (after.saturating_sub(before)) as f64 / 1024.0,
        (after.saturating_sub(before)) as f64 * 1024.0 / n.max(1) as f64
    );
}
