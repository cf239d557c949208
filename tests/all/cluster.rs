//! The core with real `estate` processes on loopback: membership, global reads with the
//! built-in reducers, a node killed with SIGKILL, and hostile frames at a listen
//! endpoint.

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use estate::testing::{self as wire, Answer, Body, Envelope};
use estate_guest::{Item, Value};
use serde_json::json;
use support::{NO_REMOVAL, NodeProc, cluster, cluster_timed};

#[test]
fn three_nodes_sum_count_latest_and_members() {
    let nodes = cluster(3);
    for n in &nodes {
        assert_eq!(n.ok(&["set", "c", "5"]), "OK");
    }
    assert_eq!(nodes[0].ok(&["global", "c", "--reduce", "sum"]), "15");
    assert_eq!(nodes[2].ok(&["global", "c", "--reduce", "count"]), "3");
    let lines = nodes[1].ok(&["members"]);
    assert_eq!(lines.lines().count(), 3, "{lines}");

    // Integer sums stay exact (the prototype printed 1.23457e+06).
    nodes[0].ok(&["set", "big", "1234567"]);
    nodes[1].ok(&["set", "big", "1"]);
    assert_eq!(nodes[2].ok(&["global", "big", "--reduce", "sum"]), "1234568");

    // Regex patterns over all nodes: 2 + 3 + 1 matching keys, plus non-matching ones.
    for (node, keys) in nodes.iter().zip([&["flow:1", "flow:2"][..], &["flow:3", "flow:4", "flow:5"], &["flow:6"]]) {
        for k in keys {
            node.ok(&["set", k, "1"]);
        }
        node.ok(&["set", "xflow:9", "1"]);
    }
    let answer = nodes[0].global("flow:.*", "count", &[]);
    assert_eq!(answer["result"], json!(6));
    assert_eq!(answer["answered"], json!(["n1", "n2", "n3"]));
    assert_eq!(answer["missing"], json!([]));

    // latest: the write that happened last wins, whichever node did it.
    nodes[2].ok(&["set", "owner", "first"]);
    nodes[0].ok(&["set", "owner", "second"]);
    let latest = nodes[1].global("owner", "latest", &[]);
    assert_eq!(latest["result"]["value"], json!("second"));
    assert_eq!(latest["result"]["origin"], json!("n1"));

    // Floats, avg, min, max, list.
    nodes[0].ok(&["set", "load", "0.5"]);
    nodes[1].ok(&["set", "load", "1.5"]);
    assert_eq!(nodes[2].ok(&["global", "load", "--reduce", "avg"]), "1.0");
    assert_eq!(nodes[2].ok(&["global", "c|big", "--reduce", "max"]), "1234567");
    let list = nodes[2].global("big", "list", &[]);
    assert_eq!(list["result"].as_array().unwrap().len(), 2);

    // get/del are local.
    assert_eq!(nodes[0].ok(&["get", "c"]), "5");
    assert_eq!(nodes[0].ok(&["del", "c"]), "1");
    assert!(!nodes[0].cli(&["get", "c"]).status.success());
    assert_eq!(nodes[1].ok(&["global", "c", "--reduce", "sum"]), "10");
}

#[test]
fn bad_requests_get_clear_errors() {
    let nodes = cluster(2);
    nodes[0].ok(&["set", "name", "hello"]);
    nodes[1].ok(&["set", "name", "2"]);
    let out = nodes[1].cli(&["global", "name", "--reduce", "sum"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("name") && err.contains("n1") && err.contains("text"), "{err}");

    let out = nodes[0].cli(&["global", "flow:(", "--reduce", "count"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid pattern"));

    let out = nodes[0].cli(&["global", "c", "--reduce", "median"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown reducer"));

    nodes[0].ok(&["set", "m", &i64::MAX.to_string()]);
    nodes[1].ok(&["set", "m", "1"]);
    let out = nodes[0].cli(&["global", "m", "--reduce", "sum"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("overflow"));

    // No node at the control endpoint: an error, not a hang.
    let out = support::estate().args(["--control", "tcp://127.0.0.1:1", "get", "k"]).output().unwrap();
    assert!(!out.status.success());
}

#[test]
fn join_and_graceful_leave() {
    // Failure detection would not remove anyone within the test: whatever leaves the
    // members' views was announced.
    let mut nodes = cluster_timed(3, &NO_REMOVAL);
    let status = nodes[1].terminate();
    assert!(status.success(), "SIGTERM exits cleanly: {status:?}");
    // Leave is announced: the others drop n2, and say it left.
    for n in [&nodes[0], &nodes[2]] {
        n.wait_members(&["n1", "n3"]);
        assert_eq!(n.removals(), [("n2".to_string(), "Left".to_string())], "{}", n.id);
    }

    // A new node joins through a node other than the first.
    let n4 = NodeProc::start_timed("n4", &[&nodes[2].listen], &NO_REMOVAL, &[]);
    for n in [&nodes[0], &nodes[2], &n4] {
        n.wait_members(&["n1", "n3", "n4"]);
    }
    n4.ok(&["set", "c", "7"]);
    nodes[0].ok(&["set", "c", "3"]);
    assert_eq!(nodes[2].ok(&["global", "c", "--reduce", "sum", "--consistency", "all"]), "10");
}

/// The state `node` sees member `id` in (`alive`, `suspect`, …), if it is a member.
fn member_state(node: &NodeProc, id: &str) -> Option<String> {
    let members: serde_json::Value = serde_json::from_str(&node.ok(&["members", "--json"])).unwrap();
    members.as_array().unwrap().iter().find(|m| m["id"] == id).map(|m| m["state"].as_str().unwrap().to_string())
}

#[test]
fn sigkill_mid_stream() {
    // n1 suspects a silent member but never removes it during the test; n2 and n3
    // detect failures fast.
    let n1 = NodeProc::start_timed("n1", &[], &NO_REMOVAL, &[]);
    let n2 = NodeProc::start("n2", &[&n1.listen]);
    let mut n3 = NodeProc::start("n3", &[&n1.listen]);
    for n in [&n1, &n2, &n3] {
        n.wait_members(&["n1", "n2", "n3"]);
    }
    for (i, n) in [&n1, &n2, &n3].into_iter().enumerate() {
        n.ok(&["set", "c", &(i + 1).to_string()]);
    }
    assert_eq!(n1.ok(&["global", "c", "--reduce", "sum"]), "6");

    // Reads keep flowing on n1 while n3 dies: every read answers, with n3's share
    // before the kill and without it after.
    let (stop, killed) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let (tx, rx) = mpsc::channel();
    let reader = {
        let (control, stop, killed) = (n1.control.clone(), stop.clone(), killed.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let after_kill = killed.load(Ordering::SeqCst);
                let out = support::estate()
                    .args(["--control", &control, "global", "c", "--reduce", "sum", "--timeout-ms", "300"])
                    .output()
                    .unwrap();
                let value = String::from_utf8_lossy(&out.stdout).trim().to_string();
                let _ = tx.send((after_kill, out.status.success(), value));
            }
        })
    };
    let next = || rx.recv_timeout(Duration::from_secs(60)).expect("the reader stopped answering");
    let mut results = vec![next()];
    n3.kill();
    killed.store(true, Ordering::SeqCst);
    while results.iter().filter(|(after_kill, _, _)| *after_kill).count() < 2 {
        results.push(next());
    }
    stop.store(true, Ordering::SeqCst);
    reader.join().unwrap();
    results.extend(rx.try_iter());
    assert!(results.iter().all(|(_, ok, _)| *ok), "every read answered: {results:?}");
    assert!(results.iter().all(|(_, _, v)| v == "6" || v == "3"), "{results:?}");
    assert!(results.iter().filter(|(after_kill, _, _)| *after_kill).all(|(_, _, v)| v == "3"), "{results:?}");

    // n1 has noticed n3's silence but keeps it as a member: its reads ask n3, name it
    // missing once the timeout passes, and fail if every member must answer.
    let deadline = Instant::now() + Duration::from_secs(15);
    while member_state(&n1, "n3").as_deref() != Some("suspect") {
        assert!(Instant::now() < deadline, "n1 sees n3 as {:?}", member_state(&n1, "n3"));
        std::thread::sleep(Duration::from_millis(50));
    }
    let answer = n1.global("c", "sum", &["--timeout-ms", "400"]);
    assert_eq!(answer["result"], json!(3));
    assert_eq!(answer["answered"], json!(["n1", "n2"]));
    assert_eq!(answer["missing"], json!(["n3"]));
    let out = n1.cli(&["global", "c", "--reduce", "sum", "--timeout-ms", "300", "--consistency", "all"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("incomplete") && err.contains("n3"), "{err}");

    // n2's failure detection removes n3; then every member answers n2's reads.
    n2.wait_members(&["n1", "n2"]);
    assert_eq!(n2.removals(), [("n3".to_string(), "Failed".to_string())]);
    let answer = n2.global("c", "sum", &["--consistency", "all"]);
    assert_eq!(answer["result"], json!(3));
    assert_eq!(answer["answered"], json!(["n1", "n2"]));
    assert_eq!(answer["missing"], json!([]));
    assert_eq!(member_state(&n1, "n3").as_deref(), Some("suspect"), "n1 still keeps n3");
}

#[test]
fn consistency_all_fails_while_a_member_is_missing() {
    // A node that is stopped (SIGSTOP) stays a member until detection removes it.
    let nodes = cluster(3);
    for n in &nodes {
        n.ok(&["set", "c", "1"]);
    }
    let pid = nodes[2].pid().to_string();
    std::process::Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    let out = nodes[0].cli(&["global", "c", "--reduce", "sum", "--timeout-ms", "200", "--consistency", "all"]);
    let best = nodes[0].global("c", "sum", &["--timeout-ms", "200"]);
    std::process::Command::new("kill").args(["-CONT", &pid]).status().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("incomplete") && err.contains("n3"), "{err}");
    assert_eq!(best["result"], json!(2));
    assert_eq!(best["missing"], json!(["n3"]));
}

#[test]
fn hostile_frames_are_counted_logged_and_survived() {
    let nodes = cluster(2);
    nodes[0].ok(&["set", "c", "1"]);
    nodes[1].ok(&["set", "c", "2"]);

    let ctx = zmq::Context::new();
    let attacker = ctx.socket(zmq::DEALER).unwrap();
    attacker.set_linger(1000).unwrap();
    attacker.connect(&nodes[0].listen).unwrap();
    // Garbage, a wrong version, a truncated real frame, an extra frame part.
    attacker.send(&b"hello there"[..], 0).unwrap();
    attacker.send(&b"ES\x07junk"[..], 0).unwrap();
    let stranger = Envelope {
        from: "mallory".into(),
        clock: 1,
        body: Body::GlobalReply {
            id: 42,
            result: Ok(Answer::Items(vec![Item {
                key: "c".into(),
                value: Value::Int(1000),
                origin: "mallory".into(),
                writer: "mallory".into(),
                version: 1,
            }])),
        },
    };
    let frame = wire::encode(&stranger);
    attacker.send(&frame[..frame.len() - 3], 0).unwrap();
    attacker.send_multipart([&b"a"[..], &b"b"[..]], 0).unwrap();
    // Oversized: past the 16 MiB frame limit.
    attacker.send(vec![0u8; wire::MAX_FRAME + 1], 0).unwrap();
    // Well-formed, but from a non-member: a forged reply must not be accepted.
    attacker.send(&frame[..], 0).unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = nodes[0].stats();
        if s["malformed"].as_u64() >= Some(4) && s["oversized"].as_u64() >= Some(1) && s["rejected"].as_u64() >= Some(1)
        {
            break;
        }
        assert!(Instant::now() < deadline, "counters: {s}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Still serving, with correct answers.
    assert_eq!(nodes[0].ok(&["global", "c", "--reduce", "sum"]), "3");
    let log = nodes[0].log_text();
    assert!(log.contains("malformed peer frame"), "{log}");
    assert!(log.contains("oversized peer frame"), "{log}");

    // Junk at the control socket: an error reply, and the node stays up.
    let req = ctx.socket(zmq::REQ).unwrap();
    req.set_rcvtimeo(5000).unwrap();
    req.connect(&nodes[0].control).unwrap();
    req.send(&b"\x00\x01\x02"[..], 0).unwrap();
    let reply = wire::decode_reply(&req.recv_bytes(0).unwrap()).unwrap();
    assert!(matches!(reply, wire::ControlReply::Error(ref e) if e.contains("malformed")), "{reply:?}");
    assert_eq!(nodes[0].ok(&["get", "c"]), "1");
}

#[test]
fn the_readme_demo_computes_its_answers() {
    let out = support::estate().arg("demo").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    // 1234567 + 1 + 10 over three nodes, by the built-in and by the Wasm guest, printed
    // as a person writes them.
    assert!(text.contains("global \"c\" --reduce sum = 1234578   (answered: n1, n2, n3)"), "{text}");
    assert!(text.contains("wasm reducer_sum over global list of \"c\" (3 items) = 1234578\n"), "{text}");
    assert!(text.contains("global \"flow:.*\" --reduce count = 6   "), "{text}");
    assert!(text.contains("--reduce latest = \"n2 wrote last\" (from n2, version "), "{text}");
    // Six flow values: 100, 101 (n1), 100, 101, 102 (n2), 100 (n3): mean 604 / 6.
    let mean = format!("{:?}", 604.0 / 6.0);
    assert!(text.contains(&format!("--reduce mean (fetch-all) = {mean}\n")), "{text}");
    assert!(text.contains(&format!("--reduce mean (push-down) = {mean}\n")), "{text}");
    // The moved flow's counter continues on n2 and is gone from n1.
    let line = |start: &str| text.lines().find(|l| l.starts_with(start)).unwrap_or_else(|| panic!("{start}: {text}"));
    let int_after = |line: &str, at: &str| -> i64 {
        let from = line.find(at).unwrap() + at.len();
        line[from..].split([' ', ')']).next().unwrap().parse().unwrap()
    };
    let (before, after) = (line("ids on n1:"), line("flows 10..20 moved to n2"));
    assert!(int_after(after, "matches = ") > int_after(before, "matches = "), "{before}\n{after}");
    assert!(after.ends_with(", - on n1"), "{after}");
    assert!(text.contains("(every match counted once)"), "{text}");
    // A graceful leave keeps the cluster-wide sum; a crash loses what the node held.
    assert!(text.contains("[graceful leave] n1: global \"c\" --reduce sum = 1234578   (answered: n1, n3)"), "{text}");
    let crash = line("[crash] n3 stopped");
    let held = int_after(crash, "c = ");
    assert!(held >= 10, "n3 held at least its own share: {crash}");
    let lost = line("[crash] n1: global");
    assert_eq!(int_after(lost, "sum = "), 1_234_578 - held, "{text}");
}
