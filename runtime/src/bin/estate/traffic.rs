//! `estate traffic`: the switch emulator, its commands, pcap writing.

use std::process::ExitCode;
use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use crate::progress::Progress;

use crate::cli::*;
use anyhow::{Context, bail};
use estate::control::{self};
use estate::nf::Packets;
use estate::nf::input::live::interface_pair;
use estate::nf::input::pcap;
use estate::nf::input::synth::{self, SynthConfig};
use estate::switch::live::LivePorts;
use estate::switch::{self, Assignment, Event, Fabric, Schedule, ZmqCommands, ZmqFabric};
use serde_json::json;

/// Splits a `NAME=ENDPOINT` argument of `flag`.
fn name_and_endpoint(flag: &str, arg: &str) -> anyhow::Result<(String, String)> {
    match arg.split_once('=') {
        Some((name, endpoint)) if !name.is_empty() && !endpoint.is_empty() => {
            Ok((name.to_string(), endpoint.to_string()))
        }
        _ => bail!("{flag} {arg:?}: expected NAME=ENDPOINT"),
    }
}

/// `estate traffic …`.
pub(crate) fn run(action: TrafficAction) -> anyhow::Result<ExitCode> {
    match action {
        TrafficAction::Pcap { out, synth } => {
            let config: SynthConfig = synth.parse().map_err(anyhow::Error::msg)?;
            let n = pcap::write(&out, synth::synthetic(&config))?;
            println!("wrote {n} packets to {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        TrafficAction::Switch(args) => run_switch(args),
        TrafficAction::Command { switch, step } => command(&switch, &step.join(" ")),
    }
}

/// `estate traffic command`: one step asked of a running switch.
fn command(switch: &str, text: &str) -> anyhow::Result<ExitCode> {
    // Checked here too, so a typo fails without a round trip.
    switch::parse_command(text)?;
    let reply = control::client::round_trip(switch, text.as_bytes(), Duration::from_secs(10))
        .context("the switch did not answer (has its stream ended?)")?;
    let reply = String::from_utf8_lossy(&reply).into_owned();
    match reply.strip_prefix("error: ") {
        Some(why) => bail!("{why}"),
        None => {
            println!("{}", reply.strip_prefix("ok: ").unwrap_or(&reply));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The ZeroMQ fabric to the nodes' steered inputs.
fn zmq_fabric(
    nodes: &[(String, String)],
    controls: &std::collections::HashMap<String, String>,
    send_timeout_ms: u64,
    settle_timeout: Duration,
) -> anyhow::Result<Box<dyn Fabric>> {
    Ok(Box::new(ZmqFabric::connect(nodes, controls, Duration::from_millis(send_timeout_ms), settle_timeout)?))
}

/// A live switch's ports: `--live IN,OUT` and each `--node NAME=PORT_A,PORT_B`.
fn live_ports(hosts: &str, nodes: &[(String, String)]) -> anyhow::Result<LivePorts> {
    let pair = |flag: &str, text: &str| {
        interface_pair(text).ok_or_else(|| anyhow::anyhow!("{flag} {text:?}: expected two interfaces, IFACE,IFACE"))
    };
    Ok(LivePorts {
        hosts: pair("--live", hosts)?,
        nodes: nodes.iter().map(|(name, ports)| pair(&format!("--node {name}="), ports)).collect::<Result<_, _>>()?,
    })
}

/// `estate traffic switch`: sends the stream, prints the summary, writes `--flows-out`.
fn run_switch(args: SwitchArgs) -> anyhow::Result<ExitCode> {
    let SwitchArgs {
        pcap: pcap_file,
        synth: synth_spec,
        live,
        nodes,
        controls,
        start,
        at,
        rate,
        send_timeout_ms,
        settle_timeout_ms,
        flows_out,
        commands,
    } = args;
    let nodes: Vec<(String, String)> =
        nodes.iter().map(|n| name_and_endpoint("--node", n)).collect::<anyhow::Result<_>>()?;
    let controls: std::collections::HashMap<String, String> =
        controls.iter().map(|c| name_and_endpoint("--node-control", c)).collect::<anyhow::Result<_>>()?;
    let names: Vec<String> = nodes.iter().map(|(name, _)| name.clone()).collect();
    let mut assignment = Assignment::new(names.clone(), &start)?;
    let events = at.iter().map(|spec| spec.parse::<Event>()).collect::<Result<Vec<_>, _>>().context("--at")?;
    let schedule = Schedule::new(events, &names).context("--at")?;
    let settle_timeout = Duration::from_millis(settle_timeout_ms);
    let mut live_counters = None;
    let (packets, mut fabric): (Packets, Box<dyn Fabric>) = match (&pcap_file, &synth_spec, &live) {
        (Some(path), ..) => {
            (Box::new(pcap::read(path)?), zmq_fabric(&nodes, &controls, send_timeout_ms, settle_timeout)?)
        }
        (None, Some(spec), _) => (
            Box::new(synth::synthetic(&spec.parse::<SynthConfig>().map_err(anyhow::Error::msg)?)),
            zmq_fabric(&nodes, &controls, send_timeout_ms, settle_timeout)?,
        ),
        (None, None, Some(hosts)) => {
            let ports = live_ports(hosts, &nodes)?;
            let controls = names.iter().map(|n| controls.get(n).cloned()).collect();
            // Interrupted: the capture ends, the summary is printed.
            let stop = Arc::new(AtomicBool::new(false));
            for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                signal_hook::flag::register(signal, stop.clone())?;
            }
            let (source, fabric, counters) = switch::live::open(&ports, &names, controls, settle_timeout, stop)?;
            live_counters = Some(counters);
            println!("switch live: {} to {} through {} instances", ports.hosts[0], ports.hosts[1], ports.nodes.len());
            std::io::Write::flush(&mut std::io::stdout())?;
            (Box::new(source), Box::new(fabric))
        }
        (None, None, None) => bail!("give the stream: --pcap FILE, --synth SPEC or --live IN,OUT"),
    };
    let mut commands = match &commands {
        Some(endpoint) => Some(ZmqCommands::bind(endpoint)?),
        None => None,
    };
    if let Some(c) = &commands {
        // For scripts that asked for port `*`: where to send commands.
        println!("switch commands={}", c.endpoint());
        std::io::Write::flush(&mut std::io::stdout())?;
    }
    // On a terminal, packets sent so far and the rate, twice a second.
    let sent = Arc::new(AtomicU64::new(0));
    let counted = sent.clone();
    let packets: Packets = Box::new(packets.inspect(move |_| {
        counted.fetch_add(1, Ordering::Relaxed);
    }));
    let started = Instant::now();
    let ticker = Progress::new().tick(Duration::from_millis(500), move || {
        let n = sent.load(Ordering::Relaxed);
        format!("switch: {n} packets sent, {:.0} packets/s", n as f64 / started.elapsed().as_secs_f64().max(1e-3))
    });
    let report = switch::run(
        packets,
        &mut assignment,
        &schedule,
        fabric.as_mut(),
        rate,
        commands.as_mut().map(|c| c as &mut dyn switch::Commands),
    );
    drop(ticker);
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
    if let Some(counters) = live_counters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        println!(
            "live: passed across {}, bad frames {}, frames sent {}, send errors {}, kernel drops {}",
            get(&counters.unparsed_passed),
            get(&counters.bad_frames),
            get(&counters.transmitted),
            get(&counters.transmit_errors),
            get(&counters.capture_drops)
        );
    }
    if let Some(path) = flows_out {
        let summary = json!({ "report": report, "flows": flows });
        std::fs::write(&path, serde_json::to_string_pretty(&summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}
