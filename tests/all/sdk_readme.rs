//! `guest-sdk/README.md`, followed as a new user would: its `Cargo.toml` and `src/lib.rs`
//! become a fresh crate outside the repository, built for wasm32 with the same
//! toolchain route the build script chose; the module is hot-loaded into a running
//! 3-node cluster and answers the README's global reads; a second version loaded under
//! the same name changes the answers, and no node restarts. The README's NF (typed
//! state) is built the same way and run by a node over a synthetic stream.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;

use estate::guests;
use support::cluster;

/// The first fenced block of `lang` in `text`.
fn block<'a>(text: &'a str, lang: &str) -> &'a str {
    nth_block(text, lang, 0)
}

/// The fenced block of `lang` number `n` (from 0) in `text`.
fn nth_block<'a>(text: &'a str, lang: &str, n: usize) -> &'a str {
    let fence = format!("```{lang}\n");
    let mut from = 0;
    for _ in 0..n {
        from += text[from..].find(&fence).unwrap_or_else(|| panic!("too few ```{lang} blocks")) + fence.len();
    }
    let start = from + text[from..].find(&fence).unwrap_or_else(|| panic!("no ```{lang} block {n}")) + fence.len();
    let len = text[start..].find("```").expect("unterminated block");
    &text[start..start + len]
}

/// Writes the README's crate to `dir` with `lib_rs` as its source and builds it.
fn build(dir: &Path, cargo_toml: &str, lib_rs: &str) -> PathBuf {
    build_named(dir, cargo_toml, lib_rs, "my_reducer")
}

/// Like [`build`], for the crate whose library is `name`; returns its module's path.
fn build_named(dir: &Path, cargo_toml: &str, lib_rs: &str, name: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join("Cargo.toml"), cargo_toml).unwrap();
    std::fs::write(dir.join("src/lib.rs"), lib_rs).unwrap();
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sdk-readme-target");
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(dir)
        .args(["build", "--release", "--target", "wasm32-unknown-unknown", "--target-dir"])
        .arg(&target)
        .env("RUSTC", guests::RUSTC);
    for var in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER", "CARGO_TARGET_DIR"]
    {
        cmd.env_remove(var);
    }
    if guests::BUILD_STD {
        // The README's route (b): no installed wasm32 std, so core and alloc are built.
        cmd.arg("-Zbuild-std=core,alloc").env("RUSTC_BOOTSTRAP", "1");
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "building the README crate failed:\n{}", String::from_utf8_lossy(&out.stderr));
    target.join(format!("wasm32-unknown-unknown/release/{name}.wasm"))
}

/// Section 5: the README's NF, built fresh, run by a node over a synthetic stream.
#[test]
fn the_sdk_readme_nf_builds_and_runs_with_typed_state() {
    guests::require("nf_count").expect("this test needs the guest toolchain");
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../guest-sdk/README.md")).unwrap();
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk").canonicalize().unwrap();
    let cargo_toml = nth_block(&readme, "toml", 1).replace("../estate/guest-sdk", sdk.to_str().unwrap());
    assert!(cargo_toml.contains("name = \"my-nf\""), "the README's second crate is the NF:\n{cargo_toml}");
    let lib_rs = nth_block(&readme, "rust", 1);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("sdk-readme-{}", std::process::id())).join("my-nf");
    let wasm = build_named(&dir, &cargo_toml, lib_rs, "my_nf");

    let config = dir.join("sessions.conf");
    std::fs::write(&config, "max_packets = 5\n").unwrap();
    let node = support::NodeProc::start_with(
        "n1",
        &[],
        &[
            "--input",
            "synth:seed=1,flows=10,packets=500,share=0",
            "--nf",
            wasm.to_str().unwrap(),
            "--nf-config",
            config.to_str().unwrap(),
        ],
    );
    let stats = node.wait_stat("nf_packets", 500);
    assert_eq!(node.ok(&["get", "sessions:packets"]), "500");
    assert_eq!(node.ok(&["global", "flow:.*:session", "--reduce", "count"]), "10");
    // Every flow of this stream has more than 5 packets: 5 of each pass.
    assert_eq!((stats["nf_forwarded"].as_u64(), stats["nf_dropped"].as_u64()), (Some(50), Some(450)), "{stats}");
    assert_eq!(stats["nf_faults"], 0, "{stats}");
    // A configuration the NF refuses stops a new node with the NF's own message.
    std::fs::write(&config, "max_packets = many\n").unwrap();
    let out = support::estate()
        .args(["node", "--id", "n2", "--listen", "tcp://127.0.0.1:*", "--nf", wasm.to_str().unwrap()])
        .args(["--nf-config", config.to_str().unwrap(), "--input", "synth:packets=1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("sessions: bad max_packets"), "{out:?}");
}

#[test]
fn the_sdk_readme_reducer_builds_loads_and_answers() {
    // Fails clearly (rather than building with an empty RUSTC) when the guests were skipped.
    guests::require("reducer_sum").expect("this test needs the guest toolchain");
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../guest-sdk/README.md")).unwrap();
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk").canonicalize().unwrap();
    // The README's path assumes the checkout next to the crate; point it at this one.
    let cargo_toml = block(&readme, "toml").replace("../estate/guest-sdk", sdk.to_str().unwrap());
    let lib_rs = block(&readme, "rust");
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("sdk-readme-{}", std::process::id())).join("my-reducer");
    let wasm = build(&dir, &cargo_toml, lib_rs);

    // Section 4 of the README, on three real nodes.
    let nodes = cluster(3);
    nodes[0].ok(&["set", "flow:1", "5"]);
    nodes[1].ok(&["set", "flow:2", "0"]);
    nodes[2].ok(&["set", "flow:3", "2.5"]);
    let loaded = nodes[0].ok(&["reducer", "load", "myreducer", wasm.to_str().unwrap()]);
    assert!(loaded.starts_with("loaded myreducer sha256=") && loaded.ends_with("combinable=true"), "{loaded}");
    assert!(nodes[0].ok(&["reducer", "list"]).contains("myreducer"));
    assert_eq!(nodes[0].ok(&["global", "flow:.*", "--reduce", "myreducer"]), "2");
    assert_eq!(nodes[0].ok(&["global", "flow:.*", "--reduce", "myreducer", "--remote", "--timeout-ms", "20000"]), "2");

    nodes[1].ok(&["set", "flow:4", "hello"]);
    let out = nodes[0].cli(&["global", "flow:.*", "--reduce", "myreducer", "--remote", "--timeout-ms", "20000"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("n2: positives: flow:4 from n2 is text, not a number"), "{err}");
    nodes[1].ok(&["del", "flow:4"]);

    // Version 2 of the same reducer (counts non-negative numbers), loaded under the
    // same name into the running node: the answer changes from 2 to 3.
    let v2 = lib_rs.replace("*v > 0)", "*v >= 0)").replace("*v > 0.0)", "*v >= 0.0)");
    assert_ne!(v2, lib_rs, "the README's reducer changed shape; update this test");
    let wasm2 = build(&dir, &cargo_toml, &v2);
    nodes[0].ok(&["reducer", "load", "myreducer", wasm2.to_str().unwrap()]);
    assert_eq!(nodes[0].ok(&["global", "flow:.*", "--reduce", "myreducer"]), "3");
    assert_eq!(nodes[0].ok(&["global", "flow:.*", "--reduce", "myreducer", "--remote", "--timeout-ms", "20000"]), "3");
    assert_eq!(nodes[0].members(), ["n1", "n2", "n3"], "no node restarted");

    assert_eq!(nodes[0].ok(&["reducer", "unload", "myreducer"]), "1");
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
}
