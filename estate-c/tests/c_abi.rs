//! The C ABI from C and from Python: programs compiled and run by these tests against
//! the `libestate.so` cargo built for this test run.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The directory with the `libestate.so` cargo built for this test run: the test
/// binary's own (`deps/`), as the crate is also an rlib for its tests.
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().to_path_buf();
    assert!(dir.join("libestate.so").exists(), "libestate.so is not in {}", dir.display());
    dir
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn show(output: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Compiles `source` (under tests/c/) as a user would: `cc prog.c -Iinclude -L DIR -lestate`.
fn compile(source: &str) -> PathBuf {
    let out = std::env::temp_dir().join(format!("estate-c-{}-{source}", std::process::id())).with_extension("");
    let lib = lib_dir();
    let output = Command::new("cc")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c").join(source))
        .args(["-Wall", "-Wextra", "-Werror"])
        .arg("-I")
        .arg(repo().join("include"))
        .arg("-L")
        .arg(&lib)
        .arg("-lestate")
        .arg("-lpthread")
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-o")
        .arg(&out)
        .output()
        .expect("running cc (install gcc or clang)");
    assert!(output.status.success(), "cc failed:\n{}", show(&output));
    out
}

#[test]
fn a_program_written_for_the_prototype_api_runs_in_a_three_node_cluster() {
    let program = compile("prototype_api.c");
    // The program finds the library through its rpath; cargo's LD_LIBRARY_PATH would
    // come first and may hold another build's libestate.so.
    let output = Command::new(&program).arg(free_port().to_string()).env_remove("LD_LIBRARY_PATH").output().unwrap();
    let _ = std::fs::remove_file(&program);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", show(&output));
    for line in [
        "ok global sum = 42",
        "ok global avg = 14.0",
        "ok global latest = 30",
        "ok global with a C reduce = n=3 sum=42 origins=yes",
        "ok 4 threads x 100 writes = 400",
        "ok the callback saw each read of c",
        "ok sum after es_close = 42",
        "all passed",
    ] {
        assert!(stdout.lines().any(|l| l == line), "missing {line:?} in\n{}", show(&output));
    }
}

#[test]
fn the_python_module_drives_both_apis_through_ctypes() {
    let output = Command::new("python3")
        .args(["-m", "unittest", "-v", "test_estate"])
        .current_dir(repo().join("python"))
        .env("ESTATE_LIBRARY", lib_dir().join("libestate.so"))
        .output()
        .expect("running python3");
    assert!(output.status.success(), "{}", show(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Ran 1 test") && stderr.contains("OK"), "{}", show(&output));
}
