//! Helpers of the tests that run real traffic in network namespaces (`estate::testbed`).

use std::process::Output;
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

/// `curl` on `from` for `path` on the other end's HTTP server, with extra arguments,
/// giving up after `max_secs`.
pub fn curl(tb: &Testbed, from: End, path: &str, max_secs: u32, extra: &[&str]) -> Output {
    let to = if from == End::Src { End::Dst } else { End::Src };
    let url = format!("http://{}:{PORT}{path}", tb.end(to).ip);
    let mut curl = tb.command(&tb.end(from).ns, "curl");
    curl.args(["-sS", "--max-time", &max_secs.to_string()]).args(extra).arg(&url).output().unwrap()
}

/// The client address and port the server saw, from the `peer=IP:PORT` of its page.
pub fn peer_of(page: &str) -> (String, u16) {
    let peer = page.split("peer=").nth(1).and_then(|p| p.split(['<', '\n']).next());
    let (ip, port) = peer.and_then(|p| p.split_once(':')).unwrap_or_else(|| panic!("no peer= in {page:?}"));
    (ip.to_string(), port.parse().unwrap_or_else(|_| panic!("bad port in {page:?}")))
}
