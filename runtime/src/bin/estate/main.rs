//! The `estate` command line: runs a node, or talks to one through its control socket.
//!
//! Only this file parses arguments; it maps every error to a message on stderr and a
//! non-zero exit code.

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;
use estate::control::{self, Caller, Credential, Principal};
use estate::node::{NodeConfig, Timing};
use estate::tenancy::Tenants;

use crate::cli::{Cli, Command};

/// mimalloc rather than glibc's malloc: a stored item is one block (64 bytes for a flow
/// key of 40 bytes and a counter), which mimalloc's size classes hold in 64 bytes where
/// glibc rounds it up to an 80-byte chunk; 15 bytes an item at 10 M items
/// (`docs/performance.md`, "One node at 10 M items").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cli;
mod config;
mod demo;
mod experiment;
mod guest;
mod node;
mod print;
mod progress;
mod request;
mod testbed;
mod traffic;

fn main() -> ExitCode {
    let args = match config::expand(std::env::args_os().collect()) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let cli = Cli::parse_from(args);
    // Nodes log what they do; the traffic and experiment tools only what goes wrong.
    match cli.command {
        Command::Node { .. } => node::init_logging("info", cli.log_format),
        Command::Traffic { .. } | Command::Experiment { .. } => node::init_logging("warn", cli.log_format),
        _ => {}
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Node {
            config: _,
            id,
            listen,
            join,
            heartbeat_ms,
            suspect_ms,
            remove_ms,
            metrics,
            limits,
            nf,
            security,
        } => {
            let timing = Timing { heartbeat_ms, suspect_ms, remove_ms, rejoin_ms: Timing::default().rejoin_ms };
            let tenants = match &security.tenants {
                Some(path) => Tenants::load(path)?,
                None => Tenants::default(),
            };
            let config = NodeConfig {
                id,
                listen,
                join,
                control: cli.control,
                timing,
                limits: limits.limits(),
                tenants,
                nf_tenant: security.nf_tenant,
                credentials: security.credentials,
                key: security.key,
                roster: security.roster,
                insecure: security.insecure,
                state_backend: nf.state_backend.clone(),
                metrics,
            };
            node::run(config, nf)
        }
        Command::Keygen { out } => {
            let public = estate::node::generate_key_file(&out)?;
            println!("{public}");
            eprintln!("wrote a key pair to {}; add `ID {public}` to the roster", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Traffic { action } => traffic::run(action),
        Command::Experiment { action } => experiment::run(action),
        Command::Demo => demo::run().map(|()| ExitCode::SUCCESS),
        Command::Guest { action } => guest::run(action),
        Command::Testbed { action } => testbed::run(action),
        Command::Credential { principal, out } => {
            let principal: Principal = principal.parse().map_err(anyhow::Error::msg)?;
            let credential = Credential::generate(&principal);
            write_private(&out, &format!("{} {}\n", credential.principal, credential.secret))?;
            println!("{}", credential.accept_line());
            Ok(ExitCode::SUCCESS)
        }
        command => {
            let Some(endpoint) = cli.control else {
                bail!("--control ENDPOINT is required to talk to a node");
            };
            let caller = Caller::from_env(cli.credential.as_deref(), cli.tenant)?;
            let (request, wait) = request::of(&command)?;
            let reply = control::call_as(&endpoint, &caller, &request, wait)?;
            print::reply(&command, reply)
        }
    }
}

/// Writes `text` to a new file at `path` readable by its owner only (mode 0600).
fn write_private(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    file.write_all(text.as_bytes()).with_context(|| format!("writing {}", path.display()))
}
