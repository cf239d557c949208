//! The state of sessions and handshakes, sealing and opening `Data` frames, and the
//! source of handshakes' ephemeral keys.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use snow::{HandshakeState, StatelessTransportState};

use super::frame::{self, CHUNK_DATA, CHUNK_SEALED, ReplayWindow};
use super::{KEY_LEN, PublicKey, RETRY_MS};
use crate::peering::stats::Stats;

/// A sending session (this node initiated it).
pub(super) struct Sending {
    pub(super) transport: StatelessTransportState,
    /// The receiver's index of the session.
    pub(super) index: u64,
    pub(super) next_nonce: u64,
    pub(super) peer: String,
    pub(super) remote: PublicKey,
    /// This node's public key when the session was made.
    pub(super) own: PublicKey,
    pub(super) since: u64,
}

/// A handshake this node initiated.
pub(super) struct Initiating {
    pub(super) state: HandshakeState,
    pub(super) token: u64,
    pub(super) own: PublicKey,
    pub(super) since: u64,
}

#[derive(Default)]
pub(super) struct Outbound {
    pub(super) session: Option<Sending>,
    pub(super) handshake: Option<Initiating>,
    pub(super) queue: VecDeque<Vec<u8>>,
    pub(super) queued_bytes: usize,
    /// No handshake starts before this time (after one failed).
    pub(super) retry_at: u64,
}

impl Outbound {
    /// Drops what waits for a session (counted as dropped sends).
    pub(super) fn drop_queue(&mut self, stats: &Stats) -> u64 {
        let dropped = self.queue.len() as u64;
        self.queue.clear();
        self.queued_bytes = 0;
        stats.send_dropped.fetch_add(dropped, Ordering::Relaxed);
        dropped
    }

    /// A handshake failed: what waited for it is dropped, and the next one waits.
    pub(super) fn failed(&mut self, now: u64, stats: &Stats) {
        self.handshake = None;
        self.retry_at = now + RETRY_MS;
        if self.session.is_none() {
            self.drop_queue(stats);
        }
    }
}

/// A receiving session (the peer initiated it).
pub(super) struct Receiving {
    pub(super) transport: StatelessTransportState,
    pub(super) window: ReplayWindow,
    pub(super) peer: String,
    pub(super) remote: PublicKey,
    pub(super) since: u64,
    pub(super) last_used: u64,
}

/// A handshake this node answered, awaiting its `Fin`.
pub(super) struct Responding {
    pub(super) state: HandshakeState,
    pub(super) since: u64,
}

/// snow's primitives, with the ephemeral key drawn from this node's [`Entropy`].
pub(super) struct Drawn(pub(super) [u8; KEY_LEN]);

pub(super) struct DrawnBytes([u8; KEY_LEN], usize);

impl Random for DrawnBytes {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        let end = self.1 + dest.len();
        let bytes = self.0.get(self.1..end).ok_or(snow::Error::Rng)?;
        dest.copy_from_slice(bytes);
        self.1 = end;
        Ok(())
    }
}

impl CryptoResolver for Drawn {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(DrawnBytes(self.0, 0)))
    }
    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        DefaultResolver.resolve_dh(choice)
    }
    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }
    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

/// Seals `plain` on `session` as a `Data` frame, one nonce per chunk.
pub(super) fn seal_data(session: &mut Sending, plain: &[u8]) -> Vec<u8> {
    let k = frame::chunks(plain.len());
    let first = session.next_nonce;
    let mut out = frame::data_header(session.index, first, plain.len());
    // Buffers as long as the message needs, not a whole Noise message: most frames are
    // small, and zeroing 64 KiB for each cost more than the cipher.
    let mut sealed = vec![0; plain.len().min(CHUNK_DATA) + CHUNK_SEALED - CHUNK_DATA];
    let pieces: Vec<&[u8]> = if plain.is_empty() { vec![&[]] } else { plain.chunks(CHUNK_DATA).collect() };
    for (i, data) in pieces.into_iter().enumerate() {
        let chunk = frame::chunk_plain(i, k, data);
        // A chunk is at most a Noise message long by construction, and the nonce is
        // renewed long before it could run out: sealing cannot fail.
        let n = session.transport.write_message(first + i as u64, &chunk, &mut sealed).expect("a chunk fits a message");
        out.extend_from_slice(&sealed[..n]);
    }
    session.next_nonce = first + k as u64;
    out
}

/// Opens the chunks of a `Data` frame; `None` if any fails authentication or says it
/// belongs elsewhere.
pub(super) fn open_data(transport: &StatelessTransportState, first: u64, sealed: &[u8]) -> Option<Vec<u8>> {
    let k = sealed.len().div_ceil(CHUNK_SEALED);
    let mut plain = Vec::with_capacity(sealed.len());
    let mut opened = vec![0; sealed.len().min(CHUNK_SEALED)];
    for (i, chunk) in sealed.chunks(CHUNK_SEALED).enumerate() {
        let nonce = first.checked_add(i as u64)?;
        let n = transport.read_message(nonce, chunk, &mut opened).ok()?;
        plain.extend_from_slice(frame::chunk_data(&opened[..n], i, k)?);
    }
    Some(plain)
}
