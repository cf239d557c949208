//! The switch on real interfaces: the paper's SDN switch in front of NF instances that
//! run inline (`estate node --inline A,B`).
//!
//! The switch has two host ports, one towards the hosts that open connections
//! ([`LivePorts::hosts`]`[0]`, "in") and one towards the servers (`[1]`, "out"), and
//! two ports per NF instance, wired to the instance's two inline sides. Each flow's
//! frames from the in side go out of its instance's first port, and those from the out
//! side out of its second port, tagged with the flow's move mark (untagged until the
//! flow first moves), so both directions of a flow pass the same instance. What the
//! instance forwards comes back on the other port of the pair and leaves by the host
//! port on that side, its tag taken off. Frames without a flow (ARP, ICMP, IPv6…) go
//! straight across from one host port to the other, past the instances.
//!
//! Flows move between instances as with any other input: by the schedule (`--at`,
//! counted in packets) or on command. Commands are read between packets, so a command
//! sent while no traffic flows waits for the next packet.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::nf::NfCounters;
use crate::nf::input::frame;
use crate::nf::input::live::{self, LiveError, LiveSource, Sender, Unparsed};
use crate::nf::input::synth::OwnedPacket;
use crate::switch::Fabric;
use crate::switch::fabric::settle;

/// The interfaces of a live switch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LivePorts {
    /// The host ports: towards the clients ("in") and towards the servers ("out").
    pub hosts: [String; 2],
    /// Per NF instance, in the switch's node order: the port wired to its first inline
    /// side, and the one wired to its second.
    pub nodes: Vec<[String; 2]>,
}

/// The fabric of a live switch: each flow's frames out of its instance's ports.
pub struct LiveFabric {
    ports: Vec<[Arc<Sender>; 2]>,
    names: Vec<String>,
    /// Control endpoints of instances the switch waits for before moving flows away.
    controls: Vec<Option<String>>,
    settle_timeout: Duration,
    counters: Arc<NfCounters>,
    stop: Arc<AtomicBool>,
    patches: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for LiveFabric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveFabric").field("nodes", &self.names).finish_non_exhaustive()
    }
}

/// Opens a live switch on `ports` for the instances `names` (with their control
/// endpoints, if the switch should wait for them before moves). Returns the flows'
/// packets as they come in on the host ports, and the fabric that sends them on. Both
/// stop once `stop` is raised. The switch's own counts (frames passed across, bad
/// frames, send errors) are kept in the returned counters.
pub fn open(
    ports: &LivePorts,
    names: &[String],
    controls: Vec<Option<String>>,
    settle_timeout: Duration,
    stop: Arc<AtomicBool>,
) -> Result<(LiveSource, LiveFabric, Arc<NfCounters>), LiveError> {
    let counters = Arc::new(NfCounters::default());
    let [clients, servers] = &ports.hosts;
    let (source, hosts) = live::two_sided(clients, servers, Unparsed::Pass, counters.clone(), stop.clone())?;
    let mut fabric = LiveFabric {
        ports: Vec::new(),
        names: names.to_vec(),
        controls,
        settle_timeout,
        counters: counters.clone(),
        stop: stop.clone(),
        patches: Vec::new(),
    };
    for pair in &ports.nodes {
        let senders = [Arc::new(Sender::open(&pair[0])?), Arc::new(Sender::open(&pair[1])?)];
        // What the instance forwards towards the servers comes back on the second port.
        for (side, host) in pair.iter().zip(&hosts) {
            fabric.patches.push(live::patch(side, host.clone(), counters.clone(), stop.clone())?);
        }
        fabric.ports.push(senders);
    }
    Ok((source, fabric, counters))
}

impl Fabric for LiveFabric {
    /// Only the end of an instance's input comes here: a live instance has none to end.
    fn send(&mut self, _node: usize, frame: &[u8]) -> bool {
        frame.is_empty()
    }

    fn send_packet(&mut self, node: usize, packet: &OwnedPacket) -> bool {
        let Some(wire) = packet.wire.as_deref() else { return false };
        let out = &self.ports[node][wire.side as usize];
        out.send(&frame::retag(&wire.frame, packet.mark), &self.counters)
    }

    fn settle(&mut self, node: usize, delivered: u64) -> bool {
        let name = &self.names[node];
        self.controls[node].as_deref().is_none_or(|control| settle(name, control, delivered, self.settle_timeout))
    }
}

impl Drop for LiveFabric {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for patch in self.patches.drain(..) {
            let _ = patch.join();
        }
    }
}
