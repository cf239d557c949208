//! The steered input: frames pushed by the switch emulator over ZeroMQ.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tracing::{info, warn};

use crate::nf::counters::NfCounters;
use crate::nf::input::pcap::{self, FlowDirections};
use crate::nf::input::synth::OwnedPacket;
use crate::nf::input::{Input, rare_warn};

/// How long a steered input waits for a message before it checks its stop flag.
pub(crate) const STEER_POLL: Duration = Duration::from_millis(100);

/// The largest message a steered input accepts; ZeroMQ disconnects a sender of a larger
/// one. Ethernet frames are far smaller.
pub(crate) const STEER_MAX_MSG: i64 = 1 << 20;

/// A steered input's socket could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("{what} {endpoint}: {source}")]
pub struct SteerError {
    /// What was being done.
    pub what: &'static str,
    /// The endpoint it was done with.
    pub endpoint: String,
    /// ZeroMQ's error.
    #[source]
    pub source: zmq::Error,
}

/// A node's steered input: a ZeroMQ PULL socket that the switch pushes Ethernet frames
/// to (see the module documentation for the link). An iterator of packets that ends at
/// the end-of-input message, or when its stop flag is raised.
pub struct SteerSource {
    pub(crate) socket: zmq::Socket,
    pub(crate) endpoint: String,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) counters: Arc<NfCounters>,
    pub(crate) directions: FlowDirections,
    pub(crate) ended: bool,
}

impl fmt::Debug for SteerSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SteerSource").field("endpoint", &self.endpoint).field("ended", &self.ended).finish()
    }
}

impl SteerSource {
    /// Binds a steered input at `endpoint` (port `*` picks a free one; see
    /// [`SteerSource::endpoint`]); bad frames are counted in `counters`.
    pub fn bind(endpoint: &str, counters: Arc<NfCounters>) -> Result<SteerSource, SteerError> {
        let err = |what| move |source| SteerError { what, endpoint: endpoint.to_string(), source };
        let socket = zmq::Context::new().socket(zmq::PULL).map_err(err("creating a socket for"))?;
        socket.set_rcvtimeo(STEER_POLL.as_millis() as i32).map_err(err("configuring"))?;
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

    pub(crate) fn bad_frame(&self, why: &str) {
        let n = self.counters.bad_frames.fetch_add(1, Ordering::Relaxed) + 1;
        rare_warn(n, format_args!("steered input {}: skipped a frame ({why})", self.endpoint));
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
