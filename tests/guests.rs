//! The first guests run through the whole pipeline: built from `reducers-wasm/` and
//! `nfs-wasm/` by the build script, loaded by the runtime, run under wasmtime.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use estate::guests;
use estate::wasm::{GuestError, Limits, NfState, WasmHost};
use estate_guest::{Item, Value, Verdict};

fn item(key: &str, value: Value, origin: &str) -> Item {
    Item { key: key.into(), value, origin: origin.into(), version: 1 }
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

#[derive(Default)]
struct Counters(Mutex<HashMap<String, i64>>);

impl NfState for Counters {
    fn counter_add(&self, key: &str, delta: i64) -> Result<i64, String> {
        let mut map = self.0.lock().unwrap();
        let v = map.entry(key.to_string()).or_default();
        *v = v.checked_add(delta).ok_or("overflow")?;
        Ok(*v)
    }
}

#[test]
fn count_nf_counts_packets_and_bytes_in_host_state() {
    let host = WasmHost::new(Limits::default()).unwrap();
    let nf = host.load_nf(&guests::require("nf_count").unwrap()).unwrap();
    let state = Arc::new(Counters::default());
    let mut running = host.start_nf(&nf, state.clone()).unwrap();
    let packets: Vec<Vec<u8>> = (1..=50).map(|n| vec![0xab; n]).collect();
    for p in &packets {
        assert_eq!(running.on_packet(p).unwrap(), Verdict::Forward);
    }
    assert_eq!(running.on_packet(&[]).unwrap(), Verdict::Drop);
    let map = state.0.lock().unwrap();
    assert_eq!(map["count:packets"], 50);
    assert_eq!(map["count:bytes"], (1..=50).sum::<i64>());
    assert_eq!(map["count:dropped"], 1);
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
