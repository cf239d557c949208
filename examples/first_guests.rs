//! Runs the first two guests over sample data: the `sum` reducer and the `count` NF,
//! both compiled to wasm32 by the build script and run here under wasmtime.
//!
//! Run it with `cargo run --release --example first_guests`.

use estate::guests;
use estate::store::{DEFAULT_TENANT, Store};
use estate::wasm::{Limits, WasmHost};
use estate_guest::{Direction, Item, Packet, Value};

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
            writer: format!("node{n}"),
            version: n as u64,
        })
        .collect();
    match host.reduce_all(&sum, &items)? {
        Some(total) => println!("sum over {} items: {:?}", items.len(), total.value),
        None => println!("sum over no items: nothing"),
    }

    // An NF instance keeps its memory across packets and writes state through the host,
    // here into a node store of its own.
    let nf = host.load_nf(&guests::require("nf_count")?)?;
    let store = Store::new("node1");
    let tenant = store.tenant(DEFAULT_TENANT).expect("every store has the default tenant");
    let mut running = host.start_nf(&nf, tenant.clone(), "max_payload = 1000")?;
    for len in [60, 1500, 40] {
        let payload = vec![0u8; len];
        let packet = Packet {
            proto: 17,
            src: ([10, 0, 0, 1], 5353),
            dst: ([10, 0, 0, 2], 53),
            direction: Direction::Forward,
            moved: false,
            tcp_flags: 0,
            flow: "17:10.0.0.1:5353-10.0.0.2:53",
            payload: &payload,
        };
        println!("packet of {len:>4} bytes: {:?}", running.on_packet(&packet)?);
    }
    for key in ["count:packets", "count:bytes", "count:dropped"] {
        println!("NF state {key} = {:?}", tenant.get(key).map(|v| v.value));
    }
    Ok(())
}
