//! NF throughput, as ratios within one run (`cargo bench --bench nf`):
//!
//! - ids as Wasm in a 2-node cluster with estate state (per-flow counters in the
//!   store, a global read for every packet with a match) against ids as Wasm with no
//!   state sharing (the same guest, global reads refused, so it uses its local count);
//! - ids as Wasm against the same logic compiled natively (`nf-ids` as a library),
//!   both on a local store;
//! - local set/get from inside a Wasm NF: a guest that does 500 state_set + 500
//!   state_get per packet, against one that does nothing, per operation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use estate::guests;
use estate::nfrun::{FailPolicy, FlowState};
use estate::node::{Node, NodeConfig};
use estate::store::{DEFAULT_TENANT, Store, TenantStore};
use estate::traffic::{OwnedPacket, SynthConfig, synthetic};
use estate::wasm::{Limits, NfState, WasmHost};
use nf_ids::{Ids, IdsEnv};

const CONFIG: &str = "pattern = attack\npattern = evil\nthreshold = 1000000\n";

fn traffic(packets: usize) -> Vec<OwnedPacket> {
    let config = SynthConfig { seed: 9, flows: 200, packets, pattern_share: 0.1, ..SynthConfig::default() };
    synthetic(&config).collect()
}

fn pps(packets: usize, took: Duration) -> f64 {
    packets as f64 / took.as_secs_f64()
}

/// Runs a Wasm NF over `packets` on a local store; returns the time taken.
fn wasm_local(host: &WasmHost, bytes: &[u8], config: &str, packets: &[OwnedPacket]) -> Duration {
    let nf = host.load_nf(bytes).unwrap();
    let tenant: Arc<TenantStore> = Store::new("bench").tenant(DEFAULT_TENANT);
    let mut running = host.start_nf(&nf, tenant, config).unwrap();
    let t = Instant::now();
    for p in packets {
        running.on_packet(&p.as_packet()).unwrap();
    }
    t.elapsed()
}

struct NativeEnv(Arc<TenantStore>);

impl IdsEnv for NativeEnv {
    fn counter_add(&mut self, key: &str, delta: i64) -> i64 {
        self.0.add(key, delta).unwrap()
    }

    fn global_sum(&mut self, _: &str) -> Result<i64, String> {
        Err("no state sharing".into())
    }

    fn emit(&mut self, event: &str) {
        NfState::emit(self.0.as_ref(), event);
    }
}

fn native_local(packets: &[OwnedPacket]) -> Duration {
    let mut ids = Ids::from_config(CONFIG).unwrap();
    let mut env = NativeEnv(Store::new("bench").tenant(DEFAULT_TENANT));
    let t = Instant::now();
    for p in packets {
        ids.on_packet(&p.as_packet(), &mut env);
    }
    t.elapsed()
}

fn wasm_in_cluster(bytes: &[u8], packets: Vec<OwnedPacket>) -> Duration {
    let a = Node::start(NodeConfig::new("a", "tcp://127.0.0.1:*")).unwrap();
    let mut config = NodeConfig::new("b", "tcp://127.0.0.1:*");
    config.join.push(a.endpoint().to_string());
    let b = Node::start(config).unwrap();
    while a.members().iter().filter(|m| m.state == "alive").count() != 1 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let n = packets.len();
    // `run_nf` compiles the module before its packet thread starts; that is not
    // packet processing, so the clock starts when it returns.
    a.run_nf(bytes, CONFIG, Box::new(packets.into_iter()), FailPolicy::Closed, FlowState::Take).unwrap();
    let t = Instant::now();
    while !a.nf_finished() {
        std::thread::sleep(Duration::from_micros(200));
    }
    let took = t.elapsed();
    let counters = a.nf_counters().snapshot();
    assert!(counters.contains(&("nf_forwarded".to_string(), n as u64)), "{counters:?}");
    assert!(counters.contains(&("nf_faults".to_string(), 0)), "{counters:?}");
    b.shutdown();
    a.shutdown();
    took
}

fn set_get_guest(body: &str) -> Vec<u8> {
    format!(
        r#"(module
            (import "estate" "state_set" (func $set (param i32 i32 i32 i32) (result i32)))
            (import "estate" "state_get" (func $get (param i32 i32) (result i32)))
            (memory (export "memory") 1)
            ;; key "flow:6:10.0.0.1:5000-10.0.0.2:443:n" (35 bytes) at 0, value Int(7) at 64
            (data (i32.const 0) "flow:6:10.0.0.1:5000-10.0.0.2:443:n")
            (data (i32.const 64) "\00\07\00\00\00\00\00\00\00")
            (func (export "estate_abi_version") (result i32) i32.const 1)
            (func (export "estate_alloc") (param i32) (result i32) i32.const 1024)
            (func (export "estate_nf_init") (param i32 i32) (result i32) i32.const 0)
            (func (export "estate_on_packet") (param i32 i32) (result i32) (local $i i32) {body} i32.const 0))"#
    )
    .into_bytes()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 5_000 } else { 20_000 };
    let packets = traffic(n);
    let ids = guests::require("nf_ids").unwrap();
    let host = WasmHost::new(Limits::default()).unwrap();

    // Warm up caches and the allocator once.
    wasm_local(&host, &ids, CONFIG, &packets[..n / 10]);
    let local = wasm_local(&host, &ids, CONFIG, &packets);
    let native = native_local(&packets);
    let cluster = wasm_in_cluster(&ids, packets.clone());
    println!("ids over {n} synthetic packets (200 flows, 10% carrying a pattern)");
    println!("{:>44} {:>12} {:>10}", "", "pkts/s", "ratio");
    println!("{:>44} {:>12.0} {:>10}", "wasm, local store, no sharing (baseline)", pps(n, local), "1.00");
    println!(
        "{:>44} {:>12.0} {:>10.2}",
        "wasm, estate state in a 2-node cluster",
        pps(n, cluster),
        local.as_secs_f64() / cluster.as_secs_f64()
    );
    println!(
        "{:>44} {:>12.0} {:>10.2}",
        "native, local store (wasm / native below)",
        pps(n, native),
        native.as_secs_f64() / local.as_secs_f64()
    );

    let ops = 500;
    let loop_body = format!(
        "(local.set $i (i32.const {ops})) (loop (drop (call $set (i32.const 0) (i32.const 35) (i32.const 64) (i32.const 9))) (drop (call $get (i32.const 0) (i32.const 35))) (local.set $i (i32.sub (local.get $i) (i32.const 1))) (br_if 0 (local.get $i)))"
    );
    let few = &packets[..n / 10];
    let empty = wasm_local(&host, &set_get_guest(""), "", few);
    let busy = wasm_local(&host, &set_get_guest(&loop_body), "", few);
    let per_op = (busy.saturating_sub(empty)).as_nanos() as f64 / (few.len() * ops * 2) as f64;
    println!();
    println!("local set/get from inside a Wasm NF: {per_op:.0} ns per operation (35-byte key, 8-byte value)");
}
