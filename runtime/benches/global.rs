//! get_global latency (p50/p99) against 2, 4, 8 and 16 nodes on loopback, each node a
//! real estate node with its own ZeroMQ context and I/O thread, talking TCP. The
//! baseline, measured in the same run, is one bare ZeroMQ DEALER→ROUTER→DEALER round
//! trip on loopback: a global read should cost about one round trip, not one per peer.
//! Each cluster size is measured twice in the same run: plaintext peering, and
//! authenticated and encrypted peering (a key and a roster per node, docs/security.md).
//!
//! Run with `cargo bench --bench global` (add `-- --quick` for fewer samples, `--
//! push-down` for the push-down part only; `-- push-down --only wsum/push-down --reads
//! 300` runs one row of it, to profile).

use std::time::{Duration, Instant};

use estate::node::{GlobalOptions, Node, NodeConfig};
use estate_guest::Value;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn summarize(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    (percentile(&samples, 0.5), percentile(&samples, 0.99))
}

fn zmq_round_trip(samples: usize) -> (Duration, Duration) {
    let ctx = zmq::Context::new();
    let server = ctx.socket(zmq::ROUTER).unwrap();
    server.bind("tcp://127.0.0.1:*").unwrap();
    let ep = server.get_last_endpoint().unwrap().unwrap();
    let echo = std::thread::spawn(move || {
        loop {
            let parts = server.recv_multipart(0).unwrap();
            if parts[1] == b"stop" {
                break;
            }
            server.send_multipart(parts, 0).unwrap();
        }
    });
    let client = ctx.socket(zmq::DEALER).unwrap();
    client.connect(&ep).unwrap();
    let mut out = Vec::with_capacity(samples);
    for i in 0..samples + 100 {
        let t = Instant::now();
        client.send(&b"ping-with-a-small-payload"[..], 0).unwrap();
        client.recv_bytes(0).unwrap();
        if i >= 100 {
            out.push(t.elapsed());
        }
    }
    client.send(&b"stop"[..], 0).unwrap();
    echo.join().unwrap();
    summarize(out)
}

/// Push-down against fetch-all: 8 nodes with 10,000 matching keys each; bytes that
/// reach the requester and latency, for the built-in sum and the Wasm sum guest.
fn push_down(reads: usize, only: Option<&str>) {
    let nodes = cluster(8);
    for (n, node) in nodes.iter().enumerate() {
        for k in 0..10_000 {
            node.set(&format!("flow:{n}:{k:05}"), Value::Int(k)).unwrap();
        }
    }
    let bytes = estate::guests::require("reducer_sum").unwrap();
    // 80,000 items in one fetch-all call need more than the default fuel budget.
    let limits =
        estate::control::LimitOverrides { fuel: Some(10_000_000_000), wall_ms: Some(10_000), ..Default::default() };
    nodes[0].load_reducer("wsum", bytes, &limits).unwrap();
    let expected = 8 * (0..10_000i64).sum::<i64>();
    println!();
    println!("push-down vs fetch-all: 8 nodes x 10,000 matching keys, {reads} reads each");
    println!("{:>14} {:>8} {:>16} {:>12} {:>12}", "reducer", "mode", "bytes in / read", "p50", "p99");
    let mut rows = Vec::new();
    for reducer in ["sum", "wsum"] {
        for remote in [false, true] {
            let mode = if remote { "push-down" } else { "fetch-all" };
            if only.is_some_and(|row| row != format!("{reducer}/{mode}")) {
                continue;
            }
            let opts = GlobalOptions { timeout: Duration::from_secs(10), remote, ..GlobalOptions::default() };
            // One untimed read first: peers fetch and compile the Wasm module once.
            nodes[0].get_global("flow:.*", reducer, opts).unwrap();
            let before = nodes[0].stats().bytes_in.load(std::sync::atomic::Ordering::Relaxed);
            let mut samples = Vec::new();
            for _ in 0..reads {
                let t = Instant::now();
                let answer = nodes[0].get_global("flow:.*", reducer, opts).unwrap();
                samples.push(t.elapsed());
                let value = match answer.result {
                    estate::reduce::Reduced::Value(v) => v,
                    estate::reduce::Reduced::Item(i) => i.value,
                    other => panic!("{other:?}"),
                };
                assert_eq!(value, Value::Int(expected));
                assert!(answer.missing.is_empty());
            }
            let after = nodes[0].stats().bytes_in.load(std::sync::atomic::Ordering::Relaxed);
            // Heartbeats arrive meanwhile too; they are a few hundred bytes per read.
            let per_read = (after - before) / reads as u64;
            let (p50, p99) = summarize(samples);
            println!("{reducer:>14} {mode:>8} {per_read:>16} {p50:>12.1?} {p99:>12.1?}");
            rows.push((per_read, p50));
        }
    }
    for (name, pair) in ["sum", "wsum"].iter().zip(rows.chunks(2)).filter(|(_, pair)| pair.len() == 2) {
        let (fetch, push) = (pair[0], pair[1]);
        println!(
            "{name:>14}: push-down moves {:.0}x fewer bytes and is {:.1}x faster (p50)",
            fetch.0 as f64 / push.0 as f64,
            fetch.1.as_secs_f64() / push.1.as_secs_f64()
        );
    }
    for node in nodes {
        node.shutdown();
    }
}

fn cluster(n: usize) -> Vec<Node> {
    cluster_keyed(n, None)
}

/// Key files and a roster for nodes `b1..=b<n>` in a fresh temporary folder.
fn keys(n: usize) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("estate-bench-keys-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut roster = String::new();
    for i in 1..=n {
        let public = estate::node::generate_key_file(&dir.join(format!("b{i}.key"))).unwrap();
        roster.push_str(&format!("b{i} {public}\n"));
    }
    std::fs::write(dir.join("roster"), roster).unwrap();
    dir
}

/// `n` nodes; with `keys` (from [`keys`]), peering is authenticated and encrypted.
fn cluster_keyed(n: usize, keys: Option<&std::path::Path>) -> Vec<Node> {
    let config = |i: usize| {
        let mut config = NodeConfig::new(&format!("b{i}"), "tcp://127.0.0.1:*");
        if let Some(dir) = keys {
            config.key = Some(dir.join(format!("b{i}.key")));
            config.roster = Some(dir.join("roster"));
        }
        config
    };
    let first = Node::start(config(1)).unwrap();
    let seed = first.endpoint().to_string();
    let mut nodes = vec![first];
    for i in 2..=n {
        let mut config = config(i);
        config.join.push(seed.clone());
        nodes.push(Node::start(config).unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while nodes.iter().any(|node| node.members().iter().filter(|m| m.state == "alive").count() != n - 1) {
        assert!(Instant::now() < deadline, "cluster of {n} did not form");
        std::thread::sleep(Duration::from_millis(20));
    }
    for (i, node) in nodes.iter().enumerate() {
        node.set("c", Value::Int(i as i64)).unwrap();
    }
    nodes
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let args: Vec<String> = std::env::args().collect();
    let after = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1));
    if args.iter().any(|a| a == "push-down") {
        // `cargo bench --bench global -- push-down`: only the second part.
        let reads = after("--reads").map(|n| n.parse().expect("--reads N")).unwrap_or(if quick { 10 } else { 30 });
        return push_down(reads, after("--only").map(String::as_str));
    }
    let samples = if quick { 300 } else { 2000 };
    let (rt50, rt99) = zmq_round_trip(samples);
    println!("baseline: zmq round trip on loopback  p50 {rt50:>10.1?}  p99 {rt99:>10.1?}");
    println!(
        "{:>6} {:>10} {:>12} {:>12} {:>14} {:>10}",
        "nodes", "encryption", "p50", "p99", "p50 / rtt p50", "on / off"
    );
    // Both clusters of a size run side by side, and their reads alternate in rounds,
    // so a slow phase of the machine falls on both alike.
    const ROUNDS: usize = 4;
    for n in [2, 4, 8, 16] {
        let dir = keys(n);
        let clusters = [cluster_keyed(n, None), cluster_keyed(n, Some(&dir))];
        let opts = GlobalOptions { timeout: Duration::from_secs(2), ..GlobalOptions::default() };
        let expected = Value::Int((0..n as i64).sum());
        let mut samples_of: [Vec<Duration>; 2] = Default::default();
        for round in 0..ROUNDS {
            for (nodes, out) in clusters.iter().zip(samples_of.iter_mut()) {
                let warm = if round == 0 { 50 } else { 0 };
                for i in 0..samples / ROUNDS + warm {
                    let t = Instant::now();
                    let answer = nodes[0].get_global("c", "sum", opts).unwrap();
                    let took = t.elapsed();
                    assert_eq!(answer.result, estate::reduce::Reduced::Value(expected.clone()));
                    assert!(answer.missing.is_empty(), "{:?}", answer.missing);
                    if i >= warm {
                        out.push(took);
                    }
                }
            }
        }
        let [off, on] = samples_of.map(summarize);
        for (mode, (p50, p99)) in [("off", off), ("on", on)] {
            let ratio =
                if mode == "on" { format!("{:.2}", p50.as_secs_f64() / off.0.as_secs_f64()) } else { String::new() };
            let rtt = p50.as_secs_f64() / rt50.as_secs_f64();
            println!("{n:>6} {mode:>10} {:>12.1?} {:>12.1?} {rtt:>14.2} {ratio:>10}", p50, p99);
        }
        for nodes in clusters {
            for node in nodes {
                node.shutdown();
            }
        }
        let _ = std::fs::remove_dir_all(dir);
    }
    push_down(if quick { 5 } else { 30 }, None);
}
