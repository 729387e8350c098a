//! The initial Entra sync of a large tenant from the emulator: 100,000 devices (or
//! `SYNC_BENCH_DEVICES`) over real HTTP on loopback into a fresh SQLite store, with the page
//! size the gateway uses (999). Prints the wall time and rate of each of three runs.
//! `cargo bench --bench sync`.

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
        for run in 1..=3 {
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
            store.close().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}
