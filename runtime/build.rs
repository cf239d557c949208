//! Builds every guest crate under `reducers-wasm/` and `nfs-wasm/` for
//! `wasm32-unknown-unknown` and hands the artifacts to the host crate as generated
//! constants (`$OUT_DIR/guests.rs`, included by `src/guests.rs`).
//!
//! The guests live in two small cargo workspaces of their own, excluded from the host
//! workspace, so a host build never tries to compile them for the host. Both are built
//! into one nested target directory under `OUT_DIR` (a lock on the outer target
//! directory would deadlock), so `core`/`alloc` are compiled once for all guests.
//!
//! Which compiler builds the guests, in this order:
//!
//! 1. `ESTATE_GUEST_RUSTC`, if set: a `rustc` to use. It must either have the wasm32
//!    standard library installed or carry the library sources (then `-Zbuild-std`).
//! 2. The active toolchain (the `rustc` cargo runs), if it has the wasm32 std
//!    (`rustup target add wasm32-unknown-unknown`).
//! 3. A compiler whose sysroot holds the library sources, via `-Zbuild-std=core,alloc`:
//!    the active one (`rustup component add rust-src` on nightly), then Debian's
//!    `/usr/bin/rustc` (packages `rustc-web rust-web-src rust-web-llvm lld-22`).
//! 4. Otherwise the build stops with a message naming both routes.
//!
//! `ESTATE_SKIP_GUEST_BUILD=1` skips the guest build for host-only work: the constants
//! are then empty and [`estate::guests::require`] fails with a message saying so.

use std::env;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const TARGET: &str = "wasm32-unknown-unknown";
/// Guest workspaces, relative to the repository root, and the prefix of their constants.
const GUEST_WORKSPACES: &[&str] = &["reducers-wasm", "nfs-wasm"];
const SKIP_VAR: &str = "ESTATE_SKIP_GUEST_BUILD";
const RUSTC_VAR: &str = "ESTATE_GUEST_RUSTC";
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";

fn main() {
    println!("cargo:rerun-if-env-changed={SKIP_VAR}");
    println!("cargo:rerun-if-env-changed={RUSTC_VAR}");
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    // Any change below these directories (sources, manifests, new guest crates) reruns
    // this script; the nested cargo then rebuilds only what changed.
    for dir in GUEST_WORKSPACES.iter().copied().chain(["guest-sdk"]) {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }

    let skip = env::var_os(SKIP_VAR).is_some_and(|v| !v.is_empty() && v != "0");
    let mut chosen = None;
    let artifacts = if skip {
        println!("cargo:warning=guest build skipped ({SKIP_VAR} is set)");
        Vec::new()
    } else {
        let toolchain = match Toolchain::pick() {
            Ok(t) => t,
            Err(message) => fail(&message),
        };
        let target_dir = out_dir.join("guests");
        let mut artifacts = Vec::new();
        for ws in GUEST_WORKSPACES {
            match toolchain.build(&root.join(ws).join("Cargo.toml"), &target_dir) {
                Ok(found) => artifacts.extend(found),
                Err(message) => fail(&message),
            }
        }
        artifacts.sort();
        chosen = Some(toolchain);
        artifacts
    };
    write_constants(&out_dir.join("guests.rs"), &artifacts, chosen.as_ref());
}

fn fail(message: &str) -> ! {
    eprintln!("\nerror: cannot build the estate wasm32 guests\n\n{message}\n");
    std::process::exit(1);
}

#[derive(Debug)]
enum Route {
    /// The compiler has the wasm32 std installed.
    InstalledStd,
    /// The compiler has the library sources; `core` and `alloc` are built with the guests.
    BuildStd,
}

#[derive(Debug)]
struct Toolchain {
    rustc: PathBuf,
    route: Route,
}

impl Toolchain {
    fn pick() -> Result<Toolchain, String> {
        if let Some(rustc) = env::var_os(RUSTC_VAR).filter(|v| !v.is_empty()) {
            let rustc = PathBuf::from(rustc);
            return Self::probe(&rustc).ok_or_else(|| {
                format!(
                    "{RUSTC_VAR}={} has neither the {TARGET} standard library nor the \
                     library sources (lib/rustlib/src/rust/library) in its sysroot.",
                    rustc.display()
                )
            });
        }
        let active = env::var_os("RUSTC").map_or_else(|| PathBuf::from("rustc"), PathBuf::from);
        if has_wasm_std(&active) {
            return Ok(Toolchain { rustc: active, route: Route::InstalledStd });
        }
        for candidate in [active.clone(), PathBuf::from(DEBIAN_RUSTC)] {
            if has_library_sources(&candidate) {
                return Ok(Toolchain { rustc: candidate, route: Route::BuildStd });
            }
        }
        Err(format!(
            "The active toolchain ({}) has no {TARGET} standard library, and no compiler \
             with the Rust library sources was found.\n\
             Either route works:\n\
             \x20 - rustup:  rustup target add {TARGET}\n\
             \x20 - Debian:  apt-get install rustc-web cargo-web rust-web-src rust-web-llvm lld-22\n\
             \x20            (builds the guests with {DEBIAN_RUSTC} and -Zbuild-std)\n\
             Or point {RUSTC_VAR} at a rustc that has either, or set {SKIP_VAR}=1 to build \
             the host without guests.",
            active.display()
        ))
    }

    fn probe(rustc: &Path) -> Option<Toolchain> {
        if has_wasm_std(rustc) {
            Some(Toolchain { rustc: rustc.to_path_buf(), route: Route::InstalledStd })
        } else if has_library_sources(rustc) {
            Some(Toolchain { rustc: rustc.to_path_buf(), route: Route::BuildStd })
        } else {
            None
        }
    }

    /// Builds every member of one guest workspace; returns `(crate name, wasm path)`.
    fn build(&self, manifest: &Path, target_dir: &Path) -> Result<Vec<(String, PathBuf)>, String> {
        let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.arg("build")
            .arg("--release")
            .arg("--workspace")
            .args(["--target", TARGET])
            .arg("--manifest-path")
            .arg(manifest)
            .arg("--target-dir")
            .arg(target_dir)
            .args(["--message-format", "json-render-diagnostics"])
            .stdout(Stdio::piped());
        // The outer build's flags and wrappers are for the host; none of them may leak
        // into the wasm32 build (clippy's wrapper, coverage flags, the host's cfgs).
        for (key, _) in env::vars_os() {
            let key_str = key.to_string_lossy();
            if key_str.starts_with("CARGO_FEATURE_")
                || key_str.starts_with("CARGO_CFG_")
                || key_str.starts_with("CARGO_PKG_")
                || matches!(
                    key_str.as_ref(),
                    "CARGO_ENCODED_RUSTFLAGS"
                        | "RUSTFLAGS"
                        | "RUSTC_WRAPPER"
                        | "RUSTC_WORKSPACE_WRAPPER"
                        | "CARGO_TARGET_DIR"
                        | "CARGO_BUILD_TARGET"
                        | "CARGO_MANIFEST_DIR"
                        | "CARGO_MANIFEST_PATH"
                        | "CARGO_PRIMARY_PACKAGE"
                )
            {
                cmd.env_remove(&key);
            }
        }
        cmd.env("RUSTC", &self.rustc);
        // Wasm SIMD (every engine of the last years has it, wasmtime included): memchr's
        // and aho-corasick's scans use it, several times faster on payloads.
        cmd.env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS", "-C target-feature=+simd128");
        if let Route::BuildStd = self.route {
            cmd.arg("-Zbuild-std=core,alloc");
            // `-Z` flags are unstable; a stable compiler (Debian's rustc-web, or a
            // stable rustup toolchain with rust-src) accepts them only with
            // RUSTC_BOOTSTRAP, which is how substrate's wasm-builder does it too. A
            // nightly compiler needs no such switch.
            if !is_nightly(&self.rustc) {
                cmd.env("RUSTC_BOOTSTRAP", "1");
            }
        }
        let mut child = cmd.spawn().map_err(|e| format!("could not run cargo for {}: {e}", manifest.display()))?;
        let stdout = child.stdout.take().unwrap();
        let mut artifacts = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.map_err(|e| e.to_string())?;
            if let Some(found) = wasm_artifact(&line) {
                artifacts.push(found);
            }
        }
        let status = child.wait().map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!(
                "cargo build of {} for {TARGET} failed ({status}) with {} ({:?} route); \
                 see the compiler output above.",
                manifest.display(),
                self.rustc.display(),
                self.route
            ));
        }
        Ok(artifacts)
    }
}

/// Picks `(crate name, path)` out of a cargo `compiler-artifact` message for a cdylib.
fn wasm_artifact(line: &str) -> Option<(String, PathBuf)> {
    let msg: serde_json::Value = serde_json::from_str(line).ok()?;
    if msg.get("reason")?.as_str()? != "compiler-artifact" {
        return None;
    }
    let target = msg.get("target")?;
    let is_cdylib = target.get("kind")?.as_array()?.iter().any(|k| k.as_str() == Some("cdylib"));
    if !is_cdylib {
        return None;
    }
    let name = target.get("name")?.as_str()?.to_string();
    let wasm = msg
        .get("filenames")?
        .as_array()?
        .iter()
        .filter_map(|f| f.as_str())
        .find(|f| Path::new(f).extension() == Some(OsStr::new("wasm")))?;
    Some((name, PathBuf::from(wasm)))
}

fn rustc_output(rustc: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new(rustc).args(args).env_remove("RUSTC_WRAPPER").output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn has_wasm_std(rustc: &Path) -> bool {
    let Some(libdir) = rustc_output(rustc, &["--print", "target-libdir", "--target", TARGET]) else {
        return false;
    };
    fs::read_dir(libdir).is_ok_and(|entries| {
        entries.filter_map(Result::ok).any(|e| e.file_name().to_string_lossy().starts_with("libcore-"))
    })
}

fn has_library_sources(rustc: &Path) -> bool {
    rustc_output(rustc, &["--print", "sysroot"])
        .is_some_and(|sysroot| Path::new(&sysroot).join("lib/rustlib/src/rust/library/core/Cargo.toml").is_file())
}

fn is_nightly(rustc: &Path) -> bool {
    rustc_output(rustc, &["-V"]).is_some_and(|v| v.contains("nightly") || v.contains("-dev"))
}

fn write_constants(path: &Path, artifacts: &[(String, PathBuf)], toolchain: Option<&Toolchain>) {
    let mut src = String::from("// Generated by runtime/build.rs. Do not edit.\n\n");
    writeln!(src, "/// Whether the guests were built (false when `{SKIP_VAR}` is set).").unwrap();
    writeln!(src, "pub const BUILT: bool = {};", toolchain.is_some()).unwrap();
    let rustc = toolchain.map(|t| t.rustc.display().to_string()).unwrap_or_default();
    let build_std = toolchain.is_some_and(|t| matches!(t.route, Route::BuildStd));
    writeln!(src, "/// The `rustc` that built the guests (empty if they were not built).").unwrap();
    writeln!(src, "pub const RUSTC: &str = {rustc:?};").unwrap();
    writeln!(src, "/// Whether the guests were built with `-Zbuild-std` (no installed wasm32 std).").unwrap();
    writeln!(src, "pub const BUILD_STD: bool = {build_std};").unwrap();
    for (name, wasm) in artifacts {
        writeln!(src, "/// Path of the `{name}` guest module.").unwrap();
        writeln!(src, "pub const {}: &str = {:?};", name.to_uppercase(), wasm.display().to_string()).unwrap();
    }
    writeln!(src, "/// Every guest module: `(crate name, path)`.").unwrap();
    src.push_str("pub const ALL: &[(&str, &str)] = &[\n");
    for (name, _) in artifacts {
        writeln!(src, "    ({name:?}, {}),", name.to_uppercase()).unwrap();
    }
    src.push_str("];\n");
    // Rewrite only on change so that dependants are not rebuilt needlessly.
    if fs::read_to_string(path).ok().as_deref() != Some(src.as_str()) {
        fs::write(path, src).unwrap();
    }
}
