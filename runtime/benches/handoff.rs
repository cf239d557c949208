//! Graceful scale-in: how long a leaving node takes to hand 10,000 flows' state
//! (20,000 counters) to the remaining member, and that none is lost. The baseline,
//! measured in the same run, is the same 10,000 flows fetched the way a moved flow's
//! first packet fetches it: one take per flow.
//!
//! Run with `cargo bench --bench handoff`.

use std::time::{Duration, Instant};

use estate::node::{GlobalOptions, Node, NodeConfig};
use estate::store::DEFAULT_TENANT;
use estate_guest::Value;

const FLOWS: usize = 10_000;

fn pair() -> (Node, Node) {
    let a = Node::start(NodeConfig::new("a", "tcp://127.0.0.1:*")).unwrap();
    let mut config = NodeConfig::new("b", "tcp://127.0.0.1:*");
    config.join = vec![a.endpoint().to_string()];
    let b = Node::start(config).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(a.members().iter().any(|m| m.id == "b" && m.state == "alive")
        && b.members().iter().any(|m| m.id == "a" && m.state == "alive"))
    {
        assert!(Instant::now() < deadline, "nodes never saw each other");
        std::thread::sleep(Duration::from_millis(5));
    }
    (a, b)
}

/// The state of `FLOWS` flows on `node`: a packet and a match counter per flow.
fn fill(node: &Node) -> i64 {
    let t = node.store().tenant(DEFAULT_TENANT).unwrap();
    let mut total = 0;
    for f in 0..FLOWS {
        let packets = (f % 97) as i64 + 1;
        t.add(&format!("flow:6:10.0.{}.{}:{}-192.168.0.1:443:packets", f / 250, f % 250, 20_000 + f), packets).unwrap();
        t.add(&format!("flow:6:10.0.{}.{}:{}-192.168.0.1:443:matches", f / 250, f % 250, 20_000 + f), 1).unwrap();
        total += packets + 1;
    }
    total
}

/// Keys and the sum of their values at `node`.
fn census(node: &Node) -> (usize, i64) {
    let answer = node.get_global("flow:.*", "sum", GlobalOptions::default()).unwrap();
    let sum = match answer.result {
        estate::reduce::Reduced::Value(Value::Int(s)) => s,
        other => panic!("unexpected {other:?}"),
    };
    (node.store().tenant(DEFAULT_TENANT).unwrap().len(), sum)
}

fn main() {
    let rounds = 5;
    let mut handoffs = Vec::new();
    for _ in 0..rounds {
        let (a, b) = pair();
        let total = fill(&b);
        let t = Instant::now();
        let report = b.leave(Duration::from_secs(10)).expect("hand-off");
        let wall = t.elapsed();
        assert_eq!(report.items as usize, 2 * FLOWS);
        let (keys, sum) = census(&a);
        assert_eq!((keys, sum), (2 * FLOWS, total), "state lost in the hand-off");
        handoffs.push((wall, Duration::from_micros(report.micros)));
        b.shutdown();
        a.shutdown();
    }
    handoffs.sort();
    let (wall, acked) = handoffs[rounds / 2];
    println!("hand-off of {FLOWS} flows ({} counters), median of {rounds}:", 2 * FLOWS);
    println!("  leave() wall time (NF stop, hand-off, acks, leave): {wall:?}");
    println!("  first batch sent to last acknowledgement:          {acked:?}");
    println!("  lost: 0 (checked every round: keys and sums at the receiver)");

    // Baseline: one take per flow, as the first packet of each moved flow would do.
    let (a, b) = pair();
    let total = fill(&b);
    let options = GlobalOptions { take: true, ..GlobalOptions::default() };
    let t = Instant::now();
    let mut moved = 0;
    for f in 0..FLOWS {
        let pattern = format!("flow:6:10\\.0\\.{}\\.{}:{}-192\\.168\\.0\\.1:443:.*", f / 250, f % 250, 20_000 + f);
        let answer = a.get_global(&pattern, "list", options).unwrap();
        if let estate::reduce::Reduced::Items(items) = answer.result {
            for item in items {
                a.store().tenant(DEFAULT_TENANT).unwrap().set(&item.key, item.value).unwrap();
                moved += 1;
            }
        }
    }
    let per_flow = t.elapsed();
    assert_eq!(moved, 2 * FLOWS);
    assert_eq!(census(&a), (2 * FLOWS, total));
    println!("baseline, one take per flow: {per_flow:?}");
    println!("ratio per-flow takes / hand-off: {:.1}x", per_flow.as_secs_f64() / wall.as_secs_f64());
    b.shutdown();
    a.shutdown();
}
