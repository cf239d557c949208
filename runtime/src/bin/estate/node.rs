//! `estate node`: runs a node (and its NF) until it leaves or is signalled.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::cli::*;
use anyhow::Context;
use estate::nf::input::InputSpec;
use estate::nf::{FailPolicy, FlowState, NfSettings};
use estate::node::{Node, NodeConfig};

/// Starts the NF of `args` in `node`, if one was asked for; returns the bound endpoint
/// of a steered input.
fn start_nf(node: &Node, args: &NfArgs) -> anyhow::Result<Option<String>> {
    let input = match (&args.input, &args.inline) {
        (Some(input), _) => input.clone(),
        (None, Some(sides)) => format!("inline:{sides}"),
        (None, None) => return Ok(None),
    };
    let config = match &args.nf_config {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        None => String::new(),
    };
    let mut spec: InputSpec = input.parse().map_err(anyhow::Error::msg)?;
    if let InputSpec::Inline { unparsed, .. } = &mut spec {
        *unparsed = args.unparsed.parse().map_err(anyhow::Error::msg)?;
    }
    let (packets, steer) = spec.open(node.nf().counters())?;
    let fail: FailPolicy = args.fail.parse().map_err(anyhow::Error::msg)?;
    let flows: FlowState = args.flow_state.parse().map_err(anyhow::Error::msg)?;
    let Some(file) = &args.nf else {
        node.nf().hold_input(packets, NfSettings { fail, flows });
        tracing::info!(%input, "input held until an NF is loaded (estate … nf load)");
        return Ok(steer);
    };
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    node.nf()
        .start(&bytes, &config, packets, NfSettings { fail, flows })
        .with_context(|| format!("starting the NF {}", file.display()))?;
    tracing::info!(nf = %file.display(), %input, %fail, "NF running");
    Ok(steer)
}

/// Logs to stderr at `RUST_LOG`'s level, or `default` without it, as text or as one
/// JSON object a line.
pub(crate) fn init_logging(default: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let logs = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
        LogFormat::Json => logs.json().with_current_span(false).init(),
    }
}

pub(crate) fn run(config: NodeConfig, nf: NfArgs) -> anyhow::Result<ExitCode> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    let joining = !config.join.is_empty();
    let node = Node::start(config)?;
    if joining && nf.nf.is_some() {
        // A moved flow's first packet reads the cluster: join it before the NF starts.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !node.members().iter().any(|m| m.state == "alive") {
            if std::time::Instant::now() > deadline {
                tracing::warn!("no member reached within 10 s; starting the NF alone");
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let steer = start_nf(&node, &nf)?;
    // One line on stdout with the bound endpoints, for scripts that asked for port `*`.
    let steer = steer.map(|e| format!(" steer={e}")).unwrap_or_default();
    let metrics = node.metrics_addr().map(|a| format!(" metrics={a}")).unwrap_or_default();
    println!(
        "ready id={} listen={} control={}{steer}{metrics}",
        node.id(),
        node.endpoint(),
        node.control_endpoint().unwrap_or("-")
    );
    while !stop.load(Ordering::Relaxed) {
        if node.has_left() {
            tracing::info!("left the cluster on request; exiting");
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Graceful scale-in: hand the state over first; a lone node has nobody to hand to.
    tracing::info!("signal received; handing state over and leaving the cluster");
    if let Err(e) = node.leave(Duration::from_secs(10)) {
        tracing::warn!("leaving without handing state over: {e}");
    }
    node.shutdown();
    Ok(ExitCode::SUCCESS)
}
