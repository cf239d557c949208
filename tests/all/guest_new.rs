//! `estate guest new` and `estate guest build`, run as a user runs them, from an empty
//! directory: the crates they make build to modules that the runtime loads and that
//! answer correctly, their native unit tests pass, and what they refuse they refuse
//! clearly, changing nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use estate::guests;
use estate::store::{DEFAULT_TENANT, Store};
use estate::wasm::{GuestError, Limits, WasmHost};
use estate_guest::{Direction, Item, Packet, Phase, Value, Verdict};

use crate::support;

/// A new, empty directory for the test `name`.
fn empty_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("guest-new-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `estate ARGS` in `dir`; the crates it builds go to `dir/target`.
fn estate_in(dir: &Path, args: &[&str]) -> Output {
    support::estate().current_dir(dir).args(args).env("CARGO_TARGET_DIR", dir.join("target")).output().unwrap()
}

/// Like [`estate_in`]; asserts success and returns stdout.
fn ok(dir: &Path, args: &[&str]) -> String {
    let out = estate_in(dir, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "estate {args:?} failed ({:?}):\n{stderr}", out.status);
    String::from_utf8(out.stdout).unwrap()
}

/// Like [`estate_in`]; asserts failure and returns stderr.
fn fails(dir: &Path, args: &[&str]) -> String {
    let out = estate_in(dir, args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "estate {args:?} succeeded:\n{stdout}");
    String::from_utf8(out.stderr).unwrap()
}

/// The module of `estate guest build`'s output: its last line, `built PATH`.
fn built(stdout: &str) -> PathBuf {
    let last = stdout.lines().last().unwrap_or_default();
    let path = last.strip_prefix("built ").unwrap_or_else(|| panic!("last line is not `built PATH`:\n{stdout}"));
    PathBuf::from(path)
}

fn int(key: &str, v: i64, origin: &str) -> Item {
    Item { key: key.into(), value: Value::Int(v), origin: origin.into(), writer: origin.into(), version: 1 }
}

fn packet(flow: &str) -> Packet<'_> {
    Packet {
        proto: 17,
        src: ([10, 0, 0, 1], 5353),
        dst: ([10, 0, 0, 2], 53),
        direction: Direction::Forward,
        moved: false,
        tcp_flags: 0,
        flow,
        payload: b"query",
    }
}

#[test]
fn new_crates_build_to_modules_that_load_and_answer() {
    guests::require("reducer_sum").expect("this test needs the guest toolchain");
    let dir = empty_dir("crates");
    let target = dir.join("target");

    // A reducer.
    let created = ok(&dir, &["guest", "new", "reducer", "x"]);
    assert!(created.contains("created reducer crate x in"), "{created}");
    let cargo_toml = std::fs::read_to_string(dir.join("x/Cargo.toml")).unwrap();
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join("guest-sdk");
    assert!(cargo_toml.contains(&format!("estate-guest = {{ path = {:?} }}", sdk.to_str().unwrap())), "{cargo_toml}");
    let readme = std::fs::read_to_string(dir.join("x/README.md")).unwrap();
    assert!(readme.contains("estate guest build ."), "{readme}");
    let wasm = built(&ok(&dir, &["guest", "build", "x"]));
    assert_eq!(wasm, target.join("wasm32-unknown-unknown/release/x.wasm"));

    let host = WasmHost::new(Limits::default()).unwrap();
    let sum = host.load_reducer(&std::fs::read(&wasm).unwrap()).unwrap();
    assert!(sum.combinable());
    let items = [int("c", 5, "n1"), int("c", 7, "n2"), int("c", -2, "n3")];
    assert_eq!(host.reduce_all(&sum, &items).unwrap().map(|i| i.value), Some(Value::Int(10)));
    assert_eq!(host.reduce_all(&sum, &[]).unwrap(), None);
    // Pushed down: a partial per node, then the partials reduced.
    let partials: Vec<Item> =
        [&items[..2], &items[2..]].iter().map(|node| host.reduce(&sum, node, Phase::Items).unwrap().unwrap()).collect();
    assert_eq!(host.reduce(&sum, &partials, Phase::Partials).unwrap().map(|i| i.value), Some(Value::Int(10)));
    let text = Item { value: Value::Text("ten".into()), ..int("flow:9", 0, "n7") };
    match host.reduce_all(&sum, &[items[0].clone(), text]) {
        Err(GuestError::Guest(msg)) => assert!(msg.contains("flow:9 from n7 is text"), "{msg}"),
        other => panic!("expected the reducer's error, got {other:?}"),
    }

    // The reducer crate's own unit tests, natively.
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo.current_dir(dir.join("x")).arg("test").env("CARGO_TARGET_DIR", &target);
    for var in
        ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER", "CARGO_BUILD_TARGET"]
    {
        cargo.env_remove(var);
    }
    let out = cargo.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "cargo test in x failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("test result: ok. 2 passed"), "{stdout}");

    // An NF, run over packets of two flows with a limit of 3 packets a flow.
    assert!(ok(&dir, &["guest", "new", "nf", "y"]).contains("created NF crate y in"));
    let wasm = built(&ok(&dir, &["guest", "build", "y"]));
    assert_eq!(wasm, target.join("wasm32-unknown-unknown/release/y.wasm"));
    let nf = host.load_nf(&std::fs::read(&wasm).unwrap()).unwrap();
    let tenant = Store::new("n1").tenant(DEFAULT_TENANT).unwrap();
    let mut running = host.start_nf(&nf, tenant.clone(), "max_packets = 3").unwrap();
    let verdicts: Vec<Verdict> = ["a", "b", "a", "a", "a", "b", "a"]
        .iter()
        .map(|flow| running.on_packet(&packet(&format!("17:{flow}"))).unwrap())
        .collect();
    use Verdict::{Drop, Forward};
    assert_eq!(verdicts, [Forward, Forward, Forward, Forward, Drop, Forward, Drop]);
    let value = |key: &str| tenant.get(key).map(|v| v.value);
    assert_eq!((value("flow:17:a:packets"), value("flow:17:b:packets")), (Some(Value::Int(5)), Some(Value::Int(2))));
    match host.start_nf(&nf, tenant, "max_packets = lots") {
        Err(GuestError::Guest(msg)) => assert!(msg.contains("y: bad max_packets"), "{msg}"),
        other => panic!("expected the NF's configuration error, got {other:?}"),
    }

    // A crate that does not compile: the compiler's output, a clear message, no module.
    std::fs::write(dir.join("y/src/lib.rs"), "#![no_std]\npub fn broken() -> u32 { \"not a number\" }\n").unwrap();
    let out = estate_in(&dir, &["guest", "build", "y"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("error[E0308]: mismatched types"), "{stderr}");
    assert!(stderr.contains("failed") && stderr.contains("see the compiler output above"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("built "));

    // A compiler named by ESTATE_GUEST_RUSTC that cannot build wasm32: refused up front.
    let out = support::estate()
        .current_dir(&dir)
        .args(["guest", "build", "x"])
        .env("ESTATE_GUEST_RUSTC", "/nonexistent/rustc")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("cannot build wasm32 guests on this machine"), "{stderr}");
    assert!(stderr.contains("ESTATE_GUEST_RUSTC=/nonexistent/rustc has neither"), "{stderr}");

    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn new_refuses_existing_directories_and_bad_names_and_changes_nothing() {
    let dir = empty_dir("refusals");
    std::fs::create_dir(dir.join("taken")).unwrap();
    std::fs::write(dir.join("taken/notes.txt"), "mine").unwrap();
    let err = fails(&dir, &["guest", "new", "reducer", "taken"]);
    assert!(err.contains("taken already exists"), "{err}");
    let left: Vec<_> = std::fs::read_dir(dir.join("taken")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, ["notes.txt"]);
    assert_eq!(std::fs::read_to_string(dir.join("taken/notes.txt")).unwrap(), "mine");

    for (name, why) in [
        ("1st", "must start with an ASCII letter"),
        ("my reducer", "only ASCII letters, digits"),
        ("a.b", "only ASCII letters, digits"),
        ("fn", "Rust keyword"),
        ("estate-guest", "the name of a crate every guest links"),
    ] {
        let err = fails(&dir, &["guest", "new", "nf", name]);
        assert!(err.contains(&format!("{name:?} is not a valid crate name: ")) && err.contains(why), "{name}: {err}");
        assert!(!dir.join(name).exists(), "{name}");
    }
    let err = fails(&dir, &["guest", "new", "filter", "z"]);
    assert!(err.contains("invalid value 'filter'") && err.contains("reducer, nf"), "{err}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "only `taken` is there");

    // --dir makes the parents; --sdk-version names a crates.io version instead of a path.
    ok(&dir, &["guest", "new", "nf", "z", "--dir", "a/b", "--sdk-version", "0.1"]);
    let cargo_toml = std::fs::read_to_string(dir.join("a/b/z/Cargo.toml")).unwrap();
    assert!(cargo_toml.contains("estate-guest = \"0.1\"\n") && !cargo_toml.contains("path ="), "{cargo_toml}");
    assert!(dir.join("a/b/z/src/lib.rs").is_file());

    let err = fails(&dir, &["guest", "build", "a"]);
    assert!(err.contains("no Cargo.toml in a"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
