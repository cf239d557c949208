//! Graceful scale-in with real processes: a node told to leave hands its state to the
//! other members, then exits; nothing is lost, counters keep their cluster-wide sums.
//! And state in transit is never dropped: a take too large for a frame moves nothing.

use crate::support;

use std::time::{Duration, Instant};

use estate::store::{DEFAULT_TENANT, Moving};
use estate::testing::MemberMsg;
use estate::testing::{self as wire, Body, Envelope};
use estate_guest::{Item, Value};
use support::{NodeProc, guest_path};

#[test]
fn a_leaving_node_hands_its_state_over_and_exits() {
    let nf = guest_path("nf_count");
    // n1 and n2 count overlapping flow sets (flows 10..20 on both), so some flow keys
    // exist on both nodes and the hand-off must add n2's counts into n1's.
    let n1 = NodeProc::start_with("n1", &[], &["--nf", &nf, "--input", "synth:seed=1,flows=20,packets=2000,share=0"]);
    let mut n2 = NodeProc::start_with(
        "n2",
        &[&n1.listen],
        &["--nf", &nf, "--input", "synth:seed=2,first=10,flows=20,packets=3000,share=0"],
    );
    let n3 = NodeProc::start("n3", &[&n1.listen]);
    for n in [&n1, &n2, &n3] {
        n.wait_members(&["n1", "n2", "n3"]);
    }
    n1.wait_stat("nf_packets", 2000);
    n2.wait_stat("nf_packets", 3000);
    n2.ok(&["set", "config:owner", "n2"]);
    let sum = |n: &NodeProc, pattern: &str| n.ok(&["global", pattern, "--reduce", "sum", "--consistency", "all"]);
    assert_eq!(sum(&n1, "count:packets"), "5000");
    assert_eq!(sum(&n1, "flow:.*:packets"), "5000");
    let bytes = sum(&n1, "count:bytes");

    let report: serde_json::Value = serde_json::from_str(&n2.ok(&["leave", "--json"])).unwrap();
    // 20 flows, count:packets and count:bytes, config:owner.
    assert_eq!(report["items"], 23, "{report}");
    assert!(n2.wait_exit(Duration::from_secs(10)).success());
    n1.wait_members(&["n1", "n3"]);
    n3.wait_members(&["n1", "n3"]);

    // Nothing lost, nothing counted twice: the sums are those of before.
    assert_eq!(sum(&n1, "count:packets"), "5000");
    assert_eq!(sum(&n3, "flow:.*:packets"), "5000");
    assert_eq!(sum(&n3, "count:bytes"), bytes);
    assert_eq!(n1.ok(&["global", "config:owner", "--reduce", "latest"]), "\"n2\"", "text prints as a person writes it");
    let handed_in = |n: &NodeProc| n.stats()["handoff_in"].as_u64().unwrap();
    assert_eq!(handed_in(&n1) + handed_in(&n3), 23);
    // Each member got a share (rendezvous hashing over 20 flows and 3 other keys).
    let members = report["members"].as_array().unwrap();
    assert_eq!(members.len(), 2, "{report}");
}

#[test]
fn a_node_with_nobody_to_hand_to_keeps_its_state_and_stays() {
    let n1 = NodeProc::start("n1", &[]);
    n1.ok(&["set", "k", "7"]);
    let out = n1.cli(&["leave"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no live member"), "{err}");
    assert_eq!(n1.ok(&["get", "k"]), "7");
}

/// A take whose items would not fit one frame moves nothing (the owner keeps them, and
/// says so in its log) instead of losing them; a take that fits moves its items.
#[test]
fn a_take_too_large_for_one_frame_leaves_the_items_where_they_are() {
    use estate::node::GlobalOptions;
    use estate::reduce::Reduced;
    use estate::store::DEFAULT_TENANT;
    use estate_guest::Value;

    let (a, b) = support::in_process_pair("a", "b", |_| {});
    // 17 values of 1 MiB: more than the 16 MiB frame limit together.
    let big = "x".repeat(1 << 20);
    for i in 0..17 {
        b.set(&format!("flow:f:{i:02}"), Value::Text(big.clone())).unwrap();
    }
    let take = GlobalOptions { take: true, timeout: Duration::from_secs(20), ..GlobalOptions::default() };
    let count = |answer: Reduced| match answer {
        Reduced::Items(items) => items.len(),
        Reduced::Nothing => 0,
        other => panic!("{other:?}"),
    };
    let answer = a.get_global("flow:f:.*", "list", take).unwrap();
    assert_eq!(answer.missing, Vec::<String>::new(), "b answered");
    assert_eq!(count(answer.result), 0);
    assert_eq!(b.store().tenant(DEFAULT_TENANT).unwrap().len(), 17, "b kept every item");
    assert_eq!(b.get("flow:f:16").unwrap().value, Value::Text(big.clone()));
    // Ten of them fit: they move.
    let answer = a.get_global("flow:f:0.*", "list", take).unwrap();
    assert_eq!(count(answer.result), 10);
    assert_eq!(b.store().tenant(DEFAULT_TENANT).unwrap().len(), 7);
}

/// A cluster member played by the test over raw ZeroMQ: it joins a node with the
/// membership handshake, keeps itself alive with heartbeats, and sends and receives
/// peer messages as they are on the wire.
struct FakeMember {
    id: String,
    /// Where nodes send to us.
    inbox: zmq::Socket,
    /// How we send to the node.
    outbox: zmq::Socket,
    _ctx: zmq::Context,
}

impl FakeMember {
    fn join(id: &str, node: &NodeProc) -> FakeMember {
        let ctx = zmq::Context::new();
        let inbox = ctx.socket(zmq::ROUTER).unwrap();
        inbox.bind("tcp://127.0.0.1:*").unwrap();
        let endpoint = inbox.get_last_endpoint().unwrap().unwrap();
        let outbox = ctx.socket(zmq::DEALER).unwrap();
        outbox.set_linger(0).unwrap();
        outbox.connect(&node.listen).unwrap();
        let fake = FakeMember { id: id.into(), inbox, outbox, _ctx: ctx };
        fake.send(Body::Member(MemberMsg::Hello { endpoint }));
        fake.recv_until(|body| matches!(body, Body::Member(MemberMsg::HelloAck { .. })).then_some(()));
        fake.send(Body::Member(MemberMsg::Ready));
        let deadline = Instant::now() + Duration::from_secs(15);
        while !node.members().iter().any(|m| m == id) {
            assert!(Instant::now() < deadline, "{} never saw {id} join", node.id);
            fake.send(Body::Member(MemberMsg::Heartbeat));
            std::thread::sleep(Duration::from_millis(50));
        }
        fake
    }

    fn send(&self, body: Body) {
        self.outbox.send(wire::encode(&Envelope { from: self.id.clone(), clock: 0, body }), 0).unwrap();
    }

    /// Receives until `want` picks a message (heartbeating meanwhile); bounded.
    fn recv_until<T>(&self, mut want: impl FnMut(Body) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(Instant::now() < deadline, "{}: the awaited message never came", self.id);
            self.send(Body::Member(MemberMsg::Heartbeat));
            if self.inbox.poll(zmq::POLLIN, 50).unwrap() == 0 {
                continue;
            }
            let parts = self.inbox.recv_multipart(0).unwrap();
            let env = wire::decode(parts.last().unwrap()).unwrap();
            if let Some(found) = want(env.body) {
                return found;
            }
        }
    }
}

fn counter_item(key: &str, value: i64) -> Moving {
    let item =
        Item { key: key.into(), value: Value::Int(value), origin: "fake".into(), writer: "fake".into(), version: 1 };
    Moving { item, counter: true }
}

/// A hand-off batch that arrives twice (the leaver never got the first acknowledgement)
/// is acknowledged twice and stored once: a handed-over counter is not counted twice.
#[test]
fn a_hand_off_batch_sent_twice_is_stored_once() {
    let node = NodeProc::start("n1", &[]);
    node.ok(&["set", "other", "1"]);
    let fake = FakeMember::join("leaver", &node);
    let batch = || Body::Handoff { id: 7, tenant: DEFAULT_TENANT.into(), items: vec![counter_item("c", 5)] };
    for _ in 0..2 {
        fake.send(batch());
        let (stored, refused) = fake.recv_until(|body| match body {
            Body::HandoffAck { id: 7, stored, refused } => Some((stored, refused)),
            _ => None,
        });
        assert_eq!((stored, refused.len()), (1, 0));
    }
    assert_eq!(node.ok(&["get", "c"]), "5");
    let stats = node.stats();
    assert_eq!((stats["handoff_in"].as_u64(), stats["handoff_duplicates"].as_u64()), (Some(1), Some(1)), "{stats}");
    // A different batch with the same key is new state, and adds up.
    fake.send(Body::Handoff { id: 8, tenant: DEFAULT_TENANT.into(), items: vec![counter_item("c", 2)] });
    fake.recv_until(|body| matches!(body, Body::HandoffAck { id: 8, .. }).then_some(()));
    assert_eq!(node.ok(&["get", "c"]), "7");
}

/// A leaving node whose batch is not acknowledged sends it again, with the same id,
/// until it is; then it leaves with everything handed over. Writes during the hand-off
/// are refused, and so is state another leaver hands to it.
#[test]
fn a_leaving_node_sends_an_unacknowledged_batch_again() {
    let mut node = NodeProc::start("n1", &[]);
    node.ok(&["set", "k", "7"]);
    let fake = FakeMember::join("taker", &node);
    let control = node.control.clone();
    let leave = std::thread::spawn(move || {
        support::estate().args(["--control", &control, "leave", "--timeout-ms", "8000", "--json"]).output().unwrap()
    });
    let first = fake.recv_until(|body| match body {
        Body::Handoff { id, items, .. } => Some((id, items)),
        _ => None,
    });
    assert_eq!(first.1.iter().map(|m| m.item.key.as_str()).collect::<Vec<_>>(), ["k"]);
    // Writes meanwhile are refused: they would stay behind when the node exits. So is
    // state handed to it by another leaver: that one gets it back and stays.
    let out = node.cli(&["set", "late", "1"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("handing its state over"));
    fake.send(Body::Handoff { id: 9, tenant: DEFAULT_TENANT.into(), items: vec![counter_item("c", 5)] });
    let (stored, refused) = fake.recv_until(|body| match body {
        Body::HandoffAck { id: 9, stored, refused } => Some((stored, refused)),
        _ => None,
    });
    assert_eq!(stored, 0);
    assert!(refused.len() == 1 && refused[0].1.contains("leaving"), "{refused:?}");
    // Not acknowledged: it comes again, the same batch under the same id.
    let again = fake.recv_until(|body| match body {
        Body::Handoff { id, items, .. } => Some((id, items)),
        _ => None,
    });
    assert_eq!(again, first);
    fake.send(Body::HandoffAck { id: first.0, stored: 1, refused: vec![] });
    let out = leave.join().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["items"], 1, "{report}");
    assert!(node.wait_exit(Duration::from_secs(10)).success());
    assert!(node.log_text().contains("sending them again"));
}

/// A leaving node whose batches nobody acknowledges gives up at its deadline: `leave`
/// fails, the node stays with its state, and takes writes again.
#[test]
fn a_hand_off_nobody_acknowledges_fails_and_the_node_keeps_its_state() {
    let node = NodeProc::start("n1", &[]);
    node.ok(&["set", "k", "7"]);
    let fake = FakeMember::join("silent", &node);
    let control = node.control.clone();
    let leave = std::thread::spawn(move || {
        support::estate().args(["--control", &control, "leave", "--timeout-ms", "3000"]).output().unwrap()
    });
    // The batch comes, then comes again (same id, same items): nobody acknowledged it.
    let batch = || {
        fake.recv_until(|body| match body {
            Body::Handoff { id, items, .. } => Some((id, items)),
            _ => None,
        })
    };
    let first = batch();
    assert_eq!(batch(), first, "sent again");
    // Acknowledge nothing, and keep heartbeating until the leave returns.
    while !leave.is_finished() {
        if fake.inbox.poll(zmq::POLLIN, 50).unwrap() > 0 {
            fake.inbox.recv_multipart(0).unwrap();
        }
        fake.send(Body::Member(MemberMsg::Heartbeat));
    }
    let out = leave.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("did not acknowledge") && err.contains("stays"), "{err}");
    let stats = node.stats();
    assert!(stats["handoff_resent"].as_u64() >= Some(1), "{stats}");
    assert_eq!(stats["handoff_out"].as_u64(), Some(0), "{stats}");
    assert_eq!(node.ok(&["get", "k"]), "7");
    node.ok(&["set", "k", "8"]);
    assert_eq!(node.ok(&["get", "k"]), "8");
    assert!(node.ok(&["members", "--json"]).contains("silent"), "the node did not leave");
}
