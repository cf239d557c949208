//! `estate guest new`: writes a guest crate from the templates in `templates/`, ready
//! for `estate guest build` and `cargo test`.
//!
//! The templates are the crate's files with `{{placeholder}}`s: `name` (the crate's
//! name), `lib_name` (its library's: `-` turned into `_`) and `sdk` (the `estate-guest`
//! dependency, as a TOML value).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::GuestKind;

const CARGO_TOML: &str = include_str!("templates/Cargo.toml.in");
const GITIGNORE: &str = include_str!("templates/gitignore.in");
const REDUCER_LIB: &str = include_str!("templates/reducer/lib.rs.in");
const REDUCER_README: &str = include_str!("templates/reducer/README.md.in");
const NF_LIB: &str = include_str!("templates/nf/lib.rs.in");
const NF_README: &str = include_str!("templates/nf/README.md.in");

/// Where the crate gets the SDK from.
#[derive(Debug)]
pub(crate) enum Sdk {
    /// An estate checkout's `guest-sdk/` (an absolute path).
    Path(PathBuf),
    /// A version requirement on crates.io's `estate-guest`.
    Version(String),
}

impl Sdk {
    /// The dependency's value in `Cargo.toml`.
    fn dependency(&self) -> String {
        let quoted = |s: &str| toml::Value::String(s.into()).to_string();
        match self {
            Sdk::Path(path) => format!("{{ path = {} }}", quoted(&path.to_string_lossy())),
            Sdk::Version(version) => quoted(version),
        }
    }
}

/// The `guest-sdk/` of the checkout this binary was built from.
pub(crate) fn checkout_sdk() -> anyhow::Result<PathBuf> {
    let runtime = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sdk = runtime.parent().unwrap_or(runtime).join("guest-sdk");
    if !sdk.join("Cargo.toml").is_file() {
        bail!(
            "this estate was built from {}, whose guest-sdk/ is not there any more; \
             pass --sdk-version VERSION to depend on estate-guest from crates.io",
            runtime.parent().unwrap_or(runtime).display()
        );
    }
    Ok(sdk)
}

/// Writes a new crate `name` of `kind` at `parent/name`; returns its directory. Refuses
/// if that exists; removes what it wrote if it fails half-way.
pub(crate) fn new(kind: GuestKind, name: &str, parent: &Path, sdk: &Sdk) -> anyhow::Result<PathBuf> {
    check_name(name)?;
    if let Sdk::Version(version) = sdk
        && (version.trim().is_empty() || version.contains(['\n', '\r']))
    {
        bail!("--sdk-version {version:?} is not a version requirement");
    }
    let dir = parent.join(name);
    if dir.exists() {
        bail!(
            "{} already exists; `estate guest new` makes a new directory and changes nothing in an existing one",
            dir.display()
        );
    }
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize().with_context(|| format!("resolving {}", dir.display()))?;
    match write_crate(kind, name, &dir, sdk) {
        Ok(()) => Ok(dir),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            Err(e)
        }
    }
}

fn write_crate(kind: GuestKind, name: &str, dir: &Path, sdk: &Sdk) -> anyhow::Result<()> {
    let (lib, readme) = match kind {
        GuestKind::Reducer => (REDUCER_LIB, REDUCER_README),
        GuestKind::Nf => (NF_LIB, NF_README),
    };
    let values = [("name", name.to_string()), ("lib_name", name.replace('-', "_")), ("sdk", sdk.dependency())];
    std::fs::create_dir(dir.join("src")).with_context(|| format!("creating {}/src", dir.display()))?;
    for (file, template) in
        [("Cargo.toml", CARGO_TOML), (".gitignore", GITIGNORE), ("README.md", readme), ("src/lib.rs", lib)]
    {
        let path = dir.join(file);
        std::fs::write(&path, fill(template, &values)).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// `template` with every `{{key}}` replaced by its value.
fn fill(template: &str, values: &[(&str, String)]) -> String {
    values.iter().fold(template.to_string(), |text, (key, value)| text.replace(&format!("{{{{{key}}}}}"), value))
}

/// Rust's keywords (strict and reserved, all editions), and the crates every guest
/// links: none can name a crate.
const RESERVED: &[&str] = &[
    "abstract",
    "as",
    "async",
    "await",
    "become",
    "box",
    "break",
    "const",
    "continue",
    "crate",
    "do",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "final",
    "fn",
    "for",
    "gen",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "macro",
    "match",
    "mod",
    "move",
    "mut",
    "override",
    "priv",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "struct",
    "super",
    "trait",
    "true",
    "try",
    "type",
    "typeof",
    "unsafe",
    "unsized",
    "use",
    "virtual",
    "where",
    "while",
    "yield",
    "alloc",
    "core",
    "std",
    "proc_macro",
    "test",
    "estate_guest",
];

/// A crate name as cargo takes it: 1 to 64 ASCII letters, digits, `-` and `_`, starting
/// with a letter; not a keyword nor the name of a crate the guest links.
fn check_name(name: &str) -> anyhow::Result<()> {
    let why = if name.is_empty() || name.len() > 64 {
        Some("it must be 1 to 64 characters long")
    } else if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        Some("it must start with an ASCII letter")
    } else if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        Some("only ASCII letters, digits, `-` and `_` may follow")
    } else if RESERVED.contains(&name.replace('-', "_").as_str()) {
        Some("that is a Rust keyword or the name of a crate every guest links")
    } else {
        None
    };
    match why {
        Some(why) => bail!("{name:?} is not a valid crate name: {why}"),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crate_names() {
        for good in ["x", "my-reducer", "flow_counter2", "A1"] {
            check_name(good).unwrap();
        }
        for bad in ["", "1x", "-x", "_x", "my reducer", "x.y", "naïve", "fn", "std", "estate-guest", &"a".repeat(65)] {
            let err = check_name(bad).unwrap_err().to_string();
            assert!(err.contains("is not a valid crate name"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn every_placeholder_is_filled() {
        let values = [("name", "x-y".to_string()), ("lib_name", "x_y".into()), ("sdk", "\"1\"".into())];
        for template in [CARGO_TOML, GITIGNORE, REDUCER_LIB, REDUCER_README, NF_LIB, NF_README] {
            let text = fill(template, &values);
            assert!(!text.contains("{{"), "{text}");
        }
        let toml: toml::Table = fill(CARGO_TOML, &values).parse().unwrap();
        assert_eq!(toml["dependencies"]["estate-guest"].as_str(), Some("1"));
        let sdk = Sdk::Path(PathBuf::from("/a \"b\"/guest-sdk")).dependency();
        let toml: toml::Table = fill(CARGO_TOML, &[("sdk", sdk)]).parse().unwrap();
        assert_eq!(toml["dependencies"]["estate-guest"]["path"].as_str(), Some("/a \"b\"/guest-sdk"));
    }
}
