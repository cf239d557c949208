//! The secure channel's frames (`EN`) before they are authenticated: the target, and
//! its seeds (a real handshake and a sealed message between two channels).

use std::cell::RefCell;

use crate::peering::secure::{Entropy, KeyPair, Out, Roster, Secure};

/// Deterministic randomness: the same input takes the same path.
struct Counter(u64);

impl Entropy for Counter {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            *b = (self.0 >> 56) as u8;
        }
    }
}

/// The fuzzed node (`self`) and the one member its roster names (`peer`).
fn keys() -> (KeyPair, KeyPair) {
    (KeyPair::from_private([7; 32]), KeyPair::from_private([9; 32]))
}

fn channel(own: KeyPair, seed: u64) -> Secure {
    let (me, peer) = keys();
    let roster = Roster::from_pairs([("self", me.public()), ("peer", peer.public())]).expect("two distinct keys");
    Secure::new(own, roster, Box::new(Counter(seed)), Default::default())
}

thread_local! {
    static NODE: RefCell<Secure> = RefCell::new(channel(keys().0, 1));
}

/// A secure-channel frame, as a keyed node's listen socket (and, for handshake
/// answers, its DEALERs) receives it from anyone. Nobody without a key of the roster
/// completes a handshake or forges a sealed frame, so no input may come out as an
/// authenticated message. The channel is kept across inputs, so its bounds (pending
/// handshakes, sessions) are exercised too.
pub fn peer_frame_sealed(data: &[u8]) {
    NODE.with(|node| {
        let mut node = node.borrow_mut();
        let mut out = Vec::new();
        node.from_router(b"conn", data, 1, &mut out);
        node.from_dealer("tcp://127.0.0.1:1", data, 1, &mut out);
        node.tick(2, &mut out);
        assert!(!out.iter().any(|o| matches!(o, Out::Deliver(_))), "an unauthenticated frame was delivered");
    });
}

/// Every frame of a handshake between `peer` and `self` and of one message sealed on
/// it: `Init`, `Resp`, `Fin`, `Data`.
pub(super) fn frames() -> Vec<Vec<u8>> {
    let (me, peer) = keys();
    let (mut sender, mut receiver) = (channel(peer, 2), channel(me, 3));
    let mut frames = Vec::new();
    let mut out = Vec::new();
    sender.seal("tcp://self", crate::wire::encode(&super::seeds::heartbeat("peer")), 0, &mut out);
    while !out.is_empty() {
        let mut next = Vec::new();
        for o in out {
            match o {
                Out::Dealer { frame, .. } => {
                    receiver.from_router(b"conn", &frame, 0, &mut next);
                    frames.push(frame);
                }
                Out::Router { frame, .. } => {
                    sender.from_dealer("tcp://self", &frame, 0, &mut next);
                    frames.push(frame);
                }
                Out::Deliver(_) | Out::Refused { .. } => {}
            }
        }
        out = next;
    }
    frames
}
