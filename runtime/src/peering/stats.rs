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
