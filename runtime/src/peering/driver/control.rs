//! The control socket: requests in (routing id, delimiter, frame), replies out.

use tracing::warn;

use super::Driver;
use crate::peering::stats::bump;
use crate::wire::{self, ControlReply};

impl Driver {
    /// Reads the control requests waiting on the socket (a bounded number per turn).
    pub(crate) fn drain_control(&mut self) {
        for _ in 0..256 {
            let Some(control) = &self.control else { return };
            let parts = match control.recv_multipart(zmq::DONTWAIT) {
                Ok(parts) => parts,
                Err(_) => return,
            };
            // A REQ client sends [routing id, empty delimiter, request].
            let [identity, delimiter, frame] = parts.as_slice() else {
                bump(&self.stats.control_malformed);
                warn!(parts = parts.len(), "dropped a control message with an unexpected frame count");
                continue;
            };
            if !delimiter.is_empty() {
                bump(&self.stats.control_malformed);
                continue;
            }
            let identity = identity.clone();
            match wire::decode_request(frame) {
                Ok(req) => self.on_control(identity, req),
                Err(e) => {
                    bump(&self.stats.control_malformed);
                    warn!("malformed control request: {e}");
                    self.reply_control(identity, &ControlReply::Error(format!("malformed request: {e}")));
                }
            }
        }
    }

    /// Sends `reply` to control client `identity`.
    pub(crate) fn reply_control(&self, identity: Vec<u8>, reply: &ControlReply) {
        if let Some(control) = &self.control {
            let frames: [&[u8]; 3] = [&identity, &[], &wire::encode_reply(reply)];
            if let Err(e) = control.send_multipart(frames, zmq::DONTWAIT) {
                warn!("control reply dropped: {e}");
            }
        }
    }
}
