//! The `estate` command line: runs a node, or talks to one through its control socket.
//!
//! Only this file parses arguments; it maps every error to a message on stderr and a
//! non-zero exit code.

use std::process::ExitCode;

use anyhow::bail;
use clap::Parser;
use estate::control;
use estate::node::{NodeConfig, Timing};

use crate::cli::{Cli, Command};

mod cli;
mod demo;
mod node;
mod print;
mod request;
mod traffic;

fn main() -> ExitCode {
    let cli = Cli::parse();
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
        Command::Node { id, listen, join, heartbeat_ms, suspect_ms, remove_ms, limits, nf, security } => {
            let timing = Timing { heartbeat_ms, suspect_ms, remove_ms, rejoin_ms: Timing::default().rejoin_ms };
            let config = NodeConfig {
                id,
                listen,
                join,
                control: cli.control,
                timing,
                limits: limits.limits(),
                key: security.key,
                roster: security.roster,
                insecure: security.insecure,
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
        Command::Demo => demo::run().map(|()| ExitCode::SUCCESS),
        command => {
            let Some(endpoint) = cli.control else {
                bail!("--control ENDPOINT is required to talk to a node");
            };
            let (request, wait) = request::of(&command)?;
            let reply = control::call(&endpoint, &request, wait)?;
            print::reply(&command, reply)
        }
    }
}
