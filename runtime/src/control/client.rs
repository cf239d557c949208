//! The one control-socket client: the CLI, the switch emulator and tests all use it.
//!
//! A request is one ZeroMQ REQ round trip with a deadline; a node that does not answer
//! in time is an error that names the endpoint and the wait, never a hang.

use std::time::Duration;

use crate::control::auth::CredentialError;
use crate::wire::{self, ControlCall, ControlReply, ControlRequest, Credential, DecodeError};

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

/// Who a client calls as: a credential (none: for a node without a credentials file)
/// and the tenant to act in.
#[derive(Clone, Debug, Default)]
pub struct Caller {
    /// The credential sent with every request.
    pub credential: Option<Credential>,
    /// The tenant to act in (none: the principal's own, or `default` for the admin).
    pub tenant: Option<String>,
}

/// The environment variable holding a credential (`PRINCIPAL SECRET`).
pub const CREDENTIAL_ENV: &str = "ESTATE_CREDENTIAL";
/// The environment variable naming a credential file.
pub const CREDENTIAL_FILE_ENV: &str = "ESTATE_CREDENTIAL_FILE";

impl Caller {
    /// The credential from `file` if given, else from [`CREDENTIAL_FILE_ENV`] or
    /// [`CREDENTIAL_ENV`], else none. Never from the command line's arguments: they are
    /// visible to every user of the machine.
    pub fn from_env(file: Option<&std::path::Path>, tenant: Option<String>) -> Result<Caller, CredentialError> {
        let credential = match (file, std::env::var_os(CREDENTIAL_FILE_ENV), std::env::var(CREDENTIAL_ENV)) {
            (Some(path), _, _) => Some(Credential::load(path)?),
            (None, Some(path), _) => Some(Credential::load(std::path::Path::new(&path))?),
            (None, None, Ok(text)) => Some(Credential::parse(&text, CREDENTIAL_ENV)?),
            (None, None, Err(_)) => None,
        };
        Ok(Caller { credential, tenant })
    }
}

/// Sends `request` to the node's control socket at `endpoint` without a credential
/// (a node without a credentials file) and waits at most `wait` for its reply.
pub fn call(endpoint: &str, request: &ControlRequest, wait: Duration) -> Result<ControlReply, ClientError> {
    call_as(endpoint, &Caller::default(), request, wait)
}

/// Sends `request` as `caller` and waits at most `wait` for its reply.
pub fn call_as(
    endpoint: &str,
    caller: &Caller,
    request: &ControlRequest,
    wait: Duration,
) -> Result<ControlReply, ClientError> {
    let call =
        ControlCall { credential: caller.credential.clone(), tenant: caller.tenant.clone(), request: request.clone() };
    let frame = round_trip(endpoint, &wire::encode_request(&call), wait)?;
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
