//! Counters of what a node's peering received, sent and dropped, and histograms of how
//! long its global reads and Wasm reducer calls took.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
    /// How long this node's global reads took (not takes), from the start to the answer
    /// handed to the caller, answered or failed. A histogram: not among `snapshot`'s
    /// counters (`estate node --metrics` exports it).
    pub read_time: Durations,
    /// How long each step of Wasm reducer calls took on this node's workers: a
    /// member's partial over its own items (for its own read or a member's), or a
    /// reader's final reduction. A histogram, like `read_time`.
    pub reducer_time: Durations,
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

/// Upper bounds of the buckets of every [`Durations`], in nanoseconds: 1, 2.5 and 5 per
/// decade from 1 µs to 10 s (slower observations fall in the last bucket, `+Inf`).
pub const DURATION_BOUNDS_NS: [u64; 22] = [
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// A histogram of durations over fixed buckets ([`DURATION_BOUNDS_NS`]), in atomics:
/// observing costs a bucket search and two relaxed adds, with no lock, so it can sit
/// on a per-packet path.
#[derive(Debug, Default)]
pub struct Durations {
    /// Observations per bucket (not cumulative); the last one is over the last bound.
    buckets: [AtomicU64; DURATION_BOUNDS_NS.len() + 1],
    /// The sum of all observations, in nanoseconds.
    sum_ns: AtomicU64,
}

/// What a [`Durations`] held when it was read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DurationsSnapshot {
    /// (upper bound in seconds, observations in this bucket alone), the last bound
    /// being `f64::INFINITY`.
    pub buckets: Vec<(f64, u64)>,
    /// The number of observations (the buckets' sum).
    pub count: u64,
    /// The sum of all observations, in seconds.
    pub sum_seconds: f64,
}

impl Durations {
    /// Counts one observation of `d`.
    pub fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        // The first bucket whose bound is at least `ns` (buckets hold `le` their bound).
        let i = DURATION_BOUNDS_NS.partition_point(|&bound| bound < ns);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// The buckets, count and sum now (the count is the buckets' sum, so the two agree
    /// even while observations go on).
    pub fn snapshot(&self) -> DurationsSnapshot {
        let bounds = DURATION_BOUNDS_NS.iter().map(|&ns| ns as f64 / 1e9).chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> =
            bounds.zip(&self.buckets).map(|(le, n)| (le, n.load(Ordering::Relaxed))).collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum_seconds = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        DurationsSnapshot { buckets, count, sum_seconds }
    }
}
