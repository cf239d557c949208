//! The secure channel between simulated nodes: frames carried by hand, time made up,
//! randomness seeded.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::*;
use crate::peering::proto::membership::MemberMsg;
use crate::wire::Body;

/// splitmix64: deterministic bytes for tests.
struct Seeded(u64);

impl Entropy for Seeded {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            *b = (z ^ (z >> 31)) as u8;
        }
    }
}

fn key(seed: u64) -> KeyPair {
    KeyPair::generate(&mut Seeded(seed))
}

/// A node of the simulation: its channel, counters and endpoint.
struct Sim {
    ch: Secure,
    stats: Arc<Stats>,
    ep: String,
}

fn node(id: &str, k: &KeyPair, roster: &Roster, seed: u64) -> Sim {
    let stats = Arc::new(Stats::default());
    let ch = Secure::new(k.clone(), roster.clone(), Box::new(Seeded(seed)), stats.clone());
    Sim { ch, stats, ep: format!("ep-{id}") }
}

fn get(c: &std::sync::atomic::AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

fn heartbeat(from: &str) -> Vec<u8> {
    wire::encode(&Envelope { from: from.into(), clock: 1, body: Body::Member(MemberMsg::Heartbeat) })
}

/// Carries every frame between `a` (sending) and `b` (receiving) until none is left;
/// returns what `b` delivered and every `Data` frame that went from `a` to `b`.
fn pump(a: &mut Sim, b: &mut Sim, mut out: Vec<Out>, now: u64) -> (Vec<Envelope>, Vec<Vec<u8>>) {
    let (mut delivered, mut data) = (Vec::new(), Vec::new());
    while !out.is_empty() {
        let mut next = Vec::new();
        for o in out {
            match o {
                Out::Dealer { endpoint, frame } => {
                    assert_eq!(endpoint, b.ep);
                    if frame[3] == 4 {
                        data.push(frame.clone());
                    }
                    b.ch.from_router(b"conn-a", &frame, now, &mut next);
                }
                Out::Router { routing_id, frame } => {
                    assert_eq!(routing_id, b"conn-a");
                    a.ch.from_dealer(&b.ep, &frame, now, &mut next);
                }
                Out::Deliver(env) => delivered.push(env),
                // Counted by the channel; the counters are what the tests check.
                Out::Refused { .. } => {}
            }
        }
        out = next;
    }
    (delivered, data)
}

fn send(a: &mut Sim, b: &mut Sim, frame: Vec<u8>, now: u64) -> (Vec<Envelope>, Vec<Vec<u8>>) {
    let mut out = Vec::new();
    a.ch.seal(&b.ep.clone(), frame, now, &mut out);
    pump(a, b, out, now)
}

fn pair() -> (Sim, Sim, KeyPair, KeyPair) {
    let (ka, kb) = (key(1), key(2));
    let roster = Roster::from_pairs([("a", ka.public()), ("b", kb.public())]).unwrap();
    (node("a", &ka, &roster, 10), node("b", &kb, &roster, 20), ka, kb)
}

#[test]
fn a_handshake_then_messages_both_ways_of_one_session() {
    let (mut a, mut b, ..) = pair();
    let (got, data) = send(&mut a, &mut b, heartbeat("a"), 0);
    assert_eq!(
        got.len(),
        1,
        "the queued frame went out once the session was made: {:?} {:?}",
        a.stats.snapshot(),
        b.stats.snapshot()
    );
    assert_eq!(got[0].from, "a");
    assert_eq!(data.len(), 1);
    assert_eq!((get(&a.stats.handshakes), get(&b.stats.handshakes)), (1, 1));
    assert_eq!(a.ch.peer_at("ep-b"), Some("b"), "the sender authenticated the receiver too");
    for _ in 0..5 {
        let (got, _) = send(&mut a, &mut b, heartbeat("a"), 10);
        assert_eq!(got.len(), 1);
    }
    assert_eq!(get(&b.stats.handshakes), 1, "one session carries them all");
    // A frame larger than a Noise message is cut into chunks and put together again.
    let big = Envelope {
        from: "a".into(),
        clock: 2,
        body: Body::ModuleData { tenant: "t".into(), hash: [7; 32], bytes: (0..300_000).map(|i| i as u8).collect() },
    };
    let (got, data) = send(&mut a, &mut b, wire::encode(&big), 20);
    assert_eq!(got, [big]);
    assert!(data[0].len() > 4 * frame::CHUNK_SEALED);
}

#[test]
fn a_replayed_frame_is_refused() {
    let (mut a, mut b, ..) = pair();
    let (_, data) = send(&mut a, &mut b, heartbeat("a"), 0);
    let mut out = Vec::new();
    b.ch.from_router(b"conn-x", &data[0], 5, &mut out);
    assert!(matches!(&out[..], [Out::Refused { reason: "replay", peer }] if peer == "a"), "not delivered: {out:?}");
    out.clear();
    assert_eq!(get(&b.stats.replay), 1);
    // Older than the window: refused too.
    let (_, first) = send(&mut a, &mut b, heartbeat("a"), 6);
    for _ in 0..REPLAY_WINDOW + 1 {
        send(&mut a, &mut b, heartbeat("a"), 7);
    }
    b.ch.from_router(b"conn-x", &first[0], 8, &mut out);
    assert!(matches!(&out[..], [Out::Refused { reason: "replay", .. }]), "not delivered: {out:?}");
    assert_eq!(get(&b.stats.replay), 2);
}

#[test]
fn a_tampered_frame_is_refused() {
    let (mut a, mut b, ..) = pair();
    send(&mut a, &mut b, heartbeat("a"), 0);
    let mut out = Vec::new();
    a.ch.seal("ep-b", heartbeat("a"), 1, &mut out);
    let Out::Dealer { frame, .. } = &mut out[0] else { panic!("{out:?}") };
    let last = frame.len() - 1;
    frame[last] ^= 1;
    let (got, _) = pump(&mut a, &mut b, out, 1);
    assert!(got.is_empty());
    assert_eq!(get(&b.stats.bad_mac), 1);
    // The nonce of the forgery was not used up: the genuine frame still gets through.
    let (got, _) = send(&mut a, &mut b, heartbeat("a"), 2);
    assert_eq!(got.len(), 1);
}

#[test]
fn a_key_not_in_the_roster_is_refused_on_either_side() {
    let (ka, kb, kx) = (key(1), key(2), key(3));
    let roster = Roster::from_pairs([("a", ka.public()), ("b", kb.public())]).unwrap();
    // The stranger initiates: the receiver refuses it at the last message.
    let mut x = node("x", &kx, &roster, 30);
    let mut b = node("b", &kb, &roster, 20);
    let (got, _) = send(&mut x, &mut b, heartbeat("x"), 0);
    assert!(got.is_empty());
    assert_eq!(get(&b.stats.unknown_peer), 1);
    assert_eq!(get(&b.stats.handshakes), 0);
    // Its data (queued during the handshake) names no session: it is told so, and does
    // not try again at once.
    assert_eq!(get(&b.stats.unknown_session), 1);
    let (got, _) = send(&mut x, &mut b, heartbeat("x"), 1);
    assert!(got.is_empty());
    assert_eq!((get(&b.stats.unknown_session), get(&b.stats.unknown_peer)), (1, 1));
    // A stranger answering: the initiator refuses it and sends it nothing.
    let mut a = node("a", &ka, &roster, 10);
    let mut y = node("y", &kx, &roster, 40);
    y.ep = "ep-b".into();
    let (got, data) = send(&mut a, &mut y, heartbeat("a"), 0);
    assert!(got.is_empty() && data.is_empty(), "no data reached a stranger");
    assert_eq!(get(&a.stats.unknown_peer), 1);
    assert_eq!(get(&a.stats.send_dropped), 1, "what waited for the handshake is dropped");
}

#[test]
fn a_member_claiming_another_id_is_dropped() {
    let (ka, kb, kc) = (key(1), key(2), key(3));
    let roster = Roster::from_pairs([("a", ka.public()), ("b", kb.public()), ("c", kc.public())]).unwrap();
    let mut c = node("c", &kc, &roster, 30);
    let mut b = node("b", &kb, &roster, 20);
    let (got, _) = send(&mut c, &mut b, heartbeat("a"), 0);
    assert!(got.is_empty());
    assert_eq!(get(&b.stats.identity_mismatch), 1);
    let (got, _) = send(&mut c, &mut b, heartbeat("c"), 1);
    assert_eq!(got.len(), 1, "under its own id it is heard");
}

#[test]
fn a_key_removed_from_the_roster_drops_its_sessions_at_once() {
    let (mut a, mut b, ka, kb) = pair();
    send(&mut a, &mut b, heartbeat("a"), 0);
    assert_eq!(b.ch.inbound.len(), 1);
    let without_a = Roster::from_pairs([("b", kb.public())]).unwrap();
    b.ch.set_roster(without_a);
    assert!(b.ch.inbound.is_empty());
    let t = 5 * RETRY_MS;
    let (got, _) = send(&mut a, &mut b, heartbeat("a"), t);
    assert!(got.is_empty());
    assert_eq!(get(&b.stats.unknown_session), 1);
    assert_eq!(get(&b.stats.unknown_peer), 1, "the sender's new handshake is refused");
    // Put back, a's key is accepted again: the first frame finds the session refused,
    // the next one goes out on a new session.
    b.ch.set_roster(Roster::from_pairs([("a", ka.public()), ("b", kb.public())]).unwrap());
    let t = t + 5 * RETRY_MS;
    assert!(send(&mut a, &mut b, heartbeat("a"), t).0.is_empty());
    assert_eq!(send(&mut a, &mut b, heartbeat("a"), t).0.len(), 1);
    // The receiver's own sending session to a removed key goes too.
    let mut out = Vec::new();
    b.ch.seal("ep-a", heartbeat("b"), t, &mut out);
    let (got, _) = pump(&mut b, &mut a, out, t);
    assert_eq!(got.len(), 1);
    b.ch.set_roster(Roster::from_pairs([("b", kb.public())]).unwrap());
    assert_eq!(b.ch.peer_at("ep-a"), None);
}

#[test]
fn two_keys_of_one_id_are_both_accepted_and_a_new_key_takes_over() {
    let (k1, k2, kb) = (key(1), key(5), key(2));
    let roster = Roster::from_pairs([("a", k1.public()), ("a", k2.public()), ("b", kb.public())]).unwrap();
    let mut a1 = node("a", &k1, &roster, 10);
    let mut a2 = node("a", &k2, &roster, 11);
    let mut b = node("b", &kb, &roster, 20);
    assert_eq!(send(&mut a1, &mut b, heartbeat("a"), 0).0.len(), 1);
    assert_eq!(send(&mut a2, &mut b, heartbeat("a"), 0).0.len(), 1);
    // a1 switches to the new key: its session is stale until renewed at the next tick.
    a1.ch.set_key(k2.clone());
    assert_eq!(get(&a1.stats.stale_sessions), 1);
    let mut out = Vec::new();
    a1.ch.tick(1, &mut out);
    assert_eq!(out.len(), 1, "a handshake with the new key");
    pump(&mut a1, &mut b, out, 1);
    assert_eq!(get(&a1.stats.stale_sessions), 0);
    assert_eq!(a1.ch.outbound["ep-b"].session.as_ref().unwrap().own, k2.public());
    // Then the old key leaves the roster: nothing a1 sends is lost.
    b.ch.set_roster(Roster::from_pairs([("a", k2.public()), ("b", kb.public())]).unwrap());
    assert_eq!(send(&mut a1, &mut b, heartbeat("a"), 2).0.len(), 1);
    assert_eq!(get(&b.stats.unknown_session), 0);
}

#[test]
fn sessions_are_renewed_and_a_restarted_peer_is_reached_again() {
    let (mut a, mut b, _, kb) = pair();
    send(&mut a, &mut b, heartbeat("a"), 0);
    let mut out = Vec::new();
    a.ch.tick(REKEY_AFTER_MS, &mut out);
    assert_eq!(out.len(), 1, "an old session is renewed");
    pump(&mut a, &mut b, out, REKEY_AFTER_MS);
    assert_eq!(get(&b.stats.handshakes), 2);
    // b restarts with the same key: a's first frame is answered with Unknown, and a
    // makes a new session for the next ones.
    let roster = b.ch.roster.clone();
    b = node("b", &kb, &roster, 21);
    let now = REKEY_AFTER_MS + 10 * RETRY_MS;
    assert!(send(&mut a, &mut b, heartbeat("a"), now).0.is_empty());
    assert_eq!(send(&mut a, &mut b, heartbeat("a"), now).0.len(), 1);
    // Idle receiving sessions expire.
    b.ch.tick(now + SESSION_IDLE_MS, &mut Vec::new());
    assert!(b.ch.inbound.is_empty());
}

#[test]
fn pending_handshakes_are_bounded_and_expire() {
    let (ka, kb) = (key(1), key(2));
    let roster = Roster::from_pairs([("a", ka.public()), ("b", kb.public())]).unwrap();
    let mut b = node("b", &kb, &roster, 20);
    for i in 0..MAX_PENDING + 100 {
        // A stranger sprays `Init`s: each from a fresh initiator.
        let mut x = node("x", &key(100 + i as u64), &roster, 1000 + i as u64);
        let mut out = Vec::new();
        x.ch.seal("ep-b", heartbeat("x"), i as u64, &mut out);
        let Out::Dealer { frame, .. } = &out[0] else { panic!() };
        b.ch.from_router(b"conn-x", frame, i as u64, &mut Vec::new());
    }
    assert_eq!(b.ch.pending.len(), MAX_PENDING);
    assert_eq!(get(&b.stats.handshake_evicted), 100);
    b.ch.tick(MAX_PENDING as u64 + 100 + HANDSHAKE_TIMEOUT_MS, &mut Vec::new());
    assert!(b.ch.pending.is_empty(), "unanswered handshakes expire");
}

#[test]
fn the_queue_waiting_for_a_handshake_is_bounded() {
    let (mut a, mut b, ..) = pair();
    let mut out = Vec::new();
    for _ in 0..MAX_QUEUED + 5 {
        a.ch.seal("ep-b", heartbeat("a"), 0, &mut out);
    }
    assert_eq!(out.len(), 1, "one handshake");
    assert_eq!(get(&a.stats.send_dropped), 5);
    let (got, _) = pump(&mut a, &mut b, out, 0);
    assert_eq!(got.len(), MAX_QUEUED);
}

#[test]
fn garbage_and_plaintext_are_counted_not_panics() {
    let (_, mut b, ..) = pair();
    let mut out = Vec::new();
    b.ch.from_router(b"c", &heartbeat("a"), 0, &mut out);
    assert_eq!(get(&b.stats.plaintext_refused), 1);
    let mut rng = Seeded(9);
    for len in 0..200 {
        let mut junk = vec![0; len];
        rng.fill(&mut junk);
        if len >= 4 {
            junk[..3].copy_from_slice(b"EN\x01");
            junk[3] = (len % 6) as u8;
        }
        b.ch.from_router(b"c", &junk, 0, &mut out);
        b.ch.from_dealer("ep-a", &junk, 0, &mut out);
    }
    assert!(out.iter().all(|o| matches!(o, Out::Router { .. })), "at most Resp or Unknown answers: {out:?}");
}

#[test]
fn key_files_and_rosters_parse_with_errors_naming_the_line() {
    let k = key(1);
    assert_eq!(KeyPair::parse(&k.to_file_text(), "k").unwrap(), k);
    let other = key(2);
    let mixed = format!("private {}\npublic {}\n", hex::encode(k.private()), other.public());
    let e = KeyPair::parse(&mixed, "node.key").unwrap_err().to_string();
    assert!(e.starts_with("node.key, line 2:"), "{e}");
    let text = format!("# roster\n\na {}\na {}\n  b   {}  \n", k.public(), other.public(), key(3).public());
    let roster = Roster::parse(&text, "r").unwrap();
    assert_eq!(roster.len(), 3);
    assert_eq!(roster.id_of(&other.public()), Some("a"));
    for (bad, line) in [
        (format!("a {}\nb {}\n", k.public(), k.public()), 2),
        ("a\n".to_string(), 1),
        (format!("# x\na {}x\n", k.public()), 2),
        (format!("a {} extra\n", k.public()), 1),
    ] {
        let e = Roster::parse(&bad, "roster.txt").unwrap_err().to_string();
        assert!(e.starts_with(&format!("roster.txt, line {line}:")), "{bad:?}: {e}");
    }
    assert!(Roster::parse("# nothing\n", "r").is_err());
}
