//! NF guests running in real `estate node` processes over the synthetic packet source:
//! state written through host calls, read back globally, and hostile NF guests that get
//! the fail policy while the node keeps serving.

use crate::support;

use std::path::PathBuf;

use support::{NodeProc, guest_path};

/// Writes a WAT NF whose `estate_on_packet` body is `body` to a temp file.
fn wat_nf(name: &str, body: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("estate-nf-{}-{name}.wat", std::process::id()));
    let text = format!(
        r#"(module
            (memory (export "memory") 1)
            (func (export "estate_abi_version") (result i32) i32.const 3)
            (func (export "estate_alloc") (param i32) (result i32) i32.const 1024)
            (func (export "estate_nf_init") (param i32 i32) (result i32) i32.const 0)
            (func (export "estate_on_packet") (param i32 i32) (result i32) {body}))"#
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn count_nf_runs_over_synthetic_traffic() {
    let nf = guest_path("nf_count");
    let input = "synth:seed=3,flows=20,packets=2000,share=0";
    let node = NodeProc::start_with("n1", &[], &["--nf", &nf, "--input", input]);
    let stats = node.wait_stat("nf_packets", 2000);
    assert_eq!(stats["nf_forwarded"], 2000, "{stats}");
    assert_eq!(stats["nf_faults"], 0, "{stats}");
    assert_eq!(node.ok(&["get", "count:packets"]), "2000");
    // Per-flow counters written by the guest add up to the total.
    assert_eq!(node.ok(&["global", "flow:.*:packets", "--reduce", "sum"]), "2000");
    assert_eq!(node.ok(&["global", "flow:.*:packets", "--reduce", "count"]), "20");
}

#[test]
fn nf_configuration_is_read_and_errors_stop_the_node_clearly() {
    let nf = guest_path("nf_count");
    let config = std::env::temp_dir().join(format!("estate-nf-{}-count.conf", std::process::id()));
    std::fs::write(&config, "max_payload = 100\n").unwrap();
    let node = NodeProc::start_with(
        "n1",
        &[],
        &["--nf", &nf, "--nf-config", config.to_str().unwrap(), "--input", "synth:seed=5,packets=500,share=0"],
    );
    let stats = node.wait_stat("nf_packets", 500);
    let (fwd, drop) = (stats["nf_forwarded"].as_u64().unwrap(), stats["nf_dropped"].as_u64().unwrap());
    assert_eq!(fwd + drop, 500);
    assert!(drop > 0 && fwd > 0, "payloads of 16..512 bytes, limit 100: {stats}");
    assert_eq!(node.ok(&["get", "count:dropped"]), drop.to_string());

    std::fs::write(&config, "max_payload = lots\n").unwrap();
    let out = support::estate()
        .args(["node", "--id", "n2", "--listen", "tcp://127.0.0.1:*", "--nf", &nf])
        .args(["--nf-config", config.to_str().unwrap(), "--input", "synth:packets=1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_payload"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// An NF taking batches whose `estate_on_packets` forwards the first three packets of
/// each batch and traps on the fourth.
fn batch_trap_nf() -> PathBuf {
    let path = std::env::temp_dir().join(format!("estate-nf-{}-batch-trap.wat", std::process::id()));
    let text = r#"(module
            (memory (export "memory") 2)
            (func (export "estate_abi_version") (result i32) i32.const 3)
            (func (export "estate_alloc") (param i32) (result i32) i32.const 1024)
            (func (export "estate_packet_buffer") (param i32) (result i32) i32.const 8192)
            (func (export "estate_nf_init") (param i32 i32) (result i32) i32.const 0)
            (func (export "estate_on_packet") (param i32 i32) (result i32) unreachable)
            (func (export "estate_on_packets") (param $ptr i32) (param $len i32) (param $count i32) (result i32)
                (local $i i32)
                (block $done (loop $next
                    (br_if $done (i32.ge_u (local.get $i) (local.get $count)))
                    (if (i32.eq (local.get $i) (i32.const 3)) (then unreachable))
                    (i32.store8 (i32.add (local.get $ptr) (local.get $i)) (i32.const 0))
                    (local.set $i (i32.add (local.get $i) (i32.const 1)))
                    (br $next)))
                i32.const 0))"#;
    std::fs::write(&path, text).unwrap();
    path
}

/// A fault in the middle of a batch costs the fail policy to the one packet it was on:
/// the packets decided before it keep their verdicts, the ones after it go to the
/// rebuilt instance.
#[test]
fn a_fault_in_a_batch_gets_the_fail_policy_for_its_packet_only() {
    let nf = batch_trap_nf();
    let args = ["--nf", nf.to_str().unwrap(), "--input", "synth:packets=40,share=0", "--fail", "closed"];
    let node = NodeProc::start_with("n1", &[], &args);
    let stats = node.wait_stat("nf_packets", 40);
    // A source that never waits fills batches of 32, then 8. Each call decides three
    // packets and faults on the fourth; the rest of its batch is the next call's:
    // 32 = 8 × (3 + 1), 8 = 2 × (3 + 1).
    assert_eq!(stats["nf_faults"], 10, "{stats}");
    assert_eq!(stats["nf_forwarded"], 30, "{stats}");
    assert_eq!(stats["nf_dropped"], 10, "{stats}");
    assert!(stats["nf_restarts"].as_u64() >= Some(10), "{stats}");
}

#[test]
fn hostile_nf_guests_get_the_fail_policy_and_the_node_keeps_serving() {
    let cases = [
        ("loop", "(loop (br 0)) i32.const 0", "closed"),
        ("bomb", "(drop (memory.grow (i32.const 60000))) i32.const 0", "open"),
        ("trap", "unreachable", "closed"),
    ];
    for (name, body, policy) in cases {
        let nf = wat_nf(name, body);
        let node = NodeProc::start_with(
            "n1",
            &[],
            &[
                "--nf",
                nf.to_str().unwrap(),
                "--input",
                "synth:packets=20,share=0",
                "--fail",
                policy,
                "--reducer-fuel",
                "2000000",
            ],
        );
        node.ok(&["set", "c", "7"]);
        let stats = node.wait_stat("nf_packets", 20);
        assert_eq!(stats["nf_faults"], 20, "{name}: {stats}");
        let (expect_fwd, expect_drop) = if policy == "open" { (20, 0) } else { (0, 20) };
        assert_eq!(stats["nf_forwarded"], expect_fwd, "{name}: {stats}");
        assert_eq!(stats["nf_dropped"], expect_drop, "{name}: {stats}");
        assert!(stats["nf_restarts"].as_u64() >= Some(1), "{name}: {stats}");
        assert_eq!(node.ok(&["global", "c", "--reduce", "sum"]), "7", "{name}");
        assert!(node.log_text().contains("NF fault"), "{name}");
    }
}

/// `flow:<key>:matches` → value, as one node holds them.
fn flow_matches(node: &NodeProc) -> std::collections::BTreeMap<String, i64> {
    node.held_ints("flow:.*:matches")
}

fn int(node: &NodeProc, key: &str) -> i64 {
    node.ok(&["get", key]).parse().unwrap()
}

/// Node A runs ids over 20 flows; node B joins, and flows 10..20 move to it (every
/// packet B gets is marked moved). With `take`, B's per-flow counters continue from A's
/// and A gives its copies up; with `off` (baseline) they restart at 0. One test, both
/// runs, the same traffic.
#[test]
fn scale_out_moved_flows_continue_from_the_old_node() {
    let ids = guest_path("nf_ids");
    let config = std::env::temp_dir().join(format!("estate-nf-{}-ids.conf", std::process::id()));
    std::fs::write(&config, "pattern = attack\npattern = evil\nthreshold = 1000000\n").unwrap();
    let config = config.to_str().unwrap().to_string();
    let a_input = "synth:seed=1,flows=20,packets=3000,share=0.3";
    let b_input = "synth:seed=2,first=10,flows=10,packets=1500,share=0.3,moved=1";

    let run = |mode: &str| {
        let a = NodeProc::start_with("a", &[], &["--nf", &ids, "--nf-config", &config, "--input", a_input]);
        a.wait_stat("nf_packets", 3000);
        let a_before = flow_matches(&a);
        let b = NodeProc::start_with(
            "b",
            &[&a.listen],
            &["--nf", &ids, "--nf-config", &config, "--input", b_input, "--flow-state", mode],
        );
        let stats = b.wait_stat("nf_packets", 1500);
        (a, b, a_before, stats)
    };

    let (a, b, a_before, stats) = run("take");
    assert_eq!(stats["nf_flows_adopted"], 10, "{stats}");
    let b_after = flow_matches(&b);
    let moved: Vec<&String> = b_after.keys().collect();
    assert_eq!(moved.len(), 10, "{b_after:?}");
    for key in &moved {
        assert!(b_after[*key] >= a_before[*key], "{key}: {} < {}", b_after[*key], a_before[*key]);
        assert!(!a.cli(&["get", key]).status.success(), "{key} was taken from a");
    }
    // Nothing counted twice, nothing lost: the flows' counters add up to every match
    // either node found.
    let total: i64 = a.ok(&["global", "flow:.*:matches", "--reduce", "sum"]).parse().unwrap();
    assert_eq!(total, int(&a, "ids:matches") + int(&b, "ids:matches"));
    drop((a, b));

    let (a, b, a_before_baseline, stats) = run("off");
    assert_eq!(a_before_baseline, a_before, "the same traffic");
    assert_eq!(stats["nf_flows_adopted"], 0, "{stats}");
    let b_baseline = flow_matches(&b);
    for key in &moved {
        // Baseline: B counts only its own matches, which are exactly what it added on
        // top of A's values with estate.
        assert_eq!(b_baseline[*key] + a_before[*key], b_after[*key], "{key}");
        assert!(a.cli(&["get", key]).status.success(), "{key} stays on a in baseline");
    }
    assert!(moved.iter().any(|k| a_before[*k] > 0));
}

/// An NF hot-loaded onto a node's held input, replaced by another NF while packets
/// flow (the state stays), a bad replacement refused without disturbing the running
/// one, then unloaded.
#[test]
fn nf_load_replace_unload_while_packets_flow() {
    let node = NodeProc::start_with("n1", &[], &["--input", "synth:seed=4,flows=10,packets=400000,share=0.3"]);
    assert_eq!(node.ok(&["nf", "status"]), "waiting");
    // Nothing runs yet: there is nothing to replace.
    let out = node.cli(&["nf", "replace", &guest_path("nf_count")]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no NF is running"));
    assert_eq!(node.ok(&["nf", "status"]), "waiting");
    assert_eq!(node.ok(&["nf", "load", &guest_path("nf_count")]), "started");
    node.wait_stat("nf_packets", 1000);
    assert_eq!(node.ok(&["nf", "status"]), "running");

    let config = std::env::temp_dir().join(format!("estate-nf-{}-hot-ids.conf", std::process::id()));
    std::fs::write(&config, "pattern = attack\npattern = evil\n").unwrap();
    assert_eq!(node.ok(&["nf", "replace", &guest_path("nf_ids"), "--config", config.to_str().unwrap()]), "replaced");
    node.wait_stat("nf_replacements", 1);
    let counted: i64 = node.ok(&["get", "count:packets"]).parse().unwrap();
    assert!(counted >= 1000);
    // ids now sees the packets; count's state is still there and no longer grows.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !node.cli(&["get", "ids:packets"]).status.success() {
        assert!(std::time::Instant::now() < deadline, "ids never ran");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let later: i64 = node.ok(&["get", "count:packets"]).parse().unwrap();
    assert_eq!(later, counted, "the old NF stopped at the switch");

    // A bad module is refused and the running NF carries on.
    let garbage = std::env::temp_dir().join(format!("estate-nf-{}-garbage.wasm", std::process::id()));
    std::fs::write(&garbage, b"\0asm garbage").unwrap();
    let out = node.cli(&["nf", "replace", garbage.to_str().unwrap()]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("invalid guest module"));
    let before = node.stats()["nf_packets"].as_u64().unwrap();
    node.wait_stat("nf_packets", before + 100);
    assert_eq!(node.stats()["nf_replacements"], 1);

    assert_eq!(node.ok(&["nf", "unload"]), "unloaded");
    assert_eq!(node.ok(&["nf", "status"]), "none");
    let stopped = node.stats()["nf_packets"].as_u64().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(node.stats()["nf_packets"].as_u64().unwrap(), stopped);
    assert!(stopped < 400_000);
}

/// The ids alert of a flow whose matches cross the threshold only when the counts from
/// before the move (node A) and after it (node B) are added: with estate (take) B
/// fires it; in baseline (no state sharing) nobody does. The threshold is computed from
/// the traffic itself, with the same matcher as the NF.
#[test]
fn an_alert_needing_counts_from_both_sides_of_a_move_fires_only_with_estate() {
    use estate::nf::input::synth::{SynthConfig, synthetic};
    use std::collections::BTreeMap;

    let ids_config = |threshold: i64| format!("pattern = attack\npattern = evil\nthreshold = {threshold}\n");
    let matcher = nf_ids::Ids::from_config(&ids_config(1)).unwrap();
    let a_spec = "seed=11,flows=20,packets=3000,share=0.3";
    let b_spec = "seed=12,first=10,flows=10,packets=1500,share=0.3,moved=1";
    let per_flow = |spec: &str| {
        let mut counts: BTreeMap<String, i64> = BTreeMap::new();
        for p in synthetic(&spec.parse::<SynthConfig>().unwrap()) {
            *counts.entry(p.flow.clone()).or_default() += matcher.count_matches(&p.payload) as i64;
        }
        counts
    };
    let (a_counts, b_counts) = (per_flow(a_spec), per_flow(b_spec));
    // Above what any moved flow reaches on one side alone …
    let threshold = b_counts.keys().map(|f| a_counts[f].max(b_counts[f])).max().unwrap() + 1;
    // … and reached by some moved flow with both sides together.
    let crossing: Vec<&String> = b_counts.keys().filter(|f| a_counts[*f] + b_counts[*f] >= threshold).collect();
    assert!(!crossing.is_empty(), "pick other seeds: no flow crosses {threshold}");

    let config = std::env::temp_dir().join(format!("estate-nf-{}-alert.conf", std::process::id()));
    std::fs::write(&config, ids_config(threshold)).unwrap();
    let (config, ids) = (config.to_str().unwrap().to_string(), guest_path("nf_ids"));
    let alerts_on_b = |mode: &str| {
        let a_input = format!("synth:{a_spec}");
        let args = ["--nf", &ids, "--nf-config", &config, "--input", &a_input, "--flow-state", mode];
        let a = NodeProc::start_with("a", &[], &args);
        a.wait_stat("nf_packets", 3000);
        let b_input = format!("synth:{b_spec}");
        let args = ["--nf", &ids, "--nf-config", &config, "--input", &b_input, "--flow-state", mode];
        let b = NodeProc::start_with("b", &[&a.listen], &args);
        b.wait_stat("nf_packets", 1500);
        // No alert leaves no `ids:alerts` key: that, and only that, counts as 0.
        (b.counter("ids:alerts"), b.log_text())
    };
    let (with_estate, log) = alerts_on_b("take");
    assert_eq!(with_estate, crossing.len() as i64, "threshold {threshold}, crossing {crossing:?}");
    for flow in &crossing {
        assert!(log.contains(&format!("ids alert flow={flow} ")), "{flow} not in the log");
    }
    let (baseline, _) = alerts_on_b("off");
    assert_eq!(baseline, 0, "no alert without state sharing (threshold {threshold})");
}

/// pcap replay: a synthetic stream written by `estate traffic pcap` (moved flows
/// VLAN-tagged) and replayed into a node gives the same counts as the stream itself.
#[test]
fn pcap_replay_feeds_the_nf() {
    let path = std::env::temp_dir().join(format!("estate-nf-{}-replay.pcap", std::process::id()));
    let out = support::estate()
        .args(["traffic", "pcap", "--out", path.to_str().unwrap(), "--synth", "seed=8,flows=12,packets=1200,share=0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("wrote 1200 packets to {}", path.display()));
    let input = format!("pcap:{}", path.display());
    let node = NodeProc::start_with("n1", &[], &["--nf", &guest_path("nf_count"), "--input", &input]);
    node.wait_stat("nf_packets", 1200);
    assert_eq!(node.ok(&["get", "count:packets"]), "1200");
    assert_eq!(node.ok(&["global", "flow:.*:packets", "--reduce", "count"]), "12");
    let out = support::estate()
        .args(["node", "--id", "x", "--listen", "tcp://127.0.0.1:*"])
        .args(["--nf", &guest_path("nf_count"), "--input", "pcap:/nonexistent.pcap"])
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("nonexistent"));
    let _ = std::fs::remove_file(&path);
}
