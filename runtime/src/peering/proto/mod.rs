//! The peer protocol as a state machine without I/O: data in, actions out.
//!
//! [`Peering`] is everything a node does with its peers — membership, its own global
//! reads, serving the peers' reads (module fetches included), and handing its state over
//! when it leaves — driven by [`Input`]s and answering with [`Action`]s. It never
//! touches a socket, a thread, a clock or a random source: the time (milliseconds) comes
//! with every call, ids come from an [`Ids`] source the driver supplies, and guest code
//! runs wherever the driver runs [`Work`]. The ZeroMQ driver (`peering::driver`) feeds
//! it in production; the simulated network in `sim` (tests) feeds it deterministically,
//! with seeded loss, duplication and delay.
//!
//! It does read and write the node's [`Store`]: the store is plain shared data (the
//! bottom of the crate), and answering a read or storing a hand-off is what the
//! protocol is for.

pub mod handoff;
pub mod lend;
pub mod membership;
pub mod reads;
pub mod serve;
#[cfg(test)]
mod sim;

use std::sync::Arc;

use tracing::{debug, info, warn};

use crate::global::{Answer, GlobalError, GlobalOptions, ServedRead};
use crate::pattern::Pattern;
use crate::peering::stats::{Stats, bump};
use crate::reduce::registry::ReducerRef;
use crate::store::{Moving, Store};
use crate::wire::{Body, HandoffReport};
pub use handoff::HandoffError;
use handoff::Handoffs;
use lend::Lending;
use membership::{Membership, Timing};
use reads::Reads;
use serve::Serving;

pub use reads::{MatchingItems, ReadDone};

/// Where protocol ids (reads, hand-off batches) come from. Production ids are 128
/// random bits (unguessable); the simulation's are seeded.
pub trait Ids: Send {
    /// A fresh id.
    fn next_id(&mut self) -> u128;
}

/// What the protocol needs to know of the node's compiled Wasm modules.
///
/// Modules belong to a tenant: a module is cached, compiled and run per (tenant, hash),
/// so one tenant never runs under, evicts or learns of another's modules.
pub trait Modules: Send + Sync {
    /// Whether `tenant`'s module with this sha256 is compiled here.
    fn has(&self, tenant: &str, hash: &[u8; 32]) -> bool;
    /// The bytes of `tenant`'s module with this sha256, to send to a peer that lacks it.
    fn bytes(&self, tenant: &str, hash: &[u8; 32]) -> Option<Arc<Vec<u8>>>;
}

/// What happens next, given to [`Peering::handle`].
#[derive(Debug)]
pub enum Input<W, H> {
    /// A decoded peer message (its clock already folded into the store's).
    Message {
        /// The sender's id, from the envelope.
        from: String,
        /// The message.
        body: Body,
    },
    /// Time passed: membership timers, read deadlines, hand-off resends.
    Tick,
    /// A global read for a caller on this node.
    Read {
        /// Whose keys.
        tenant: String,
        /// Which keys.
        pattern: Pattern,
        /// How to reduce them.
        reducer: ReducerRef,
        /// Deadline, consistency, push-down, take.
        options: GlobalOptions,
        /// Who waits for the answer.
        waiter: W,
    },
    /// [`Work::LocalPartial`] is done.
    LocalPartial {
        /// The read.
        id: u128,
        /// This node's partial, or why it failed.
        result: Result<Answer, String>,
    },
    /// [`Work::PeerPartial`] is done.
    PeerPartial {
        /// The member that asked.
        to: String,
        /// Its read.
        id: u128,
        /// This node's partial, or why it failed.
        result: Result<Answer, String>,
    },
    /// [`Work::Install`] is done.
    ModuleInstalled {
        /// The tenant it was installed for.
        tenant: String,
        /// The module.
        hash: [u8; 32],
        /// Whether it compiled.
        result: Result<(), String>,
    },
    /// Hand every item over to the live members, then leave.
    HandOff {
        /// How long the members have to acknowledge.
        timeout_ms: u64,
        /// Who waits for the outcome.
        waiter: H,
    },
    /// Leave the cluster now, handing nothing over (shutdown).
    Leave,
}

/// Guest code to run off the protocol's thread; its result comes back as an [`Input`].
#[derive(Debug)]
pub enum Work {
    /// This node's partial of its own pushed-down Wasm read → [`Input::LocalPartial`].
    LocalPartial {
        /// The read.
        id: u128,
        /// The reducer.
        reducer: ReducerRef,
        /// The matching items, encoded for the guest when the work runs.
        items: MatchingItems,
    },
    /// This node's partial of a peer's pushed-down Wasm read → [`Input::PeerPartial`].
    PeerPartial {
        /// The member that asked.
        to: String,
        /// Its read.
        id: u128,
        /// The tenant that reads (whose module and budgets are used).
        tenant: String,
        /// The module (compiled here).
        hash: [u8; 32],
        /// The budgets the reader runs it under (applied within the tenant's ceilings).
        budget: crate::wire::Budget,
        /// The matching items, encoded for the guest when the work runs.
        items: MatchingItems,
    },
    /// Compile fetched module bytes (their sha256 already checked) →
    /// [`Input::ModuleInstalled`].
    Install {
        /// The tenant the module is fetched for.
        tenant: String,
        /// The budgets of the read that fetched it (its calls run under them).
        budget: crate::wire::Budget,
        /// The module's sha256.
        hash: [u8; 32],
        /// Its bytes.
        bytes: Vec<u8>,
    },
}

/// A change of a member's state, for logs, the membership view and the sockets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberEvent {
    /// The member is up.
    Up(String),
    /// The member missed heartbeats.
    Suspect(String),
    /// The member is gone: it left, or failed.
    Down(String, membership::DownReason),
}

/// What the driver must do, returned by [`Peering::handle`].
#[derive(Debug)]
pub enum Action<W, H> {
    /// Send `body` to the node listening at `endpoint`.
    Send {
        /// The peer's listen endpoint.
        endpoint: String,
        /// The message.
        body: Body,
    },
    /// A member changed state.
    Member(MemberEvent),
    /// Run guest code.
    Work(Work),
    /// A read of this node finished: reduce and deliver it.
    ReadDone(ReadDone<W>),
    /// A hand-off finished (on success the node is leaving: [`Action::Stop`] follows).
    HandoffDone {
        /// Who waits.
        waiter: H,
        /// Items and members, or why the node stays.
        result: Result<HandoffReport, HandoffError>,
    },
    /// The node has left the cluster: stop.
    Stop,
    /// This node served a global read: a member's, or its own (`from` is then this
    /// node's id). For observers; the answer is already on its way.
    Served(ServedRead),
    /// A member's message was refused for a security reason (already counted): for the
    /// security log.
    Refused {
        /// Why (`unknown tenant`, `module refused`).
        reason: &'static str,
        /// The member.
        from: String,
        /// What it asked for (a request kind and tenant; never keys or values).
        object: String,
    },
}

/// A node's peer protocol. `W` is who waits for a read, `H` who waits for a hand-off.
pub struct Peering<W, H> {
    pub(crate) id: String,
    store: Arc<Store>,
    stats: Arc<Stats>,
    modules: Arc<dyn Modules>,
    ids: Box<dyn Ids>,
    membership: Membership,
    reads: Reads<W>,
    serving: Serving,
    lending: Lending,
    handoffs: Handoffs<H>,
    left: bool,
}

impl<W, H> std::fmt::Debug for Peering<W, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peering").field("id", &self.id).finish_non_exhaustive()
    }
}

/// How a node's protocol starts.
pub struct Setup {
    /// The node's id.
    pub id: String,
    /// The endpoint it listens on (what it tells members).
    pub endpoint: String,
    /// Endpoints to join through.
    pub seeds: Vec<String>,
    /// Failure-detection timing.
    pub timing: Timing,
    /// The node's store.
    pub store: Arc<Store>,
    /// The node's counters.
    pub stats: Arc<Stats>,
    /// The node's compiled modules.
    pub modules: Arc<dyn Modules>,
    /// Where ids come from.
    pub ids: Box<dyn Ids>,
}

impl<W, H> Peering<W, H> {
    /// A node's protocol, not yet greeting anyone (the first [`Input::Tick`] does).
    pub fn new(setup: Setup) -> Self {
        let Setup { id, endpoint, seeds, timing, store, stats, modules, ids } = setup;
        Peering {
            membership: Membership::new(&id, &endpoint, seeds, timing),
            id,
            store,
            stats,
            modules,
            ids,
            reads: Reads::default(),
            serving: Serving::default(),
            lending: Lending::default(),
            handoffs: Handoffs::default(),
            left: false,
        }
    }

    /// The membership state (for the view).
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// Whether a hand-off is in progress (writes are refused meanwhile).
    pub fn handing_off(&self) -> bool {
        self.handoffs.active()
    }

    /// Whether the node has left the cluster.
    pub fn has_left(&self) -> bool {
        self.left
    }

    /// The next time (ms) something is due without any input.
    pub fn next_deadline(&self) -> u64 {
        let mut next = self.membership.next_deadline();
        if let Some(d) = self.reads.next_deadline() {
            next = next.min(d);
        }
        if let Some(d) = self.handoffs.next_deadline() {
            next = next.min(d);
        }
        next
    }

    /// Ends every read in flight (shutdown); returns their waiters.
    pub fn abort(&mut self) -> Vec<W> {
        self.reads.abort()
    }

    /// Feeds one input at time `now` (ms); appends what to do to `out`.
    pub fn handle(&mut self, input: Input<W, H>, now: u64, out: &mut Vec<Action<W, H>>) {
        match input {
            Input::Message { from, body } => self.on_message(from, body, now, out),
            Input::Tick => self.tick(now, out),
            Input::Read { tenant, pattern, reducer, options, waiter } => {
                self.start_read(tenant, &pattern, reducer, options, waiter, now, out)
            }
            Input::LocalPartial { id, result } => {
                let me = self.id.clone();
                self.on_answer(id, &me, result, now, out);
            }
            Input::PeerPartial { to, id, result } => self.send_answer(&to, id, result, out),
            Input::ModuleInstalled { tenant, hash, result } => self.module_installed(&tenant, hash, result, out),
            Input::HandOff { timeout_ms, waiter } => self.start_handoff(timeout_ms, waiter, now, out),
            Input::Leave => self.leave(out),
        }
    }

    fn tick(&mut self, now: u64, out: &mut Vec<Action<W, H>>) {
        let mut actions = Vec::new();
        self.membership.tick(now, &mut actions);
        self.membership_actions(actions, now, out);
        for done in self.reads.expire(now) {
            self.read_done(done, now, out);
        }
        self.expire_awaiting(now, out);
        self.expire_lent(now);
        self.check_handoff(now, out);
    }

    fn on_message(&mut self, from: String, body: Body, now: u64, out: &mut Vec<Action<W, H>>) {
        if let Body::Member(msg) = body {
            let mut actions = Vec::new();
            self.membership.handle(&from, msg, now, &mut actions);
            return self.membership_actions(actions, now, out);
        }
        if !self.membership.is_live(&from) {
            return self.reject(&from, "a message from a non-member");
        }
        self.membership.heard(&from, now);
        match body {
            Body::Member(_) => {}
            Body::GlobalRequest { id, tenant, pattern, reducer, take } => {
                bump(&self.stats.served);
                out.push(Action::Served(ServedRead {
                    from: from.clone(),
                    tenant: tenant.clone(),
                    pattern: pattern.clone(),
                }));
                self.serve(from, id, &tenant, &pattern, reducer, take, now, out);
            }
            Body::GlobalReply { id, result } => {
                if let Err(e) = &result {
                    warn!(%from, "member could not answer a global read: {e}");
                }
                self.on_answer(id, &from, result, now, out);
            }
            Body::ModuleRequest { tenant, hash } => self.module_request(&from, &tenant, hash, out),
            Body::ModuleData { tenant, hash, bytes } => self.module_data(&from, tenant, hash, bytes, out),
            Body::Handoff { id, tenant, items } => self.on_handoff(&from, id, &tenant, items, out),
            Body::HandoffAck { id, stored, refused } => self.on_handoff_ack(&from, id, stored, refused, now, out),
            Body::TakeAck { id } => self.take_acked(&from, id),
        }
    }

    fn membership_actions(&mut self, actions: Vec<membership::Action>, now: u64, out: &mut Vec<Action<W, H>>) {
        for action in actions {
            match action {
                membership::Action::Send { endpoint, msg } => {
                    out.push(Action::Send { endpoint, body: Body::Member(msg) })
                }
                membership::Action::Up(id) => out.push(Action::Member(MemberEvent::Up(id))),
                membership::Action::Suspect(id) => out.push(Action::Member(MemberEvent::Suspect(id))),
                membership::Action::Down(id, reason) => {
                    for done in self.reads.member_down(&id) {
                        self.read_done(done, now, out);
                    }
                    out.push(Action::Member(MemberEvent::Down(id, reason)));
                }
            }
        }
    }

    /// Puts items of this node's `tenant` back into its store (a hand-off or take that
    /// did not move them).
    fn put_back(&self, tenant: &str, items: impl IntoIterator<Item = Moving>) {
        let Some(store) = self.store.tenant(tenant) else {
            return tracing::error!(%tenant, "items of a tenant this node no longer has are lost");
        };
        for moving in items {
            let _ = store.put_back(moving);
        }
    }

    /// Refuses a member's `what` for a tenant this node does not have: counted,
    /// logged, reported for the security log. No map is created for the name.
    fn unknown_tenant(&self, from: &str, tenant: &str, what: &str, out: &mut Vec<Action<W, H>>) {
        let n = bump(&self.stats.unknown_tenant);
        warn!(%from, %tenant, total = n, "refused a {what} for an unknown tenant");
        let object = format!("{what} in {tenant}");
        out.push(Action::Refused { reason: "unknown tenant", from: from.to_string(), object });
    }

    /// Counts and logs a well-formed message that is dropped.
    fn reject(&self, from: &str, what: &str) {
        let n = bump(&self.stats.rejected);
        debug!(%from, total = n, "dropped {what}");
    }

    /// Sends `body` to member `member` (nothing if it is no longer a member).
    fn send_to_member(&self, member: &str, body: Body, out: &mut Vec<Action<W, H>>) {
        match self.membership.endpoint_of(member) {
            Some(endpoint) => out.push(Action::Send { endpoint: endpoint.to_string(), body }),
            None => debug!(%member, "not sent: no longer a member"),
        }
    }

    fn leave(&mut self, out: &mut Vec<Action<W, H>>) {
        if self.left {
            return;
        }
        let mut actions = Vec::new();
        self.membership.leave(&mut actions);
        for action in actions {
            if let membership::Action::Send { endpoint, msg } = action {
                out.push(Action::Send { endpoint, body: Body::Member(msg) });
            }
        }
        self.left = true;
        info!(id = %self.id, "left the cluster");
        out.push(Action::Stop);
    }

    /// A read's request for a bad pattern or reducer fails at once.
    fn refuse_read(tenant: String, waiter: W, message: String, out: &mut Vec<Action<W, H>>, reducer: ReducerRef) {
        out.push(Action::ReadDone(ReadDone {
            waiter,
            tenant,
            reducer,
            remote: false,
            take: false,
            taken: 0,
            result: Err(GlobalError::Invalid(message)),
        }));
    }
}
