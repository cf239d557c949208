//! A Wasm reducer call over 16 items against the same reduction by the built-in, in
//! the same run. The Wasm call includes everything a global read pays: a fresh
//! instance (from a pre-linked `InstancePre`), fuel and deadline set-up, encoding the
//! items into guest memory, the call, and decoding the answer.
//!
//! Then the call a node makes for a pushed-down read: `sum` over 10,000 items encoded
//! values-only (`abi::flags::VALUES_ONLY`), by the Rust SDK's guest and by the C guest,
//! against the baseline of the SDK's decoder and the same sum run natively on the same
//! bytes (what separates the guest from native code is the compiled decoding loop).
//!
//! Run with `cargo bench --bench reducers`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use estate::guests;
use estate::reduce::{self, Builtin};
use estate::wasm::{Limits, WasmHost};
use estate_guest::codec::{ItemsWriter, Reader};
use estate_guest::view::{ItemRef, ValueRef};
use estate_guest::{Item, Phase, Value};

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

    let mut values_only = ItemsWriter::default();
    for i in 0..10_000 {
        values_only.push_value(ValueRef::Int(i), i as u64);
    }
    let values_only = values_only.finish();
    let c_sum = host.load_reducer(&guests::require("c_reducer_sum").unwrap()).unwrap();
    let mut group = c.benchmark_group("reduce_10k_values_only");
    // The SDK's decoder, item by item, and the sum, natively: no list is built.
    let native_sum = |input: &[u8]| -> Option<i64> {
        let mut r = Reader::new(input);
        let mut total = 0i64;
        for _ in 0..r.u32().ok()? {
            match ItemRef::decode(&mut r).ok()?.value {
                ValueRef::Int(v) => total = total.checked_add(v)?,
                _ => return None,
            }
        }
        r.finish().ok().map(|()| total)
    };
    assert_eq!(native_sum(&values_only), Some(49_995_000));
    group.bench_function("native_sum", |b| b.iter(|| native_sum(black_box(&values_only))));
    for (name, reducer) in [("wasm_sum", &sum), ("c_sum", &c_sum)] {
        let answer = host.reduce_encoded(reducer, &values_only, Phase::Items).unwrap().unwrap();
        assert_eq!(answer.value, Value::Int(49_995_000), "{name}");
        group.bench_function(name, |b| b.iter(|| host.reduce_encoded(reducer, black_box(&values_only), Phase::Items)));
    }
    // The same values alone (`abi::flags::INTS`), as a node passes all-integer items.
    let mut ints = Vec::new();
    (0..10_000).for_each(|i| estate_guest::ints::push(&mut ints, i));
    for (name, reducer) in [("wasm_sum_ints", &sum), ("c_sum_ints", &c_sum)] {
        assert_eq!(host.reduce_ints(reducer, &ints).unwrap().unwrap().value, Value::Int(49_995_000), "{name}");
        group.bench_function(name, |b| b.iter(|| host.reduce_ints(reducer, black_box(&ints))));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
