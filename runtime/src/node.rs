//! A running node: the local store, and the ZeroMQ driver that runs membership and
//! global reads.
//!
//! One I/O thread owns every socket (ZeroMQ sockets are not thread-safe): the ROUTER at
//! the listen endpoint that receives every peer message, one DEALER per peer for
//! sending, the optional control ROUTER for the CLI, and an `inproc` wake-up socket.
//! Library calls reach it through a channel plus a wake-up frame; local `set`/`get`/`del`
//! never go through it (the store is shared and `Sync`).
//!
//! Peer messages are one-way: a reply goes out through the replier's DEALER to the
//! requester's *membership* endpoint, never to an address named in the request. A
//! message from a node that is not a live member is dropped and counted (a `Hello` is
//! the only way in).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use estate_guest::Value;
use tracing::{debug, info, warn};

use crate::global::{Completion, GlobalError, GlobalReads, ReplyOutcome};
use crate::membership::{Action, Membership, Timing};
use crate::pattern::Pattern;
use crate::reduce::Builtin;
use crate::store::{DEFAULT_TENANT, Store, StoreError, TenantStore, Versioned};
use crate::wire::{
    self, Body, ControlReply, ControlRequest, DecodeError, Envelope, GlobalAnswer, MAX_FRAME,
    MemberView,
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
}

impl NodeConfig {
    /// A config with default timing and no seeds or control socket.
    pub fn new(id: &str, listen: &str) -> NodeConfig {
        NodeConfig {
            id: id.into(),
            listen: listen.into(),
            join: Vec::new(),
            control: None,
            timing: Timing::default(),
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
}

impl Default for GlobalOptions {
    fn default() -> Self {
        GlobalOptions {
            timeout: Duration::from_millis(1000),
            consistency: Consistency::BestEffort,
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
    /// The I/O thread could not be spawned.
    #[error("spawning the I/O thread: {0}")]
    Thread(#[from] std::io::Error),
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
    /// Well-formed messages dropped: from non-members, or replies to no outstanding read.
    pub rejected: AtomicU64,
    /// Sends dropped because a peer's queue was full.
    pub send_dropped: AtomicU64,
    /// Control requests that could not be decoded.
    pub control_malformed: AtomicU64,
    /// Global reads served for peers.
    pub served: AtomicU64,
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
        ]
    }
}

fn bump(counter: &AtomicU64) -> u64 {
    counter.fetch_add(1, Ordering::Relaxed) + 1
}

type GlobalResult = Result<GlobalAnswer, GlobalError>;

enum Command {
    Global {
        pattern: Pattern,
        reducer: Builtin,
        options: GlobalOptions,
        reply: mpsc::Sender<GlobalResult>,
    },
    Leave,
}

enum Waiter {
    Api(mpsc::Sender<GlobalResult>),
    Control(Vec<u8>),
}

/// A running estate node. Dropping it leaves the cluster, like [`Node::shutdown`].
pub struct Node {
    id: String,
    endpoint: String,
    control_endpoint: Option<String>,
    store: Arc<Store>,
    default: Arc<TenantStore>,
    commands: mpsc::Sender<Command>,
    wake: Mutex<zmq::Socket>,
    view: Arc<RwLock<Vec<MemberView>>>,
    stats: Arc<Stats>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic())
}

fn bind(
    ctx: &zmq::Context,
    kind: zmq::SocketType,
    endpoint: &str,
) -> Result<(zmq::Socket, String), StartError> {
    let err = |what, source| StartError::Socket {
        what,
        endpoint: endpoint.to_string(),
        source,
    };
    let socket = ctx
        .socket(kind)
        .map_err(|e| err("creating a socket for", e))?;
    socket
        .set_maxmsgsize(ZMQ_MAX_MSG)
        .map_err(|e| err("configuring", e))?;
    socket.set_linger(0).map_err(|e| err("configuring", e))?;
    socket.bind(endpoint).map_err(|e| err("binding", e))?;
    let bound = socket
        .get_last_endpoint()
        .map_err(|e| err("reading the bound endpoint of", e))?
        .unwrap_or_else(|_| endpoint.to_string());
    Ok((socket, bound))
}

impl Node {
    /// Starts a node: binds its sockets, starts its I/O thread, and greets the seeds.
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
        let wake = ctx.socket(zmq::PUSH).map_err(|source| StartError::Socket {
            what: "creating a socket for",
            endpoint: wake_ep.clone(),
            source,
        })?;
        wake.connect(&wake_ep)
            .map_err(|source| StartError::Socket {
                what: "connecting",
                endpoint: wake_ep.clone(),
                source,
            })?;

        let store = Arc::new(Store::new(&config.id));
        let default = store.tenant(DEFAULT_TENANT);
        let view = Arc::new(RwLock::new(Vec::new()));
        let stats = Arc::new(Stats::default());
        let (tx, rx) = mpsc::channel();
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
            reads: GlobalReads::default(),
            patterns: HashMap::new(),
            view: view.clone(),
            stats: stats.clone(),
            started: Instant::now(),
            leaving: false,
        };
        driver.refresh_view();
        let thread = thread::Builder::new()
            .name(format!("estate-io-{}", config.id))
            .spawn(move || driver.run())?;
        info!(id = %config.id, %endpoint, control = ?control_endpoint, "node started");
        Ok(Node {
            id: config.id,
            endpoint,
            control_endpoint,
            store,
            default,
            commands: tx,
            wake: Mutex::new(wake),
            view,
            stats,
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
    /// `pattern` and reduces them with `reducer`.
    ///
    /// ```no_run
    /// # use estate::node::{Node, NodeConfig, GlobalOptions};
    /// # use estate::reduce::Builtin;
    /// let node = Node::start(NodeConfig::new("n1", "tcp://127.0.0.1:*")).unwrap();
    /// let answer = node.get_global("flow:.*", Builtin::Count, GlobalOptions::default()).unwrap();
    /// println!("{:?} (missing: {:?})", answer.result, answer.missing);
    /// ```
    pub fn get_global(
        &self,
        pattern: &str,
        reducer: Builtin,
        options: GlobalOptions,
    ) -> Result<GlobalAnswer, GlobalError> {
        let pattern = Pattern::new(pattern).map_err(|e| GlobalError::Invalid(e.to_string()))?;
        let (tx, rx) = mpsc::channel();
        self.send(Command::Global {
            pattern,
            reducer,
            options,
            reply: tx,
        })?;
        // The I/O thread completes every read at its deadline; the grace only covers a
        // thread that died.
        rx.recv_timeout(options.timeout + Duration::from_secs(5))
            .map_err(|_| GlobalError::Shutdown)?
    }

    /// The membership view: this node first, then the other members by id.
    pub fn members(&self) -> Vec<MemberView> {
        self.view.read().unwrap().clone()
    }

    /// The node's counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    fn send(&self, cmd: Command) -> Result<(), GlobalError> {
        self.commands.send(cmd).map_err(|_| GlobalError::Shutdown)?;
        let wake = self.wake.lock().unwrap();
        wake.send(&[][..], zmq::DONTWAIT)
            .map_err(|_| GlobalError::Shutdown)
    }

    /// Leaves the cluster (tells every member) and stops the I/O thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(thread) = self.thread.take() {
            if self.send(Command::Leave).is_ok() {
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
    membership: Membership,
    reads: GlobalReads<Waiter>,
    /// Compiled patterns of recent peer requests.
    patterns: HashMap<String, Pattern>,
    view: Arc<RwLock<Vec<MemberView>>>,
    stats: Arc<Stats>,
    started: Instant,
    leaving: bool,
}

const PATTERN_CACHE: usize = 256;

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
                .map_or(self.membership.next_deadline(), |d| {
                    d.min(self.membership.next_deadline())
                });
            let timeout = next.saturating_sub(now).min(1000) as i64;
            let (peer_ready, wake_ready, control_ready) = {
                let mut items = vec![
                    self.router.as_poll_item(zmq::POLLIN),
                    self.wake.as_poll_item(zmq::POLLIN),
                ];
                if let Some(c) = &self.control {
                    items.push(c.as_poll_item(zmq::POLLIN));
                }
                if let Err(e) = zmq::poll(&mut items, timeout) {
                    warn!("poll failed: {e}");
                }
                (
                    items[0].is_readable(),
                    items[1].is_readable(),
                    items.get(2).is_some_and(|i| i.is_readable()),
                )
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
                self.complete(done);
            }
        }
        for waiter in self.reads.abort() {
            self.notify(waiter, Err(GlobalError::Shutdown));
        }
        // Closing the peer sockets lets each deliver its queued `Leave` within the linger.
        for (_, socket) in self.peers.drain() {
            let _ = socket.set_linger(LINGER_MS);
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
            // ROUTER prepends the sender's routing id; a peer sends exactly one frame.
            let [_, frame] = parts.as_slice() else {
                let n = bump(&self.stats.malformed);
                warn!(
                    parts = parts.len(),
                    total = n,
                    "dropped a peer message with an unexpected frame count"
                );
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
                    warn!(
                        len = frame.len(),
                        total = n,
                        "dropped a malformed peer frame: {e}"
                    );
                }
            }
        }
    }

    fn on_envelope(&mut self, env: Envelope) {
        let now = self.now();
        self.store.clock().observe(env.clock);
        let from = env.from;
        match env.body {
            Body::Member(msg) => {
                let mut actions = Vec::new();
                self.membership.handle(&from, msg, now, &mut actions);
                self.apply(actions);
                self.refresh_view();
            }
            Body::GlobalRequest {
                id,
                tenant,
                pattern,
            } => {
                if !self.membership.is_live(&from) {
                    let n = bump(&self.stats.rejected);
                    debug!(%from, total = n, "dropped a global request from a non-member");
                    return;
                }
                self.membership.heard(&from, now);
                let result = self.local_items(&tenant, &pattern);
                bump(&self.stats.served);
                let mut reply = Body::GlobalReply { id, result };
                // Never send a frame the other side will refuse: say so instead.
                let size = wire::encode(&self.envelope(reply.clone())).len();
                if size > MAX_FRAME {
                    reply = Body::GlobalReply {
                        id,
                        result: Err(format!(
                            "reply of {size} bytes exceeds the frame limit of {MAX_FRAME}"
                        )),
                    };
                }
                if let Some(ep) = self.membership.endpoint_of(&from).map(str::to_string) {
                    self.send(&ep, reply);
                }
            }
            Body::GlobalReply { id, result } => {
                if !self.membership.is_live(&from) {
                    bump(&self.stats.rejected);
                    return;
                }
                self.membership.heard(&from, now);
                if let Err(e) = &result {
                    warn!(%from, "peer could not answer a global read: {e}");
                }
                match self.reads.reply(id, &from, result) {
                    ReplyOutcome::Rejected => {
                        let n = bump(&self.stats.rejected);
                        debug!(%from, total = n, "dropped a reply to no outstanding read");
                    }
                    ReplyOutcome::Recorded => {}
                    ReplyOutcome::Complete(done) => self.complete(done),
                }
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

    fn local_items(
        &mut self,
        tenant: &str,
        pattern: &str,
    ) -> Result<Vec<estate_guest::Item>, String> {
        let pattern = self.pattern(pattern)?;
        Ok(self
            .store
            .existing_tenant(tenant)
            .map(|t| t.matching(&pattern))
            .unwrap_or_default())
    }

    fn drain_commands(&mut self) {
        while self.wake.recv_bytes(zmq::DONTWAIT).is_ok() {}
        while let Ok(cmd) = self.commands.try_recv() {
            match cmd {
                Command::Global {
                    pattern,
                    reducer,
                    options,
                    reply,
                } => {
                    self.start_read(&pattern, reducer, options, Waiter::Api(reply));
                }
                Command::Leave => {
                    let mut actions = Vec::new();
                    self.membership.leave(&mut actions);
                    self.apply(actions);
                    self.leaving = true;
                }
            }
        }
    }

    fn start_read(
        &mut self,
        pattern: &Pattern,
        reducer: Builtin,
        options: GlobalOptions,
        waiter: Waiter,
    ) {
        let id: u128 = rand::random();
        let local = self
            .store
            .existing_tenant(DEFAULT_TENANT)
            .map(|t| t.matching(pattern))
            .unwrap_or_default();
        let asked: BTreeSet<String> = self.membership.live().map(|(id, _)| id.clone()).collect();
        let source = pattern.source().to_string();
        for member in &asked {
            if let Some(ep) = self.membership.endpoint_of(member).map(str::to_string) {
                let body = Body::GlobalRequest {
                    id,
                    tenant: DEFAULT_TENANT.to_string(),
                    pattern: source.clone(),
                };
                self.send(&ep, body);
            }
        }
        let deadline = self.now() + options.timeout.as_millis() as u64;
        if let Some(done) = self.reads.start(
            id,
            reducer,
            options.consistency,
            &self.id,
            local,
            asked,
            deadline,
            waiter,
        ) {
            self.complete(done);
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
                warn!(
                    parts = parts.len(),
                    "dropped a control message with an unexpected frame count"
                );
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
                    self.reply_control(
                        identity,
                        &ControlReply::Error(format!("malformed request: {e}")),
                    );
                }
            }
        }
    }

    fn on_control(&mut self, identity: Vec<u8>, req: ControlRequest) {
        let tenant = self.store.tenant(DEFAULT_TENANT);
        let reply = match req {
            ControlRequest::Set { key, value } => match tenant.set(&key, value) {
                Ok(version) => ControlReply::Set(version),
                Err(e) => ControlReply::Error(e.to_string()),
            },
            ControlRequest::Get { key } => {
                ControlReply::Value(tenant.get(&key).map(|v| (v.value, v.version)))
            }
            ControlRequest::Del { key } => ControlReply::Deleted(tenant.del(&key)),
            ControlRequest::Members => ControlReply::Members(self.view.read().unwrap().clone()),
            ControlRequest::Stats => ControlReply::Stats(self.stats.snapshot()),
            ControlRequest::Global {
                pattern,
                reducer,
                timeout_ms,
                consistency,
            } => {
                let parsed = Builtin::from_str(&reducer).and_then(|r| {
                    Pattern::new(&pattern)
                        .map(|p| (r, p))
                        .map_err(|e| e.to_string())
                });
                match parsed {
                    Ok((reducer, pattern)) => {
                        let options = GlobalOptions {
                            timeout: Duration::from_millis(timeout_ms),
                            consistency,
                        };
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

    fn complete(&mut self, (waiter, result): Completion<Waiter>) {
        self.notify(waiter, result);
    }

    fn notify(&self, waiter: Waiter, result: GlobalResult) {
        match waiter {
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
        Envelope {
            from: self.id.clone(),
            clock: self.store.clock().tick(),
            body,
        }
    }

    fn send(&mut self, endpoint: &str, body: Body) {
        let frame = wire::encode(&self.envelope(body));
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
        let socket = &self.peers[endpoint];
        if let Err(e) = socket.send(frame, zmq::DONTWAIT) {
            let n = bump(&self.stats.send_dropped);
            debug!(%endpoint, total = n, "send dropped: {e}");
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
                    let live_eps: BTreeSet<&str> = self
                        .membership
                        .members()
                        .values()
                        .map(|m| m.endpoint.as_str())
                        .collect();
                    self.peers.retain(|ep, _| live_eps.contains(ep.as_str()));
                    for done in self.reads.member_down(&id) {
                        self.complete(done);
                    }
                }
            }
        }
        if changed {
            self.refresh_view();
        }
    }

    fn refresh_view(&self) {
        let mut view = vec![MemberView {
            id: self.id.clone(),
            endpoint: self.endpoint.clone(),
            state: "self".into(),
        }];
        view.extend(self.membership.members().iter().map(|(id, m)| MemberView {
            id: id.clone(),
            endpoint: m.endpoint.clone(),
            state: m.state.name().into(),
        }));
        *self.view.write().unwrap() = view;
    }
}
