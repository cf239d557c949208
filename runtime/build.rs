//! Builds every guest crate under `reducers-wasm/` and `nfs-wasm/` for
//! `wasm32-unknown-unknown` and hands the artifacts to the host crate as generated
//! constants (`$OUT_DIR/guests.rs`, included by `src/guests.rs`).
//!
//! The guests live in two small cargo workspaces of their own, excluded from the host
//! workspace, so a host build never tries to compile them for the host. Both are built
//! into one nested target directory under `OUT_DIR` (a lock on the outer target
//! directory would deadlock), so `core`/`alloc` are compiled once for all guests.
//!
//! Which compiler builds the guests, in this order (`toolchain.rs`, shared with
//! `estate guest build`):
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
//! Then the C guests: every `guest-c/reducers/*.c` and `guest-c/nfs/*.c` is compiled
//! with clang (`ESTATE_GUEST_CC`, else `clang`; Debian packages `clang lld`) into one
//! freestanding module each, named `c_reducer_<file>` / `c_nf_<file>` (see
//! `guest-c/README.md`).
//!
//! `ESTATE_SKIP_GUEST_BUILD=1` skips the guest build for host-only work: the constants
//! are then empty and [`estate::guests::require`] fails with a message saying so.

use std::env;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "toolchain.rs"]
mod toolchain;

use toolchain::{RUSTC_VAR, Route, Toolchain};

/// Guest workspaces, relative to the repository root, and the prefix of their constants.
const GUEST_WORKSPACES: &[&str] = &["reducers-wasm", "nfs-wasm"];
const SKIP_VAR: &str = "ESTATE_SKIP_GUEST_BUILD";
const CC_VAR: &str = "ESTATE_GUEST_CC";
/// C guest directories, relative to the repository root, and the prefix of their names.
const C_GUEST_DIRS: &[(&str, &str)] = &[("guest-c/reducers", "c_reducer_"), ("guest-c/nfs", "c_nf_")];
/// How every C guest is compiled: a freestanding wasm32 module (no libc), exporting what
/// its source marks with `export_name` and importing the host calls of module `estate`.
const C_FLAGS: &[&str] = &[
    "--target=wasm32-unknown-unknown",
    "-O2",
    "-std=c11",
    "-nostdlib",
    "-ffreestanding",
    // Any copy the compiler emits becomes `memory.copy`, never a call to a `memcpy`
    // that a freestanding module does not have.
    "-mbulk-memory",
    "-Wall",
    "-Wextra",
    "-Wl,--no-entry",
];

fn main() {
    println!("cargo:rerun-if-env-changed={SKIP_VAR}");
    println!("cargo:rerun-if-env-changed={RUSTC_VAR}");
    println!("cargo:rerun-if-env-changed={CC_VAR}");
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    // Any change below these directories (sources, manifests, new guest crates) reruns
    // this script; the nested cargo then rebuilds only what changed.
    for dir in GUEST_WORKSPACES.iter().copied().chain(["guest-sdk", "guest-c"]) {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }

    let skip = env::var_os(SKIP_VAR).is_some_and(|v| !v.is_empty() && v != "0");
    let mut chosen = None;
    let mut c_artifacts = Vec::new();
    let artifacts = if skip {
        println!("cargo:warning=guest build skipped ({SKIP_VAR} is set)");
        Vec::new()
    } else {
        let otherwise = format!(
            "Or point {RUSTC_VAR} at a rustc that has either, or set {SKIP_VAR}=1 to build the host without guests."
        );
        let toolchain = match Toolchain::pick(&otherwise) {
            Ok(t) => t,
            Err(message) => fail(&message),
        };
        let target_dir = out_dir.join("guests");
        let mut artifacts = Vec::new();
        for ws in GUEST_WORKSPACES {
            match build_workspace(&toolchain, &root.join(ws).join("Cargo.toml"), &target_dir) {
                Ok(found) => artifacts.extend(found),
                Err(message) => fail(&message),
            }
        }
        artifacts.sort();
        chosen = Some(toolchain);
        c_artifacts = build_c_guests(&root, &out_dir).unwrap_or_else(|message| fail(&message));
        artifacts
    };
    write_constants(&out_dir.join("guests.rs"), &artifacts, &c_artifacts, chosen.as_ref());
}

fn fail(message: &str) -> ! {
    eprintln!("\nerror: cannot build the estate wasm32 guests\n\n{message}\n");
    std::process::exit(1);
}

/// Builds every member of one guest workspace; returns `(crate name, wasm path)`.
fn build_workspace(
    toolchain: &Toolchain,
    manifest: &Path,
    target_dir: &Path,
) -> Result<Vec<(String, PathBuf)>, String> {
    let mut cmd = toolchain.cargo_build(manifest);
    // One nested target directory under OUT_DIR, never the outer build's.
    cmd.arg("--workspace").arg("--target-dir").arg(target_dir).env_remove("CARGO_TARGET_DIR");
    toolchain.run(cmd, manifest)
}

/// Compiles every C guest (see [`C_GUEST_DIRS`]) into `$OUT_DIR/c-guests/`; returns
/// `(name, wasm path)`, sorted.
fn build_c_guests(root: &Path, out_dir: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    let cc = c_compiler()?;
    let dir = out_dir.join("c-guests");
    fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let include = root.join("guest-c/include");
    let mut artifacts = Vec::new();
    for (sources, prefix) in C_GUEST_DIRS {
        for source in c_sources(&root.join(sources))? {
            let stem = source.file_stem().unwrap_or_default().to_string_lossy().replace('-', "_");
            let name = format!("{prefix}{stem}");
            let wasm = dir.join(format!("{name}.wasm"));
            compile_c(&cc, &include, &source, &wasm)?;
            artifacts.push((name, wasm));
        }
    }
    artifacts.sort();
    Ok(artifacts)
}

/// The C compiler: `ESTATE_GUEST_CC`, else `clang`, if it runs at all.
fn c_compiler() -> Result<PathBuf, String> {
    let cc = env::var_os(CC_VAR).filter(|v| !v.is_empty()).map_or_else(|| PathBuf::from("clang"), PathBuf::from);
    match Command::new(&cc).arg("--version").output() {
        Ok(out) if out.status.success() => Ok(cc),
        _ => Err(format!(
            "The C guests (guest-c/) are compiled with clang for wasm32 and linked with \
             wasm-ld, and {} could not be run.\n\
             \x20 - Debian:  apt-get install clang lld\n\
             Or point {CC_VAR} at a clang with the wasm32 target, or set {SKIP_VAR}=1 to \
             build the host without guests.",
            cc.display()
        )),
    }
}

/// The `*.c` files directly in `dir`, sorted (none if there is no such directory).
fn c_sources(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut sources = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| format!("listing {}: {e}", dir.display()))?.path();
        if path.extension() == Some(OsStr::new("c")) && path.is_file() {
            sources.push(path);
        }
    }
    sources.sort();
    Ok(sources)
}

/// Compiles one C guest; its warnings become cargo warnings.
fn compile_c(cc: &Path, include: &Path, source: &Path, wasm: &Path) -> Result<(), String> {
    let out = Command::new(cc)
        .args(C_FLAGS)
        .arg("-I")
        .arg(include)
        .arg("-o")
        .arg(wasm)
        .arg(source)
        .output()
        .map_err(|e| format!("could not run {}: {e}", cc.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!(
            "{} failed on {} ({}):\n{stderr}\n\
             The C guests need clang's wasm32 target and wasm-ld (Debian: apt-get install clang lld).",
            cc.display(),
            source.display(),
            out.status
        ));
    }
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        println!("cargo:warning={line}");
    }
    Ok(())
}

fn write_constants(
    path: &Path,
    artifacts: &[(String, PathBuf)],
    c_artifacts: &[(String, PathBuf)],
    toolchain: Option<&Toolchain>,
) {
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
    for (name, wasm) in c_artifacts {
        writeln!(src, "/// Path of the `{name}` guest module, built from C (`guest-c/`).").unwrap();
        writeln!(src, "pub const {}: &str = {:?};", name.to_uppercase(), wasm.display().to_string()).unwrap();
    }
    let lists = [
        ("ALL", "Every guest module built from Rust: `(crate name, path)`.", artifacts),
        ("C_ALL", "Every guest module built from C: `(name, path)`.", c_artifacts),
    ];
    for (list, doc, artifacts) in lists {
        writeln!(src, "/// {doc}").unwrap();
        writeln!(src, "pub const {list}: &[(&str, &str)] = &[").unwrap();
        for (name, _) in artifacts {
            writeln!(src, "    ({name:?}, {}),", name.to_uppercase()).unwrap();
        }
        src.push_str("];\n");
    }
    // Rewrite only on change so that dependants are not rebuilt needlessly.
    if fs::read_to_string(path).ok().as_deref() != Some(src.as_str()) {
        fs::write(path, src).unwrap();
    }
}
