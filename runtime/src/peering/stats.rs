//! Counters of what a node's peering received, sent and dropped.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of what the node received and dropped.
#[derive(Debug, Default)]
pub struct Stats {
    /// Peer frames received.
    pub frames: AtomicU64,
    /// Peer frames that were not valid estate frames (bad magic, version, body).
    pub malformed: AtomicU64,
    /// Peer frames larger than the frame limit.
    pub oversized: AtomicU64,
    /// Well-formed messages dropped: from non-members, replies to no outstanding read,
    /// module bytes nobody asked for.
    pub rejected: AtomicU64,
    /// Sends dropped because a peer's queue was full.
    pub send_dropped: AtomicU64,
    /// Control requests that could not be decoded.
    pub control_malformed: AtomicU64,
    /// Global reads served for peers.
    pub served: AtomicU64,
    /// Bytes of peer frames received.
    pub bytes_in: AtomicU64,
    /// Bytes of peer frames sent.
    pub bytes_out: AtomicU64,
    /// Items this node handed to members when it left.
    pub handoff_out: AtomicU64,
    /// Items leaving members handed to this node.
    pub handoff_in: AtomicU64,
    /// Hand-off batches this node sent again because no acknowledgement came.
    pub handoff_resent: AtomicU64,
    /// Hand-off batches received again (acknowledged again, not stored twice).
    pub handoff_duplicates: AtomicU64,
    /// Peer messages refused for naming a tenant this node does not have (no map is
    /// created for it).
    pub unknown_tenant: AtomicU64,
    /// Module requests refused: no read of this node in flight pushes the module down
    /// to the asker for that tenant.
    pub module_refused: AtomicU64,
    /// Control requests without a credential, or with one the node does not accept.
    pub control_unauthenticated: AtomicU64,
    /// Control requests a principal may not make (another tenant, the admin's).
    pub control_forbidden: AtomicU64,
    /// Refusals by tenant and quota (`reducers`, `modules`, `module_bytes`, `reads`,
    /// `wasm_jobs`; the store counts `keys` and `bytes` itself).
    quota_refused: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// Secure peering: handshakes completed (either side).
    pub handshakes: AtomicU64,
    /// Secure peering: handshakes refused because the peer's key is not in the roster.
    pub unknown_peer: AtomicU64,
    /// Secure peering: handshake messages that failed (malformed, not authentic, or
    /// answering no handshake of this node).
    pub bad_handshake: AtomicU64,
    /// Secure peering: unanswered handshakes dropped, the oldest first, to make room.
    pub handshake_evicted: AtomicU64,
    /// Secure peering: frames that failed authentication.
    pub bad_mac: AtomicU64,
    /// Secure peering: frames refused as replayed or too old for the replay window.
    pub replay: AtomicU64,
    /// Secure peering: authenticated messages whose `from` is not the sender's id in
    /// the roster.
    pub identity_mismatch: AtomicU64,
    /// Secure peering: plaintext peer frames refused.
    pub plaintext_refused: AtomicU64,
    /// Secure peering: frames for a session this node does not have (the sender is told).
    pub unknown_session: AtomicU64,
    /// Secure peering: key file or roster changes taken up.
    pub key_reloads: AtomicU64,
    /// Secure peering: key file or roster changes refused (unreadable, not private,
    /// malformed); the node keeps what it had.
    pub key_reload_failed: AtomicU64,
    /// Secure peering (a gauge): sending sessions still made with a key this node has
    /// replaced; they are renewed at once, and this returns to 0.
    pub stale_sessions: AtomicU64,
}

impl Stats {
    /// Every counter by name.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("frames".into(), get(&self.frames)),
            ("malformed".into(), get(&self.malformed)),
            ("oversized".into(), get(&self.oversized)),
            ("rejected".into(), get(&self.rejected)),
            ("send_dropped".into(), get(&self.send_dropped)),
            ("control_malformed".into(), get(&self.control_malformed)),
            ("served".into(), get(&self.served)),
            ("bytes_in".into(), get(&self.bytes_in)),
            ("bytes_out".into(), get(&self.bytes_out)),
            ("handoff_out".into(), get(&self.handoff_out)),
            ("handoff_in".into(), get(&self.handoff_in)),
            ("handoff_resent".into(), get(&self.handoff_resent)),
            ("handoff_duplicates".into(), get(&self.handoff_duplicates)),
            ("unknown_tenant".into(), get(&self.unknown_tenant)),
            ("module_refused".into(), get(&self.module_refused)),
            ("control_unauthenticated".into(), get(&self.control_unauthenticated)),
            ("control_forbidden".into(), get(&self.control_forbidden)),
            ("handshakes".into(), get(&self.handshakes)),
            ("unknown_peer".into(), get(&self.unknown_peer)),
            ("bad_handshake".into(), get(&self.bad_handshake)),
            ("handshake_evicted".into(), get(&self.handshake_evicted)),
            ("bad_mac".into(), get(&self.bad_mac)),
            ("replay".into(), get(&self.replay)),
            ("identity_mismatch".into(), get(&self.identity_mismatch)),
            ("plaintext_refused".into(), get(&self.plaintext_refused)),
            ("unknown_session".into(), get(&self.unknown_session)),
            ("key_reloads".into(), get(&self.key_reloads)),
            ("key_reload_failed".into(), get(&self.key_reload_failed)),
            ("stale_sessions".into(), get(&self.stale_sessions)),
        ]
    }

    /// Counts a refusal of `tenant`'s by its quota `quota`; returns the count.
    pub fn quota_refused(&self, tenant: &str, quota: &'static str) -> u64 {
        let mut map = self.quota_refused.lock().unwrap();
        let n = map.entry((tenant.to_string(), quota)).or_default();
        *n += 1;
        *n
    }

    /// `tenant`'s refusals by quota.
    pub fn quota_refusals(&self, tenant: &str) -> Vec<(&'static str, u64)> {
        let map = self.quota_refused.lock().unwrap();
        map.iter().filter(|((t, _), _)| t == tenant).map(|((_, q), n)| (*q, *n)).collect()
    }
}

pub(crate) fn bump(counter: &AtomicU64) -> u64 {
    counter.fetch_add(1, Ordering::Relaxed) + 1
}
