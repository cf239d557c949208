//! A Wasm reducer call over 16 items against the same reduction by the built-in, in
//! the same run. The Wasm call includes everything a global read pays: a fresh
//! instance (from a pre-linked `InstancePre`), fuel and deadline set-up, encoding the
//! items into guest memory, the call, and decoding the answer.
//!
//! Run with `cargo bench --bench reducers`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use estate::guests;
use estate::reduce::{self, Builtin};
use estate::wasm::{Limits, WasmHost};
use estate_guest::{Item, Value};

fn bench(c: &mut Criterion) {
    let items: Vec<Item> = (0..16)
        .map(|i| Item {
            key: format!("flow:{i}"),
            value: Value::Int(i * 1000),
            origin: format!("n{}", i % 4),
            writer: format!("n{}", i % 4),
            version: i as u64,
        })
        .collect();
    let host = WasmHost::new(Limits::default()).unwrap();
    let sum = host.load_reducer(&guests::require("reducer_sum").unwrap()).unwrap();
    let latest = host.load_reducer(&guests::require("reducer_latest").unwrap()).unwrap();
    assert_eq!(host.reduce_all(&sum, &items).unwrap().unwrap().value, Value::Int(120_000));

    let mut group = c.benchmark_group("reduce_16_items");
    group.bench_function("builtin_sum", |b| b.iter(|| reduce::reduce(Builtin::Sum, black_box(items.clone())).unwrap()));
    group.bench_function("wasm_sum", |b| b.iter(|| host.reduce_all(&sum, black_box(&items)).unwrap()));
    group.bench_function("builtin_latest", |b| {
        b.iter(|| reduce::reduce(Builtin::Latest, black_box(items.clone())).unwrap())
    });
    group.bench_function("wasm_latest", |b| b.iter(|| host.reduce_all(&latest, black_box(&items)).unwrap()));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
