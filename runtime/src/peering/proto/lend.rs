//! Takes in two steps, so that no crash between them loses a flow's state.
//!
//! Step 1, the giver: the matching items leave its store (no read sees them there, no
//! write adds to them), are *lent* to the taker, and go out in the take's answer.
//! Step 2, the taker: it stores them, then acknowledges (`TakeAck`) to each member
//! that gave it items; each giver then forgets its lent copy.
//!
//! A taker that dies between the steps never acknowledges: its givers put the lent
//! items back into their stores after [`LEND_WAIT_MS`], which outlasts the taker's
//! window for late take answers ([`super::reads::LATE_TAKE_WINDOW_MS`]), so a taker
//! that does store late items has acknowledged them long before. Put-back items merge
//! like any moved state (counters add up), so writes made in between are kept too.
//!
//! The giver does not put items back when membership declares the taker down: a taker
//! that was only slow (a busy node misses heartbeats) may have stored them, and would
//! then count them twice. The cost of waiting is that a dead taker's items are missing
//! from global reads for up to [`LEND_WAIT_MS`]; they are never lost. An
//! acknowledgement lost between two live members (which ZeroMQ over TCP does not do
//! short of a broken connection) would make the items count on both.

use std::collections::HashMap;

use tracing::{debug, warn};

use super::{Action, Peering};
use crate::store::Moving;
use crate::wire::Body;

/// How long a giver keeps items lent before it puts them back.
pub const LEND_WAIT_MS: u64 = super::reads::LATE_TAKE_WINDOW_MS + 30_000;

/// Items given up to a taker that has not confirmed storing them.
#[derive(Debug)]
struct Lent {
    tenant: String,
    items: Vec<Moving>,
    until: u64,
}

/// Both sides' bookkeeping: what this node lent (by taker and take id), and who gave
/// items to this node's takes in flight (by take id).
#[derive(Debug, Default)]
pub(crate) struct Lending {
    lent: HashMap<(String, u128), Lent>,
    givers: HashMap<u128, Vec<String>>,
}

#[cfg(test)]
impl Lending {
    /// Items lent and not yet acknowledged, all takers together.
    pub(crate) fn lent_items(&self) -> usize {
        self.lent.values().map(|l| l.items.len()).sum()
    }
}

impl<W, H> Peering<W, H> {
    /// Giver, step 1: `items` (already out of the store) are lent to `to` for its take
    /// `id` until it acknowledges.
    pub(super) fn lend(&mut self, to: &str, id: u128, tenant: &str, items: &[Moving], now: u64) {
        if items.is_empty() {
            return;
        }
        let lent = Lent { tenant: tenant.to_string(), items: items.to_vec(), until: now + LEND_WAIT_MS };
        self.lending.lent.insert((to.to_string(), id), lent);
    }

    /// Giver, step 2: `from` stored what it took with `id`.
    pub(super) fn take_acked(&mut self, from: &str, id: u128) {
        match self.lending.lent.remove(&(from.to_string(), id)) {
            Some(lent) => debug!(%from, items = lent.items.len(), "a take was stored by its taker"),
            // A duplicate, or an acknowledgement for nothing this node lent to `from`.
            None => debug!(%from, "an acknowledgement for no items lent to that member"),
        }
    }

    /// Giver: lent items whose taker never acknowledged go back into the store.
    pub(super) fn expire_lent(&mut self, now: u64) {
        let expired: Vec<(String, u128)> =
            self.lending.lent.iter().filter(|(_, l)| l.until <= now).map(|(k, _)| k.clone()).collect();
        for key in expired {
            self.put_back_lent(key, "it never confirmed storing them");
        }
    }

    fn put_back_lent(&mut self, key: (String, u128), why: &str) {
        if let Some(lent) = self.lending.lent.remove(&key) {
            warn!(taker = %key.0, items = lent.items.len(), "putting back items a member took: {why}");
            self.put_back(&lent.tenant, lent.items);
        }
    }

    /// Taker: `from` gave items to this node's take `id`.
    pub(super) fn note_giver(&mut self, id: u128, from: &str) {
        if from != self.id {
            self.lending.givers.entry(id).or_default().push(from.to_string());
        }
    }

    /// Taker, step 2: the items of take `id` are stored; tell each giver. A take that
    /// failed acknowledges nothing, and its givers put their items back.
    pub(super) fn ack_givers(&mut self, id: u128, stored: bool, out: &mut Vec<Action<W, H>>) {
        for giver in self.lending.givers.remove(&id).unwrap_or_default() {
            if stored {
                self.send_to_member(&giver, Body::TakeAck { id }, out);
            }
        }
    }
}
