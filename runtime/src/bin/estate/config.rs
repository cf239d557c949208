//! `estate node --config FILE`: a TOML file of the node's flags.
//!
//! Each key is a flag's long name (`listen`, `heartbeat-ms`; `_` may stand for `-`);
//! a string or number is the flag's value, `true` gives a switch (`insecure = true`),
//! `false` leaves it out, an array repeats the flag (`join = ["…", "…"]`). The file's
//! flags go right after `node` on the command line, so a flag given on the command line
//! comes later and wins (list flags such as `--join` add to the file's list). Keys are
//! checked against `estate node`'s flags: a misspelt key is an error naming the file.

use std::ffi::OsString;
use std::path::Path;

use anyhow::{Context, bail};
use clap::CommandFactory;

use crate::cli::Cli;

/// Global flags that take a value (they may come before the subcommand).
const GLOBAL_WITH_VALUE: [&str; 4] = ["--control", "--credential", "--tenant", "--log-format"];

/// The command line with the flags of `estate node --config FILE` put in.
pub(crate) fn expand(args: Vec<OsString>) -> anyhow::Result<Vec<OsString>> {
    let Some(node_at) = subcommand_at(&args).filter(|&i| args[i] == "node") else {
        return Ok(args);
    };
    let Some(path) = config_path(&args[node_at + 1..]) else {
        return Ok(args);
    };
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading the node config {}", path.display()))?;
    let flags = flags_of(&text).with_context(|| format!("in the node config {}", path.display()))?;
    let mut expanded = args[..=node_at].to_vec();
    expanded.extend(flags.into_iter().map(OsString::from));
    expanded.extend_from_slice(&args[node_at + 1..]);
    Ok(expanded)
}

/// Where the subcommand is: the first argument that is neither a flag nor a global
/// flag's value.
fn subcommand_at(args: &[OsString]) -> Option<usize> {
    let mut i = 1;
    while i < args.len() {
        let arg = args[i].to_string_lossy();
        if GLOBAL_WITH_VALUE.contains(&arg.as_ref()) {
            i += 2;
        } else if arg.starts_with('-') {
            i += 1;
        } else {
            return Some(i);
        }
    }
    None
}

fn config_path(args: &[OsString]) -> Option<std::path::PathBuf> {
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let text = arg.to_string_lossy();
        if text == "--config" {
            return iter.next().map(|p| Path::new(p).to_path_buf());
        }
        if let Some(path) = text.strip_prefix("--config=") {
            return Some(path.into());
        }
    }
    None
}

/// The long flags `estate node` takes, globals included.
fn node_flags() -> Vec<String> {
    let cli = Cli::command();
    let node = cli.find_subcommand("node").expect("the node subcommand");
    node.get_arguments()
        .chain(cli.get_arguments())
        .filter_map(|a| a.get_long().map(String::from))
        .filter(|f| !["config", "help", "version", "credential", "tenant"].contains(&f.as_str()))
        .collect()
}

/// The command-line flags a config file's text stands for.
fn flags_of(text: &str) -> anyhow::Result<Vec<String>> {
    let table: toml::Table = text.parse()?;
    let known = node_flags();
    let mut flags = Vec::new();
    for (key, value) in table {
        let flag = key.replace('_', "-");
        if !known.contains(&flag) {
            bail!("unknown setting `{key}`; `estate node` takes: {}", known.join(", "));
        }
        let values = match value {
            toml::Value::Array(items) => items,
            one => vec![one],
        };
        for value in values {
            match value {
                toml::Value::Boolean(true) => flags.push(format!("--{flag}")),
                toml::Value::Boolean(false) => {}
                toml::Value::String(s) => flags.extend([format!("--{flag}"), s]),
                toml::Value::Integer(n) => flags.extend([format!("--{flag}"), n.to_string()]),
                toml::Value::Float(x) => flags.extend([format!("--{flag}"), x.to_string()]),
                other => bail!("`{key}` is a {}; give a string, number, boolean or array", other.type_str()),
            }
        }
    }
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<OsString> {
        line.split_whitespace().map(OsString::from).collect()
    }

    #[test]
    fn the_files_flags_go_right_after_node_so_the_command_lines_win() {
        let dir = std::env::temp_dir().join(format!("estate-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("node.toml");
        std::fs::write(
            &file,
            "id = \"n1\"\nheartbeat_ms = 200\njoin = [\"tcp://a:1\", \"tcp://b:2\"]\ninsecure = false\n",
        )
        .unwrap();
        let line = format!("estate --control tcp://127.0.0.1:7 node --config {} --id n2", file.display());
        let expanded: Vec<String> =
            expand(args(&line)).unwrap().into_iter().map(|a| a.into_string().unwrap()).collect();
        let expected = format!(
            "estate --control tcp://127.0.0.1:7 node --heartbeat-ms 200 --id n1 --join tcp://a:1 --join tcp://b:2 \
             --config {} --id n2",
            file.display()
        );
        assert_eq!(expanded.join(" "), expected);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_misspelt_setting_is_an_error_naming_it() {
        let error = flags_of("lissten = \"tcp://127.0.0.1:1\"").unwrap_err().to_string();
        assert!(error.contains("unknown setting `lissten`") && error.contains("listen"), "{error}");
        let error = flags_of("[table]\nx = 1").unwrap_err().to_string();
        assert!(error.contains("unknown setting `table`"), "{error}");
        let error = flags_of("listen = { a = 1 }").unwrap_err().to_string();
        assert!(error.contains("is a table"), "{error}");
    }

    #[test]
    fn other_commands_are_left_alone() {
        assert_eq!(
            expand(args("estate --control x get --config k")).unwrap(),
            args("estate --control x get --config k")
        );
        assert_eq!(expand(args("estate node --id a --listen b")).unwrap(), args("estate node --id a --listen b"));
    }

    /// The example in `examples/node.toml` names every flag of `estate node`.
    #[test]
    fn the_example_config_shows_every_flag_and_parses() {
        let example = include_str!("../../../../examples/node.toml");
        for flag in node_flags() {
            let key = flag.replace('-', "_");
            let shown = example.lines().any(|l| {
                let l = l.trim_start_matches(['#', ' ']);
                l.starts_with(&format!("{flag} =")) || l.starts_with(&format!("{key} ="))
            });
            assert!(shown, "examples/node.toml does not show `{flag}`");
        }
        let flags = flags_of(example).unwrap();
        assert!(flags.contains(&"--listen".to_string()), "{flags:?}");
    }
}
