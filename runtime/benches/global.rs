//! get_global latency (p50/p99) against 2, 4, 8 and 16 nodes on loopback, each node a
//! real estate node with its own ZeroMQ context and I/O thread, talking TCP. The
//! baseline, measured in the same run, is one bare ZeroMQ DEALER→ROUTER→DEALER round
//! trip on loopback: a global read should cost about one round trip, not one per peer.
//!
//! Run with `cargo bench --bench global` (add `-- --quick` for fewer samples).

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

fn cluster(n: usize) -> Vec<Node> {
    let first = Node::start(NodeConfig::new("b1", "tcp://127.0.0.1:*")).unwrap();
    let seed = first.endpoint().to_string();
    let mut nodes = vec![first];
    for i in 2..=n {
        let mut config = NodeConfig::new(&format!("b{i}"), "tcp://127.0.0.1:*");
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
    let samples = if quick { 300 } else { 2000 };
    let (rt50, rt99) = zmq_round_trip(samples);
    println!("baseline: zmq round trip on loopback  p50 {rt50:>10.1?}  p99 {rt99:>10.1?}");
    println!("{:>6} {:>12} {:>12} {:>14}", "nodes", "p50", "p99", "p50 / rtt p50");
    for n in [2, 4, 8, 16] {
        let nodes = cluster(n);
        let opts = GlobalOptions { timeout: Duration::from_secs(2), ..GlobalOptions::default() };
        let expected = Value::Int((0..n as i64).sum());
        let mut out = Vec::with_capacity(samples);
        for i in 0..samples + 50 {
            let t = Instant::now();
            let answer = nodes[0].get_global("c", "sum", opts).unwrap();
            let took = t.elapsed();
            assert_eq!(answer.result, estate::reduce::Reduced::Value(expected.clone()));
            assert!(answer.missing.is_empty(), "{:?}", answer.missing);
            if i >= 50 {
                out.push(took);
            }
        }
        let (p50, p99) = summarize(out);
        println!("{n:>6} {:>12.1?} {:>12.1?} {:>14.2}", p50, p99, p50.as_secs_f64() / rt50.as_secs_f64());
        for node in nodes {
            node.shutdown();
        }
    }
}
