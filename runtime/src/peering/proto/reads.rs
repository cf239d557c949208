//! This node's own global reads: asking the members, collecting their answers, and the
//! items a take brings here.
//!
//! A take moves items: a member that answers deletes its copies. An answer that comes
//! after the take's deadline is therefore kept rather than dropped, but only for a take
//! this node issued, from a member it asked that had not answered, and only for a while
//! ([`LATE_TAKE_WINDOW_MS`], at most [`LATE_TAKES_REMEMBERED`] takes): any other
//! `Taken` answer is a member writing into this node's store unasked, and is rejected.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;

use estate_guest::codec::ItemsWriter;
use estate_guest::view::ValueRef;
use tracing::warn;

use super::{Action, Peering, Work};
use crate::global::{
    Answer, Completion, Gathered, GlobalError, GlobalOptions, GlobalReads, ReplyOutcome, ServedRead, taken_of,
};
use crate::pattern::Pattern;
use crate::peering::stats::bump;
use crate::reduce::registry::ReducerRef;
use crate::reduce::{Builtin, PartialBuilder};
use crate::store::{Moving, TenantStore};
use crate::wire::{Body, RemoteReducer};

/// How long after its deadline a take still accepts a late answer.
pub const LATE_TAKE_WINDOW_MS: u64 = 60_000;
/// How many expired takes are remembered for late answers (the oldest go first).
pub const LATE_TAKES_REMEMBERED: usize = 4096;

/// A finished read, for the driver to reduce and deliver.
#[derive(Debug)]
pub struct ReadDone<W> {
    /// Who waits.
    pub waiter: W,
    /// The tenant whose items were read.
    pub tenant: String,
    /// The read's reducer.
    pub reducer: ReducerRef,
    /// Whether it was pushed down (the parts are partials).
    pub remote: bool,
    /// Whether it was a take. Its items are in this node's store already (and the
    /// members that gave them up were told).
    pub take: bool,
    /// The number of items a take brought here.
    pub taken: usize,
    /// The answers, or why the read failed.
    pub result: Result<Gathered<Answer>, GlobalError>,
}

/// A read in flight: who waits, and how its answers are reduced.
#[derive(Debug)]
pub(crate) struct ReadCtx<W> {
    id: u128,
    tenant: String,
    waiter: W,
    reducer: ReducerRef,
    remote: bool,
    take: bool,
}

/// A take that ended with members missing: they may still answer.
#[derive(Debug)]
struct LateTake {
    tenant: String,
    missing: BTreeSet<String>,
    until: u64,
}

/// This node's reads in flight, and its recently expired takes.
#[derive(Debug)]
pub(crate) struct Reads<W> {
    pending: GlobalReads<ReadCtx<W>, Answer>,
    late: HashMap<u128, LateTake>,
    late_order: VecDeque<u128>,
}

impl<W> Default for Reads<W> {
    fn default() -> Self {
        Reads { pending: GlobalReads::default(), late: HashMap::new(), late_order: VecDeque::new() }
    }
}

impl<W> Reads<W> {
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        self.pending.next_deadline()
    }

    pub(crate) fn expire(&mut self, now: u64) -> Vec<Completion<ReadCtx<W>, Answer>> {
        // Late takes are remembered in the order they expire: drop them from the front.
        while let Some(id) = self.late_order.front() {
            if self.late.get(id).is_some_and(|t| t.until > now) {
                break;
            }
            self.late.remove(id);
            self.late_order.pop_front();
        }
        self.pending.expire(now)
    }

    pub(crate) fn member_down(&mut self, member: &str) -> Vec<Completion<ReadCtx<W>, Answer>> {
        self.pending.member_down(member)
    }

    pub(crate) fn abort(&mut self) -> Vec<W> {
        self.pending.abort().into_iter().map(|ctx| ctx.waiter).collect()
    }

    /// Remembers take `id`, ended with `missing` members, for their late answers.
    fn remember_late(&mut self, id: u128, tenant: &str, missing: &[String], now: u64) {
        if missing.is_empty() {
            return;
        }
        if self.late_order.len() >= LATE_TAKES_REMEMBERED
            && let Some(oldest) = self.late_order.pop_front()
        {
            self.late.remove(&oldest);
        }
        let missing = missing.iter().cloned().collect();
        let tenant = tenant.to_string();
        self.late.insert(id, LateTake { tenant, missing, until: now + LATE_TAKE_WINDOW_MS });
        self.late_order.push_back(id);
    }

    /// The tenant of take `id` if a late answer from `from` is one this node waits for
    /// (and now no longer: a second copy is not).
    fn accept_late(&mut self, id: u128, from: &str) -> Option<String> {
        let take = self.late.get_mut(&id)?;
        take.missing.remove(from).then(|| take.tenant.clone())
    }

    /// Whether member `member` is still to answer a read in flight of `tenant` that pushes
    /// down the Wasm module `hash` (so it may fetch the module from this node).
    pub(crate) fn pushes_down(&self, tenant: &str, hash: &[u8; 32], member: &str) -> bool {
        self.pending.any_waiting_on(member, |ctx| {
            ctx.remote && ctx.tenant == tenant && matches!(&ctx.reducer, ReducerRef::Wasm(l) if l.module.hash() == hash)
        })
    }
}

impl<W, H> Peering<W, H> {
    /// Starts a read: asks every live member, and answers it for this node itself.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_read(
        &mut self,
        tenant: String,
        pattern: &Pattern,
        reducer: ReducerRef,
        options: GlobalOptions,
        waiter: W,
        now: u64,
        out: &mut Vec<Action<W, H>>,
    ) {
        if self.store.tenant(&tenant).is_none() {
            let message = format!("unknown tenant {tenant:?}");
            return Self::refuse_read(tenant, waiter, message, out, reducer);
        }
        if options.remote && options.take {
            return Self::refuse_read(tenant, waiter, "take cannot be combined with push-down".into(), out, reducer);
        }
        if options.remote && !reducer.combinable() {
            let message = format!(
                "reducer {} is not combinable, so it cannot be pushed down to the peers; run it without --remote",
                reducer.name()
            );
            return Self::refuse_read(tenant, waiter, message, out, reducer);
        }
        let id = self.ids.next_id();
        let mut asked: BTreeSet<String> = self.membership.live().map(|(id, _)| id.clone()).collect();
        let remote = match (&reducer, options.remote) {
            (_, false) => None,
            (ReducerRef::Builtin(b), true) => Some(RemoteReducer::Builtin(*b)),
            (ReducerRef::Wasm(l), true) => {
                Some(RemoteReducer::Wasm { hash: *l.module.hash(), budget: l.module.limits().into() })
            }
        };
        for member in &asked {
            let body = Body::GlobalRequest {
                id,
                tenant: tenant.clone(),
                pattern: pattern.source().to_string(),
                reducer: remote.clone(),
                take: options.take,
            };
            self.send_to_member(member, body, out);
        }
        asked.insert(self.id.clone());
        let deadline = now + options.timeout.as_millis() as u64;
        let ctx = ReadCtx {
            id,
            tenant: tenant.clone(),
            waiter,
            reducer: reducer.clone(),
            remote: options.remote,
            take: options.take,
        };
        self.reads.pending.start(id, options.consistency, asked, deadline, ctx);
        // This node answers its own read like any member; a Wasm partial is computed by
        // the driver's workers and comes back as `Input::LocalPartial`.
        let me = self.id.clone();
        let served = ServedRead { from: me.clone(), tenant: tenant.clone(), pattern: pattern.source().to_string() };
        out.push(Action::Served(served));
        match (reducer, options.remote) {
            // A take leaves this node's own items where they are.
            (_, false) if options.take => self.on_answer(id, &me, Ok(Answer::Taken(Vec::new())), now, out),
            (_, false) => {
                let local = self.store.tenant(&tenant).map(|t| t.matching(pattern)).unwrap_or_default();
                self.on_answer(id, &me, Ok(Answer::Items(local)), now, out);
            }
            (ReducerRef::Builtin(b), true) => {
                let result = self.builtin_partial(&tenant, pattern, b);
                self.on_answer(id, &me, result, now, out);
            }
            (reducer @ ReducerRef::Wasm(_), true) => {
                let items = self.matching_items(&tenant, pattern);
                out.push(Action::Work(Work::LocalPartial { id, reducer, items }));
            }
        }
    }

    /// An answer to read `id` from `from` (possibly this node).
    pub(super) fn on_answer(
        &mut self,
        id: u128,
        from: &str,
        result: Result<Answer, String>,
        now: u64,
        out: &mut Vec<Action<W, H>>,
    ) {
        if let Ok(Answer::Taken(items)) = &result
            && !self.reads.pending.is_outstanding(id)
        {
            if items.is_empty() {
                return;
            }
            if let Some(tenant) = self.reads.accept_late(id, from) {
                // The sender lent these when it answered: kept here, and confirmed.
                warn!(%from, items = items.len(), "a member's take answer arrived late; keeping its items");
                let Ok(Answer::Taken(items)) = result else { return };
                self.keep_taken(&tenant, items, out);
                return self.send_to_member(from, Body::TakeAck { id }, out);
            }
            let n = bump(&self.stats.rejected);
            warn!(%from, items = items.len(), total = n, "refused items for a take this node did not ask that member for");
            return;
        }
        if let Ok(Answer::Taken(items)) = &result
            && !items.is_empty()
        {
            self.note_giver(id, from);
        }
        match self.reads.pending.reply(id, from, result) {
            ReplyOutcome::Rejected => self.reject(from, "a reply to no outstanding read"),
            ReplyOutcome::Recorded => {}
            ReplyOutcome::Complete(done) => self.read_done(done, now, out),
        }
    }

    /// Hands a finished read to the driver (remembering a take's missing members).
    pub(super) fn read_done(
        &mut self,
        (ctx, result): Completion<ReadCtx<W>, Answer>,
        now: u64,
        out: &mut Vec<Action<W, H>>,
    ) {
        let ReadCtx { id, tenant, waiter, reducer, remote, take } = ctx;
        let mut taken = 0;
        if take {
            // Step 2 of the take: store what the members gave up, then tell them. (The
            // parts stay, for a caller that asked for the items reduced.)
            if let Ok(gathered) = &result {
                let (items, strays) = taken_of(gathered.parts.clone());
                if strays > 0 {
                    warn!(strays, "members answered a take with something else");
                }
                taken = items.len();
                self.keep_taken(&tenant, items, out);
            }
            self.ack_givers(id, result.is_ok(), out);
            // Missing members may still answer; a failed take (error, consistency)
            // asked them just the same.
            let missing: Vec<String> = match &result {
                Ok(g) => g.missing.clone(),
                Err(GlobalError::Incomplete { missing }) => missing.clone(),
                Err(_) => Vec::new(),
            };
            self.reads.remember_late(id, &tenant, &missing, now);
        }
        out.push(Action::ReadDone(ReadDone { waiter, tenant, reducer, remote, take, taken, result }));
    }

    /// Keeps items given up to this node (a late take answer, or a take nobody waits
    /// for any more); while handing over they go along with the rest.
    pub(super) fn keep_taken(&mut self, tenant: &str, items: Vec<Moving>, out: &mut Vec<Action<W, H>>) {
        if self.handoffs.active() {
            return self.hand_over(tenant, items, out);
        }
        let Some(tenant) = self.store.tenant(tenant) else {
            return tracing::error!(%tenant, items = items.len(), "taken items of a tenant this node no longer has are lost");
        };
        for moving in items {
            let key = moving.item.key.clone();
            if let Err(e) = tenant.merge(moving) {
                // Only once the node has handed everything over and is leaving.
                tracing::error!(%key, "a taken item arrived too late to keep, and is lost: {e}");
            }
        }
    }

    /// This node's partial of a pushed-down built-in, straight from the store.
    pub(super) fn builtin_partial(&self, tenant: &str, pattern: &Pattern, reducer: Builtin) -> Result<Answer, String> {
        let mut builder = PartialBuilder::new(reducer, &self.id);
        if let Some(t) = self.store.tenant(tenant) {
            t.for_each_matching(pattern, |e| builder.push(e.key, e.value, || e.writer.name(), e.version))
                .map_err(|e| e.to_string())?;
        }
        Ok(Answer::Builtin(builder.finish()))
    }

    /// The matching items of `tenant`, for a pushed-down Wasm reducer.
    pub(super) fn matching_items(&self, tenant: &str, pattern: &Pattern) -> MatchingItems {
        MatchingItems { tenant: self.store.tenant(tenant), pattern: pattern.clone(), origin: self.id.clone() }
    }
}

/// The matching items of a pushed-down Wasm read, encoded for the guest by the worker
/// that runs it, straight from the store: whole, or only their values and versions for
/// a reducer that declared it reads nothing else (`abi::flags::VALUES_ONLY`).
#[derive(Clone, Debug)]
pub struct MatchingItems {
    tenant: Option<Arc<TenantStore>>,
    pattern: Pattern,
    /// This node's id: the items' origin.
    origin: String,
}

impl MatchingItems {
    /// The items of `tenant` that match `pattern`, held by node `origin`.
    #[cfg(test)]
    pub(crate) fn new(tenant: Option<Arc<TenantStore>>, pattern: Pattern, origin: &str) -> MatchingItems {
        MatchingItems { tenant, pattern, origin: origin.into() }
    }

    /// The items in the guest encoding; with `values_only`, each with an empty key,
    /// origin and writer.
    pub fn encode(&self, values_only: bool) -> Vec<u8> {
        let mut writer = ItemsWriter::default();
        if let Some(t) = &self.tenant {
            let pushed: Result<(), Infallible> = t.for_each_matching(&self.pattern, |e| {
                match values_only {
                    true => writer.push_value(e.value, e.version),
                    false => writer.push(e.key, e.value, &self.origin, e.writer.name(), e.version),
                }
                Ok(())
            });
            let Ok(()) = pushed;
        }
        writer.finish()
    }

    /// The items as their integer values alone, for a reducer that declared it takes
    /// them so (`abi::flags::INTS`); `None` if a matching item holds anything else.
    pub fn encode_ints(&self) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        if let Some(t) = &self.tenant {
            t.for_each_matching(&self.pattern, |e| match e.value {
                ValueRef::Int(v) => {
                    estate_guest::ints::push(&mut out, v);
                    Ok(())
                }
                _ => Err(()),
            })
            .ok()?;
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use estate_guest::Value;
    use estate_guest::codec::decode_items;

    use super::*;
    use crate::store::{DEFAULT_TENANT, Store};

    #[test]
    fn values_only_items_carry_no_key_origin_or_writer() {
        let store = Store::new("n1");
        let tenant = store.tenant(DEFAULT_TENANT);
        let version = tenant.as_ref().unwrap().set("k:1", Value::Int(5)).unwrap();
        tenant.as_ref().unwrap().set("other", Value::Int(6)).unwrap();
        let items = MatchingItems { tenant, pattern: Pattern::new("k:.*").unwrap(), origin: "n1".into() };
        let [whole] = &decode_items(&items.encode(false)).unwrap()[..] else { panic!("one item matches") };
        assert_eq!(
            (whole.key.as_str(), &whole.value, whole.origin.as_str(), whole.writer.as_str(), whole.version),
            ("k:1", &Value::Int(5), "n1", "n1", version)
        );
        let [value] = &decode_items(&items.encode(true)).unwrap()[..] else { panic!("one item matches") };
        assert_eq!(
            (value.key.as_str(), &value.value, value.origin.as_str(), value.writer.as_str(), value.version),
            ("", &Value::Int(5), "", "", version)
        );
        let none = MatchingItems { tenant: None, ..items };
        assert!(decode_items(&none.encode(true)).unwrap().is_empty());
    }

    #[test]
    fn integer_items_are_their_values_alone_and_anything_else_is_none() {
        let store = Store::new("n1");
        let tenant = store.tenant(DEFAULT_TENANT).unwrap();
        for (key, v) in [("k:1", -5), ("k:2", i64::MAX), ("other", 6)] {
            tenant.set(key, Value::Int(v)).unwrap();
        }
        let items =
            MatchingItems { tenant: Some(tenant.clone()), pattern: Pattern::new("k:.*").unwrap(), origin: "n1".into() };
        let values: Vec<i64> =
            estate_guest::ints::Ints::decode(&items.encode_ints().unwrap()).unwrap().iter().collect();
        assert_eq!(values.len(), 2);
        assert_eq!(BTreeSet::from_iter(values), BTreeSet::from([-5, i64::MAX]));
        tenant.set("k:3", Value::Float(1.0)).unwrap();
        assert_eq!(items.encode_ints(), None, "a float among them");
        let none = MatchingItems { tenant: None, ..items };
        assert_eq!(none.encode_ints(), Some(Vec::new()), "no tenant: no items");
    }
}
