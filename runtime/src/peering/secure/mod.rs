//! Authenticated, encrypted peering as a sans-IO state machine: frames and time in,
//! frames to send and authenticated messages out. No sockets, threads, clocks or
//! randomness here: the driver passes the time in ms, and random bytes come from an
//! [`Entropy`] source (the OS in production, seeded in tests).
//!
//! Each direction between two nodes is its own Noise session
//! (`Noise_XX_25519_ChaChaPoly_BLAKE2s`, by the `snow` crate), initiated by the
//! sender on its DEALER to the receiver's listen endpoint:
//!
//! 1. `Init` (XX message 1) from the sender's DEALER to the receiver's ROUTER;
//! 2. `Resp` (message 2, the receiver's static key) back through the ROUTER to the
//!    connection the `Init` came on, so the receiver never connects to an address an
//!    unauthenticated message named; it carries the receiver's random session index;
//! 3. `Fin` (message 3, the sender's static key) on the DEALER.
//!
//! Each side looks the other's static key up in the roster: an unknown key ends the
//! handshake (`unknown_peer`). The sender then seals `Data` frames for that index with
//! explicit nonces; the receiver keeps a sliding replay window per session and
//! delivers an [`Envelope`] only if its `from` is the id the roster gives the sender's
//! key (`identity_mismatch` otherwise). Frames sent while a handshake runs wait in a
//! bounded queue. Sessions are made anew every [`REKEY_AFTER_MS`] or
//! [`REKEY_AFTER_NONCES`], and at once when the node's own key changes; a roster that
//! no longer lists a key drops the sessions made with it. A `Data` frame for a session
//! the receiver does not have is answered with `Unknown`, on which the sender makes a
//! new session (a restarted peer is reached again at once).

mod frame;
mod keys;
mod session;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use snow::HandshakeState;
use snow::params::NoiseParams;
use tracing::{debug, warn};

use crate::peering::stats::{Stats, bump};
use crate::wire::{self, DecodeError, Envelope};
use frame::{Frame, FrameError, ReplayWindow};
pub use frame::{MAGIC, REPLAY_WINDOW, VERSION};
pub use keys::{KEY_LEN, KeyError, KeyPair, PublicKey, Roster};
use session::{Drawn, Initiating, Outbound, Receiving, Responding, Sending, open_data, seal_data};

/// The Noise protocol every session speaks.
pub const NOISE: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";
const PROLOGUE: &[u8] = b"estate secure peering 1";
/// A session this old is replaced by a new handshake.
pub const REKEY_AFTER_MS: u64 = 120_000;
/// A session that used this many nonces is replaced by a new handshake.
pub const REKEY_AFTER_NONCES: u64 = 1 << 30;
/// A handshake not complete after this long is dropped.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 5_000;
/// A receiving session unused this long is dropped.
pub const SESSION_IDLE_MS: u64 = 3 * REKEY_AFTER_MS;
/// Handshakes this node answered and awaits the `Fin` of; the oldest is dropped for a
/// new one beyond this.
pub const MAX_PENDING: usize = 256;
/// Receiving sessions kept per remote key (the oldest goes first) and in all.
pub const MAX_SESSIONS_PER_KEY: usize = 4;
const MAX_SESSIONS: usize = 4096;
/// Frames (and bytes) waiting per endpoint while its handshake runs.
pub const MAX_QUEUED: usize = 1024;
const MAX_QUEUED_BYTES: usize = 64 << 20;
/// Room for a handshake message (snow wants room for a tag even where none is written).
const SCRATCH: usize = 256;
/// After a failed handshake, the next one to the same endpoint waits this long.
pub const RETRY_MS: u64 = 1_000;

/// Random bytes, from the OS in production and a seeded generator in tests.
pub trait Entropy: Send {
    /// Fills `buf` with random bytes.
    fn fill(&mut self, buf: &mut [u8]);
}

/// What the driver must do.
#[derive(Debug, PartialEq)]
pub enum Out {
    /// Send `frame` on this node's DEALER to `endpoint`.
    Dealer {
        /// The peer's listen endpoint.
        endpoint: String,
        /// The frame.
        frame: Vec<u8>,
    },
    /// Send `frame` back through the ROUTER to the connection `routing_id`.
    Router {
        /// The ROUTER's routing id of the connection.
        routing_id: Vec<u8>,
        /// The frame.
        frame: Vec<u8>,
    },
    /// An authenticated message: its `from` is the id the roster gives its sender's key.
    Deliver(Envelope),
    /// A refusal (already counted), for the security log.
    Refused {
        /// Why: `unknown peer`, `replay`, `identity mismatch`.
        reason: &'static str,
        /// Who: a roster id, or a key not in the roster (its first hex digits).
        peer: String,
    },
}

/// One node's secure channel to all its peers.
pub struct Secure {
    key: KeyPair,
    roster: Roster,
    entropy: Box<dyn Entropy>,
    stats: Arc<Stats>,
    outbound: HashMap<String, Outbound>,
    inbound: HashMap<u64, Receiving>,
    pending: HashMap<u64, Responding>,
}

impl fmt::Debug for Secure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secure")
            .field("public", &self.key.public())
            .field("outbound", &self.outbound.len())
            .field("inbound", &self.inbound.len())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Secure {
    /// The channel of a node with static `key`, accepting the keys of `roster`.
    pub fn new(key: KeyPair, roster: Roster, entropy: Box<dyn Entropy>, stats: Arc<Stats>) -> Secure {
        Secure {
            key,
            roster,
            entropy,
            stats,
            outbound: HashMap::new(),
            inbound: HashMap::new(),
            pending: HashMap::new(),
        }
    }

    /// This node's public key.
    pub fn public(&self) -> PublicKey {
        self.key.public()
    }

    fn random_u64(&mut self) -> u64 {
        let mut b = [0; 8];
        self.entropy.fill(&mut b);
        u64::from_le_bytes(b)
    }

    fn handshake(&mut self, initiator: bool) -> Result<HandshakeState, snow::Error> {
        let mut seed = [0; KEY_LEN];
        self.entropy.fill(&mut seed);
        let params: NoiseParams = NOISE.parse()?;
        let builder = snow::Builder::with_resolver(params, Box::new(Drawn(seed)))
            .local_private_key(self.key.private())?
            .prologue(PROLOGUE)?;
        if initiator { builder.build_initiator() } else { builder.build_responder() }
    }

    /// Sends `frame` (an encoded peer frame) to `endpoint`: sealed on the session to
    /// it, or queued while its handshake runs (starting one if none does).
    pub fn seal(&mut self, endpoint: &str, frame: Vec<u8>, now: u64, out: &mut Vec<Out>) {
        let ob = self.outbound.entry(endpoint.to_string()).or_default();
        if let Some(session) = &mut ob.session {
            out.push(Out::Dealer { endpoint: endpoint.into(), frame: seal_data(session, &frame) });
        } else if ob.queue.len() >= MAX_QUEUED || ob.queued_bytes + frame.len() > MAX_QUEUED_BYTES {
            let n = bump(&self.stats.send_dropped);
            debug!(%endpoint, total = n, "send dropped: the queue waiting for a handshake is full");
        } else {
            ob.queued_bytes += frame.len();
            ob.queue.push_back(frame);
        }
        self.rekey_if_due(endpoint, now, out);
    }

    /// Starts a handshake to `endpoint` if it has no session, or one due for renewal,
    /// and none is running.
    fn rekey_if_due(&mut self, endpoint: &str, now: u64, out: &mut Vec<Out>) {
        let own = self.key.public();
        let Some(ob) = self.outbound.get(endpoint) else { return };
        let due = match &ob.session {
            None => true,
            Some(s) => {
                now.saturating_sub(s.since) >= REKEY_AFTER_MS || s.next_nonce >= REKEY_AFTER_NONCES || s.own != own
            }
        };
        if !due || ob.handshake.is_some() || now < ob.retry_at {
            return;
        }
        let token = self.random_u64();
        let mut state = match self.handshake(true) {
            Ok(state) => state,
            Err(e) => {
                warn!("cannot start a handshake: {e}");
                return;
            }
        };
        let mut msg = [0; SCRATCH];
        let n = match state.write_message(&[], &mut msg) {
            Ok(n) => n,
            Err(e) => {
                warn!("cannot start a handshake: {e}");
                return;
            }
        };
        let ob = self.outbound.get_mut(endpoint).expect("checked above");
        ob.handshake = Some(Initiating { state, token, own, since: now });
        out.push(Out::Dealer { endpoint: endpoint.into(), frame: frame::init(token, &msg[..n]) });
    }

    /// Handles a frame that arrived on the ROUTER from the connection `routing_id`.
    pub fn from_router(&mut self, routing_id: &[u8], bytes: &[u8], now: u64, out: &mut Vec<Out>) {
        match frame::parse(bytes) {
            Ok(Frame::Init { token, noise }) => self.answer(routing_id, token, noise, now, out),
            Ok(Frame::Fin { index, noise }) => self.finish(index, noise, now, out),
            Ok(Frame::Data { index, nonce, sealed }) => self.open(routing_id, index, nonce, sealed, now, out),
            Ok(Frame::Resp { .. } | Frame::Unknown { .. }) => self.malformed("a handshake answer on the listen socket"),
            Err(e) => self.refused(e),
        }
    }

    /// Handles a frame that arrived on this node's DEALER to `endpoint`: only
    /// handshake answers and `Unknown` come that way.
    pub fn from_dealer(&mut self, endpoint: &str, bytes: &[u8], now: u64, out: &mut Vec<Out>) {
        match frame::parse(bytes) {
            Ok(Frame::Resp { token, index, noise }) => self.complete(endpoint, token, index, noise, now, out),
            Ok(Frame::Unknown { index }) => {
                let Some(ob) = self.outbound.get_mut(endpoint) else { return };
                if let Some(session) = ob.session.take_if(|s| s.index == index) {
                    debug!(%endpoint, "the peer has no such session (restarted, or dropped our key); making a new one");
                    if now.saturating_sub(session.since) < RETRY_MS {
                        // Refused as soon as made: the peer does not take our key.
                        ob.retry_at = now + RETRY_MS;
                    }
                    self.rekey_if_due(endpoint, now, out);
                }
            }
            Ok(_) => self.malformed("a message for the listen socket on a sending socket"),
            Err(e) => self.refused(e),
        }
    }

    fn refused(&self, e: FrameError) {
        match e {
            FrameError::Plaintext => {
                let n = bump(&self.stats.plaintext_refused);
                warn!(total = n, "dropped a plaintext peer frame: this node requires authenticated peers");
            }
            FrameError::Oversized(size) => {
                let n = bump(&self.stats.oversized);
                warn!(size, total = n, "dropped an oversized peer frame");
            }
            e => {
                let n = bump(&self.stats.malformed);
                warn!(total = n, "dropped a malformed peer frame: {e}");
            }
        }
    }

    fn malformed(&self, what: &str) {
        let n = bump(&self.stats.malformed);
        warn!(total = n, "dropped {what}");
    }

    fn bad_handshake(&self, why: &str) {
        let n = bump(&self.stats.bad_handshake);
        warn!(total = n, "handshake failed: {why}");
    }

    fn unknown_peer(&self, key: &PublicKey, out: &mut Vec<Out>) {
        let n = bump(&self.stats.unknown_peer);
        warn!(%key, total = n, "handshake refused: the peer's key is not in the roster");
        let peer = format!("key:{}", &key.to_string()[..16]);
        out.push(Out::Refused { reason: "unknown peer", peer });
    }

    /// Responder, message 1 → 2.
    fn answer(&mut self, routing_id: &[u8], token: u64, noise: &[u8], now: u64, out: &mut Vec<Out>) {
        let mut state = match self.handshake(false) {
            Ok(state) => state,
            Err(e) => {
                warn!("cannot answer a handshake: {e}");
                return;
            }
        };
        let mut msg = [0; SCRATCH];
        let n = match state.read_message(noise, &mut [0; SCRATCH]).and_then(|_| state.write_message(&[], &mut msg)) {
            Ok(n) => n,
            Err(e) => return self.bad_handshake(&e.to_string()),
        };
        if self.pending.len() >= MAX_PENDING
            && let Some(&oldest) = self.pending.iter().min_by_key(|(_, p)| p.since).map(|(i, _)| i)
        {
            self.pending.remove(&oldest);
            let n = bump(&self.stats.handshake_evicted);
            debug!(total = n, "dropped the oldest unanswered handshake for a new one");
        }
        let index = self.fresh_index();
        self.pending.insert(index, Responding { state, since: now });
        out.push(Out::Router { routing_id: routing_id.to_vec(), frame: frame::resp(token, index, &msg[..n]) });
    }

    fn fresh_index(&mut self) -> u64 {
        loop {
            let index = self.random_u64();
            if index != 0 && !self.pending.contains_key(&index) && !self.inbound.contains_key(&index) {
                return index;
            }
        }
    }

    /// Responder, message 3: the session is made.
    fn finish(&mut self, index: u64, noise: &[u8], now: u64, out: &mut Vec<Out>) {
        let Some(Responding { mut state, .. }) = self.pending.remove(&index) else {
            return self.bad_handshake("a Fin for no handshake of this node");
        };
        if let Err(e) = state.read_message(noise, &mut [0; SCRATCH]) {
            return self.bad_handshake(&e.to_string());
        }
        let Some(remote) = state.get_remote_static().and_then(PublicKey::from_slice) else {
            return self.bad_handshake("no static key");
        };
        let Some(peer) = self.roster.id_of(&remote).map(String::from) else {
            return self.unknown_peer(&remote, out);
        };
        let transport = match state.into_stateless_transport_mode() {
            Ok(t) => t,
            Err(e) => return self.bad_handshake(&e.to_string()),
        };
        self.make_room(&remote);
        let session =
            Receiving { transport, window: ReplayWindow::default(), peer, remote, since: now, last_used: now };
        debug!(peer = %session.peer, "receiving session made");
        self.inbound.insert(index, session);
        bump(&self.stats.handshakes);
    }

    /// Drops the oldest receiving sessions so one more of `remote` fits the caps.
    fn make_room(&mut self, remote: &PublicKey) {
        let oldest = |sessions: &HashMap<u64, Receiving>, of: Option<&PublicKey>| {
            let of_key = sessions.iter().filter(|(_, s)| of.is_none_or(|k| &s.remote == k));
            of_key.min_by_key(|(_, s)| (s.last_used, s.since)).map(|(i, _)| *i)
        };
        while self.inbound.values().filter(|s| &s.remote == remote).count() >= MAX_SESSIONS_PER_KEY {
            let Some(index) = oldest(&self.inbound, Some(remote)) else { break };
            self.inbound.remove(&index);
        }
        while self.inbound.len() >= MAX_SESSIONS {
            let Some(index) = oldest(&self.inbound, None) else { break };
            self.inbound.remove(&index);
        }
    }

    /// Initiator, message 2 → 3: the session is made and the queue goes out on it.
    fn complete(&mut self, endpoint: &str, token: u64, index: u64, noise: &[u8], now: u64, out: &mut Vec<Out>) {
        let Some(ob) = self.outbound.get_mut(endpoint) else {
            return self.bad_handshake("an answer from an endpoint this node greets no more");
        };
        let Some(Initiating { mut state, own, .. }) = ob.handshake.take_if(|h| h.token == token) else {
            return self.bad_handshake("an answer to no handshake of this node");
        };
        let mut msg = [0; SCRATCH];
        let remote = state
            .read_message(noise, &mut [0; SCRATCH])
            .map(|_| state.get_remote_static().and_then(PublicKey::from_slice));
        let (peer, remote) = match remote {
            Ok(Some(remote)) => match self.roster.id_of(&remote) {
                Some(peer) => (peer.to_string(), remote),
                None => {
                    ob.failed(now, &self.stats);
                    return self.unknown_peer(&remote, out);
                }
            },
            Ok(None) | Err(_) => {
                ob.failed(now, &self.stats);
                return self.bad_handshake("the answer did not authenticate");
            }
        };
        let written = state.write_message(&[], &mut msg);
        let transport = match written.and_then(|n| state.into_stateless_transport_mode().map(|t| (t, n))) {
            Ok(t) => t,
            Err(e) => {
                ob.failed(now, &self.stats);
                return self.bad_handshake(&e.to_string());
            }
        };
        let (transport, n) = transport;
        out.push(Out::Dealer { endpoint: endpoint.into(), frame: frame::fin(index, &msg[..n]) });
        debug!(%peer, %endpoint, "sending session made");
        let mut session = Sending { transport, index, next_nonce: 0, peer, remote, own, since: now };
        for queued in ob.queue.drain(..) {
            out.push(Out::Dealer { endpoint: endpoint.into(), frame: seal_data(&mut session, &queued) });
        }
        ob.queued_bytes = 0;
        ob.session = Some(session);
        bump(&self.stats.handshakes);
        self.count_stale();
    }

    /// A `Data` frame: replay window, decryption, then the sender's identity.
    fn open(&mut self, routing_id: &[u8], index: u64, nonce: u64, sealed: &[u8], now: u64, out: &mut Vec<Out>) {
        let Some(session) = self.inbound.get_mut(&index) else {
            let n = bump(&self.stats.unknown_session);
            debug!(total = n, "a frame for no session of this node; telling the sender");
            out.push(Out::Router { routing_id: routing_id.to_vec(), frame: frame::unknown(index) });
            return;
        };
        if !session.window.fresh(nonce) {
            let n = bump(&self.stats.replay);
            warn!(peer = %session.peer, total = n, "dropped a replayed or too old frame");
            return out.push(Out::Refused { reason: "replay", peer: session.peer.clone() });
        }
        let Some(plain) = open_data(&session.transport, nonce, sealed) else {
            let n = bump(&self.stats.bad_mac);
            warn!(total = n, "dropped a frame that failed authentication");
            return;
        };
        session.window.accept(nonce);
        session.last_used = now;
        let peer = session.peer.clone();
        match wire::decode(&plain) {
            Ok(env) if env.from == peer => out.push(Out::Deliver(env)),
            Ok(env) => {
                let n = bump(&self.stats.identity_mismatch);
                warn!(claimed = %env.from, authenticated = %peer, total = n, "dropped a message whose sender claims another id");
                out.push(Out::Refused { reason: "identity mismatch", peer });
            }
            Err(DecodeError::Oversized(size)) => {
                let n = bump(&self.stats.oversized);
                warn!(size, total = n, "dropped an oversized peer frame");
            }
            Err(e) => {
                let n = bump(&self.stats.malformed);
                warn!(total = n, "dropped a malformed peer frame: {e}");
            }
        }
    }

    /// Advances time: expires handshakes and idle sessions, renews old sessions.
    pub fn tick(&mut self, now: u64, out: &mut Vec<Out>) {
        let expired = |since: u64| now.saturating_sub(since) >= HANDSHAKE_TIMEOUT_MS;
        self.pending.retain(|_, p| !expired(p.since));
        self.inbound.retain(|_, s| now.saturating_sub(s.last_used) < SESSION_IDLE_MS);
        let mut renew = Vec::new();
        for (endpoint, ob) in &mut self.outbound {
            if ob.handshake.as_ref().is_some_and(|h| expired(h.since)) {
                ob.handshake = None;
                if ob.session.is_none() {
                    let dropped = ob.drop_queue(&self.stats);
                    if dropped > 0 {
                        debug!(%endpoint, dropped, "no handshake with the peer; dropped what waited for it");
                    }
                }
            }
            if ob.session.is_some() || !ob.queue.is_empty() {
                renew.push(endpoint.clone());
            }
        }
        for endpoint in renew {
            self.rekey_if_due(&endpoint, now, out);
        }
        self.count_stale();
    }

    /// Uses `key` for new sessions from now on; the sessions made with the old one are
    /// renewed at the next tick (and used until then).
    pub fn set_key(&mut self, key: KeyPair) {
        self.key = key;
        self.count_stale();
    }

    /// Accepts the keys of `roster` from now on: sessions and handshakes with a key it
    /// no longer gives the same id are dropped at once.
    pub fn set_roster(&mut self, roster: Roster) {
        let keeps = |key: &PublicKey, peer: &str| roster.id_of(key) == Some(peer);
        let before = self.inbound.len();
        self.inbound.retain(|_, s| keeps(&s.remote, &s.peer));
        let mut dropped = before - self.inbound.len();
        for ob in self.outbound.values_mut() {
            if ob.session.as_ref().is_some_and(|s| !keeps(&s.remote, &s.peer)) {
                ob.session = None;
                dropped += 1;
            }
        }
        if dropped > 0 {
            warn!(sessions = dropped, "dropped the sessions of keys the roster no longer lists");
        }
        self.roster = roster;
    }

    /// Forgets everything about sending to `endpoint` (its socket was closed).
    pub fn forget(&mut self, endpoint: &str) {
        self.outbound.remove(endpoint);
    }

    /// Sending sessions still made with a key this node no longer has.
    fn count_stale(&self) {
        let own = self.key.public();
        let stale = self.outbound.values().filter(|ob| ob.session.as_ref().is_some_and(|s| s.own != own)).count();
        self.stats.stale_sessions.store(stale as u64, Ordering::Relaxed);
    }

    /// Whether a handshake this node started with `endpoint` waits for its answer.
    pub fn awaits_answer(&self, endpoint: &str) -> bool {
        self.outbound.get(endpoint).is_some_and(|ob| ob.handshake.is_some())
    }

    /// The id authenticated on the sending session to `endpoint`, if one is made.
    pub fn peer_at(&self, endpoint: &str) -> Option<&str> {
        self.outbound.get(endpoint)?.session.as_ref().map(|s| s.peer.as_str())
    }
}
