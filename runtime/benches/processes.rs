//! get_global across processes, as a user deploys estate: N `estate node` processes on
//! loopback, and a client process (this bench) that drives global reads through one
//! long-lived connection to the first node's control socket. The baseline, measured in
//! the same run with the same processes and hops, is a bare ZeroMQ fan-out: the client
//! asks one coordinator process, which sends the request to N - 1 echo processes,
//! gathers their replies and answers the client (no estate code on the way).
//!
//! Run with `cargo bench --bench processes` (`-- --quick` for fewer reads). The echo
//! and coordinator processes are this same binary, started again with
//! `ESTATE_BENCH_ROLE` set.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use estate::control::{ControlCall, ControlReply, ControlRequest};
use estate::global::Consistency;
use estate::testing::{decode_reply, encode_request};

const ROLE: &str = "ESTATE_BENCH_ROLE";

/// Processes started by the bench, killed when dropped.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `cmd` and returns it with the first line it prints.
fn start(mut cmd: Command) -> (Child, String) {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    (child, line.trim().to_string())
}

fn field(line: &str, name: &str) -> String {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} in {line:?}"))
        .to_string()
}

/// A role of this binary: `echo` answers every message with itself; `fanout PEERS`
/// sends each client request to every peer and answers once all replied.
fn role(role: &str) {
    let ctx = zmq::Context::new();
    let front = ctx.socket(zmq::ROUTER).unwrap();
    front.bind("tcp://127.0.0.1:*").unwrap();
    println!("endpoint={}", front.get_last_endpoint().unwrap().unwrap());
    if role == "echo" {
        loop {
            let parts = front.recv_multipart(0).unwrap();
            front.send_multipart(parts, 0).unwrap();
        }
    }
    let peers: Vec<zmq::Socket> = std::env::var("ESTATE_BENCH_PEERS")
        .unwrap()
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let s = ctx.socket(zmq::DEALER).unwrap();
            s.connect(p).unwrap();
            s
        })
        .collect();
    loop {
        let parts = front.recv_multipart(0).unwrap();
        let body = parts.last().unwrap().clone();
        for peer in &peers {
            peer.send(&body, 0).unwrap();
        }
        let mut items: Vec<zmq::PollItem<'_>> = peers.iter().map(|p| p.as_poll_item(zmq::POLLIN)).collect();
        let mut missing = peers.len();
        while missing > 0 {
            zmq::poll(&mut items, 1000).unwrap();
            for (i, item) in items.iter().enumerate() {
                if item.is_readable() {
                    while peers[i].recv_bytes(zmq::DONTWAIT).is_ok() {
                        missing -= 1;
                    }
                }
            }
        }
        front.send_multipart(parts, 0).unwrap();
    }
}

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    (at(0.5), at(0.99))
}

/// `reads` timed round trips of `request` over one REQ socket, after 100 untimed.
fn drive(endpoint: &str, request: &[u8], reads: usize, check: impl Fn(&[u8])) -> (Duration, Duration) {
    let ctx = zmq::Context::new();
    let socket = ctx.socket(zmq::REQ).unwrap();
    socket.connect(endpoint).unwrap();
    let mut samples = Vec::with_capacity(reads);
    for i in 0..reads + 100 {
        let t = Instant::now();
        socket.send(request, 0).unwrap();
        let reply = socket.recv_bytes(0).unwrap();
        if i >= 100 {
            samples.push(t.elapsed());
        }
        check(&reply);
    }
    percentiles(samples)
}

fn control(endpoint: &str, request: ControlRequest) -> ControlReply {
    let call = ControlCall { credential: None, tenant: None, request };
    let frame = estate::control::client::round_trip(endpoint, &encode_request(&call), Duration::from_secs(5)).unwrap();
    decode_reply(&frame).unwrap()
}

/// N estate nodes; the first node's control endpoint.
fn estate_cluster(n: usize, procs: &mut Procs) -> String {
    let mut first = None::<(String, String)>;
    for i in 0..n {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_estate"));
        cmd.args(["--control", "tcp://127.0.0.1:*", "node", "--id", &format!("n{i}"), "--listen", "tcp://127.0.0.1:*"]);
        if let Some((listen, _)) = &first {
            cmd.args(["--join", listen]);
        }
        cmd.env("RUST_LOG", "warn");
        let (child, line) = start(cmd);
        procs.0.push(child);
        let control_endpoint = field(&line, "control");
        let set = ControlRequest::Set { key: "c".into(), value: estate_guest::Value::Int(i as i64 + 1) };
        assert!(matches!(control(&control_endpoint, set), ControlReply::Set(_)));
        if first.is_none() {
            first = Some((field(&line, "listen"), control_endpoint));
        }
    }
    let (_, control_endpoint) = first.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let ControlReply::Members(members) = control(&control_endpoint, ControlRequest::Members)
            && members.iter().skip(1).filter(|m| m.state == "alive").count() == n - 1
        {
            break;
        }
        assert!(Instant::now() < deadline, "the {n} nodes did not all join within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    control_endpoint
}

/// The bare fan-out: N - 1 echo processes and a coordinator; its endpoint.
fn bare_fanout(n: usize, procs: &mut Procs) -> String {
    let exe = std::env::current_exe().unwrap();
    let mut peers = Vec::new();
    for _ in 1..n {
        let mut cmd = Command::new(&exe);
        cmd.env(ROLE, "echo");
        let (child, line) = start(cmd);
        procs.0.push(child);
        peers.push(field(&line, "endpoint"));
    }
    let mut cmd = Command::new(&exe);
    cmd.env(ROLE, "fanout").env("ESTATE_BENCH_PEERS", peers.join(","));
    let (child, line) = start(cmd);
    procs.0.push(child);
    field(&line, "endpoint")
}

fn main() {
    if let Ok(r) = std::env::var(ROLE) {
        return role(&r);
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let reads = if quick { 300 } else { 2_000 };
    println!("get_global across processes: {reads} reads per row, p50 / p99");
    println!("{:>6} {:>22} {:>22} {:>12}", "nodes", "bare fan-out", "estate (control)", "p50 ratio");
    for n in [2, 4, 8, 16] {
        let mut procs = Procs(Vec::new());
        let node = estate_cluster(n, &mut procs);
        let fanout = bare_fanout(n, &mut procs);
        let read = ControlRequest::Global {
            pattern: "c".into(),
            reducer: "sum".into(),
            timeout_ms: 1_000,
            consistency: Consistency::All,
            remote: false,
        };
        let request = encode_request(&ControlCall { credential: None, tenant: None, request: read });
        let sum = (1..=n as i64).sum::<i64>();
        let check = |reply: &[u8]| match decode_reply(reply).unwrap() {
            ControlReply::Global(answer) => {
                assert_eq!(answer.result, estate::reduce::Reduced::Value(estate_guest::Value::Int(sum)))
            }
            other => panic!("{other:?}"),
        };
        // Alternating halves, so drift hits both alike.
        let (mut bare, mut ours) = (Vec::new(), Vec::new());
        for _ in 0..2 {
            bare.push(drive(&fanout, b"a small request of about this size", reads / 2, |_| {}));
            ours.push(drive(&node, &request, reads / 2, check));
        }
        let mean = |v: &[(Duration, Duration)]| ((v[0].0 + v[1].0) / 2, (v[0].1 + v[1].1) / 2);
        let (b, e) = (mean(&bare), mean(&ours));
        println!(
            "{n:>6} {:>10.1?} / {:>9.1?} {:>10.1?} / {:>9.1?} {:>12.2}",
            b.0,
            b.1,
            e.0,
            e.1,
            e.0.as_secs_f64() / b.0.as_secs_f64()
        );
    }
}
