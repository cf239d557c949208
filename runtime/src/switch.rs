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
//! ([`ZmqFabric`]) to the nodes' steered inputs ([`SteerSource`]).
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
//! last arrived with (see [`crate::nfrun`]), so a flow that moves A→B→A→B is taken over
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
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::{debug, info, warn};

use crate::nfrun::{Input, NfCounters};
use crate::pcap::{self, FlowDirections};
use crate::traffic::OwnedPacket;
use crate::wire::{self, ControlReply, ControlRequest};

/// The largest mark: marks are the VLAN ids 1 to 4094 (802.1Q reserves 0 and 4095).
pub const MAX_MARK: u16 = 4094;

/// The highest `--rate` the switch paces to, in packets per second.
pub const MAX_RATE: u32 = 10_000_000;

/// How long a steered input waits for a message before it checks its stop flag.
const STEER_POLL: Duration = Duration::from_millis(100);

/// The largest message a steered input accepts; ZeroMQ disconnects a sender of a larger
/// one. Ethernet frames are far smaller.
const STEER_MAX_MSG: i64 = 1 << 20;

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

/// Where a packet goes: its flow's node and mark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// The node (an index into the switch's nodes).
    pub node: usize,
    /// The flow's mark ([`mark_of_move`] of its number of moves).
    pub mark: u16,
}

/// A stretch of a flow's life on one node: from one move of the flow to the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stint {
    node: usize,
    mark: u16,
    packets: u64,
    undeliverable: u64,
}

/// The table of the node each flow goes to, and the path each flow took.
///
/// A flow seen for the first time goes to one of the start nodes, chosen by a stable hash
/// of its key. Moves change the node of flows already seen; a drain also takes its node
/// out of the start nodes (its successor takes its place if none is left).
#[derive(Clone, Debug)]
pub struct Assignment {
    nodes: Vec<String>,
    /// The nodes new flows are spread over.
    start: Vec<usize>,
    /// Each flow's stints, the current one last.
    flows: HashMap<String, Vec<Stint>>,
}

impl Assignment {
    /// A table for `nodes` (names, unique) whose new flows are spread over `start` (the
    /// first node if empty).
    pub fn new(nodes: Vec<String>, start: &[String]) -> Result<Assignment, SwitchError> {
        if nodes.is_empty() {
            return Err(SwitchError::Nodes("the switch needs at least one node".into()));
        }
        for (i, name) in nodes.iter().enumerate() {
            if !valid_name(name) {
                return Err(SwitchError::Nodes(format!("{name:?} is not a node name")));
            }
            if nodes[..i].contains(name) {
                return Err(SwitchError::Nodes(format!("node {name} is named twice")));
            }
        }
        let mut spread = Vec::new();
        for name in start {
            let i = nodes.iter().position(|n| n == name).ok_or_else(|| {
                SwitchError::Nodes(format!("start node {name:?} is not a node (nodes: {})", nodes.join(", ")))
            })?;
            if !spread.contains(&i) {
                spread.push(i);
            }
        }
        if spread.is_empty() {
            spread.push(0);
        }
        Ok(Assignment { nodes, start: spread, flows: HashMap::new() })
    }

    /// The nodes' names; a node's index is its position here.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// The index of the node `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n == name)
    }

    /// The route of the next packet of `flow` (assigning the flow if it is new), counted
    /// as sent on it.
    pub fn route(&mut self, flow: &str) -> Route {
        if !self.flows.contains_key(flow) {
            let node = self.start[(stable_hash(0, flow) % self.start.len() as u64) as usize];
            self.flows.insert(flow.to_string(), vec![Stint { node, mark: 0, packets: 0, undeliverable: 0 }]);
        }
        let stint = self.flows.get_mut(flow).and_then(|s| s.last_mut()).expect("a flow has a stint");
        stint.packets += 1;
        Route { node: stint.node, mark: stint.mark }
    }

    /// Counts the last packet routed for `flow` as undeliverable.
    pub fn undeliverable(&mut self, flow: &str) {
        if let Some(stint) = self.flows.get_mut(flow).and_then(|s| s.last_mut()) {
            stint.undeliverable += 1;
        }
    }

    /// The current route of `flow`, if it was seen.
    pub fn current(&self, flow: &str) -> Option<Route> {
        self.flows.get(flow).and_then(|s| s.last()).map(|s| Route { node: s.node, mark: s.mark })
    }

    /// The number of flows now assigned to `node`.
    pub fn flows_at(&self, node: usize) -> usize {
        self.flows.values().filter(|s| s.last().is_some_and(|s| s.node == node)).count()
    }

    /// Moves `fraction` of `from`'s flows to `to`: round(fraction × n) of its n flows, at
    /// least one, chosen by a stable hash of the flow key salted with `salt` (so two moves
    /// from the same node pick independently). Returns how many moved.
    pub fn move_share(&mut self, from: usize, to: usize, fraction: f64, salt: u64) -> usize {
        let mut candidates: Vec<(u64, &String)> = self
            .flows
            .iter()
            .filter(|(_, s)| s.last().is_some_and(|s| s.node == from))
            .map(|(flow, _)| (stable_hash(salt, flow), flow))
            .collect();
        if candidates.is_empty() || from == to {
            return 0;
        }
        candidates.sort();
        let n = ((fraction.clamp(0.0, 1.0) * candidates.len() as f64).round() as usize).clamp(1, candidates.len());
        let chosen: Vec<String> = candidates[..n].iter().map(|(_, flow)| (*flow).clone()).collect();
        for flow in &chosen {
            self.move_flow(flow, to);
        }
        n
    }

    /// Moves every flow of `from` to `to` and stops sending new flows to `from`. Returns
    /// how many moved.
    pub fn drain(&mut self, from: usize, to: usize) -> usize {
        let chosen: Vec<String> = self
            .flows
            .iter()
            .filter(|(_, s)| s.last().is_some_and(|s| s.node == from))
            .map(|(flow, _)| flow.clone())
            .collect();
        if from != to {
            for flow in &chosen {
                self.move_flow(flow, to);
            }
        }
        self.start.retain(|n| *n != from);
        if self.start.is_empty() {
            self.start.push(to);
        }
        chosen.len()
    }

    fn move_flow(&mut self, flow: &str, to: usize) {
        let stints = self.flows.get_mut(flow).expect("only known flows move");
        let mark = mark_of_move(stints.len() as u32);
        stints.push(Stint { node: to, mark, packets: 0, undeliverable: 0 });
    }

    /// Every flow seen: its packets, its node now and the path it took, by flow key.
    pub fn summary(&self) -> Vec<FlowSummary> {
        let mut flows: Vec<FlowSummary> = self
            .flows
            .iter()
            .map(|(flow, stints)| FlowSummary {
                flow: flow.clone(),
                packets: stints.iter().map(|s| s.packets).sum(),
                node: self.nodes[stints.last().expect("a flow has a stint").node].clone(),
                moves: stints.len() as u32 - 1,
                path: stints
                    .iter()
                    .map(|s| StintSummary {
                        node: self.nodes[s.node].clone(),
                        mark: s.mark,
                        packets: s.packets,
                        undeliverable: s.undeliverable,
                    })
                    .collect(),
            })
            .collect();
        flows.sort_by(|a, b| a.flow.cmp(&b.flow));
        flows
    }
}

/// One flow at the end of a switch run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FlowSummary {
    /// The canonical flow key (as in the NF's `flow:<key>:…` state keys).
    pub flow: String,
    /// Packets of the flow in the stream (delivered or not).
    pub packets: u64,
    /// The node the flow was assigned to at the end.
    pub node: String,
    /// How often the flow moved.
    pub moves: u32,
    /// Where the flow went: one entry per node it was assigned to, in order.
    pub path: Vec<StintSummary>,
}

/// A stretch of a flow's life on one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StintSummary {
    /// The node.
    pub node: String,
    /// The mark the flow's packets carried there (0: never moved).
    pub mark: u16,
    /// Packets of the flow sent there.
    pub packets: u64,
    /// Of those, packets that could not be delivered.
    pub undeliverable: u64,
}

/// Where the switch sends its frames.
pub trait Fabric {
    /// Sends `frame` to node `node` (an index into the switch's nodes); an empty frame
    /// ends the node's input. Returns whether the frame was delivered (handed to the
    /// node's queue) in time.
    fn send(&mut self, node: usize, frame: &[u8]) -> bool;

    /// Waits until node `node` has handled the `delivered` packets sent to it, before
    /// flows move away from it. Returns false if that could not be confirmed in time (the
    /// move goes ahead anyway). The default does not wait.
    fn settle(&mut self, node: usize, delivered: u64) -> bool {
        let _ = (node, delivered);
        true
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
        self.count += 1;
        let due = self.since + Duration::from_secs_f64(self.count as f64 / self.rate);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
    }

    fn restart(&mut self) {
        (self.since, self.count) = (Instant::now(), 0);
    }
}

/// Steps asked for while the stream runs (an operator's scale-out or scale-in, e.g.
/// `estate traffic command`); [`run`] polls for them between packets.
pub trait Commands {
    /// A step asked for since the last poll, if any. Never blocks.
    fn poll(&mut self) -> Option<Step>;
    /// The outcome of the step `poll` returned last: what it did, or why it was refused.
    fn answer(&mut self, outcome: Result<String, String>);
}

/// A command's text: `move FRACTION FROM TO` or `drain FROM TO`.
pub fn parse_command(text: &str) -> Result<Step, SwitchError> {
    let words: Vec<&str> = text.split_whitespace().collect();
    // The same grammar as a schedule event, taken now.
    let event: Event = format!("0:{}", words.join(":")).parse().map_err(|e| match e {
        SwitchError::Event { reason, .. } => SwitchError::Event {
            spec: text.to_string(),
            reason: reason
                .replace("N:move:FRACTION:FROM:TO", "move FRACTION FROM TO")
                .replace("N:drain:FROM:TO", "drain FROM TO"),
        },
        other => other,
    })?;
    Ok(event.step)
}

/// Commands from a ZeroMQ REP socket: one text request (`move 0.5 A B`, `drain B A`),
/// one text reply (`ok: …` or `error: …`).
pub struct ZmqCommands {
    _ctx: zmq::Context,
    socket: zmq::Socket,
    endpoint: String,
}

impl ZmqCommands {
    /// Binds the command socket at `endpoint` (`tcp://127.0.0.1:*` picks a port).
    pub fn bind(endpoint: &str) -> Result<ZmqCommands, SwitchError> {
        let err = |what| move |source| SwitchError::Socket { what, endpoint: endpoint.to_string(), source };
        let ctx = zmq::Context::new();
        let socket = ctx.socket(zmq::REP).map_err(err("creating the command socket for"))?;
        socket.set_linger(0).map_err(err("configuring"))?;
        socket.set_maxmsgsize(4096).map_err(err("configuring"))?;
        socket.bind(endpoint).map_err(err("binding"))?;
        let bound = socket.get_last_endpoint().map_err(err("reading the bound endpoint of"))?;
        Ok(ZmqCommands { _ctx: ctx, socket, endpoint: bound.unwrap_or_else(|_| endpoint.to_string()) })
    }

    /// The bound endpoint.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

impl Commands for ZmqCommands {
    fn poll(&mut self) -> Option<Step> {
        loop {
            let request = self.socket.recv_bytes(zmq::DONTWAIT).ok()?;
            match std::str::from_utf8(&request)
                .map_err(|_| "a command is UTF-8 text".to_string())
                .and_then(|t| parse_command(t).map_err(|e| e.to_string()))
            {
                Ok(step) => return Some(step),
                // Refused at once; the socket is ready for the next request.
                Err(e) => self.answer(Err(e)),
            }
        }
    }

    fn answer(&mut self, outcome: Result<String, String>) {
        let text = match outcome {
            Ok(done) => format!("ok: {done}"),
            Err(why) => format!("error: {why}"),
        };
        if let Err(e) = self.socket.send(text.as_bytes(), 0) {
            warn!("command reply not sent: {e}");
        }
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
        if fabric.send(route.node, &pcap::frame(&packet)) {
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

/// The ZeroMQ fabric: a PUSH socket to each node's steered input.
///
/// A send waits at most the send timeout (a node's queue may be full while it catches
/// up). A node that did not take a frame in that time is taken for down: later frames to
/// it are tried without waiting (and counted as undeliverable if it still cannot take
/// them) until it takes one again, so a dead node costs one timeout, not one per packet.
pub struct ZmqFabric {
    ctx: zmq::Context,
    ports: Vec<Port>,
    send_timeout: Duration,
    settle_timeout: Duration,
}

/// One node as the fabric reaches it.
struct Port {
    name: String,
    endpoint: String,
    socket: zmq::Socket,
    /// The node's control endpoint, to ask how many packets its NF handled.
    control: Option<String>,
    down: bool,
}

impl fmt::Debug for ZmqCommands {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZmqCommands").field("endpoint", &self.endpoint).finish_non_exhaustive()
    }
}

impl fmt::Debug for ZmqFabric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ports: Vec<(&str, &str, bool)> =
            self.ports.iter().map(|p| (p.name.as_str(), p.endpoint.as_str(), p.down)).collect();
        f.debug_struct("ZmqFabric").field("ports", &ports).finish_non_exhaustive()
    }
}

/// Milliseconds for a ZeroMQ socket option.
fn millis(d: Duration) -> i32 {
    d.as_millis().try_into().unwrap_or(i32::MAX)
}

impl ZmqFabric {
    /// Connects to the steered inputs of `nodes` (name and endpoint, in the switch's
    /// order). `controls` gives the control endpoints (by node name) of nodes the switch
    /// waits for before moving flows away from them, each wait bounded by
    /// `settle_timeout`.
    pub fn connect(
        nodes: &[(String, String)],
        controls: &HashMap<String, String>,
        send_timeout: Duration,
        settle_timeout: Duration,
    ) -> Result<ZmqFabric, SwitchError> {
        if let Some(name) = controls.keys().find(|c| !nodes.iter().any(|(n, _)| n == *c)) {
            return Err(SwitchError::Nodes(format!("control endpoint for {name:?}, which is not a node")));
        }
        let ctx = zmq::Context::new();
        let mut ports = Vec::with_capacity(nodes.len());
        for (name, endpoint) in nodes {
            let err = |what| move |source| SwitchError::Socket { what, endpoint: endpoint.clone(), source };
            let socket = ctx.socket(zmq::PUSH).map_err(err("creating a socket for"))?;
            socket.set_sndtimeo(millis(send_timeout)).map_err(err("configuring"))?;
            // Frames still queued at the end get as long as one send to leave.
            socket.set_linger(millis(send_timeout)).map_err(err("configuring"))?;
            // Queue only to a node that is connected: frames for a node that never came
            // up count as undeliverable instead of vanishing in a queue.
            socket.set_immediate(true).map_err(err("configuring"))?;
            socket.connect(endpoint).map_err(err("connecting to"))?;
            let control = controls.get(name).cloned();
            ports.push(Port { name: name.clone(), endpoint: endpoint.clone(), socket, control, down: false });
        }
        Ok(ZmqFabric { ctx, ports, send_timeout, settle_timeout })
    }

    /// Packets the NF of the node at `control` has handled (forwarded, dropped, or
    /// skipped as a bad frame), from its `stats`.
    fn handled(&self, control: &str, wait: Duration) -> Result<u64, String> {
        let socket = self.ctx.socket(zmq::REQ).map_err(|e| e.to_string())?;
        socket.set_linger(0).map_err(|e| e.to_string())?;
        socket.set_rcvtimeo(millis(wait)).map_err(|e| e.to_string())?;
        socket.connect(control).map_err(|e| format!("connecting to {control}: {e}"))?;
        socket.send(wire::encode_request(&ControlRequest::Stats), 0).map_err(|e| e.to_string())?;
        let frame = socket.recv_bytes(0).map_err(|e| format!("no stats from {control}: {e}"))?;
        match wire::decode_reply(&frame).map_err(|e| e.to_string())? {
            ControlReply::Stats(rows) => Ok(rows
                .iter()
                .filter(|(k, _)| matches!(k.as_str(), "nf_forwarded" | "nf_dropped" | "nf_bad_frames"))
                .map(|(_, v)| v)
                .sum()),
            other => Err(format!("unexpected answer to stats from {control}: {other:?}")),
        }
    }
}

impl Fabric for ZmqFabric {
    fn send(&mut self, node: usize, frame: &[u8]) -> bool {
        let timeout = self.send_timeout;
        let port = &mut self.ports[node];
        let flags = if port.down { zmq::DONTWAIT } else { 0 };
        match port.socket.send(frame, flags) {
            Ok(()) => {
                if port.down {
                    info!(node = %port.name, "node takes frames again");
                    port.down = false;
                }
                true
            }
            Err(e) => {
                if !port.down {
                    warn!(node = %port.name, endpoint = %port.endpoint, "frame not taken within {timeout:?} ({e}); \
                           counting frames as undeliverable until the node takes one again");
                    port.down = true;
                }
                false
            }
        }
    }

    fn settle(&mut self, node: usize, delivered: u64) -> bool {
        let Some(control) = self.ports[node].control.clone() else {
            return true;
        };
        let deadline = Instant::now() + self.settle_timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.handled(&control, left.clamp(Duration::from_millis(10), Duration::from_secs(1))) {
                Ok(handled) if handled >= delivered => return true,
                Ok(handled) => debug!(node = %self.ports[node].name, handled, delivered, "waiting for the node"),
                Err(e) => debug!(node = %self.ports[node].name, "waiting for the node: {e}"),
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// A node's steered input: a ZeroMQ PULL socket that the switch pushes Ethernet frames
/// to (see the module documentation for the link). An iterator of packets that ends at
/// the end-of-input message, or when its stop flag is raised.
pub struct SteerSource {
    socket: zmq::Socket,
    endpoint: String,
    stop: Arc<AtomicBool>,
    counters: Arc<NfCounters>,
    directions: FlowDirections,
    ended: bool,
}

impl fmt::Debug for SteerSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SteerSource").field("endpoint", &self.endpoint).field("ended", &self.ended).finish()
    }
}

impl SteerSource {
    /// Binds a steered input at `endpoint` (port `*` picks a free one; see
    /// [`SteerSource::endpoint`]); bad frames are counted in `counters`.
    pub fn bind(endpoint: &str, counters: Arc<NfCounters>) -> Result<SteerSource, SwitchError> {
        let err = |what| move |source| SwitchError::Socket { what, endpoint: endpoint.to_string(), source };
        let socket = zmq::Context::new().socket(zmq::PULL).map_err(err("creating a socket for"))?;
        socket.set_rcvtimeo(millis(STEER_POLL)).map_err(err("configuring"))?;
        socket.set_maxmsgsize(STEER_MAX_MSG).map_err(err("configuring"))?;
        socket.set_linger(0).map_err(err("configuring"))?;
        socket.bind(endpoint).map_err(err("binding the steered input at"))?;
        let bound = socket
            .get_last_endpoint()
            .map_err(err("reading the bound endpoint of"))?
            .unwrap_or_else(|_| endpoint.to_string());
        Ok(SteerSource {
            socket,
            endpoint: bound,
            stop: Arc::default(),
            counters,
            directions: FlowDirections::default(),
            ended: false,
        })
    }

    /// The bound endpoint (with the port picked for `*`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The NF input: this source, stopped by the NF run's stop flag.
    pub fn into_input(self) -> Input {
        let stop = self.stop.clone();
        Input::stoppable(Box::new(self), stop)
    }

    fn bad_frame(&self, why: &str) {
        let n = self.counters.bad_frames.fetch_add(1, Ordering::Relaxed) + 1;
        if n == 1 || n.is_multiple_of(1000) {
            warn!(endpoint = %self.endpoint, bad_frames = n, "steered input: skipped a frame ({why})");
        } else {
            debug!(endpoint = %self.endpoint, "steered input: skipped a frame ({why})");
        }
    }
}

impl Iterator for SteerSource {
    type Item = OwnedPacket;

    fn next(&mut self) -> Option<OwnedPacket> {
        while !self.ended {
            if self.stop.load(Ordering::Relaxed) {
                return None;
            }
            let frame = match self.socket.recv_bytes(0) {
                Ok(frame) => frame,
                // The bounded wait ran out, or a signal came: check the stop flag.
                Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => continue,
                Err(e) => {
                    warn!(endpoint = %self.endpoint, "steered input failed: {e}");
                    return None;
                }
            };
            if self.socket.get_rcvmore().unwrap_or(false) {
                // One frame per message: the rest of a multipart message is already here.
                while self.socket.get_rcvmore().unwrap_or(false) {
                    if self.socket.recv_bytes(0).is_err() {
                        break;
                    }
                }
                self.bad_frame("a multipart message");
                continue;
            }
            if frame.is_empty() {
                info!(endpoint = %self.endpoint, "steered input ended");
                self.ended = true;
                return None;
            }
            match pcap::parse(&frame) {
                Some(parsed) => return Some(self.directions.packet(&parsed)),
                None => self.bad_frame("not an IPv4 TCP/UDP Ethernet frame"),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::{SynthConfig, synthetic};

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn flows(n: usize) -> Vec<String> {
        let config = SynthConfig { flows: n, packets: 20 * n, ..SynthConfig::default() };
        let mut keys: Vec<String> = synthetic(&config).map(|p| p.flow).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), n);
        keys
    }

    fn table(start: &[&str], flows: &[String]) -> Assignment {
        let mut a = Assignment::new(names(&["A", "B", "C"]), &names(start)).unwrap();
        for f in flows {
            a.route(f);
        }
        a
    }

    #[test]
    fn marks_are_vlan_ids_that_change_with_every_move() {
        assert_eq!(mark_of_move(0), 0);
        assert_eq!((mark_of_move(1), mark_of_move(2), mark_of_move(3)), (1, 2, 3));
        assert_eq!(mark_of_move(4094), 4094);
        assert_eq!(mark_of_move(4095), 1, "wraps, skipping 0 and 4095");
        assert!((1..20_000).all(|n| mark_of_move(n) != mark_of_move(n + 1)));
        assert!((1..20_000).all(|n| (1..=MAX_MARK).contains(&mark_of_move(n))));
    }

    #[test]
    fn new_flows_spread_over_the_start_nodes_the_same_way_every_time() {
        let keys = flows(60);
        let a = table(&["A", "B"], &keys);
        let b = table(&["A", "B"], &keys);
        for f in &keys {
            assert_eq!(a.current(f), b.current(f));
            assert_eq!(a.current(f).unwrap().mark, 0);
        }
        let (on_a, on_b) = (a.flows_at(0), a.flows_at(1));
        assert_eq!((on_a + on_b, a.flows_at(2)), (60, 0));
        assert!((15..=45).contains(&on_a), "{on_a} of 60 on A");
        // Without start nodes, the first node takes everything.
        assert_eq!(table(&[], &keys).flows_at(0), 60);
    }

    #[test]
    fn a_move_takes_its_fraction_deterministically() {
        let keys = flows(40);
        let mut a = table(&["A"], &keys);
        assert_eq!(a.move_share(0, 1, 0.5, 1), 20);
        assert_eq!((a.flows_at(0), a.flows_at(1)), (20, 20));
        let mut b = table(&["A"], &keys);
        b.move_share(0, 1, 0.5, 1);
        let moved: Vec<&String> = keys.iter().filter(|f| a.current(f).unwrap().node == 1).collect();
        assert!(moved.iter().all(|f| b.current(f).unwrap().node == 1), "the same flows move");
        assert!(moved.iter().all(|f| a.current(f).unwrap().mark == 1));
        // Another salt picks other flows; a tiny share still moves one; 1 moves all.
        let mut c = table(&["A"], &keys);
        c.move_share(0, 1, 0.5, 2);
        assert!(moved.iter().any(|f| c.current(f).unwrap().node == 0));
        assert_eq!(table(&["A"], &keys).move_share(0, 1, 0.001, 1), 1);
        assert_eq!(table(&["A"], &keys).move_share(0, 2, 1.0, 1), 40);
        // Only the source node's flows move; nothing to move is no move.
        assert_eq!(a.move_share(2, 1, 1.0, 3), 0);
        assert_eq!(a.move_share(1, 2, 0.25, 4), 5);
        assert_eq!((a.flows_at(0), a.flows_at(1), a.flows_at(2)), (20, 15, 5));
    }

    #[test]
    fn a_drain_moves_everything_and_takes_no_new_flows() {
        let keys = flows(30);
        let mut a = table(&["A", "B"], &keys[..20]);
        let on_b = a.flows_at(1);
        assert_eq!(a.drain(1, 0), on_b);
        assert_eq!((a.flows_at(0), a.flows_at(1)), (20, 0));
        for f in &keys[20..] {
            assert_eq!(a.route(f).node, 0, "new flows avoid the drained node");
        }
        // Draining the last start node hands new flows to its successor.
        let mut solo = table(&["A"], &keys[..5]);
        solo.drain(0, 2);
        assert_eq!(solo.route(&keys[10]).node, 2);
    }

    #[test]
    fn marks_increase_with_every_move_of_a_flow() {
        let keys = flows(1);
        let mut a = table(&["A"], &keys);
        let mut marks = vec![a.route(&keys[0]).mark];
        for (from, to) in [(0, 1), (1, 0), (0, 1), (1, 2)] {
            assert_eq!(a.move_share(from, to, 1.0, 9), 1);
            marks.push(a.route(&keys[0]).mark);
        }
        assert_eq!(marks, [0, 1, 2, 3, 4]);
        let summary = a.summary();
        assert_eq!(summary[0].moves, 4);
        assert_eq!(summary[0].node, "C");
        assert_eq!(summary[0].packets, 6);
        let path: Vec<(&str, u16, u64)> =
            summary[0].path.iter().map(|s| (s.node.as_str(), s.mark, s.packets)).collect();
        assert_eq!(path, [("A", 0, 2), ("B", 1, 1), ("A", 2, 1), ("B", 3, 1), ("C", 4, 1)]);
    }

    #[test]
    fn schedule_errors_name_the_event_and_the_problem() {
        let nodes = names(&["A", "B"]);
        let ok: Event = "100:move:0.5:A:B".parse().unwrap();
        assert_eq!(ok, Event { after: 100, step: Step::Move { fraction: 0.5, from: "A".into(), to: "B".into() } });
        assert_eq!(ok.to_string(), "100:move:0.5:A:B");
        assert_eq!("7:drain:B:A".parse::<Event>().unwrap().to_string(), "7:drain:B:A");
        for (spec, needle) in [
            ("x:move:0.5:A:B", "\"x\" is not a packet count"),
            ("", "is not a packet count"),
            ("10", "expected N:move:FRACTION:FROM:TO or N:drain:FROM:TO"),
            ("10:jump:A:B", "unknown action \"jump\""),
            ("10:move:0:A:B", "fraction \"0\""),
            ("10:move:1.5:A:B", "within (0, 1]"),
            ("10:move:NaN:A:B", "fraction \"NaN\""),
            ("10:move:half:A:B", "fraction \"half\""),
            ("10:move:A:B", "expected N:move:FRACTION:FROM:TO"),
            ("10:drain:A", "expected N:drain:FROM:TO"),
            ("10:drain:A:B:C", "expected N:drain:FROM:TO"),
            ("10:drain:A:A", "from A to itself"),
            ("10:drain::A", "\"\" is not a node name"),
        ] {
            let e = spec.parse::<Event>().unwrap_err().to_string();
            assert!(e.contains(&format!("{spec:?}")) && e.contains(needle), "{spec:?}: {e}");
        }
        let schedule = |specs: &[&str]| {
            Schedule::new(specs.iter().map(|s| s.parse().unwrap()).collect(), &nodes).map(|s| s.events().to_vec())
        };
        let e = schedule(&["10:move:0.5:A:C"]).unwrap_err().to_string();
        assert!(e.contains("\"10:move:0.5:A:C\"") && e.contains("no node named \"C\" (nodes: A, B)"), "{e}");
        let e = schedule(&["10:drain:B:A", "20:move:0.5:A:B"]).unwrap_err().to_string();
        assert!(e.contains("\"20:move:0.5:A:B\"") && e.contains("node B is drained after packet 10"), "{e}");
        // Ordered by packet count, stable among equals.
        let events = schedule(&["30:drain:B:A", "10:move:0.5:A:B", "10:move:1:A:B"]).unwrap();
        let order: Vec<String> = events.iter().map(Event::to_string).collect();
        assert_eq!(order, ["10:move:0.5:A:B", "10:move:1:A:B", "30:drain:B:A"]);
    }

    #[test]
    fn assignment_refuses_bad_nodes() {
        assert!(Assignment::new(vec![], &[]).is_err());
        let e = Assignment::new(names(&["A", "A"]), &[]).unwrap_err().to_string();
        assert!(e.contains("named twice"), "{e}");
        let e = Assignment::new(names(&["A", "B"]), &names(&["C"])).unwrap_err().to_string();
        assert!(e.contains("start node \"C\""), "{e}");
        assert!(Assignment::new(names(&["a:b"]), &[]).is_err());
    }

    /// A fabric that keeps what it was sent, refuses everything for `dead` nodes, and
    /// records its settle calls.
    #[derive(Default)]
    struct Recorder {
        frames: Vec<Vec<Vec<u8>>>,
        dead: Vec<usize>,
        settles: Vec<(usize, u64)>,
    }

    impl Fabric for Recorder {
        fn send(&mut self, node: usize, frame: &[u8]) -> bool {
            if self.dead.contains(&node) {
                return false;
            }
            self.frames[node].push(frame.to_vec());
            true
        }

        fn settle(&mut self, node: usize, delivered: u64) -> bool {
            self.settles.push((node, delivered));
            true
        }
    }

    #[test]
    fn a_run_sends_tags_moves_and_ends_every_input() {
        let config: SynthConfig = "seed=4,flows=20,packets=3000,share=0".parse().unwrap();
        let packets: Vec<OwnedPacket> = synthetic(&config).collect();
        let nodes = names(&["A", "B", "C"]);
        let events = ["1000:move:0.5:A:B", "2000:drain:B:A", "5000:move:0.5:A:C"];
        let schedule = Schedule::new(events.iter().map(|s| s.parse().unwrap()).collect(), &nodes).unwrap();
        let mut assignment = Assignment::new(nodes, &[]).unwrap();
        let mut fabric = Recorder { frames: vec![vec![]; 3], ..Recorder::default() };
        let report = run(packets.clone(), &mut assignment, &schedule, &mut fabric, None, None);

        assert_eq!(report.packets, 3000);
        assert_eq!(report.undeliverable(), 0);
        let moves: Vec<(&str, usize)> = report.moves.iter().map(|m| (m.event.as_str(), m.flows)).collect();
        assert_eq!(moves, [("1000:move:0.5:A:B", 10), ("2000:drain:B:A", 10)]);
        assert_eq!(report.skipped, ["5000:move:0.5:A:C"]);
        // Settled the old node with what it had been sent at that point.
        assert_eq!(fabric.settles, [(0, 1000), (1, report.nodes[1].sent)]);
        // Each input ended exactly once, with an empty frame last; C got nothing else.
        assert_eq!(fabric.frames[2], [Vec::<u8>::new()]);
        for node in &fabric.frames {
            assert_eq!(node.iter().filter(|f| f.is_empty()).count(), 1);
            assert!(node.last().unwrap().is_empty());
        }
        assert!(report.nodes.iter().all(|n| n.ended));
        let sent: u64 = report.nodes.iter().map(|n| n.sent).sum();
        assert_eq!(sent, 3000);

        // What B got: moved flows only, all with mark 1; A's later packets of the same
        // flows carry mark 2.
        let parse = |f: &Vec<u8>| {
            let p = pcap::parse(f).unwrap();
            (estate_guest::nf::flow_key(p.proto, p.src, p.dst), p.mark)
        };
        let on_b: Vec<(String, u16)> = fabric.frames[1].iter().filter(|f| !f.is_empty()).map(parse).collect();
        assert!(on_b.iter().all(|(_, mark)| *mark == 1));
        let on_a: Vec<(String, u16)> = fabric.frames[0].iter().filter(|f| !f.is_empty()).map(parse).collect();
        assert_eq!(on_a[..1000].iter().filter(|(_, m)| *m != 0).count(), 0);
        let back: std::collections::BTreeSet<&String> = on_a.iter().filter(|(_, m)| *m == 2).map(|(f, _)| f).collect();
        let went: std::collections::BTreeSet<&String> = on_b.iter().map(|(f, _)| f).collect();
        assert!(back.is_subset(&went) && !back.is_empty());

        // The summary adds up and matches the stream.
        let summary = assignment.summary();
        assert_eq!(summary.len(), 20);
        assert_eq!(summary.iter().map(|f| f.packets).sum::<u64>(), 3000);
        for f in &summary {
            assert_eq!(f.packets, packets.iter().filter(|p| p.flow == f.flow).count() as u64, "{}", f.flow);
            assert_eq!(f.node, "A");
            assert_eq!(f.path.iter().map(|s| s.packets).sum::<u64>(), f.packets);
        }
    }

    /// Commands given at fixed points of the stream (by packets sent), with their answers.
    struct Scripted {
        script: Vec<(u64, &'static str)>,
        sent: std::rc::Rc<std::cell::Cell<u64>>,
        answers: Vec<Result<String, String>>,
    }

    impl Commands for Scripted {
        fn poll(&mut self) -> Option<Step> {
            let (at, text) = *self.script.first()?;
            if at > self.sent.get() {
                return None;
            }
            self.script.remove(0);
            match parse_command(text) {
                Ok(step) => Some(step),
                Err(e) => {
                    self.answers.push(Err(e.to_string()));
                    self.poll()
                }
            }
        }

        fn answer(&mut self, outcome: Result<String, String>) {
            self.answers.push(outcome);
        }
    }

    /// A recorder that also counts what it was sent, for [`Scripted`].
    struct Counting(Recorder, std::rc::Rc<std::cell::Cell<u64>>);

    impl Fabric for Counting {
        fn send(&mut self, node: usize, frame: &[u8]) -> bool {
            self.1.set(self.1.get() + !frame.is_empty() as u64);
            self.0.send(node, frame)
        }

        fn settle(&mut self, node: usize, delivered: u64) -> bool {
            self.0.settle(node, delivered)
        }
    }

    #[test]
    fn commands_take_steps_while_the_stream_runs_and_bad_ones_are_refused() {
        let config: SynthConfig = "seed=4,flows=20,packets=3000,share=0".parse().unwrap();
        let nodes = names(&["A", "B"]);
        let mut assignment = Assignment::new(nodes, &[]).unwrap();
        let sent = std::rc::Rc::new(std::cell::Cell::new(0));
        let mut fabric = Counting(Recorder { frames: vec![vec![]; 2], ..Recorder::default() }, sent.clone());
        let mut commands = Scripted {
            script: vec![
                (500, "move 0.5 A B"),
                (600, "move 2 A B"),
                (700, "jump A B"),
                (800, "move 0.5 A C"),
                (1500, "drain B A"),
                (1600, "move 0.5 A B"),
            ],
            sent,
            answers: Vec::new(),
        };
        let report =
            run(synthetic(&config), &mut assignment, &Schedule::default(), &mut fabric, None, Some(&mut commands));
        let answers = &commands.answers;
        assert_eq!(answers.len(), 6, "{answers:?}");
        assert_eq!(answers[0], Ok("move 0.5 A B after 512 packets: 10 flows".to_string()), "polled every 16 packets");
        assert!(answers[1].as_ref().unwrap_err().contains("fraction"), "{answers:?}");
        assert!(answers[2].as_ref().unwrap_err().contains("unknown action"), "{answers:?}");
        assert!(answers[3].as_ref().unwrap_err().contains("no node"), "{answers:?}");
        assert_eq!(answers[4], Ok("drain B A after 1504 packets: 10 flows".to_string()));
        assert!(answers[5].as_ref().unwrap_err().contains("B was drained"), "{answers:?}");
        let moves: Vec<(&str, usize)> = report.moves.iter().map(|m| (m.event.as_str(), m.flows)).collect();
        assert_eq!(moves, [("512:move:0.5:A:B", 10), ("1504:drain:B:A", 10)]);
        assert_eq!(report.packets, 3000);
        assert!(report.nodes.iter().all(|n| n.ended));
    }

    #[test]
    fn undeliverable_packets_are_counted_per_node_and_flow() {
        let config: SynthConfig = "seed=5,flows=10,packets=500,share=0".parse().unwrap();
        let nodes = names(&["A", "B"]);
        let mut assignment = Assignment::new(nodes.clone(), &nodes).unwrap();
        let mut fabric = Recorder { frames: vec![vec![], vec![]], dead: vec![1], ..Recorder::default() };
        let report = run(synthetic(&config), &mut assignment, &Schedule::default(), &mut fabric, None, None);
        assert_eq!(report.nodes[1].sent, 0);
        assert_eq!(report.undeliverable(), report.nodes[1].undeliverable);
        assert_eq!(report.nodes[0].sent + report.nodes[1].undeliverable, 500);
        assert!(report.nodes[0].ended && !report.nodes[1].ended);
        let lost: u64 = assignment.summary().iter().flat_map(|f| &f.path).map(|s| s.undeliverable).sum();
        assert_eq!(lost, report.nodes[1].undeliverable);
    }

    #[test]
    fn pacing_holds_the_rate() {
        let config: SynthConfig = "seed=6,flows=3,packets=50,share=0".parse().unwrap();
        let nodes = names(&["A"]);
        let mut assignment = Assignment::new(nodes, &[]).unwrap();
        let mut fabric = Recorder { frames: vec![vec![]], ..Recorder::default() };
        let started = Instant::now();
        run(synthetic(&config), &mut assignment, &Schedule::default(), &mut fabric, Some(500), None);
        assert!(started.elapsed() >= Duration::from_millis(95), "50 packets at 500/s took {:?}", started.elapsed());
    }

    #[test]
    fn steered_frames_reach_the_source_over_zeromq() {
        let counters = Arc::new(NfCounters::default());
        let mut source = SteerSource::bind("tcp://127.0.0.1:*", counters.clone()).unwrap();
        assert!(source.endpoint().starts_with("tcp://127.0.0.1:") && !source.endpoint().ends_with('*'));
        let config: SynthConfig = "seed=7,flows=4,packets=30,share=0".parse().unwrap();
        let mut packets: Vec<OwnedPacket> = synthetic(&config).collect();
        packets[3].mark = 2;
        let nodes = vec![("A".to_string(), source.endpoint().to_string())];
        let mut fabric =
            ZmqFabric::connect(&nodes, &HashMap::new(), Duration::from_secs(5), Duration::from_secs(1)).unwrap();
        assert!(fabric.send(0, &pcap::frame(&packets[0])));
        assert!(fabric.send(0, b"garbage"));
        for p in &packets[1..] {
            assert!(fabric.send(0, &pcap::frame(p)));
        }
        assert!(fabric.send(0, &[]));
        let got: Vec<OwnedPacket> = source.by_ref().collect();
        assert_eq!(got.len(), 30);
        assert_eq!(counters.bad_frames.load(Ordering::Relaxed), 1);
        for (a, b) in packets.iter().zip(&got) {
            assert_eq!((&a.flow, &a.payload, a.mark), (&b.flow, &b.payload, b.mark));
        }
        assert!(source.next().is_none(), "ended for good");
    }

    #[test]
    fn a_waiting_source_stops_when_asked() {
        let source = SteerSource::bind("tcp://127.0.0.1:*", Arc::default()).unwrap();
        let stop = source.stop.clone();
        let waiting = std::thread::spawn(move || source.count());
        std::thread::sleep(Duration::from_millis(150));
        let asked = Instant::now();
        stop.store(true, Ordering::Relaxed);
        assert_eq!(waiting.join().unwrap(), 0);
        assert!(asked.elapsed() < Duration::from_secs(1), "took {:?}", asked.elapsed());
    }

    #[test]
    fn a_dead_node_costs_one_send_timeout() {
        // Nothing listens on port 1 of loopback.
        let nodes = vec![("A".to_string(), "tcp://127.0.0.1:1".to_string())];
        let mut fabric =
            ZmqFabric::connect(&nodes, &HashMap::new(), Duration::from_millis(100), Duration::from_millis(100))
                .unwrap();
        let started = Instant::now();
        assert!(!(0..200).any(|_| fabric.send(0, b"frame")));
        assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    }
}
