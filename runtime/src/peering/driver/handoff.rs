use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::*;
use crate::store::Moving;
use crate::wire::{Body, ControlReply, HandoffReport};

/// Largest number of items in one hand-off batch.
pub(crate) const HANDOFF_BATCH_ITEMS: usize = 16_384;
/// Largest (estimated) size of one hand-off batch, well under the frame limit.
pub(crate) const HANDOFF_BATCH_BYTES: usize = 4 << 20;
/// Shortest wait before a hand-off batch nobody acknowledged is sent again.
pub(crate) const HANDOFF_RESEND_MIN_MS: u64 = 250;
/// How many received hand-off batches a node remembers, to acknowledge a batch sent
/// twice (its first acknowledgement was lost) without storing it twice.
pub(crate) const HANDOFF_REMEMBERED: usize = 4096;

/// The acknowledgements of hand-off batches this node stored, by batch id: the sender,
/// the items stored and those refused. Bounded; the oldest are forgotten first.
#[derive(Default)]
pub(crate) struct HandoffsReceived {
    pub(crate) acks: HashMap<u128, ReceivedBatch>,
    pub(crate) order: VecDeque<u128>,
}

/// A stored hand-off batch: its sender, the items stored, those refused (key, why).
pub(crate) type ReceivedBatch = (String, u64, Vec<(String, String)>);

impl HandoffsReceived {
    pub(crate) fn get(&self, id: u128, from: &str) -> Option<(u64, Vec<(String, String)>)> {
        self.acks
            .get(&id)
            .filter(|(sender, _, _)| sender == from)
            .map(|(_, stored, refused)| (*stored, refused.clone()))
    }

    pub(crate) fn remember(&mut self, id: u128, from: &str, stored: u64, refused: Vec<(String, String)>) {
        if self.order.len() == HANDOFF_REMEMBERED
            && let Some(oldest) = self.order.pop_front()
        {
            self.acks.remove(&oldest);
        }
        self.acks.insert(id, (from.to_string(), stored, refused));
        self.order.push_back(id);
    }
}

/// A hand-off in progress: batches sent and not yet acknowledged.
pub(crate) struct Handoff {
    pub(crate) waiter: HandoffWaiter,
    pub(crate) started: Instant,
    /// Deadline, in the driver's milliseconds.
    pub(crate) deadline: u64,
    /// When unacknowledged batches are sent again (same id), and the interval.
    pub(crate) resend_at: u64,
    pub(crate) resend_every: u64,
    /// Unacknowledged batches by id: the member, the tenant and the items (kept to be
    /// put back if the batch is refused or never acknowledged).
    pub(crate) pending: HashMap<u128, (String, String, Vec<Moving>)>,
    /// Batches acknowledged (a batch sent again may be acknowledged twice).
    pub(crate) acked: HashSet<u128>,
    /// Items stored by each member.
    pub(crate) stored: BTreeMap<String, u64>,
    /// Why batches came back.
    pub(crate) failures: Vec<String>,
    /// The live members when the hand-off started: where batches go.
    pub(crate) members: Vec<String>,
}

/// The member a leaving node hands `key` to: rendezvous hashing over `members` (not
/// empty), with all keys of one flow (`flow:<flow>:<name>`) hashed as one.
pub(crate) fn successor<'a>(members: &'a [String], key: &str) -> &'a str {
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

impl Driver {
    /// Graceful scale-in: gives every item of every tenant to the live members, in
    /// batches, and leaves once all are acknowledged. The keys of one flow
    /// (`flow:<flow>:…`) go to the same member, chosen by rendezvous hashing so the
    /// state spreads evenly; a flow that later moves elsewhere is taken from there like
    /// from any member. Refused or unacknowledged batches are put back: the node then
    /// reports the failure and stays, with its state.
    pub(crate) fn start_handoff(&mut self, timeout: Duration, waiter: HandoffWaiter) {
        if self.handoff.is_some() {
            return self.finish_waiter(waiter, Err("a hand-off is already in progress".into()));
        }
        let members: Vec<String> = self.membership.live().map(|(id, _)| id.clone()).collect();
        let tenants = self.store.tenants();
        let total: usize = tenants.iter().map(|(_, t)| t.len()).sum();
        if members.is_empty() && total > 0 {
            let message = format!("no live member to hand {total} items to; this node keeps them and stays");
            return self.finish_waiter(waiter, Err(message));
        }
        let (now, timeout_ms) = (self.now(), timeout.as_millis() as u64);
        let resend_every = (timeout_ms / 4).max(HANDOFF_RESEND_MIN_MS);
        // From here on a write would land after the items were taken out: refused.
        self.store.close_writes();
        self.handoff = Some(Handoff {
            waiter,
            started: Instant::now(),
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
            self.hand_over(&name, tenant.take_all());
        }
        self.check_handoff();
    }

    /// Sends `items` of `tenant` in batches to the hand-off's members (a flow's keys to
    /// one member) and records the batches as pending.
    pub(crate) fn hand_over(&mut self, tenant: &str, items: Vec<Moving>) {
        let Some(handoff) = self.handoff.as_mut() else {
            return;
        };
        if handoff.members.is_empty() {
            // Nobody to hand them to (a lone node starts a hand-off only with nothing to
            // hand over): they stay, and the hand-off fails.
            handoff.failures.push(format!("no live member for {} more items", items.len()));
            let store = self.store.tenant(tenant);
            for moving in items {
                let _ = store.put_back(moving);
            }
            return;
        }
        let mut batches: Vec<(String, Vec<Moving>)> = Vec::new();
        let mut by_member: HashMap<&str, (Vec<Moving>, usize)> = HashMap::new();
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
            let id: u128 = rand::random();
            sends.push((member.clone(), Body::Handoff { id, tenant: tenant.to_string(), items: items.clone() }));
            handoff.pending.insert(id, (member, tenant.to_string(), items));
        }
        debug!(%tenant, batches = sends.len(), "hand-off batches sent");
        for (member, body) in sends {
            self.send_to_member(&member, body);
        }
    }

    pub(crate) fn on_handoff_ack(&mut self, from: &str, id: u128, stored: u64, refused: Vec<(String, String)>) {
        let Some(handoff) = self.handoff.as_mut() else {
            return self.reject(from, "a hand-off acknowledgement nobody waits for");
        };
        match handoff.pending.get(&id) {
            Some((member, _, _)) if member == from => {}
            _ if handoff.acked.contains(&id) => return debug!(%from, "a second acknowledgement of a batch sent twice"),
            _ => return self.reject(from, "a hand-off acknowledgement for no batch of its own"),
        }
        let (member, tenant, items) = handoff.pending.remove(&id).expect("checked above");
        handoff.acked.insert(id);
        *handoff.stored.entry(member.clone()).or_default() += stored;
        if let Some((key, why)) = refused.first() {
            // Put back what the member did not store.
            warn!(%member, refused = refused.len(), "a member refused handed-over items, e.g. {key}: {why}");
            handoff.failures.push(format!("{member} refused {} items, e.g. {key}: {why}", refused.len()));
            let refused: BTreeSet<&str> = refused.iter().map(|(k, _)| k.as_str()).collect();
            let store = self.store.tenant(&tenant);
            for moving in items.into_iter().filter(|m| refused.contains(m.item.key.as_str())) {
                let _ = store.put_back(moving);
            }
        }
        self.check_handoff();
    }

    /// Ends the hand-off once nothing is pending (or at its deadline): leaves the
    /// cluster if everything was stored, else reports and stays.
    pub(crate) fn check_handoff(&mut self) {
        let now = self.now();
        let Some(handoff) = self.handoff.as_mut() else {
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
                self.stats.handoff_resent.fetch_add(again.len() as u64, Ordering::Relaxed);
                warn!(batches = again.len(), "hand-off batches not acknowledged yet; sending them again");
                for (member, body) in again {
                    self.send_to_member(&member, body);
                }
            }
            return;
        }
        let mut handoff = self.handoff.take().expect("checked above");
        for (_, (member, tenant, items)) in handoff.pending.drain() {
            // Never acknowledged, though sent again until the deadline: the member may
            // or may not have stored them. Keeping them may count them twice; dropping
            // them may lose them. They are kept.
            handoff.failures.push(format!("{member} did not acknowledge {} items in time", items.len()));
            let store = self.store.tenant(&tenant);
            for moving in items {
                let _ = store.put_back(moving);
            }
        }
        let items: u64 = handoff.stored.values().sum();
        self.stats.handoff_out.fetch_add(items, Ordering::Relaxed);
        if !handoff.failures.is_empty() {
            self.store.open_writes();
            let message = format!(
                "hand-off incomplete, the node stays with its state (its NF, if it had one, stays unloaded: \
                 `nf load` starts it again): {}",
                handoff.failures.join("; ")
            );
            return self.finish_waiter(handoff.waiter, Err(message));
        }
        let report = HandoffReport {
            items,
            members: handoff.stored.into_iter().collect(),
            micros: handoff.started.elapsed().as_micros() as u64,
        };
        info!(items, micros = report.micros, "state handed over; leaving");
        self.finish_waiter(handoff.waiter, Ok(report));
        let mut actions = Vec::new();
        self.membership.leave(&mut actions);
        self.apply(actions);
        self.leaving = true;
    }

    pub(crate) fn finish_waiter(&self, waiter: HandoffWaiter, result: Result<HandoffReport, String>) {
        match waiter {
            HandoffWaiter::Api(tx) => {
                let _ = tx.send(result);
            }
            HandoffWaiter::Control(identity) => {
                let reply = match result {
                    Ok(report) => ControlReply::Left(report),
                    Err(e) => ControlReply::Error(e),
                };
                self.reply_control(identity, &reply);
            }
        }
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
        assert_eq!(received.acks.len(), HANDOFF_REMEMBERED);
    }
}
