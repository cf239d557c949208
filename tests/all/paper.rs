//! Short versions of the paper's experiments (`estate experiment fig4|fig5`), with
//! real processes and real `redis-server`s: correctness only — the same traffic gives
//! the same counts on every system, moved flows' counters continue with estate and
//! restart without it — never timing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use estate::nf::input::synth::{SynthConfig, synthetic};

use crate::support::estate;

fn out_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("estate-paper-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn experiment(args: &[&str], out: &Path) {
    let output = estate().arg("experiment").args(args).arg("--out").arg(out).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "estate experiment {args:?} failed:\n{stdout}\n{stderr}");
}

/// The rows of a CSV file, as column → text.
fn csv_rows(path: &Path) -> Vec<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines.map(|l| header.iter().map(|h| h.to_string()).zip(l.split(',').map(String::from)).collect()).collect()
}

fn int(row: &BTreeMap<String, String>, column: &str) -> i64 {
    row[column].parse().unwrap_or_else(|e| panic!("{column} = {:?}: {e}", row[column]))
}

fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 10_000, "{} is no plot", path.display());
}

#[test]
fn fig5_short_every_system_counts_the_same_traffic_alike() {
    let out = out_dir("fig5");
    let args = ["fig5", "--instances", "2", "--repetitions", "1", "--packets", "3000", "--duration", "30"];
    experiment(&[&args[..], &["--flows", "50", "--share", "0.05", "--threshold", "3"]].concat(), &out);
    let rows = csv_rows(&out.join("fig5.csv"));
    let systems: Vec<&str> = rows.iter().map(|r| r["system"].as_str()).collect();
    assert_eq!(systems, ["baseline", "centralmem", "clustermem", "estate"]);
    for row in &rows {
        let system = &row["system"];
        assert_eq!(int(row, "packets"), 6000, "{system}: every packet handled");
        assert_eq!(int(row, "state_packets"), 6000, "{system}: and counted in the state");
        assert_eq!(int(row, "backend_errors"), 0, "{system}");
        for column in ["matches", "alerts"] {
            assert_eq!(int(row, column), int(&rows[0], column), "{system}: {column} as the baseline's");
        }
        let reads = int(row, "global_reads");
        match system.as_str() {
            "baseline" => assert_eq!(reads, 0, "the baseline shares nothing"),
            _ => assert!(reads > 0, "{system} read global state"),
        }
    }
    assert!(int(&rows[0], "alerts") > 0, "the threshold is low enough for alerts");
    // Each instance's stream, counted by the ids matcher itself.
    let matcher = nf_ids::Ids::from_config("pattern = attack\npattern = evil\n").unwrap();
    let truth: usize = (0..2)
        .map(|i| {
            let spec =
                format!("seed={},first={},flows=50,packets=3000,share=0.05,patterns=attack|evil", 1001 + i, i * 50);
            synthetic(&spec.parse::<SynthConfig>().unwrap()).map(|p| matcher.count_matches(&p.payload)).sum::<usize>()
        })
        .sum();
    assert_eq!(int(&rows[0], "matches"), truth as i64);
    assert_eq!(csv_rows(&out.join("fig5-medians.csv")).len(), 4);
    assert_png(&out.join("fig5.png"));
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn fig4_short_moved_counters_continue_only_with_estate() {
    let out = out_dir("fig4");
    let args =
        ["fig4", "--packets", "20000", "--flows", "40", "--share", "0.05", "--rate", "5000", "--sample-ms", "100"];
    experiment(&args, &out);
    let rows = csv_rows(&out.join("fig4.csv"));
    let matcher = nf_ids::Ids::from_config("pattern = attack\npattern = evil\n").unwrap();
    let spec = "seed=4,flows=40,packets=20000,share=0.05,patterns=attack|evil";
    let truth: usize =
        synthetic(&spec.parse::<SynthConfig>().unwrap()).map(|p| matcher.count_matches(&p.payload)).sum();
    let runs: Vec<(&str, &str)> = rows.iter().map(|r| (r["case"].as_str(), r["system"].as_str())).collect();
    assert_eq!(
        runs,
        [("scale-out", "baseline"), ("scale-out", "estate"), ("scale-in", "baseline"), ("scale-in", "estate")]
    );
    for row in &rows {
        let run = format!("{} {}", row["case"], row["system"]);
        // Every match in the traffic is counted once, in total and over the flows.
        assert_eq!(int(row, "matches"), truth as i64, "{run}");
        assert_eq!(int(row, "flow_matches"), truth as i64, "{run}");
        let moved = int(row, "moved_flows");
        assert!(moved > 0, "{run}: flows moved");
        if row["system"] == "estate" {
            assert_eq!(int(row, "moved_continued"), moved, "{run}: every moved flow's counter continues");
            assert_eq!(int(row, "missed"), 0, "{run}: every flow over the threshold alerted");
            assert!(int(row, "alerted") > 0, "{run}");
        } else {
            assert!(int(row, "moved_restarted") > 0, "{run}: moved counters restart");
            assert!(int(row, "missed") > 0, "{run}: an alert that needs both sides of the move is missed");
        }
    }
    assert!(csv_rows(&out.join("fig4-samples.csv")).len() > 8);
    assert_png(&out.join("fig4.png"));
    let _ = std::fs::remove_dir_all(&out);
}

/// The processes whose parent is `parent` and whose command is `name`.
fn children(parent: u32, name: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // `pid (comm) state ppid …`; comm may hold spaces, so split after its `)`.
        let Some((head, rest)) = stat.rsplit_once(") ") else { continue };
        let comm = head.split_once(" (").map(|(_, c)| c).unwrap_or_default();
        let ppid = rest.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) && comm == name {
            found.push(pid);
        }
    }
    found
}

/// Ctrl-C (SIGINT) in the middle of a run stops the run's Redis servers and instances
/// and says so.
#[test]
fn an_interrupted_experiment_stops_its_servers_and_instances() {
    let out = out_dir("interrupted");
    let child = estate()
        .args(["experiment", "fig5", "--instances", "2", "--repetitions", "1", "--systems", "clustermem"])
        .args(["--duration", "120", "--out"])
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let (servers, instances) = loop {
        let (servers, instances) = (children(pid, "redis-server"), children(pid, "estate"));
        if servers.len() == 3 && instances.len() == 2 {
            break (servers, instances);
        }
        assert!(std::time::Instant::now() < deadline, "the run never got its 3 servers and 2 instances");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(std::process::Command::new("kill").args(["-INT", &pid.to_string()]).status().unwrap().success());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("stopped by a signal"), "{stderr}");
    for pid in servers.iter().chain(&instances) {
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "process {pid} outlived the run");
    }
    let _ = std::fs::remove_dir_all(&out);
}
