//! The ZeroMQ driver of a node's peering: one I/O thread that owns every socket and
//! runs the protocol core ([`crate::peering::proto::Peering`]).
//!
//! One I/O thread owns every socket (ZeroMQ sockets are not thread-safe): the ROUTER at
//! the listen endpoint that receives every peer message, one DEALER per peer for
//! sending, the optional control ROUTER for the CLI, and an `inproc` wake-up socket.
//! Library calls reach it through a channel plus a wake-up frame ([`Inbox`]); local
//! `set`/`get`/`del` never go through it (the store is shared and `Sync`).
//!
//! The driver decodes frames into protocol inputs, stamps and encodes the messages the
//! protocol sends, and runs the protocol's [`Work`] — Wasm reducer calls and module
//! compilation — on a small worker pool, never on the I/O thread: a guest that loops
//! until its deadline delays only its own read. Workers post results back as commands.
//!
//! A node with a key and a roster sends and receives every peer frame through its
//! secure channel ([`crate::peering::secure`]): it then also reads its DEALERs, where
//! handshake answers arrive, and re-reads its key file and roster when they change.

mod control;
mod deliver;
pub(crate) mod keyfile;
mod partial;
mod quota;
mod secure;
mod sockets;
mod workers;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::control::ControlReply;
use crate::control::auth::Credentials;
use crate::global::{Answer, GlobalError, GlobalOptions, ServedHook};
use crate::nf::{NfCounters, NfSlot};
use crate::pattern::Pattern;
use crate::peering::proto::membership::Timing;
use crate::peering::proto::{Action, Ids, Input, MatchingItems, MemberEvent, Modules, Peering, Setup, Work};
use crate::peering::stats::{Stats, bump};
use crate::reduce::registry::{ReducerRef, Registry};
use crate::security_log::SecurityLog;
use crate::store::Store;
use crate::tenancy::Tenants;
use crate::wasm::ReducerModule;
use crate::wire::{self, Body, DecodeError, Envelope, GlobalAnswer, HandoffReport, MemberView};
pub(crate) use deliver::{HandoffWaiter, Timed, Waiter};
pub use sockets::SocketError;
pub(crate) use sockets::Sockets;
use sockets::{DEALER_MAX_MSG, LINGER_MS, PEER_SNDHWM};
use workers::Workers;

pub(crate) use keyfile::Loaded;

/// How often a keyed node looks at every DEALER for what a peer answered, in ms.
const DEALER_SWEEP_MS: u64 = 100;

/// Threads that run Wasm reducers and module compilation, off the I/O thread.
const WORKERS: usize = 2;

/// The outcome of a global read.
pub(crate) type GlobalResult = Result<GlobalAnswer, GlobalError>;

/// The protocol as this driver runs it.
type Proto = Peering<Waiter, Timed>;

/// What the I/O thread shares with the rest of the node.
pub(crate) struct Shared {
    pub(crate) store: Arc<Store>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) view: Arc<RwLock<Vec<MemberView>>>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) nf_counters: Arc<NfCounters>,
    pub(crate) nf: Arc<NfSlot>,
    pub(crate) tenants: Arc<Tenants>,
    /// The tenant that owns the NF place.
    pub(crate) nf_tenant: String,
    /// The control credentials the node accepts (none: every request is the admin's).
    pub(crate) credentials: Option<Credentials>,
    pub(crate) security: Arc<SecurityLog>,
}

/// Protocol ids: 128 random bits, unguessable by other members.
struct RandomIds;

impl Ids for RandomIds {
    fn next_id(&mut self) -> u128 {
        rand::random()
    }
}

impl Modules for Registry {
    fn has(&self, tenant: &str, hash: &[u8; 32]) -> bool {
        self.module(tenant, hash).is_some()
    }

    fn bytes(&self, tenant: &str, hash: &[u8; 32]) -> Option<Arc<Vec<u8>>> {
        Registry::bytes(self, tenant, hash)
    }
}

/// Starts the I/O thread of node `id` over its bound `sockets`, greeting the seeds
/// `join`.
pub(crate) fn spawn(
    id: &str,
    join: &[String],
    timing: Timing,
    sockets: Sockets,
    shared: Shared,
    keys: Option<Loaded>,
) -> std::io::Result<JoinHandle<()>> {
    let workers = Workers::start(WORKERS, sockets.inbox.clone(), id)?;
    let Shared { store, registry, view, stats, nf_counters, nf, tenants, nf_tenant, credentials, security } = shared;
    let proto = Peering::new(Setup {
        id: id.to_string(),
        endpoint: sockets.endpoint.clone(),
        seeds: join.to_vec(),
        timing,
        store: store.clone(),
        stats: stats.clone(),
        modules: registry.clone(),
        ids: Box::new(RandomIds),
    });
    let secure = keys.map(|loaded| secure::Link::new(loaded, stats.clone()));
    let driver = Driver {
        id: id.to_string(),
        endpoint: sockets.endpoint,
        ctx: sockets.ctx,
        router: sockets.router,
        control: sockets.control,
        wake: sockets.wake,
        commands: sockets.commands,
        peers: HashMap::new(),
        proto,
        store,
        registry,
        workers,
        view,
        stats,
        nf_counters,
        nf,
        tenants,
        nf_tenant,
        credentials,
        security,
        load: quota::Load::default(),
        secure,
        started: Instant::now(),
        served_hook: None,
    };
    driver.refresh_view();
    thread::Builder::new().name(format!("estate-io-{id}")).spawn(move || driver.run())
}

/// What other threads ask of the I/O thread.
pub(crate) enum Command {
    /// A library call's global read of `tenant`'s keys.
    Global {
        tenant: String,
        pattern: Pattern,
        reducer: ReducerRef,
        options: GlobalOptions,
        reply: mpsc::Sender<GlobalResult>,
    },
    /// Leave the cluster and stop.
    Leave,
    /// A worker finished a read's final reduction.
    Finished { waiter: Waiter, result: GlobalResult },
    /// A worker finished protocol work.
    Worked(Input<Waiter, Timed>),
    /// A worker finished a control request.
    ControlDone { identity: Vec<u8>, reply: ControlReply },
    /// Move `tenant`'s items matching `pattern` here from the other members.
    /// Answers the number of items brought here (stored before the answer).
    Take { tenant: String, pattern: Pattern, timeout: Duration, reply: mpsc::Sender<Result<usize, GlobalError>> },
    /// Hand every item to the other members, then leave (the NF is stopped already).
    HandOff { timeout: Duration, waiter: HandoffWaiter },
    /// Call this hook for every read the node serves from now on (`None`: stop).
    ObserveServed(Option<ServedHook>),
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

/// A global read of `tenant`'s keys on behalf of a library call or an NF.
pub(crate) fn global_read(
    inbox: &Inbox,
    registry: &Registry,
    tenant: &str,
    pattern: &str,
    reducer: &str,
    options: GlobalOptions,
) -> GlobalResult {
    let pattern = Pattern::new(pattern).map_err(|e| GlobalError::Invalid(e.to_string()))?;
    let reducer = registry.resolve(tenant, reducer).map_err(|e| GlobalError::Invalid(e.to_string()))?;
    let (tx, rx) = mpsc::channel();
    inbox.send(Command::Global { tenant: tenant.to_string(), pattern, reducer, options, reply: tx })?;
    // The I/O thread completes every read at its deadline (a final Wasm reduction runs
    // under its own wall-time limit); the grace only covers a dead thread.
    rx.recv_timeout(options.timeout + Duration::from_secs(10)).map_err(|_| GlobalError::Shutdown)?
}

/// The I/O thread's state.
pub(crate) struct Driver {
    id: String,
    endpoint: String,
    ctx: zmq::Context,
    router: zmq::Socket,
    pub(crate) control: Option<zmq::Socket>,
    wake: zmq::Socket,
    commands: mpsc::Receiver<Command>,
    /// One DEALER per peer endpoint we send to.
    peers: HashMap<String, zmq::Socket>,
    pub(crate) proto: Proto,
    pub(crate) store: Arc<Store>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) workers: Workers,
    pub(crate) view: Arc<RwLock<Vec<MemberView>>>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) nf_counters: Arc<NfCounters>,
    pub(crate) nf: Arc<NfSlot>,
    pub(crate) tenants: Arc<Tenants>,
    pub(crate) nf_tenant: String,
    pub(crate) credentials: Option<Credentials>,
    pub(crate) security: Arc<SecurityLog>,
    load: quota::Load,
    /// The secure channel, when the node has a key and a roster.
    secure: Option<secure::Link>,
    started: Instant,
    served_hook: Option<ServedHook>,
}

impl Driver {
    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn run(mut self) {
        self.feed(Input::Tick);
        while !self.proto.has_left() {
            let timeout = self.proto.next_deadline().saturating_sub(self.now()).min(1000) as i64;
            let (peer_ready, wake_ready, control_ready, dealers_ready) = {
                let mut items = vec![self.router.as_poll_item(zmq::POLLIN), self.wake.as_poll_item(zmq::POLLIN)];
                if let Some(c) = &self.control {
                    items.push(c.as_poll_item(zmq::POLLIN));
                }
                // A keyed node's DEALERs receive handshake answers: those waiting for one
                // are polled; all of them are swept now and then (a peer that lost our
                // session says so there). Polling every DEALER on every turn cost more
                // than the cryptography.
                let dealers: Vec<&String> = match &self.secure {
                    Some(link) if self.now() >= link.sweep_at => self.peers.keys().collect(),
                    Some(link) => self.peers.keys().filter(|ep| link.channel.awaits_answer(ep)).collect(),
                    None => Vec::new(),
                };
                let timeout =
                    if dealers.len() < self.peers.len() { timeout.min(DEALER_SWEEP_MS as i64) } else { timeout };
                let first_dealer = items.len();
                items.extend(dealers.iter().map(|ep| self.peers[*ep].as_poll_item(zmq::POLLIN)));
                if let Err(e) = zmq::poll(&mut items, timeout) {
                    warn!("poll failed: {e}");
                }
                let ready = |i: usize| items.get(i).is_some_and(|item| item.is_readable());
                let dealers_ready: Vec<String> = dealers
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| ready(first_dealer + i))
                    .map(|(_, ep)| (*ep).clone())
                    .collect();
                (ready(0), ready(1), self.control.is_some() && ready(2), dealers_ready)
            };
            if peer_ready {
                self.drain_peers();
            }
            if !dealers_ready.is_empty() {
                self.drain_dealers(dealers_ready);
            }
            let now = self.now();
            if let Some(link) = self.secure.as_mut().filter(|l| now >= l.sweep_at) {
                link.sweep_at = now + DEALER_SWEEP_MS;
            }
            if wake_ready {
                self.drain_commands();
            }
            if control_ready {
                self.drain_control();
            }
            self.feed(Input::Tick);
            self.secure_tick();
        }
        for waiter in self.proto.abort() {
            self.notify(waiter, Err(GlobalError::Shutdown));
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

    /// Runs one input through the protocol and carries out what it says.
    pub(crate) fn feed(&mut self, input: Input<Waiter, Timed>) {
        let input = deliver::start_timing(input);
        if let Input::Read { tenant, options, .. } = &input
            && let Err(e) = self.load.start_read(&self.tenants, &self.stats, tenant, options.take)
        {
            let Input::Read { waiter, .. } = input else { return };
            return self.notify(waiter, Err(e));
        }
        let mut actions = Vec::new();
        self.proto.handle(input, self.now(), &mut actions);
        for action in actions {
            match action {
                Action::Send { endpoint, body } => self.send(&endpoint, body),
                Action::Member(event) => self.member_event(event),
                Action::Work(work) => self.work(work),
                Action::ReadDone(done) => {
                    self.load.end_read(&done.tenant, done.take);
                    self.read_done(done)
                }
                Action::HandoffDone { waiter, result } => self.handoff_done(waiter, result),
                Action::Stop => {}
                Action::Served(read) => {
                    if let Some(hook) = &self.served_hook {
                        hook(&read);
                    }
                }
                Action::Refused { reason, from, object } => {
                    self.security.record(reason, &format!("peer:{from}"), &object)
                }
            }
        }
    }

    fn drain_peers(&mut self) {
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
            let [routing_id, frame] = parts.as_slice() else {
                let n = bump(&self.stats.malformed);
                warn!(parts = parts.len(), total = n, "dropped a peer message with an unexpected frame count");
                continue;
            };
            let now = self.now();
            if let Some(link) = &mut self.secure {
                let mut out = Vec::new();
                link.channel.from_router(routing_id, frame, now, &mut out);
                self.carry_out(out);
                continue;
            }
            match wire::decode(frame) {
                Ok(Envelope { from, clock, body }) => {
                    self.store.clock().observe(clock);
                    self.feed(Input::Message { from, body });
                }
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

    fn drain_commands(&mut self) {
        while self.wake.recv_bytes(zmq::DONTWAIT).is_ok() {}
        while let Ok(cmd) = self.commands.try_recv() {
            match cmd {
                Command::Global { tenant, pattern, reducer, options, reply } => {
                    self.feed(Input::Read { tenant, pattern, reducer, options, waiter: Waiter::Api(reply) });
                }
                Command::Leave => self.feed(Input::Leave),
                Command::Finished { waiter, result } => self.notify(waiter, result),
                Command::Worked(input) => self.feed(input),
                Command::ControlDone { identity, reply } => self.reply_control(identity, &reply),
                Command::Take { tenant, pattern, timeout, reply } => {
                    let options = GlobalOptions { timeout, take: true, ..GlobalOptions::default() };
                    let reducer = ReducerRef::Builtin(crate::reduce::Builtin::List);
                    self.feed(Input::Read { tenant, pattern, reducer, options, waiter: Waiter::Take(reply) });
                }
                Command::HandOff { timeout, waiter } => {
                    let waiter = Timed { waiter, started: Instant::now() };
                    self.feed(Input::HandOff { timeout_ms: timeout.as_millis() as u64, waiter });
                }
                Command::ObserveServed(hook) => self.served_hook = hook,
            }
        }
    }

    /// Runs protocol work on the worker pool; the result comes back as an input.
    fn work(&self, work: Work) {
        let tenant = match &work {
            Work::LocalPartial { reducer: ReducerRef::Wasm(l), .. } => l.tenant.clone(),
            Work::LocalPartial { .. } => String::new(),
            Work::PeerPartial { tenant, .. } | Work::Install { tenant, .. } => tenant.clone(),
        };
        let slot = self.load.start_job(&self.tenants, &self.stats, &tenant);
        let (registry, stats) = (self.registry.clone(), self.stats.clone());
        let tenants = self.tenants.clone();
        self.workers.submit(move || {
            // Refused by the tenant's `wasm_jobs` quota: the work fails with its name.
            let slot = slot.map_err(|e| e.to_string());
            // A pushed-down Wasm reducer over one node's items: that node's partial.
            let partial = |module: &ReducerModule, items: &MatchingItems| {
                slot.as_ref().map_err(Clone::clone)?;
                let started = Instant::now();
                let reduced = partial::wasm_partial(registry.host(), module, items);
                stats.reducer_time.observe(started.elapsed());
                reduced.map(Answer::Wasm).map_err(|e| e.to_string())
            };
            Command::Worked(match work {
                Work::LocalPartial { id, reducer, items } => {
                    let result = match &reducer {
                        ReducerRef::Wasm(loaded) => partial(&loaded.module, &items),
                        ReducerRef::Builtin(b) => Err(format!("built-in {b} is not run as Wasm")),
                    };
                    Input::LocalPartial { id, result }
                }
                Work::PeerPartial { to, id, tenant, hash, budget, items } => {
                    // The reader's budgets, within the tenant's ceilings on this node.
                    let ceilings = tenants.quotas(&tenant).cloned().unwrap_or_default();
                    let limits = ceilings.clamp(&budget.limits(registry.host().limits()));
                    let result = match registry.module(&tenant, &hash) {
                        Some(module) => partial(&module.with_limits(limits), &items),
                        None => Err("the module was evicted before it ran".into()),
                    };
                    Input::PeerPartial { to, id, result }
                }
                Work::Install { tenant, hash, budget, bytes } => {
                    // Compiled, cached and later run under the reading tenant's quotas,
                    // with the reader's budgets.
                    let result = match (tenants.quotas(&tenant), &slot) {
                        (_, Err(e)) => Err(e.clone()),
                        (Some(quotas), Ok(_)) => {
                            let limits = budget.limits(registry.host().limits());
                            let installed = registry.install(&tenant, quotas, &hash, bytes, limits);
                            installed.map(drop).map_err(|e| e.to_string())
                        }
                        (None, Ok(_)) => Err(format!("unknown tenant {tenant:?}")),
                    };
                    Input::ModuleInstalled { tenant, hash, result }
                }
            })
        });
    }

    fn member_event(&mut self, event: MemberEvent) {
        match event {
            MemberEvent::Up(id) => info!(member = %id, "member up"),
            MemberEvent::Suspect(id) => warn!(member = %id, "member suspect"),
            MemberEvent::Down(id, reason) => {
                warn!(member = %id, ?reason, "member removed");
                // Close sockets to endpoints no member has any more (a seed's is opened
                // again at its next greeting).
                let live: BTreeSet<&str> =
                    self.proto.membership().members().values().map(|m| m.endpoint.as_str()).collect();
                let closed: Vec<String> = self.peers.keys().filter(|ep| !live.contains(ep.as_str())).cloned().collect();
                for endpoint in closed {
                    self.peers.remove(&endpoint);
                    if let Some(link) = &mut self.secure {
                        link.channel.forget(&endpoint);
                    }
                }
            }
        }
        self.refresh_view();
    }

    /// Stamps `body` with this node's id and clock, and sends it to `endpoint` (through
    /// the secure channel if the node has one).
    fn send(&mut self, endpoint: &str, body: Body) {
        let frame = wire::encode(&Envelope { from: self.id.clone(), clock: self.store.clock().tick(), body });
        let now = self.now();
        if let Some(link) = &mut self.secure {
            let mut out = Vec::new();
            link.channel.seal(endpoint, frame, now, &mut out);
            self.carry_out(out);
        } else {
            self.send_raw(endpoint, frame);
        }
    }

    /// Sends `frame` as it is on the DEALER to `endpoint` (connected on first use).
    fn send_raw(&mut self, endpoint: &str, frame: Vec<u8>) {
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
        match self.peers[endpoint].send(frame, zmq::DONTWAIT) {
            Ok(()) => {
                self.stats.bytes_out.fetch_add(size, Ordering::Relaxed);
            }
            Err(e) => {
                let n = bump(&self.stats.send_dropped);
                debug!(%endpoint, total = n, "send dropped: {e}");
            }
        }
    }

    fn connect(&self, endpoint: &str) -> Result<zmq::Socket, zmq::Error> {
        let socket = self.ctx.socket(zmq::DEALER)?;
        socket.set_sndhwm(PEER_SNDHWM)?;
        // Only handshake answers (a secure node's) ever come back on a DEALER.
        socket.set_maxmsgsize(DEALER_MAX_MSG)?;
        socket.set_linger(0)?;
        socket.connect(endpoint)?;
        Ok(socket)
    }

    fn refresh_view(&self) {
        let me = MemberView { id: self.id.clone(), endpoint: self.endpoint.clone(), state: "self".into() };
        let mut view = vec![me];
        view.extend(self.proto.membership().members().iter().map(|(id, m)| MemberView {
            id: id.clone(),
            endpoint: m.endpoint.clone(),
            state: m.state.name().into(),
        }));
        *self.view.write().unwrap() = view;
    }
}

/// A hand-off's report with the time it took, measured here.
fn timed(report: HandoffReport, started: Instant) -> HandoffReport {
    HandoffReport { micros: started.elapsed().as_micros() as u64, ..report }
}
