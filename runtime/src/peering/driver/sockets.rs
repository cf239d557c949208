//! The node's sockets: binding them, and the way other threads wake the I/O thread.

use std::sync::{Arc, Mutex, mpsc};

use super::{Command, Inbox};
use crate::wire::MAX_FRAME;

/// ZeroMQ drops (and disconnects) anything larger than this before we see it; frames
/// between [`MAX_FRAME`] and this are received, counted as oversized and dropped.
pub(crate) const ZMQ_MAX_MSG: i64 = 2 * MAX_FRAME as i64;
/// Send queue per peer; a dead peer's queue fills up and further sends are dropped.
pub(super) const PEER_SNDHWM: i32 = 10_000;
/// Largest message a DEALER takes (handshake answers are about a hundred bytes).
pub(super) const DEALER_MAX_MSG: i64 = 4096;
/// How long a closing socket may keep trying to deliver (the `Leave` messages).
pub(super) const LINGER_MS: i32 = 500;

/// A socket that could not be created, configured or bound.
#[derive(Debug, thiserror::Error)]
#[error("{what} {endpoint}: {source}")]
pub struct SocketError {
    /// What was being done.
    pub what: &'static str,
    /// The endpoint.
    pub endpoint: String,
    /// ZeroMQ's error.
    pub source: zmq::Error,
}

pub(crate) fn socket_error<'a>(what: &'static str, endpoint: &'a str) -> impl FnOnce(zmq::Error) -> SocketError + 'a {
    move |source| SocketError { what, endpoint: endpoint.to_string(), source }
}

/// Binds a socket of `kind` at `endpoint`; returns it and the endpoint actually bound.
pub(crate) fn bind(
    ctx: &zmq::Context,
    kind: zmq::SocketType,
    endpoint: &str,
) -> Result<(zmq::Socket, String), SocketError> {
    let socket = ctx.socket(kind).map_err(socket_error("creating a socket for", endpoint))?;
    socket.set_maxmsgsize(ZMQ_MAX_MSG).map_err(socket_error("configuring", endpoint))?;
    socket.set_linger(0).map_err(socket_error("configuring", endpoint))?;
    socket.bind(endpoint).map_err(socket_error("binding", endpoint))?;
    let bound = socket
        .get_last_endpoint()
        .map_err(socket_error("reading the bound endpoint of", endpoint))?
        .unwrap_or_else(|_| endpoint.to_string());
    Ok((socket, bound))
}

/// A node's bound sockets, before its I/O thread takes them over.
pub(crate) struct Sockets {
    pub(super) ctx: zmq::Context,
    pub(super) router: zmq::Socket,
    pub(crate) endpoint: String,
    pub(super) control: Option<zmq::Socket>,
    pub(crate) control_endpoint: Option<String>,
    pub(super) wake: zmq::Socket,
    pub(super) commands: mpsc::Receiver<Command>,
    /// How other threads reach the I/O thread.
    pub(crate) inbox: Arc<Inbox>,
}

impl Sockets {
    /// Binds the peer ROUTER at `listen`, the control ROUTER at `control` (if any) and
    /// the `inproc` wake-up pair.
    pub(crate) fn bind(listen: &str, control: Option<&str>) -> Result<Sockets, SocketError> {
        let ctx = zmq::Context::new();
        let (router, endpoint) = bind(&ctx, zmq::ROUTER, listen)?;
        let (control, control_endpoint) = match control {
            Some(ep) => {
                let (socket, bound) = bind(&ctx, zmq::ROUTER, ep)?;
                (Some(socket), Some(bound))
            }
            None => (None, None),
        };
        let wake_ep = format!("inproc://estate-wake-{:032x}", rand::random::<u128>());
        let (wake, _) = bind(&ctx, zmq::PULL, &wake_ep)?;
        let waker = ctx.socket(zmq::PUSH).map_err(socket_error("creating a socket for", &wake_ep))?;
        waker.connect(&wake_ep).map_err(socket_error("connecting", &wake_ep))?;
        let (tx, commands) = mpsc::channel();
        let inbox = Arc::new(Inbox { commands: tx, wake: Mutex::new(waker) });
        Ok(Sockets { ctx, router, endpoint, control, control_endpoint, wake, commands, inbox })
    }
}
