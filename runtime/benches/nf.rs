//! NF throughput, as ratios within one run (`cargo bench --bench nf`):
//!
//! - ids as Wasm in a node of a 2-node cluster with estate state (`--flow-state take`)
//!   against the same with no state sharing (`off`: global reads refused, moved flows
//!   start from nothing), over flows that stay put and over flows that all moved from
//!   the other node (each moved flow's state is taken over before its first packet);
//! - ids as Wasm against the same logic compiled natively (`nf-ids` as a library),
//!   both on a local store, with ids' prefilter on and off, the Wasm form scanning with
//!   the host's matcher (its default) and in the guest (`scan = guest`) (median of
//!   runs in rotating order); `cargo bench --bench nf -- wasm-vs-native` runs only
//!   this part (`--only binary/on`: one payload kind and prefilter setting of it;
//!   `--packets N`: N packets a series);
//! - local set/get from inside a Wasm NF: a guest that does 500 state_set + 500
//!   state_get per packet, against one that does nothing, per operation, beside the
//!   same calls made natively; `cargo bench --bench nf -- set-get` runs only this part.

use std::sync::Arc;
use std::time::{Duration, Instant};

use estate::guests;
use estate::nf::input::synth::{OwnedPacket, PayloadKind, SynthConfig, synthetic};
use estate::nf::{FailPolicy, FlowState};
use estate::node::{Node, NodeConfig};
use estate::store::{DEFAULT_TENANT, Store, TenantStore};
use estate::wasm::{Limits, NfInstance, NfState, WasmHost};
use estate_guest::abi::batch::MAX_PACKETS;
use estate_guest::{Error as StateError, Item, State, Value};
use nf_ids::Ids;

/// ids' configuration. The synthetic payloads are random lowercase letters, where the
/// prefilter's rare bytes are common, so the cluster runs turn it off (see nf-ids).
fn ids_config(prefilter: &str) -> String {
    format!("pattern = attack\npattern = evil\nthreshold = 1000000\nprefilter = {prefilter}\n")
}

/// ids' configuration with the scan in the guest rather than by the host's matcher.
fn guest_scan(prefilter: &str) -> String {
    format!("{}scan = guest\n", ids_config(prefilter))
}

fn traffic(packets: usize) -> Vec<OwnedPacket> {
    traffic_of(packets, PayloadKind::Text)
}

fn traffic_of(packets: usize, payload: PayloadKind) -> Vec<OwnedPacket> {
    let config = SynthConfig { seed: 9, flows: 200, packets, pattern_share: 0.1, payload, ..SynthConfig::default() };
    synthetic(&config).collect()
}

fn pps(packets: usize, took: Duration) -> f64 {
    packets as f64 / took.as_secs_f64()
}

/// A Wasm NF on a local store of its own.
fn wasm_nf(host: &WasmHost, bytes: &[u8], config: &str) -> NfInstance {
    let nf = host.load_nf(bytes).unwrap();
    let tenant: Arc<TenantStore> = Store::new("bench").tenant(DEFAULT_TENANT).unwrap();
    host.start_nf(&nf, tenant, config).unwrap()
}

/// Runs a Wasm NF over `packets`, in batches as a node's NF thread hands them over
/// when they are there already; returns the time taken.
fn wasm_local(nf: &mut NfInstance, packets: &[OwnedPacket]) -> Duration {
    let mut decided = Vec::with_capacity(MAX_PACKETS);
    let t = Instant::now();
    for batch in packets.chunks(MAX_PACKETS) {
        let views: Vec<_> = batch.iter().map(OwnedPacket::as_packet).collect();
        nf.on_packets(&views, &mut decided).unwrap();
        decided.clear();
    }
    t.elapsed()
}

struct NativeEnv(Arc<TenantStore>);

impl State for NativeEnv {
    fn get(&mut self, key: &str) -> Result<Option<Value>, StateError> {
        Ok(NfState::get(self.0.as_ref(), key))
    }

    fn set(&mut self, key: &str, value: Value) -> Result<(), StateError> {
        NfState::set(self.0.as_ref(), key, value).map_err(StateError::Refused)
    }

    fn del(&mut self, key: &str) -> Result<bool, StateError> {
        Ok(NfState::del(self.0.as_ref(), key))
    }

    fn counter_add(&mut self, key: &str, delta: i64) -> Result<i64, StateError> {
        Ok(self.0.add(key, delta).unwrap())
    }

    fn global(&mut self, _: &str, _: &str, _: u32) -> Result<Option<Item>, StateError> {
        Err(StateError::Refused("no state sharing".into()))
    }

    fn global_all(&mut self, _: &str, _: &str, _: u32) -> Result<Option<Item>, StateError> {
        Err(StateError::Refused("no state sharing".into()))
    }

    fn take(&mut self, _: &str) -> Result<u32, StateError> {
        Err(StateError::Refused("no state sharing".into()))
    }

    fn now_ms(&mut self) -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
    }

    fn metric_add(&mut self, name: &str, delta: i64) {
        NfState::metric_add(self.0.as_ref(), name, delta);
    }

    fn emit(&mut self, event: &str) {
        NfState::emit(self.0.as_ref(), event);
    }
}

/// Runs the native form over `packets`; returns the time taken.
fn native_local((ids, env): &mut (Ids, NativeEnv), packets: &[OwnedPacket]) -> Duration {
    let t = Instant::now();
    for p in packets {
        ids.on_packet(&p.as_packet(), env);
    }
    t.elapsed()
}

/// ids on node `b` of a 2-node cluster over `packets`, with `flows` semantics, after
/// node `a` ran ids over `before` (the state moved flows bring along). Returns the time
/// `b` took and its counters.
fn in_cluster(
    bytes: &[u8],
    before: Vec<OwnedPacket>,
    packets: Vec<OwnedPacket>,
    flows: FlowState,
) -> (Duration, Vec<(String, u64)>) {
    let a = Node::start(NodeConfig::new("a", "tcp://127.0.0.1:*")).unwrap();
    let mut config = NodeConfig::new("b", "tcp://127.0.0.1:*");
    config.join.push(a.endpoint().to_string());
    let b = Node::start(config).unwrap();
    while a.members().iter().filter(|m| m.state == "alive").count() != 1 {
        std::thread::sleep(Duration::from_millis(10));
    }
    a.run_nf(bytes, &ids_config("off"), Box::new(before.into_iter()), FailPolicy::Closed, flows).unwrap();
    while !a.nf_finished() {
        std::thread::sleep(Duration::from_millis(1));
    }
    let n = packets.len() as u64;
    // `run_nf` compiles the module before its packet thread starts; that is not
    // packet processing, so the clock starts when it returns.
    b.run_nf(bytes, &ids_config("off"), Box::new(packets.into_iter()), FailPolicy::Closed, flows).unwrap();
    let t = Instant::now();
    while !b.nf_finished() {
        std::thread::sleep(Duration::from_micros(200));
    }
    let took = t.elapsed();
    let counters = b.nf_counters().snapshot();
    assert!(counters.contains(&("nf_forwarded".to_string(), n)), "{counters:?}");
    assert!(counters.contains(&("nf_faults".to_string(), 0)), "{counters:?}");
    b.shutdown();
    a.shutdown();
    (took, counters)
}

/// One line of the results table.
fn row(label: &str, pps: f64, ratio: f64) {
    println!("{label:>52} {pps:>12.0} {ratio:>10.2}");
}

fn counter(counters: &[(String, u64)], name: &str) -> u64 {
    counters.iter().find(|(n, _)| n == name).map_or(0, |(_, v)| *v)
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
            (func (export "estate_abi_version") (result i32) i32.const 3)
            (func (export "estate_alloc") (param i32) (result i32) i32.const 1024)
            (func (export "estate_nf_init") (param i32 i32) (result i32) i32.const 0)
            (func (export "estate_on_packet") (param i32 i32) (result i32) (local $i i32) {body} i32.const 0))"#
    )
    .into_bytes()
}

/// Local set/get from inside a Wasm NF, per operation: a guest doing 500 `state_set`
/// and 500 `state_get` per packet minus one doing nothing, against the same calls made
/// natively on the same kind of store (what the host calls end in), median of 5 each.
fn set_get(host: &WasmHost, few: &[OwnedPacket]) {
    let ops = 500;
    let loop_body = format!(
        "(local.set $i (i32.const {ops})) (loop (drop (call $set (i32.const 0) (i32.const 35) (i32.const 64) (i32.const 9))) (drop (call $get (i32.const 0) (i32.const 35))) (local.set $i (i32.sub (local.get $i) (i32.const 1))) (br_if 0 (local.get $i)))"
    );
    let (mut empty_nf, mut busy_nf) =
        (wasm_nf(host, &set_get_guest(""), ""), wasm_nf(host, &set_get_guest(&loop_body), ""));
    let native = Store::new("bench").tenant(DEFAULT_TENANT).unwrap();
    let key = "flow:6:10.0.0.1:5000-10.0.0.2:443:n";
    let native_run = || {
        let t = Instant::now();
        for _ in few {
            for _ in 0..ops {
                NfState::set(native.as_ref(), key, Value::Int(7)).unwrap();
                std::hint::black_box(NfState::get(native.as_ref(), key));
            }
        }
        t.elapsed()
    };
    let (mut wasm, mut natively) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let empty = wasm_local(&mut empty_nf, few);
        let busy = wasm_local(&mut busy_nf, few);
        wasm.push(busy.saturating_sub(empty).as_nanos() as f64 / (few.len() * ops * 2) as f64);
        natively.push(native_run().as_nanos() as f64 / (few.len() * ops * 2) as f64);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (wasm, natively) = (median(wasm), median(natively));
    println!();
    println!(
        "local set/get from inside a Wasm NF: {wasm:.0} ns per operation (35-byte key, 8-byte value); \
         the same calls natively: {natively:.0} ns; wasm / native {:.2}",
        wasm / natively
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // `--packets N`: a longer measured series (to profile).
    let args: Vec<String> = std::env::args().collect();
    let after = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1));
    let n = after("--packets").map(|n| n.parse().expect("--packets N")).unwrap_or(if quick { 5_000 } else { 20_000 });
    let packets = traffic(n);
    let ids = guests::require("nf_ids").unwrap();
    let host = WasmHost::new(Limits::default()).unwrap();
    if std::env::args().any(|a| a == "set-get") {
        set_get(&host, &packets[..n / 10]);
        return;
    }

    let rounds = if quick { 2 } else { 6 };
    let mid = |mut v: Vec<Duration>| {
        v.sort();
        (v[(v.len() - 1) / 2] + v[v.len() / 2]) / 2
    };
    println!("ids over {n} synthetic packets (200 flows, 10% carrying a pattern)");
    println!("{:>52} {:>12} {:>10}", "", "pkts/s", "ratio");
    let binary = traffic_of(n, PayloadKind::Binary);
    // `--only binary/on`: one payload kind and prefilter setting (to profile).
    let only = after("--only");
    for (payload, packets, prefilter) in
        [("text", &packets, "on"), ("text", &packets, "off"), ("binary", &binary, "on"), ("binary", &binary, "off")]
    {
        if only.is_some_and(|row| *row != format!("{payload}/{prefilter}")) {
            continue;
        }
        let config = ids_config(prefilter);
        // Each form runs for the whole series, as an NF does: one unmeasured pass to
        // warm it up (its memory, its store's tables), then measured passes whose
        // order rotates.
        let mut in_wasm = wasm_nf(&host, &ids, &config);
        let mut in_guest = wasm_nf(&host, &ids, &guest_scan(prefilter));
        let mut in_native =
            (Ids::from_config(&config).unwrap(), NativeEnv(Store::new("bench").tenant(DEFAULT_TENANT).unwrap()));
        wasm_local(&mut in_wasm, packets);
        wasm_local(&mut in_guest, packets);
        native_local(&mut in_native, packets);
        let mut times = [Vec::new(), Vec::new(), Vec::new()];
        for round in 0..rounds.max(3) {
            for form in (0..3).map(|k| (k + round) % 3) {
                times[form].push(match form {
                    0 => wasm_local(&mut in_wasm, packets),
                    1 => wasm_local(&mut in_guest, packets),
                    _ => native_local(&mut in_native, packets),
                });
            }
        }
        let [wasm, guest, native] = times.map(mid);
        println!("{payload} payloads, prefilter {prefilter} (median of {}, order rotating):", rounds.max(3));
        row("wasm, host scan (default): wasm / native", pps(n, wasm), native.as_secs_f64() / wasm.as_secs_f64());
        row("wasm, scan in the guest: wasm / native", pps(n, guest), native.as_secs_f64() / guest.as_secs_f64());
        row("native", pps(n, native), 1.0);
    }
    if std::env::args().any(|a| a == "wasm-vs-native") {
        return;
    }

    // In a node (node b of two), over the second half of a stream after node a ran
    // the first half: state sharing off (the baseline) against estate state (take).
    // Runs alternate; the median of `rounds` of each is reported.
    let stream = traffic(if quick { 2 * n } else { 100_000 });
    let (first, second) = stream.split_at(stream.len() / 2);
    let half = second.len();
    let moved: Vec<OwnedPacket> = second.iter().cloned().map(|mut p| (p.mark = 1, p).1).collect();
    for (what, input) in [("flows not moved", second.to_vec()), ("every flow moved from node a", moved)] {
        let (mut offs, mut takes, mut counters) = (Vec::new(), Vec::new(), Vec::new());
        // Runs drift (whichever kind runs first after a teardown comes out slower), so
        // the order alternates, off-take then take-off, after one unmeasured run.
        in_cluster(&ids, first.to_vec(), input.clone(), FlowState::Off);
        for round in 0..rounds {
            let mut run = |flows| match flows {
                FlowState::Take => {
                    let (took, c) = in_cluster(&ids, first.to_vec(), input.clone(), flows);
                    takes.push(took);
                    counters = c;
                }
                _ => offs.push(in_cluster(&ids, first.to_vec(), input.clone(), flows).0),
            };
            let order =
                if round % 2 == 0 { [FlowState::Off, FlowState::Take] } else { [FlowState::Take, FlowState::Off] };
            order.into_iter().for_each(&mut run);
        }
        let (off, take) = (mid(offs), mid(takes));
        println!("in a 2-node cluster, {half} packets, {what} (median of {rounds}, order alternating):");
        row("no state sharing (baseline)", pps(half, off), 1.0);
        row("estate state (take)", pps(half, take), off.as_secs_f64() / take.as_secs_f64());
        let adopted = counter(&counters, "nf_flows_adopted");
        if adopted > 0 {
            let per_flow = take.saturating_sub(off) / adopted as u32;
            println!("{:>52} {:>12} {:>10?}", "flows adopted, extra time per flow", adopted, per_flow);
        }
    }

    set_get(&host, &packets[..n / 10]);
}
