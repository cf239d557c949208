//! Live traffic through estate against the kernel forwarding the same traffic, in the
//! same run (docs/performance.md, "Live interfaces"). Needs root: it builds network
//! namespaces (`estate::testbed`) and runs iperf3 (Debian's package) between them.
//!
//! Three paths, each between a source and a target namespace joined by an NF host:
//!
//! - `kernel`: a Linux bridge in the NF host forwards (the baseline);
//! - `inline`: `estate node --inline a,b` with the `count` NF forwards;
//! - `observe`: the bridge forwards and `estate node --input live:a` with the `count`
//!   NF captures what crosses one side (the NF's packets per datagram sent, which
//!   counts iperf3's control connection too, and what the bridge still carried beside
//!   the capture).
//!
//! Each run sends UDP datagrams of 64 bytes as fast as iperf3 can for a few seconds
//! (packets/s received), then one TCP stream (Gbit/s). Runs alternate between the paths,
//! so a slow moment of the machine hits all of them.
//!
//!     cargo bench --bench live [-- --runs N --seconds S]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use estate::testbed::{Options, Testbed};

const IPERF_PORT: &str = "5201";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Path {
    Kernel,
    Inline,
    Observe,
}

/// What one run of one path measured.
#[derive(Debug, Default)]
struct Figures {
    /// UDP datagrams per second the target received.
    udp_pps: f64,
    /// UDP datagrams the sender sent per second.
    udp_sent_pps: f64,
    /// TCP goodput, Gbit/s.
    tcp_gbps: f64,
    /// For `observe`: the NF's packets counted during the UDP test, per datagram the
    /// source sent (the capture sees them before the target's socket may drop some).
    observed_share: f64,
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

fn guest(name: &str) -> &'static str {
    estate::guests::ALL.iter().find(|(n, _)| *n == name).expect("guest built").1
}

/// Runs iperf3 from the source to the target; `udp` datagrams of 64 bytes at an
/// unlimited rate, else one TCP stream. Returns the client's JSON report.
fn iperf(tb: &Testbed, udp: bool, seconds: u32) -> serde_json::Value {
    let dst = tb.dst();
    let server = tb.spawn(&dst.ns, ["iperf3", "-s", "-1", "-p", IPERF_PORT, "-B", &dst.ip.to_string()]).unwrap();
    tb.wait_listening(&dst.ns, IPERF_PORT.parse().unwrap(), Duration::from_secs(10)).unwrap();
    let target = dst.ip.to_string();
    let secs = seconds.to_string();
    let mut args = vec!["iperf3", "-c", &target, "-p", IPERF_PORT, "-t", &secs, "-J"];
    if udp {
        args.extend(["-u", "-b", "0", "-l", "64"]);
    }
    let out = tb.exec(&tb.src().ns, args).unwrap_or_else(|e| panic!("{e}"));
    drop(server);
    serde_json::from_slice(&out.stdout).expect("iperf3 -J prints JSON")
}

/// An `estate node` in the NF host running `count` on `input`, killed when dropped.
struct Node {
    child: std::process::Child,
    control: String,
}

impl Node {
    fn start(tb: &Testbed, input: &[&str]) -> Node {
        let control = format!("ipc://{}/estate-bench-live-{}.ctl", std::env::temp_dir().display(), std::process::id());
        let mut cmd = estate::testbed::in_ns(&tb.nf(1).ns, env!("CARGO_BIN_EXE_estate"));
        cmd.args(["--control", &control, "node", "--id", "n1", "--listen", "tcp://127.0.0.1:*"])
            .args(["--nf", guest("nf_count")])
            .args(input)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("estate node");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert!(line.starts_with("ready"), "the node did not start: {line:?}");
        Node { child, control }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nf_packets(control: &str) -> u64 {
    let out = Command::new(env!("CARGO_BIN_EXE_estate"))
        .args(["--control", control, "stats", "--json"])
        .output()
        .expect("estate stats");
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stats JSON");
    stats["nf_packets"].as_u64().unwrap_or(0)
}

fn run(path: Path, seconds: u32) -> Figures {
    let tb = Testbed::inline(&Options { kernel_bridge: path != Path::Inline, ..Options::default() })
        .unwrap_or_else(|e| panic!("{e}"));
    let sides = format!("{},{}", tb.nf(1).a, tb.nf(1).b);
    let live = format!("live:{}", tb.nf(1).a);
    let running = match path {
        Path::Kernel => None,
        Path::Inline => Some(Node::start(&tb, &["--inline", &sides])),
        Path::Observe => Some(Node::start(&tb, &["--input", &live])),
    };
    let before = running.as_ref().map_or(0, |n| nf_packets(&n.control));
    let udp = iperf(&tb, true, seconds);
    let after = running.as_ref().map_or(0, |n| nf_packets(&n.control));
    let sum = &udp["end"]["sum"];
    let (packets, lost, secs) =
        (sum["packets"].as_f64().unwrap(), sum["lost_packets"].as_f64().unwrap(), sum["seconds"].as_f64().unwrap());
    let tcp = iperf(&tb, false, seconds);
    Figures {
        udp_pps: (packets - lost) / secs,
        udp_sent_pps: packets / secs,
        tcp_gbps: tcp["end"]["sum_received"]["bits_per_second"].as_f64().unwrap() / 1e9,
        observed_share: (after - before) as f64 / packets,
    }
}

fn arg(name: &str, default: u32) -> u32 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(default)
}

fn main() {
    if !is_root() {
        println!("live: skipped (builds network namespaces: run as root)");
        return;
    }
    let (runs, seconds) = (arg("--runs", 3), arg("--seconds", 4));
    println!("live: {runs} runs of {seconds} s per path; UDP 64-byte datagrams, then one TCP stream");
    println!(
        "{:>3}  {:>11} {:>11} {:>8}  {:>11} {:>9}  {:>9} {:>9} {:>8}",
        "run", "kernel pps", "inline pps", "inl/kern", "bridge+obs", "observed", "kern Gb/s", "inl Gb/s", "inl/kern"
    );
    for run_no in 1..=runs {
        let kernel = run(Path::Kernel, seconds);
        let inline = run(Path::Inline, seconds);
        let observe = run(Path::Observe, seconds);
        println!(
            "{run_no:>3}  {:>11.0} {:>11.0} {:>8.2}  {:>11.0} {:>9.2}  {:>9.2} {:>9.2} {:>8.2}",
            kernel.udp_pps,
            inline.udp_pps,
            inline.udp_pps / kernel.udp_pps,
            observe.udp_pps,
            observe.observed_share,
            kernel.tcp_gbps,
            inline.tcp_gbps,
            inline.tcp_gbps / kernel.tcp_gbps,
        );
        println!(
            "     offered pps: kernel {:.0}, inline {:.0}, bridge+observe {:.0}",
            kernel.udp_sent_pps, inline.udp_sent_pps, observe.udp_sent_pps
        );
    }
}
