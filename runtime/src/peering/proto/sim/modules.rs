//! Simulated cases of modules and tenants: pushed-down modules fetched, checked and
//! served only for reads in flight; names of tenants a node does not have.

use std::sync::Arc;

use super::*;
use crate::reduce::registry::tests::REDUCER;

/// `REDUCER` loaded in tenant `default`, and its hash.
fn loaded_reducer() -> (ReducerRef, [u8; 32]) {
    let host = crate::wasm::WasmHost::new(crate::wasm::Limits::default()).unwrap();
    let module = host.load_reducer(REDUCER.as_bytes()).unwrap();
    let hash = *module.hash();
    let bytes = Arc::new(REDUCER.as_bytes().to_vec());
    let loaded = crate::reduce::registry::Loaded { tenant: DEFAULT_TENANT.into(), name: "r".into(), module, bytes };
    (ReducerRef::Wasm(Arc::new(loaded)), hash)
}

impl Sim {
    /// A read of key `c` at `id` with `reducer` pushed down.
    fn pushed_down_read(&mut self, id: &str, reducer: ReducerRef, waiter: u32) {
        let options = GlobalOptions { remote: true, ..read_options(1_000, false) };
        let tenant = DEFAULT_TENANT.to_string();
        self.feed(id, Input::Read { tenant, pattern: pattern("c"), reducer, options, waiter });
    }
}

#[test]
fn module_bytes_that_do_not_match_their_hash_fail_the_read_and_are_not_compiled() {
    let mut sim = Sim::cluster(&["a", "b"]);
    let (reducer, hash) = loaded_reducer();
    sim.node("a").modules.bytes.lock().unwrap().insert(hash, b"something else".to_vec());
    // a pushes the reducer down; b lacks it and asks a for its bytes.
    sim.pushed_down_read("a", reducer.clone(), 1);
    sim.run_until(|s| s.done("a", 1).is_some(), 1_000);
    assert_eq!(sim.sent(|m| matches!(m.body, Body::ModuleRequest { .. })).len(), 1);
    assert_eq!(sim.sent(|m| matches!(m.body, Body::ModuleData { .. })).len(), 1);
    assert!(sim.node("b").work.is_empty(), "nothing compiled: {:?}", sim.node("b").work);
    assert_eq!(sim.stat("b", |s| &s.rejected), 1);
    let err = sim.done("a", 1).unwrap().result.as_ref().unwrap_err().to_string();
    assert!(err.contains("do not match"), "{err}");

    // The right bytes are compiled, and the read is answered.
    sim.node("a").modules.bytes.lock().unwrap().insert(hash, REDUCER.as_bytes().to_vec());
    sim.pushed_down_read("a", reducer, 2);
    sim.run_until(|s| s.done("a", 2).is_some(), 1_000);
    assert_eq!(sim.node("b").work, ["install", "peer a"]);
    assert!(sim.done("a", 2).unwrap().result.is_ok());
}

#[test]
fn module_bytes_go_only_to_a_member_asked_by_a_read_in_flight() {
    let mut sim = Sim::cluster(&["a", "b", "c"]);
    let (reducer, hash) = loaded_reducer();
    sim.node("a").modules.bytes.lock().unwrap().insert(hash, REDUCER.as_bytes().to_vec());
    // No read pushes the module down: a member asking for it gets nothing.
    let ask = |tenant: &str| Body::ModuleRequest { tenant: tenant.into(), hash };
    sim.send(Msg { from: "b".into(), to: "a".into(), body: ask(DEFAULT_TENANT) });
    sim.run_for(5);
    assert!(sim.sent(|m| matches!(m.body, Body::ModuleData { .. })).is_empty());
    assert_eq!(sim.stat("a", |s| &s.module_refused), 1);
    // Nor for another tenant's name, nor after the read has ended.
    sim.send(Msg { from: "b".into(), to: "a".into(), body: ask("ghost") });
    sim.run_for(5);
    assert_eq!(sim.stat("a", |s| &s.unknown_tenant), 1);
    let refused: Vec<(&str, &str, &str)> =
        sim.node("a").refused.iter().map(|(r, f, o)| (*r, f.as_str(), o.as_str())).collect();
    assert_eq!(refused[0].0, "module refused");
    assert_eq!(refused[1], ("unknown tenant", "b", "module request in ghost"), "for the security log");
    sim.pushed_down_read("a", reducer, 1);
    sim.run_until(|s| s.done("a", 1).is_some(), 1_000);
    let data = sim.sent(|m| matches!(m.body, Body::ModuleData { .. }));
    assert_eq!(data.iter().map(|m| m.to.as_str()).collect::<Vec<_>>(), ["b", "c"], "each member asked, once");
    sim.send(Msg { from: "b".into(), to: "a".into(), body: ask(DEFAULT_TENANT) });
    sim.run_for(5);
    assert_eq!(sim.sent(|m| matches!(m.body, Body::ModuleData { .. })).len(), 2, "nothing after the read");
    assert_eq!(sim.stat("a", |s| &s.module_refused), 2);
}

#[test]
fn a_read_or_take_for_an_unknown_tenant_is_refused_and_creates_nothing() {
    let mut sim = Sim::cluster(&["a", "b"]);
    for (id, take) in [(1, false), (2, true)] {
        let request = Body::GlobalRequest { id, tenant: "ghost".into(), pattern: ".*".into(), reducer: None, take };
        sim.send(Msg { from: "a".into(), to: "b".into(), body: request });
    }
    sim.run_for(3);
    let replies = sim.sent(|m| m.from == "b" && matches!(m.body, Body::GlobalReply { .. }));
    assert_eq!(replies.len(), 2);
    for reply in replies {
        match reply.body {
            Body::GlobalReply { result: Err(e), .. } => assert!(e.contains("unknown tenant"), "{e}"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(sim.stat("b", |s| &s.unknown_tenant), 2);
    assert!(sim.node("b").store.tenant("ghost").is_none(), "no map made for the name");
}

#[test]
fn a_hand_off_batch_for_an_unknown_tenant_goes_back_to_its_sender() {
    let mut sim = Sim::cluster(&["a", "b"]);
    // a has a tenant b does not have.
    sim.node("a").store.add_tenant("t2").add("c", 3).unwrap();
    sim.node("a").store.tenant(DEFAULT_TENANT).unwrap().add("d", 1).unwrap();
    sim.feed("a", Input::HandOff { timeout_ms: 2_000, waiter: 1 });
    sim.run_until(|s| !s.node("a").handoffs.is_empty(), 3_000);
    let err = sim.node("a").handoffs[0].1.as_ref().unwrap_err().to_string();
    assert!(err.contains("unknown tenant"), "{err}");
    assert!(!sim.node("a").stopped, "a stays");
    assert_eq!(sim.node("a").store.tenant("t2").unwrap().get("c").map(|v| v.value), Some(Value::Int(3)), "back at a");
    assert!(sim.node("b").store.tenant("t2").is_none(), "no map made at b");
    assert_eq!(sim.stat("b", |s| &s.unknown_tenant), 1);
    assert_eq!(sim.int("b", "d"), Some(1), "the default tenant's batch was stored");
}

#[test]
fn tenants_see_only_their_own_keys_on_every_member_through_every_read() {
    let mut sim = Sim::cluster(&["a", "b", "c"]);
    for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
        let store = &sim.node(id).store;
        store.add_tenant("t1").add("flow:f:n", 1 + i as i64).unwrap();
        store.add_tenant("t2").add("flow:f:n", 100).unwrap();
        store.add_tenant("t2").set("secret", Value::Int(7)).unwrap();
    }
    let answers = |sim: &Sim, waiter| sim.done("a", waiter).unwrap().result.as_ref().unwrap().parts.len();
    // Fetch-all and pushed-down reads of t1 with the widest pattern.
    sim.read_in("t1", "a", ".*", Builtin::List, read_options(1_000, false), 1);
    let remote = GlobalOptions { remote: true, ..read_options(1_000, false) };
    sim.read_in("t1", "a", ".*", Builtin::Sum, remote, 2);
    sim.run_until(|s| s.done("a", 1).is_some() && s.done("a", 2).is_some(), 1_000);
    assert_eq!((answers(&sim, 1), answers(&sim, 2)), (3, 3), "every member answered");
    let partials = &sim.done("a", 2).unwrap().result.as_ref().unwrap().parts;
    let total = crate::global::finish_builtin(Builtin::Sum, true, partials.clone()).unwrap();
    assert_eq!(total, Reduced::Value(Value::Int(6)), "t1's sum, not t2's 300");
    let items: Vec<(String, Value)> = sim
        .done("a", 1)
        .unwrap()
        .result
        .as_ref()
        .unwrap()
        .parts
        .iter()
        .flat_map(|p| match p {
            Answer::Items(items) => items.clone(),
            other => panic!("{other:?}"),
        })
        .map(|i| (i.key, i.value))
        .collect();
    assert_eq!(items.len(), 3);
    assert!(items.iter().all(|(k, v)| k == "flow:f:n" && matches!(v, Value::Int(1..=3))), "t1's items only: {items:?}");
    // A take in t1 moves t1's items and leaves t2's where they are.
    sim.read_in("t1", "a", "flow:f:.*", Builtin::List, read_options(1_000, true), 3);
    sim.run_until(|s| s.done("a", 3).is_some(), 1_000);
    for id in ["b", "c"] {
        let t2 = sim.node(id).store.tenant("t2").unwrap();
        assert_eq!(t2.get("flow:f:n").map(|v| v.value), Some(Value::Int(100)), "{id}: t2's counter stays");
        assert!(sim.node(id).store.tenant("t1").unwrap().get("flow:f:n").is_none(), "{id}: t1's was taken");
    }
}
