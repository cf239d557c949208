//! The driver's side of secure peering: frames through the node's [`Secure`] channel,
//! handshake answers read from the DEALERs, and the key file and roster watched.

use std::sync::atomic::Ordering;

use tracing::{info, warn};

use super::Driver;
use super::keyfile::{Change, Loaded, OsEntropy, Watch};
use crate::peering::proto::Input;
use crate::peering::secure::{Out, Secure};
use crate::peering::stats::{Stats, bump};
use std::sync::Arc;

/// A keyed node's channel and the files it was made from.
pub(crate) struct Link {
    pub(super) channel: Secure,
    watch: Watch,
    /// When every DEALER is next looked at (not only those awaiting an answer).
    pub(super) sweep_at: u64,
    /// When the channel's timers are next run.
    tick_at: u64,
}

/// How often the channel's timers (handshake expiry, renewal, idle sessions) run, in
/// ms: they count in seconds, and running them on every turn of the loop costs time.
const TICK_MS: u64 = 10;

impl Link {
    pub(crate) fn new(loaded: Loaded, stats: Arc<Stats>) -> Link {
        info!(public = %loaded.key.public(), keys = loaded.roster.len(), "peering is authenticated and encrypted");
        let channel = Secure::new(loaded.key, loaded.roster, Box::new(OsEntropy), stats);
        Link { channel, watch: loaded.watch, sweep_at: 0, tick_at: 0 }
    }
}

impl Driver {
    /// Carries out what the channel says.
    pub(super) fn carry_out(&mut self, out: Vec<Out>) {
        for o in out {
            match o {
                Out::Dealer { endpoint, frame } => self.send_raw(&endpoint, frame),
                Out::Router { routing_id, frame } => {
                    if let Err(e) = self.router.send_multipart([routing_id, frame], zmq::DONTWAIT) {
                        let n = bump(&self.stats.send_dropped);
                        tracing::debug!(total = n, "answer dropped: {e}");
                    }
                }
                Out::Deliver(env) => {
                    self.store.clock().observe(env.clock);
                    self.feed(Input::Message { from: env.from, body: env.body });
                }
                Out::Refused { reason, peer } => self.security.record(reason, &format!("peer:{peer}"), "peer frames"),
            }
        }
    }

    /// Reads what arrived on the DEALERs to `endpoints` (handshake answers).
    pub(super) fn drain_dealers(&mut self, endpoints: Vec<String>) {
        for endpoint in endpoints {
            for _ in 0..64 {
                let Some(socket) = self.peers.get(&endpoint) else { break };
                let parts = match socket.recv_multipart(zmq::DONTWAIT) {
                    Ok(parts) => parts,
                    Err(zmq::Error::EAGAIN) => break,
                    Err(e) => {
                        warn!(%endpoint, "receive failed: {e}");
                        break;
                    }
                };
                bump(&self.stats.frames);
                let size: usize = parts.iter().map(Vec::len).sum();
                self.stats.bytes_in.fetch_add(size as u64, Ordering::Relaxed);
                let [frame] = parts.as_slice() else {
                    let n = bump(&self.stats.malformed);
                    warn!(parts = parts.len(), total = n, "dropped a peer message with an unexpected frame count");
                    continue;
                };
                let now = self.now();
                let mut out = Vec::new();
                if let Some(link) = &mut self.secure {
                    link.channel.from_dealer(&endpoint, frame, now, &mut out);
                }
                self.carry_out(out);
            }
        }
    }

    /// Once a tick: the key file and roster taken up if changed, handshakes and
    /// sessions expired or renewed.
    pub(super) fn secure_tick(&mut self) {
        let now = self.now();
        let Some(link) = self.secure.as_mut().filter(|l| now >= l.tick_at) else { return };
        link.tick_at = now + TICK_MS;
        for change in link.watch.check(now) {
            match change {
                Change::Key(key) => {
                    info!(public = %key.public(), "key file changed: new sessions use the new key");
                    link.channel.set_key(key);
                    bump(&self.stats.key_reloads);
                }
                Change::Roster(roster) => {
                    info!(keys = roster.len(), "roster changed");
                    link.channel.set_roster(roster);
                    bump(&self.stats.key_reloads);
                }
                Change::Failed(e) => {
                    let n = bump(&self.stats.key_reload_failed);
                    warn!(total = n, "keeping the key and roster in use: {e}");
                }
            }
        }
        let mut out = Vec::new();
        link.channel.tick(now, &mut out);
        self.carry_out(out);
    }
}
