//! Wasm reducers hot-loaded into running `estate` processes: load, replace, unload,
//! push-down to peers by content hash, and hostile modules that must fail cleanly while
//! the node keeps serving.

use crate::support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{NodeProc, cluster, guest_path};

/// Writes a WAT reducer whose `estate_reduce` body is `body` to a temp file.
fn wat_file(name: &str, body: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("estate-hotload-{}-{name}.wat", std::process::id()));
    let text = format!(
        r#"(module
            (import "estate" "result" (func $result (param i32 i32)))
            (memory (export "memory") 1)
            (func (export "estate_abi_version") (result i32) i32.const 3)
            (func (export "estate_reducer_flags") (result i32) i32.const 1)
            (func (export "estate_alloc") (param i32) (result i32) i32.const 1024)
            (func (export "estate_reduce") (param i32 i32 i32) (result i32) {body}))"#
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// The state (`R` running or runnable, `S` sleeping, …) and CPU time (user + system,
/// in clock ticks) of thread `tid` of `node`'s process, from `/proc`.
fn worker_thread(node: &NodeProc, tid: u32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{}/task/{tid}/stat", node.pid())).ok()?;
    // `tid (comm) state ppid …`: fields from the state on; utime and stime are the
    // 14th and 15th of the whole line.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let state = fields[0].chars().next()?;
    Some((state, fields[11].parse::<u64>().ok()? + fields[12].parse::<u64>().ok()?))
}

/// Waits (bounded) until one of `node`'s worker threads (`estate-work-…`) is running
/// and using CPU, as one does while a guest spins; returns its id.
fn spinning_worker(node: &NodeProc) -> u32 {
    let workers = || -> Vec<(u32, char, u64)> {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", node.pid())).unwrap();
        tasks
            .filter_map(|task| {
                let tid: u32 = task.ok()?.file_name().to_str()?.parse().ok()?;
                let comm = std::fs::read_to_string(format!("/proc/{}/task/{tid}/comm", node.pid())).ok()?;
                comm.starts_with("estate-work-").then_some(())?;
                worker_thread(node, tid).map(|(state, cpu)| (tid, state, cpu))
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut before = workers();
    assert!(!before.is_empty(), "no worker threads in {}", node.id);
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = workers();
        let busy = now
            .iter()
            .find(|(tid, state, cpu)| *state == 'R' && before.iter().any(|(t, s, c)| t == tid && *s == 'R' && c < cpu));
        if let Some((tid, _, _)) = busy {
            return *tid;
        }
        assert!(Instant::now() < deadline, "no worker of {} spins: {now:?}", node.id);
        before = now;
    }
}

fn err_of(node: &NodeProc, args: &[&str]) -> String {
    let out = node.cli(args);
    assert!(!out.status.success(), "estate {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn load_replace_unload_and_push_down() {
    let nodes = cluster(3);
    for (i, n) in nodes.iter().enumerate() {
        n.ok(&["set", "c", &(5 * (i + 1)).to_string()]); // 5, 10, 15
        n.ok(&["set", &format!("flow:{i}"), "1"]);
    }
    let loaded = nodes[0].ok(&["reducer", "load", "agg", &guest_path("reducer_sum")]);
    assert!(loaded.starts_with("loaded agg sha256=") && loaded.ends_with("combinable=true"), "{loaded}");
    let list: serde_json::Value = serde_json::from_str(&nodes[0].ok(&["reducer", "list", "--json"])).unwrap();
    assert!(list.as_array().unwrap().iter().any(|r| r["name"] == "agg" && r["kind"] == "wasm"));

    // Fetch-all: n1 runs the guest over every node's items.
    assert_eq!(nodes[0].ok(&["global", "c", "--reduce", "agg"]), "30");
    // Push-down: n2 and n3 have never seen the module; they fetch it from n1 by hash,
    // check it, compile it, and each send one partial.
    // (The deadline is generous: the peers compile the module first, in a debug build,
    // possibly while the other test keeps a core busy.)
    let pushed = nodes[0].global("c", "agg", &["--remote", "--timeout-ms", "20000"]);
    assert_eq!(pushed["result"]["value"], json!(30), "{pushed}");
    assert_eq!(pushed["remote"], json!(true));
    assert_eq!(pushed["answered"], json!(["n1", "n2", "n3"]));
    // Built-ins push down too, with the same answers as fetch-all.
    for reducer in ["sum", "count", "avg", "min", "max", "latest"] {
        let fetch = nodes[1].global("c|flow:.*", reducer, &[]);
        let remote = nodes[1].global("c|flow:.*", reducer, &["--remote"]);
        assert_eq!(fetch["result"], remote["result"], "{reducer}");
    }

    // A second version under the same name changes the answers; no node restarts.
    nodes[0].ok(&["reducer", "load", "agg", &guest_path("reducer_mean")]);
    assert_eq!(nodes[0].ok(&["global", "c", "--reduce", "agg"]), "10.0");
    let pushed = nodes[0].global("c", "agg", &["--remote", "--timeout-ms", "20000"]);
    assert_eq!(pushed["result"]["value"], json!(10.0), "{pushed}");

    // A reducer that is not combinable is refused for push-down, with a clear error.
    nodes[0].ok(&["reducer", "load", "med", &guest_path("reducer_median")]);
    assert_eq!(nodes[0].ok(&["global", "c", "--reduce", "med"]), "10");
    let err = err_of(&nodes[0], &["global", "c", "--reduce", "med", "--remote"]);
    assert!(err.contains("not combinable"), "{err}");

    // Unloaded: unknown again; the built-ins cannot be shadowed.
    assert_eq!(nodes[0].ok(&["reducer", "unload", "agg"]), "1");
    assert!(err_of(&nodes[0], &["global", "c", "--reduce", "agg"]).contains("unknown reducer"));
    assert!(
        err_of(&nodes[0], &["reducer", "load", "sum", &guest_path("reducer_sum")]).contains("invalid reducer name")
    );
}

#[test]
fn hostile_reducers_fail_cleanly_while_the_node_serves() {
    let nodes = cluster(2);
    nodes[0].ok(&["set", "c", "1"]);
    nodes[1].ok(&["set", "c", "2"]);

    // An infinite loop with plenty of fuel: the wall-time limit stops it. Meanwhile the
    // node answers other requests, built-in global reads included: they are answered
    // while one of its workers is seen spinning in the guest, before and after.
    let looping = wat_file("loop", "(loop (br 0)) i32.const 1");
    let looping = looping.to_str().unwrap();
    nodes[0].ok(&["reducer", "load", "spin", looping, "--fuel", "100000000000000", "--wall-ms", "3000"]);
    let control = nodes[0].control.clone();
    let hostile = std::thread::spawn(move || {
        support::estate()
            .args(["--control", &control, "global", "c", "--reduce", "spin", "--timeout-ms", "500"])
            .output()
            .unwrap()
    });
    let worker = spinning_worker(&nodes[0]);
    assert_eq!(nodes[0].ok(&["get", "c"]), "1");
    assert_eq!(nodes[0].ok(&["global", "c", "--reduce", "sum"]), "3");
    let (state, _) = worker_thread(&nodes[0], worker).expect("the worker thread is gone");
    assert!(
        state == 'R' && !hostile.is_finished(),
        "the guest still ran when the node had answered (worker {worker}: {state}; if the guest had \
         finished, its 3 s wall-time limit ran out while two requests were served)"
    );
    let out = hostile.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("wall-time limit of 3s"), "{err}");
    // The limit stopped the guest: its worker is idle again.
    let deadline = Instant::now() + Duration::from_secs(60);
    while worker_thread(&nodes[0], worker).is_some_and(|(state, _)| state == 'R') {
        assert!(Instant::now() < deadline, "worker {worker} still runs");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Pushed down, the loop meets each member's budgets: here n1's fuel (its wall-time
    // limit is generous), and n2's own defaults, where fuel or, on a loaded machine, the
    // 200 ms wall-time limit binds first. Either way the read fails with the limit named.
    nodes[0].ok(&["reducer", "load", "spin", looping, "--wall-ms", "30000"]);
    let err = err_of(&nodes[0], &["global", "c", "--reduce", "spin", "--remote", "--timeout-ms", "20000"]);
    assert!(err.contains("ran out of fuel") || err.contains("wall-time limit"), "{err}");

    let cases = [
        ("bomb", "(drop (memory.grow (i32.const 60000))) i32.const 1", "memory limit"),
        ("trap", "unreachable", "trapped"),
        ("huge", "(call $result (i32.const 0) (i32.const 65536)) i32.const 0", "output limit"),
        ("bad-status", "i32.const 77", "unknown reducer status"),
    ];
    for (name, body, expected) in cases {
        let file = wat_file(name, body);
        let mut args = vec!["reducer", "load", name, file.to_str().unwrap()];
        if name == "huge" {
            args.extend(["--output-kb", "16"]);
        }
        nodes[0].ok(&args);
        let err = err_of(&nodes[0], &["global", "c", "--reduce", name]);
        assert!(err.contains(expected), "{name}: {err}");
    }

    // Modules that are not reducers are refused at load, naming what is wrong.
    let missing = std::env::temp_dir().join(format!("estate-hotload-{}-missing.wat", std::process::id()));
    std::fs::write(&missing, r#"(module (memory (export "memory") 1))"#).unwrap();
    let err = err_of(&nodes[0], &["reducer", "load", "missing", missing.to_str().unwrap()]);
    assert!(err.contains("missing export"), "{err}");
    let mistyped = wat_file("mistyped", "i32.const 0").to_str().unwrap().to_string();
    let text = std::fs::read_to_string(&mistyped).unwrap().replace("(param i32 i32 i32)", "(param i32)");
    std::fs::write(&mistyped, text).unwrap();
    assert!(err_of(&nodes[0], &["reducer", "load", "mistyped", &mistyped]).contains("invalid guest module"));
    let garbage = std::env::temp_dir().join(format!("estate-hotload-{}-garbage.wasm", std::process::id()));
    std::fs::write(&garbage, b"\0asm\x01\0\0\0garbage").unwrap();
    assert!(
        err_of(&nodes[0], &["reducer", "load", "garbage", garbage.to_str().unwrap()]).contains("invalid guest module")
    );

    // Still healthy.
    assert_eq!(nodes[0].ok(&["global", "c", "--reduce", "sum", "--consistency", "all"]), "3");
    assert_eq!(nodes[1].ok(&["global", "c", "--reduce", "sum", "--consistency", "all"]), "3");
}

/// A pushed-down module runs on the remote node under the budgets its owner loaded it
/// with (within the tenant's ceilings there), not under the remote node's defaults.
#[test]
fn a_pushed_down_reducer_runs_under_its_owners_budget_on_every_node() {
    use std::time::Duration;

    use estate::control::LimitOverrides;
    use estate::node::GlobalOptions;
    use estate::tenancy::Tenants;
    use estate_guest::Value;

    let tenants = Tenants::parse("[tenants.a]\n", "test").unwrap();
    let (n1, n2) = support::in_process_pair("n1", "n2", |config| config.tenants = tenants.clone());
    let (a1, a2) = (n1.tenant("a").unwrap(), n2.tenant("a").unwrap());
    // Only n2 holds matching items: n1's own partial is over nothing.
    for i in 0..2000 {
        a2.set(&format!("big:{i}"), Value::Int(1)).unwrap();
    }
    let sum = std::fs::read(guest_path("reducer_sum")).unwrap();
    let read = |name: &str| {
        let options = GlobalOptions { remote: true, timeout: Duration::from_secs(20), ..GlobalOptions::default() };
        a1.get_global("big:.*", name, options)
    };
    let starved = LimitOverrides { fuel: Some(20_000), ..LimitOverrides::default() };
    a1.load_reducer("starved", sum.clone(), &starved).unwrap();
    a1.load_reducer("fed", sum, &LimitOverrides::default()).unwrap();
    let answer = read("fed").expect("the node's default fuel sums 2,000 items");
    assert_eq!(answer.result, estate::reduce::Reduced::Item(estate_guest::Item::of(Value::Int(2000))));
    let e = read("starved").unwrap_err().to_string();
    assert!(e.contains("n2") && e.contains("fuel"), "n2 ran out of the owner's fuel: {e}");
}

/// A pushed-down reducer that reads only values (`sum`) gets its items without keys,
/// origins or writers (and, all of them integers, as their values alone); when it fails
/// on them, the node runs it again on whole items, so the error still names the item and
/// the node it is on. Its answers are exact.
#[test]
fn a_values_only_reducer_pushed_down_still_names_the_item_it_fails_on() {
    use std::time::Duration;

    use estate::control::LimitOverrides;
    use estate::node::GlobalOptions;
    use estate_guest::Value;

    let (n1, n2) = support::in_process_pair("n1", "n2", |_| {});
    for i in 0..100 {
        n1.set(&format!("v:{i}"), Value::Int(i)).unwrap();
        n2.set(&format!("v:{i}"), Value::Int(1)).unwrap();
    }
    let sum = std::fs::read(guest_path("reducer_sum")).unwrap();
    n1.load_reducer("wsum", sum, &LimitOverrides::default()).unwrap();
    let read = || {
        let options = GlobalOptions { remote: true, timeout: Duration::from_secs(20), ..GlobalOptions::default() };
        n1.get_global("v:.*", "wsum", options)
    };
    let answer = read().unwrap();
    assert_eq!(answer.result, estate::reduce::Reduced::Item(estate_guest::Item::of(Value::Int(4950 + 100))));
    // Every item an integer: each node passes the values alone (`abi::flags::INTS`).
    // Their sum overflows on n2, and the error still names the key it overflows at.
    n2.set("v:big", Value::Int(i64::MAX)).unwrap();
    let e = read().unwrap_err().to_string();
    assert!(e.contains("sum: i64 overflow at v:"), "{e}");
    assert!(n2.del("v:big"));
    n2.set("v:text", Value::Text("seven".into())).unwrap();
    let e = read().unwrap_err().to_string();
    assert!(e.contains("sum: v:text from n2 is text, not an integer"), "{e}");
}
