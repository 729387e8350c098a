//! Token validation cost: a repeated token (cache hit) and a token never seen before (RS256
//! verification plus claim checks). `cargo bench --features demo --bench identity`.

mod common;

use criterion::{criterion_group, criterion_main, Criterion};
use futures_util::FutureExt;

use common::setup;

fn bench(c: &mut Criterion) {
    let (v, token) = setup();
    // The fast paths never await: poll them once.
    assert!(v.validate(&token).now_or_never().expect("ready").is_ok());
    c.bench_function("validate/cached", |b| {
        b.iter(|| {
            v.validate(std::hint::black_box(&token))
                .now_or_never()
                .expect("ready")
                .expect("valid")
        })
    });
    c.bench_function("validate/uncached (RS256 verify + claims)", |b| {
        b.iter(|| {
            v.verify(std::hint::black_box(&token))
                .now_or_never()
                .expect("ready")
                .expect("valid")
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
