//! Graceful scale-in with real processes: a node told to leave hands its state to the
//! other members, then exits; nothing is lost, counters keep their cluster-wide sums.

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
