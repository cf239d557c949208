//! Unit tests: one instance over a simulated node, several instances over one simulated
//! cluster, and claims interleaved step by step by a seeded scheduler. Each simulated
//! member is a [`State`] over its own store in the cluster (the SDK's `MemoryState` holds
//! the rest of the cluster as one map, which cannot count claims per member).

use super::*;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::rc::Rc;
use alloc::string::ToString;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;
use estate_guest::{Direction, Error, Item};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

type Store = BTreeMap<String, Value>;

/// The counter part of [`State`], shared by both simulated environments.
fn counter_add(store: &mut Store, key: &str, delta: i64) -> i64 {
    let v = store.entry(key.to_string()).or_insert(Value::Int(0));
    let Value::Int(n) = v else { panic!("{key} is not a counter") };
    *n += delta;
    *n
}

/// The key of a claim count's exact pattern, checking that the NAT asks as it should.
fn claim_key(pattern: &str, reducer: &str) -> String {
    assert_eq!(reducer, "count");
    let key = estate_guest::pattern::literal(pattern).expect("an exact-key pattern");
    assert!(key.starts_with("nat:block:"), "{key}");
    key
}

/// The answer of a global read that counted `n`.
fn counted(n: usize) -> Result<Option<Item>, Error> {
    Ok(Some(Item::of(Value::Int(n as i64))))
}

/// The stores of a simulated cluster, one per node, indexed by node.
type Cluster = Rc<RefCell<Vec<Store>>>;

fn cluster(nodes: usize) -> Cluster {
    Rc::new(RefCell::new(vec![Store::new(); nodes]))
}

/// Node `me` of a cluster whose global reads are atomic (every store read at once).
struct Env {
    cluster: Cluster,
    me: usize,
    now: i64,
    /// Cluster reads made to count a block's claims.
    reads: u32,
    /// Cluster reads made to find a reverse mapping (best effort, `latest`).
    lookups: u32,
    /// Make the reverse-mapping reads fail (`--flow-state off` refuses them).
    refuse_lookups: bool,
    /// Make cluster reads fail (a member does not answer).
    fail_reads: bool,
    events: Vec<String>,
}

impl Env {
    fn new(cluster: &Cluster, me: usize) -> Env {
        Env {
            cluster: cluster.clone(),
            me,
            now: 1_000_000,
            reads: 0,
            lookups: 0,
            refuse_lookups: false,
            fail_reads: false,
            events: Vec::new(),
        }
    }

    fn value(&self, key: &str) -> Option<Value> {
        self.cluster.borrow()[self.me].get(key).cloned()
    }

    fn int(&self, key: &str) -> Option<i64> {
        match self.value(key)? {
            Value::Int(n) => Some(n),
            other => panic!("{key} holds {other:?}"),
        }
    }

    fn keys_with_prefix(&self, prefix: &str) -> Vec<String> {
        self.cluster.borrow()[self.me].keys().filter(|k| k.starts_with(prefix)).cloned().collect()
    }
}

impl State for Env {
    fn now_ms(&mut self) -> i64 {
        self.now
    }

    fn get(&mut self, key: &str) -> Result<Option<Value>, Error> {
        Ok(self.value(key))
    }

    fn set(&mut self, key: &str, value: Value) -> Result<(), Error> {
        self.cluster.borrow_mut()[self.me].insert(key.to_string(), value);
        Ok(())
    }

    fn del(&mut self, key: &str) -> Result<bool, Error> {
        Ok(self.cluster.borrow_mut()[self.me].remove(key).is_some())
    }

    fn counter_add(&mut self, key: &str, delta: i64) -> Result<i64, Error> {
        Ok(counter_add(&mut self.cluster.borrow_mut()[self.me], key, delta))
    }

    fn global(&mut self, pattern: &str, reducer: &str, timeout_ms: u32) -> Result<Option<Item>, Error> {
        // Only the reverse mapping of an inbound packet's port is read at best effort.
        assert_eq!((reducer, timeout_ms), ("latest", INBOUND_TIMEOUT_MS));
        let key = estate_guest::pattern::literal(pattern).expect("an exact-key pattern");
        assert!(key.starts_with("nat:port:"), "{key}");
        self.lookups += 1;
        if self.refuse_lookups {
            return Err(Error::Refused("flow state sharing is off".into()));
        }
        // Ports are unique in the cluster: at most one member holds an original, and any
        // copies agree with it, so the first found is the latest.
        Ok(self.cluster.borrow().iter().find_map(|s| s.get(&key).cloned()).map(Item::of))
    }

    fn global_all(&mut self, pattern: &str, reducer: &str, timeout_ms: u32) -> Result<Option<Item>, Error> {
        assert_eq!(timeout_ms, CLAIM_TIMEOUT_MS);
        let key = claim_key(pattern, reducer);
        self.reads += 1;
        if self.fail_reads {
            return Err(Error::Refused("no answer from n2".into()));
        }
        counted(self.cluster.borrow().iter().filter(|s| s.contains_key(&key)).count())
    }

    fn take(&mut self, _: &str) -> Result<u32, Error> {
        panic!("the NAT takes nothing")
    }

    fn metric_add(&mut self, _: &str, _: i64) {}

    fn emit(&mut self, event: &str) {
        self.events.push(event.to_string());
    }
}

fn packet(flow: &str) -> Packet<'_> {
    Packet {
        proto: 6,
        src: ([10, 0, 0, 1], 40000),
        dst: ([192, 168, 0, 1], 443),
        direction: Direction::Forward,
        moved: false,
        tcp_flags: 0,
        flow,
        payload: b"x",
    }
}

fn nat(config: &str) -> Nat {
    Nat::from_config(config).unwrap()
}

/// The port of `flow` on the node of `env`.
fn port(env: &Env, flow: &str) -> Option<u16> {
    env.int(&nat_key(flow)).map(|p| u16::try_from(p).unwrap())
}

/// The block a fresh instance tries first for a new flow.
fn first_candidate(nat: &Nat, flow: &str) -> u32 {
    (fnv1a(flow.as_bytes()) % u64::from(nat.blocks())) as u32
}

#[test]
fn configuration_parses_and_errors_name_the_line() {
    let n = nat("# external ports\nports = 20000-59999\n\n  block=1000  \n");
    assert_eq!((n.ports(), n.block_size(), n.blocks()), ((20000, 59999), 1000, 40));
    assert_eq!(nat("ports = 1-65535").block_size(), DEFAULT_BLOCK);
    assert_eq!(nat("ports = 7-7").blocks(), 1);
    for (config, needle) in [
        ("ports = 20000-10000", "line 1 \"ports = 20000-10000\": ports must be a range LO-HI"),
        ("ports = 0-100", "line 1 \"ports = 0-100\""),
        ("ports = 1-65536", "line 1 \"ports = 1-65536\""),
        ("ports = 1000", "line 1 \"ports = 1000\""),
        ("ports = a-b", "line 1 \"ports = a-b\""),
        ("ports = -5-10", "line 1 \"ports = -5-10\""),
        ("ports = 1-2\nports = 3-4", "line 2 \"ports = 3-4\": ports given twice"),
        ("ports = 1-2\nblock = 0", "line 2 \"block = 0\": block must be an integer from 1 to 65535"),
        ("ports = 1-2\nblock = 65536", "line 2 \"block = 65536\""),
        ("ports = 1-2\nblock = many", "line 2 \"block = many\""),
        ("ports = 1-2\nblock = 4\nblock = 8", "line 3 \"block = 8\": block given twice"),
        ("ports = 1-2\nmode = full-cone", "line 2 \"mode = full-cone\": unknown setting"),
        ("ports 1-2", "line 1 \"ports 1-2\": expected"),
        ("block = 8", "no port range configured"),
        ("", "no port range configured"),
    ] {
        let err = Nat::from_config(config).unwrap_err();
        assert!(err.starts_with("nat: "), "{config:?}: {err}");
        assert!(err.contains(needle), "{config:?}: {err}");
    }
}

#[test]
fn blocks_cut_the_range_from_its_low_end() {
    let n = nat("ports = 100-109\nblock = 4");
    assert_eq!(n.blocks(), 3);
    assert_eq!(n.block_ports(0), (100, 4));
    assert_eq!(n.block_ports(1), (104, 4));
    assert_eq!(n.block_ports(2), (108, 2));
    assert_eq!(
        (n.block_of(99), n.block_of(100), n.block_of(107), n.block_of(109), n.block_of(110)),
        (None, Some(0), Some(1), Some(2), None)
    );
    let top = nat("ports = 65000-65535\nblock = 256");
    assert_eq!(top.blocks(), 3);
    assert_eq!(top.block_ports(2), (65512, 24));
}

#[test]
fn new_flows_get_consecutive_ports_of_a_claimed_block_and_keep_them() {
    let c = cluster(1);
    let mut env = Env::new(&c, 0);
    let mut n = nat("ports = 20000-29999\nblock = 100");
    let b = first_candidate(&n, "f0");
    for i in 0..5 {
        assert_eq!(n.on_packet(&packet(&format!("f{i}")), &mut env), Verdict::Forward);
    }
    let first = n.block_ports(b).0;
    for i in 0..5 {
        assert_eq!(port(&env, &format!("f{i}")), Some(first + i as u16), "f{i}");
    }
    // Later packets of a flow keep its port and allocate nothing.
    assert_eq!(n.on_packet(&packet("f2"), &mut env), Verdict::Forward);
    assert_eq!(port(&env, "f2"), Some(first + 2));
    assert_eq!(env.reads, 1, "one block claimed with one cluster read");
    assert_eq!(env.keys_with_prefix("nat:block:"), vec![block_key(b)]);
    assert_eq!(env.int(&block_key(b)), Some(5));
    assert_eq!(env.int(ACTIVE_KEY), Some(i64::from(b)));
    assert_eq!((env.int("nat:allocated"), env.int("nat:claimed"), env.int("nat:exhausted")), (Some(5), Some(1), None));
    assert_eq!(env.events[1], format!("nat map flow=f1 port={}", first + 1));
    assert_eq!(env.events.len(), 5);
}

#[test]
fn the_first_block_depends_on_the_first_flow() {
    let n = nat("ports = 20000-59999\nblock = 256");
    let starts: BTreeSet<u32> =
        (0..20).map(|i| first_candidate(&n, &format!("6:10.0.0.{i}:4000-192.168.0.1:443"))).collect();
    assert!(starts.len() >= 15, "{starts:?}");
    // And an instance does start there.
    for flow in ["6:10.0.0.1:4000-192.168.0.1:443", "17:10.0.0.9:53-192.168.0.2:53"] {
        let c = cluster(1);
        let mut env = Env::new(&c, 0);
        let mut n = n.clone();
        n.on_packet(&packet(flow), &mut env);
        let b = n.block_of(port(&env, flow).unwrap()).unwrap();
        assert_eq!(b, first_candidate(&n, flow));
    }
}

#[test]
fn a_moved_flow_keeps_its_port_without_allocating() {
    let c = cluster(2);
    let mut env = Env::new(&c, 1);
    let mut n = nat("ports = 20000-29999");
    // The host brought the flow's mapping here before its first packet.
    env.set(&nat_key("moved"), Value::Int(23456)).unwrap();
    assert_eq!(n.on_packet(&packet("moved"), &mut env), Verdict::Forward);
    assert_eq!(port(&env, "moved"), Some(23456));
    assert_eq!((env.reads, env.int("nat:allocated")), (0, None));
    assert!(env.keys_with_prefix("nat:block:").is_empty());
}

#[test]
fn a_used_up_range_drops_and_counts_and_never_hands_out_a_port_twice() {
    let c = cluster(1);
    let mut env = Env::new(&c, 0);
    let mut n = nat("ports = 100-109\nblock = 4");
    let flows: Vec<String> = (0..14).map(|i| format!("f{i}")).collect();
    let verdicts: Vec<Verdict> = flows.iter().map(|f| n.on_packet(&packet(f), &mut env)).collect();
    assert_eq!(verdicts.iter().filter(|v| **v == Verdict::Forward).count(), 10);
    let ports: BTreeSet<u16> = flows.iter().filter_map(|f| port(&env, f)).collect();
    assert_eq!(ports, (100..=109).collect());
    assert_eq!(env.int("nat:exhausted"), Some(4));
    assert_eq!(env.int("nat:claimed"), Some(3));
    // Blocks of its own are never claimed again: no cluster read once all are its own.
    let reads = env.reads;
    assert_eq!(reads, 3);
    env.now += CLAIM_RETRY_MS;
    assert_eq!(n.on_packet(&packet("late"), &mut env), Verdict::Drop);
    assert_eq!(env.reads, reads);
    assert_eq!(env.int("nat:exhausted"), Some(5));
    // Mapped flows still pass.
    assert_eq!(n.on_packet(&packet("f3"), &mut env), Verdict::Forward);
}

#[test]
fn a_failed_cluster_read_uses_no_block_and_waits_before_the_next_attempt() {
    let c = cluster(2);
    let mut env = Env::new(&c, 0);
    env.fail_reads = true;
    let mut n = nat("ports = 100-199\nblock = 10");
    assert_eq!(n.on_packet(&packet("a"), &mut env), Verdict::Drop);
    assert_eq!(env.reads, 1, "an attempt ends at the first failed read");
    assert!(env.keys_with_prefix("nat:block:").is_empty(), "the claim was withdrawn");
    assert_eq!((env.int("nat:claim_errors"), env.int("nat:exhausted")), (Some(1), Some(1)));
    // Within the retry time no new attempt is made …
    env.fail_reads = false;
    env.now += CLAIM_RETRY_MS - 1;
    assert_eq!(n.on_packet(&packet("a"), &mut env), Verdict::Drop);
    assert_eq!(env.reads, 1);
    // … after it, the cluster answers and the flow gets a port.
    env.now += 1;
    assert_eq!(n.on_packet(&packet("a"), &mut env), Verdict::Forward);
    assert_eq!(env.reads, 2);
    assert_eq!(env.int("nat:exhausted"), Some(2));
    assert!(port(&env, "a").is_some());
}

#[test]
fn a_block_another_instance_holds_is_not_used() {
    let c = cluster(2);
    let (mut env_a, mut env_b) = (Env::new(&c, 0), Env::new(&c, 1));
    let config = "ports = 1000-1079\nblock = 8";
    let (mut a, mut b) = (nat(config), nat(config));
    // Both see the same first flow, so both try the same block first.
    assert_eq!(a.on_packet(&packet("same"), &mut env_a), Verdict::Forward);
    assert_eq!(b.on_packet(&packet("same"), &mut env_b), Verdict::Forward);
    let (pa, pb) = (port(&env_a, "same").unwrap(), port(&env_b, "same").unwrap());
    assert_ne!(a.block_of(pa), b.block_of(pb));
    assert_eq!(a.block_of(pa), Some(first_candidate(&a, "same")));
    let conflicts = env_b.int("nat:conflicts").unwrap();
    assert!(conflicts >= 1);
    assert_eq!(i64::from(env_b.reads), conflicts + 1, "one read per candidate until one was free");
    // The loser withdrew its claim of A's block; A's claim stands.
    assert_eq!(env_b.keys_with_prefix("nat:block:"), vec![block_key(b.block_of(pb).unwrap())]);
    assert_eq!(env_a.keys_with_prefix("nat:block:"), vec![block_key(a.block_of(pa).unwrap())]);
    // Many more flows on both: still no port in common.
    for i in 0..30 {
        a.on_packet(&packet(&format!("a{i}")), &mut env_a);
        b.on_packet(&packet(&format!("b{i}")), &mut env_b);
    }
    let ports = |env: &Env| -> BTreeSet<u16> {
        env.keys_with_prefix("flow:").iter().map(|k| u16::try_from(env.int(k).unwrap()).unwrap()).collect()
    };
    let (ports_a, ports_b) = (ports(&env_a), ports(&env_b));
    assert_eq!((ports_a.len(), ports_b.len()), (31, 31));
    assert!(ports_a.is_disjoint(&ports_b));
}

#[test]
fn a_restarted_instance_continues_its_block() {
    let c = cluster(1);
    let mut env = Env::new(&c, 0);
    let config = "ports = 5000-5999\nblock = 50";
    let mut n = nat(config);
    for i in 0..3 {
        n.on_packet(&packet(&format!("f{i}")), &mut env);
    }
    // A fresh instance (after a fault, or a hot replacement) over the same store.
    let mut fresh = nat(config);
    fresh.on_packet(&packet("g"), &mut env);
    assert_eq!(port(&env, "g"), Some(port(&env, "f2").unwrap() + 1));
    assert_eq!(env.reads, 1, "no new block claimed");
}

/// A cluster whose every store operation is one step, and a global read one step per
/// member: threads, one per NAT instance, take steps in an order drawn from a seed.
struct Sched {
    state: Mutex<SchedState>,
    turn_changed: Condvar,
}

struct SchedState {
    stores: Vec<Store>,
    /// Whose step it is.
    turn: usize,
    running: Vec<bool>,
    rng: u64,
}

impl SchedState {
    /// Hands the next step to a running thread drawn at random.
    fn pass(&mut self) {
        let running: Vec<usize> = (0..self.running.len()).filter(|i| self.running[*i]).collect();
        if running.is_empty() {
            return;
        }
        self.rng = mix(self.rng);
        self.turn = running[(self.rng % running.len() as u64) as usize];
    }
}

impl Sched {
    fn new(nodes: usize, seed: u64) -> Sched {
        let mut state =
            SchedState { stores: vec![Store::new(); nodes], turn: 0, running: vec![true; nodes], rng: mix(seed) };
        state.pass();
        Sched { state: Mutex::new(state), turn_changed: Condvar::new() }
    }

    /// Waits for `me`'s turn, runs `f` on the stores, and hands the turn on.
    fn step<R>(&self, me: usize, f: impl FnOnce(&mut Vec<Store>) -> R) -> R {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut state = self.state.lock().unwrap();
        while state.turn != me {
            assert!(Instant::now() < deadline, "scheduler stuck");
            state = self.turn_changed.wait_timeout(state, Duration::from_millis(100)).unwrap().0;
        }
        let r = f(&mut state.stores);
        state.pass();
        self.turn_changed.notify_all();
        r
    }

    fn done(&self, me: usize) {
        let mut state = self.state.lock().unwrap();
        state.running[me] = false;
        if state.turn == me {
            state.pass();
        }
        self.turn_changed.notify_all();
    }
}

/// Node `me` of a [`Sched`] cluster.
struct SchedEnv {
    sched: Arc<Sched>,
    me: usize,
    now: i64,
}

impl State for SchedEnv {
    fn now_ms(&mut self) -> i64 {
        // Far enough apart that a failed attempt never holds back the next one.
        self.now += 1000;
        self.now
    }

    fn get(&mut self, key: &str) -> Result<Option<Value>, Error> {
        Ok(self.sched.step(self.me, |s| s[self.me].get(key).cloned()))
    }

    fn set(&mut self, key: &str, value: Value) -> Result<(), Error> {
        self.sched.step(self.me, |s| s[self.me].insert(key.to_string(), value));
        Ok(())
    }

    fn del(&mut self, key: &str) -> Result<bool, Error> {
        Ok(self.sched.step(self.me, |s| s[self.me].remove(key).is_some()))
    }

    fn counter_add(&mut self, key: &str, delta: i64) -> Result<i64, Error> {
        Ok(self.sched.step(self.me, |s| counter_add(&mut s[self.me], key, delta)))
    }

    fn global(&mut self, _: &str, _: &str, _: u32) -> Result<Option<Item>, Error> {
        panic!("the NAT reads with consistency `all` only")
    }

    fn global_all(&mut self, pattern: &str, reducer: &str, _: u32) -> Result<Option<Item>, Error> {
        let key = claim_key(pattern, reducer);
        // Each member answers at its own moment; other steps may run in between.
        let members = self.sched.step(self.me, |s| s.len());
        let mut count = 0;
        for member in 0..members {
            count += self.sched.step(self.me, |s| s[member].contains_key(&key)) as usize;
        }
        counted(count)
    }

    fn take(&mut self, _: &str) -> Result<u32, Error> {
        panic!("the NAT takes nothing")
    }

    fn metric_add(&mut self, _: &str, _: i64) {}

    fn emit(&mut self, _: &str) {}
}

/// What one interleaved run left behind: for each node, its mappings and claims.
struct Outcome {
    stores: Vec<Store>,
}

fn interleaved_run(seed: u64, nodes: usize, flows_per_node: usize, config: &str) -> Outcome {
    let sched = Arc::new(Sched::new(nodes, seed));
    let threads: Vec<_> = (0..nodes)
        .map(|me| {
            let sched = sched.clone();
            let config = config.to_string();
            std::thread::spawn(move || {
                let mut nat = Nat::from_config(&config).unwrap();
                let mut env = SchedEnv { sched: sched.clone(), me, now: 0 };
                // Every node's first flow is the same key: all start at the same block.
                let flows: Vec<String> = core::iter::once("first".to_string())
                    .chain((1..flows_per_node).map(|i| format!("n{me}-f{i}")))
                    .collect();
                for flow in &flows {
                    for _ in 0..2 {
                        nat.on_packet(&packet(flow), &mut env);
                    }
                }
                sched.done(me);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let stores = core::mem::take(&mut sched.state.lock().unwrap().stores);
    Outcome { stores }
}

#[test]
fn interleaved_claims_never_share_a_block_or_a_port() {
    let config = "ports = 1000-1099\nblock = 8";
    let geometry = nat(config);
    let (mut conflicts, mut mapped, mut runs_with_conflicts) = (0, 0, 0);
    for seed in 0..150 {
        let Outcome { stores } = interleaved_run(seed, 3, 20, config);
        let int = |s: &Store, k: &str| match s.get(k) {
            Some(Value::Int(n)) => *n,
            None => 0,
            other => panic!("{k}: {other:?}"),
        };
        // Every block is claimed by one node at most.
        let mut holder: BTreeMap<String, usize> = BTreeMap::new();
        for (node, store) in stores.iter().enumerate() {
            for key in store.keys().filter(|k| k.starts_with("nat:block:")) {
                if let Some(other) = holder.insert(key.clone(), node) {
                    panic!("seed {seed}: {key} claimed by n{other} and n{node}");
                }
            }
        }
        // Every port is handed out once, from a block its node holds.
        let mut seen: BTreeMap<i64, (usize, String)> = BTreeMap::new();
        for (node, store) in stores.iter().enumerate() {
            for (key, value) in store.iter().filter(|(k, _)| k.starts_with("flow:")) {
                let Value::Int(port) = value else { panic!("{key}: {value:?}") };
                if let Some(first) = seen.insert(*port, (node, key.clone())) {
                    panic!("seed {seed}: port {port} given to {first:?} and to n{node} {key}");
                }
                let block = geometry.block_of(u16::try_from(*port).unwrap()).unwrap();
                assert_eq!(holder.get(&block_key(block)), Some(&node), "seed {seed}: {key} = {port}");
            }
            assert_eq!(int(store, "nat:allocated"), store.keys().filter(|k| k.starts_with("flow:")).count() as i64);
            let c = int(store, "nat:conflicts");
            conflicts += c;
            runs_with_conflicts += (c > 0) as u32;
        }
        mapped += seen.len();
    }
    // The runs did contend for blocks, and most flows got a port.
    assert!(runs_with_conflicts >= 50, "only {runs_with_conflicts} runs had conflicts ({conflicts} in all)");
    assert!(mapped >= 150 * 55, "{mapped} flows mapped");
}

mod translation;
