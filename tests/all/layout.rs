//! The architecture's never-rules (docs/ARCHITECTURE.md, "Rules"), checked on the
//! source tree: which module may import what, and how large a file may grow.
//!
//! Comment lines are skipped, so documentation may name what code may not use.

use std::path::{Path, PathBuf};

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
const MAX_LINES: usize = 600;

/// Every Rust file under `runtime/src`, by path relative to it, with its code lines
/// (comments dropped).
fn sources() -> Vec<(String, Vec<String>)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut paths = Vec::new();
    walk(Path::new(SRC), &mut paths);
    paths.sort();
    assert!(paths.len() > 20, "the tree was found: {paths:?}");
    paths
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(SRC).unwrap().to_string_lossy().replace('\\', "/");
            let text = std::fs::read_to_string(&p).unwrap();
            let code = text.lines().filter(|l| !l.trim_start().starts_with("//")).map(String::from).collect();
            (rel, code)
        })
        .collect()
}

/// Files (outside `allowed`) whose code mentions any of `tokens`, with the line.
fn offenders(tokens: &[&str], within: impl Fn(&str) -> bool, allowed: impl Fn(&str) -> bool) -> Vec<String> {
    let mut found = Vec::new();
    for (file, lines) in sources() {
        if !within(&file) || allowed(&file) {
            continue;
        }
        for (n, line) in lines.iter().enumerate() {
            if let Some(token) = tokens.iter().find(|t| line.contains(*t)) {
                found.push(format!("{file}: `{token}` in {:?} (code line {})", line.trim(), n + 1));
            }
        }
    }
    found
}

fn everywhere(_: &str) -> bool {
    true
}

#[test]
fn no_file_is_over_the_size_limit() {
    let large: Vec<String> = sources()
        .into_iter()
        .map(|(file, _)| {
            let lines = std::fs::read_to_string(Path::new(SRC).join(&file)).unwrap().lines().count();
            (file, lines)
        })
        .filter(|(_, lines)| *lines > MAX_LINES)
        .map(|(file, lines)| format!("{file}: {lines} lines"))
        .collect();
    assert!(large.is_empty(), "over {MAX_LINES} lines: {large:#?}");
}

#[test]
fn the_store_imports_only_the_clock_and_patterns() {
    let mut found = Vec::new();
    for (file, lines) in sources().into_iter().filter(|(f, _)| f.starts_with("store/")) {
        for line in lines {
            for (i, _) in line.match_indices("crate::") {
                let module: String = line[i + 7..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !["store", "hlc", "pattern"].contains(&module.as_str()) {
                    found.push(format!("{file}: crate::{module} in {:?}", line.trim()));
                }
            }
        }
    }
    assert!(found.is_empty(), "the store is the bottom: {found:#?}");
}

#[test]
fn the_protocol_core_and_the_secure_channel_have_no_sockets_threads_clocks_or_randomness() {
    let found = offenders(
        &["zmq", "std::thread", "thread::", "Instant", "SystemTime", "rand::", "sleep(", "std::fs", "getrandom"],
        |f| f.starts_with("peering/proto/") || f.starts_with("peering/secure/"),
        |_| false,
    );
    assert!(found.is_empty(), "peering/proto and peering/secure are sans-IO: {found:#?}");
}

#[test]
fn snow_is_used_only_by_the_secure_channel() {
    let found = offenders(&["snow::"], everywhere, |f| f.starts_with("peering/secure/"));
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn zeromq_is_used_only_where_sockets_belong() {
    let allowed = |f: &str| {
        f.starts_with("peering/driver/")
            || f == "control/client.rs"
            || f == "nf/input/steer.rs"
            || f.starts_with("switch/")
    };
    let found = offenders(&["zmq::", "use zmq"], everywhere, allowed);
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn wasmtime_is_used_only_by_the_wasm_host() {
    let found = offenders(&["wasmtime"], everywhere, |f| f.starts_with("wasm/"));
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn bincode_is_used_only_by_the_wire_codec() {
    let found = offenders(&["bincode"], everywhere, |f| f.starts_with("wire/"));
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn redis_is_used_only_by_the_state_backends() {
    let found = offenders(&["redis::"], everywhere, |f| f.starts_with("backend/"));
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn libpcap_is_used_only_by_the_live_inputs() {
    // The crate, not the module `nf::input::pcap` (pcap files, read with `pcap-file`).
    let tokens = ["use pcap::", "pcap::Capture", "pcap::Active", "pcap::Error", "pcap::Direction", "pcap::Packet<"];
    let found = offenders(&tokens, everywhere, |f| f == "nf/input/live.rs");
    assert!(found.is_empty(), "pcap outside nf/input/live.rs: {found:?}");
}

#[test]
fn the_library_needs_nothing_of_the_binary() {
    // The binary's own dependencies, and untyped errors, stay in the binary.
    let found = offenders(
        &["clap", "signal_hook", "tracing_subscriber", "serde_json", "anyhow", "plotters", "csv::"],
        everywhere,
        |f| f.starts_with("bin/"),
    );
    assert!(found.is_empty(), "{found:#?}");
}
