//! Helpers of the tests that run real traffic in network namespaces (`estate::testbed`).

use std::time::Duration;

use estate::testbed::{End, Process, Testbed};

/// The HTTP server the tests run in a namespace (docs/testbed.md).
pub const HTTP_SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/netns/http_server.py");

/// The port it listens on.
pub const PORT: u16 = 8080;

/// Fails the test, saying why, unless it runs as root.
pub fn need_root() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let uid = status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|l| l.split_whitespace().nth(1));
    assert_eq!(uid, Some("0"), "these tests make network namespaces and capture in them: run them as root");
}

/// Starts the HTTP server on `end` and waits until it listens.
pub fn http_server(tb: &Testbed, end: End) -> Process {
    let host = tb.end(end);
    let server = tb.spawn(&host.ns, ["python3", HTTP_SERVER, &host.ip.to_string(), &PORT.to_string()]).unwrap();
    tb.wait_listening(&host.ns, PORT, Duration::from_secs(10)).unwrap();
    server
}
