//! The switch emulator (`estate traffic switch`) feeding real nodes' steered inputs: the
//! paper's Fig. 4 scenario with the ids NF (scale-out of half the flows from A to B, then
//! scale-in of B back to A), with state sharing and without it (baseline); and the
//! steered input's robustness (bad frames, unload and shutdown while it waits, a dead
//! node).

use crate::support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use support::{NodeProc, guest_path};

const STREAM: &str = "seed=21,flows=40,packets=6000,share=0.1";
const PACKETS: u64 = 6000;
const SCALE_OUT: &str = "2000:move:0.5:A:B";
const SCALE_IN: &str = "4000:drain:B:A";

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("estate-switch-{}-{name}", std::process::id()))
}

/// Waits (bounded) until the node's NF status is `want`.
fn wait_status(node: &NodeProc, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = node.ok(&["nf", "status"]);
        if status == want {
            return;
        }
        assert!(Instant::now() < deadline, "{}: NF {status}, wanted {want}\n{}", node.id, node.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Nodes A and B running ids over steered inputs with `--flow-state mode`, B joined to A.
fn ids_pair(mode: &str) -> (NodeProc, NodeProc) {
    let config = temp("ids.conf");
    std::fs::write(&config, "pattern = attack\npattern = evil\nthreshold = 5\n").unwrap();
    let (ids, config) = (guest_path("nf_ids"), config.to_str().unwrap().to_string());
    let args = ["--nf", &ids, "--nf-config", &config, "--input", "steer:tcp://127.0.0.1:*", "--flow-state", mode];
    let a = NodeProc::start_with("A", &[], &args);
    let b = NodeProc::start_with("B", &[&a.listen], &args);
    for node in [&a, &b] {
        node.wait_members(&["A", "B"]);
        assert!(node.steer.as_deref().is_some_and(|s| s.starts_with("tcp://127.0.0.1:")), "{:?}", node.steer);
        assert_eq!(node.ok(&["nf", "status"]), "running");
    }
    (a, b)
}

/// Runs the switch over A and B with the scale-out and scale-in; returns its stdout and
/// its `--flows-out` JSON, once both NFs have finished their input.
fn scale_out_then_in(a: &NodeProc, b: &NodeProc, name: &str) -> (String, Json) {
    let flows_out = temp(name);
    let node = |n: &NodeProc, endpoint: &str| format!("{}={endpoint}", n.id);
    let out = support::estate()
        .args(["traffic", "switch", "--synth", STREAM, "--send-timeout-ms", "10000"])
        .args(["--node", &node(a, a.steer.as_ref().unwrap()), "--node", &node(b, b.steer.as_ref().unwrap())])
        .args(["--node-control", &node(a, &a.control), "--node-control", &node(b, &b.control)])
        .args(["--at", SCALE_OUT, "--at", SCALE_IN, "--flows-out", flows_out.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "switch failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    let summary: Json = serde_json::from_str(&std::fs::read_to_string(&flows_out).unwrap()).unwrap();
    let _ = std::fs::remove_file(&flows_out);
    // B's input ended at the drain, A's at the end of the stream.
    wait_status(b, "finished");
    wait_status(a, "finished");
    (stdout, summary)
}

/// `flow:<key>:packets` items over the cluster: flow key → (node → value).
fn flow_packets(node: &NodeProc) -> BTreeMap<String, BTreeMap<String, u64>> {
    let answer = node.global("flow:.*:packets", "list", &["--consistency", "all"]);
    assert_eq!(answer["missing"], serde_json::json!([]), "{answer}");
    let mut items: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for item in answer["result"].as_array().unwrap() {
        let key = item["key"].as_str().unwrap();
        let flow = key.strip_prefix("flow:").and_then(|k| k.strip_suffix(":packets")).unwrap();
        let origin = item["origin"].as_str().unwrap().to_string();
        let old = items.entry(flow.to_string()).or_default().insert(origin, item["value"].as_u64().unwrap());
        assert!(old.is_none(), "{key} twice on one node");
    }
    items
}

/// A flow of the switch's summary: its packets in total and per node, where its state
/// ends up when it follows the flow, and the nodes that fetch it (one entry per move that
/// brought the flow packets).
struct Flow {
    packets: u64,
    per_node: BTreeMap<String, u64>,
    holder: String,
    adopted_by: Vec<String>,
}

fn flows_of(summary: &Json) -> BTreeMap<String, Flow> {
    let mut flows = BTreeMap::new();
    for f in summary["flows"].as_array().unwrap() {
        let mut flow = Flow {
            packets: f["packets"].as_u64().unwrap(),
            per_node: BTreeMap::new(),
            holder: String::new(),
            adopted_by: vec![],
        };
        for stint in f["path"].as_array().unwrap() {
            let (node, packets) = (stint["node"].as_str().unwrap().to_string(), stint["packets"].as_u64().unwrap());
            assert_eq!(stint["undeliverable"], 0);
            if packets == 0 {
                continue;
            }
            *flow.per_node.entry(node.clone()).or_default() += packets;
            if stint["mark"].as_u64().unwrap() != 0 {
                flow.adopted_by.push(node.clone());
            }
            flow.holder = node;
        }
        assert_eq!(flow.per_node.values().sum::<u64>(), flow.packets);
        flows.insert(f["flow"].as_str().unwrap().to_string(), flow);
    }
    flows
}

fn adoptions_at(flows: &BTreeMap<String, Flow>, node: &str) -> u64 {
    flows.values().map(|f| f.adopted_by.iter().filter(|n| *n == node).count() as u64).sum()
}

fn sum(node: &NodeProc, pattern: &str) -> u64 {
    node.ok(&["global", pattern, "--reduce", "sum", "--consistency", "all"]).parse().unwrap()
}

/// Fig. 4 with estate (`take`): half of A's flows move to B after 2000 packets, B is
/// drained back to A after 4000. Every flow's packet counter follows the flow, so at the
/// end each flow's counter sits on one node and holds every packet of the flow; the
/// baseline (`off`) splits the same counters over the nodes, restarting at each move.
#[test]
fn scale_out_and_in_keep_every_flow_counter_whole() {
    let (a, mut b) = ids_pair("take");
    let (stdout, summary) = scale_out_then_in(&a, &b, "take.json");
    assert!(stdout.contains("moves 2, undeliverable 0"), "{stdout}");
    let report = &summary["report"];
    assert_eq!(report["packets"], PACKETS);
    assert_eq!(report["moves"][0]["event"], SCALE_OUT);
    assert_eq!(report["moves"][0]["flows"], 20, "{report}");
    assert_eq!(report["moves"][1]["event"], SCALE_IN);
    assert_eq!(report["moves"][1]["flows"], 20, "B's flows all go back");
    assert!(report["moves"].as_array().unwrap().iter().all(|m| m["settled"] == true), "{report}");
    let flows = flows_of(&summary);
    assert_eq!(flows.len(), 40);
    assert_eq!(flows.values().map(|f| f.packets).sum::<u64>(), PACKETS);
    let moved = flows.values().filter(|f| f.per_node.contains_key("B")).count();
    assert!(moved >= 15, "only {moved} flows had packets on B");

    // Every packet was handled once, and counted once: per node, and per flow.
    let (sa, sb) = (a.stats(), b.stats());
    assert_eq!(sa["nf_packets"].as_u64().unwrap() + sb["nf_packets"].as_u64().unwrap(), PACKETS, "{sa}\n{sb}");
    assert_eq!(sum(&a, "ids:packets"), PACKETS);
    assert_eq!(sum(&a, "flow:.*:packets"), PACKETS, "nothing counted twice, nothing lost");
    let items = flow_packets(&a);
    assert_eq!(items.len(), flows.len());
    for (key, flow) in &flows {
        let want = BTreeMap::from([(flow.holder.clone(), flow.packets)]);
        assert_eq!(items[key], want, "{key}: its counter followed it, whole");
    }
    // The moves were adopted: B fetched the moved flows' state, A fetched it back.
    assert_eq!(sb["nf_flows_adopted"].as_u64().unwrap(), adoptions_at(&flows, "B"), "{sb}");
    assert_eq!(sa["nf_flows_adopted"].as_u64().unwrap(), adoptions_at(&flows, "A"), "{sa}");
    assert!(adoptions_at(&flows, "A") > 0 && adoptions_at(&flows, "B") > 0);
    for stats in [&sa, &sb] {
        assert_eq!(stats["nf_adopt_failures"], 0, "{stats}");
        assert_eq!(stats["nf_bad_frames"], 0, "{stats}");
    }
    // Matches were not double counted either.
    assert_eq!(sum(&a, "flow:.*:matches"), sum(&a, "ids:matches"));

    // Scale-in completes: B, drained, is told to leave. It hands what it still holds
    // (its node-wide counters) to A and exits; A alone now holds every count.
    let matches = sum(&a, "ids:matches");
    let report: Json = serde_json::from_str(&b.ok(&["leave", "--json"])).unwrap();
    assert!(report["items"].as_u64().unwrap() > 0, "{report}");
    assert!(b.wait_exit(Duration::from_secs(10)).success());
    a.wait_members(&["A"]);
    assert_eq!(a.ok(&["get", "ids:packets"]), PACKETS.to_string(), "B's share was added to A's");
    assert_eq!(a.ok(&["get", "ids:matches"]), matches.to_string());
    assert_eq!(sum(&a, "flow:.*:packets"), PACKETS);
    assert_eq!(flow_packets(&a).len(), flows.len());
    drop((a, b));

    // Baseline: the same switch run, no state sharing.
    let (a, b) = ids_pair("off");
    let (_, baseline) = scale_out_then_in(&a, &b, "off.json");
    assert_eq!(baseline["flows"], summary["flows"], "the switch is deterministic");
    let (sa, sb) = (a.stats(), b.stats());
    assert_eq!(sa["nf_flows_adopted"], 0, "{sa}");
    assert_eq!(sb["nf_flows_adopted"], 0, "{sb}");
    assert_eq!(sum(&a, "flow:.*:packets"), PACKETS);
    let items = flow_packets(&a);
    let mut short = 0;
    for (key, flow) in &flows {
        // Each node counted only the packets it saw: the counter restarted at every move.
        assert_eq!(items[key], flow.per_node, "{key}");
        if flow.per_node.len() > 1 {
            assert!(items[key][&flow.holder] < flow.packets);
            short += 1;
        }
    }
    assert_eq!(short, moved, "every moved flow's final count misses packets");
}

/// A steered input skips and counts bad frames and ends at an empty message; a node
/// whose steered NF waits for packets unloads it and shuts down promptly.
#[test]
fn steered_input_survives_bad_frames_and_stops_cleanly() {
    let count = guest_path("nf_count");
    let args = ["--nf", &count, "--input", "steer:tcp://127.0.0.1:*"];
    let node = NodeProc::start_with("n1", &[], &args);
    let ctx = zmq::Context::new();
    let push = ctx.socket(zmq::PUSH).unwrap();
    push.set_linger(5000).unwrap();
    push.connect(node.steer.as_ref().unwrap()).unwrap();
    let packet = estate::nf::input::synth::OwnedPacket::new(
        6,
        ([10, 0, 0, 1], 40000),
        ([10, 0, 0, 2], 443),
        estate_guest::nf::Direction::Forward,
        b"hello".to_vec(),
    );
    push.send(&b"not a frame"[..], 0).unwrap();
    push.send_multipart([estate::nf::input::pcap::frame(&packet), estate::nf::input::pcap::frame(&packet)], 0).unwrap();
    push.send(estate::nf::input::pcap::frame(&packet), 0).unwrap();
    let stats = node.wait_stat("nf_bad_frames", 2);
    assert_eq!(node.ok(&["nf", "status"]), "running", "{stats}");
    push.send(&b""[..], 0).unwrap();
    wait_status(&node, "finished");
    let stats = node.stats();
    assert_eq!((stats["nf_packets"].as_u64(), stats["nf_bad_frames"].as_u64()), (Some(1), Some(2)), "{stats}");
    assert_eq!(node.ok(&["get", "count:packets"]), "1");

    // Unloading an NF whose input waits for packets does not wait for traffic: no packet
    // ever comes to this node, and the unload is answered (within the CLI's deadline).
    let waiting = NodeProc::start_with("n2", &[], &args);
    assert_eq!(waiting.ok(&["nf", "status"]), "running");
    assert_eq!(waiting.ok(&["nf", "unload"]), "unloaded");
    assert_eq!(waiting.ok(&["nf", "status"]), "none");
    let stats = waiting.stats();
    assert_eq!((stats["nf_packets"].as_u64(), stats["nf_bad_frames"].as_u64()), (Some(0), Some(0)), "{stats}");

    // Nor does shutting the node down: SIGTERM, no traffic, and it exits by itself, cleanly.
    let mut waiting = NodeProc::start_with("n3", &[], &args);
    assert_eq!(waiting.ok(&["nf", "status"]), "running");
    assert!(waiting.terminate().success());
    assert!(waiting.log_text().contains("node stopped"), "{}", waiting.log_text());
}

/// Runs `cmd` to its end, waiting at most `within` (then kills it and fails): a guard
/// against a hang, not a measurement.
fn output_within(cmd: &mut std::process::Command, within: Duration) -> std::process::Output {
    use std::process::Stdio;
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output().unwrap()));
    rx.recv_timeout(within).unwrap_or_else(|_| {
        let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        panic!("{cmd:?} did not end within {within:?}")
    })
}

/// A node nobody listens for costs the switch one send timeout, not one per packet, and
/// its packets are counted; a bad schedule is refused with the event named.
#[test]
fn the_switch_survives_a_dead_node_and_names_bad_events() {
    // 3000 packets at a 200 ms timeout each would take 10 minutes: the run would not end
    // within the guard below. The count is the switch's own: it logs each time a node
    // fails to take a frame within the timeout (and then is taken for down).
    let out = output_within(
        support::estate()
            .env("RUST_LOG", "warn")
            .args(["traffic", "switch", "--synth", "seed=1,flows=10,packets=3000,share=0"])
            .args(["--node", "A=tcp://127.0.0.1:1", "--send-timeout-ms", "200"]),
        Duration::from_secs(120),
    );
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("node A: sent 0, undeliverable 3000, input not ended"), "{stdout}");
    assert_eq!(stderr.matches("frame not taken within 200ms").count(), 1, "one send timed out: {stderr}");
    assert!(!stderr.contains("takes frames again"), "{stderr}");

    for (at, needle) in [
        ("10:move:2:A:B", "fraction \"2\""),
        ("10:move:0.5:A:C", "no node named \"C\""),
        ("ten:drain:B:A", "\"ten\" is not a packet count"),
    ] {
        let out = support::estate()
            .args(["traffic", "switch", "--synth", "packets=10", "--node", "A=tcp://127.0.0.1:1"])
            .args(["--node", "B=tcp://127.0.0.1:1", "--at", at])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains(&format!("{at:?}")) && stderr.contains(needle), "{at}: {stderr}");
    }
}

/// The operator's way: the switch runs a paced stream and takes the scale-out and the
/// scale-in on command (`estate traffic command`), when the test decides; every flow's
/// counter stays whole, and bad commands are refused with a reason.
#[test]
fn flows_move_on_command_while_the_stream_runs() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let (a, b) = ids_pair("take");
    let flows_out = temp("command.json");
    let node = |n: &NodeProc, endpoint: &str| format!("{}={endpoint}", n.id);
    let mut switch = support::estate()
        .args(["traffic", "switch", "--synth", STREAM, "--rate", "1000", "--commands", "tcp://127.0.0.1:*"])
        .args(["--node", &node(&a, a.steer.as_ref().unwrap()), "--node", &node(&b, b.steer.as_ref().unwrap())])
        .args(["--node-control", &node(&a, &a.control), "--node-control", &node(&b, &b.control)])
        .args(["--flows-out", flows_out.to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(switch.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let endpoint = first.trim().strip_prefix("switch commands=").unwrap_or_else(|| panic!("{first:?}")).to_string();
    let command = |step: &[&str]| {
        support::estate().args(["traffic", "command", "--switch", &endpoint]).args(step).output().unwrap()
    };

    a.wait_stat("nf_packets", 1000);
    let out = command(&["move", "0.5", "A", "B"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && said.contains("move 0.5 A B after") && said.contains(": 20 flows"), "{out:?}");
    let refused = command(&["move", "0.5", "A", "Z"]);
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("no node"), "{refused:?}");
    let typo = command(&["mvoe", "0.5", "A", "B"]);
    assert!(!typo.status.success() && String::from_utf8_lossy(&typo.stderr).contains("unknown action"), "{typo:?}");
    b.wait_stat("nf_packets", 500);
    let out = command(&["drain", "B", "A"]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains(": 20 flows"), "{out:?}");

    let status = switch.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(status.success(), "{rest}");
    assert!(rest.contains("moves 2, undeliverable 0"), "{rest}");
    let summary: Json = serde_json::from_str(&std::fs::read_to_string(&flows_out).unwrap()).unwrap();
    let _ = std::fs::remove_file(&flows_out);
    wait_status(&b, "finished");
    wait_status(&a, "finished");
    let flows = flows_of(&summary);
    assert_eq!(flows.values().map(|f| f.packets).sum::<u64>(), PACKETS);
    assert_eq!(sum(&a, "flow:.*:packets"), PACKETS);
    let items = flow_packets(&a);
    for (key, flow) in &flows {
        assert_eq!(items[key], BTreeMap::from([(flow.holder.clone(), flow.packets)]), "{key}");
    }
    assert!(b.stats()["nf_flows_adopted"].as_u64().unwrap() > 0);
}
