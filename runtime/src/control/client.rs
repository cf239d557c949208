//! The one control-socket client: the CLI, the switch emulator and tests all use it.
//!
//! A request is one ZeroMQ REQ round trip with a deadline; a node that does not answer
//! in time is an error that names the endpoint and the wait, never a hang.

use std::time::Duration;

use crate::wire::{self, ControlReply, ControlRequest, DecodeError};

/// Why a control request got no reply.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be set up or connected.
    #[error("connecting to {endpoint}: {source}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// ZeroMQ's error.
        source: zmq::Error,
    },
    /// No reply came within the wait.
    #[error("no answer from {endpoint} within {wait:?}")]
    Timeout {
        /// The endpoint.
        endpoint: String,
        /// How long the client waited.
        wait: Duration,
    },
    /// Sending or receiving failed.
    #[error("talking to {endpoint}: {source}")]
    Io {
        /// The endpoint.
        endpoint: String,
        /// ZeroMQ's error.
        source: zmq::Error,
    },
    /// The reply was not a valid control reply.
    #[error("bad reply from {endpoint}: {source}")]
    Decode {
        /// The endpoint.
        endpoint: String,
        /// Why it could not be decoded.
        source: DecodeError,
    },
}

/// Sends `request` to the node's control socket at `endpoint` and waits at most `wait`
/// for its reply.
pub fn call(endpoint: &str, request: &ControlRequest, wait: Duration) -> Result<ControlReply, ClientError> {
    let frame = round_trip(endpoint, &wire::encode_request(request), wait)?;
    wire::decode_reply(&frame).map_err(|source| ClientError::Decode { endpoint: endpoint.to_string(), source })
}

/// One REQ/REP round trip of raw bytes (the switch emulator's text commands use it).
pub fn round_trip(endpoint: &str, request: &[u8], wait: Duration) -> Result<Vec<u8>, ClientError> {
    let connect = |source| ClientError::Connect { endpoint: endpoint.to_string(), source };
    let io = |source| ClientError::Io { endpoint: endpoint.to_string(), source };
    let ctx = zmq::Context::new();
    let socket = ctx.socket(zmq::REQ).map_err(connect)?;
    socket.set_linger(0).map_err(connect)?;
    socket.set_rcvtimeo(wait.as_millis().try_into().unwrap_or(i32::MAX)).map_err(connect)?;
    socket.connect(endpoint).map_err(connect)?;
    socket.send(request, 0).map_err(io)?;
    match socket.recv_bytes(0) {
        Ok(frame) => Ok(frame),
        Err(zmq::Error::EAGAIN) => Err(ClientError::Timeout { endpoint: endpoint.to_string(), wait }),
        Err(e) => Err(io(e)),
    }
}
