//! One node's store at scale: 10,000,000 items (40-byte keys, 8-byte values), as a node
//! holding the state of 2.5 M flows (four keys each) would.
//!
//! Measured, each against a baseline in the same run:
//! - resident memory per item beyond its 48 bytes of key and value (the process's RSS
//!   before and after the inserts), against a bare `HashMap<String, i64>` of the same
//!   items in the same process;
//! - local get and set at 10 M items (random keys of all, and random keys among 10,000
//!   active ones), against the same store at 10,000 items and a bare map's get at 10 M;
//! - taking one flow's keys by prefix (what a moved flow costs its old owner), at 10 M
//!   items, against the same at 10,000 items.
//!
//! Run with `cargo bench --bench memory` (`-- --quick`: 1,000,000 items). Needs about
//! 3 GB of memory at 10 M.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use estate::pattern::Pattern;
use estate::store::{DEFAULT_TENANT, Store, TenantStore};
use estate_guest::Value;

/// The allocator the `estate` binary runs with.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const KEYS_PER_FLOW: usize = 4;

/// Item `i`'s key: 40 bytes, `flow:<20-digit flow>:<14-digit field>`.
fn key(i: usize) -> String {
    format!("flow:{:020}:{:014}", i / KEYS_PER_FLOW, i % KEYS_PER_FLOW)
}

fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// A cheap deterministic sequence of indices below `n`.
fn indices(n: usize, count: usize) -> Vec<usize> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..count)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        })
        .collect()
}

fn filled(n: usize) -> std::sync::Arc<TenantStore> {
    let tenant = Store::new("bench").tenant(DEFAULT_TENANT).unwrap();
    for i in 0..n {
        tenant.set(&key(i), Value::Int(i as i64)).unwrap();
    }
    tenant
}

/// Mean time of a get and of a set over `ops` random keys among `active` keys of an
/// `n`-item store (`active == n`: any key).
fn get_set(tenant: &TenantStore, n: usize, active: usize, ops: usize) -> (Duration, Duration) {
    let chosen = indices(n, active);
    let keys: Vec<String> = indices(active, ops).into_iter().map(|i| key(chosen[i])).collect();
    let t = Instant::now();
    for k in &keys {
        black_box(tenant.get(black_box(k)));
    }
    let get = t.elapsed() / ops as u32;
    let t = Instant::now();
    for (i, k) in keys.iter().enumerate() {
        tenant.set(black_box(k), Value::Int(i as i64)).unwrap();
    }
    (get, t.elapsed() / ops as u32)
}

/// Median time to take one flow's keys by prefix, over `flows` flows of an `n`-item
/// store (each taken once).
fn takes(tenant: &TenantStore, n: usize, flows: usize) -> Duration {
    let mut times: Vec<Duration> = indices(n / KEYS_PER_FLOW, flows)
        .into_iter()
        .map(|f| {
            let pattern = Pattern::new(&format!("flow:{f:020}:.*")).unwrap();
            let t = Instant::now();
            let taken = tenant.take_matching(&pattern);
            let took = t.elapsed();
            assert!(taken.len() == KEYS_PER_FLOW || taken.is_empty(), "{}", taken.len());
            took
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 1_000_000 } else { 10_000_000 };
    let small = 10_000;
    let ops = 1_000_000;

    let before = rss();
    let baseline: HashMap<String, i64> = (0..n).map(|i| (key(i), i as i64)).collect();
    let map_bytes = rss().saturating_sub(before);
    let before = rss();
    let big = filled(n);
    let store_bytes = rss().saturating_sub(before);
    let payload = 48.0;
    let per = |bytes: u64| bytes as f64 / n as f64;
    println!("{n} items of a 40-byte key and an 8-byte value");
    println!(
        "resident memory per item: estate store {:.0} B ({:.0} B beyond key and value); bare HashMap<String, i64> {:.0} B ({:.0} B beyond)",
        per(store_bytes),
        per(store_bytes) - payload,
        per(map_bytes),
        per(map_bytes) - payload
    );
    // The bare map's gets at the same size: how much of a get at scale is the memory
    // itself (cache and TLB misses on random keys) rather than the store.
    let keys: Vec<String> = indices(n, ops).into_iter().map(key).collect();
    let t = Instant::now();
    for k in &keys {
        black_box(baseline.get(black_box(k.as_str())));
    }
    let map_get = t.elapsed() / ops as u32;
    drop((baseline, keys));

    let little = filled(small);
    let (get_small, set_small) = get_set(&little, small, small, ops);
    let (get_big, set_big) = get_set(&big, n, n, ops);
    // An NF's packets touch the keys of the flows it is handling now, not a random key
    // of all it holds: the same operations on 10,000 of the 10 M keys.
    let (get_hot, set_hot) = get_set(&big, n, small, ops);
    println!(
        "get: {get_big:?} at {n} items, {get_small:?} at {small} ({:.2}x); bare HashMap at {n}: {map_get:?} (store / map {:.2}x)",
        get_big.as_secs_f64() / get_small.as_secs_f64(),
        get_big.as_secs_f64() / map_get.as_secs_f64()
    );
    println!(
        "set: {set_big:?} at {n} items, {set_small:?} at {small} ({:.2}x)",
        set_big.as_secs_f64() / set_small.as_secs_f64()
    );
    println!(
        "on {small} active keys of the {n}: get {get_hot:?} ({:.2}x the {small}-item store), set {set_hot:?} ({:.2}x)",
        get_hot.as_secs_f64() / get_small.as_secs_f64(),
        set_hot.as_secs_f64() / set_small.as_secs_f64()
    );
    let (take_small, take_big) = (takes(&little, small, 1_000), takes(&big, n, 1_000));
    println!(
        "take of one flow's {KEYS_PER_FLOW} keys by prefix (median of 1,000): {take_big:?} at {n} items, {take_small:?} at {small} ({:.2}x)",
        take_big.as_secs_f64() / take_small.as_secs_f64()
    );
}
