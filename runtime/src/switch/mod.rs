//! The switch emulator: the fabric of the paper's scale-out and scale-in experiments,
//! and the steered input through which a node receives its share of the traffic.
//!
//! In the paper's experiments (Fig. 4), SDN switches forward TCP flows over the NF
//! instances; to scale out, half of the flows of one instance are rerouted to a new one,
//! and to scale in, all flows of one instance go to the other. Rerouted flows' packets
//! carry a VLAN tag, so the instance they arrive at knows to fetch their state before it
//! handles them. Here one process plays that fabric ([`run`]): it reads a packet stream
//! (a pcap file or the synthetic generator), keeps a table of the node each flow goes to
//! ([`Assignment`]), changes it at given points of the stream ([`Schedule`]), and sends
//! each packet to its flow's node over a [`Fabric`]: in a deployment, ZeroMQ PUSH sockets
//! ([`ZmqFabric`]) to the nodes' steered inputs ([`crate::nf::input::steer::SteerSource`]).
//!
//! # The steering link
//!
//! One ZeroMQ message per Ethernet frame, exactly as pcap replay reads them
//! ([`pcap::frame`] builds them, [`pcap::parse`] reads them); an empty message ends the
//! node's input. A frame the node cannot parse is counted (`nf_bad_frames`) and skipped.
//!
//! # Marks
//!
//! From its Nth move on, a flow's packets carry the VLAN id [`mark_of_move`]`(N)`. A node
//! fetches a flow's state whenever the flow arrives with a mark other than the one it
//! last arrived with (see [`crate::nf`]), so a flow that moves A→B→A→B is taken over
//! at every move, not only the first time B sees it. Marks a pcap input already carries
//! are replaced by the switch's own.
//!
//! # Packets in flight
//!
//! Packets sent to a flow's old node before a move may still wait in that node's queue
//! when the new node takes the flow's state over; counted there afterwards, they would be
//! split off the flow's state (and lost when the flow comes back and its state is fetched
//! again). A real fabric avoids this with a consistent update: the old path drains before
//! the new one is used. The emulator does the same where it can ask the old node: before
//! each move it waits, bounded, until that node's NF has handled every packet sent to it
//! ([`Fabric::settle`]).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::{info, warn};

use crate::nf::input::pcap::{self};
use crate::nf::input::synth::OwnedPacket;

/// The largest mark: marks are the VLAN ids 1 to 4094 (802.1Q reserves 0 and 4095).
mod assignment;
mod commands;
mod fabric;
pub mod live;
#[cfg(test)]
mod tests;

pub use assignment::{Assignment, FlowSummary, Route, StintSummary};
pub use commands::{Commands, ZmqCommands, parse_command};
pub use fabric::{Fabric, ZmqFabric};

pub use crate::nf::input::steer::SteerSource;

pub const MAX_MARK: u16 = 4094;

/// The highest `--rate` the switch paces to, in packets per second.
pub const MAX_RATE: u32 = 10_000_000;

/// The mark of a flow's `n`th move (0 for a flow never moved): 1 to [`MAX_MARK`],
/// wrapping.
pub fn mark_of_move(n: u32) -> u16 {
    match n {
        0 => 0,
        n => ((n - 1) % u32::from(MAX_MARK)) as u16 + 1,
    }
}

/// A hash of `key` that is the same in every run, on every platform and with every
/// toolchain (FNV-1a, then a finalizer so that its low bits are well mixed), so that
/// assignments and moves repeat.
fn stable_hash(salt: u64, key: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in salt.to_le_bytes().iter().chain(key.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Whether `name` can name a node: non-empty, printable, and free of the separators of
/// the command line's specs.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b':' | b',' | b'='))
}

/// A switch that cannot be set up as asked.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    /// A schedule event does not parse, or does not fit the nodes; nothing ran.
    #[error("schedule event {spec:?}: {reason}")]
    Event {
        /// The event as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The nodes or the start nodes are unusable; nothing ran.
    #[error("{0}")]
    Nodes(String),
    /// A socket could not be set up; nothing was sent.
    #[error("{what} {endpoint}: {source}")]
    Socket {
        /// What was being done.
        what: &'static str,
        /// The endpoint it was done with.
        endpoint: String,
        /// ZeroMQ's error.
        #[source]
        source: zmq::Error,
    },
}

/// What a schedule event does to the assignment.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Moves `fraction` (0 < f ≤ 1) of the flows assigned to `from` at that point to
    /// `to` (scale-out).
    Move {
        /// The share of `from`'s flows that moves.
        fraction: f64,
        /// The node the flows leave.
        from: String,
        /// The node the flows go to.
        to: String,
    },
    /// Moves every flow of `from` to `to`, and ends `from`'s input (scale-in); new flows
    /// are no longer sent to `from`.
    Drain {
        /// The node that is emptied.
        from: String,
        /// The node its flows go to.
        to: String,
    },
}

impl Step {
    /// The node flows leave and the node they go to.
    pub fn ends(&self) -> (&str, &str) {
        match self {
            Step::Move { from, to, .. } | Step::Drain { from, to } => (from, to),
        }
    }
}

/// One event of a [`Schedule`]: a step taken once `after` packets of the stream have
/// been sent. As text (`--at`): `N:move:FRACTION:FROM:TO` or `N:drain:FROM:TO`.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Packets of the stream sent before the step.
    pub after: u64,
    /// What happens.
    pub step: Step,
}

impl FromStr for Event {
    type Err = SwitchError;

    fn from_str(spec: &str) -> Result<Event, SwitchError> {
        let bad = |reason: String| SwitchError::Event { spec: spec.to_string(), reason };
        let parts: Vec<&str> = spec.split(':').collect();
        let after = parts[0]
            .parse::<u64>()
            .map_err(|_| bad(format!("{:?} is not a packet count (expected N:move:… or N:drain:…)", parts[0])))?;
        let name = |s: &str| {
            if valid_name(s) { Ok(s.to_string()) } else { Err(bad(format!("{s:?} is not a node name"))) }
        };
        let step = match &parts[1..] {
            ["move", fraction, from, to] => {
                let fraction = fraction
                    .parse::<f64>()
                    .ok()
                    .filter(|f| *f > 0.0 && *f <= 1.0)
                    .ok_or_else(|| bad(format!("fraction {fraction:?} is not a number within (0, 1]")))?;
                Step::Move { fraction, from: name(from)?, to: name(to)? }
            }
            ["drain", from, to] => Step::Drain { from: name(from)?, to: name(to)? },
            ["move", ..] => return Err(bad("expected N:move:FRACTION:FROM:TO".into())),
            ["drain", ..] => return Err(bad("expected N:drain:FROM:TO".into())),
            [] => return Err(bad("expected N:move:FRACTION:FROM:TO or N:drain:FROM:TO".into())),
            [action, ..] => return Err(bad(format!("unknown action {action:?}: expected move or drain"))),
        };
        let (from, to) = step.ends();
        if from == to {
            return Err(bad(format!("flows cannot move from {from} to itself")));
        }
        Ok(Event { after, step })
    }
}

impl Event {
    /// The step alone, as a command's text (`move 0.5 A B`).
    pub fn step_text(&self) -> String {
        match &self.step {
            Step::Move { fraction, from, to } => format!("move {fraction} {from} {to}"),
            Step::Drain { from, to } => format!("drain {from} {to}"),
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.step {
            Step::Move { fraction, from, to } => write!(f, "{}:move:{fraction}:{from}:{to}", self.after),
            Step::Drain { from, to } => write!(f, "{}:drain:{from}:{to}", self.after),
        }
    }
}

/// The events of a switch run, checked against its nodes, in the order they happen.
#[derive(Clone, Debug, Default)]
pub struct Schedule {
    events: Vec<Event>,
}

impl Schedule {
    /// Checks `events` against the switch's `nodes` (every node named exists; a drained
    /// node takes no part in later events, since its input has ended) and orders them by
    /// packet count; events at the same count keep their order.
    pub fn new(mut events: Vec<Event>, nodes: &[String]) -> Result<Schedule, SwitchError> {
        events.sort_by_key(|e| e.after);
        let mut drained: HashMap<&str, u64> = HashMap::new();
        for event in &events {
            let bad = |reason: String| SwitchError::Event { spec: event.to_string(), reason };
            let (from, to) = event.step.ends();
            for node in [from, to] {
                if !nodes.iter().any(|n| n == node) {
                    return Err(bad(format!("no node named {node:?} (nodes: {})", nodes.join(", "))));
                }
                if let Some(at) = drained.get(node) {
                    return Err(bad(format!("node {node} is drained after packet {at}; its input has ended")));
                }
            }
            if let Step::Drain { from, .. } = &event.step {
                drained.insert(from, event.after);
            }
        }
        Ok(Schedule { events })
    }

    /// The events, in the order they happen.
    pub fn events(&self) -> &[Event] {
        &self.events
    }
}

/// What one node got from a switch run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeReport {
    /// The node's name.
    pub name: String,
    /// Packets delivered to it.
    pub sent: u64,
    /// Packets routed to it that could not be delivered.
    pub undeliverable: u64,
    /// Whether its end-of-input message was delivered.
    pub ended: bool,
}

/// One schedule event that took place.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MoveReport {
    /// The event, as `--at` takes it.
    pub event: String,
    /// Flows it moved.
    pub flows: usize,
    /// Whether the old node was confirmed to have handled its packets first.
    pub settled: bool,
}

/// The outcome of a switch run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Packets of the stream.
    pub packets: u64,
    /// Per node, in the switch's order.
    pub nodes: Vec<NodeReport>,
    /// The events that took place, in order.
    pub moves: Vec<MoveReport>,
    /// Events after the end of the stream, which did not take place.
    pub skipped: Vec<String>,
}

impl Report {
    /// Packets that could not be delivered, over all nodes.
    pub fn undeliverable(&self) -> u64 {
        self.nodes.iter().map(|n| n.undeliverable).sum()
    }
}

/// Paces sending to a rate; restarted after a wait, so it does not burst to catch up.
struct Pacer {
    rate: f64,
    since: Instant,
    count: u64,
}

impl Pacer {
    fn pace(&mut self) {
        let wait = self.wait(self.since.elapsed());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }

    /// Counts one more packet and says how long to wait before sending it, `elapsed`
    /// after the pacing started: the packet is due at `count / rate`.
    pub(crate) fn wait(&mut self, elapsed: Duration) -> Duration {
        self.count += 1;
        Duration::from_secs_f64(self.count as f64 / self.rate).saturating_sub(elapsed)
    }

    fn restart(&mut self) {
        (self.since, self.count) = (Instant::now(), 0);
    }
}

/// How often (in packets) [`run`] polls for commands.
const COMMAND_POLL: u64 = 16;

/// Sends `packets` over `fabric`: each to its flow's node by `assignment`, tagged with the
/// flow's mark, taking the steps of `schedule` as the stream reaches them (and steps
/// from `commands`, if given, as they arrive), at most `rate` packets per second (capped
/// at [`MAX_RATE`]) if given. Every node's input is ended at the end (a drained node's
/// at its drain).
pub fn run(
    packets: impl IntoIterator<Item = OwnedPacket>,
    assignment: &mut Assignment,
    schedule: &Schedule,
    fabric: &mut dyn Fabric,
    rate: Option<u32>,
    mut commands: Option<&mut dyn Commands>,
) -> Report {
    let mut report = Report {
        nodes: assignment
            .nodes()
            .iter()
            .map(|name| NodeReport { name: name.clone(), sent: 0, undeliverable: 0, ended: false })
            .collect(),
        ..Report::default()
    };
    let mut pacer =
        rate.filter(|r| *r > 0).map(|r| Pacer { rate: f64::from(r.min(MAX_RATE)), since: Instant::now(), count: 0 });
    let mut events = schedule.events().iter().enumerate().peekable();
    let mut ended = vec![false; report.nodes.len()];
    let mut steps_taken = schedule.events().len();
    for mut packet in packets {
        while let Some((i, event)) = events.next_if(|(_, e)| e.after <= report.packets) {
            take_step(i, event, assignment, fabric, &mut report, &mut ended);
            if let Some(p) = &mut pacer {
                p.restart();
            }
        }
        if let Some(commands) = commands.as_deref_mut().filter(|_| report.packets.is_multiple_of(COMMAND_POLL)) {
            while let Some(step) = commands.poll() {
                let event = Event { after: report.packets, step };
                let (from, to) = event.step.ends();
                let outcome = match (assignment.index(from), assignment.index(to)) {
                    (None, _) | (_, None) => Err(format!("{event}: no node {from:?} or {to:?}")),
                    (Some(f), Some(t)) if ended[f] || ended[t] => {
                        Err(format!("{event}: {} was drained", if ended[f] { from } else { to }))
                    }
                    _ => {
                        take_step(steps_taken, &event, assignment, fabric, &mut report, &mut ended);
                        steps_taken += 1;
                        let done = report.moves.last().expect("take_step records the move");
                        Ok(format!("{} after {} packets: {} flows", event.step_text(), event.after, done.flows))
                    }
                };
                commands.answer(outcome);
                if let Some(p) = &mut pacer {
                    p.restart();
                }
            }
        }
        let route = assignment.route(&packet.flow);
        packet.mark = route.mark;
        let node = &mut report.nodes[route.node];
        if fabric.send_packet(route.node, &packet) {
            node.sent += 1;
        } else {
            node.undeliverable += 1;
            assignment.undeliverable(&packet.flow);
        }
        report.packets += 1;
        if let Some(p) = &mut pacer {
            p.pace();
        }
    }
    report.skipped = events.map(|(_, e)| e.to_string()).collect();
    for (node, done) in ended.iter_mut().enumerate() {
        if !*done {
            report.nodes[node].ended = fabric.send(node, &[]);
            *done = true;
        }
    }
    report
}

/// Takes the `i`th step of the schedule.
fn take_step(
    i: usize,
    event: &Event,
    assignment: &mut Assignment,
    fabric: &mut dyn Fabric,
    report: &mut Report,
    ended: &mut [bool],
) {
    let (from, to) = event.step.ends();
    let (Some(from), Some(to)) = (assignment.index(from), assignment.index(to)) else {
        warn!(%event, "schedule event names an unknown node; skipped");
        report.skipped.push(event.to_string());
        return;
    };
    let settled = fabric.settle(from, report.nodes[from].sent);
    if !settled {
        warn!(%event, "could not confirm that {} handled its packets before the move", report.nodes[from].name);
    }
    let flows = match &event.step {
        Step::Move { fraction, .. } => assignment.move_share(from, to, *fraction, i as u64 + 1),
        Step::Drain { .. } => {
            let moved = assignment.drain(from, to);
            report.nodes[from].ended = fabric.send(from, &[]);
            ended[from] = true;
            moved
        }
    };
    info!(%event, flows, "flows moved");
    report.moves.push(MoveReport { event: event.to_string(), flows, settled });
}
