//! The first guests run through the whole pipeline: built from `reducers-wasm/` and
//! `nfs-wasm/` by the build script, loaded by the runtime, run under wasmtime.

use std::sync::Arc;
use std::time::Duration;

use estate::guests;
use estate::pattern::Pattern;
use estate::store::{DEFAULT_TENANT, Store, TenantStore};
use estate::wasm::{GuestError, Limits, NfState, WasmHost};
use estate_guest::nf::{Rewrite, flow_key, tcp};
use estate_guest::{Direction, Item, Packet, Value, Verdict};

fn item(key: &str, value: Value, origin: &str) -> Item {
    Item { key: key.into(), value, origin: origin.into(), writer: origin.into(), version: 1 }
}

#[test]
fn sum_reducer_adds_integers_exactly() {
    let host = WasmHost::new(Limits::default()).unwrap();
    let sum = host.load_reducer(&guests::require("reducer_sum").unwrap()).unwrap();
    let items =
        [item("c", Value::Int(1_234_567), "n1"), item("c", Value::Int(1), "n2"), item("c", Value::Int(-10), "n3")];
    assert_eq!(host.reduce_all(&sum, &items).unwrap().map(|i| i.value), Some(Value::Int(1_234_558)));
    assert_eq!(host.reduce_all(&sum, &[]).unwrap(), None);
    let big = [item("a", Value::Int(i64::MAX - 1), "n1"), item("b", Value::Int(1), "n2")];
    assert_eq!(host.reduce_all(&sum, &big).unwrap().map(|i| i.value), Some(Value::Int(i64::MAX)));
}

#[test]
fn sum_reducer_reports_errors_as_values() {
    let host = WasmHost::new(Limits::default()).unwrap();
    let sum = host.load_reducer(&guests::require("reducer_sum").unwrap()).unwrap();
    let bad = [item("c", Value::Int(1), "n1"), item("flow:9", Value::Text("x".into()), "n7")];
    match host.reduce_all(&sum, &bad) {
        Err(GuestError::Guest(msg)) => {
            assert!(msg.contains("flow:9") && msg.contains("n7"), "{msg}");
        }
        other => panic!("expected a guest error, got {other:?}"),
    }
    let overflow = [item("a", Value::Int(i64::MAX), "n1"), item("b", Value::Int(1), "n2")];
    assert!(matches!(host.reduce_all(&sum, &overflow), Err(GuestError::Guest(m)) if m.contains("overflow")));
}

fn packet<'a>(flow: &'a str, payload: &'a [u8]) -> Packet<'a> {
    Packet {
        proto: 6,
        src: ([10, 0, 0, 1], 40000),
        dst: ([10, 0, 0, 2], 443),
        direction: Direction::Forward,
        moved: false,
        tcp_flags: 0,
        flow,
        payload,
    }
}

#[test]
fn count_nf_counts_packets_and_bytes_in_the_node_store() {
    let host = WasmHost::new(Limits::default()).unwrap();
    let nf = host.load_nf(&guests::require("nf_count").unwrap()).unwrap();
    let store = Store::new("n1");
    let tenant = store.tenant(DEFAULT_TENANT).unwrap();
    let mut running = host.start_nf(&nf, tenant.clone(), "max_payload = 40").unwrap();
    for n in 1..=50usize {
        let flow = if n % 2 == 0 { "6:a-b" } else { "6:c-d" };
        let expected = if n > 40 { Verdict::Drop } else { Verdict::Forward };
        assert_eq!(running.on_packet(&packet(flow, &vec![0xab; n])).unwrap(), expected);
    }
    let int = |k: &str| tenant.get(k).map(|v| v.value);
    assert_eq!(int("count:packets"), Some(Value::Int(40)));
    assert_eq!(int("count:bytes"), Some(Value::Int((1..=40).sum())));
    assert_eq!(int("count:dropped"), Some(Value::Int(10)));
    assert_eq!(int("flow:6:a-b:packets"), Some(Value::Int(20)));
    assert_eq!(int("flow:6:c-d:packets"), Some(Value::Int(20)));
}

#[test]
fn nf_configuration_errors_are_values() {
    let host = WasmHost::new(Limits::default()).unwrap();
    let nf = host.load_nf(&guests::require("nf_count").unwrap()).unwrap();
    let tenant = Store::new("n1").tenant(DEFAULT_TENANT).unwrap();
    match host.start_nf(&nf, tenant, "max_payload = lots") {
        Err(GuestError::Guest(msg)) => assert!(msg.contains("max_payload"), "{msg}"),
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

#[test]
fn every_built_guest_declares_this_abi() {
    let host = WasmHost::new(Limits::default()).unwrap();
    assert!(guests::ALL.len() >= 2);
    for (name, _) in guests::ALL {
        let bytes = guests::require(name).unwrap();
        let loaded = if name.starts_with("reducer_") {
            host.load_reducer(&bytes).map(drop)
        } else {
            host.load_nf(&bytes).map(drop)
        };
        loaded.unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// A node alone in its cluster: its tenant's keys, and global reads that count them
/// (what the NAT's block claims ask) or give the newest of them (its inbound lookups).
struct Alone(Arc<TenantStore>);

impl NfState for Alone {
    fn counter_add(&self, key: &str, delta: i64) -> Result<i64, String> {
        NfState::counter_add(&*self.0, key, delta)
    }

    fn get(&self, key: &str) -> Option<Value> {
        NfState::get(&*self.0, key)
    }

    fn set(&self, key: &str, value: Value) -> Result<(), String> {
        NfState::set(&*self.0, key, value)
    }

    fn del(&self, key: &str) -> bool {
        NfState::del(&*self.0, key)
    }

    fn global(&self, pattern: &str, reducer: &str, _: Duration, _: bool) -> Result<Option<Item>, String> {
        let matching = self.0.matching(&Pattern::new(pattern).map_err(|e| e.to_string())?);
        match reducer {
            "count" => Ok(Some(Item::of(Value::Int(matching.len() as i64)))),
            // Alone, a node holds each key once: its newest value is its only one.
            "latest" => Ok(matching.into_iter().next()),
            other => panic!("the NAT asks only count and latest, not {other}"),
        }
    }
}

#[test]
fn nat_guest_has_the_host_rewrite_both_ways() {
    const EXTERNAL: [u8; 4] = [198, 51, 100, 1];
    let (client, server) = (([10, 0, 0, 1], 40000), ([192, 168, 0, 1], 443));
    let host = WasmHost::new(Limits::default()).unwrap();
    let nf = host.load_nf(&guests::require("nf_nat").unwrap()).unwrap();
    let tenant = Store::new("n1").tenant(DEFAULT_TENANT).unwrap();
    let state = Arc::new(Alone(tenant.clone()));
    let config = "ports = 20000-20099\nblock = 10\nexternal = 198.51.100.1";
    let mut nat = host.start_nf(&nf, state.clone(), config).unwrap();
    let between = |src, dst, flow| Packet { src, dst, ..packet(flow, b"x") };
    // Outbound: the source becomes the external address and the flow's port.
    let out = flow_key(6, client, server);
    assert_eq!(nat.on_packet(&between(client, server, &out)).unwrap(), Verdict::Forward);
    let Some(Rewrite { src: (EXTERNAL, port), dst }) = nat.take_rewrite() else { panic!("no rewrite") };
    assert!((20000..=20099).contains(&port) && dst == server, "{port} {dst:?}");
    assert_eq!(tenant.get(&format!("nat:port:{port}")).map(|v| v.value), Some(Value::Text("10.0.0.1:40000".into())));
    // Inbound to that port: the destination becomes the client.
    let back = flow_key(6, server, (EXTERNAL, port));
    assert_eq!(nat.on_packet(&between(server, (EXTERNAL, port), &back)).unwrap(), Verdict::Forward);
    assert_eq!(nat.take_rewrite(), Some(Rewrite { src: server, dst: client }));
    // Inbound to a port nobody was given: dropped, nothing to rewrite.
    let other = if port == 20000 { 20001 } else { 20000 };
    let stray = flow_key(6, server, (EXTERNAL, other));
    assert_eq!(nat.on_packet(&between(server, (EXTERNAL, other), &stray)).unwrap(), Verdict::Drop);
    assert_eq!(nat.take_rewrite(), None);
    assert_eq!(tenant.get("nat:unsolicited").map(|v| v.value), Some(Value::Int(1)));
    // Without an external address the NAT allocates, and asks for no rewrite.
    let mut plain = host.start_nf(&nf, state, "ports = 30000-30099").unwrap();
    let flow = flow_key(6, ([10, 0, 0, 2], 1), server);
    assert_eq!(plain.on_packet(&between(([10, 0, 0, 2], 1), server, &flow)).unwrap(), Verdict::Forward);
    assert_eq!(plain.take_rewrite(), None);
}

#[test]
fn firewall_guest_opens_tcp_flows_on_a_syn_only_when_told() {
    let host = WasmHost::new(Limits::default()).unwrap();
    let nf = host.load_nf(&guests::require("nf_firewall").unwrap()).unwrap();
    let (client, server) = (([10, 0, 0, 1], 40000), ([192, 168, 0, 1], 443));
    let flow = flow_key(6, client, server);
    let segment = |src, dst, tcp_flags| Packet { src, dst, tcp_flags, ..packet(&flow, b"x") };
    for (config, ack_first) in
        [("inside = 10.0.0.0/8\nnew_tcp = syn", Verdict::Drop), ("inside = 10.0.0.0/8", Verdict::Forward)]
    {
        let tenant = Store::new("n1").tenant(DEFAULT_TENANT).unwrap();
        let mut fw = host.start_nf(&nf, tenant.clone(), config).unwrap();
        assert_eq!(fw.on_packet(&segment(client, server, tcp::ACK)).unwrap(), ack_first, "{config}");
        assert_eq!(fw.on_packet(&segment(client, server, tcp::SYN)).unwrap(), Verdict::Forward, "{config}");
        assert_eq!(fw.on_packet(&segment(server, client, tcp::SYN | tcp::ACK)).unwrap(), Verdict::Forward);
        assert_eq!(fw.on_packet(&segment(client, server, tcp::ACK)).unwrap(), Verdict::Forward);
        let invalid = (ack_first == Verdict::Drop).then_some(Value::Int(1));
        assert_eq!(tenant.get("fw:invalid").map(|v| v.value), invalid, "{config}");
        assert_eq!(fw.take_rewrite(), None);
    }
}
