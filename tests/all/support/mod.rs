//! Real `estate` processes on loopback for integration tests.
#![allow(dead_code)]

pub mod netns;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Fast failure detection so tests do not wait long.
pub const TIMING: [&str; 6] = ["--heartbeat-ms", "100", "--suspect-ms", "400", "--remove-ms", "1200"];

/// Failure detection that suspects a silent member as fast as [`TIMING`] but removes
/// none within any test's lifetime (10 minutes): a member that a node with this timing
/// drops must have announced its leave, and a dead member stays (suspect) in its view.
pub const NO_REMOVAL: [&str; 6] = ["--heartbeat-ms", "100", "--suspect-ms", "400", "--remove-ms", "600000"];

/// One `estate node` process. Killed when dropped.
pub struct NodeProc {
    pub id: String,
    pub listen: String,
    pub control: String,
    /// The steered input's endpoint (`--input steer:…`), if the node has one.
    pub steer: Option<String>,
    pub log: PathBuf,
    /// The credential file `cli` sends (`--credential`), for a node that requires one.
    pub credential: Option<PathBuf>,
    child: Child,
}

pub fn estate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_estate"))
}

impl NodeProc {
    /// Starts node `id` on ephemeral ports, joining through `join`.
    pub fn start(id: &str, join: &[&str]) -> NodeProc {
        NodeProc::start_with(id, join, &[])
    }

    /// Like [`NodeProc::start`], with more `estate node` arguments.
    pub fn start_with(id: &str, join: &[&str], extra: &[&str]) -> NodeProc {
        NodeProc::start_timed(id, join, &TIMING, extra)
    }

    /// Like [`NodeProc::start_with`], with the failure detection flags `timing` (e.g.
    /// [`TIMING`], [`NO_REMOVAL`]) instead of [`TIMING`].
    pub fn start_timed(id: &str, join: &[&str], timing: &[&str], extra: &[&str]) -> NodeProc {
        NodeProc::spawn(estate(), id, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*", join, timing, extra)
    }

    /// Starts node `id` inside the network namespace `ns`, listening for peers at
    /// `listen` (an address of that namespace); its control endpoint is a Unix socket,
    /// which the test reaches from outside the namespace.
    pub fn start_in_ns(ns: &str, id: &str, listen: &str, join: &[&str], extra: &[&str]) -> NodeProc {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_estate")]);
        let control = format!(
            "ipc://{}/estate-{}-{id}-{}.ctl",
            std::env::temp_dir().display(),
            std::process::id(),
            rand_suffix()
        );
        NodeProc::spawn(cmd, id, &control, listen, join, &TIMING, extra)
    }

    fn spawn(
        mut cmd: Command,
        id: &str,
        control: &str,
        listen: &str,
        join: &[&str],
        timing: &[&str],
        extra: &[&str],
    ) -> NodeProc {
        let log = std::env::temp_dir().join(format!("estate-test-{}-{id}-{}.log", std::process::id(), rand_suffix()));
        cmd.args(["--control", control, "node", "--id", id, "--listen", listen]);
        for j in join {
            cmd.args(["--join", j]);
        }
        cmd.args(timing);
        cmd.args(extra);
        cmd.env("RUST_LOG", "info,estate=debug");
        let mut child =
            cmd.stdout(Stdio::piped()).stderr(std::fs::File::create(&log).unwrap()).spawn().expect("spawn estate node");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        if line.is_empty() {
            let _ = child.wait();
            panic!("node {id} did not start: {}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        let optional =
            |name: &str| line.split_whitespace().find_map(|f| f.strip_prefix(&format!("{name}="))).map(String::from);
        let field = |name: &str| optional(name).unwrap_or_else(|| panic!("no {name} in {line:?}"));
        NodeProc {
            id: id.into(),
            listen: field("listen"),
            control: field("control"),
            steer: optional("steer"),
            log,
            credential: None,
            child,
        }
    }

    /// Runs `estate --control <this node> ARGS`.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = estate();
        cmd.args(["--control", &self.control]).args(args);
        if let Some(credential) = &self.credential {
            cmd.arg("--credential").arg(credential);
        }
        cmd.env_remove("ESTATE_CREDENTIAL").env_remove("ESTATE_CREDENTIAL_FILE").output().unwrap()
    }

    /// Runs the CLI, asserts success, returns trimmed stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(out.status.success(), "estate {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// `global ... --json`, parsed.
    pub fn global(&self, pattern: &str, reducer: &str, extra: &[&str]) -> serde_json::Value {
        let mut args = vec!["global", pattern, "--reduce", reducer, "--json"];
        args.extend_from_slice(extra);
        serde_json::from_str(&self.ok(&args)).unwrap()
    }

    /// Ids of the members this node sees (itself included), sorted.
    pub fn members(&self) -> Vec<String> {
        let v: serde_json::Value = serde_json::from_str(&self.ok(&["members", "--json"])).unwrap();
        let mut ids: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["state"] != "joining")
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    }

    /// Waits (bounded) until this node sees exactly `ids` as live members.
    pub fn wait_members(&self, ids: &[&str]) {
        let want: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let seen = self.members();
            if seen == want {
                return;
            }
            assert!(Instant::now() < deadline, "{} sees {seen:?}, wanted {want:?}", self.id);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (bounded) until the counter `name` reaches `value`; returns all counters.
    pub fn wait_stat(&self, name: &str, value: u64) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let stats = self.stats();
            if stats[name].as_u64() >= Some(value) {
                return stats;
            }
            assert!(Instant::now() < deadline, "{name} never reached {value}: {stats}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The node's counters.
    pub fn stats(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["stats", "--json"])).unwrap()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits (bounded, a minute) for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success(), "kill -TERM {pid} ({}): {sent:?}", self.id);
        self.wait_exit(Duration::from_secs(60))
    }

    /// The integer counter at `key`: 0 if the node answers that there is no such key
    /// (counters are created by their first add). Fails the test if the call fails in
    /// any other way or the value is not an integer.
    pub fn counter(&self, key: &str) -> i64 {
        let out = self.cli(&["get", key, "--json"]);
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if !out.status.success() {
            // `get` exits with 1, prints `null` and says "not found" for a missing key,
            // and only then.
            let absent = out.status.code() == Some(1) && stdout.trim() == "null" && stderr.trim() == "not found";
            assert!(absent, "{}: estate get {key} failed ({:?}): {stdout}{stderr}", self.id, out.status);
            return 0;
        }
        let got: serde_json::Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("{}: estate get {key} --json printed {stdout:?}: {e}", self.id));
        got["value"].as_i64().unwrap_or_else(|| panic!("{}: {key} is not an integer: {got}", self.id))
    }

    /// The removals this node logged, in order: (member, reason), the reason being
    /// `Left` (it announced its leave) or `Failed` (failure detection removed it).
    pub fn removals(&self) -> Vec<(String, String)> {
        let field = |line: &str, name: &str| {
            line.split_whitespace().find_map(|f| f.strip_prefix(name)).map(String::from).unwrap_or_default()
        };
        self.log_text()
            .lines()
            .filter(|line| line.contains("member removed"))
            .map(|line| (field(line, "member="), field(line, "reason=")))
            .collect()
    }

    /// The integers this node itself holds under keys matching `pattern` (key → value),
    /// read with a global `list`.
    pub fn held_ints(&self, pattern: &str) -> std::collections::BTreeMap<String, i64> {
        let answer = self.global(pattern, "list", &[]);
        answer["result"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["origin"] == self.id.as_str())
            .filter_map(|i| Some((i["key"].as_str()?.to_string(), i["value"].as_i64()?)))
            .collect()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Two in-process nodes on loopback (the library's `Node`), `second` joined through
/// `first`, returned once `first` sees `second` alive; `configure` adjusts each node's
/// configuration first.
pub fn in_process_pair(
    first: &str,
    second: &str,
    configure: impl Fn(&mut estate::node::NodeConfig),
) -> (estate::node::Node, estate::node::Node) {
    use estate::node::{Node, NodeConfig};
    let start = |id: &str, join: Option<&Node>| {
        let mut config = NodeConfig::new(id, "tcp://127.0.0.1:*");
        configure(&mut config);
        config.join = join.map(|n| vec![n.endpoint().to_string()]).unwrap_or_default();
        Node::start(config).unwrap()
    };
    let a = start(first, None);
    let b = start(second, Some(&a));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !a.members().iter().any(|m| m.id == second && m.state == "alive") {
        assert!(Instant::now() < deadline, "{second} never joined");
        std::thread::sleep(Duration::from_millis(10));
    }
    (a, b)
}

/// Starts `n` nodes `n1..=n<n>`, the later ones joining through the first, and waits
/// until every node sees all of them.
pub fn cluster(n: usize) -> Vec<NodeProc> {
    cluster_timed(n, &TIMING)
}

/// Like [`cluster`], every node with the failure detection flags `timing`.
pub fn cluster_timed(n: usize, timing: &[&str]) -> Vec<NodeProc> {
    let first = NodeProc::start_timed("n1", &[], timing, &[]);
    let seed = first.listen.clone();
    let mut nodes = vec![first];
    for i in 2..=n {
        nodes.push(NodeProc::start_timed(&format!("n{i}"), &[&seed], timing, &[]));
    }
    let ids: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    for node in &nodes {
        node.wait_members(&ids);
    }
    nodes
}

impl NodeProc {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// The path of a built guest module (`reducer_sum`, `nf_ids`, …).
pub fn guest_path(name: &str) -> String {
    estate::guests::ALL
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("guest {name} not built"))
        .1
        .to_string()
}

impl NodeProc {
    /// Waits (bounded) for the process to exit by itself; returns its status.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "{} did not exit within {within:?}", self.id);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
