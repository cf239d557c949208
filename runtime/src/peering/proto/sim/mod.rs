//! A simulated network of [`Peering`] nodes: deterministic tests of reads, serving and
//! hand-off, with messages lost, repeated, delayed or forged on purpose.
//!
//! Every node has a real [`Store`]; messages go through the real codec (each is encoded
//! and decoded on its way); time is a counter; ids come from a seeded counter; Wasm
//! work is answered by the simulation (no guest code runs here).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use estate_guest::Value;

use super::membership::Timing;
use super::{Action, Ids, Input, MemberEvent, Modules, Peering, ReadDone, Setup, Work};
use crate::global::{Answer, GlobalError, GlobalOptions, ServedRead};
use crate::pattern::Pattern;
use crate::peering::stats::Stats;
use crate::reduce::registry::ReducerRef;
use crate::reduce::{Builtin, Reduced};
use crate::store::{DEFAULT_TENANT, Store};
use crate::wire::{self, Body, Envelope, HandoffReport};

/// Seeded ids, distinct per node.
struct SeqIds(u128);

impl Ids for SeqIds {
    fn next_id(&mut self) -> u128 {
        self.0 += 1;
        self.0
    }
}

/// Modules a node has, and the bytes it would send for each hash.
#[derive(Default)]
struct FakeModules {
    has: std::sync::Mutex<HashSet<[u8; 32]>>,
    bytes: std::sync::Mutex<HashMap<[u8; 32], Vec<u8>>>,
}

impl Modules for FakeModules {
    fn has(&self, _: &str, hash: &[u8; 32]) -> bool {
        self.has.lock().unwrap().contains(hash)
    }

    fn bytes(&self, _: &str, hash: &[u8; 32]) -> Option<Arc<Vec<u8>>> {
        self.bytes.lock().unwrap().get(hash).cloned().map(Arc::new)
    }
}

/// What the network does with a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Deliver,
    Drop,
    Twice,
    /// Delivered this many ms late.
    Late(u64),
}

/// A message on the wire.
#[derive(Clone, Debug)]
struct Msg {
    from: String,
    to: String,
    body: Body,
}

type Proto = Peering<u32, u32>;

struct Node {
    proto: Proto,
    store: Arc<Store>,
    stats: Arc<Stats>,
    modules: Arc<FakeModules>,
    reads: Vec<ReadDone<u32>>,
    handoffs: Vec<(u32, Result<HandoffReport, super::HandoffError>)>,
    work: Vec<String>,
    /// What the node reported refusing, for the security log: (reason, from, object).
    refused: Vec<(&'static str, String, String)>,
    /// The reads it reported serving.
    served: Vec<ServedRead>,
    stopped: bool,
}

type Filter = Box<dyn FnMut(&Msg) -> Fate>;

struct Sim {
    nodes: BTreeMap<String, Node>,
    by_endpoint: HashMap<String, String>,
    /// Messages in flight with their delivery time.
    wire: VecDeque<(u64, Msg)>,
    /// Every message sent, in order.
    log: Vec<Msg>,
    now: u64,
    filter: Filter,
}

fn pattern(p: &str) -> Pattern {
    Pattern::new(p).unwrap()
}

fn read_options(timeout_ms: u64, take: bool) -> GlobalOptions {
    GlobalOptions { timeout: Duration::from_millis(timeout_ms), take, ..GlobalOptions::default() }
}

impl Sim {
    /// Nodes `ids`, all joined through the first; runs until everyone sees everyone.
    fn cluster(ids: &[&str]) -> Sim {
        let mut sim = Sim {
            nodes: BTreeMap::new(),
            by_endpoint: HashMap::new(),
            wire: VecDeque::new(),
            log: Vec::new(),
            now: 0,
            filter: Box::new(|_| Fate::Deliver),
        };
        for (i, id) in ids.iter().enumerate() {
            let seeds = if i == 0 { vec![] } else { vec![format!("ep-{}", ids[0])] };
            sim.add(id, seeds, i as u128);
        }
        let everyone = ids.len() - 1;
        sim.run_until(|s| s.nodes.values().all(|n| n.proto.membership().live().count() == everyone), 5_000);
        sim.log.clear();
        sim
    }

    fn add(&mut self, id: &str, seeds: Vec<String>, n: u128) {
        let (store, stats, modules) =
            (Arc::new(Store::new(id)), Arc::new(Stats::default()), Arc::new(FakeModules::default()));
        let proto = Peering::new(Setup {
            id: id.to_string(),
            endpoint: format!("ep-{id}"),
            seeds,
            timing: Timing { heartbeat_ms: 50, suspect_ms: 400, remove_ms: 1000, rejoin_ms: 200 },
            store: store.clone(),
            stats: stats.clone(),
            modules: modules.clone(),
            ids: Box::new(SeqIds(n << 64)),
        });
        let node = Node {
            proto,
            store,
            stats,
            modules,
            reads: vec![],
            handoffs: vec![],
            work: vec![],
            refused: vec![],
            served: vec![],
            stopped: false,
        };
        self.nodes.insert(id.to_string(), node);
        self.by_endpoint.insert(format!("ep-{id}"), id.to_string());
        self.feed(id, Input::Tick);
    }

    fn node(&self, id: &str) -> &Node {
        &self.nodes[id]
    }

    /// Runs one input on node `id` and carries out its actions.
    fn feed(&mut self, id: &str, input: Input<u32, u32>) {
        let now = self.now;
        let node = self.nodes.get_mut(id).unwrap();
        if node.stopped {
            return;
        }
        let mut out = Vec::new();
        node.proto.handle(input, now, &mut out);
        let mut inputs = Vec::new();
        for action in out {
            match action {
                Action::Send { endpoint, body } => {
                    let to = self.by_endpoint.get(&endpoint).cloned().unwrap_or(endpoint);
                    self.send(Msg { from: id.to_string(), to, body });
                }
                Action::Member(MemberEvent::Up(_) | MemberEvent::Suspect(_) | MemberEvent::Down(..)) => {}
                Action::Work(work) => {
                    let node = self.nodes.get_mut(id).unwrap();
                    // No guest code here: a pushed-down Wasm reducer "reduces" to nothing.
                    inputs.push(match work {
                        Work::LocalPartial { id, .. } => {
                            node.work.push("local".into());
                            Input::LocalPartial { id, result: Ok(Answer::Wasm(None)) }
                        }
                        Work::PeerPartial { to, id, .. } => {
                            node.work.push(format!("peer {to}"));
                            Input::PeerPartial { to, id, result: Ok(Answer::Wasm(None)) }
                        }
                        Work::Install { tenant, hash, .. } => {
                            node.work.push("install".into());
                            node.modules.has.lock().unwrap().insert(hash);
                            Input::ModuleInstalled { tenant, hash, result: Ok(()) }
                        }
                    });
                }
                Action::ReadDone(done) => self.nodes.get_mut(id).unwrap().reads.push(done),
                Action::HandoffDone { waiter, result } => {
                    self.nodes.get_mut(id).unwrap().handoffs.push((waiter, result))
                }
                Action::Stop => self.nodes.get_mut(id).unwrap().stopped = true,
                Action::Served(read) => self.nodes.get_mut(id).unwrap().served.push(read),
                Action::Refused { reason, from, object } => {
                    self.nodes.get_mut(id).unwrap().refused.push((reason, from, object))
                }
            }
        }
        for input in inputs {
            self.feed(id, input);
        }
    }

    /// Puts a message on the wire, through the codec and the network's filter.
    fn send(&mut self, msg: Msg) {
        // The real codec, both ways.
        let frame = wire::encode(&Envelope { from: msg.from.clone(), clock: 1, body: msg.body.clone() });
        let decoded = wire::decode(&frame).expect("every message the protocol sends decodes");
        assert_eq!(decoded.body, msg.body);
        self.log.push(msg.clone());
        let at = self.now + 1;
        match (self.filter)(&msg) {
            Fate::Deliver => self.wire.push_back((at, msg)),
            Fate::Drop => {}
            Fate::Twice => {
                self.wire.push_back((at, msg.clone()));
                self.wire.push_back((at, msg));
            }
            Fate::Late(ms) => self.wire.push_back((at + ms, msg)),
        }
    }

    /// Advances time by one millisecond: delivers what is due, ticks every node.
    fn step(&mut self) {
        self.now += 1;
        let (due, later): (Vec<_>, Vec<_>) = self.wire.drain(..).partition(|(at, _)| *at <= self.now);
        self.wire = later.into();
        for (_, msg) in due {
            if self.nodes.contains_key(&msg.to) {
                self.feed(&msg.to.clone(), Input::Message { from: msg.from, body: msg.body });
            }
        }
        let ids: Vec<String> = self.nodes.keys().cloned().collect();
        for id in ids {
            self.feed(&id, Input::Tick);
        }
    }

    fn run_for(&mut self, ms: u64) {
        for _ in 0..ms {
            self.step();
        }
    }

    fn run_until(&mut self, mut done: impl FnMut(&Sim) -> bool, limit_ms: u64) {
        let until = self.now + limit_ms;
        while !done(self) {
            assert!(self.now < until, "not reached within {limit_ms} ms (now {})", self.now);
            self.step();
        }
    }

    fn read(&mut self, id: &str, p: &str, reducer: Builtin, options: GlobalOptions, waiter: u32) {
        self.read_in(DEFAULT_TENANT, id, p, reducer, options, waiter)
    }

    fn read_in(&mut self, tenant: &str, id: &str, p: &str, reducer: Builtin, options: GlobalOptions, waiter: u32) {
        let (tenant, reducer) = (tenant.to_string(), ReducerRef::Builtin(reducer));
        self.feed(id, Input::Read { tenant, pattern: pattern(p), reducer, options, waiter });
    }

    fn done(&self, id: &str, waiter: u32) -> Option<&ReadDone<u32>> {
        self.node(id).reads.iter().find(|d| d.waiter == waiter)
    }

    fn int(&self, id: &str, key: &str) -> Option<i64> {
        match self.node(id).store.tenant(DEFAULT_TENANT).unwrap().get(key)?.value {
            Value::Int(n) => Some(n),
            other => panic!("{key} on {id} is {other:?}"),
        }
    }

    fn stat(&self, id: &str, f: impl Fn(&Stats) -> &std::sync::atomic::AtomicU64) -> u64 {
        f(&self.node(id).stats).load(Ordering::Relaxed)
    }

    fn sent(&self, pred: impl Fn(&Msg) -> bool) -> Vec<Msg> {
        self.log.iter().filter(|m| pred(m)).cloned().collect()
    }
}

fn is_handoff(m: &Msg) -> bool {
    matches!(m.body, Body::Handoff { .. })
}

fn is_ack(m: &Msg) -> bool {
    matches!(m.body, Body::HandoffAck { .. })
}

/// A network that loses the first message `pred` picks, and delivers everything else.
fn drop_first(pred: fn(&Msg) -> bool) -> Filter {
    let mut dropped = false;
    Box::new(move |m| {
        if pred(m) && !dropped {
            dropped = true;
            return Fate::Drop;
        }
        Fate::Deliver
    })
}

fn sum_of(done: &ReadDone<u32>) -> Reduced {
    let Ok(g) = &done.result else { panic!("read failed: {:?}", done.result) };
    crate::global::finish_builtin(Builtin::Sum, false, g.parts.clone()).unwrap()
}

#[test]
fn a_read_completes_as_soon_as_everyone_answered() {
    let mut sim = Sim::cluster(&["a", "b", "c"]);
    for (i, id) in ["a", "b", "c"].iter().enumerate() {
        sim.node(id).store.tenant(DEFAULT_TENANT).unwrap().set("c", Value::Int(i as i64 + 1)).unwrap();
    }
    let start = sim.now;
    sim.read("a", "c", Builtin::Sum, read_options(1_000, false), 1);
    sim.run_until(|s| s.done("a", 1).is_some(), 1_000);
    // Request and reply: one millisecond each way, not the deadline.
    assert_eq!(sim.now - start, 2);
    let done = sim.done("a", 1).unwrap();
    assert_eq!(done.result.as_ref().unwrap().answered, ["a", "b", "c"]);
    assert_eq!(sum_of(done), Reduced::Value(Value::Int(6)));
}

#[test]
fn a_read_ends_at_its_deadline_naming_who_did_not_answer() {
    let mut sim = Sim::cluster(&["a", "b", "c"]);
    sim.filter =
        Box::new(
            |m| if m.from == "c" && matches!(m.body, Body::GlobalReply { .. }) { Fate::Drop } else { Fate::Deliver },
        );
    let start = sim.now;
    sim.read("a", "c", Builtin::Sum, read_options(300, false), 1);
    sim.run_until(|s| s.done("a", 1).is_some(), 1_000);
    assert_eq!(sim.now - start, 300, "at the deadline, not before");
    let g = sim.done("a", 1).unwrap().result.as_ref().unwrap();
    assert_eq!(
        (g.answered.clone(), g.missing.clone()),
        (vec!["a".to_string(), "b".to_string()], vec!["c".to_string()])
    );

    // With consistency `all` the same silence is an error naming c.
    let options = GlobalOptions { consistency: crate::global::Consistency::All, ..read_options(300, false) };
    sim.read("a", "c", Builtin::Sum, options, 2);
    sim.run_until(|s| s.done("a", 2).is_some(), 1_000);
    let err = sim.done("a", 2).unwrap().result.as_ref().unwrap_err();
    assert_eq!(*err, GlobalError::Incomplete { missing: vec!["c".into()] });
}

#[test]
fn a_strangers_and_a_duplicate_reply_are_rejected() {
    let mut sim = Sim::cluster(&["a", "b"]);
    sim.node("b").store.tenant(DEFAULT_TENANT).unwrap().set("c", Value::Int(5)).unwrap();
    // b's reply arrives twice; the read counts it once.
    sim.filter = Box::new(|m| if matches!(m.body, Body::GlobalReply { .. }) { Fate::Twice } else { Fate::Deliver });
    sim.read("a", "c", Builtin::Sum, read_options(1_000, false), 1);
    sim.run_until(|s| s.done("a", 1).is_some(), 1_000);
    sim.run_for(5);
    assert_eq!(sum_of(sim.done("a", 1).unwrap()), Reduced::Value(Value::Int(5)));
    assert_eq!(sim.stat("a", |s| &s.rejected), 1, "the second copy");

    // A stranger's reply, even for an id in flight, is dropped and counted.
    sim.filter = Box::new(|_| Fate::Deliver);
    sim.read("a", "c", Builtin::Sum, read_options(1_000, false), 2);
    let id = match &sim.sent(|m| matches!(m.body, Body::GlobalRequest { .. })).last().unwrap().body {
        Body::GlobalRequest { id, .. } => *id,
        _ => unreachable!(),
    };
    let forged = Body::GlobalReply { id, result: Ok(Answer::Items(vec![])) };
    sim.feed("a", Input::Message { from: "x".into(), body: forged });
    assert_eq!(sim.stat("a", |s| &s.rejected), 2);
    sim.run_until(|s| s.done("a", 2).is_some(), 1_000);
    assert_eq!(sim.done("a", 2).unwrap().result.as_ref().unwrap().answered, ["a", "b"]);
}

/// A cluster where `a` holds counters and hands them over.
fn leaving_a() -> Sim {
    let sim = Sim::cluster(&["a", "b"]);
    let store = sim.node("a").store.tenant(DEFAULT_TENANT).unwrap();
    for i in 0..10 {
        store.add(&format!("flow:f{i}:n"), 7).unwrap();
    }
    sim.node("b").store.tenant(DEFAULT_TENANT).unwrap().add("flow:f0:n", 1).unwrap();
    sim
}

#[test]
fn a_lost_hand_off_batch_is_sent_again_and_stored_once() {
    let mut sim = leaving_a();
    sim.filter = drop_first(is_handoff);
    sim.feed("a", Input::HandOff { timeout_ms: 2_000, waiter: 9 });
    sim.run_until(|s| !s.node("a").handoffs.is_empty(), 3_000);
    let (waiter, result) = &sim.node("a").handoffs[0];
    assert_eq!((*waiter, result.as_ref().map(|r| r.items)), (9, Ok(10)));
    assert_eq!(sim.sent(is_handoff).len(), 2, "the batch, then the same batch again");
    assert_eq!(sim.stat("a", |s| &s.handoff_resent), 1);
    assert_eq!(sim.int("b", "flow:f0:n"), Some(8), "counters add up");
    assert_eq!(sim.int("b", "flow:f9:n"), Some(7));
    assert!(sim.node("a").stopped, "a left");
}

#[test]
fn a_lost_acknowledgement_makes_a_repeat_that_is_acknowledged_but_not_stored_again() {
    let mut sim = leaving_a();
    sim.filter = drop_first(is_ack);
    sim.feed("a", Input::HandOff { timeout_ms: 2_000, waiter: 9 });
    sim.run_until(|s| !s.node("a").handoffs.is_empty(), 3_000);
    assert!(sim.node("a").handoffs[0].1.is_ok());
    assert_eq!(sim.sent(is_ack).len(), 2);
    assert_eq!(sim.stat("b", |s| &s.handoff_duplicates), 1);
    assert_eq!(sim.stat("b", |s| &s.handoff_in), 10, "stored once");
    assert_eq!(sim.int("b", "flow:f0:n"), Some(8), "not 15");
}

#[test]
fn a_hand_off_to_a_member_that_is_itself_leaving_comes_back() {
    let mut sim = leaving_a();
    // Both leave at once: each refuses the other's state (its own store is closed).
    sim.feed("a", Input::HandOff { timeout_ms: 2_000, waiter: 1 });
    sim.feed("b", Input::HandOff { timeout_ms: 2_000, waiter: 2 });
    sim.run_until(|s| !s.node("a").handoffs.is_empty() && !s.node("b").handoffs.is_empty(), 3_000);
    for id in ["a", "b"] {
        let err = sim.node(id).handoffs[0].1.as_ref().unwrap_err().to_string();
        assert!(err.contains("refused"), "{id}: {err}");
        assert!(!sim.node(id).stopped, "{id} stays");
    }
    // Refused items went back where they were, and both stores take writes again.
    assert_eq!(sim.int("a", "flow:f0:n"), Some(7));
    assert_eq!(sim.int("a", "flow:f9:n"), Some(7));
    assert_eq!(sim.int("b", "flow:f0:n"), Some(1));
    assert!(sim.node("a").store.tenant(DEFAULT_TENANT).unwrap().add("flow:f0:n", 1).is_ok());
}

/// `a` takes flow f's state while c's answer is held back past the deadline.
fn late_take() -> Sim {
    let mut sim = Sim::cluster(&["a", "b", "c"]);
    sim.node("c").store.tenant(DEFAULT_TENANT).unwrap().add("flow:f:n", 4).unwrap();
    sim.filter = Box::new(|m| {
        if m.from == "c" && matches!(m.body, Body::GlobalReply { .. }) { Fate::Late(500) } else { Fate::Deliver }
    });
    sim.read("a", "flow:f:.*", Builtin::List, read_options(200, true), 1);
    sim.run_until(|s| s.done("a", 1).is_some(), 1_000);
    assert_eq!(sim.done("a", 1).unwrap().result.as_ref().unwrap().missing, ["c"]);
    assert_eq!(sim.int("c", "flow:f:n"), None, "c gave its items up when it answered");
    sim
}

#[test]
fn a_take_answer_after_the_deadline_is_kept() {
    let mut sim = late_take();
    sim.run_for(600);
    assert_eq!(sim.int("a", "flow:f:n"), Some(4), "kept, not lost");
    assert_eq!(sim.stat("a", |s| &s.rejected), 0);
}

#[test]
fn taken_items_nobody_asked_for_are_refused() {
    let mut sim = Sim::cluster(&["a", "b"]);
    let items = sim.node("b").store.tenant(DEFAULT_TENANT).unwrap();
    items.add("flow:x:n", 1000).unwrap();
    let moving = items.take_all();
    // b "answers" a take a never issued, to write into a's store unasked.
    let forged = Body::GlobalReply { id: 12345, result: Ok(Answer::Taken(moving.clone())) };
    sim.send(Msg { from: "b".into(), to: "a".into(), body: forged });
    sim.run_for(3);
    assert_eq!(sim.int("a", "flow:x:n"), None);
    assert_eq!(sim.stat("a", |s| &s.rejected), 1);

    // Nor may a member that did answer a take send more for it later.
    let mut sim = late_take();
    sim.run_for(600);
    let take_id = match &sim.sent(|m| m.to == "c" && matches!(m.body, Body::GlobalRequest { .. }))[0].body {
        Body::GlobalRequest { id, .. } => *id,
        _ => unreachable!(),
    };
    let again = Body::GlobalReply { id: take_id, result: Ok(Answer::Taken(moving)) };
    sim.send(Msg { from: "c".into(), to: "a".into(), body: again });
    sim.run_for(600);
    assert_eq!(sim.int("a", "flow:x:n"), None, "c's second answer is refused");
    assert_eq!(sim.stat("a", |s| &s.rejected), 1);
}

#[test]
fn a_take_answer_arriving_during_a_hand_off_goes_out_with_it() {
    let mut sim = late_take();
    sim.node("a").store.tenant(DEFAULT_TENANT).unwrap().add("own", 1).unwrap();
    // The acknowledgements are slow, so the hand-off is still going when c's late take
    // answer (on the wire already) arrives.
    sim.filter = Box::new(|m| if is_ack(m) { Fate::Late(600) } else { Fate::Deliver });
    sim.feed("a", Input::HandOff { timeout_ms: 3_000, waiter: 5 });
    sim.run_until(|s| !s.node("a").handoffs.is_empty(), 4_000);
    assert!(sim.node("a").handoffs[0].1.is_ok(), "{:?}", sim.node("a").handoffs[0].1);
    let handed: u64 = ["b", "c"].iter().map(|id| sim.stat(id, |s| &s.handoff_in)).sum();
    assert_eq!(handed, 2, "its own key and the late flow");
    let holders: Vec<i64> = ["b", "c"].iter().filter_map(|id| sim.int(id, "flow:f:n")).collect();
    assert_eq!(holders, [4]);
}

#[test]
fn a_take_answer_later_than_the_window_is_refused() {
    let mut sim = Sim::cluster(&["a", "b", "c"]);
    sim.node("c").store.tenant(DEFAULT_TENANT).unwrap().add("flow:f:n", 4).unwrap();
    let late = super::reads::LATE_TAKE_WINDOW_MS + 1_000;
    sim.filter = Box::new(move |m| {
        if m.from == "c" && matches!(m.body, Body::GlobalReply { .. }) { Fate::Late(late) } else { Fate::Deliver }
    });
    sim.read("a", "flow:f:.*", Builtin::List, read_options(200, true), 1);
    sim.run_for(late + 100);
    assert_eq!(sim.done("a", 1).unwrap().result.as_ref().unwrap().missing, ["c"]);
    assert_eq!(sim.int("a", "flow:f:n"), None, "too late to be kept");
    assert_eq!(sim.stat("a", |s| &s.rejected), 1);
    // Never confirmed, so c puts its share back: refused, not lost.
    sim.run_for(super::lend::LEND_WAIT_MS);
    assert_eq!(sim.int("c", "flow:f:n"), Some(4));
}

mod modules;
mod takes;

#[test]
fn every_served_read_is_reported_with_its_reader_and_pattern() {
    let mut sim = Sim::cluster(&["a", "b", "c"]);
    sim.read("a", "flow:.*", Builtin::Count, read_options(1_000, false), 1);
    sim.run_until(|s| s.done("a", 1).is_some(), 1_000);
    for id in ["a", "b", "c"] {
        let served = &sim.node(id).served;
        let expected = ServedRead { from: "a".into(), tenant: DEFAULT_TENANT.into(), pattern: "flow:.*".into() };
        assert_eq!(served, &[expected], "{id} served a's read, and only it");
    }
    // A read that is refused before it starts is served by nobody.
    sim.read("b", "x", Builtin::Count, GlobalOptions { remote: true, take: true, ..read_options(1_000, false) }, 2);
    sim.run_for(5);
    assert!(sim.node("b").served.iter().all(|r| r.from == "a"), "{:?}", sim.node("b").served);
}
