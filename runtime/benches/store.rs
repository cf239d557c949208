//! Local store: set and get of a 40-byte key with an 8-byte value, against a bare
//! `HashMap<String, i64>` (no lock, no version, no clock) as the baseline in the same run.
//!
//! Run with `cargo bench --bench store`.

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use estate::store::{DEFAULT_TENANT, Store};
use estate_guest::Value;

const KEYS: usize = 10_000;

fn keys() -> Vec<String> {
    // 40-byte keys, as a flow key with a prefix would be.
    (0..KEYS).map(|i| format!("flow:10.0.{:03}.{:03}:443->10.100.0.10:{:05}", i / 256 % 256, i % 256, i)).collect()
}

fn bench(c: &mut Criterion) {
    let keys = keys();
    assert!(keys.iter().all(|k| k.len() == 40), "{}", keys[0].len());
    let store = Store::new("bench");
    let tenant = store.tenant(DEFAULT_TENANT).unwrap();
    let mut baseline: HashMap<String, i64> = HashMap::new();
    for (i, k) in keys.iter().enumerate() {
        tenant.set(k, Value::Int(i as i64)).unwrap();
        baseline.insert(k.clone(), i as i64);
    }

    let mut group = c.benchmark_group("local");
    let mut i = 0;
    group.bench_function("estate_get", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(tenant.get(black_box(&keys[i])))
        })
    });
    group.bench_function("estate_set", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            tenant.set(black_box(&keys[i]), Value::Int(i as i64)).unwrap()
        })
    });
    group.bench_function("hashmap_get", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(baseline.get(black_box(&keys[i])).copied())
        })
    });
    group.bench_function("hashmap_set", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            if let Some(v) = baseline.get_mut(black_box(&keys[i])) {
                *v = i as i64;
            }
        })
    });
    let clock = estate::hlc::Hlc::new();
    group.bench_function("hlc_tick", |b| b.iter(|| black_box(clock.tick())));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
