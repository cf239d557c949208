//! Graceful scale-in: a leaving node hands every item to the live members, and a member
//! stores what a leaver hands it.
//!
//! The leaver sends its items in batches (a flow's keys together, to a member chosen by
//! rendezvous hashing) and leaves only once every batch is acknowledged. A batch not yet
//! acknowledged is sent again under the same id every quarter of the timeout (at least
//! [`HANDOFF_RESEND_MIN_MS`]); a receiver remembers the batches it stored (the last
//! [`HANDOFF_REMEMBERED`]) and acknowledges a repeat without storing it twice. Refused
//! items, and batches still unacknowledged at the deadline, go back into the leaver's
//! store, and the leaver stays. From the start of a hand-off the store refuses writes,
//! so nothing is written behind the items on their way out.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use tracing::{debug, info, warn};

use super::{Action, Peering};
use crate::store::Moving;
use crate::wire::{Body, HandoffReport};

/// Largest number of items in one hand-off batch.
const HANDOFF_BATCH_ITEMS: usize = 16_384;
/// Largest (estimated) size of one hand-off batch, well under the frame limit.
const HANDOFF_BATCH_BYTES: usize = 4 << 20;
/// Shortest wait before a hand-off batch nobody acknowledged is sent again.
pub const HANDOFF_RESEND_MIN_MS: u64 = 250;
/// How many received hand-off batches a node remembers, to acknowledge a batch sent
/// twice (its first acknowledgement was lost) without storing it twice.
pub const HANDOFF_REMEMBERED: usize = 4096;

/// Why a hand-off did not complete. The node stays a member and keeps its state (items
/// refused or never acknowledged were put back); writes are open again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandoffError {
    /// Another hand-off is running.
    #[error("a hand-off is already in progress")]
    InProgress,
    /// Nobody to hand the items to.
    #[error("no live member to hand {items} items to; this node keeps them and stays")]
    NoMember {
        /// Items the node holds.
        items: usize,
    },
    /// Some items were refused or not acknowledged in time.
    #[error(
        "hand-off incomplete, the node stays with its state (its NF, if it had one, stays unloaded: \
         `nf load` starts it again): {}",
        .failures.join("; ")
    )]
    Incomplete {
        /// What went wrong, per member.
        failures: Vec<String>,
    },
}

/// A stored hand-off batch: its sender, the items stored, those refused (key, why).
type ReceivedBatch = (String, u64, Vec<(String, String)>);

/// The acknowledgements of hand-off batches this node stored, by batch id. Bounded; the
/// oldest are forgotten first.
#[derive(Debug, Default)]
pub struct HandoffsReceived {
    acks: HashMap<u128, ReceivedBatch>,
    order: VecDeque<u128>,
}

impl HandoffsReceived {
    /// The acknowledgement of batch `id` if `from` sent it and this node stored it.
    pub fn get(&self, id: u128, from: &str) -> Option<(u64, Vec<(String, String)>)> {
        self.acks
            .get(&id)
            .filter(|(sender, _, _)| sender == from)
            .map(|(_, stored, refused)| (*stored, refused.clone()))
    }

    /// Remembers that batch `id` of `from` stored `stored` items and refused `refused`.
    pub fn remember(&mut self, id: u128, from: &str, stored: u64, refused: Vec<(String, String)>) {
        if self.order.len() == HANDOFF_REMEMBERED
            && let Some(oldest) = self.order.pop_front()
        {
            self.acks.remove(&oldest);
        }
        self.acks.insert(id, (from.to_string(), stored, refused));
        self.order.push_back(id);
    }

    /// How many batches are remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.acks.len()
    }
}

/// A hand-off in progress: batches sent and not yet acknowledged.
#[derive(Debug)]
struct Handoff<H> {
    waiter: H,
    deadline: u64,
    /// When unacknowledged batches are sent again (same id), and the interval.
    resend_at: u64,
    resend_every: u64,
    /// Unacknowledged batches by id: the member, the tenant and the items (kept to be
    /// put back if the batch is refused or never acknowledged).
    pending: HashMap<u128, (String, String, Vec<Moving>)>,
    /// Batches acknowledged (a batch sent again may be acknowledged twice).
    acked: HashSet<u128>,
    /// Items stored by each member.
    stored: BTreeMap<String, u64>,
    /// Why batches came back.
    failures: Vec<String>,
    /// The live members when the hand-off started: where batches go.
    members: Vec<String>,
}

/// This node's hand-off (if it is leaving) and the batches it received.
#[derive(Debug)]
pub(crate) struct Handoffs<H> {
    current: Option<Handoff<H>>,
    received: HandoffsReceived,
}

impl<H> Default for Handoffs<H> {
    fn default() -> Self {
        Handoffs { current: None, received: HandoffsReceived::default() }
    }
}

impl<H> Handoffs<H> {
    pub(crate) fn active(&self) -> bool {
        self.current.is_some()
    }

    pub(crate) fn next_deadline(&self) -> Option<u64> {
        self.current.as_ref().map(|h| h.resend_at.min(h.deadline))
    }
}

/// The member a leaving node hands `key` to: rendezvous hashing over `members` (not
/// empty), with all keys of one flow (`flow:<flow>:<name>`) hashed as one.
fn successor<'a>(members: &'a [String], key: &str) -> &'a str {
    use std::hash::{Hash, Hasher};
    let group = match key.strip_prefix("flow:").and_then(|rest| rest.rsplit_once(':')) {
        Some((flow, _)) => flow,
        None => key,
    };
    let score = |member: &String| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (group, member).hash(&mut h);
        h.finish()
    };
    members.iter().max_by_key(|m| score(m)).expect("members is not empty")
}

impl<W, H> Peering<W, H> {
    /// Starts a graceful scale-in: every item of every tenant goes to the live members.
    pub(super) fn start_handoff(&mut self, timeout_ms: u64, waiter: H, now: u64, out: &mut Vec<Action<W, H>>) {
        if self.handoffs.active() {
            let result = Err(HandoffError::InProgress);
            return out.push(Action::HandoffDone { waiter, result });
        }
        let members: Vec<String> = self.membership.live().map(|(id, _)| id.clone()).collect();
        let tenants = self.store.tenants();
        let total: usize = tenants.iter().map(|(_, t)| t.len()).sum();
        if members.is_empty() && total > 0 {
            let result = Err(HandoffError::NoMember { items: total });
            return out.push(Action::HandoffDone { waiter, result });
        }
        let resend_every = (timeout_ms / 4).max(HANDOFF_RESEND_MIN_MS);
        // From here on a write would land after the items were taken out: refused.
        self.store.close_writes();
        self.handoffs.current = Some(Handoff {
            waiter,
            deadline: now + timeout_ms,
            resend_at: now + resend_every,
            resend_every,
            pending: HashMap::new(),
            acked: HashSet::new(),
            stored: BTreeMap::new(),
            failures: Vec::new(),
            members,
        });
        info!(items = total, "handing state over before leaving");
        for (name, tenant) in tenants {
            self.hand_over(&name, tenant.take_all(), out);
        }
        self.check_handoff(now, out);
    }

    /// Sends `items` of `tenant` in batches to the hand-off's members (a flow's keys to
    /// one member) and records the batches as pending.
    pub(super) fn hand_over(&mut self, tenant: &str, items: Vec<Moving>, out: &mut Vec<Action<W, H>>) {
        let Some(handoff) = self.handoffs.current.as_mut() else {
            return;
        };
        if handoff.members.is_empty() {
            // Nobody to hand them to (a lone node starts a hand-off only with nothing to
            // hand over): they stay, and the hand-off fails.
            handoff.failures.push(format!("no live member for {} more items", items.len()));
            self.put_back(tenant, items);
            return;
        }
        let mut batches: Vec<(String, Vec<Moving>)> = Vec::new();
        let mut by_member: BTreeMap<&str, (Vec<Moving>, usize)> = BTreeMap::new();
        for moving in items {
            let member = successor(&handoff.members, &moving.item.key);
            let (batch, bytes) = by_member.entry(member).or_default();
            *bytes += moving.item.key.len() + crate::store::value_len(&moving.item.value) + 32;
            batch.push(moving);
            if batch.len() >= HANDOFF_BATCH_ITEMS || *bytes >= HANDOFF_BATCH_BYTES {
                batches.push((member.to_string(), std::mem::take(batch)));
                *bytes = 0;
            }
        }
        batches.extend(by_member.into_iter().filter(|(_, (b, _))| !b.is_empty()).map(|(m, (b, _))| (m.to_string(), b)));
        let mut sends = Vec::with_capacity(batches.len());
        for (member, items) in batches {
            let id = self.ids.next_id();
            sends.push((member.clone(), Body::Handoff { id, tenant: tenant.to_string(), items: items.clone() }));
            handoff.pending.insert(id, (member, tenant.to_string(), items));
        }
        debug!(%tenant, batches = sends.len(), "hand-off batches sent");
        for (member, body) in sends {
            self.send_to_member(&member, body, out);
        }
    }

    /// A member acknowledged a batch: count what it stored, put back what it refused.
    pub(super) fn on_handoff_ack(
        &mut self,
        from: &str,
        id: u128,
        stored: u64,
        refused: Vec<(String, String)>,
        now: u64,
        out: &mut Vec<Action<W, H>>,
    ) {
        let Some(handoff) = self.handoffs.current.as_mut() else {
            return self.reject(from, "a hand-off acknowledgement nobody waits for");
        };
        match handoff.pending.get(&id) {
            Some((member, _, _)) if member == from => {}
            _ if handoff.acked.contains(&id) => return debug!(%from, "a second acknowledgement of a batch sent twice"),
            _ => return self.reject(from, "a hand-off acknowledgement for no batch of its own"),
        }
        let Some((member, tenant, items)) = handoff.pending.remove(&id) else { return };
        handoff.acked.insert(id);
        *handoff.stored.entry(member.clone()).or_default() += stored;
        if let Some((key, why)) = refused.first() {
            // Put back what the member did not store.
            warn!(%member, refused = refused.len(), "a member refused handed-over items, e.g. {key}: {why}");
            handoff.failures.push(format!("{member} refused {} items, e.g. {key}: {why}", refused.len()));
            let refused: BTreeSet<&str> = refused.iter().map(|(k, _)| k.as_str()).collect();
            let refused = items.into_iter().filter(|m| refused.contains(m.item.key.as_str()));
            self.put_back(&tenant, refused);
        }
        self.check_handoff(now, out);
    }

    /// Sends unacknowledged batches again when due; ends the hand-off once nothing is
    /// pending (or at its deadline): leaves the cluster if everything was stored, else
    /// reports and stays.
    pub(super) fn check_handoff(&mut self, now: u64, out: &mut Vec<Action<W, H>>) {
        let Some(handoff) = self.handoffs.current.as_mut() else {
            return;
        };
        if !handoff.pending.is_empty() && now < handoff.deadline {
            if now >= handoff.resend_at {
                // A batch or its acknowledgement may have been lost (a peer socket
                // reconnecting drops messages): send the batches again, same ids; a
                // member that stored one already only acknowledges it again.
                handoff.resend_at = now + handoff.resend_every;
                let again: Vec<(String, Body)> = handoff
                    .pending
                    .iter()
                    .map(|(id, (member, tenant, items))| {
                        (member.clone(), Body::Handoff { id: *id, tenant: tenant.clone(), items: items.clone() })
                    })
                    .collect();
                self.stats.handoff_resent.fetch_add(again.len() as u64, std::sync::atomic::Ordering::Relaxed);
                warn!(batches = again.len(), "hand-off batches not acknowledged yet; sending them again");
                for (member, body) in again {
                    self.send_to_member(&member, body, out);
                }
            }
            return;
        }
        let Some(mut handoff) = self.handoffs.current.take() else { return };
        for (_, (member, tenant, items)) in handoff.pending.drain() {
            // Never acknowledged, though sent again until the deadline: the member may
            // or may not have stored them. Keeping them may count them twice; dropping
            // them may lose them. They are kept.
            handoff.failures.push(format!("{member} did not acknowledge {} items in time", items.len()));
            self.put_back(&tenant, items);
        }
        let items: u64 = handoff.stored.values().sum();
        self.stats.handoff_out.fetch_add(items, std::sync::atomic::Ordering::Relaxed);
        if !handoff.failures.is_empty() {
            self.store.open_writes();
            let result = Err(HandoffError::Incomplete { failures: handoff.failures });
            return out.push(Action::HandoffDone { waiter: handoff.waiter, result });
        }
        // The driver measures the time the hand-off took.
        let report = HandoffReport { items, members: handoff.stored.into_iter().collect(), micros: 0 };
        info!(items, "state handed over; leaving");
        out.push(Action::HandoffDone { waiter: handoff.waiter, result: Ok(report) });
        self.leave(out);
    }

    /// A leaving member hands this node a batch: store it (once) and acknowledge it.
    pub(super) fn on_handoff(
        &mut self,
        from: &str,
        id: u128,
        tenant: &str,
        items: Vec<Moving>,
        out: &mut Vec<Action<W, H>>,
    ) {
        // Sent again because our acknowledgement was lost: acknowledge again, store
        // nothing (counters would count twice).
        if let Some((stored, refused)) = self.handoffs.received.get(id, from) {
            let n = super::bump(&self.stats.handoff_duplicates);
            info!(%from, stored, total = n, "a hand-off batch came again; acknowledged again, not stored");
            return self.send_to_member(from, Body::HandoffAck { id, stored, refused }, out);
        }
        let Some(store) = self.store.tenant(tenant) else {
            // Only configured tenants exist: the batch is refused whole and goes back to
            // its sender; no map is created for the name.
            self.unknown_tenant(from, tenant, "hand-off batch", out);
            let why = format!("unknown tenant {tenant:?}");
            let refused = items.into_iter().map(|m| (m.item.key, why.clone())).collect();
            return self.send_to_member(from, Body::HandoffAck { id, stored: 0, refused }, out);
        };
        let n = items.len();
        let mut refused = Vec::new();
        for moving in items {
            let key = moving.item.key.clone();
            if let Err(e) = store.merge(moving) {
                refused.push((key, e.to_string()));
            }
        }
        let stored = (n - refused.len()) as u64;
        self.stats.handoff_in.fetch_add(stored, std::sync::atomic::Ordering::Relaxed);
        info!(%from, %tenant, stored, refused = refused.len(), "state handed over by a leaving member");
        // A batch that stored nothing can safely be merged again; remembering only the
        // others keeps what a member can make this node hold small.
        if stored > 0 {
            self.handoffs.received.remember(id, from, stored, refused.clone());
        }
        self.send_to_member(from, Body::HandoffAck { id, stored, refused }, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn received_hand_offs_are_remembered_per_sender_and_boundedly() {
        let mut received = HandoffsReceived::default();
        received.remember(1, "a", 3, vec![("k".into(), "why".into())]);
        assert_eq!(received.get(1, "a"), Some((3, vec![("k".into(), "why".into())])));
        assert_eq!(received.get(1, "b"), None, "another member's batch id is not a repeat");
        for id in 2..=HANDOFF_REMEMBERED as u128 {
            received.remember(id, "a", 1, Vec::new());
        }
        assert!(received.get(1, "a").is_some(), "{HANDOFF_REMEMBERED} fit");
        received.remember(0, "a", 1, Vec::new());
        assert_eq!(received.get(1, "a"), None, "the oldest is forgotten first");
        assert!(received.get(2, "a").is_some() && received.get(0, "a").is_some());
        assert_eq!(received.len(), HANDOFF_REMEMBERED);
    }
}
