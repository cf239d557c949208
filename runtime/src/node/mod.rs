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

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, RwLock, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use estate_guest::Value;
use tracing::info;

use crate::control::{HandoffReport, LimitOverrides, MemberView};

use crate::nf::env::NfContext;
use crate::nf::{FailPolicy, FlowState, NfCounters, NfSettings, NfSlot, Packets};
use crate::peering::driver::{self, Command, GlobalResult, HandoffWaiter, Inbox, Loaded, Shared, Sockets, global_read};
use crate::reduce::registry::{LoadError, ReducerInfo, Registry};
use crate::store::{DEFAULT_TENANT, Store, StoreError, TenantStore, Versioned};
use crate::wasm::{GuestError, Limits, WasmHost};

pub use crate::global::{Consistency, GlobalError, GlobalOptions};
pub use crate::peering::driver::SocketError;
pub use crate::peering::driver::keyfile::{generate_key_file, read_key, read_roster};
pub use crate::peering::proto::HandoffError;
pub use crate::peering::proto::membership::Timing;
pub use crate::peering::secure::{KeyError, PublicKey};
pub use crate::peering::stats::Stats;

/// Longest node id accepted.
pub const MAX_ID_LEN: usize = 64;

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
    /// The node's key file: with `roster`, every peer is authenticated and every peer
    /// frame encrypted (`docs/security.md`).
    pub key: Option<PathBuf>,
    /// The keys this node accepts, with the id each authenticates.
    pub roster: Option<PathBuf>,
    /// Allows listening on a non-loopback address without a key and roster.
    pub insecure: bool,
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
            key: None,
            roster: None,
            insecure: false,
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
    #[error(transparent)]
    Socket(#[from] SocketError),
    /// A thread could not be spawned.
    #[error("spawning a thread: {0}")]
    Thread(#[from] std::io::Error),
    /// The Wasm engine could not be set up.
    #[error(transparent)]
    Wasm(#[from] crate::wasm::EngineError),
    /// The key file or roster could not be used.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A key without a roster, or a roster without a key.
    #[error("a key needs a roster and a roster needs a key (give both, or neither)")]
    KeyWithoutRoster,
    /// Peers on other hosts could reach a node without a key and a roster.
    #[error(
        "{0} is not a loopback address: without a key and a roster any process that reaches it could join \
         and read or write all state; give a key and a roster, or start the node as insecure (`--insecure`)"
    )]
    Insecure(String),
}

/// Why a graceful leave did not happen.
#[derive(Debug, thiserror::Error)]
pub enum LeaveError {
    /// The hand-off did not complete: the node stays, with its state.
    #[error(transparent)]
    Handoff(#[from] HandoffError),
    /// The node had stopped already (or stopped while handing over).
    #[error("the node stopped")]
    Stopped,
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

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node").field("id", &self.id).field("endpoint", &self.endpoint).finish_non_exhaustive()
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic())
}

/// Whether only this host can reach `endpoint`: `tcp://` on a loopback address, or
/// `ipc://` / `inproc://`.
pub fn is_local_endpoint(endpoint: &str) -> bool {
    if endpoint.starts_with("ipc://") || endpoint.starts_with("inproc://") {
        return true;
    }
    let Some(rest) = endpoint.strip_prefix("tcp://") else {
        return false;
    };
    let host = rest.rsplit_once(':').map_or(rest, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl Node {
    /// Starts a node: binds its sockets, starts its I/O thread and workers, and greets
    /// the seeds.
    pub fn start(config: NodeConfig) -> Result<Node, StartError> {
        if !valid_id(&config.id) {
            return Err(StartError::InvalidId(config.id));
        }
        let keys = match (&config.key, &config.roster) {
            (Some(key), Some(roster)) => Some(Loaded::read(key, roster)?),
            (None, None) => None,
            _ => return Err(StartError::KeyWithoutRoster),
        };
        if keys.is_none() && !config.insecure && !is_local_endpoint(&config.listen) {
            return Err(StartError::Insecure(config.listen));
        }
        let sockets = Sockets::bind(&config.listen, config.control.as_deref())?;
        let inbox = sockets.inbox.clone();
        let store = Arc::new(Store::new(&config.id));
        let default = store.tenant(DEFAULT_TENANT);
        let host = WasmHost::new(config.limits.clone())?;
        let registry = Arc::new(Registry::new(Arc::new(host)));
        let view = Arc::new(RwLock::new(Vec::new()));
        let stats = Arc::new(Stats::default());
        let nf_counters = Arc::new(NfCounters::default());
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
        let (endpoint, control_endpoint) = (sockets.endpoint.clone(), sockets.control_endpoint.clone());
        let shared = Shared {
            store: store.clone(),
            registry: registry.clone(),
            view: view.clone(),
            stats: stats.clone(),
            nf_counters: nf_counters.clone(),
            nf: nf.clone(),
        };
        let secure = keys.is_some();
        let thread = driver::spawn(&config.id, &config.join, config.timing, sockets, shared, keys)?;
        info!(id = %config.id, %endpoint, control = ?control_endpoint, secure, "node started");
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
    pub fn leave(&self, timeout: Duration) -> Result<HandoffReport, LeaveError> {
        self.nf.unload();
        let (tx, rx) = mpsc::channel();
        self.inbox
            .send(Command::HandOff { timeout, waiter: HandoffWaiter::Api(tx) })
            .map_err(|_| LeaveError::Stopped)?;
        let report = rx.recv_timeout(timeout + Duration::from_secs(10)).map_err(|_| LeaveError::Stopped)??;
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
