//! The request path's decision, piece by piece and whole, in process: posture look-up (cache
//! hit, cache miss read from SQLite, negative entry), `policy::decide`, and the whole decision a
//! request with a bearer token gets after its headers are parsed — token validation (cached),
//! device identification, posture, policy — through the proxy's own `Access::evaluate`.
//! `cargo bench --features demo --bench decision`.

mod common;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis::access::assertion::AssertionSigner;
use portcullis::access::{Access, Subject, Verdict};
use portcullis::config::Config;
use portcullis::device::{CacheSettings, Devices, Lookup, PostureCache};
use portcullis::identity::{CurrentIdentity, Identity};
use portcullis::landing::{Landings, ReturnSigner};
use portcullis::policy::{self, Device, DeviceSource, Facts, Groups, RoutePolicy, User};
use portcullis::store::sqlite::SqliteStore;

const ALICE_DEVICE: &str = "d1000000-0000-4000-8000-00000000000a";
const UNKNOWN_DEVICE: &str = "e0000000-0000-4000-8000-0000000000ff";

const CONFIG: &str = r#"
[entra]
tenant_id = "7d3c5b0e-2f41-4c9a-9b8e-5a1e3f6c2d10"
client_id = "5f0c8a9e-3b2d-4e6f-8a1c-9d7e6b5a4c3f"
client_secret = "bench"
[[listeners]]
name = "http"
address = "127.0.0.1:1"
[upstreams.app]
addresses = ["127.0.0.1:2"]
[[routes]]
upstream = "app"
"#;

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = rt.block_on(async {
        let s = SqliteStore::open(&dir.path().join("bench.db")).await.expect("store");
        portcullis::demo::seed(&s, now() as i64).await.expect("seed");
        Arc::new(s)
    });
    let cache = Arc::new(PostureCache::new(store.clone(), CacheSettings::default()));
    let devices = Arc::new(Devices::new(
        store.clone(),
        cache.clone(),
        vec![DeviceSource::TokenClaim],
    ));

    let cfg = Config::parse(CONFIG, dir.path()).expect("config");
    let entra = cfg.entra.as_ref().expect("entra");
    let mut identity = Identity::new(entra, &cfg.session).expect("identity");
    let (validator, token) = common::setup();
    identity.validator = Arc::new(validator);
    let identity = Arc::new(CurrentIdentity::new(identity));
    let landings = Landings::new(
        cfg.landing.clone(),
        ReturnSigner::new(b"bench-return-key-0123456789abcdef"),
    )
    .expect("landings");
    let access = Access {
        identity: Some(identity.clone()),
        devices: Some(devices.clone()),
        landings: Arc::new(arc_swap::ArcSwap::from_pointee(landings)),
        assertions: Arc::new(AssertionSigner::new(None).expect("signer")),
        live: Arc::default(),
    };
    let route = RoutePolicy::default();

    // Warm: the token and alice's posture are cached, the unknown device has its negative entry.
    rt.block_on(async {
        identity.load().validator.validate(&token).await.expect("valid");
        assert!(matches!(cache.lookup(ALICE_DEVICE).await, Ok(Lookup::Found(_))));
        assert!(matches!(cache.lookup(UNKNOWN_DEVICE).await, Ok(Lookup::Unknown)));
    });

    let mut g = c.benchmark_group("posture");
    g.bench_function("lookup/hit", |b| {
        b.to_async(&rt)
            .iter(|| async { cache.lookup(std::hint::black_box(ALICE_DEVICE)).await.expect("ok") })
    });
    g.bench_function("lookup/negative hit (unknown device)", |b| {
        b.to_async(&rt)
            .iter(|| async { cache.lookup(std::hint::black_box(UNKNOWN_DEVICE)).await.expect("ok") })
    });
    g.bench_function("lookup/miss (SQLite read)", |b| {
        b.to_async(&rt).iter(|| async {
            cache.invalidate(ALICE_DEVICE).await;
            cache.lookup(std::hint::black_box(ALICE_DEVICE)).await.expect("ok")
        })
    });
    g.finish();

    let posture = rt.block_on(async {
        match cache.lookup(ALICE_DEVICE).await {
            Ok(Lookup::Found(p)) => p,
            other => panic!("alice's posture: {other:?}"),
        }
    });
    c.bench_function("policy/decide (compliant)", |b| {
        b.iter(|| {
            policy::decide(
                std::hint::black_box(&route),
                &Facts {
                    user: User::Authenticated,
                    groups: Groups::NotRequired,
                    device: Device::Identified {
                        source: DeviceSource::TokenClaim,
                        posture: Some(&posture),
                    },
                    now: now(),
                },
            )
        })
    });

    let id = identity.load();
    c.bench_function("request decision/whole (cached token, cached posture)", |b| {
        b.to_async(&rt).iter(|| async {
            let p = id
                .validator
                .validate(std::hint::black_box(&token))
                .await
                .expect("valid");
            let subject = Subject {
                token_device: p.device_id.clone(),
                principal: p,
                session_device: None,
                cert: None,
            };
            let mut v = Verdict::default();
            let d = access.evaluate(&id, &subject, &route, &[], &mut v).await;
            assert_eq!(d.reason, policy::Reason::Compliant);
            d
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
