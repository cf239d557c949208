//! The NF's state backends on the same traffic, against real `redis-server` processes
//! (a central server, a three-node Redis Cluster): the `ids` guest, unchanged, counts
//! the same on each, a moved flow's counters follow it on every shared backend, and
//! restart on `none`.

use std::collections::BTreeMap;

use estate::backend::servers::{RedisCluster, RedisServer};
use estate::backend::{RedisState, StateBackend};

use crate::support::{NodeProc, guest_path};

/// Every integer the NF of instance `node` holds in Redis (`key` → value).
fn redis_counters(backend: &StateBackend, node: &str) -> BTreeMap<String, i64> {
    let state = RedisState::connect(backend, "default", node, Default::default()).unwrap();
    let held = state.held().unwrap();
    held.into_iter()
        .filter_map(|i| match i.value {
            estate_guest::Value::Int(n) => Some((i.key, n)),
            _ => None,
        })
        .collect()
}

/// What one run left: the counters of instance a and of instance b, and b's stats.
struct Run {
    a: BTreeMap<String, i64>,
    b: BTreeMap<String, i64>,
    b_stats: serde_json::Value,
}

/// Instance a runs ids over flows 0..20; then instance b gets flows 10..20, moved
/// from a (its packets are marked moved). With `backend` for both.
fn run(backend: &StateBackend) -> Run {
    let config = std::env::temp_dir().join(format!("estate-backends-{}-ids.conf", std::process::id()));
    std::fs::write(&config, "pattern = attack\npattern = evil\nthreshold = 20\n").unwrap();
    let (config, ids) = (config.to_str().unwrap().to_string(), guest_path("nf_ids"));
    let backend_arg = backend.to_string();
    let nf = |input: &'static str| {
        ["--nf", ids.as_str(), "--nf-config", config.as_str(), "--input", input, "--state-backend", &backend_arg]
    };
    let a = NodeProc::start_with("a", &[], &nf("synth:seed=1,flows=20,packets=3000,share=0.3"));
    a.wait_stat("nf_packets", 3000);
    let b =
        NodeProc::start_with("b", &[&a.listen], &nf("synth:seed=2,first=10,flows=10,packets=1500,share=0.3,moved=1"));
    let b_stats = b.wait_stat("nf_packets", 1500);
    assert_eq!(b_stats["nf_backend_errors"], 0, "{backend}: {b_stats}");
    let (a, b) = match backend {
        StateBackend::Estate | StateBackend::None => (a.held_ints(".*"), b.held_ints(".*")),
        redis => (redis_counters(redis, "a"), redis_counters(redis, "b")),
    };
    Run { a, b, b_stats }
}

fn flows(counters: &BTreeMap<String, i64>) -> BTreeMap<String, i64> {
    counters.iter().filter(|(k, _)| k.starts_with("flow:")).map(|(k, v)| (k.clone(), *v)).collect()
}

#[test]
fn the_same_ids_counts_the_same_on_every_backend_and_moved_flows_follow_on_shared_ones() {
    let estate = run(&StateBackend::Estate);
    let central = RedisServer::start(false).expect("a real redis-server (bash .ci/setup installs it)");
    let centralmem = run(&central.backend());
    let cluster = RedisCluster::start(3).expect("a real Redis Cluster");
    let clustermem = run(&cluster.backend());
    let baseline = run(&StateBackend::None);

    // Totals: every packet and match counted once, whatever holds the counters.
    for key in ["ids:packets", "ids:matches"] {
        let total = |r: &Run| r.a.get(key).copied().unwrap_or(0) + r.b.get(key).copied().unwrap_or(0);
        assert!(total(&estate) > 0, "{key}");
        for (name, other) in [("centralmem", &centralmem), ("clustermem", &clustermem), ("baseline", &baseline)] {
            assert_eq!(total(other), total(&estate), "{name}: {key}");
        }
    }
    assert_eq!(estate.a["ids:packets"] + estate.b["ids:packets"], 4500);

    // A moved flow's counters: taken to b on every shared backend, the same values.
    let moved = flows(&estate.b);
    assert_eq!(moved.len(), 20, "10 moved flows, packets and matches each: {moved:?}");
    for (name, other) in [("centralmem", &centralmem), ("clustermem", &clustermem)] {
        assert_eq!(flows(&other.b), moved, "{name}: b's flow counters");
        assert_eq!(flows(&other.a), flows(&estate.a), "{name}: a keeps the flows that did not move");
        assert_eq!(other.b_stats["nf_flows_adopted"], 10, "{name}: {}", other.b_stats);
    }
    // Baseline: b's counters restart; a keeps its copies of the moved flows.
    for (key, value) in &moved {
        let restarted = baseline.b.get(key).copied().unwrap_or(0);
        assert_eq!(restarted + baseline.a.get(key).copied().unwrap_or(0), *value, "{key}");
    }
    assert!(moved.iter().any(|(k, v)| baseline.b.get(k).copied().unwrap_or(0) < *v), "some flow restarted");

    // Alerts: a flow reaching the threshold over both sides of the move alerts on b
    // with every shared backend (b reads the flow's count from its backend), the
    // same number of times.
    let alerts = |r: &Run| r.b.get("ids:alerts").copied().unwrap_or(0);
    assert!(alerts(&estate) > 0, "pick another threshold: no alert on b");
    assert_eq!(alerts(&centralmem), alerts(&estate));
    assert_eq!(alerts(&clustermem), alerts(&estate));
    for (name, r) in [("estate", &estate), ("centralmem", &centralmem), ("clustermem", &clustermem)] {
        assert!(r.b_stats["nf_global_reads"].as_u64() > Some(0), "{name}: {}", r.b_stats);
    }
}

#[test]
fn a_node_whose_redis_is_unreachable_refuses_to_start_with_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = crate::support::estate()
        .args(["node", "--id", "a", "--listen", "tcp://127.0.0.1:*", "--state-backend"])
        .arg(format!("redis://127.0.0.1:{port}"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("state backend: redis at redis://127.0.0.1:"), "{stderr}");
    let bad = crate::support::estate()
        .args(["node", "--id", "a", "--listen", "tcp://127.0.0.1:*", "--state-backend", "memcached://x"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&bad.stderr).contains("expected estate, none, redis://"));
}

/// Redis going away under a running NF: every refused request is counted, the NF
/// keeps handling packets (ids forwards them) and the node keeps serving.
#[test]
fn an_nf_whose_redis_dies_keeps_running_and_counts_the_refusals() {
    let server = RedisServer::start(false).expect("a real redis-server");
    let config = std::env::temp_dir().join(format!("estate-backends-{}-dies.conf", std::process::id()));
    std::fs::write(&config, "pattern = attack\nthreshold = 1\n").unwrap();
    let args = [
        "--nf",
        &guest_path("nf_ids"),
        "--nf-config",
        config.to_str().unwrap(),
        "--input",
        "synth:seed=3,flows=20,packets=2000000,share=0.3",
        "--state-backend",
        &server.url(),
    ];
    let node = NodeProc::start_with("a", &[], &args);
    node.wait_stat("nf_packets", 500);
    drop(server);
    let before = node.stats()["nf_packets"].as_u64().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let stats = node.stats();
        if stats["nf_backend_errors"].as_u64() > Some(100) && stats["nf_packets"].as_u64() > Some(before + 100) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no refusals counted, or the NF stopped: {stats}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(node.log_text().contains("redis: "), "refusals are logged");
    node.ok(&["set", "still", "1"]);
    assert_eq!(node.ok(&["get", "still"]), "1", "the node still serves");
}
