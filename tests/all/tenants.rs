//! Tenants and operators with real `estate` processes: three nodes sharing a tenants
//! file (tenants `a` and `b`) and a control credentials file. A tenant sees only its
//! own keys through every control request, on every node; quotas refuse by name for
//! one tenant only; a request with no, a wrong, a revoked or another tenant's
//! credential is refused, counted and logged.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::{NodeProc, TIMING, estate, guest_path};

const TENANTS: &str = "\
[tenants.a]
keys = 6
reducers = 1

[tenants.b]
";

/// A directory of the test's files, removed when dropped.
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The files a secured cluster needs: tenants, the node's credentials file, and one
/// client credential file per principal (made with `estate credential`).
struct Setup {
    dir: Dir,
    tenants: PathBuf,
    credentials: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let dir = std::env::temp_dir().join(format!("estate-tenants-{}-{}", std::process::id(), rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        let tenants = dir.join("tenants.toml");
        std::fs::write(&tenants, TENANTS).unwrap();
        let credentials = dir.join("credentials");
        let mut lines = String::from("# principal sha256:digest of its secret\n");
        for principal in ["admin", "tenant:a", "tenant:b"] {
            lines.push_str(&Setup::credential(&dir, principal));
            lines.push('\n');
        }
        std::fs::write(&credentials, lines).unwrap();
        Setup { dir: Dir(dir), tenants, credentials }
    }

    /// Runs `estate credential PRINCIPAL --out FILE`; returns the line it printed.
    fn credential(dir: &Path, principal: &str) -> String {
        let out =
            estate().args(["credential", principal, "--out"]).arg(Setup::file_in(dir, principal)).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let line = String::from_utf8(out.stdout).unwrap().trim().to_string();
        assert!(line.starts_with(&format!("{principal} sha256:")), "{line}");
        let file = Setup::file_in(dir, principal);
        let secret = std::fs::read_to_string(&file).unwrap();
        assert!(!line.contains(secret.split_whitespace().nth(1).unwrap()), "the node's line holds no secret");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        line
    }

    fn file_in(dir: &Path, principal: &str) -> PathBuf {
        dir.join(principal.replace(':', "-"))
    }

    fn file(&self, principal: &str) -> PathBuf {
        Setup::file_in(&self.dir.0, principal)
    }

    fn args(&self) -> Vec<String> {
        let (t, c) = (self.tenants.display().to_string(), self.credentials.display().to_string());
        vec!["--tenants".into(), t, "--credentials".into(), c]
    }

    /// Three nodes n1..n3, the CLI of each as the admin.
    fn cluster(&self) -> Vec<NodeProc> {
        let args = self.args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut first = NodeProc::start_timed("n1", &[], &TIMING, &args);
        first.credential = Some(self.file("admin"));
        let seed = first.listen.clone();
        let mut nodes = vec![first];
        for id in ["n2", "n3"] {
            let mut node = NodeProc::start_timed(id, &[&seed], &TIMING, &args);
            node.credential = Some(self.file("admin"));
            nodes.push(node);
        }
        for node in &nodes {
            node.wait_members(&["n1", "n2", "n3"]);
        }
        nodes
    }
}

/// `estate --control NODE --credential FILE ARGS`.
fn as_principal(node: &NodeProc, file: &Path, args: &[&str]) -> Output {
    estate().args(["--control", &node.control]).arg("--credential").arg(file).args(args).output().unwrap()
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn err(out: Output) -> String {
    assert!(!out.status.success(), "succeeded: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8(out.stderr).unwrap()
}

/// (exit code, stdout, stderr): what a client can tell of an answer.
fn seen(out: Output) -> (Option<i32>, String, String) {
    (out.status.code(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

#[test]
fn a_tenant_sees_only_its_own_keys_through_every_request_on_every_node() {
    let setup = Setup::new();
    let nodes = setup.cluster();
    let (a, b) = (setup.file("tenant:a"), setup.file("tenant:b"));
    for (i, node) in nodes.iter().enumerate() {
        // Each node its own flow, so a hand-off merges no two writes of one key.
        let key = format!("flow:x{i}:n");
        ok(as_principal(node, &a, &["set", &key, &(i + 1).to_string()]));
        ok(as_principal(node, &b, &["set", &key, "100"]));
    }
    ok(as_principal(&nodes[0], &a, &["set", "a-only", "secret"]));
    // "Another tenant's key" and "absent" give the same answer.
    assert_eq!(
        seen(as_principal(&nodes[0], &b, &["get", "a-only"])),
        seen(as_principal(&nodes[0], &b, &["get", "nope"]))
    );
    assert_eq!(ok(as_principal(&nodes[0], &b, &["del", "a-only"])), "0");
    assert_eq!(ok(as_principal(&nodes[0], &a, &["get", "a-only"])), "\"secret\"", "b's delete reached nothing of a's");
    // Global reads, fetch-all and pushed down, with the widest pattern.
    let sum = |file: &Path, pattern: &str, extra: &[&str]| {
        let mut args = vec!["global", pattern, "--reduce", "sum", "--json", "--consistency", "all"];
        args.extend_from_slice(extra);
        let v: serde_json::Value = serde_json::from_str(&ok(as_principal(&nodes[1], file, &args))).unwrap();
        v["result"].as_f64().or_else(|| v["result"].as_i64().map(|n| n as f64)).unwrap()
    };
    // b's widest read sums: it never meets a's text value (a sum would fail on it).
    assert_eq!(sum(&b, ".*", &[]), 300.0);
    assert_eq!(sum(&b, ".*", &["--remote"]), 300.0);
    assert_eq!(sum(&a, "flow:.*", &["--remote"]), 6.0);
    assert_eq!(sum(&a, "flow:.*", &[]), 6.0);
    let count = |file: &Path| ok(as_principal(&nodes[2], file, &["global", "a-.*", "--reduce", "count"]));
    assert_eq!((count(&a), count(&b)), ("1".to_string(), "0".to_string()));
    // The same reducer name in a and b: two reducers.
    ok(as_principal(&nodes[0], &a, &["reducer", "load", "agg", &guest_path("reducer_sum")]));
    ok(as_principal(&nodes[0], &b, &["reducer", "load", "agg", &guest_path("reducer_mean")]));
    // Pushed down: n2 and n3 fetch each tenant's module from n1 for that tenant's read.
    let agg = |file: &Path| {
        let args =
            ["global", "flow:.*", "--reduce", "agg", "--remote", "--consistency", "all", "--timeout-ms", "20000"];
        ok(as_principal(&nodes[0], file, &args))
    };
    assert_eq!((agg(&a), agg(&b)), ("6".to_string(), "100.0".to_string()), "a: sum of 1+2+3; b: mean of 100s");
    for node in &nodes[1..] {
        let stats = |t: &str| -> serde_json::Value {
            serde_json::from_str(&node.ok(&["--tenant", t, "stats", "--json"])).unwrap()
        };
        assert_eq!(
            (stats("a")["modules"].as_u64(), stats("b")["modules"].as_u64()),
            (Some(1), Some(1)),
            "{}: one module each",
            node.id
        );
    }
    let list = ok(as_principal(&nodes[0], &b, &["reducer", "list"]));
    assert_eq!(list.lines().filter(|l| l.contains("wasm")).count(), 1, "b lists its own reducer only: {list}");
    // The admin acts for a tenant only when it names one.
    assert_eq!(nodes[0].ok(&["--tenant", "a", "get", "a-only"]), "\"secret\"");
    assert_ne!(nodes[0].cli(&["get", "a-only"]).status.code(), Some(0), "the admin's default tenant is not a's");
    // A scale-in hands both tenants' state over; each tenant's sum is unchanged.
    let mut leaving = nodes.into_iter();
    let (n1, n2, mut n3) = (leaving.next().unwrap(), leaving.next().unwrap(), leaving.next().unwrap());
    ok(n3.cli(&["leave"]));
    n3.wait_exit(std::time::Duration::from_secs(30));
    n1.wait_members(&["n1", "n2"]);
    let sum_on = |node: &NodeProc, file: &Path| ok(as_principal(node, file, &["global", "flow:.*", "--reduce", "sum"]));
    assert_eq!((sum_on(&n1, &a), sum_on(&n1, &b)), ("6".to_string(), "300".to_string()));
    assert_eq!(ok(as_principal(&n2, &a, &["global", "a-.*", "--reduce", "count"])), "1");
}

#[test]
fn quotas_refuse_by_name_for_that_tenant_only() {
    let setup = Setup::new();
    let node = NodeProc::start_timed("q1", &[], &TIMING, &setup.args().iter().map(String::as_str).collect::<Vec<_>>());
    let (a, b) = (setup.file("tenant:a"), setup.file("tenant:b"));
    for i in 0..6 {
        ok(as_principal(&node, &a, &["set", &format!("k{i}"), "1"]));
    }
    let refused = err(as_principal(&node, &a, &["set", "k6", "1"]));
    assert!(refused.contains("quota keys of 6"), "{refused}");
    ok(as_principal(&node, &a, &["set", "k0", "2"]));
    for i in 0..10 {
        ok(as_principal(&node, &b, &["set", &format!("k{i}"), "1"]));
    }
    ok(as_principal(&node, &a, &["reducer", "load", "one", &guest_path("reducer_sum")]));
    let refused = err(as_principal(&node, &a, &["reducer", "load", "two", &guest_path("reducer_mean")]));
    assert!(refused.contains("quota reducers of 1"), "{refused}");
    ok(as_principal(&node, &b, &["reducer", "load", "two", &guest_path("reducer_mean")]));
    let stats = |file: &Path| -> serde_json::Value {
        serde_json::from_str(&ok(as_principal(&node, file, &["stats", "--json"]))).unwrap()
    };
    let (sa, sb) = (stats(&a), stats(&b));
    assert_eq!(
        (sa["keys"].as_u64(), sa["refused.keys"].as_u64(), sa["refused.reducers"].as_u64()),
        (Some(6), Some(1), Some(1))
    );
    assert_eq!((sb["keys"].as_u64(), sb["refused.keys"].as_u64()), (Some(10), Some(0)));
    assert!(sb.get("refused.reducers").is_none(), "b was refused nothing: {sb}");
    assert!(sa.get("frames").is_none(), "a tenant does not see the node's counters: {sa}");
}

#[test]
fn control_requests_need_an_accepted_credential_of_the_right_principal() {
    let setup = Setup::new();
    let mut node =
        NodeProc::start_timed("c1", &[], &TIMING, &setup.args().iter().map(String::as_str).collect::<Vec<_>>());
    let (a, b) = (setup.file("tenant:a"), setup.file("tenant:b"));
    // No credential, a wrong one, another tenant's, an admin-only request.
    assert!(err(node.cli(&["get", "k"])).contains("requires a credential"));
    let wrong = setup.dir.0.join("wrong");
    std::fs::write(&wrong, "tenant:a not-the-secret\n").unwrap();
    assert!(err(as_principal(&node, &wrong, &["get", "k"])).contains("credential not accepted"));
    assert!(err(as_principal(&node, &a, &["--tenant", "b", "get", "k"])).contains("refused"));
    assert!(err(as_principal(&node, &b, &["members"])).contains("the admin's"));
    assert!(err(as_principal(&node, &a, &["leave"])).contains("the admin's"));
    assert!(err(as_principal(&node, &a, &["--tenant", "ghost", "get", "k"])).contains("refused"));
    // Revoking a's credential holds from the next request on.
    ok(as_principal(&node, &a, &["set", "k", "1"]));
    let text = std::fs::read_to_string(&setup.credentials).unwrap();
    let kept: String = text.lines().filter(|l| !l.starts_with("tenant:a ")).map(|l| format!("{l}\n")).collect();
    std::fs::write(&setup.credentials, kept).unwrap();
    assert!(err(as_principal(&node, &a, &["get", "k"])).contains("credential not accepted"));
    let (code, _, stderr) = seen(as_principal(&node, &b, &["get", "nope"]));
    assert_eq!((code, stderr.trim()), (Some(1), "not found"), "b's credential still holds");
    node.credential = Some(setup.file("admin"));
    assert_eq!(node.ok(&["--tenant", "a", "get", "k"]), "1", "a's state stays; the admin reaches it");
    let stats = node.stats();
    assert_eq!(stats["control_unauthenticated"].as_u64(), Some(3), "{stats}");
    assert_eq!(stats["control_forbidden"].as_u64(), Some(4), "{stats}");
    // The admin naming a tenant the node does not have: refused, counted as such.
    assert!(err(node.cli(&["--tenant", "ghost", "get", "k"])).contains("unknown tenant \"ghost\""));
    let stats = node.stats();
    assert_eq!((stats["unknown_tenant"].as_u64(), stats["control_forbidden"].as_u64()), (Some(1), Some(4)), "{stats}");
    let log: serde_json::Value = serde_json::from_str(&node.ok(&["security-log", "--json"])).unwrap();
    let entries = log.as_array().unwrap();
    let has =
        |reason: &str, principal: &str| entries.iter().any(|e| e["reason"] == reason && e["principal"] == principal);
    assert!(has("unauthenticated", "-") && has("unauthenticated", "tenant:a") && has("forbidden", "tenant:b"), "{log}");
    let printed = log.to_string();
    for secret in [&a, &b].map(|f| std::fs::read_to_string(f).unwrap().split_whitespace().nth(1).unwrap().to_string()) {
        assert!(!printed.contains(&secret), "the log never holds a secret");
    }
    assert!(err(as_principal(&node, &b, &["security-log"])).contains("the admin's"));
}

#[test]
fn a_control_socket_reachable_from_other_machines_needs_credentials() {
    let out = estate()
        .args(["--control", "tcp://0.0.0.0:*", "node", "--id", "x", "--listen", "tcp://127.0.0.1:*"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("give a credentials file") && stderr.contains("--insecure"),
        "{stderr}"
    );
}

#[test]
fn an_nf_reaches_only_the_keys_of_the_tenant_owning_the_nf_place() {
    let setup = Setup::new();
    let mut args = setup.args();
    let nf = guest_path("nf_count");
    args.extend(
        ["--nf-tenant", "b", "--nf", &nf, "--input", "synth:seed=3,flows=20,packets=2000,share=0"].map(String::from),
    );
    let mut node = NodeProc::start_timed("f1", &[], &TIMING, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let (a, b) = (setup.file("tenant:a"), setup.file("tenant:b"));
    // a's key under the name the NF writes: the NF never reaches it.
    ok(as_principal(&node, &a, &["set", "count:packets", "42"]));
    node.credential = Some(setup.file("admin"));
    node.wait_stat("nf_packets", 2000);
    assert_eq!(ok(as_principal(&node, &b, &["get", "count:packets"])), "2000");
    assert_eq!(ok(as_principal(&node, &b, &["global", "flow:.*:packets", "--reduce", "sum"])), "2000");
    assert_eq!(ok(as_principal(&node, &a, &["get", "count:packets"])), "42");
    assert_eq!(ok(as_principal(&node, &a, &["global", "flow:.*", "--reduce", "count"])), "0");
    // The NF place is b's: a may not load, replace, unload or query it.
    assert!(err(as_principal(&node, &a, &["nf", "status"])).contains("another tenant"));
    assert_eq!(ok(as_principal(&node, &b, &["nf", "status"])), "finished");
    let sa: serde_json::Value = serde_json::from_str(&ok(as_principal(&node, &a, &["stats", "--json"]))).unwrap();
    assert!(sa.get("nf_packets").is_none(), "the NF's counters are b's: {sa}");
}
