//! NFs on real traffic (docs/live.md): kernel TCP between network namespaces the test
//! makes (`estate::testbed`), through `estate node --input live:…` and `--inline`, and
//! through the switch's live mode. Needs root.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use estate::testbed::{End, Neighbour, Options, Process, Testbed};

use crate::support::netns::{PORT, curl, http_server, need_root, peer_of};
use crate::support::{NodeProc, estate, guest_path};

const INJECT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/netns/inject.py");

fn inline_testbed(opts: Options) -> Testbed {
    need_root();
    Testbed::inline(&opts).unwrap_or_else(|e| panic!("{e}"))
}

/// A configuration file for an NF, removed with the test's temporary directory.
fn config(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("estate-live-{}-{name}.conf", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Starts the single NF node of an inline testbed in the NF host.
fn nf_node(tb: &Testbed, nf: &str, conf: &std::path::Path, input: &[&str]) -> NodeProc {
    let host = tb.nf(1);
    let wasm = guest_path(nf);
    let mut args = vec!["--nf", wasm.as_str(), "--nf-config", conf.to_str().unwrap()];
    args.extend_from_slice(input);
    NodeProc::start_in_ns(&host.ns, "n1", "tcp://127.0.0.1:*", &[], &args)
}

/// Polls `check` (bounded) until it holds; fails with `what` and the last value.
fn eventually<T: std::fmt::Debug>(what: &str, mut read: impl FnMut() -> T, check: impl Fn(&T) -> bool) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let value = read();
        if check(&value) {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: {value:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn ids_observing_live_http_alerts_once_per_attacking_flow() {
    let tb = inline_testbed(Options { kernel_bridge: true, ..Options::default() });
    let _server = http_server(&tb, End::Dst);
    let conf = config("ids", "pattern = x-attack-probe\nthreshold = 1\n");
    let a = tb.nf(1).a.clone();
    let node = nf_node(&tb, "nf_ids", &conf, &["--input", &format!("live:{a}")]);
    // Four attacking requests, each with the pattern twice (in headers the server does
    // not echo), and four clean ones: eight TCP connections.
    for i in 0..8 {
        let header = if i % 2 == 0 { "X-Probe: x-attack-probe x-attack-probe" } else { "X-Probe: clean" };
        let out = curl(&tb, End::Src, "/", 10, &["-H", header]);
        assert!(out.status.success(), "request {i}: {}", text(&out.stderr));
    }
    eventually("every match counted", || node.counter("ids:matches"), |n| *n == 8);
    // The flows' FINs and ACKs come after the last match: wait for every flow's packets.
    let packets = eventually("packets counted", || node.held_ints("flow:.*:packets"), |f| f.len() == 8);
    let matches = node.held_ints("flow:.*:matches");
    assert_eq!(matches.len(), 4, "four attacking flows: {matches:?}");
    assert!(matches.values().all(|m| *m == 2), "two matches in each, as sent: {matches:?}");
    for flow in matches.keys() {
        let packets_key = flow.replace(":matches", ":packets");
        assert!(packets[&packets_key] >= 6, "{flow}: a whole HTTP exchange ({packets:?})");
    }
    assert_eq!(node.counter("ids:alerts"), 4, "one alert per attacking flow");
    let alerts = node.log_text().lines().filter(|l| l.contains("ids alert flow=")).count();
    assert_eq!(alerts, 4, "{}", node.log_text());
    let stats = node.stats();
    assert_eq!(stats["nf_dropped"], 0, "observing forwards everything: {stats}");
    assert_eq!(stats["nf_transmitted"], 0, "an observing input sends nothing: {stats}");
}

#[test]
fn an_inline_firewall_lets_inside_out_and_keeps_outside_out() {
    let tb = inline_testbed(Options::default());
    let _server = http_server(&tb, End::Dst);
    let _inside_server = http_server(&tb, End::Src);
    let conf = config("fw", "inside = 10.0.0.1/32\nnew_tcp = syn\n");
    let sides = format!("{},{}", tb.nf(1).a, tb.nf(1).b);
    // Metrics on the NF host's own loopback, scraped from inside it.
    let node = nf_node(&tb, "nf_firewall", &conf, &["--inline", &sides, "--metrics", "127.0.0.1:9464"]);
    let out = curl(&tb, End::Src, "/", 10, &[]);
    assert!(out.status.success(), "from inside: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("peer=10.0.0.1:"), "{}", text(&out.stdout));
    let started = Instant::now();
    let out = curl(&tb, End::Dst, "/", 3, &[]);
    assert_eq!(out.status.code(), Some(28), "from outside: timed out ({})", text(&out.stderr));
    assert!(started.elapsed() >= Duration::from_secs(3));
    let stats = node.stats();
    assert!(node.counter("fw:opened") >= 1, "{stats}");
    let dropped = node.counter("fw:dropped");
    assert!(dropped >= 2, "the outside SYN and its retransmissions: {dropped}");
    assert_eq!(stats["nf_dropped"].as_i64(), Some(dropped), "{stats}");
    assert_eq!(stats["nf_forwarded"].as_i64(), Some(node.counter("fw:passed")), "{stats}");
    assert!(stats["nf_unparsed_passed"].as_u64() >= Some(2), "ARP crossed: {stats}");
    // Every packet's time from capture to verdict was observed.
    let scrape = tb.exec(&tb.nf(1).ns, ["curl", "-sS", "--max-time", "5", "http://127.0.0.1:9464/metrics"]).unwrap();
    let metrics = text(&scrape.stdout);
    let sample = |name: &str| -> f64 {
        let line = metrics.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name}: {metrics}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let packets = sample("estate_nf_packets_total{tenant=\"default\"}");
    assert_eq!(sample("estate_nf_wire_delay_seconds_count{tenant=\"default\"}"), packets);
    assert!(packets > 0.0 && sample("estate_nf_wire_delay_seconds_sum{tenant=\"default\"}") > 0.0, "{metrics}");
}

#[test]
fn an_inline_nat_translates_addresses_and_ports_on_the_wire() {
    // The server answers the external address, which no host owns: its neighbour entry
    // sends those frames towards the NAT, which gives them back to the client.
    let external = std::net::Ipv4Addr::new(10, 0, 0, 100);
    let neighbour = Neighbour { on: End::Dst, ip: external, mac_of: End::Src };
    let tb = inline_testbed(Options { neighbours: vec![neighbour], ..Options::default() });
    let _server = http_server(&tb, End::Dst);
    let conf = config("nat", &format!("ports = 20000-20999\nexternal = {external}\n"));
    let sides = format!("{},{}", tb.nf(1).a, tb.nf(1).b);
    let node = nf_node(&tb, "nf_nat", &conf, &["--inline", &sides]);
    let mut seen = Vec::new();
    for _ in 0..3 {
        let out = curl(&tb, End::Src, "/", 10, &[]);
        assert!(out.status.success(), "through the NAT: {}", text(&out.stderr));
        let page = text(&out.stdout);
        let (ip, port) = peer_of(&page);
        assert_eq!(ip, "10.0.0.100", "the server saw the translated address: {page}");
        seen.push(port);
    }
    assert!(seen.iter().all(|p| (20000..=20999).contains(p)), "{seen:?}");
    let mut distinct = seen.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "a port per connection: {seen:?}");
    let mappings = node.held_ints("flow:.*:nat");
    assert_eq!(
        mappings.values().map(|p| *p as u16).collect::<std::collections::BTreeSet<_>>(),
        seen.iter().copied().collect()
    );
    let stats = node.stats();
    assert!(stats["nf_rewritten"].as_u64() >= Some(3 * 6), "both directions rewritten: {stats}");
    assert_eq!(stats["nf_transmit_errors"], 0, "{stats}");
}

#[test]
fn malformed_frames_on_the_wire_are_counted_and_the_node_stays_up() {
    let tb = inline_testbed(Options::default());
    let _server = http_server(&tb, End::Dst);
    let sides = format!("{},{}", tb.nf(1).a, tb.nf(1).b);
    let node = nf_node(&tb, "nf_count", &config("count", ""), &["--inline", &sides]);
    let src = tb.src();
    let out = tb.exec(&src.ns, ["python3", INJECT, &src.iface]).unwrap_or_else(|e| panic!("{e}"));
    let sent: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (malformed, unparsed) = (sent["malformed"].as_u64().unwrap(), sent["unparsed"].as_u64().unwrap());
    assert!(malformed >= 10 && unparsed >= 2, "{sent}");
    let stats = eventually(
        "every injected frame counted",
        || node.stats(),
        |s| s["nf_bad_frames"].as_u64() >= Some(malformed) && s["nf_unparsed"].as_u64() >= Some(unparsed),
    );
    assert_eq!(stats["nf_bad_frames"].as_u64(), Some(malformed), "{stats}");
    assert_eq!(stats["nf_faults"], 0, "{stats}");
    // Still forwarding real traffic; the unparsed frames were dropped (the default).
    let out = curl(&tb, End::Src, "/", 10, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stats = node.stats();
    assert!(stats["nf_packets"].as_u64() >= Some(6), "{stats}");
    assert_eq!(
        stats["nf_unparsed"].as_u64().unwrap() - stats["nf_unparsed_passed"].as_u64().unwrap(),
        unparsed,
        "ARP passed, the injected unparsed frames dropped: {stats}"
    );
}

#[test]
fn with_unparsed_pass_an_inline_node_passes_what_it_cannot_see_and_still_drops_malformed_frames() {
    let tb = inline_testbed(Options::default());
    let sides = format!("{},{}", tb.nf(1).a, tb.nf(1).b);
    let node = nf_node(&tb, "nf_count", &config("count-pass", ""), &["--inline", &sides, "--unparsed", "pass"]);
    let src = tb.src();
    let out = tb.exec(&src.ns, ["python3", INJECT, &src.iface]).unwrap_or_else(|e| panic!("{e}"));
    let sent: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (malformed, unparsed) = (sent["malformed"].as_u64().unwrap(), sent["unparsed"].as_u64().unwrap());
    let stats = eventually(
        "every injected frame counted and the unparsed ones passed",
        || node.stats(),
        |s| {
            s["nf_bad_frames"].as_u64() >= Some(malformed)
                && s["nf_unparsed"].as_u64() >= Some(unparsed)
                && s["nf_unparsed_passed"] == s["nf_unparsed"]
        },
    );
    assert_eq!(stats["nf_bad_frames"].as_u64(), Some(malformed), "malformed frames never pass: {stats}");
    assert_eq!(stats["nf_unparsed_passed"], stats["nf_unparsed"], "every unparsed frame passed: {stats}");
    assert_eq!(stats["nf_transmitted"], stats["nf_unparsed_passed"], "and only those were sent: {stats}");
    assert_eq!(stats["nf_packets"], 0, "{stats}");
}

/// The paper's testbed with two inline instances of an NF (n1, n2, peering on the
/// management network) behind the live switch, which sends new flows to `start`. The
/// nodes come before the testbed, so they stop first.
struct Paper {
    n1: NodeProc,
    n2: NodeProc,
    commands: String,
    _switch: Process,
    _server: Process,
    tb: Testbed,
}

fn paper(name: &str, nf: &str, conf_text: &str, flow_state: &str, start: &str, opts: Options) -> Paper {
    need_root();
    let tb = Testbed::paper(2, &opts).unwrap_or_else(|e| panic!("{e}"));
    let server = http_server(&tb, End::Dst);
    let name = format!("{name}-{flow_state}");
    let conf = config(&name, conf_text);
    let wasm = guest_path(nf);
    let node = |i: usize, join: &[&str]| {
        let host = tb.nf(i);
        let listen = format!("tcp://{}:7000", host.mgmt.as_ref().unwrap().ip);
        let sides = format!("{},{}", host.a, host.b);
        // Plain peering on the management network the test made (docs/security.md).
        let conf = conf.to_str().unwrap();
        let args = ["--nf", &wasm, "--nf-config", conf, "--inline", &sides, "--flow-state", flow_state, "--insecure"];
        NodeProc::start_in_ns(&host.ns, &format!("n{i}"), &listen, join, &args)
    };
    let n1 = node(1, &[]);
    let n2 = node(2, &[&n1.listen]);
    n1.wait_members(&["n1", "n2"]);
    n2.wait_members(&["n1", "n2"]);
    let sw = tb.switch().unwrap();
    let commands =
        format!("ipc://{}/estate-live-switch-{}-{name}.cmd", std::env::temp_dir().display(), std::process::id());
    let mut args = vec![env!("CARGO_BIN_EXE_estate").to_string(), "traffic".into(), "switch".into()];
    args.extend(["--live".into(), format!("{},{}", sw.input, sw.output)]);
    for (i, node) in [&n1, &n2].into_iter().enumerate() {
        args.extend(["--node".into(), format!("n{}={},{}", i + 1, sw.nf_ports[i].a, sw.nf_ports[i].b)]);
        args.extend(["--node-control".into(), format!("n{}={}", i + 1, node.control)]);
    }
    args.extend(["--start".into(), start.into(), "--commands".into(), commands.clone()]);
    let mut switch = tb.spawn(&sw.ns, args).unwrap();
    let mut lines = BufReader::new(switch.stdout.take().unwrap()).lines();
    let ready = lines.find(|l| l.as_ref().is_ok_and(|l| l.starts_with("switch commands="))).unwrap().unwrap();
    assert!(ready.ends_with(".cmd"), "{ready}");
    Paper { n1, n2, commands, _switch: switch, _server: server, tb }
}

/// A slow download (40 chunks over 6 s) through the paper's testbed, its flow moved
/// from n1 to n2 after 2 s: the paper's Fig. 4 on a real TCP connection.
struct Moved {
    download: Output,
    paper: Paper,
}

impl Moved {
    fn chunks(&self) -> usize {
        text(&self.download.stdout).lines().filter(|l| l.starts_with("chunk ")).count()
    }
}

fn move_a_live_download(nf: &str, conf_text: &str, flow_state: &str) -> Moved {
    move_with(&["move", "1", "n1", "n2"], nf, conf_text, flow_state)
}

/// [`move_a_live_download`] with the switch command `step` (`move 1 n1 n2`, the
/// paper's scale-out of every flow, or `drain n1 n2`, its scale-in).
fn move_with(step: &[&str], nf: &str, conf_text: &str, flow_state: &str) -> Moved {
    let paper = paper(&format!("{nf}-{}", step[0]), nf, conf_text, flow_state, "n1", Options::default());
    let tb = &paper.tb;
    let url = format!("http://{}:{PORT}/slow?seconds=6&chunks=40", tb.dst().ip);
    let download = tb.command(&tb.src().ns, "curl").args(["-sS", "--max-time", "12", &url]).spawn_output();
    std::thread::sleep(Duration::from_secs(2));
    let commands = &paper.commands;
    let moved = estate().args(["traffic", "command", "--switch", commands]).args(step).output().unwrap();
    assert!(moved.status.success(), "move: {}", text(&moved.stderr));
    assert!(text(&moved.stdout).contains(": 1 flows"), "the download's flow moved: {}", text(&moved.stdout));
    let download = download.join().unwrap();
    Moved { download, paper }
}

const FIREWALL: &str = "inside = 10.0.0.1/32\nnew_tcp = syn\n";

#[test]
fn a_live_connection_survives_a_move_between_inline_firewalls_with_its_state() {
    let moved = move_a_live_download("nf_firewall", FIREWALL, "take");
    let out = &moved.download;
    assert!(out.status.success(), "the download finished: {} / {}", text(&out.stderr), text(&out.stdout));
    assert_eq!(moved.chunks(), 40);
    let n2 = moved.paper.n2.stats();
    assert!(n2["nf_flows_adopted"].as_u64() >= Some(1), "{n2}");
    assert!(n2["nf_forwarded"].as_u64() >= Some(20), "n2 carried the rest of the connection: {n2}");
}

#[test]
fn a_live_connection_survives_a_scale_in_between_inline_firewalls_with_its_state() {
    let moved = move_with(&["drain", "n1", "n2"], "nf_firewall", FIREWALL, "take");
    let out = &moved.download;
    assert!(out.status.success(), "the download finished: {} / {}", text(&out.stderr), text(&out.stdout));
    assert_eq!(moved.chunks(), 40);
    let n2 = moved.paper.n2.stats();
    assert!(n2["nf_flows_adopted"].as_u64() >= Some(1), "{n2}");
}

#[test]
fn a_live_connection_breaks_when_it_moves_without_state_sharing() {
    let moved = move_a_live_download("nf_firewall", FIREWALL, "off");
    let chunks = moved.chunks();
    let status = moved.download.status;
    assert!(!status.success() && chunks < 40, "the download broke off: {chunks} chunks, {status:?}");
    let n2 = moved.paper.n2.stats();
    assert!(n2["nf_dropped"].as_u64() >= Some(1), "n2 dropped the unknown connection: {n2}");
    assert_eq!(n2["nf_flows_adopted"], 0, "{n2}");
}

/// The `ids` on the same move: every chunk of the download carries one match
/// ("chunk "). With the state taken along, n2 holds the flow's whole count; without
/// sharing, the count restarts at n2 and the flow's matches are split.
fn ids_counts_of_a_moved_download(flow_state: &str) -> (Moved, i64, i64) {
    let moved = move_a_live_download("nf_ids", "pattern = chunk\\x20\nthreshold = 1000\n", flow_state);
    assert!(moved.download.status.success(), "ids forwards everything: {}", text(&moved.download.stderr));
    assert_eq!(moved.chunks(), 40);
    let (n1, n2) = (moved.paper.n1.held_ints("flow:.*:matches"), moved.paper.n2.held_ints("flow:.*:matches"));
    (moved, n1.values().sum(), n2.values().sum())
}

#[test]
fn ids_counters_of_a_live_connection_continue_across_a_move_with_its_state() {
    let (moved, n1, n2) = ids_counts_of_a_moved_download("take");
    assert_eq!((n1, n2), (0, 40), "n2 took the flow's count over and went on: {}", moved.paper.n2.stats());
}

#[test]
fn ids_counters_of_a_live_connection_restart_after_a_move_without_sharing() {
    let (_moved, n1, n2) = ids_counts_of_a_moved_download("off");
    assert!(n1 > 0 && n2 > 0 && n2 < 40, "the count restarted at n2: n1 {n1}, n2 {n2}");
    assert_eq!(n1 + n2, 40, "every match counted once, split over the two");
}

#[test]
fn two_inline_nats_behind_the_switch_never_hand_out_the_same_port() {
    let external = std::net::Ipv4Addr::new(10, 0, 0, 100);
    let opts =
        Options { neighbours: vec![Neighbour { on: End::Dst, ip: external, mac_of: End::Src }], ..Options::default() };
    let conf = format!("ports = 20000-20999\nblock = 16\nexternal = {external}\n");
    let paper = paper("nat", "nf_nat", &conf, "take", "n1,n2", opts);
    let mut ports = Vec::new();
    for i in 0..16 {
        let out = curl(&paper.tb, End::Src, "/", 10, &[]);
        assert!(out.status.success(), "request {i} through the NATs: {}", text(&out.stderr));
        let page = text(&out.stdout);
        let (ip, port) = peer_of(&page);
        assert_eq!(ip, "10.0.0.100", "{page}");
        ports.push(port);
    }
    let mut distinct = ports.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), ports.len(), "no port handed out twice: {ports:?}");
    let (n1, n2) = (&paper.n1, &paper.n2);
    let allocated = (n1.counter("nat:allocated"), n2.counter("nat:allocated"));
    assert!(allocated.0 > 0 && allocated.1 > 0, "the switch spread the flows over both: {allocated:?}");
    assert_eq!(allocated.0 + allocated.1, 16, "one port per connection");
    // A reply's flow key is not its request's: the switch sends some replies to the
    // instance that did not allocate the port, which finds it across the cluster.
    let remote = n1.counter("nat:inbound_remote") + n2.counter("nat:inbound_remote");
    assert!(remote > 0, "some replies were translated by the other instance");
    assert_eq!(n1.counter("nat:unsolicited") + n2.counter("nat:unsolicited"), 0);
}

/// Runs a command in the background, collecting its output.
trait SpawnOutput {
    fn spawn_output(&mut self) -> std::thread::JoinHandle<Output>;
}

impl SpawnOutput for std::process::Command {
    fn spawn_output(&mut self) -> std::thread::JoinHandle<Output> {
        let child = self.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
        std::thread::spawn(move || child.wait_with_output().unwrap())
    }
}
