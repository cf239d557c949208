//! Which compiler builds wasm32 guests, and the cargo command that builds them. One file
//! for two users, so both pick the same route in the same order: `runtime/build.rs`
//! (the repository's guests; `#[path = "toolchain.rs"] mod toolchain;`) and
//! `estate guest build` (one guest crate; `src/bin/estate/guest/mod.rs`). It uses `std`
//! and `serde_json` only, which both have.
//!
//! The routes, in this order:
//!
//! 1. `ESTATE_GUEST_RUSTC`, if set: a `rustc` to use. It must either have the wasm32
//!    standard library installed or carry the library sources (then `-Zbuild-std`).
//! 2. The active toolchain (`$RUSTC`, else the `rustc` on the path), if it has the wasm32
//!    std (`rustup target add wasm32-unknown-unknown`).
//! 3. A compiler whose sysroot holds the library sources, via `-Zbuild-std=core,alloc`:
//!    the active one (`rustup component add rust-src` on nightly), then Debian's
//!    `/usr/bin/rustc` (packages `rustc-web rust-web-src rust-web-llvm lld-22`).
//! 4. Otherwise there is no route, and the message names both ways to make one.

use std::env;
use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub(crate) const TARGET: &str = "wasm32-unknown-unknown";
pub(crate) const RUSTC_VAR: &str = "ESTATE_GUEST_RUSTC";
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";

#[derive(Debug)]
pub(crate) enum Route {
    /// The compiler has the wasm32 std installed.
    InstalledStd,
    /// The compiler has the library sources; `core` and `alloc` are built with the guests.
    BuildStd,
}

#[derive(Debug)]
pub(crate) struct Toolchain {
    pub(crate) rustc: PathBuf,
    pub(crate) route: Route,
}

impl Toolchain {
    /// Picks the first route that works (see the module docs). When there is none, the
    /// message ends with `otherwise`: what else the caller's user can do.
    pub(crate) fn pick(otherwise: &str) -> Result<Toolchain, String> {
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
             {otherwise}",
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

    /// `cargo build --release --target wasm32-unknown-unknown --manifest-path MANIFEST`
    /// with this compiler (`$CARGO`, else the `cargo` on the path, drives it): cargo's
    /// JSON messages on a piped stdout for [`Toolchain::run`], the compiler's diagnostics
    /// rendered on stderr. The caller adds what is its own (`--workspace`,
    /// `--target-dir`).
    pub(crate) fn cargo_build(&self, manifest: &Path) -> Command {
        let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.arg("build")
            .arg("--release")
            .args(["--target", TARGET])
            .arg("--manifest-path")
            .arg(manifest)
            .args(["--message-format", "json-render-diagnostics"])
            .stdout(Stdio::piped());
        // The flags and wrappers of a host build (the outer build of a build script, or
        // the cargo that runs a test or the `estate` binary) are for the host; none of
        // them may leak into the wasm32 build (clippy's wrapper, coverage flags, the
        // host's cfgs). `CARGO_TARGET_DIR` is a place, not a flag: it is kept.
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
        cmd
    }

    /// Runs `cmd`, made by [`Toolchain::cargo_build`] for `manifest`; returns
    /// `(crate name, wasm path)` of every cdylib built.
    pub(crate) fn run(&self, mut cmd: Command, manifest: &Path) -> Result<Vec<(String, PathBuf)>, String> {
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
