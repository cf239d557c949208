//! The control request a client command sends, and how long it may take.

use std::time::Duration;

use anyhow::{Context, bail};
use estate::control::{ControlRequest, LimitOverrides};
use estate::global::Consistency;

use crate::cli::{Command, ConsistencyArg, NfAction, ReducerAction};

/// The control request of a client `command`, and how long to wait for its reply (a
/// module to compile gets two minutes: compiling a large NF on a busy host is slow).
pub(crate) fn of(command: &Command) -> anyhow::Result<(ControlRequest, Duration)> {
    Ok(match command {
        Command::Node { .. }
        | Command::Demo
        | Command::Traffic { .. }
        | Command::Experiment { .. }
        | Command::Guest { .. }
        | Command::Testbed { .. }
        | Command::Credential { .. }
        | Command::Keygen { .. } => {
            bail!("not a request to a node's control socket")
        }
        Command::Set { key, value } => {
            (ControlRequest::Set { key: key.clone(), value: estate::text::parse_value(value) }, Duration::from_secs(5))
        }
        Command::Get { key, .. } => (ControlRequest::Get { key: key.clone() }, Duration::from_secs(5)),
        Command::Del { key } => (ControlRequest::Del { key: key.clone() }, Duration::from_secs(5)),
        Command::Members { .. } => (ControlRequest::Members, Duration::from_secs(5)),
        Command::Stats { .. } => (ControlRequest::Stats, Duration::from_secs(5)),
        Command::SecurityLog { .. } => (ControlRequest::SecurityLog, Duration::from_secs(5)),
        Command::Nf { action: NfAction::Status } => (ControlRequest::NfStatus, Duration::from_secs(5)),
        Command::Leave { timeout_ms, .. } => (
            ControlRequest::Leave { timeout_ms: *timeout_ms },
            Duration::from_millis(*timeout_ms) + Duration::from_secs(15),
        ),
        Command::Nf { action: NfAction::Unload } => (ControlRequest::NfUnload, Duration::from_secs(10)),
        Command::Nf { action: NfAction::Load { file, config } | NfAction::Replace { file, config } } => {
            let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
            let config = match config {
                Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
                None => String::new(),
            };
            let request = match command {
                Command::Nf { action: NfAction::Replace { .. } } => ControlRequest::NfReplace { bytes, config },
                _ => ControlRequest::NfLoad { bytes, config },
            };
            (request, Duration::from_secs(120))
        }
        Command::Reducer { action: ReducerAction::List { .. } } => {
            (ControlRequest::ReducerList, Duration::from_secs(5))
        }
        Command::Reducer { action: ReducerAction::Unload { name } } => {
            (ControlRequest::ReducerUnload { name: name.clone() }, Duration::from_secs(5))
        }
        Command::Reducer { action: ReducerAction::Load { name, file, fuel, wall_ms, memory_mb, output_kb } } => {
            let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
            let limits = LimitOverrides {
                fuel: *fuel,
                wall_ms: *wall_ms,
                memory_bytes: memory_mb.map(|m| m << 20),
                output_bytes: output_kb.map(|k| k << 10),
            };
            (ControlRequest::ReducerLoad { name: name.clone(), bytes, limits }, Duration::from_secs(120))
        }
        Command::Global { pattern, reducer, timeout_ms, consistency, remote, .. } => (
            ControlRequest::Global {
                pattern: pattern.clone(),
                reducer: reducer.clone(),
                timeout_ms: *timeout_ms,
                consistency: match consistency {
                    ConsistencyArg::BestEffort => Consistency::BestEffort,
                    ConsistencyArg::All => Consistency::All,
                },
                remote: *remote,
            },
            // A Wasm reduction after the deadline runs under its own wall-time limit.
            Duration::from_millis(*timeout_ms) + Duration::from_secs(15),
        ),
    })
}
