//! Where the switch sends its frames: the trait, and the ZeroMQ fabric.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::*;
use crate::wire::{ControlReply, ControlRequest};

/// Where the switch sends its frames.
pub trait Fabric {
    /// Sends `frame` to node `node` (an index into the switch's nodes); an empty frame
    /// ends the node's input. Returns whether the frame was delivered (handed to the
    /// node's queue) in time.
    fn send(&mut self, node: usize, frame: &[u8]) -> bool;

    /// Sends `packet` (already given its flow's mark) to node `node`. The default sends
    /// the frame [`pcap::frame`] builds; a live fabric sends the captured frame itself.
    fn send_packet(&mut self, node: usize, packet: &OwnedPacket) -> bool {
        self.send(node, &pcap::frame(packet))
    }

    /// Waits until node `node` has handled the `delivered` packets sent to it, before
    /// flows move away from it. Returns false if that could not be confirmed in time (the
    /// move goes ahead anyway). The default does not wait.
    fn settle(&mut self, node: usize, delivered: u64) -> bool {
        let _ = (node, delivered);
        true
    }
}

/// The ZeroMQ fabric: a PUSH socket to each node's steered input.
///
/// A send waits at most the send timeout (a node's queue may be full while it catches
/// up). A node that did not take a frame in that time is taken for down: later frames to
/// it are tried without waiting (and counted as undeliverable if it still cannot take
/// them) until it takes one again, so a dead node costs one timeout, not one per packet.
pub struct ZmqFabric {
    pub(crate) ports: Vec<Port>,
    pub(crate) send_timeout: Duration,
    pub(crate) settle_timeout: Duration,
    /// Sends that waited the whole send timeout in vain.
    pub(crate) timeouts: u64,
}

/// One node as the fabric reaches it.
pub(crate) struct Port {
    pub(crate) name: String,
    pub(crate) endpoint: String,
    pub(crate) socket: zmq::Socket,
    /// The node's control endpoint, to ask how many packets its NF handled.
    pub(crate) control: Option<String>,
    pub(crate) down: bool,
}

impl fmt::Debug for ZmqFabric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ports: Vec<(&str, &str, bool)> =
            self.ports.iter().map(|p| (p.name.as_str(), p.endpoint.as_str(), p.down)).collect();
        f.debug_struct("ZmqFabric").field("ports", &ports).finish_non_exhaustive()
    }
}

/// Milliseconds for a ZeroMQ socket option.
pub(crate) fn millis(d: Duration) -> i32 {
    d.as_millis().try_into().unwrap_or(i32::MAX)
}

impl ZmqFabric {
    /// How many sends waited the whole send timeout in vain: one per time a node went
    /// down, not one per frame sent to it while down.
    pub fn timeouts(&self) -> u64 {
        self.timeouts
    }

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
        Ok(ZmqFabric { ports, send_timeout, settle_timeout, timeouts: 0 })
    }
}

/// Packets the NF of the node at `control` has handled (forwarded, dropped, or skipped
/// as a bad frame), from its `stats`.
fn handled(control: &str, wait: Duration) -> Result<u64, String> {
    // As the admin, if the environment names a credential (nodes with credentials
    // files need one): $ESTATE_CREDENTIAL_FILE or $ESTATE_CREDENTIAL.
    let caller = crate::control::Caller::from_env(None, None).map_err(|e| e.to_string())?;
    match crate::control::call_as(control, &caller, &ControlRequest::Stats, wait).map_err(|e| e.to_string())? {
        ControlReply::Stats(rows) => Ok(rows
            .iter()
            .filter(|(k, _)| matches!(k.as_str(), "nf_forwarded" | "nf_dropped" | "nf_bad_frames"))
            .map(|(_, v)| v)
            .sum()),
        other => Err(format!("unexpected answer to stats from {control}: {other:?}")),
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
                    self.timeouts += 1;
                    warn!(node = %port.name, endpoint = %port.endpoint, "frame not taken within {timeout:?} ({e}); \
                           counting frames as undeliverable until the node takes one again");
                    port.down = true;
                }
                false
            }
        }
    }

    fn settle(&mut self, node: usize, delivered: u64) -> bool {
        let port = &self.ports[node];
        port.control.as_deref().is_none_or(|control| settle(&port.name, control, delivered, self.settle_timeout))
    }
}

/// Waits at most `timeout` until the node `name` whose control endpoint is `control`
/// has handled `delivered` packets; whether it has.
pub(crate) fn settle(name: &str, control: &str, delivered: u64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match handled(control, left.clamp(Duration::from_millis(10), Duration::from_secs(1))) {
            Ok(handled) if handled >= delivered => return true,
            Ok(handled) => debug!(node = %name, handled, delivered, "waiting for the node"),
            Err(e) => debug!(node = %name, "waiting for the node: {e}"),
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
