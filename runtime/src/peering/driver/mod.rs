//! The ZeroMQ driver of a node's peering: one I/O thread that owns every socket.
//!
//! One I/O thread owns every socket (ZeroMQ sockets are not thread-safe): the ROUTER at
//! the listen endpoint that receives every peer message, one DEALER per peer for
//! sending, the optional control ROUTER for the CLI, and an `inproc` wake-up socket.
//! Library calls reach it through a channel plus a wake-up frame ([`Inbox`]); local
//! `set`/`get`/`del` never go through it (the store is shared and `Sync`).
//!
//! Wasm reducer calls and module compilation run on a small worker pool, never on the
//! I/O thread: a guest that loops until its deadline delays only its own read, while
//! the node keeps answering everything else. Workers post results back as commands.
//!
//! Peer messages are one-way: a reply goes out through the replier's DEALER to the
//! requester's *membership* endpoint, never to an address named in the request. A
//! message from a node that is not a live member is dropped and counted (a `Hello` is
//! the only way in).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::global::Answer;
use crate::global::{GlobalError, GlobalOptions, GlobalReads};
use crate::nf::{NfCounters, NfSlot};
use crate::pattern::Pattern;
use crate::peering::proto::membership::{Action, Membership, Timing};
use crate::peering::stats::{Stats, bump};
use crate::reduce::Builtin;
use crate::reduce::registry::{ReducerRef, Registry};
use crate::store::{Moving, Store};
use crate::wire::{self, Body, ControlReply, DecodeError, Envelope, GlobalAnswer, HandoffReport, MemberView};

mod handoff;
mod reads;
mod serve;
mod sockets;
mod workers;

use handoff::{Handoff, HandoffsReceived};
use reads::ReadCtx;
pub(crate) use reads::global_read;
use serve::AwaitingModule;
pub use sockets::SocketError;
pub(crate) use sockets::Sockets;
use sockets::{LINGER_MS, PEER_SNDHWM};
use workers::Workers;

/// Threads that run Wasm reducers and module compilation, off the I/O thread.
pub(crate) const WORKERS: usize = 2;

/// The outcome of a global read.
pub(crate) type GlobalResult = Result<GlobalAnswer, GlobalError>;

/// What the I/O thread shares with the rest of the node.
pub(crate) struct Shared {
    pub(crate) store: Arc<Store>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) view: Arc<RwLock<Vec<MemberView>>>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) nf_counters: Arc<NfCounters>,
    pub(crate) nf: Arc<NfSlot>,
}

/// Starts the I/O thread of node `id` over its bound `sockets`, greeting the seeds
/// `join`.
pub(crate) fn spawn(
    id: &str,
    join: &[String],
    timing: Timing,
    sockets: Sockets,
    shared: Shared,
) -> std::io::Result<JoinHandle<()>> {
    let workers = Workers::start(WORKERS, sockets.inbox.clone(), id)?;
    let Shared { store, registry, view, stats, nf_counters, nf } = shared;
    let driver = Driver {
        membership: Membership::new(id, &sockets.endpoint, join.to_vec(), timing),
        id: id.to_string(),
        endpoint: sockets.endpoint,
        ctx: sockets.ctx,
        router: sockets.router,
        control: sockets.control,
        wake: sockets.wake,
        commands: sockets.commands,
        peers: HashMap::new(),
        store,
        registry,
        workers,
        awaiting: HashMap::new(),
        reads: GlobalReads::default(),
        patterns: HashMap::new(),
        view,
        stats,
        nf_counters,
        nf,
        started: Instant::now(),
        leaving: false,
        handoff: None,
        handoffs_received: HandoffsReceived::default(),
    };
    driver.refresh_view();
    thread::Builder::new().name(format!("estate-io-{id}")).spawn(move || driver.run())
}

/// What other threads ask of the I/O thread.
pub(crate) enum Command {
    /// A library call's global read.
    Global { pattern: Pattern, reducer: ReducerRef, options: GlobalOptions, reply: mpsc::Sender<GlobalResult> },
    /// Leave the cluster and stop.
    Leave,
    /// A worker finished a read's final reduction.
    Finished { waiter: Waiter, result: GlobalResult },
    /// A worker computed this node's own partial for read `id`.
    LocalAnswer { id: u128, result: Result<Answer, String> },
    /// A worker computed this node's partial for a peer's read.
    PeerAnswer { to: String, id: u128, result: Result<Answer, String> },
    /// A worker installed (or failed to install) a module fetched for push-down.
    ModuleReady { hash: [u8; 32], result: Result<(), String> },
    /// A worker finished a control request.
    ControlDone { identity: Vec<u8>, reply: ControlReply },
    /// Move the items matching `pattern` here from the other members.
    Take { pattern: Pattern, timeout: Duration, reply: mpsc::Sender<Result<Vec<Moving>, GlobalError>> },
    /// Hand every item to the other members, then leave (the NF is stopped already).
    HandOff { timeout: Duration, waiter: HandoffWaiter },
}

pub(crate) enum Waiter {
    Api(mpsc::Sender<GlobalResult>),
    Control(Vec<u8>),
    Take(mpsc::Sender<Result<Vec<Moving>, GlobalError>>),
}

/// Who waits for a hand-off.
pub(crate) enum HandoffWaiter {
    Api(mpsc::Sender<Result<HandoffReport, String>>),
    Control(Vec<u8>),
}

/// The way into the I/O thread: a command channel plus an `inproc` wake-up frame.
pub(crate) struct Inbox {
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) wake: Mutex<zmq::Socket>,
}

impl Inbox {
    pub(crate) fn send(&self, cmd: Command) -> Result<(), GlobalError> {
        self.commands.send(cmd).map_err(|_| GlobalError::Shutdown)?;
        let wake = self.wake.lock().unwrap();
        wake.send(&[][..], zmq::DONTWAIT).map_err(|_| GlobalError::Shutdown)
    }
}

/// The I/O thread's state.
pub(crate) struct Driver {
    pub(crate) id: String,
    pub(crate) endpoint: String,
    pub(crate) ctx: zmq::Context,
    pub(crate) router: zmq::Socket,
    pub(crate) control: Option<zmq::Socket>,
    pub(crate) wake: zmq::Socket,
    pub(crate) commands: mpsc::Receiver<Command>,
    /// One DEALER per peer endpoint we send to.
    pub(crate) peers: HashMap<String, zmq::Socket>,
    pub(crate) store: Arc<Store>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) workers: Workers,
    /// Peers' pushed-down reads waiting for a module's bytes, by module hash.
    pub(crate) awaiting: HashMap<[u8; 32], Vec<AwaitingModule>>,
    pub(crate) membership: Membership,
    pub(crate) reads: GlobalReads<ReadCtx, Answer>,
    /// Compiled patterns of recent requests.
    pub(crate) patterns: HashMap<String, Pattern>,
    pub(crate) view: Arc<RwLock<Vec<MemberView>>>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) nf_counters: Arc<NfCounters>,
    pub(crate) nf: Arc<NfSlot>,
    pub(crate) started: Instant,
    pub(crate) leaving: bool,
    pub(crate) handoff: Option<Handoff>,
    pub(crate) handoffs_received: HandoffsReceived,
}

impl Driver {
    pub(crate) fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub(crate) fn run(mut self) {
        let mut actions = Vec::new();
        self.membership.tick(self.now(), &mut actions);
        self.apply(actions);
        while !self.leaving {
            let now = self.now();
            let next = self
                .reads
                .next_deadline()
                .map_or(self.membership.next_deadline(), |d| d.min(self.membership.next_deadline()));
            let timeout = next.saturating_sub(now).min(1000) as i64;
            let (peer_ready, wake_ready, control_ready) = {
                let mut items = vec![self.router.as_poll_item(zmq::POLLIN), self.wake.as_poll_item(zmq::POLLIN)];
                if let Some(c) = &self.control {
                    items.push(c.as_poll_item(zmq::POLLIN));
                }
                if let Err(e) = zmq::poll(&mut items, timeout) {
                    warn!("poll failed: {e}");
                }
                (items[0].is_readable(), items[1].is_readable(), items.get(2).is_some_and(|i| i.is_readable()))
            };
            if peer_ready {
                self.drain_peers();
            }
            if wake_ready {
                self.drain_commands();
            }
            if control_ready {
                self.drain_control();
            }
            let now = self.now();
            let mut actions = Vec::new();
            self.membership.tick(now, &mut actions);
            self.apply(actions);
            for done in self.reads.expire(now) {
                self.finish_read(done);
            }
            self.expire_awaiting(now);
            self.check_handoff();
        }
        for ctx in self.reads.abort() {
            self.notify(ctx.waiter, Err(GlobalError::Shutdown));
        }
        self.workers.stop();
        // Closing the peer sockets lets each deliver its queued `Leave` within the linger.
        for (_, socket) in self.peers.drain() {
            let _ = socket.set_linger(LINGER_MS);
        }
        // And the control socket its last reply (a `leave`'s report).
        if let Some(control) = &self.control {
            let _ = control.set_linger(LINGER_MS);
        }
    }

    pub(crate) fn drain_peers(&mut self) {
        for _ in 0..1024 {
            let parts = match self.router.recv_multipart(zmq::DONTWAIT) {
                Ok(parts) => parts,
                Err(zmq::Error::EAGAIN) => return,
                Err(e) => {
                    warn!("receive failed: {e}");
                    return;
                }
            };
            bump(&self.stats.frames);
            let size: usize = parts.iter().map(Vec::len).sum();
            self.stats.bytes_in.fetch_add(size as u64, Ordering::Relaxed);
            // ROUTER prepends the sender's routing id; a peer sends exactly one frame.
            let [_, frame] = parts.as_slice() else {
                let n = bump(&self.stats.malformed);
                warn!(parts = parts.len(), total = n, "dropped a peer message with an unexpected frame count");
                continue;
            };
            match wire::decode(frame) {
                Ok(env) => self.on_envelope(env),
                Err(DecodeError::Oversized(size)) => {
                    let n = bump(&self.stats.oversized);
                    warn!(size, total = n, "dropped an oversized peer frame");
                }
                Err(e) => {
                    let n = bump(&self.stats.malformed);
                    warn!(len = frame.len(), total = n, "dropped a malformed peer frame: {e}");
                }
            }
        }
    }

    pub(crate) fn reject(&self, from: &str, what: &str) {
        let n = bump(&self.stats.rejected);
        debug!(%from, total = n, "dropped {what}");
    }

    pub(crate) fn on_envelope(&mut self, env: Envelope) {
        let now = self.now();
        self.store.clock().observe(env.clock);
        let from = env.from;
        if let Body::Member(msg) = env.body {
            let mut actions = Vec::new();
            self.membership.handle(&from, msg, now, &mut actions);
            self.apply(actions);
            self.refresh_view();
            return;
        }
        if !self.membership.is_live(&from) {
            self.reject(&from, "a message from a non-member");
            return;
        }
        self.membership.heard(&from, now);
        match env.body {
            Body::Member(_) => unreachable!("handled above"),
            Body::GlobalRequest { id, tenant, pattern, reducer, take } => {
                bump(&self.stats.served);
                self.serve(from, id, &tenant, &pattern, reducer, take);
            }
            Body::GlobalReply { id, result } => {
                if let Err(e) = &result {
                    warn!(%from, "member could not answer a global read: {e}");
                }
                self.on_answer(id, &from, result);
            }
            Body::ModuleRequest { hash } => match self.registry.bytes(&hash) {
                Some(bytes) => self.send_to_member(&from, Body::ModuleData { hash, bytes: bytes.to_vec() }),
                None => warn!(%from, hash = %hex::encode(hash), "asked for a module this node does not have"),
            },
            Body::Handoff { id, tenant, items } => {
                // Sent again because our acknowledgement was lost: acknowledge again,
                // store nothing (counters would count twice).
                if let Some((stored, refused)) = self.handoffs_received.get(id, &from) {
                    let n = bump(&self.stats.handoff_duplicates);
                    info!(%from, stored, total = n, "a hand-off batch came again; acknowledged again, not stored");
                    self.send_to_member(&from, Body::HandoffAck { id, stored, refused });
                    return;
                }
                let (n, store) = (items.len(), self.store.tenant(&tenant));
                let mut refused = Vec::new();
                for moving in items {
                    let key = moving.item.key.clone();
                    if let Err(e) = store.merge(moving) {
                        refused.push((key, e.to_string()));
                    }
                }
                let stored = (n - refused.len()) as u64;
                self.stats.handoff_in.fetch_add(stored, Ordering::Relaxed);
                info!(%from, %tenant, stored, refused = refused.len(), "state handed over by a leaving member");
                // A batch that stored nothing can safely be merged again; remembering
                // only the others keeps what a member can make this node hold small.
                if stored > 0 {
                    self.handoffs_received.remember(id, &from, stored, refused.clone());
                }
                self.send_to_member(&from, Body::HandoffAck { id, stored, refused });
            }
            Body::HandoffAck { id, stored, refused } => self.on_handoff_ack(&from, id, stored, refused),
            Body::ModuleData { hash, bytes } => {
                if !self.awaiting.contains_key(&hash) {
                    self.reject(&from, "module bytes nobody asked for");
                    return;
                }
                let registry = self.registry.clone();
                self.workers.submit(move || Command::ModuleReady {
                    hash,
                    result: registry.install(&hash, bytes).map(drop).map_err(|e| e.to_string()),
                });
            }
        }
    }

    pub(crate) fn drain_commands(&mut self) {
        while self.wake.recv_bytes(zmq::DONTWAIT).is_ok() {}
        while let Ok(cmd) = self.commands.try_recv() {
            match cmd {
                Command::Global { pattern, reducer, options, reply } => {
                    self.start_read(&pattern, reducer, options, Waiter::Api(reply));
                }
                Command::Leave => {
                    let mut actions = Vec::new();
                    self.membership.leave(&mut actions);
                    self.apply(actions);
                    self.leaving = true;
                }
                Command::Finished { waiter, result } => self.notify(waiter, result),
                Command::LocalAnswer { id, result } => {
                    let me = self.id.clone();
                    self.on_answer(id, &me, result);
                }
                Command::PeerAnswer { to, id, result } => self.send_answer(&to, id, result),
                Command::ModuleReady { hash, result } => {
                    for a in self.awaiting.remove(&hash).unwrap_or_default() {
                        match &result {
                            Ok(()) => self.reduce_for_peer(a.from, a.id, hash, a.items),
                            Err(e) => self.send_answer(&a.from, a.id, Err(e.clone())),
                        }
                    }
                }
                Command::ControlDone { identity, reply } => self.reply_control(identity, &reply),
                Command::Take { pattern, timeout, reply } => {
                    let options = GlobalOptions { timeout, take: true, ..GlobalOptions::default() };
                    self.start_read(&pattern, ReducerRef::Builtin(Builtin::List), options, Waiter::Take(reply));
                }
                Command::HandOff { timeout, waiter } => self.start_handoff(timeout, waiter),
            }
        }
    }

    pub(crate) fn notify(&self, waiter: Waiter, result: GlobalResult) {
        match waiter {
            Waiter::Take(tx) => {
                // Completed takes are answered by `finish_read`; only failures come here.
                let _ = tx.send(result.map(|_| Vec::new()));
            }
            Waiter::Api(tx) => {
                let _ = tx.send(result);
            }
            Waiter::Control(identity) => {
                let reply = match result {
                    Ok(answer) => ControlReply::Global(answer),
                    Err(e) => ControlReply::Error(e.to_string()),
                };
                self.reply_control(identity, &reply);
            }
        }
    }

    pub(crate) fn envelope(&self, body: Body) -> Envelope {
        Envelope { from: self.id.clone(), clock: self.store.clock().tick(), body }
    }

    pub(crate) fn send_to_member(&mut self, member: &str, body: Body) {
        let frame = wire::encode(&self.envelope(body));
        self.send_frame_to_member(member, frame);
    }

    pub(crate) fn send_frame_to_member(&mut self, member: &str, frame: Vec<u8>) {
        match self.membership.endpoint_of(member).map(str::to_string) {
            Some(ep) => self.send_frame(&ep, frame),
            None => debug!(%member, "not sent: no longer a member"),
        }
    }

    pub(crate) fn send(&mut self, endpoint: &str, body: Body) {
        let frame = wire::encode(&self.envelope(body));
        self.send_frame(endpoint, frame);
    }

    /// Sends an encoded peer frame.
    pub(crate) fn send_frame(&mut self, endpoint: &str, frame: Vec<u8>) {
        if !self.peers.contains_key(endpoint) {
            match self.connect(endpoint) {
                Ok(socket) => {
                    self.peers.insert(endpoint.to_string(), socket);
                }
                Err(e) => {
                    warn!(%endpoint, "cannot connect: {e}");
                    return;
                }
            }
        }
        let size = frame.len() as u64;
        let socket = &self.peers[endpoint];
        match socket.send(frame, zmq::DONTWAIT) {
            Ok(()) => {
                self.stats.bytes_out.fetch_add(size, Ordering::Relaxed);
            }
            Err(e) => {
                let n = bump(&self.stats.send_dropped);
                debug!(%endpoint, total = n, "send dropped: {e}");
            }
        }
    }

    pub(crate) fn connect(&self, endpoint: &str) -> Result<zmq::Socket, zmq::Error> {
        let socket = self.ctx.socket(zmq::DEALER)?;
        socket.set_sndhwm(PEER_SNDHWM)?;
        socket.set_linger(0)?;
        socket.connect(endpoint)?;
        Ok(socket)
    }

    pub(crate) fn apply(&mut self, actions: Vec<Action>) {
        let mut changed = false;
        for action in actions {
            match action {
                Action::Send { endpoint, msg } => self.send(&endpoint, Body::Member(msg)),
                Action::Up(id) => {
                    info!(member = %id, "member up");
                    changed = true;
                }
                Action::Suspect(id) => {
                    warn!(member = %id, "member suspect");
                    changed = true;
                }
                Action::Down(id, reason) => {
                    warn!(member = %id, ?reason, "member removed");
                    changed = true;
                    // Close sockets to endpoints no member has any more (a seed's is
                    // opened again at its next greeting).
                    let live_eps: BTreeSet<&str> =
                        self.membership.members().values().map(|m| m.endpoint.as_str()).collect();
                    self.peers.retain(|ep, _| live_eps.contains(ep.as_str()));
                    for done in self.reads.member_down(&id) {
                        self.finish_read(done);
                    }
                }
            }
        }
        if changed {
            self.refresh_view();
        }
    }

    pub(crate) fn refresh_view(&self) {
        let me = MemberView { id: self.id.clone(), endpoint: self.endpoint.clone(), state: "self".into() };
        let mut view = vec![me];
        view.extend(self.membership.members().iter().map(|(id, m)| MemberView {
            id: id.clone(),
            endpoint: m.endpoint.clone(),
            state: m.state.name().into(),
        }));
        *self.view.write().unwrap() = view;
    }
}
