//! `estate node --metrics`: real nodes (two, joined; one running the `count` NF over a
//! synthetic input, both with tenants) scraped over real TCP. The values match what
//! was done and what `estate stats` says, every `stats` row has its metric, the
//! histograms counted what ran, anything but `GET /metrics` is a 404, and
//! `promtool check metrics` finds no error and no lint problem.
//!
//! The scrapes are plain `std::net::TcpStream` requests (HTTP/1.1, `Connection:
//! close`): no HTTP client dependency, and the test sees the raw status line and
//! headers.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use estate::metrics::table::{self, Kind};

use crate::support::{NodeProc, estate, guest_path};

/// Tenant `b` may hold two items on a node.
const TENANTS: &str = "[tenants.default]\n\n[tenants.b]\nkeys = 2\n";

/// Global reads the test issues with the built-in `sum`.
const READS: u64 = 5;

/// A temp file, removed when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// One HTTP answer.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

/// `METHOD PATH` on `addr`, read to the end.
fn http(addr: &str, method: &str, path: &str) -> Answer {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no end of headers in {raw:?}"));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap();
    Answer { status, head: head.to_string(), body: body.to_string() }
}

/// `GET /metrics`, which must succeed with the Prometheus text format.
fn scrape(addr: &str) -> String {
    let answer = http(addr, "GET", "/metrics");
    assert_eq!(answer.status, 200, "{}", answer.head);
    let content_type = "content-type: text/plain; version=0.0.4; charset=utf-8";
    assert!(answer.head.to_ascii_lowercase().contains(content_type), "{}", answer.head);
    answer.body
}

/// The samples of a scrape: `name{labels}` → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("sample line {line:?}"));
            (series.to_string(), value.parse().unwrap_or_else(|e| panic!("value of {line:?}: {e}")))
        })
        .collect()
}

fn value(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    *samples.get(series).unwrap_or_else(|| panic!("no sample {series}"))
}

/// The address a node serves its metrics on, from its log (the test support keeps
/// only some fields of the ready line; the exporter logs the address it bound).
fn metrics_addr(node: &NodeProc) -> String {
    let log = node.log_text();
    let marker = "serving metrics on http://";
    let at = log.find(marker).unwrap_or_else(|| panic!("{}: no metrics endpoint in its log", node.id));
    log[at + marker.len()..].split('/').next().unwrap().to_string()
}

/// `promtool check metrics` over `text`: must pass with nothing to say. Fails if
/// promtool is missing (`.ci/setup` installs Debian's `prometheus`, which has it).
fn promtool(text: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = child.unwrap_or_else(|e| panic!("promtool ({e}): install Debian's prometheus (.ci/setup does)"));
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics ({:?}):\n{said}", out.status);
}

/// The series of a node-wide `stats` row.
fn series_of_stat(stat: &str, nf_tenant: &str) -> (String, Kind, f64) {
    if let Some(e) = table::STATS.iter().find(|e| e.stat == stat) {
        return (e.metric.to_string(), e.kind, e.scale);
    }
    let e = table::NF.iter().find(|e| e.stat == stat).unwrap_or_else(|| panic!("stats row {stat} has no metric"));
    (format!("{}{{tenant=\"{nf_tenant}\"}}", e.metric), e.kind, e.scale)
}

/// The series of a `tenant.NAME.ROW` row.
fn series_of_tenant_row(tenant: &str, row: &str) -> String {
    let family = match row {
        "keys" => table::TENANT_ITEMS,
        "bytes" => table::TENANT_BYTES,
        "reducers" => table::TENANT_REDUCERS,
        "modules" => table::TENANT_MODULES,
        "module_bytes" => table::TENANT_MODULE_BYTES,
        _ => {
            let quota = row.strip_prefix("refused.").unwrap_or_else(|| panic!("tenant row {row} has no metric"));
            return format!("{}{{tenant=\"{tenant}\",quota=\"{quota}\"}}", table::TENANT_REFUSALS);
        }
    };
    format!("{family}{{tenant=\"{tenant}\"}}")
}

/// Every row of `stats` (taken before `scraped`) has its metric, with the same value
/// (counters may have gone on: at least the same value).
fn check_against_stats(node: &str, stats: &serde_json::Value, scraped: &BTreeMap<String, f64>) {
    for (row, v) in stats.as_object().unwrap() {
        let v = v.as_u64().unwrap() as f64;
        if let Some(rest) = row.strip_prefix("tenant.") {
            let (tenant, row) = rest.split_once('.').unwrap();
            let series = series_of_tenant_row(tenant, row);
            assert_eq!(value(scraped, &series), v, "{node}: {series} vs stats {row}");
            continue;
        }
        if row.starts_with("nf_metric:") {
            continue; // The count NF has none.
        }
        let (series, kind, scale) = series_of_stat(row, "default");
        let got = value(scraped, &series) / scale;
        match kind {
            Kind::Counter if !row.starts_with("nf_") => {
                assert!(got >= v, "{node}: {series} = {got}, stats {row} = {v}")
            }
            // The NF has finished: its counters stand still, like the gauges here.
            _ => assert!((got - v).abs() < 0.5, "{node}: {series} = {got}, stats {row} = {v}"),
        }
    }
}

#[test]
fn a_cluster_s_metrics_match_what_was_done_and_pass_promtool() {
    let tenants = TempFile(std::env::temp_dir().join(format!("estate-metrics-{}.toml", std::process::id())));
    std::fs::write(&tenants.0, TENANTS).unwrap();
    let t = tenants.0.to_str().unwrap();
    let nf = guest_path("nf_count");
    let input = "synth:seed=3,flows=20,packets=2000,share=0";
    let metrics = ["--metrics", "127.0.0.1:0", "--tenants", t];
    let n1 = NodeProc::start_with("n1", &[], &[&metrics[..], &["--nf", &nf, "--input", input]].concat());
    let n2 = NodeProc::start_with("n2", &[&n1.listen], &metrics);
    n1.wait_members(&["n1", "n2"]);
    n2.wait_members(&["n1", "n2"]);
    n1.wait_stat("nf_packets", 2000);

    // Writes in both tenants; tenant b's third item is refused by its quota.
    n1.ok(&["set", "k:1", "5"]);
    n2.ok(&["set", "k:2", "7"]);
    n2.ok(&["--tenant", "b", "set", "b:1", "1"]);
    n2.ok(&["--tenant", "b", "set", "b:2", "2"]);
    assert!(!n2.cli(&["--tenant", "b", "set", "b:3", "3"]).status.success(), "b holds at most 2 items");
    // Global reads: built-in, then a Wasm reducer pushed down (a partial on each node,
    // the final reduction on n1) and fetch-all (the final reduction only).
    for _ in 0..READS {
        assert_eq!(n1.global("k:.*", "sum", &[])["result"], 12);
    }
    n1.ok(&["reducer", "load", "agg", &guest_path("reducer_sum")]);
    for extra in [&["--remote"][..], &[]] {
        // Time for n2 to fetch and compile the module first.
        let answer = n1.global("k:.*", "agg", &[extra, &["--timeout-ms", "20000"]].concat());
        assert_eq!(answer["answered"], serde_json::json!(["n1", "n2"]), "{answer}");
    }

    let (a1, a2) = (metrics_addr(&n1), metrics_addr(&n2));
    let (stats1, stats2) = (n1.stats(), n2.stats());
    let (text1, text2) = (scrape(&a1), scrape(&a2));
    let (m1, m2) = (samples(&text1), samples(&text2));
    check_against_stats("n1", &stats1, &m1);
    check_against_stats("n2", &stats2, &m2);

    // The NF: every packet counted and timed.
    assert_eq!(value(&m1, "estate_nf_packets_total{tenant=\"default\"}"), 2000.0);
    assert_eq!(value(&m1, "estate_nf_packets_forwarded_total{tenant=\"default\"}"), 2000.0);
    assert_eq!(value(&m1, "estate_nf_packet_duration_seconds_count{tenant=\"default\"}"), 2000.0);
    assert_eq!(value(&m1, "estate_nf_packet_duration_seconds_bucket{tenant=\"default\",le=\"+Inf\"}"), 2000.0);
    assert!(value(&m1, "estate_nf_packet_duration_seconds_sum{tenant=\"default\"}") > 0.0);
    // Packets per second since the previous scrape: the first covers all 2,000; the
    // next, none (the input is finished).
    assert!(value(&m1, "estate_nf_packets_per_second{tenant=\"default\"}") > 0.0);
    let again = samples(&scrape(&a1));
    assert_eq!(value(&again, "estate_nf_packets_per_second{tenant=\"default\"}"), 0.0);
    assert_eq!(value(&m2, "estate_nf_packets_total{tenant=\"default\"}"), 0.0, "n2 runs no NF");

    // Global reads and reducer calls.
    let reads = value(&m1, "estate_global_read_duration_seconds_count");
    assert!(reads >= (READS + 2) as f64, "n1 timed {reads} reads");
    assert!(value(&m1, "estate_global_read_duration_seconds_sum") > 0.0);
    let served = value(&m2, "estate_global_reads_served_total");
    assert!(served >= (READS + 2) as f64, "n2 served {served} of n1's reads");
    let calls = value(&m1, "estate_reducer_call_duration_seconds_count");
    assert!(calls >= 3.0, "n1: a partial and two final reductions, timed {calls}");
    assert!(value(&m2, "estate_reducer_call_duration_seconds_count") >= 1.0, "n2 ran its partial");
    assert_eq!(value(&m1, "estate_reducers_loaded{tenant=\"default\"}"), 1.0);
    assert_eq!(value(&m2, "estate_reducer_modules{tenant=\"default\"}"), 1.0, "fetched for the push-down");

    // Tenants: b's items and its refusal on n2, nothing of b's on n1.
    assert_eq!(value(&m2, "estate_store_items{tenant=\"b\"}"), 2.0);
    assert_eq!(value(&m2, "estate_quota_refusals_total{tenant=\"b\",quota=\"keys\"}"), 1.0);
    assert_eq!(value(&m2, "estate_quota_refusals_total{tenant=\"default\",quota=\"keys\"}"), 0.0);
    assert_eq!(value(&m1, "estate_store_items{tenant=\"b\"}"), 0.0);
    assert_eq!(value(&m1, "estate_store_items{tenant=\"default\"}"), 23.0, "count:packets, count:bytes, 20 flows, k:1");

    // Every family is there (the NF's own metrics only once it has some).
    for family in table::families().into_iter().filter(|f| *f != table::NF_GUEST_METRIC) {
        assert!(text1.contains(&format!("\n# TYPE {family} ")), "{family} missing:\n{text1}");
    }

    // Only GET /metrics.
    assert_eq!(http(&a1, "GET", "/").status, 404);
    assert_eq!(http(&a1, "GET", "/metrics/x").status, 404);
    assert_eq!(http(&a1, "POST", "/metrics").status, 404);
    assert_eq!(http(&a1, "GET", "/metrics?name=x").status, 200);

    promtool(&text1);
    promtool(&text2);
}

/// A process killed when dropped (if the test fails before it exits).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_ready_line_tells_the_bound_port_and_the_endpoint_stops_with_the_node() {
    let mut node = Killed(
        estate()
            .args(["node", "--id", "solo", "--listen", "tcp://127.0.0.1:*", "--metrics", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(node.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let last = line.split_whitespace().last().unwrap();
    let addr = last.strip_prefix("metrics=").unwrap_or_else(|| panic!("no metrics= at the end of {line:?}"));
    assert!(addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"), "{line}");
    assert!(scrape(addr).contains("# TYPE estate_peer_frames_received_total counter"));

    let sent = Command::new("kill").args(["-TERM", &node.0.id().to_string()]).status().unwrap();
    assert!(sent.success());
    let status = node.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(TcpStream::connect(addr).is_err(), "the endpoint closed with the node");
}

#[test]
fn a_library_node_serves_its_metrics_until_it_shuts_down() {
    use estate::node::{Node, NodeConfig, StartError};
    let mut config = NodeConfig::new("lib", "tcp://127.0.0.1:*");
    config.metrics = Some("127.0.0.1:0".parse().unwrap());
    let node = Node::start(config.clone()).unwrap();
    let addr = node.metrics_addr().unwrap().to_string();
    node.set("x", estate_guest::Value::Int(1)).unwrap();
    assert_eq!(value(&samples(&scrape(&addr)), "estate_store_items{tenant=\"default\"}"), 1.0);
    node.shutdown();
    // The listening socket closes as soon as the server's accept thread sees the stop.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(&addr).is_ok() {
        assert!(std::time::Instant::now() < deadline, "{addr} still accepts after the shutdown");
        std::thread::sleep(Duration::from_millis(20));
    }

    // (A test never binds beyond loopback, so `insecure` is not tried here.)
    config.metrics = Some("0.0.0.0:0".parse().unwrap());
    let refused = Node::start(config).unwrap_err();
    assert!(matches!(refused, StartError::Unsafe(_)), "{refused}");
}

#[test]
fn a_metrics_address_other_hosts_reach_needs_insecure() {
    let out = estate()
        .args(["node", "--id", "open", "--listen", "tcp://127.0.0.1:*", "--metrics", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("metrics address 0.0.0.0:0 is not a loopback address"), "{stderr}");
    assert!(stderr.contains("--insecure"), "{stderr}");
}

#[test]
fn every_metric_is_documented_and_only_the_metrics_module_serves_them() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let doc = std::fs::read_to_string(root.join("docs/metrics.md")).unwrap();
    for family in table::families() {
        assert!(doc.contains(&format!("`{family}`")), "docs/metrics.md does not list {family}");
    }
    // prometheus-client and tiny_http stay in runtime/src/metrics/.
    fn walk(dir: &Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if !path.ends_with("metrics") {
                    walk(&path, found);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                let code = text.lines().filter(|l| !l.trim_start().starts_with("//"));
                if code.into_iter().any(|l| l.contains("prometheus_client") || l.contains("tiny_http")) {
                    found.push(path.display().to_string());
                }
            }
        }
    }
    let mut found = Vec::new();
    walk(&root.join("runtime/src"), &mut found);
    assert!(found.is_empty(), "outside runtime/src/metrics/: {found:?}");
}
