//! Takes in two steps (`lend.rs`): the giver's copy goes only once the taker stored it.

use super::*;
use crate::peering::proto::lend::LEND_WAIT_MS;

fn is_take_ack(m: &Msg) -> bool {
    matches!(m.body, Body::TakeAck { .. })
}

fn take_id(sim: &Sim, to: &str) -> u128 {
    match &sim.sent(|m| m.to == to && matches!(m.body, Body::GlobalRequest { take: true, .. }))[0].body {
        Body::GlobalRequest { id, .. } => *id,
        _ => unreachable!(),
    }
}

/// b holds 3 and c holds 4 of flow f's counter.
fn shares() -> Sim {
    let sim = Sim::cluster(&["a", "b", "c"]);
    sim.node("b").store.tenant(DEFAULT_TENANT).unwrap().add("flow:f:n", 3).unwrap();
    sim.node("c").store.tenant(DEFAULT_TENANT).unwrap().add("flow:f:n", 4).unwrap();
    sim
}

#[test]
fn a_take_is_stored_then_confirmed_and_only_then_forgotten_by_the_givers() {
    let mut sim = shares();
    sim.read("a", "flow:f:.*", Builtin::List, read_options(1_000, true), 1);
    sim.run_until(|s| s.done("a", 1).is_some(), 1_000);
    assert_eq!(sim.done("a", 1).unwrap().taken, 2);
    assert_eq!(sim.int("a", "flow:f:n"), Some(7), "stored by the protocol, the shares added up");
    sim.run_for(5);
    let acks: Vec<String> = sim.sent(is_take_ack).into_iter().map(|m| m.to).collect();
    assert_eq!(acks, ["b", "c"], "each giver is told, after the items were stored");
    for giver in ["b", "c"] {
        assert_eq!(sim.int(giver, "flow:f:n"), None);
        assert_eq!(sim.node(giver).proto.lending.lent_items(), 0, "{giver} forgot its lent copy");
    }
    // Nothing comes back later.
    sim.run_for(LEND_WAIT_MS + 100);
    assert_eq!((sim.int("b", "flow:f:n"), sim.int("c", "flow:f:n"), sim.int("a", "flow:f:n")), (None, None, Some(7)));
}

#[test]
fn a_taker_that_dies_between_the_steps_loses_nothing() {
    let mut sim = shares();
    // c's answer never reaches a: a dies after c gave its items up and before storing
    // them. From then on, nothing from a gets through.
    sim.filter = Box::new(|m| {
        if (m.from == "c" && matches!(m.body, Body::GlobalReply { .. }))
            || m.from == "a" && !matches!(m.body, Body::GlobalRequest { .. })
        {
            Fate::Drop
        } else {
            Fate::Deliver
        }
    });
    sim.read("a", "flow:f:.*", Builtin::List, read_options(200, true), 1);
    sim.run_for(300);
    assert_eq!(sim.int("c", "flow:f:n"), None, "c gave its share up when it answered");
    assert_eq!(sim.node("c").proto.lending.lent_items(), 1, "and keeps it lent");
    sim.run_for(LEND_WAIT_MS);
    assert_eq!(sim.int("c", "flow:f:n"), Some(4), "put back: the share is not lost");
    assert_eq!(sim.node("c").proto.lending.lent_items(), 0);
}

#[test]
fn only_the_taker_can_confirm_its_take() {
    let mut sim = shares();
    sim.filter = Box::new(|m| {
        if m.from == "c" && matches!(m.body, Body::GlobalReply { .. }) || is_take_ack(m) {
            Fate::Drop
        } else {
            Fate::Deliver
        }
    });
    sim.read("a", "flow:f:.*", Builtin::List, read_options(200, true), 1);
    sim.run_for(300);
    let id = take_id(&sim, "c");
    // b knows nothing of a's take, but says it is stored; c is not fooled.
    sim.filter = Box::new(|_| Fate::Deliver);
    sim.send(Msg { from: "b".into(), to: "c".into(), body: Body::TakeAck { id } });
    sim.run_for(5);
    assert_eq!(sim.node("c").proto.lending.lent_items(), 1);
    sim.run_for(LEND_WAIT_MS);
    assert_eq!(sim.int("c", "flow:f:n"), Some(4));
}
