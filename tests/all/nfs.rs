//! The firewall, NAT and rate limiter NFs (`nfs-wasm/{firewall,nat,ratelimit}`) in real
//! `estate node` processes over the synthetic packet source. Expected verdicts come from
//! small models of each NF run over the same deterministic packet stream.
//!
//! In the synthetic stream clients are `10.0.x.y` and servers `192.168.0.x`; a packet
//! goes either way, so a flow's first packet may come from the server.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};

use estate::nf::input::synth::{OwnedPacket, SynthConfig, synthetic};
use serde_json::Value as Json;
use support::{NodeProc, guest_path};

/// Writes an NF configuration to a temp file; returns its path.
fn config_file(name: &str, text: &str) -> String {
    let path = std::env::temp_dir().join(format!("estate-nfs-{}-{name}.conf", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// The packets `--input synth:<spec>` feeds a node.
fn stream(spec: &str) -> Vec<OwnedPacket> {
    synthetic(&spec.parse::<SynthConfig>().unwrap()).collect()
}

/// Waits (bounded) until the NF has decided `packets` packets (`nf_packets` counts a
/// packet once its verdict is counted); returns the counters.
fn wait_decided(node: &NodeProc, packets: u64) -> Json {
    let stats = node.wait_stat("nf_packets", packets);
    let decided = stat(&stats, "nf_forwarded") + stat(&stats, "nf_dropped");
    assert_eq!(decided, packets, "{}: {stats}", node.id);
    stats
}

/// `(key, origin) → integer value` of every item matching `pattern` in the cluster,
/// checking that every member answered.
fn items(node: &NodeProc, pattern: &str) -> BTreeMap<(String, String), i64> {
    let answer = node.global(pattern, "list", &[]);
    assert_eq!(answer["missing"], Json::Array(vec![]), "{answer}");
    let list = answer["result"].as_array().cloned().unwrap_or_default();
    list.iter()
        .map(|i| {
            let key = i["key"].as_str().unwrap().to_string();
            ((key, i["origin"].as_str().unwrap().to_string()), i["value"].as_i64().unwrap())
        })
        .collect()
}

fn stat(stats: &Json, name: &str) -> u64 {
    stats[name].as_u64().unwrap_or_else(|| panic!("no {name} in {stats}"))
}

// --- firewall -------------------------------------------------------------------------

const FIREWALL_CONFIG: &str = "# the synthetic clients\ninside = 10.0.0.0/8\n";

fn inside(ip: [u8; 4]) -> bool {
    ip[0] == 10
}

/// The firewall's rule over `packets`, starting from the conntrack entries `ct` (flow →
/// packets its inside end sent).
#[derive(Debug, Default)]
struct FirewallModel {
    ct: BTreeMap<String, i64>,
    passed: u64,
    dropped: u64,
    /// Packets from outside that passed (return traffic).
    returned: u64,
    /// Flows whose first packet here came from outside.
    outside_first: BTreeSet<String>,
}

impl FirewallModel {
    fn run(packets: &[OwnedPacket], ct: BTreeMap<String, i64>) -> FirewallModel {
        let mut m = FirewallModel { ct, ..FirewallModel::default() };
        let mut seen = BTreeSet::new();
        for p in packets {
            if seen.insert(p.flow.clone()) && !inside(p.src.0) {
                m.outside_first.insert(p.flow.clone());
            }
            if inside(p.src.0) {
                *m.ct.entry(p.flow.clone()).or_default() += 1;
                m.passed += 1;
            } else if m.ct.contains_key(&p.flow) {
                m.passed += 1;
                m.returned += 1;
            } else {
                m.dropped += 1;
            }
        }
        m
    }
}

/// `flow → conntrack value` as `node` holds them.
fn conntrack(node: &NodeProc) -> BTreeMap<String, i64> {
    items(node, "flow:.*:ct")
        .into_iter()
        .filter(|((_, origin), _)| *origin == node.id)
        .map(|((key, _), v)| (key.strip_prefix("flow:").unwrap().strip_suffix(":ct").unwrap().to_string(), v))
        .collect()
}

#[test]
fn firewall_drops_outside_first_flows_and_passes_return_traffic() {
    let spec = "seed=21,flows=30,packets=3000,share=0";
    let model = FirewallModel::run(&stream(spec), BTreeMap::new());
    assert!(!model.outside_first.is_empty() && model.returned > 0, "the stream must exercise both cases");

    // The same verdicts with an idle timeout no flow reaches within the run; then the
    // time of each flow's last forwarded packet is kept too.
    for (name, timeout) in [("fw", ""), ("fw-idle", "idle_timeout_ms = 600000\n")] {
        let config = config_file(name, &format!("{FIREWALL_CONFIG}{timeout}"));
        let input = format!("synth:{spec}");
        let node = NodeProc::start_with(
            "n1",
            &[],
            &["--nf", &guest_path("nf_firewall"), "--nf-config", &config, "--input", &input],
        );
        let stats = wait_decided(&node, 3000);
        assert_eq!(stat(&stats, "nf_faults"), 0, "{stats}");
        let verdicts = (stat(&stats, "nf_forwarded"), stat(&stats, "nf_dropped"));
        assert_eq!(verdicts, (model.passed, model.dropped), "{name}: {stats}");
        // The NF's own counters agree with the node's.
        assert_eq!(node.counter("fw:passed"), model.passed as i64);
        assert_eq!(node.counter("fw:dropped"), model.dropped as i64);
        assert_eq!(node.counter("fw:opened"), model.ct.len() as i64);
        // One entry per flow an inside host spoke on, counting its inside packets.
        assert_eq!(conntrack(&node), model.ct);
        let seen = node.ok(&["global", "flow:.*:seen", "--reduce", "count"]);
        let expect = if timeout.is_empty() { 0 } else { model.ct.len() };
        assert_eq!(seen, expect.to_string(), "{name}");
    }
}

/// Node A runs the firewall over 60 flows; node B joins, and flows 30..60 move to it
/// (every packet B gets is marked moved). With `take` B has A's conntrack entries before
/// each moved flow's first packet, so the servers' packets pass even before the client
/// speaks at B; in the baseline (`off`) they are dropped until it does.
#[test]
fn firewall_scale_out_return_traffic_passes_at_the_new_node_only_with_moved_state() {
    let a_spec = "seed=1,flows=60,packets=6000,share=0";
    let b_spec = "seed=2,first=30,flows=30,packets=1500,share=0,moved=1";
    let a_model = FirewallModel::run(&stream(a_spec), BTreeMap::new());
    let b_stream = stream(b_spec);
    let b_flows: BTreeSet<String> = b_stream.iter().map(|p| p.flow.clone()).collect();
    let brought: BTreeMap<String, i64> =
        a_model.ct.iter().filter(|(f, _)| b_flows.contains(*f)).map(|(f, n)| (f.clone(), *n)).collect();
    let with_state = FirewallModel::run(&b_stream, brought.clone());
    let baseline = FirewallModel::run(&b_stream, BTreeMap::new());
    assert!(!brought.is_empty() && baseline.dropped > with_state.dropped, "the streams must show the difference");

    let config = config_file("fw-scale", FIREWALL_CONFIG);
    let fw = guest_path("nf_firewall");
    let run = |mode: &str| {
        let a_input = format!("synth:{a_spec}");
        let a = NodeProc::start_with("a", &[], &["--nf", &fw, "--nf-config", &config, "--input", &a_input]);
        let a_stats = wait_decided(&a, 6000);
        assert_eq!(stat(&a_stats, "nf_dropped"), a_model.dropped, "{a_stats}");
        let b_input = format!("synth:{b_spec}");
        let args = ["--nf", &fw, "--nf-config", &config, "--input", &b_input, "--flow-state", mode];
        let b = NodeProc::start_with("b", &[&a.listen], &args);
        let b_stats = wait_decided(&b, 1500);
        (a, b, b_stats)
    };

    let (a, b, stats) = run("take");
    assert_eq!(stat(&stats, "nf_flows_adopted"), b_flows.len() as u64, "{stats}");
    assert_eq!((stat(&stats, "nf_forwarded"), stat(&stats, "nf_dropped")), (with_state.passed, with_state.dropped));
    // The entries moved: B continues A's counts, A has none of them left.
    let b_ct = conntrack(&b);
    assert_eq!(b_ct, with_state.ct);
    for flow in brought.keys() {
        assert!(b_ct[flow] >= brought[flow]);
        assert!(!a.cli(&["get", &format!("flow:{flow}:ct")]).status.success(), "{flow} is still on a");
    }
    drop((a, b));

    let (a, b, stats) = run("off");
    assert_eq!(stat(&stats, "nf_flows_adopted"), 0, "{stats}");
    assert_eq!((stat(&stats, "nf_forwarded"), stat(&stats, "nf_dropped")), (baseline.passed, baseline.dropped));
    assert_eq!(conntrack(&b), baseline.ct);
    assert_eq!(a.counter("fw:opened"), a_model.ct.len() as i64);
}

// --- NAT ------------------------------------------------------------------------------

const NAT_LO: i64 = 20000;
const NAT_BLOCK: i64 = 32;

/// The block a NAT port belongs to, as `nat:block:<b>`.
fn nat_block_key(port: i64) -> String {
    format!("nat:block:{}", (port - NAT_LO) / NAT_BLOCK)
}

/// Three NAT instances, started together in a formed cluster, over the same stream (so
/// each one's first flow is the same key and all three race for the same first block):
/// every mapping in the cluster has a port of its own, from a block that only its own
/// node claimed.
#[test]
fn nat_instances_running_together_never_share_a_port_or_a_block() {
    let spec = "seed=31,flows=150,packets=1500,share=0";
    let flows: BTreeSet<String> = stream(spec).into_iter().map(|p| p.flow).collect();
    let input = format!("synth:{spec}");
    let config = config_file("nat", &format!("ports = {NAT_LO}-20999\nblock = {NAT_BLOCK}\n"));
    // The input is held until the NF is loaded, so every node knows the others before
    // its first claim.
    let n1 = NodeProc::start_with("n1", &[], &["--input", &input]);
    let n2 = NodeProc::start_with("n2", &[&n1.listen], &["--input", &input]);
    let n3 = NodeProc::start_with("n3", &[&n1.listen], &["--input", &input]);
    let nodes = [n1, n2, n3];
    for node in &nodes {
        node.wait_members(&["n1", "n2", "n3"]);
    }
    let nat = guest_path("nf_nat");
    std::thread::scope(|s| {
        for node in &nodes {
            s.spawn(|| assert_eq!(node.ok(&["nf", "load", &nat, "--config", &config]), "started"));
        }
    });
    let stats: Vec<Json> = nodes.iter().map(|n| wait_decided(n, 1500)).collect();

    let mappings = items(&nodes[0], "flow:.*:nat");
    let claims = items(&nodes[0], "nat:block:.*");
    // No block claimed by two nodes.
    let mut holder: BTreeMap<&str, &str> = BTreeMap::new();
    for (key, origin) in claims.keys() {
        if let Some(other) = holder.insert(key, origin) {
            panic!("{key} claimed by {other} and {origin}");
        }
    }
    // No port given twice, and every port from a block its node holds.
    let mut owner: BTreeMap<i64, (&str, &str)> = BTreeMap::new();
    for ((key, origin), port) in &mappings {
        assert!((NAT_LO..=20999).contains(port), "{key} = {port}");
        if let Some(first) = owner.insert(*port, (key, origin)) {
            panic!("port {port} given to {first:?} and to {key} on {origin}");
        }
        assert_eq!(holder.get(nat_block_key(*port).as_str()), Some(&origin.as_str()), "{key} = {port} on {origin}");
    }
    let mut contested = 0;
    for (node, stats) in nodes.iter().zip(&stats) {
        assert_eq!(stat(stats, "nf_faults"), 0, "{stats}");
        let mapped: BTreeSet<&str> = mappings
            .keys()
            .filter(|(_, origin)| *origin == node.id)
            .map(|(key, _)| key.strip_prefix("flow:").unwrap().strip_suffix(":nat").unwrap())
            .collect();
        assert!(mapped.iter().all(|f| flows.contains(*f)));
        assert_eq!(node.counter("nat:allocated"), mapped.len() as i64, "{}", node.id);
        // Drops only for lack of a port, and few: most flows got one.
        assert_eq!(node.counter("nat:exhausted"), stat(stats, "nf_dropped") as i64, "{}", node.id);
        assert!(mapped.len() * 10 >= flows.len() * 9, "{}: {} of {} flows mapped", node.id, mapped.len(), flows.len());
        contested += node.counter("nat:conflicts") + node.counter("nat:claim_errors");
    }
    // All three tried the same block first and at most one got it.
    assert!(contested >= 2, "only {contested} contested claims");
}

/// A range of 10 ports: the first 10 flows get them, the packets of every later flow
/// are dropped and counted.
#[test]
fn nat_drops_and_counts_the_flows_a_used_up_range_cannot_map() {
    let spec = "seed=32,flows=20,packets=400,share=0";
    let packets = stream(spec);
    let mut order: Vec<String> = Vec::new();
    for p in &packets {
        if !order.contains(&p.flow) {
            order.push(p.flow.clone());
        }
    }
    let mapped: BTreeSet<&String> = order.iter().take(10).collect();
    let dropped = packets.iter().filter(|p| !mapped.contains(&p.flow)).count() as u64;
    assert!(order.len() > 10 && dropped > 0);

    let config = config_file("nat-small", "ports = 30000-30009\nblock = 4\n");
    let input = format!("synth:{spec}");
    let node =
        NodeProc::start_with("n1", &[], &["--nf", &guest_path("nf_nat"), "--nf-config", &config, "--input", &input]);
    let stats = wait_decided(&node, 400);
    assert_eq!(stat(&stats, "nf_dropped"), dropped, "{stats}");
    assert_eq!(node.counter("nat:exhausted"), dropped as i64);
    assert_eq!(node.counter("nat:allocated"), 10);
    let mappings = items(&node, "flow:.*:nat");
    let keys: BTreeSet<String> = mappings.keys().map(|(k, _)| k.clone()).collect();
    assert_eq!(keys, mapped.iter().map(|f| format!("flow:{f}:nat")).collect());
    let ports: BTreeSet<i64> = mappings.values().copied().collect();
    assert_eq!(ports, (30000..=30009).collect());
    assert_eq!(items(&node, "nat:block:.*").len(), 3);
}

/// Flows that move to a new node keep their ports there (the mapping moves with the
/// flow's keys) and the new node allocates nothing; without state sharing the new node
/// cannot claim a block and maps nothing.
#[test]
fn nat_moved_flows_keep_their_ports() {
    let a_spec = "seed=1,flows=20,packets=3000,share=0";
    let b_spec = "seed=2,first=10,flows=10,packets=1500,share=0,moved=1";
    let b_flows: BTreeSet<String> = stream(b_spec).into_iter().map(|p| p.flow).collect();
    let config = config_file("nat-move", "ports = 40000-40999\nblock = 16\n");
    let nat = guest_path("nf_nat");
    let run = |mode: &str| {
        let a_input = format!("synth:{a_spec}");
        let a = NodeProc::start_with("a", &[], &["--nf", &nat, "--nf-config", &config, "--input", &a_input]);
        assert_eq!(stat(&wait_decided(&a, 3000), "nf_dropped"), 0);
        let before = items(&a, "flow:.*:nat");
        let b_input = format!("synth:{b_spec}");
        let args = ["--nf", &nat, "--nf-config", &config, "--input", &b_input, "--flow-state", mode];
        let b = NodeProc::start_with("b", &[&a.listen], &args);
        let stats = wait_decided(&b, 1500);
        (a, b, before, stats)
    };

    let (a, b, before, stats) = run("take");
    assert_eq!(stat(&stats, "nf_dropped"), 0, "{stats}");
    assert_eq!(b.counter("nat:allocated"), 0);
    assert!(items(&b, "nat:block:.*").keys().all(|(_, origin)| origin == "a"), "b claimed no block");
    let after = items(&b, "flow:.*:nat");
    for flow in &b_flows {
        let key = format!("flow:{flow}:nat");
        let port = before[&(key.clone(), "a".to_string())];
        assert_eq!(after.get(&(key.clone(), "b".to_string())), Some(&port), "{flow}");
        assert!(!after.contains_key(&(key, "a".to_string())), "{flow} was taken from a");
    }
    drop((a, b));

    let (_a, b, _, stats) = run("off");
    assert_eq!(stat(&stats, "nf_forwarded"), 0, "{stats}");
    assert_eq!(b.counter("nat:exhausted"), 1500);
    assert!(b.counter("nat:claim_errors") >= 1);
}

// --- rate limiter ---------------------------------------------------------------------

/// With a rate that refills nothing within the test, each source passes exactly its
/// first `burst` packets.
fn passes_per_source(packets: &[OwnedPacket], burst: u64, exhausted: &BTreeSet<[u8; 4]>) -> u64 {
    let mut sent: BTreeMap<[u8; 4], u64> = BTreeMap::new();
    for p in packets {
        *sent.entry(p.src.0).or_default() += 1;
    }
    sent.iter().filter(|(ip, _)| !exhausted.contains(*ip)).map(|(_, n)| (*n).min(burst)).sum()
}

fn sources(packets: &[OwnedPacket]) -> BTreeSet<[u8; 4]> {
    packets.iter().map(|p| p.src.0).collect()
}

fn bucket_key(ip: [u8; 4]) -> String {
    format!("rl:bucket:{}.{}.{}.{}", ip[0], ip[1], ip[2], ip[3])
}

#[test]
fn ratelimit_drops_with_a_low_rate_and_none_with_a_huge_rate() {
    let spec = "seed=41,flows=20,packets=2000,share=0";
    let packets = stream(spec);
    let input = format!("synth:{spec}");
    let rl = guest_path("nf_ratelimit");

    // One token per 1000 s: nothing refills during the test.
    let config = config_file("rl-low", "rate = 0.001\nburst = 3\n");
    let node = NodeProc::start_with("n1", &[], &["--nf", &rl, "--nf-config", &config, "--input", &input]);
    let stats = wait_decided(&node, 2000);
    let expected = passes_per_source(&packets, 3, &BTreeSet::new());
    assert_eq!(stat(&stats, "nf_forwarded"), expected, "{stats}");
    assert_eq!(stat(&stats, "nf_dropped"), 2000 - expected);
    assert_eq!(node.counter("rl:passed"), expected as i64);
    assert_eq!(node.counter("rl:dropped"), 2000 - expected as i64);
    let buckets = node.global("rl:bucket:.*", "count", &[]);
    assert_eq!(buckets["result"], sources(&packets).len(), "{buckets}");
    drop(node);

    let config = config_file("rl-high", "rate = 1000000\nburst = 1000000\n");
    let node = NodeProc::start_with("n1", &[], &["--nf", &rl, "--nf-config", &config, "--input", &input]);
    let stats = wait_decided(&node, 2000);
    assert_eq!((stat(&stats, "nf_forwarded"), stat(&stats, "nf_dropped")), (2000, 0), "{stats}");
    assert_eq!(node.counter("rl:passed"), 2000);
}

/// Node A drains the buckets of every source; flows 10..20 then move to node B. With
/// state sharing B takes the buckets of each moved flow's endpoints before the flow's
/// first packet and drops everything (the sources have no tokens left anywhere); in the
/// baseline B starts with full buckets.
#[test]
fn ratelimit_buckets_follow_moved_flows_only_with_state_sharing() {
    let a_spec = "seed=1,flows=20,packets=3000,share=0";
    let b_spec = "seed=2,first=10,flows=10,packets=1500,share=0,moved=1";
    let (a_packets, b_packets) = (stream(a_spec), stream(b_spec));
    let a_sources = sources(&a_packets);
    let endpoints: BTreeSet<[u8; 4]> = b_packets.iter().flat_map(|p| [p.src.0, p.dst.0]).collect();
    let taken: BTreeSet<[u8; 4]> = a_sources.intersection(&endpoints).copied().collect();
    let with_state = passes_per_source(&b_packets, 3, &taken);
    let baseline = passes_per_source(&b_packets, 3, &BTreeSet::new());
    assert!(baseline > with_state, "the streams must show the difference");

    let config = config_file("rl-move", "rate = 0.001\nburst = 3\n");
    let rl = guest_path("nf_ratelimit");
    let run = |mode: &str| {
        let a_input = format!("synth:{a_spec}");
        let a = NodeProc::start_with("a", &[], &["--nf", &rl, "--nf-config", &config, "--input", &a_input]);
        let a_stats = wait_decided(&a, 3000);
        assert_eq!(stat(&a_stats, "nf_forwarded"), passes_per_source(&a_packets, 3, &BTreeSet::new()));
        let b_input = format!("synth:{b_spec}");
        let args = ["--nf", &rl, "--nf-config", &config, "--input", &b_input, "--flow-state", mode];
        let b = NodeProc::start_with("b", &[&a.listen], &args);
        let stats = wait_decided(&b, 1500);
        (a, b, stats)
    };

    let (a, b, stats) = run("take");
    assert_eq!(stat(&stats, "nf_faults"), 0, "{stats}");
    assert_eq!(stat(&stats, "nf_forwarded"), with_state, "{stats}");
    assert_eq!(b.counter("rl:taken"), taken.len() as i64);
    assert_eq!(b.counter("rl:take_errors"), 0);
    for ip in &taken {
        assert!(!a.cli(&["get", &bucket_key(*ip)]).status.success(), "{ip:?}'s bucket is still on a");
        assert!(b.cli(&["get", &bucket_key(*ip)]).status.success(), "{ip:?}'s bucket is not on b");
    }
    drop((a, b));

    let (a, b, stats) = run("off");
    assert_eq!(stat(&stats, "nf_forwarded"), baseline, "{stats}");
    assert_eq!(b.counter("rl:taken"), 0);
    for ip in &taken {
        assert!(a.cli(&["get", &bucket_key(*ip)]).status.success(), "{ip:?}'s bucket left a in the baseline");
    }
}
