//! The namespace testbed (`estate::testbed`, docs/testbed.md) carries real traffic:
//! HTTP from the source reaches the target only across the NF host, the paper
//! topology's management network connects the NF hosts, the wire has real-size frames
//! with valid checksums and no IPv6, and nothing is left behind. Needs root.

use std::io::{BufRead, BufReader};
use std::process::Command;
use std::time::Duration;

use estate::testbed::{End, Options, Testbed};

use crate::support::netns::{HTTP_SERVER, PORT, curl, http_server, need_root};

const CAPTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/netns/capture.py");

fn build(kernel_bridge: bool) -> Testbed {
    need_root();
    Testbed::inline(&Options { kernel_bridge, ..Options::default() }).unwrap_or_else(|e| panic!("{e}"))
}

fn netns_list() -> String {
    String::from_utf8(Command::new("ip").args(["netns", "list"]).output().unwrap().stdout).unwrap()
}

fn assert_gone(prefix: &str) {
    let left: Vec<String> =
        netns_list().lines().filter(|l| l.starts_with(&format!("{prefix}-"))).map(String::from).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn http_crosses_the_kernel_bridge_of_the_nf_host() {
    let tb = build(true);
    let _server = http_server(&tb, End::Dst);
    let out = curl(&tb, End::Src, "/", 10, &[]);
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "curl failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(page.contains("peer=10.0.0.1:"), "the server saw the source's address: {page}");
    let out = curl(&tb, End::Src, "/attack", 10, &[]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("path=/attack"));
    let prefix = tb.prefix().to_string();
    drop(tb);
    assert_gone(&prefix);
}

#[test]
fn nothing_crosses_an_nf_host_that_forwards_nothing() {
    let tb = build(false);
    let _server = http_server(&tb, End::Dst);
    let out = curl(&tb, End::Src, "/", 2, &[]);
    assert!(!out.status.success(), "curl got through with nothing forwarding: {out:?}");
}

#[test]
fn the_wire_has_real_frames_with_valid_checksums_and_no_ipv6() {
    let tb = build(true);
    let _server = http_server(&tb, End::Dst);
    let nf = tb.nf(1);
    let mut capture = tb.spawn(&nf.ns, ["python3", CAPTURE, &nf.a, "4"]).unwrap();
    let mut lines = BufReader::new(capture.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    // Bulk data, which with TSO would cross the wire as 64 KiB frames.
    let out = curl(&tb, End::Src, "/bytes?n=1000000", 10, &[]);
    assert!(out.status.success() && out.stdout.len() == 1_000_000, "bulk GET: {:?}", out.status);
    let summary = lines.next().unwrap().unwrap();
    let stats: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert!(stats["tcp"].as_u64().unwrap() > 600, "the transfer was captured: {stats}");
    assert!(stats["max_len"].as_u64().unwrap() <= 1514, "frames fit the MTU: {stats}");
    assert_eq!(stats["bad_checksums"], 0, "{stats}");
    assert_eq!(stats["ipv6"], 0, "{stats}");
    capture.wait().unwrap();
}

#[test]
fn the_paper_topology_connects_the_nf_hosts_and_is_removed_on_drop() {
    need_root();
    let tb = Testbed::paper(2, &Options::default()).unwrap_or_else(|e| panic!("{e}"));
    let names = ["src", "sw", "dst", "nf1", "nf2"].map(|h| format!("{}-{h}", tb.prefix()));
    assert_eq!(tb.namespaces(), names);
    let listed = netns_list();
    assert!(names.iter().all(|n| listed.contains(n.as_str())), "{listed}");
    // NF nodes peer over TCP on the management network: nf1 reaches a server on nf2.
    let (nf1, nf2) = (tb.nf(1), tb.nf(2));
    let to = nf2.mgmt.as_ref().unwrap().ip.to_string();
    assert_eq!(to, "10.99.0.12");
    let _server = tb.spawn(&nf2.ns, ["python3", HTTP_SERVER, &to, &PORT.to_string()]).unwrap();
    tb.wait_listening(&nf2.ns, PORT, Duration::from_secs(10)).unwrap();
    let url = format!("http://{to}:{PORT}/");
    let out = tb.exec(&nf1.ns, ["curl", "-sS", "--max-time", "10", &url]).unwrap_or_else(|e| panic!("{e}"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("peer=10.99.0.11:"), "{out:?}");
    let sw = tb.switch().unwrap();
    assert_eq!((sw.input.as_str(), sw.output.as_str(), sw.nf_ports[1].b.as_str()), ("in", "out", "i2b"));
    // The data plane is pure L2: the source reaches nothing while the switch forwards nothing.
    let _target = http_server(&tb, End::Dst);
    assert!(!curl(&tb, End::Src, "/", 2, &[]).status.success());
    let mac = tb.mac(&nf1.ns, &nf1.a).unwrap();
    assert_eq!(mac.len(), 17, "{mac}");
    let prefix = tb.prefix().to_string();
    drop(tb);
    assert_gone(&prefix);
}

#[test]
fn a_prefix_in_use_is_refused_and_down_removes_leftovers() {
    need_root();
    // A prefix in use is refused, and the refusal removes nothing of the first.
    let first = Testbed::inline(&Options::default()).unwrap();
    let again = Options { prefix: Some(first.prefix().to_string()), ..Options::default() };
    assert!(matches!(Testbed::inline(&again), Err(estate::testbed::Error::Exists(_))));
    assert_eq!(first.exec(&first.src().ns, ["true"]).map(drop).map_err(|e| e.to_string()), Ok(()));
    // Kept, as `estate testbed up` does, then removed by prefix, processes and all.
    let _sleeper = first.spawn(&first.dst().ns, ["sleep", "60"]).unwrap();
    let prefix = first.keep();
    assert_eq!(Testbed::down(&prefix).unwrap().len(), 3);
    assert_gone(&prefix);
    assert!(Testbed::down(&prefix).unwrap().is_empty());
}
