//! Runs the first two guests over sample data: the `sum` reducer and the `count` NF,
//! both compiled to wasm32 by the build script and run here under wasmtime.
//!
//! Run it with `cargo run --release --example first_guests`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use estate::guests;
use estate::wasm::{Limits, NfState, WasmHost};
use estate_guest::{Item, Value};

/// The NF's state: here a plain map; in a node, the node's local store.
#[derive(Default)]
struct Counters(Mutex<BTreeMap<String, i64>>);

impl NfState for Counters {
    fn counter_add(&self, key: &str, delta: i64) -> Result<i64, String> {
        let mut map = self.0.lock().map_err(|_| "poisoned")?;
        let v = map.entry(key.to_string()).or_default();
        *v = v.checked_add(delta).ok_or("overflow")?;
        Ok(*v)
    }
}

fn main() -> anyhow::Result<()> {
    // One host per node: an engine, a linker and default budgets for every call.
    let host = WasmHost::new(Limits::default())?;

    // A reducer is compiled once and instantiated per call.
    let sum = host.load_reducer(&guests::require("reducer_sum")?)?;
    let items: Vec<Item> = (1..=3)
        .map(|n| Item {
            key: "c".into(),
            value: Value::Int(1_234_567 * n),
            origin: format!("node{n}"),
            version: n as u64,
        })
        .collect();
    match host.reduce_all(&sum, &items)? {
        Some(total) => println!("sum over {} items: {:?}", items.len(), total.value),
        None => println!("sum over no items: nothing"),
    }

    // An NF instance keeps its memory across packets and writes state through the host.
    let nf = host.load_nf(&guests::require("nf_count")?)?;
    let state = Arc::new(Counters::default());
    let mut running = host.start_nf(&nf, state.clone())?;
    for len in [60, 1500, 40, 0] {
        let verdict = running.on_packet(&vec![0u8; len])?;
        println!("packet of {len:>4} bytes: {verdict:?}");
    }
    for (key, value) in state.0.lock().unwrap().iter() {
        println!("NF state {key} = {value}");
    }
    Ok(())
}
