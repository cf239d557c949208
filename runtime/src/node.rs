//! A running node: the local store, and the ZeroMQ driver that runs membership and
//! global reads.
//!
//! One I/O thread owns every socket (ZeroMQ sockets are not thread-safe): the ROUTER at
//! the listen endpoint that receives every peer message, one DEALER per peer for
//! sending, the optional control ROUTER for the CLI, and an `inproc` wake-up socket.
//! Library calls reach it through a channel plus a wake-up frame; local `set`/`get`/`del`
//! never go through it (the store is shared and `Sync`).
//!
//! Wasm reducer calls and module compilation run on a small worker pool, never on the
//! I/O thread: a guest that loops until its deadline delays only its own read, while
//! the node keeps answering everything else. Workers post results back as commands.
//!
//! Peer messages are one-way: a reply goes out through the replier's DEALER to the
//! requester's *membership* endpoint, never to an address named in the request. A
//! message from a node that is not a live member is dropped and counted (a `Hello` is
//! the only way in).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use estate_guest::codec::ItemsWriter;
use estate_guest::{Item, Phase, Value};
use tracing::{debug, error, info, warn};

use crate::global::{Completion, Gathered, GlobalError, GlobalReads, ReplyOutcome};
use crate::membership::{Action, Membership, Timing};
use crate::nfrun::{FailPolicy, FlowState, NfCounters, NfSettings, NfSlot, Packets};
use crate::pattern::Pattern;
use crate::reduce::{self, Builtin, PartialBuilder, Reduced};
use crate::registry::{LoadError, ReducerInfo, ReducerRef, Registry};
use crate::store::{DEFAULT_TENANT, Moving, Store, StoreError, TenantStore, Versioned};
use crate::wasm::{GuestError, Limits, NfState, WasmHost};
use crate::wire::{
    self, Answer, Body, ControlReply, ControlRequest, DecodeError, Envelope, GlobalAnswer, HandoffReport,
    LimitOverrides, MAX_FRAME, MemberView, RemoteReducer,
};

pub use crate::wire::Consistency;

/// Longest node id accepted.
pub const MAX_ID_LEN: usize = 64;
/// ZeroMQ drops (and disconnects) anything larger than this before we see it; frames
/// between [`MAX_FRAME`] and this are received, counted as oversized and dropped.
const ZMQ_MAX_MSG: i64 = 2 * MAX_FRAME as i64;
/// Send queue per peer; a dead peer's queue fills up and further sends are dropped.
const PEER_SNDHWM: i32 = 10_000;
/// How long a closing socket may keep trying to deliver (the `Leave` messages).
const LINGER_MS: i32 = 500;
/// How long a pushed-down read waits for a module's bytes.
const MODULE_WAIT_MS: u64 = 30_000;
/// Threads that run Wasm reducers and module compilation, off the I/O thread.
const WORKERS: usize = 2;
/// Compiled patterns of recent peer requests kept.
const PATTERN_CACHE: usize = 256;

/// How to start a node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The node's id, unique in the cluster.
    pub id: String,
    /// ZeroMQ endpoint to listen on for peers (`tcp://127.0.0.1:7001`, or `:*` for an
    /// ephemeral port; [`Node::endpoint`] tells the one bound).
    pub listen: String,
    /// Seed endpoints to join through.
    pub join: Vec<String>,
    /// Endpoint for the command line's control socket, if any.
    pub control: Option<String>,
    /// Failure-detection timing.
    pub timing: Timing,
    /// Default budgets of Wasm reducer calls (overridable per reducer at load).
    pub limits: Limits,
}

impl NodeConfig {
    /// A config with default timing and limits, and no seeds or control socket.
    pub fn new(id: &str, listen: &str) -> NodeConfig {
        NodeConfig {
            id: id.into(),
            listen: listen.into(),
            join: Vec::new(),
            control: None,
            timing: Timing::default(),
            limits: Limits::default(),
        }
    }
}

/// Options of a global read.
#[derive(Clone, Copy, Debug)]
pub struct GlobalOptions {
    /// Deadline of the read.
    pub timeout: Duration,
    /// Whether every live member must answer.
    pub consistency: Consistency,
    /// Push the reducer down: each member reduces its own items and sends a partial.
    pub remote: bool,
    /// Move the matching items here: every member sends them and deletes its copy
    /// (fetch-all only).
    pub take: bool,
}

impl Default for GlobalOptions {
    fn default() -> Self {
        GlobalOptions {
            timeout: Duration::from_millis(1000),
            consistency: Consistency::BestEffort,
            remote: false,
            take: false,
        }
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The id is empty, too long, or not printable ASCII.
    #[error("invalid node id {0:?}: 1 to {MAX_ID_LEN} printable ASCII characters without spaces")]
    InvalidId(String),
    /// A socket could not be created or bound.
    #[error("{what} {endpoint}: {source}")]
    Socket {
        /// What was being done.
        what: &'static str,
        /// The endpoint.
        endpoint: String,
        /// ZeroMQ's error.
        source: zmq::Error,
    },
    /// A thread could not be spawned.
    #[error("spawning a thread: {0}")]
    Thread(#[from] std::io::Error),
    /// The Wasm engine could not be set up.
    #[error("setting up the Wasm engine: {0:#}")]
    Wasm(anyhow::Error),
}

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
        ]
    }
}

fn bump(counter: &AtomicU64) -> u64 {
    counter.fetch_add(1, Ordering::Relaxed) + 1
}

type GlobalResult = Result<GlobalAnswer, GlobalError>;

/// What other threads ask of the I/O thread.
enum Command {
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

enum Waiter {
    Api(mpsc::Sender<GlobalResult>),
    Control(Vec<u8>),
    Take(mpsc::Sender<Result<Vec<Moving>, GlobalError>>),
}

/// Who waits for a hand-off.
enum HandoffWaiter {
    Api(mpsc::Sender<Result<HandoffReport, String>>),
    Control(Vec<u8>),
}

/// Largest number of items in one hand-off batch.
const HANDOFF_BATCH_ITEMS: usize = 16_384;
/// Largest (estimated) size of one hand-off batch, well under the frame limit.
const HANDOFF_BATCH_BYTES: usize = 4 << 20;
/// Shortest wait before a hand-off batch nobody acknowledged is sent again.
const HANDOFF_RESEND_MIN_MS: u64 = 250;
/// How many received hand-off batches a node remembers, to acknowledge a batch sent
/// twice (its first acknowledgement was lost) without storing it twice.
const HANDOFF_REMEMBERED: usize = 4096;

/// The acknowledgements of hand-off batches this node stored, by batch id: the sender,
/// the items stored and those refused. Bounded; the oldest are forgotten first.
#[derive(Default)]
struct HandoffsReceived {
    acks: HashMap<u128, ReceivedBatch>,
    order: VecDeque<u128>,
}

/// A stored hand-off batch: its sender, the items stored, those refused (key, why).
type ReceivedBatch = (String, u64, Vec<(String, String)>);

impl HandoffsReceived {
    fn get(&self, id: u128, from: &str) -> Option<(u64, Vec<(String, String)>)> {
        self.acks
            .get(&id)
            .filter(|(sender, _, _)| sender == from)
            .map(|(_, stored, refused)| (*stored, refused.clone()))
    }

    fn remember(&mut self, id: u128, from: &str, stored: u64, refused: Vec<(String, String)>) {
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
struct Handoff {
    waiter: HandoffWaiter,
    started: Instant,
    /// Deadline, in the driver's milliseconds.
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

/// A read in flight: who waits, and how its answers are reduced.
struct ReadCtx {
    waiter: Waiter,
    reducer: ReducerRef,
    remote: bool,
}

/// A peer's pushed-down read, waiting for the module's bytes.
struct AwaitingModule {
    from: String,
    id: u128,
    /// The matching items, already in the guest encoding.
    items: Vec<u8>,
    since: u64,
}

/// The way into the I/O thread: a command channel plus an `inproc` wake-up frame.
struct Inbox {
    commands: mpsc::Sender<Command>,
    wake: Mutex<zmq::Socket>,
}

impl Inbox {
    fn send(&self, cmd: Command) -> Result<(), GlobalError> {
        self.commands.send(cmd).map_err(|_| GlobalError::Shutdown)?;
        let wake = self.wake.lock().unwrap();
        wake.send(&[][..], zmq::DONTWAIT).map_err(|_| GlobalError::Shutdown)
    }
}

type Job = Box<dyn FnOnce() -> Command + Send>;

/// A small pool that runs jobs (Wasm calls, compilation) and posts their results to
/// the I/O thread.
struct Workers {
    jobs: Option<mpsc::Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    fn start(n: usize, inbox: Arc<Inbox>, name: &str) -> std::io::Result<Workers> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut threads = Vec::new();
        for i in 0..n {
            let (rx, inbox) = (rx.clone(), inbox.clone());
            let thread = thread::Builder::new().name(format!("estate-work-{name}-{i}")).spawn(move || {
                loop {
                    let job = rx.lock().unwrap().recv();
                    let Ok(job) = job else { return };
                    // A closed inbox means the node stopped; the result has no reader.
                    let _ = inbox.send(job());
                }
            })?;
            threads.push(thread);
        }
        Ok(Workers { jobs: Some(tx), threads })
    }

    fn submit(&self, job: impl FnOnce() -> Command + Send + 'static) {
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send(Box::new(job));
        }
    }

    fn stop(&mut self) {
        self.jobs = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A running estate node. Dropping it leaves the cluster, like [`Node::shutdown`].
pub struct Node {
    id: String,
    endpoint: String,
    control_endpoint: Option<String>,
    store: Arc<Store>,
    default: Arc<TenantStore>,
    registry: Arc<Registry>,
    inbox: Arc<Inbox>,
    view: Arc<RwLock<Vec<MemberView>>>,
    stats: Arc<Stats>,
    nf_counters: Arc<NfCounters>,
    nf: Arc<NfSlot>,
    thread: Option<JoinHandle<()>>,
}

/// What an NF guest reaches through its host calls: the node's default tenant, global
/// reads over the cluster, and the node's NF counters.
struct NfContext {
    tenant: Arc<TenantStore>,
    inbox: Arc<Inbox>,
    registry: Arc<Registry>,
    counters: Arc<NfCounters>,
}

impl NfState for NfContext {
    fn counter_add(&self, key: &str, delta: i64) -> Result<i64, String> {
        self.tenant.add(key, delta).map_err(|e| e.to_string())
    }

    fn get(&self, key: &str) -> Option<Value> {
        self.tenant.get(key).map(|v| v.value)
    }

    fn set(&self, key: &str, value: Value) -> Result<(), String> {
        self.tenant.set(key, value).map(drop).map_err(|e| e.to_string())
    }

    fn del(&self, key: &str) -> bool {
        self.tenant.del(key)
    }

    fn global(&self, pattern: &str, reducer: &str, timeout: Duration, all: bool) -> Result<Option<Item>, String> {
        let consistency = if all { Consistency::All } else { Consistency::BestEffort };
        let options = GlobalOptions { timeout, consistency, ..GlobalOptions::default() };
        let answer = global_read(&self.inbox, &self.registry, pattern, reducer, options).map_err(|e| e.to_string())?;
        match answer.result {
            Reduced::Nothing => Ok(None),
            Reduced::Value(v) => Ok(Some(Item::of(v))),
            Reduced::Item(item) => Ok(Some(item)),
            Reduced::Items(_) => Err(format!("reducer {reducer} returns a list; NFs take one item")),
        }
    }

    fn take(&self, pattern: &str) -> Result<usize, String> {
        self.bring(pattern, true)
    }

    fn adopt_flow(&self, flow: &str, mode: FlowState) -> Result<usize, String> {
        if mode == FlowState::Off {
            return Ok(0);
        }
        // Every key of the flow, on any member: `flow:<key>:…` with the key escaped.
        self.bring(&format!("flow:{}:.*", regex::escape(flow)), mode == FlowState::Take)
    }

    fn metric_add(&self, name: &str, delta: i64) {
        *self.counters.metrics.lock().unwrap().entry(name.to_string()).or_default() += delta;
    }

    fn emit(&self, event: &str) {
        self.counters.events.fetch_add(1, Ordering::Relaxed);
        info!(target: "estate::nf", "{event}");
    }
}

impl NfContext {
    /// Brings the keys matching `pattern` here from the other members. With `take`,
    /// the members give their items up and each is merged into this node's (counters
    /// add up, otherwise the newest wins); without, the newest version of each key is
    /// copied here and the members keep theirs.
    fn bring(&self, pattern: &str, take: bool) -> Result<usize, String> {
        if take {
            let pattern = Pattern::new(pattern).map_err(|e| e.to_string())?;
            let timeout = GlobalOptions::default().timeout;
            let (tx, rx) = mpsc::channel();
            self.inbox.send(Command::Take { pattern, timeout, reply: tx }).map_err(|e| e.to_string())?;
            let taken = rx
                .recv_timeout(timeout + Duration::from_secs(10))
                .map_err(|_| GlobalError::Shutdown.to_string())?
                .map_err(|e| e.to_string())?;
            let brought = taken.len();
            for moving in taken {
                self.tenant.merge(moving).map_err(|e| e.to_string())?;
            }
            return Ok(brought);
        }
        let options = GlobalOptions::default();
        let answer = global_read(&self.inbox, &self.registry, pattern, "list", options).map_err(|e| e.to_string())?;
        let Reduced::Items(items) = answer.result else {
            return Ok(0);
        };
        // The newest version of each key wins (a flow that moved twice may have left
        // copies on two nodes); this node's own items are already here.
        let mut newest: HashMap<String, Item> = HashMap::new();
        for item in items.into_iter().filter(|i| i.origin != self.tenant.node()) {
            match newest.get(&item.key) {
                Some(have) if !crate::store::newer(item.version, &item.origin, have.version, &have.origin) => {}
                _ => {
                    newest.insert(item.key.clone(), item);
                }
            }
        }
        let adopted = newest.len();
        for (key, item) in newest {
            self.tenant.set(&key, item.value).map_err(|e| e.to_string())?;
        }
        Ok(adopted)
    }
}

/// A global read on behalf of a library call or an NF.
fn global_read(
    inbox: &Inbox,
    registry: &Registry,
    pattern: &str,
    reducer: &str,
    options: GlobalOptions,
) -> GlobalResult {
    let pattern = Pattern::new(pattern).map_err(|e| GlobalError::Invalid(e.to_string()))?;
    let reducer = registry.resolve(reducer).map_err(GlobalError::Invalid)?;
    let (tx, rx) = mpsc::channel();
    inbox.send(Command::Global { pattern, reducer, options, reply: tx })?;
    // The I/O thread completes every read at its deadline (a final Wasm reduction runs
    // under its own wall-time limit); the grace only covers a dead thread.
    rx.recv_timeout(options.timeout + Duration::from_secs(10)).map_err(|_| GlobalError::Shutdown)?
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node").field("id", &self.id).field("endpoint", &self.endpoint).finish_non_exhaustive()
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic())
}

fn socket_error<'a>(what: &'static str, endpoint: &'a str) -> impl FnOnce(zmq::Error) -> StartError + 'a {
    move |source| StartError::Socket { what, endpoint: endpoint.to_string(), source }
}

fn bind(ctx: &zmq::Context, kind: zmq::SocketType, endpoint: &str) -> Result<(zmq::Socket, String), StartError> {
    let socket = ctx.socket(kind).map_err(socket_error("creating a socket for", endpoint))?;
    socket.set_maxmsgsize(ZMQ_MAX_MSG).map_err(socket_error("configuring", endpoint))?;
    socket.set_linger(0).map_err(socket_error("configuring", endpoint))?;
    socket.bind(endpoint).map_err(socket_error("binding", endpoint))?;
    let bound = socket
        .get_last_endpoint()
        .map_err(socket_error("reading the bound endpoint of", endpoint))?
        .unwrap_or_else(|_| endpoint.to_string());
    Ok((socket, bound))
}

impl Node {
    /// Starts a node: binds its sockets, starts its I/O thread and workers, and greets
    /// the seeds.
    pub fn start(config: NodeConfig) -> Result<Node, StartError> {
        if !valid_id(&config.id) {
            return Err(StartError::InvalidId(config.id));
        }
        let ctx = zmq::Context::new();
        let (router, endpoint) = bind(&ctx, zmq::ROUTER, &config.listen)?;
        let control = match &config.control {
            Some(ep) => Some(bind(&ctx, zmq::ROUTER, ep)?),
            None => None,
        };
        let wake_ep = format!("inproc://estate-wake-{:032x}", rand::random::<u128>());
        let (wake_rx, _) = bind(&ctx, zmq::PULL, &wake_ep)?;
        let wake = ctx.socket(zmq::PUSH).map_err(socket_error("creating a socket for", &wake_ep))?;
        wake.connect(&wake_ep).map_err(socket_error("connecting", &wake_ep))?;

        let store = Arc::new(Store::new(&config.id));
        let default = store.tenant(DEFAULT_TENANT);
        let host = WasmHost::new(config.limits.clone()).map_err(StartError::Wasm)?;
        let registry = Arc::new(Registry::new(Arc::new(host)));
        let view = Arc::new(RwLock::new(Vec::new()));
        let stats = Arc::new(Stats::default());
        let nf_counters = Arc::new(NfCounters::default());
        let (tx, rx) = mpsc::channel();
        let inbox = Arc::new(Inbox { commands: tx, wake: Mutex::new(wake) });
        let nf = Arc::new(NfSlot::new(
            registry.host().clone(),
            Arc::new(NfContext {
                tenant: default.clone(),
                inbox: inbox.clone(),
                registry: registry.clone(),
                counters: nf_counters.clone(),
            }),
            nf_counters.clone(),
        ));
        let workers = Workers::start(WORKERS, inbox.clone(), &config.id)?;
        let control_endpoint = control.as_ref().map(|(_, ep)| ep.clone());
        let driver = Driver {
            membership: Membership::new(&config.id, &endpoint, config.join.clone(), config.timing),
            id: config.id.clone(),
            endpoint: endpoint.clone(),
            ctx,
            router,
            control: control.map(|(s, _)| s),
            wake: wake_rx,
            commands: rx,
            peers: HashMap::new(),
            store: store.clone(),
            registry: registry.clone(),
            workers,
            awaiting: HashMap::new(),
            reads: GlobalReads::default(),
            patterns: HashMap::new(),
            view: view.clone(),
            stats: stats.clone(),
            nf_counters: nf_counters.clone(),
            nf: nf.clone(),
            started: Instant::now(),
            leaving: false,
            handoff: None,
            handoffs_received: HandoffsReceived::default(),
        };
        driver.refresh_view();
        let thread = thread::Builder::new().name(format!("estate-io-{}", config.id)).spawn(move || driver.run())?;
        info!(id = %config.id, %endpoint, control = ?control_endpoint, "node started");
        Ok(Node {
            id: config.id,
            endpoint,
            control_endpoint,
            store,
            default,
            registry,
            inbox,
            view,
            stats,
            nf_counters,
            nf,
            thread: Some(thread),
        })
    }

    /// The node's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The endpoint the node listens on (with the actual port if `:*` was asked for).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The control endpoint, if one was configured.
    pub fn control_endpoint(&self) -> Option<&str> {
        self.control_endpoint.as_deref()
    }

    /// The node's store (every tenant).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Sets `key` in the default tenant; returns the new version.
    pub fn set(&self, key: &str, value: Value) -> Result<u64, StoreError> {
        self.default.set(key, value)
    }

    /// Reads `key` from the default tenant.
    pub fn get(&self, key: &str) -> Option<Versioned> {
        self.default.get(key)
    }

    /// Deletes `key` from the default tenant; returns whether it existed.
    pub fn del(&self, key: &str) -> bool {
        self.default.del(key)
    }

    /// Reads every live member's items of the default tenant whose key matches
    /// `pattern` and reduces them with the reducer named `reducer` (a built-in, or a
    /// loaded Wasm reducer). With `options.remote`, each member reduces its own items
    /// and sends a partial result.
    ///
    /// ```no_run
    /// # use estate::node::{Node, NodeConfig, GlobalOptions};
    /// let node = Node::start(NodeConfig::new("n1", "tcp://127.0.0.1:*")).unwrap();
    /// let answer = node.get_global("flow:.*", "count", GlobalOptions::default()).unwrap();
    /// println!("{:?} (missing: {:?})", answer.result, answer.missing);
    /// ```
    pub fn get_global(&self, pattern: &str, reducer: &str, options: GlobalOptions) -> GlobalResult {
        global_read(&self.inbox, &self.registry, pattern, reducer, options)
    }

    /// Runs the NF module `bytes`, built from `config`, over `packets`, with `fail` for
    /// guest faults; it replaces an NF already running. Its state lives in the default
    /// tenant; its counters appear in [`Node::nf_counters`] and `stats`.
    pub fn run_nf(
        &self,
        bytes: &[u8],
        config: &str,
        packets: Packets,
        fail: FailPolicy,
        flows: FlowState,
    ) -> Result<(), GuestError> {
        self.nf.start(bytes, config, packets, NfSettings { fail, flows })
    }

    /// The node's NF place: hot loading, replacement, unloading, status.
    pub fn nf(&self) -> &NfSlot {
        &self.nf
    }

    /// Counters of the node's NF.
    pub fn nf_counters(&self) -> &NfCounters {
        &self.nf_counters
    }

    /// Whether the NF (if any) has finished its input.
    pub fn nf_finished(&self) -> bool {
        self.nf.finished()
    }

    /// Loads (or atomically replaces) the Wasm reducer `name`; reads in flight finish
    /// on the module they started with.
    pub fn load_reducer(&self, name: &str, bytes: Vec<u8>, limits: &LimitOverrides) -> Result<ReducerInfo, LoadError> {
        let limits = limits.apply(self.registry.host().limits());
        self.registry.load(name, bytes, Some(limits))
    }

    /// Unloads the Wasm reducer `name`; returns whether it was loaded.
    pub fn unload_reducer(&self, name: &str) -> bool {
        self.registry.unload(name)
    }

    /// Every reducer this node knows: built-ins, then loaded ones.
    pub fn reducers(&self) -> Vec<ReducerInfo> {
        self.registry.list()
    }

    /// The membership view: this node first, then the other members by id.
    pub fn members(&self) -> Vec<MemberView> {
        self.view.read().unwrap().clone()
    }

    /// The node's counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Leaves the cluster (tells every member) and stops the I/O thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    /// Graceful scale-in: stops the NF, hands every item to the live members (each
    /// flow's keys to one member; counters are added into the member's own, other
    /// values merge newest-wins), waits at most `timeout` for their acknowledgements,
    /// then leaves the cluster. On success the node has stopped ([`Node::has_left`]).
    /// On failure (no live member, a refusal, a missing acknowledgement) it keeps its
    /// state, stays a member, and says why.
    pub fn leave(&self, timeout: Duration) -> Result<HandoffReport, String> {
        self.nf.unload();
        let (tx, rx) = mpsc::channel();
        self.inbox.send(Command::HandOff { timeout, waiter: HandoffWaiter::Api(tx) }).map_err(|e| e.to_string())?;
        let report =
            rx.recv_timeout(timeout + Duration::from_secs(10)).map_err(|_| "the node stopped".to_string())??;
        // The I/O thread exits once its `Leave` messages are queued.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.has_left() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        Ok(report)
    }

    /// Whether the node has left the cluster (its I/O thread stopped), e.g. after a
    /// graceful leave asked for over the control socket.
    pub fn has_left(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    fn stop(&mut self) {
        // The NF first: it may be waiting on a global read through the I/O thread.
        self.nf.unload();
        if let Some(thread) = self.thread.take() {
            if self.inbox.send(Command::Leave).is_ok() {
                let _ = thread.join();
            }
            info!(id = %self.id, "node stopped");
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The I/O thread's state.
struct Driver {
    id: String,
    endpoint: String,
    ctx: zmq::Context,
    router: zmq::Socket,
    control: Option<zmq::Socket>,
    wake: zmq::Socket,
    commands: mpsc::Receiver<Command>,
    /// One DEALER per peer endpoint we send to.
    peers: HashMap<String, zmq::Socket>,
    store: Arc<Store>,
    registry: Arc<Registry>,
    workers: Workers,
    /// Peers' pushed-down reads waiting for a module's bytes, by module hash.
    awaiting: HashMap<[u8; 32], Vec<AwaitingModule>>,
    membership: Membership,
    reads: GlobalReads<ReadCtx>,
    /// Compiled patterns of recent requests.
    patterns: HashMap<String, Pattern>,
    view: Arc<RwLock<Vec<MemberView>>>,
    stats: Arc<Stats>,
    nf_counters: Arc<NfCounters>,
    nf: Arc<NfSlot>,
    started: Instant,
    leaving: bool,
    handoff: Option<Handoff>,
    handoffs_received: HandoffsReceived,
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

/// Flattens the answers of a fetch-all read into items.
fn items_of(parts: Vec<Answer>) -> Result<Vec<Item>, String> {
    let mut items = Vec::new();
    for part in parts {
        match part {
            Answer::Items(mut i) => items.append(&mut i),
            Answer::Taken(taken) => items.extend(taken.into_iter().map(|m| m.item)),
            _ => return Err("a member sent a partial where items were asked for".into()),
        }
    }
    Ok(items)
}

impl Driver {
    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn run(mut self) {
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

    fn reject(&self, from: &str, what: &str) {
        let n = bump(&self.stats.rejected);
        debug!(%from, total = n, "dropped {what}");
    }

    fn on_envelope(&mut self, env: Envelope) {
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

    /// Answers a member's global read: its items, or (push-down) their partial.
    fn serve(
        &mut self,
        from: String,
        id: u128,
        tenant: &str,
        pattern: &str,
        reducer: Option<RemoteReducer>,
        take: bool,
    ) {
        let pattern = match self.pattern(pattern) {
            Ok(p) => p,
            Err(e) => return self.send_answer(&from, id, Err(e)),
        };
        if take {
            if reducer.is_some() {
                return self.send_answer(&from, id, Err("take cannot be pushed down".into()));
            }
            let store = self.store.tenant(tenant);
            let items = store.take_matching(&pattern);
            info!(%from, items = items.len(), "items taken over by a member");
            let reply = self.envelope(Body::GlobalReply { id, result: Ok(Answer::Taken(items)) });
            let frame = wire::encode(&reply);
            if frame.len() > MAX_FRAME {
                // Too large to send: nothing moves. Not an error answer, which would
                // fail the whole take and lose what other members already gave up.
                warn!(%from, size = frame.len(), "items to give up exceed the frame limit; they stay here");
                if let Body::GlobalReply { result: Ok(Answer::Taken(items)), .. } = reply.body {
                    for moving in items {
                        let _ = store.put_back(moving);
                    }
                }
                return self.send_answer(&from, id, Ok(Answer::Taken(Vec::new())));
            }
            return self.send_frame_to_member(&from, frame);
        }
        if let Some(RemoteReducer::Builtin(b)) = reducer {
            let result = self.builtin_partial(tenant, &pattern, b);
            return self.send_answer(&from, id, result);
        }
        match reducer {
            None => {
                let items = self.store.existing_tenant(tenant).map(|t| t.matching(&pattern)).unwrap_or_default();
                self.send_answer(&from, id, Ok(Answer::Items(items)));
            }
            Some(RemoteReducer::Builtin(_)) => unreachable!("handled above"),
            Some(RemoteReducer::Wasm(hash)) => match self.registry.module(&hash) {
                Some(_) => {
                    let items = self.encoded_items(tenant, &pattern);
                    self.reduce_for_peer(from, id, hash, items);
                }
                None => {
                    let items = self.encoded_items(tenant, &pattern);
                    let first = !self.awaiting.contains_key(&hash);
                    let since = self.now();
                    self.awaiting.entry(hash).or_default().push(AwaitingModule {
                        from: from.clone(),
                        id,
                        items,
                        since,
                    });
                    if first {
                        self.send_to_member(&from, Body::ModuleRequest { hash });
                    }
                }
            },
        }
    }

    /// This node's partial of a pushed-down built-in, straight from the store.
    fn builtin_partial(&self, tenant: &str, pattern: &Pattern, reducer: Builtin) -> Result<Answer, String> {
        let mut builder = PartialBuilder::new(reducer, &self.id);
        if let Some(t) = self.store.existing_tenant(tenant) {
            t.for_each_matching(pattern, |key, v| builder.push(key, &v.value, v.version)).map_err(|e| e.to_string())?;
        }
        Ok(Answer::Builtin(builder.finish()))
    }

    /// The matching items of `tenant`, encoded for a guest straight from the store.
    fn encoded_items(&self, tenant: &str, pattern: &Pattern) -> Vec<u8> {
        let mut writer = ItemsWriter::default();
        if let Some(t) = self.store.existing_tenant(tenant) {
            let pushed: Result<(), Infallible> = t.for_each_matching(pattern, |key, v| {
                writer.push(key, &v.value, &self.id, v.version);
                Ok(())
            });
            let Ok(()) = pushed;
        }
        writer.finish()
    }

    fn reduce_for_peer(&self, to: String, id: u128, hash: [u8; 32], items: Vec<u8>) {
        let registry = self.registry.clone();
        self.workers.submit(move || {
            let result = match registry.module(&hash) {
                Some(module) => registry
                    .host()
                    .reduce_encoded(&module, &items, Phase::Items)
                    .map(Answer::Wasm)
                    .map_err(|e| e.to_string()),
                None => Err("the module was evicted before it ran".into()),
            };
            Command::PeerAnswer { to, id, result }
        });
    }

    /// Graceful scale-in: gives every item of every tenant to the live members, in
    /// batches, and leaves once all are acknowledged. The keys of one flow
    /// (`flow:<flow>:…`) go to the same member, chosen by rendezvous hashing so the
    /// state spreads evenly; a flow that later moves elsewhere is taken from there like
    /// from any member. Refused or unacknowledged batches are put back: the node then
    /// reports the failure and stays, with its state.
    fn start_handoff(&mut self, timeout: Duration, waiter: HandoffWaiter) {
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
    fn hand_over(&mut self, tenant: &str, items: Vec<Moving>) {
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

    fn on_handoff_ack(&mut self, from: &str, id: u128, stored: u64, refused: Vec<(String, String)>) {
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
    fn check_handoff(&mut self) {
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

    fn finish_waiter(&self, waiter: HandoffWaiter, result: Result<HandoffReport, String>) {
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

    /// Stores items given up to this node (by a take nobody waits for any more).
    fn keep_taken(&mut self, items: Vec<Moving>) {
        // Handing over: they go along with the rest.
        if self.handoff.is_some() {
            return self.hand_over(DEFAULT_TENANT, items);
        }
        let tenant = self.store.tenant(DEFAULT_TENANT);
        for moving in items {
            let key = moving.item.key.clone();
            if let Err(e) = tenant.merge(moving) {
                // Only once the node has handed everything over and is leaving.
                error!(%key, "a taken item arrived too late to keep, and is lost: {e}");
            }
        }
    }

    fn send_answer(&mut self, to: &str, id: u128, result: Result<Answer, String>) {
        let mut frame = wire::encode(&self.envelope(Body::GlobalReply { id, result }));
        // Never send a frame the other side will refuse: say so instead.
        if frame.len() > MAX_FRAME {
            let result = Err(format!("reply of {} bytes exceeds the frame limit of {MAX_FRAME}", frame.len()));
            frame = wire::encode(&self.envelope(Body::GlobalReply { id, result }));
        }
        self.send_frame_to_member(to, frame);
    }

    fn expire_awaiting(&mut self, now: u64) {
        let expired: Vec<[u8; 32]> = self
            .awaiting
            .iter()
            .filter(|(_, w)| w.iter().all(|a| now.saturating_sub(a.since) > MODULE_WAIT_MS))
            .map(|(h, _)| *h)
            .collect();
        for hash in expired {
            for a in self.awaiting.remove(&hash).unwrap_or_default() {
                self.send_answer(&a.from, a.id, Err("the module's bytes never arrived".into()));
            }
        }
    }

    fn pattern(&mut self, pattern: &str) -> Result<Pattern, String> {
        if let Some(p) = self.patterns.get(pattern) {
            return Ok(p.clone());
        }
        let compiled = Pattern::new(pattern).map_err(|e| e.to_string())?;
        if self.patterns.len() >= PATTERN_CACHE {
            self.patterns.clear();
        }
        self.patterns.insert(pattern.to_string(), compiled.clone());
        Ok(compiled)
    }

    fn drain_commands(&mut self) {
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

    fn on_answer(&mut self, id: u128, from: &str, result: Result<Answer, String>) {
        // A take's items arriving after its deadline were deleted at the sender: they
        // are kept here rather than lost.
        let late = match &result {
            Ok(Answer::Taken(items)) if !items.is_empty() && !self.reads.is_outstanding(id) => Some(items.clone()),
            _ => None,
        };
        if let Some(items) = late {
            warn!(%from, items = items.len(), "a member's take answer arrived late; keeping its items");
            return self.keep_taken(items);
        }
        match self.reads.reply(id, from, result) {
            ReplyOutcome::Rejected => self.reject(from, "a reply to no outstanding read"),
            ReplyOutcome::Recorded => {}
            ReplyOutcome::Complete(done) => self.finish_read(done),
        }
    }

    fn start_read(&mut self, pattern: &Pattern, reducer: ReducerRef, options: GlobalOptions, waiter: Waiter) {
        if options.remote && options.take {
            return self.notify(waiter, Err(GlobalError::Invalid("take cannot be combined with push-down".into())));
        }
        if options.remote && !reducer.combinable() {
            let message = format!(
                "reducer {} is not combinable, so it cannot be pushed down to the peers; run it without --remote",
                reducer.name()
            );
            return self.notify(waiter, Err(GlobalError::Invalid(message)));
        }
        let id: u128 = rand::random();
        let mut asked: BTreeSet<String> = self.membership.live().map(|(id, _)| id.clone()).collect();
        let remote = match (&reducer, options.remote) {
            (_, false) => None,
            (ReducerRef::Builtin(b), true) => Some(RemoteReducer::Builtin(*b)),
            (ReducerRef::Wasm(l), true) => Some(RemoteReducer::Wasm(*l.module.hash())),
        };
        for member in &asked {
            let body = Body::GlobalRequest {
                id,
                tenant: DEFAULT_TENANT.to_string(),
                pattern: pattern.source().to_string(),
                reducer: remote.clone(),
                take: options.take,
            };
            self.send_to_member(member, body);
        }
        asked.insert(self.id.clone());
        let deadline = self.now() + options.timeout.as_millis() as u64;
        let ctx = ReadCtx { waiter, reducer: reducer.clone(), remote: options.remote };
        self.reads.start(id, options.consistency, asked, deadline, ctx);
        // This node answers its own read like any member; a Wasm partial is computed on
        // a worker and arrives as a command.
        match (reducer, options.remote) {
            // A take leaves this node's own items where they are.
            (_, false) if options.take => self.on_answer(id, &self.id.clone(), Ok(Answer::Taken(Vec::new()))),
            (_, false) => {
                let local = self.store.existing_tenant(DEFAULT_TENANT).map(|t| t.matching(pattern)).unwrap_or_default();
                self.on_answer(id, &self.id.clone(), Ok(Answer::Items(local)));
            }
            (ReducerRef::Builtin(b), true) => {
                let result = self.builtin_partial(DEFAULT_TENANT, pattern, b);
                self.on_answer(id, &self.id.clone(), result);
            }
            (ReducerRef::Wasm(loaded), true) => {
                let local = self.encoded_items(DEFAULT_TENANT, pattern);
                let host = self.registry.host().clone();
                self.workers.submit(move || {
                    let result = host
                        .reduce_encoded(&loaded.module, &local, Phase::Items)
                        .map(Answer::Wasm)
                        .map_err(|e| e.to_string());
                    Command::LocalAnswer { id, result }
                });
            }
        }
    }

    /// Reduces a finished read's answers and tells its waiter (via a worker for Wasm).
    fn finish_read(&mut self, (ctx, gathered): Completion<ReadCtx>) {
        let Gathered { answered, missing, parts } = match gathered {
            Ok(g) => g,
            Err(e) => return self.notify(ctx.waiter, Err(e)),
        };
        if let Waiter::Take(tx) = ctx.waiter {
            let mut taken = Vec::new();
            for part in parts {
                match part {
                    Answer::Taken(mut items) => taken.append(&mut items),
                    _ => warn!("a member answered a take with something else"),
                }
            }
            if let Err(mpsc::SendError(Ok(items))) = tx.send(Ok(taken)) {
                // The taker gave up waiting: the items are this node's now all the same.
                self.keep_taken(items);
            }
            return;
        }
        let (name, remote) = (ctx.reducer.name().to_string(), ctx.remote);
        let answer = move |result| GlobalAnswer { reducer: name, remote, result, answered, missing };
        match ctx.reducer.clone() {
            ReducerRef::Builtin(b) => {
                let reduced = if ctx.remote {
                    let mut partials = Vec::new();
                    for part in parts {
                        match part {
                            Answer::Builtin(p) => partials.push(p),
                            _ => {
                                let e =
                                    GlobalError::Invalid("a member sent items where a partial was asked for".into());
                                return self.notify(ctx.waiter, Err(e));
                            }
                        }
                    }
                    reduce::combine(b, partials)
                } else {
                    match items_of(parts) {
                        Ok(items) => reduce::reduce(b, items),
                        Err(e) => return self.notify(ctx.waiter, Err(GlobalError::Invalid(e))),
                    }
                };
                let result = reduced.map(answer).map_err(GlobalError::from);
                self.notify(ctx.waiter, result);
            }
            ReducerRef::Wasm(loaded) => {
                let host = self.registry.host().clone();
                let (waiter, name) = (ctx.waiter, loaded.name.clone());
                self.workers.submit(move || {
                    let run = || -> Result<Option<Item>, String> {
                        if remote {
                            let mut partials = Vec::new();
                            for part in parts {
                                match part {
                                    Answer::Wasm(Some(item)) => partials.push(item),
                                    Answer::Wasm(None) => {}
                                    _ => return Err("a member sent items where a partial was asked for".into()),
                                }
                            }
                            if partials.is_empty() {
                                return Ok(None);
                            }
                            let combined =
                                host.reduce(&loaded.module, &partials, Phase::Partials).map_err(|e| e.to_string())?;
                            match combined {
                                Some(item) => host.finish(&loaded.module, item).map_err(|e| e.to_string()),
                                None => Ok(None),
                            }
                        } else {
                            host.reduce_all(&loaded.module, &items_of(parts)?).map_err(|e| e.to_string())
                        }
                    };
                    let result = match run() {
                        Ok(Some(item)) => Ok(answer(Reduced::Item(item))),
                        Ok(None) => Ok(answer(Reduced::Nothing)),
                        Err(message) => {
                            Err(GlobalError::Member { member: format!("reducer {name} on this node"), message })
                        }
                    };
                    Command::Finished { waiter, result }
                });
            }
        }
    }

    fn drain_control(&mut self) {
        for _ in 0..256 {
            let Some(control) = &self.control else { return };
            let parts = match control.recv_multipart(zmq::DONTWAIT) {
                Ok(parts) => parts,
                Err(_) => return,
            };
            // A REQ client sends [routing id, empty delimiter, request].
            let [identity, delimiter, frame] = parts.as_slice() else {
                bump(&self.stats.control_malformed);
                warn!(parts = parts.len(), "dropped a control message with an unexpected frame count");
                continue;
            };
            if !delimiter.is_empty() {
                bump(&self.stats.control_malformed);
                continue;
            }
            let identity = identity.clone();
            match wire::decode_request(frame) {
                Ok(req) => self.on_control(identity, req),
                Err(e) => {
                    bump(&self.stats.control_malformed);
                    warn!("malformed control request: {e}");
                    self.reply_control(identity, &ControlReply::Error(format!("malformed request: {e}")));
                }
            }
        }
    }

    fn on_control(&mut self, identity: Vec<u8>, req: ControlRequest) {
        let tenant = self.store.tenant(DEFAULT_TENANT);
        let replace = matches!(req, ControlRequest::NfReplace { .. });
        if self.handoff.is_some() && matches!(req, ControlRequest::Set { .. } | ControlRequest::Del { .. }) {
            // The state is on its way to the other members: a write here now would stay
            // behind and be lost when the node exits.
            let reply = ControlReply::Error("this node is handing its state over and leaving; write elsewhere".into());
            return self.reply_control(identity, &reply);
        }
        let reply = match req {
            ControlRequest::Set { key, value } => match tenant.set(&key, value) {
                Ok(version) => ControlReply::Set(version),
                Err(e) => ControlReply::Error(e.to_string()),
            },
            ControlRequest::Get { key } => ControlReply::Value(tenant.get(&key).map(|v| (v.value, v.version))),
            ControlRequest::Del { key } => ControlReply::Deleted(tenant.del(&key)),
            ControlRequest::Members => ControlReply::Members(self.view.read().unwrap().clone()),
            ControlRequest::Stats => {
                let mut rows = self.stats.snapshot();
                rows.extend(self.nf_counters.snapshot());
                ControlReply::Stats(rows)
            }
            ControlRequest::ReducerList => ControlReply::Reducers(self.registry.list()),
            ControlRequest::NfStatus => ControlReply::Nf(self.nf.status().to_string()),
            ControlRequest::NfUnload => {
                // Off the I/O thread: the NF may be waiting on a global read through it.
                let nf = self.nf.clone();
                self.workers.submit(move || {
                    let reply = ControlReply::Nf(if nf.unload() { "unloaded" } else { "none" }.into());
                    Command::ControlDone { identity, reply }
                });
                return;
            }
            ControlRequest::Leave { timeout_ms } => {
                let (nf, timeout) = (self.nf.clone(), Duration::from_millis(timeout_ms));
                self.workers.submit(move || {
                    nf.unload();
                    Command::HandOff { timeout, waiter: HandoffWaiter::Control(identity) }
                });
                return;
            }
            ControlRequest::NfLoad { bytes, config } | ControlRequest::NfReplace { bytes, config } => {
                // Compiling and building the instance can take a while: off the I/O thread.
                let nf = self.nf.clone();
                self.workers.submit(move || {
                    let done = if replace { nf.replace(&bytes, &config) } else { nf.load(&bytes, &config) };
                    let reply = match done {
                        Ok(what) => ControlReply::Nf(what.into()),
                        Err(e) => ControlReply::Error(e),
                    };
                    Command::ControlDone { identity, reply }
                });
                return;
            }
            ControlRequest::ReducerUnload { name } => ControlReply::Unloaded(self.registry.unload(&name)),
            ControlRequest::ReducerLoad { name, bytes, limits } => {
                // Compiling can take a while: off the I/O thread.
                let registry = self.registry.clone();
                self.workers.submit(move || {
                    let limits = limits.apply(registry.host().limits());
                    let reply = match registry.load(&name, bytes, Some(limits)) {
                        Ok(info) => {
                            info!(reducer = %info.name, hash = %info.hash, "reducer loaded");
                            ControlReply::Loaded(info)
                        }
                        Err(e) => ControlReply::Error(e.to_string()),
                    };
                    Command::ControlDone { identity, reply }
                });
                return;
            }
            ControlRequest::Global { pattern, reducer, timeout_ms, consistency, remote } => {
                let parsed = self
                    .registry
                    .resolve(&reducer)
                    .and_then(|r| Pattern::new(&pattern).map(|p| (r, p)).map_err(|e| e.to_string()));
                match parsed {
                    Ok((reducer, pattern)) => {
                        let timeout = Duration::from_millis(timeout_ms);
                        let options = GlobalOptions { timeout, consistency, remote, take: false };
                        self.start_read(&pattern, reducer, options, Waiter::Control(identity));
                        return;
                    }
                    Err(e) => ControlReply::Error(e),
                }
            }
        };
        self.reply_control(identity, &reply);
    }

    fn reply_control(&self, identity: Vec<u8>, reply: &ControlReply) {
        if let Some(control) = &self.control {
            let frames: [&[u8]; 3] = [&identity, &[], &wire::encode_reply(reply)];
            if let Err(e) = control.send_multipart(frames, zmq::DONTWAIT) {
                warn!("control reply dropped: {e}");
            }
        }
    }

    fn notify(&self, waiter: Waiter, result: GlobalResult) {
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

    fn envelope(&self, body: Body) -> Envelope {
        Envelope { from: self.id.clone(), clock: self.store.clock().tick(), body }
    }

    fn send_to_member(&mut self, member: &str, body: Body) {
        let frame = wire::encode(&self.envelope(body));
        self.send_frame_to_member(member, frame);
    }

    fn send_frame_to_member(&mut self, member: &str, frame: Vec<u8>) {
        match self.membership.endpoint_of(member).map(str::to_string) {
            Some(ep) => self.send_frame(&ep, frame),
            None => debug!(%member, "not sent: no longer a member"),
        }
    }

    fn send(&mut self, endpoint: &str, body: Body) {
        let frame = wire::encode(&self.envelope(body));
        self.send_frame(endpoint, frame);
    }

    /// Sends an encoded peer frame.
    fn send_frame(&mut self, endpoint: &str, frame: Vec<u8>) {
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

    fn connect(&self, endpoint: &str) -> Result<zmq::Socket, zmq::Error> {
        let socket = self.ctx.socket(zmq::DEALER)?;
        socket.set_sndhwm(PEER_SNDHWM)?;
        socket.set_linger(0)?;
        socket.connect(endpoint)?;
        Ok(socket)
    }

    fn apply(&mut self, actions: Vec<Action>) {
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

    fn refresh_view(&self) {
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
