//! The IDS NF (`nfs-wasm/ids`) in both of its forms: the Wasm guest under the host
//! runtime and the same logic linked natively, on the same synthetic traffic.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use estate::guests;
use estate::nf::input::synth::{OwnedPacket, SynthConfig, synthetic};
use estate::pattern::Pattern;
use estate::store::{DEFAULT_TENANT, Store, TenantStore};
use estate::wasm::{GuestError, Limits, NfState, WasmHost};
use estate_guest::{Error as StateError, Item, State, Value, Verdict};
use nf_ids::Ids;

const CONFIG: &str = "pattern = attack\npattern = evil\nthreshold = 5";
const THRESHOLD: i64 = 5;

/// A single node: its default tenant, global reads answered from it alone (on one node
/// the global sum is the local value), and the events the NF emitted.
struct Node {
    tenant: Arc<TenantStore>,
    events: Mutex<Vec<String>>,
}

impl Node {
    fn new(id: &str) -> Node {
        Node { tenant: Store::new(id).tenant(DEFAULT_TENANT).unwrap(), events: Mutex::default() }
    }

    /// Every item of the tenant as `(key, value)`, sorted by key.
    fn contents(&self) -> Vec<(String, Value)> {
        let mut items: Vec<_> =
            self.tenant.matching(&Pattern::new(".*").unwrap()).into_iter().map(|i| (i.key, i.value)).collect();
        items.sort_by(|a, b| a.0.cmp(&b.0));
        items
    }

    fn int(&self, key: &str) -> Option<i64> {
        match self.tenant.get(key)?.value {
            Value::Int(n) => Some(n),
            other => panic!("{key} holds {other:?}"),
        }
    }

    fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }
}

impl NfState for Node {
    fn counter_add(&self, key: &str, delta: i64) -> Result<i64, String> {
        NfState::counter_add(&*self.tenant, key, delta)
    }

    fn get(&self, key: &str) -> Option<Value> {
        NfState::get(&*self.tenant, key)
    }

    fn set(&self, key: &str, value: Value) -> Result<(), String> {
        NfState::set(&*self.tenant, key, value)
    }

    fn del(&self, key: &str) -> bool {
        NfState::del(&*self.tenant, key)
    }

    fn global(&self, pattern: &str, reducer: &str, _: Duration, _: bool) -> Result<Option<Item>, String> {
        if reducer != "sum" {
            return Err(format!("this test node only sums, not {reducer:?}"));
        }
        let pattern = Pattern::new(pattern).map_err(|e| e.to_string())?;
        let items = self.tenant.matching(&pattern);
        if items.is_empty() {
            return Ok(None);
        }
        let mut sum = 0;
        for item in items {
            match item.value {
                Value::Int(n) => sum += n,
                other => return Err(format!("{} holds {other:?}", item.key)),
            }
        }
        Ok(Some(Item::of(Value::Int(sum))))
    }

    fn emit(&self, event: &str) {
        self.events.lock().unwrap().push(event.to_string());
    }
}

/// The native form's state over a [`Node`], with the same semantics: every call is the
/// one the host makes for the Wasm form.
struct NativeEnv<'a>(&'a Node);

impl State for NativeEnv<'_> {
    fn get(&mut self, key: &str) -> Result<Option<Value>, StateError> {
        Ok(NfState::get(self.0, key))
    }

    fn set(&mut self, key: &str, value: Value) -> Result<(), StateError> {
        NfState::set(self.0, key, value).map_err(StateError::Refused)
    }

    fn del(&mut self, key: &str) -> Result<bool, StateError> {
        Ok(NfState::del(self.0, key))
    }

    fn counter_add(&mut self, key: &str, delta: i64) -> Result<i64, StateError> {
        NfState::counter_add(self.0, key, delta).map_err(StateError::Refused)
    }

    fn global(&mut self, pattern: &str, reducer: &str, timeout_ms: u32) -> Result<Option<Item>, StateError> {
        let timeout = Duration::from_millis(timeout_ms.into());
        NfState::global(self.0, pattern, reducer, timeout, false).map_err(StateError::Refused)
    }

    fn global_all(&mut self, pattern: &str, reducer: &str, timeout_ms: u32) -> Result<Option<Item>, StateError> {
        let timeout = Duration::from_millis(timeout_ms.into());
        NfState::global(self.0, pattern, reducer, timeout, true).map_err(StateError::Refused)
    }

    fn take(&mut self, pattern: &str) -> Result<u32, StateError> {
        NfState::take(self.0, pattern).map(|n| u32::try_from(n).unwrap_or(u32::MAX)).map_err(StateError::Refused)
    }

    fn now_ms(&mut self) -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
    }

    fn metric_add(&mut self, name: &str, delta: i64) {
        NfState::metric_add(self.0, name, delta);
    }

    fn emit(&mut self, event: &str) {
        NfState::emit(self.0, event);
    }
}

/// Non-overlapping, leftmost-first matches of `patterns` (earlier patterns win at the
/// same position) in `payload`, by a plain scan.
fn count_matches(payload: &[u8], patterns: &[&[u8]]) -> i64 {
    let mut count = 0;
    let mut at = 0;
    while at < payload.len() {
        match patterns.iter().find(|p| payload[at..].starts_with(p)) {
            Some(p) => {
                count += 1;
                at += p.len();
            }
            None => at += 1,
        }
    }
    count
}

/// The test's traffic, as a pcap file (Ethernet, IPv4, TCP/UDP) read back: both forms
/// of the NF get the packets of the same capture.
fn traffic() -> Vec<OwnedPacket> {
    let config = SynthConfig {
        seed: 42,
        flows: 50,
        packets: 5000,
        pattern_share: 0.2,
        patterns: vec!["attack".into(), "evil".into()],
        ..SynthConfig::default()
    };
    let path = std::env::temp_dir().join(format!("estate-ids-{}.pcap", std::process::id()));
    assert_eq!(estate::nf::input::pcap::write(&path, synthetic(&config)).unwrap(), 5000);
    let packets: Vec<OwnedPacket> = estate::nf::input::pcap::read(&path).unwrap().collect();
    let _ = std::fs::remove_file(&path);
    assert_eq!(packets.len(), 5000);
    packets
}

#[test]
fn native_and_wasm_ids_agree_on_the_same_pcap() {
    let packets = traffic();

    let host = WasmHost::new(Limits::default()).unwrap();
    let nf = host.load_nf(&guests::require("nf_ids").unwrap()).unwrap();
    let wasm_node = Arc::new(Node::new("wasm"));
    let mut wasm = host.start_nf(&nf, wasm_node.clone(), CONFIG).unwrap();
    let wasm_verdicts: Vec<Verdict> = packets.iter().map(|p| wasm.on_packet(&p.as_packet()).unwrap()).collect();
    // The Wasm form scans with the host's matcher by default; scanning in the guest
    // gives the same.
    let guest_scan_node = Arc::new(Node::new("wasm"));
    let mut guest_scan = host.start_nf(&nf, guest_scan_node.clone(), &format!("{CONFIG}\nscan = guest")).unwrap();
    for (p, verdict) in packets.iter().zip(&wasm_verdicts) {
        assert_eq!(guest_scan.on_packet(&p.as_packet()).unwrap(), *verdict);
    }
    assert_eq!(guest_scan_node.contents(), wasm_node.contents());
    assert_eq!(guest_scan_node.events(), wasm_node.events());

    let native_node = Node::new("native");
    let mut native = Ids::from_config(CONFIG).unwrap();
    let mut env = NativeEnv(&native_node);
    let native_verdicts: Vec<Verdict> = packets.iter().map(|p| native.on_packet(&p.as_packet(), &mut env)).collect();

    // Both forms did the same thing.
    assert_eq!(wasm_verdicts, native_verdicts);
    assert!(wasm_verdicts.iter().all(|v| *v == Verdict::Forward));
    assert_eq!(wasm_node.contents(), native_node.contents());
    assert_eq!(wasm_node.events(), native_node.events());

    // And it is the right thing: an independent model of the counts and the alerts.
    let patterns: [&[u8]; 2] = [b"attack", b"evil"];
    let mut flow_packets: BTreeMap<&str, i64> = BTreeMap::new();
    let mut flow_matches: BTreeMap<&str, i64> = BTreeMap::new();
    let mut expected_events = Vec::new();
    for p in &packets {
        *flow_packets.entry(&p.flow).or_default() += 1;
        let m = count_matches(&p.payload, &patterns);
        if m > 0 {
            let total = flow_matches.entry(&p.flow).or_default();
            let before = *total;
            *total += m;
            if before < THRESHOLD && *total >= THRESHOLD {
                expected_events.push(format!("ids alert flow={} matches={}", p.flow, *total));
            }
        }
    }
    let total_matches: i64 = flow_matches.values().sum();
    assert!(total_matches >= 900, "only {total_matches} matches in 5000 packets at a share of 0.2");
    let node = &*wasm_node;
    assert_eq!(node.int("ids:packets"), Some(5000));
    assert_eq!(node.int("ids:matches"), Some(total_matches));
    assert_eq!(node.int("ids:alerts"), Some(expected_events.len() as i64));
    assert!(!expected_events.is_empty());
    assert_eq!(node.events(), expected_events);
    for (flow, n) in &flow_packets {
        assert_eq!(node.int(&format!("flow:{flow}:packets")), Some(*n), "{flow}");
        assert_eq!(node.int(&format!("flow:{flow}:matches")), flow_matches.get(flow).copied(), "{flow}");
    }
    // Nothing else was written.
    let flows_with_matches = flow_matches.len();
    assert_eq!(node.contents().len(), 3 + flow_packets.len() + flows_with_matches);
}

#[test]
fn ids_configuration_errors_are_values() {
    let host = WasmHost::new(Limits::default()).unwrap();
    let nf = host.load_nf(&guests::require("nf_ids").unwrap()).unwrap();
    for (config, needle) in [
        ("pattern = evil\nthreshold = x", "threshold = x"),
        ("pattern = evil\nthreshold = 0", "threshold = 0"),
        ("pattern = evil\nverbose = yes", "verbose = yes"),
        ("threshold = 5", "no pattern"),
        ("", "no pattern"),
    ] {
        let tenant = Store::new("n1").tenant(DEFAULT_TENANT).unwrap();
        match host.start_nf(&nf, tenant, config) {
            Err(GuestError::Guest(msg)) => {
                assert!(msg.contains(needle), "{config:?}: {msg}");
                // The native form refuses it with the same message.
                assert_eq!(Ids::from_config(config).unwrap_err(), msg);
            }
            other => panic!("{config:?}: expected a configuration error, got {other:?}"),
        }
    }
}
