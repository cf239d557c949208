//! Steps asked for on command while the stream runs.

use std::fmt;

use tracing::warn;

use super::*;

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
    pub(crate) _ctx: zmq::Context,
    pub(crate) socket: zmq::Socket,
    pub(crate) endpoint: String,
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

impl fmt::Debug for ZmqCommands {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZmqCommands").field("endpoint", &self.endpoint).finish_non_exhaustive()
    }
}
