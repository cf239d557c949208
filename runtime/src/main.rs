//! The `estate` command line: runs a node, or talks to one through its control socket.
//!
//! Only this file parses arguments; it maps every error to a message on stderr and a
//! non-zero exit code.
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use estate::membership::Timing;
use estate::nfrun::{FailPolicy, FlowState, Input, NfSettings, Packets};
use estate::node::{Node, NodeConfig};
use estate::reduce::Reduced;
use estate::switch::{self, Assignment, Event, Schedule, SteerSource, ZmqCommands, ZmqFabric};
use estate::traffic::{self, SynthConfig};
use estate::wasm::Limits;
use estate::wire::{self, Consistency, ControlReply, ControlRequest, GlobalAnswer, LimitOverrides, MemberView};
use estate_guest::{Item, Value};
use serde_json::json;

mod demo;

#[derive(Parser, Debug)]
#[command(name = "estate", version, about = "State management for elastic network functions")]
struct Cli {
    /// Control endpoint of the node to talk to (for every command but `node`).
    #[arg(long, global = true, value_name = "ENDPOINT")]
    control: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs the self-contained demo: three nodes on loopback, a write on each, global
    /// reads with built-in and Wasm reducers.
    Demo,
    /// Runs a node until SIGINT or SIGTERM, then leaves the cluster cleanly.
    Node {
        /// Node id, unique in the cluster.
        #[arg(long)]
        id: String,
        /// Endpoint to listen on for peers, e.g. tcp://127.0.0.1:7001.
        #[arg(long, value_name = "ENDPOINT")]
        listen: String,
        /// Seed endpoint to join through (repeatable).
        #[arg(long, value_name = "ENDPOINT")]
        join: Vec<String>,
        /// Interval between heartbeats.
        #[arg(long, default_value_t = Timing::default().heartbeat_ms)]
        heartbeat_ms: u64,
        /// Silence after which a member is suspect.
        #[arg(long, default_value_t = Timing::default().suspect_ms)]
        suspect_ms: u64,
        /// Silence after which a member is removed.
        #[arg(long, default_value_t = Timing::default().remove_ms)]
        remove_ms: u64,
        #[command(flatten)]
        limits: NodeLimits,
        #[command(flatten)]
        nf: NfArgs,
    },
    /// Sets KEY to VALUE (an integer if it parses as i64, a float if f64, else text).
    Set { key: String, value: String },
    /// Prints the value at KEY.
    Get {
        key: String,
        /// Print the value with its version as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Deletes KEY.
    Del { key: String },
    /// Reduces the items of every live member whose key matches PATTERN.
    Global {
        /// A regular expression matched against whole keys, or an exact key.
        pattern: String,
        /// Reducer: latest, sum, avg, min, max, count, list.
        #[arg(long = "reduce", value_name = "NAME")]
        reducer: String,
        /// Deadline of the read.
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
        /// `best-effort` reduces what answered in time; `all` fails unless every live
        /// member answered.
        #[arg(long, value_enum, default_value_t = ConsistencyArg::BestEffort)]
        consistency: ConsistencyArg,
        /// Push the reducer down: each member reduces its own items and sends one
        /// partial result (combinable reducers only).
        #[arg(long)]
        remote: bool,
        /// Print the answer, who answered and who is missing as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Traffic tools: `pcap` writes a synthetic stream to a pcap file; `switch` sends a
    /// stream to nodes' steered inputs and moves flows between them.
    Traffic {
        #[command(subcommand)]
        action: TrafficAction,
    },
    /// Loads (or hot-replaces), unloads and shows the node's NF.
    Nf {
        #[command(subcommand)]
        action: NfAction,
    },
    /// Loads, lists and unloads Wasm reducers in the running node.
    Reducer {
        #[command(subcommand)]
        action: ReducerAction,
    },
    /// Lists the members as the node sees them.
    Members {
        #[arg(long)]
        json: bool,
    },
    /// Prints the node's counters (frames received, malformed, rejected, …).
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Graceful scale-in: the node stops its NF, hands all its state to the other
    /// members, leaves the cluster and exits. If the hand-off fails, it keeps its
    /// state and stays, and this command fails saying why.
    Leave {
        /// How long the members may take to acknowledge the state.
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum TrafficAction {
    /// Writes the synthetic stream SPEC (see `--input synth:`) to a pcap file: Ethernet,
    /// IPv4, TCP/UDP; moved flows carry a VLAN tag, as the paper's fabric marks them.
    Pcap {
        /// The pcap file to write.
        #[arg(long)]
        out: std::path::PathBuf,
        /// The synthetic stream, e.g. `seed=1,flows=100,packets=10000,share=0.1`.
        #[arg(long)]
        synth: String,
    },
    /// Emulates the fabric of a scale-out or scale-in: sends each packet of a stream as an
    /// Ethernet frame to its flow's node (the node's `--input steer:` endpoint), moves
    /// flows between nodes on a schedule and tags moved flows' packets with a VLAN id
    /// that changes with every move. Prints a summary at the end.
    #[command(group(clap::ArgGroup::new("stream").required(true).args(["pcap", "synth"])))]
    Switch {
        /// A pcap file to send.
        #[arg(long, value_name = "FILE")]
        pcap: Option<std::path::PathBuf>,
        /// A synthetic stream to send (as `--input synth:`), e.g. `seed=1,flows=40,packets=6000`.
        #[arg(long, value_name = "SPEC")]
        synth: Option<String>,
        /// A node: its name and the `steer=` endpoint of its ready line (repeatable; the
        /// order is the nodes' order).
        #[arg(long = "node", value_name = "NAME=ENDPOINT", required = true)]
        nodes: Vec<String>,
        /// A node's control endpoint (repeatable): before flows move away from the node,
        /// the switch waits until its NF has handled every packet sent to it, so no
        /// packet of a moved flow is still queued at the old node.
        #[arg(long = "node-control", value_name = "NAME=ENDPOINT")]
        controls: Vec<String>,
        /// The nodes new flows are spread over, by a hash of the flow key (default: the
        /// first node).
        #[arg(long, value_name = "NAME,NAME", value_delimiter = ',')]
        start: Vec<String>,
        /// A step (repeatable): `N:move:FRACTION:FROM:TO` moves FRACTION (0..1] of the
        /// flows FROM has after N packets to TO; `N:drain:FROM:TO` moves all of them and
        /// ends FROM's input.
        #[arg(long = "at", value_name = "SPEC")]
        at: Vec<String>,
        /// Send at most this many packets per second.
        #[arg(long, value_name = "PPS", value_parser = clap::value_parser!(u32).range(1..=i64::from(switch::MAX_RATE)))]
        rate: Option<u32>,
        /// How long a frame may wait for a node to take it before it counts as
        /// undeliverable (and the node as down until it takes one again).
        #[arg(long, default_value_t = 2000)]
        send_timeout_ms: u64,
        /// How long to wait for a node (`--node-control`) to handle its packets before a
        /// move; the move goes ahead after that.
        #[arg(long, default_value_t = 10_000)]
        settle_timeout_ms: u64,
        /// Writes every flow (key, packets, final node, path over the nodes) and the
        /// summary as JSON to FILE.
        #[arg(long, value_name = "FILE")]
        flows_out: Option<std::path::PathBuf>,
        /// Also takes steps on command while the stream runs (`estate traffic command`),
        /// on a ZeroMQ REP socket bound here; the bound endpoint is printed first.
        #[arg(long, value_name = "ENDPOINT")]
        commands: Option<String>,
    },
    /// Asks a running switch (`traffic switch --commands`) to take a step now:
    /// `move FRACTION FROM TO` or `drain FROM TO`.
    Command {
        /// The switch's command endpoint.
        #[arg(long, value_name = "ENDPOINT")]
        switch: String,
        /// The step, e.g. `move 0.5 A B`.
        #[arg(required = true, num_args = 1..)]
        step: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum NfAction {
    /// Loads FILE as the node's NF: it replaces a running NF between two packets (the
    /// state in the store stays), or starts on the node's held input.
    Load {
        file: std::path::PathBuf,
        /// The NF's configuration file.
        #[arg(long, value_name = "FILE")]
        config: Option<std::path::PathBuf>,
    },
    /// Replaces the running NF with FILE between two packets (the state in the store
    /// stays); fails, changing nothing, if no NF runs or FILE is not a valid NF.
    Replace {
        file: std::path::PathBuf,
        /// The NF's configuration file.
        #[arg(long, value_name = "FILE")]
        config: Option<std::path::PathBuf>,
    },
    /// Stops the NF (the rest of its input is not processed).
    Unload,
    /// Prints running, finished, waiting (input held) or none.
    Status,
}

#[derive(Subcommand, Debug)]
enum ReducerAction {
    /// Loads FILE (a wasm32 reducer module) under NAME, replacing any reducer of that
    /// name; reads already running finish on the old one.
    Load {
        name: String,
        file: std::path::PathBuf,
        /// Fuel per call (default: the node's).
        #[arg(long)]
        fuel: Option<u64>,
        /// Wall-time limit per call in ms (default: the node's).
        #[arg(long)]
        wall_ms: Option<u64>,
        /// Memory limit in MiB (default: the node's).
        #[arg(long)]
        memory_mb: Option<u64>,
        /// Output limit in KiB (default: the node's).
        #[arg(long)]
        output_kb: Option<u64>,
    },
    /// Lists built-in and loaded reducers.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Unloads the reducer NAME.
    Unload { name: String },
}

/// An NF to run in the node, and its packet source.
#[derive(clap::Args, Debug)]
struct NfArgs {
    /// NF module (wasm32) to run over the input.
    #[arg(long, value_name = "FILE.wasm", requires = "input")]
    nf: Option<std::path::PathBuf>,
    /// The NF's configuration file (its format is the NF's own).
    #[arg(long, value_name = "FILE", requires = "nf")]
    nf_config: Option<std::path::PathBuf>,
    /// Packet source: `synth:seed=1,flows=100,packets=10000,share=0.1,patterns=a|b`
    /// (also `first=N`, `moved=1`), `pcap:FILE`, or `steer:ENDPOINT` (frames pushed by
    /// `estate traffic switch`; the bound endpoint is printed as `steer=` in the ready
    /// line). Without `--nf` the input waits for `nf load`.
    #[arg(long, value_name = "SPEC")]
    input: Option<String>,
    /// What a packet gets when the NF faults on it.
    #[arg(long, value_parser = ["open", "closed"], default_value = "open")]
    fail: String,
    /// State of a moved flow: `take` moves it here (no double counting), `copy` fetches
    /// the newest values (the paper's way), `off` shares nothing (baseline).
    #[arg(long, value_parser = ["take", "copy", "off"], default_value = "take")]
    flow_state: String,
}

/// Default budgets of Wasm reducer calls on a node.
#[derive(clap::Args, Debug)]
struct NodeLimits {
    /// Fuel per reducer call.
    #[arg(long, default_value_t = Limits::default().fuel)]
    reducer_fuel: u64,
    /// Wall-time limit per reducer call, in ms.
    #[arg(long, default_value_t = Limits::default().wall_time.as_millis() as u64)]
    reducer_wall_ms: u64,
    /// Memory limit of a reducer instance, in MiB.
    #[arg(long, default_value_t = (Limits::default().memory_bytes >> 20) as u64)]
    reducer_memory_mb: u64,
    /// Largest reducer output, in KiB.
    #[arg(long, default_value_t = (Limits::default().output_bytes >> 10) as u64)]
    reducer_output_kb: u64,
    /// Largest module accepted, in KiB.
    #[arg(long, default_value_t = (Limits::default().module_bytes >> 10) as u64)]
    max_module_kb: u64,
}

impl NodeLimits {
    fn limits(&self) -> Limits {
        Limits {
            fuel: self.reducer_fuel,
            wall_time: Duration::from_millis(self.reducer_wall_ms),
            memory_bytes: (self.reducer_memory_mb as usize) << 20,
            output_bytes: (self.reducer_output_kb as usize) << 10,
            module_bytes: (self.max_module_kb as usize) << 10,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ConsistencyArg {
    BestEffort,
    All,
}

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
    if let Command::Node { id, listen, join, heartbeat_ms, suspect_ms, remove_ms, limits, nf } = cli.command {
        let timing = Timing { heartbeat_ms, suspect_ms, remove_ms, rejoin_ms: Timing::default().rejoin_ms };
        let config = NodeConfig { id, listen, join, control: cli.control, timing, limits: limits.limits() };
        return run_node(config, nf);
    }
    if let Command::Traffic { action: TrafficAction::Pcap { out, synth } } = &cli.command {
        let config: SynthConfig = synth.parse().map_err(anyhow::Error::msg)?;
        let n = estate::pcap::write(out, traffic::synthetic(&config)).map_err(anyhow::Error::msg)?;
        println!("wrote {n} packets to {}", out.display());
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::Traffic { action: TrafficAction::Switch { .. } } = &cli.command {
        return run_switch(cli.command);
    }
    if let Command::Traffic { action: TrafficAction::Command { switch, step } } = &cli.command {
        let text = step.join(" ");
        // Checked here too, so a typo fails without a round trip.
        switch::parse_command(&text)?;
        let ctx = zmq::Context::new();
        let socket = ctx.socket(zmq::REQ)?;
        socket.set_linger(0)?;
        socket.set_rcvtimeo(10_000)?;
        socket.connect(switch).with_context(|| format!("connecting to {switch}"))?;
        socket.send(text.as_bytes(), 0)?;
        let reply = match socket.recv_bytes(0) {
            Ok(reply) => String::from_utf8_lossy(&reply).into_owned(),
            Err(zmq::Error::EAGAIN) => {
                bail!("no answer from the switch at {switch} within 10 s (has its stream ended?)")
            }
            Err(e) => bail!("receiving from {switch}: {e}"),
        };
        return match reply.strip_prefix("error: ") {
            Some(why) => bail!("{why}"),
            None => {
                println!("{}", reply.strip_prefix("ok: ").unwrap_or(&reply));
                Ok(ExitCode::SUCCESS)
            }
        };
    }
    if let Command::Demo = cli.command {
        return demo::run().map(|()| ExitCode::SUCCESS);
    }
    let Some(endpoint) = cli.control else {
        bail!("--control ENDPOINT is required to talk to a node");
    };
    let (request, wait) = match &cli.command {
        Command::Node { .. } | Command::Demo | Command::Traffic { .. } => unreachable!("handled above"),
        Command::Set { key, value } => {
            (ControlRequest::Set { key: key.clone(), value: parse_value(value) }, Duration::from_secs(5))
        }
        Command::Get { key, .. } => (ControlRequest::Get { key: key.clone() }, Duration::from_secs(5)),
        Command::Del { key } => (ControlRequest::Del { key: key.clone() }, Duration::from_secs(5)),
        Command::Members { .. } => (ControlRequest::Members, Duration::from_secs(5)),
        Command::Stats { .. } => (ControlRequest::Stats, Duration::from_secs(5)),
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
            let request = match &cli.command {
                Command::Nf { action: NfAction::Replace { .. } } => ControlRequest::NfReplace { bytes, config },
                _ => ControlRequest::NfLoad { bytes, config },
            };
            (request, Duration::from_secs(30))
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
            (ControlRequest::ReducerLoad { name: name.clone(), bytes, limits }, Duration::from_secs(30))
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
    };
    let reply = call(&endpoint, &request, wait)?;
    print_reply(&cli.command, reply)
}

/// Starts the NF of `args` in `node`, if one was asked for; returns the bound endpoint
/// of a steered input.
fn start_nf(node: &Node, args: &NfArgs) -> anyhow::Result<Option<String>> {
    let Some(input) = &args.input else {
        return Ok(None);
    };
    let config = match &args.nf_config {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        None => String::new(),
    };
    let mut steer = None;
    let packets: Input = match input.split_once(':') {
        Some(("synth", spec)) => {
            let packets: Packets =
                Box::new(traffic::synthetic(&spec.parse::<SynthConfig>().map_err(anyhow::Error::msg)?));
            packets.into()
        }
        Some(("pcap", path)) => {
            let packets: Packets =
                Box::new(estate::pcap::read(std::path::Path::new(path)).map_err(anyhow::Error::msg)?);
            packets.into()
        }
        Some(("steer", endpoint)) => {
            let source = SteerSource::bind(endpoint, node.nf().counters())?;
            steer = Some(source.endpoint().to_string());
            source.into_input()
        }
        _ => bail!("unsupported input {input:?}: expected synth:SPEC, pcap:FILE or steer:ENDPOINT"),
    };
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

/// Logs to stderr at `RUST_LOG`'s level, or `default` without it.
fn init_logging(default: &str) {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .init();
}

fn run_node(config: NodeConfig, nf: NfArgs) -> anyhow::Result<ExitCode> {
    init_logging("info");
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
    println!(
        "ready id={} listen={} control={}{steer}",
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

/// Splits a `NAME=ENDPOINT` argument of `flag`.
fn name_and_endpoint(flag: &str, arg: &str) -> anyhow::Result<(String, String)> {
    match arg.split_once('=') {
        Some((name, endpoint)) if !name.is_empty() && !endpoint.is_empty() => {
            Ok((name.to_string(), endpoint.to_string()))
        }
        _ => bail!("{flag} {arg:?}: expected NAME=ENDPOINT"),
    }
}

/// `estate traffic switch`: sends the stream, prints the summary, writes `--flows-out`.
fn run_switch(command: Command) -> anyhow::Result<ExitCode> {
    let Command::Traffic {
        action:
            TrafficAction::Switch {
                pcap,
                synth,
                nodes,
                controls,
                start,
                at,
                rate,
                send_timeout_ms,
                settle_timeout_ms,
                flows_out,
                commands,
            },
    } = command
    else {
        unreachable!("called for traffic switch only");
    };
    init_logging("warn");
    let nodes: Vec<(String, String)> =
        nodes.iter().map(|n| name_and_endpoint("--node", n)).collect::<anyhow::Result<_>>()?;
    let controls: std::collections::HashMap<String, String> =
        controls.iter().map(|c| name_and_endpoint("--node-control", c)).collect::<anyhow::Result<_>>()?;
    let names: Vec<String> = nodes.iter().map(|(name, _)| name.clone()).collect();
    let mut assignment = Assignment::new(names.clone(), &start)?;
    let events = at.iter().map(|spec| spec.parse::<Event>()).collect::<Result<Vec<_>, _>>().context("--at")?;
    let schedule = Schedule::new(events, &names).context("--at")?;
    let packets: Packets = match (&pcap, &synth) {
        (Some(path), _) => Box::new(estate::pcap::read(path).map_err(anyhow::Error::msg)?),
        (None, Some(spec)) => Box::new(traffic::synthetic(&spec.parse::<SynthConfig>().map_err(anyhow::Error::msg)?)),
        (None, None) => bail!("give the stream: --pcap FILE or --synth SPEC"),
    };
    let mut fabric = ZmqFabric::connect(
        &nodes,
        &controls,
        Duration::from_millis(send_timeout_ms),
        Duration::from_millis(settle_timeout_ms),
    )?;
    let mut commands = match &commands {
        Some(endpoint) => Some(ZmqCommands::bind(endpoint)?),
        None => None,
    };
    if let Some(c) = &commands {
        // For scripts that asked for port `*`: where to send commands.
        println!("switch commands={}", c.endpoint());
        std::io::Write::flush(&mut std::io::stdout())?;
    }
    let report = switch::run(
        packets,
        &mut assignment,
        &schedule,
        &mut fabric,
        rate,
        commands.as_mut().map(|c| c as &mut dyn switch::Commands),
    );
    // Closing the sockets waits (bounded) for the last frames to leave.
    drop(fabric);
    let flows = assignment.summary();
    println!("packets {} in {} flows", report.packets, flows.len());
    for node in &report.nodes {
        println!(
            "node {}: sent {}, undeliverable {}, input {}",
            node.name,
            node.sent,
            node.undeliverable,
            if node.ended { "ended" } else { "not ended" }
        );
    }
    for m in &report.moves {
        println!("at {}: {} flows{}", m.event, m.flows, if m.settled { "" } else { " (old node not settled)" });
    }
    for event in &report.skipped {
        println!("at {event}: not reached (the stream ended first)");
    }
    println!("moves {}, undeliverable {}", report.moves.len(), report.undeliverable());
    if let Some(path) = flows_out {
        let summary = json!({ "report": report, "flows": flows });
        std::fs::write(&path, serde_json::to_string_pretty(&summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A command-line value: an integer if it parses as i64, a float if f64, else text.
fn parse_value(s: &str) -> Value {
    if let Ok(v) = s.parse::<i64>() {
        Value::Int(v)
    } else if let Ok(v) = s.parse::<f64>() {
        Value::Float(v)
    } else {
        Value::Text(s.to_string())
    }
}

fn call(endpoint: &str, request: &ControlRequest, wait: Duration) -> anyhow::Result<ControlReply> {
    let ctx = zmq::Context::new();
    let socket = ctx.socket(zmq::REQ)?;
    socket.set_linger(0)?;
    socket.set_rcvtimeo(wait.as_millis().try_into().unwrap_or(i32::MAX))?;
    socket.connect(endpoint).with_context(|| format!("connecting to {endpoint}"))?;
    socket.send(wire::encode_request(request), 0)?;
    let frame = match socket.recv_bytes(0) {
        Ok(frame) => frame,
        Err(zmq::Error::EAGAIN) => bail!("no answer from the node at {endpoint} within {wait:?}"),
        Err(e) => bail!("receiving from {endpoint}: {e}"),
    };
    Ok(wire::decode_reply(&frame)?)
}

fn print_reply(command: &Command, reply: ControlReply) -> anyhow::Result<ExitCode> {
    let json = match command {
        Command::Get { json, .. }
        | Command::Global { json, .. }
        | Command::Members { json }
        | Command::Stats { json }
        | Command::Leave { json, .. }
        | Command::Reducer { action: ReducerAction::List { json } } => *json,
        _ => false,
    };
    match reply {
        ControlReply::Error(e) => bail!("{e}"),
        ControlReply::Set(_) => println!("OK"),
        ControlReply::Deleted(existed) => {
            println!("{}", existed as u8);
        }
        ControlReply::Value(None) => {
            if json {
                println!("null");
            }
            eprintln!("not found");
            return Ok(ExitCode::from(1));
        }
        ControlReply::Value(Some((value, version))) => {
            if json {
                println!("{}", json!({ "value": value_json(&value), "version": version }));
            } else {
                println!("{}", show(&value));
            }
        }
        ControlReply::Global(answer) => print_global(&answer, json),
        ControlReply::Members(members) => print_members(&members, json),
        ControlReply::Nf(text) => println!("{text}"),
        ControlReply::Left(report) if json => {
            println!("{}", json!({ "items": report.items, "micros": report.micros, "members": report.members }))
        }
        ControlReply::Left(report) => {
            let to: Vec<String> = report.members.iter().map(|(m, n)| format!("{m}={n}")).collect();
            println!("left: handed {} items over in {} µs ({})", report.items, report.micros, to.join(" "));
        }
        ControlReply::Loaded(info) => {
            println!("loaded {} sha256={} size={} combinable={}", info.name, info.hash, info.size, info.combinable);
        }
        ControlReply::Unloaded(existed) => {
            println!("{}", existed as u8);
            if !existed {
                eprintln!("no such reducer");
                return Ok(ExitCode::from(1));
            }
        }
        ControlReply::Reducers(list) => {
            if json {
                println!("{}", serde_json::to_string(&list)?);
            } else {
                for r in list {
                    let hash = if r.hash.is_empty() { "-".to_string() } else { r.hash[..16].to_string() };
                    let combinable = if r.combinable { "combinable" } else { "not-combinable" };
                    println!("{}\t{}\t{}\t{}\t{}", r.name, r.kind, combinable, r.size, hash);
                }
            }
        }
        ControlReply::Stats(stats) => {
            if json {
                let map: serde_json::Map<String, serde_json::Value> =
                    stats.into_iter().map(|(k, v)| (k, json!(v))).collect();
                println!("{}", serde_json::Value::Object(map));
            } else {
                for (k, v) in stats {
                    println!("{k} {v}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_global(answer: &GlobalAnswer, json: bool) {
    if json {
        let result = match &answer.result {
            Reduced::Nothing => serde_json::Value::Null,
            Reduced::Value(v) => value_json(v),
            Reduced::Item(item) => item_json(item),
            Reduced::Items(items) => items.iter().map(item_json).collect(),
        };
        println!(
            "{}",
            json!({
                "reducer": answer.reducer,
                "remote": answer.remote,
                "result": result,
                "answered": answer.answered,
                "missing": answer.missing,
            })
        );
        return;
    }
    match &answer.result {
        Reduced::Nothing => eprintln!("no items matched"),
        Reduced::Value(v) => println!("{}", show(v)),
        Reduced::Item(item) => println!("{}", show(&item.value)),
        Reduced::Items(items) => {
            for item in items {
                println!("{}\t{}\t{}\t{}", item.key, show(&item.value), item.origin, item.version);
            }
        }
    }
    if !answer.missing.is_empty() {
        eprintln!("incomplete: no answer from {}", answer.missing.join(", "));
    }
}

fn print_members(members: &[MemberView], json: bool) {
    if json {
        let list: Vec<_> =
            members.iter().map(|m| json!({ "id": m.id, "endpoint": m.endpoint, "state": m.state })).collect();
        println!("{}", serde_json::Value::Array(list));
    } else {
        for m in members {
            println!("{}\t{}\t{}", m.id, m.endpoint, m.state);
        }
    }
}

fn show(value: &Value) -> String {
    match value {
        Value::Int(v) => v.to_string(),
        Value::Float(v) => format!("{v:?}"),
        Value::Text(s) => s.clone(),
        Value::Bytes(b) => format!("0x{}", hex::encode(b)),
    }
}

fn value_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Int(v) => json!(v),
        Value::Float(v) if v.is_finite() => json!(v),
        Value::Float(v) => json!(v.to_string()),
        Value::Text(s) => json!(s),
        Value::Bytes(b) => json!({ "bytes": hex::encode(b) }),
    }
}

fn item_json(item: &Item) -> serde_json::Value {
    json!({
        "key": item.key,
        "value": value_json(&item.value),
        "origin": item.origin,
        "version": item.version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_as_int_then_float_then_text() {
        assert_eq!(parse_value("1234567"), Value::Int(1_234_567));
        assert_eq!(parse_value("-5"), Value::Int(-5));
        assert_eq!(parse_value("2.5"), Value::Float(2.5));
        assert_eq!(parse_value("1e3"), Value::Float(1000.0));
        assert_eq!(parse_value("hello"), Value::Text("hello".into()));
        assert_eq!(parse_value("99999999999999999999"), Value::Float(1e20));
    }
}
