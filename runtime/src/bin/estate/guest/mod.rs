//! `estate guest`: a guest crate in one command (`new`), its Wasm module in another
//! (`build`).
//!
//! `build` picks the compiler exactly as `runtime/build.rs` does for the repository's
//! guests: the route choice is one file, `runtime/toolchain.rs`, included by both.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::cli::GuestAction;

mod scaffold;
#[path = "../../../../toolchain.rs"]
mod toolchain;

use toolchain::{RUSTC_VAR, Toolchain};

/// What kind of guest `estate guest new` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum GuestKind {
    /// A combinable reducer: the sum of integer values.
    Reducer,
    /// An NF: a per-flow packet counter.
    Nf,
}

pub(crate) fn run(action: GuestAction) -> anyhow::Result<ExitCode> {
    match action {
        GuestAction::New { kind, name, dir, sdk_version } => {
            let sdk = match sdk_version {
                Some(version) => scaffold::Sdk::Version(version),
                None => scaffold::Sdk::Path(scaffold::checkout_sdk()?),
            };
            let dir = scaffold::new(kind, &name, &dir, &sdk)?;
            let kind = match kind {
                GuestKind::Reducer => "reducer",
                GuestKind::Nf => "NF",
            };
            println!("created {kind} crate {name} in {}", dir.display());
            println!("build it:  estate guest build {}", dir.display());
            println!("test it:   cargo test --manifest-path {}", dir.join("Cargo.toml").display());
        }
        GuestAction::Build { dir } => {
            let wasm = build(&dir)?;
            println!("built {}", wasm.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Builds the guest crate in `dir` for wasm32 (release); returns its module's path.
fn build(dir: &Path) -> anyhow::Result<PathBuf> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        bail!(
            "no Cargo.toml in {}: `estate guest build` builds a guest crate (`estate guest new` makes one)",
            dir.display()
        );
    }
    let manifest = manifest.canonicalize().with_context(|| format!("reading {}", manifest.display()))?;
    let lib = lib_name(&manifest)?;
    let toolchain = Toolchain::pick(&format!("Or point {RUSTC_VAR} at a rustc that has either."))
        .map_err(|message| anyhow::anyhow!("cannot build wasm32 guests on this machine.\n\n{message}"))?;
    eprintln!("building {} with {} ({:?} route)", manifest.display(), toolchain.rustc.display(), toolchain.route);
    let built = toolchain.run(toolchain.cargo_build(&manifest), &manifest).map_err(anyhow::Error::msg)?;
    let module = match lib {
        Some(lib) => built.into_iter().find(|(name, _)| *name == lib).map(|(_, wasm)| wasm),
        // A workspace's manifest: the one module it built, if it built one only.
        None if built.len() == 1 => built.into_iter().next().map(|(_, wasm)| wasm),
        None if built.len() > 1 => {
            let modules: Vec<String> = built.iter().map(|(_, wasm)| wasm.display().to_string()).collect();
            bail!("{} built {} modules, not one: {}", manifest.display(), built.len(), modules.join(", "))
        }
        None => None,
    };
    module.with_context(|| {
        format!(
            "{} built no Wasm module: a guest's Cargo.toml needs `crate-type = [\"cdylib\"]` in its [lib] table",
            manifest.display()
        )
    })
}

/// The library name of the package of `manifest` (`[lib] name`, else the package name
/// with `-` turned into `_`); `None` for a workspace's manifest without a package.
fn lib_name(manifest: &Path) -> anyhow::Result<Option<String>> {
    let text = std::fs::read_to_string(manifest).with_context(|| format!("reading {}", manifest.display()))?;
    let toml: toml::Table = text.parse().with_context(|| format!("parsing {}", manifest.display()))?;
    let name = |table: Option<&toml::Value>| table?.get("name")?.as_str().map(String::from);
    Ok(name(toml.get("lib")).or_else(|| name(toml.get("package")).map(|n| n.replace('-', "_"))))
}
