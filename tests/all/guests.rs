//! The first guests run through the whole pipeline: built from `reducers-wasm/` and
//! `nfs-wasm/` by the build script, loaded by the runtime, run under wasmtime.

use estate::guests;
use estate::store::{DEFAULT_TENANT, Store};
use estate::wasm::{GuestError, Limits, WasmHost};
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
