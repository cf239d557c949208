//! Graceful scale-in with real processes: a node told to leave hands its state to the
//! other members, then exits; nothing is lost, counters keep their cluster-wide sums.
//! And state in transit is never dropped: a take too large for a frame moves nothing.

mod support;

use std::time::Duration;

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
    assert_eq!(n1.ok(&["global", "config:owner", "--reduce", "latest"]), "n2");
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
    use estate::node::{GlobalOptions, Node, NodeConfig};
    use estate::reduce::Reduced;
    use estate::store::DEFAULT_TENANT;
    use estate_guest::Value;

    let a = Node::start(NodeConfig::new("a", "tcp://127.0.0.1:*")).unwrap();
    let mut config = NodeConfig::new("b", "tcp://127.0.0.1:*");
    config.join = vec![a.endpoint().to_string()];
    let b = Node::start(config).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !a.members().iter().any(|m| m.id == "b" && m.state == "alive") {
        assert!(std::time::Instant::now() < deadline, "b never joined");
        std::thread::sleep(Duration::from_millis(10));
    }
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
    assert_eq!(b.store().tenant(DEFAULT_TENANT).len(), 17, "b kept every item");
    assert_eq!(b.get("flow:f:16").unwrap().value, Value::Text(big.clone()));
    // Ten of them fit: they move.
    let answer = a.get_global("flow:f:0.*", "list", take).unwrap();
    assert_eq!(count(answer.result), 10);
    assert_eq!(b.store().tenant(DEFAULT_TENANT).len(), 7);
}
