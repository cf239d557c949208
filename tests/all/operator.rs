//! What operators touch: `estate node --config FILE` and `--log-format json`.

use crate::support::{self, NodeProc};

fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("estate-test-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_config_file_carries_the_flags_and_the_command_line_overrides_it() {
    let a = NodeProc::start("a", &[]);
    // The file names a join seed and an id; the command line's `--id b` wins.
    let file = write_config("b", &format!("id = \"from-file\"\njoin = [\"{}\"]\nheartbeat_ms = 100\n", a.listen));
    let b = NodeProc::start_with("b", &[], &["--config", file.to_str().unwrap(), "--log-format", "json"]);
    b.wait_members(&["a", "b"]);
    a.wait_members(&["a", "b"]);
    assert_eq!(b.members(), ["a", "b"], "b runs under the id of the command line, not the file's");
    // Every log line is one JSON object with a level and a message.
    let log = b.log_text();
    let lines: Vec<serde_json::Value> =
        log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    assert!(lines.iter().any(|l| l["fields"]["message"] == "node started" && l["fields"]["id"] == "b"), "{log}");
    assert!(lines.iter().all(|l| l["level"].is_string()), "{log}");
    let _ = std::fs::remove_file(file);
}

#[test]
fn a_misspelt_config_setting_stops_the_node_with_a_message_naming_it() {
    let file = write_config("bad", "id = \"x\"\nlisten = \"tcp://127.0.0.1:*\"\nhartbeat-ms = 100\n");
    let out = support::estate().args(["node", "--config", file.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown setting `hartbeat-ms`") && stderr.contains(file.to_str().unwrap()), "{stderr}");
    let _ = std::fs::remove_file(file);
}
