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
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use estate_guest::Value;
use tracing::info;

use crate::control::{HandoffReport, LimitOverrides, MemberView};

use crate::backend::{RedisError, RedisState, StateBackend};
use crate::control::auth::{CredentialError, Credentials};
use crate::metrics::{Exporter, Metrics, ServeError, Sources};
use crate::nf::env::{NfContext, NfEnv, Unshared};
use crate::nf::{FailPolicy, FlowState, NfCounters, NfSettings, NfSlot, Packets};
use crate::peering::driver::{self, Command, GlobalResult, HandoffWaiter, Inbox, Loaded, Shared, Sockets};
use crate::reduce::registry::{LoadError, ReducerInfo, Registry};
use crate::security_log::SecurityLog;
use crate::store::{DEFAULT_TENANT, Store, StoreError, Versioned};
use crate::tenancy::{Quotas, Tenants};
use crate::wasm::{GuestError, Limits, WasmHost};
use tenant::NoDefault;
pub use tenant::Tenant;

pub use crate::global::{Consistency, GlobalError, GlobalOptions, ServedHook, ServedRead};
pub use crate::peering::driver::SocketError;
pub use crate::peering::driver::keyfile::{generate_key_file, read_key, read_roster};
pub use crate::peering::proto::HandoffError;
pub use crate::peering::proto::membership::Timing;
pub use crate::peering::secure::{KeyError, PublicKey};
pub use crate::peering::stats::{DURATION_BOUNDS_NS, Durations, DurationsSnapshot, Stats};

mod tenant;

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
    /// The tenants and their quotas (default: the one tenant `default`).
    pub tenants: Tenants,
    /// The tenant that owns the node's NF place (its state, reads and counters):
    /// `default` if there is one, else the first tenant by name.
    pub nf_tenant: Option<String>,
    /// The control credentials file (see [`crate::control::auth`]). Without one, every
    /// control request acts as the admin, so the control socket must be local.
    pub credentials: Option<PathBuf>,
    /// The node's key file: with `roster`, every peer is authenticated and every peer
    /// frame encrypted (`docs/security.md`).
    pub key: Option<PathBuf>,
    /// The keys this node accepts, with the id each authenticates.
    pub roster: Option<PathBuf>,
    /// Allow what is unsafe on a shared network: listening on a non-loopback address
    /// without a key and a roster, or a control socket that is not local without a
    /// credentials file.
    pub insecure: bool,
    /// Where the NF's state lives (default: this node's store, shared through estate).
    pub state_backend: StateBackend,
    /// Where to serve the node's metrics (Prometheus text format on
    /// `http://ADDR/metrics`), if anywhere: a loopback address unless `insecure`; port 0
    /// picks a free port ([`Node::metrics_addr`] tells the one bound).
    pub metrics: Option<SocketAddr>,
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
            tenants: Tenants::default(),
            nf_tenant: None,
            credentials: None,
            key: None,
            roster: None,
            insecure: false,
            state_backend: StateBackend::Estate,
            metrics: None,
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
    /// The control credentials file could not be used.
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    /// Refused as unsafe without `insecure`.
    #[error("{0}; or start with --insecure")]
    Unsafe(String),
    /// The NF place's owner is not one of the node's tenants.
    #[error("the NF tenant {0:?} is not configured in the tenants file")]
    UnknownNfTenant(String),
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
    /// The NF's state backend (Redis) could not be reached.
    #[error("state backend: {0}")]
    Backend(#[from] RedisError),
    /// The metrics endpoint could not be served.
    #[error(transparent)]
    Metrics(#[from] ServeError),
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
    /// The `default` tenant, if configured (what `set`/`get`/`del`/`get_global` use).
    default: Option<Tenant>,
    tenants: Arc<Tenants>,
    registry: Arc<Registry>,
    inbox: Arc<Inbox>,
    view: Arc<RwLock<Vec<MemberView>>>,
    stats: Arc<Stats>,
    nf_counters: Arc<NfCounters>,
    nf: Arc<NfSlot>,
    thread: Option<JoinHandle<()>>,
    /// The metrics endpoint, if one was asked for.
    metrics: Option<Exporter>,
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
        let tenants = Arc::new(config.tenants.clone());
        let nf_tenant = match &config.nf_tenant {
            Some(t) if !tenants.has(t) => return Err(StartError::UnknownNfTenant(t.clone())),
            Some(t) => t.clone(),
            None if tenants.has(DEFAULT_TENANT) => DEFAULT_TENANT.to_string(),
            None => tenants.names().next().unwrap_or(DEFAULT_TENANT).to_string(),
        };
        let credentials = config.credentials.as_deref().map(Credentials::load).transpose()?;
        if let Some(control) =
            config.control.as_deref().filter(|c| credentials.is_none() && !config.insecure && !is_local_endpoint(c))
        {
            let why = format!("control endpoint {control} is reachable from other machines: give a credentials file");
            return Err(StartError::Unsafe(why));
        }
        if let Some(addr) = config.metrics.filter(|a| !config.insecure && !a.ip().is_loopback()) {
            let why = format!(
                "metrics address {addr} is not a loopback address: anyone who reaches it reads the node's \
                 counters (its tenants' items, refusals and traffic); give a loopback address"
            );
            return Err(StartError::Unsafe(why));
        }
        let sockets = Sockets::bind(&config.listen, config.control.as_deref())?;
        let inbox = sockets.inbox.clone();
        let store = Arc::new(Store::with_tenants(&config.id, []));
        for name in tenants.names() {
            store.add_tenant_with(name, tenants.quotas(name).map(Quotas::store).unwrap_or_default());
        }
        let host = WasmHost::new(config.limits.clone())?;
        let registry = Arc::new(Registry::new(Arc::new(host)));
        let view = Arc::new(RwLock::new(Vec::new()));
        let stats = Arc::new(Stats::default());
        let nf_counters = Arc::new(NfCounters::default());
        let shared_state = NfContext {
            name: nf_tenant.clone(),
            tenant: store.add_tenant(&nf_tenant),
            inbox: inbox.clone(),
            registry: registry.clone(),
            counters: nf_counters.clone(),
        };
        let nf_state: Arc<dyn NfEnv> = match &config.state_backend {
            StateBackend::Estate => Arc::new(shared_state),
            StateBackend::None => Arc::new(Unshared(Arc::new(shared_state))),
            redis => Arc::new(RedisState::connect(redis, &nf_tenant, &config.id, nf_counters.clone())?),
        };
        let nf = Arc::new(NfSlot::new(registry.host().clone(), nf_state, nf_counters.clone()));
        let (endpoint, control_endpoint) = (sockets.endpoint.clone(), sockets.control_endpoint.clone());
        let metrics = config.metrics.map(|addr| {
            let (stats, nf, nf_tenant) = (stats.clone(), nf_counters.clone(), nf_tenant.clone());
            let (store, registry, tenants) = (store.clone(), registry.clone(), tenants.clone());
            Exporter::start(addr, Metrics::new(Sources { stats, nf, nf_tenant, store, registry, tenants }))
        });
        let metrics = metrics.transpose()?;
        let shared = Shared {
            store: store.clone(),
            registry: registry.clone(),
            view: view.clone(),
            stats: stats.clone(),
            nf_counters: nf_counters.clone(),
            nf: nf.clone(),
            tenants: tenants.clone(),
            nf_tenant,
            credentials,
            security: Arc::new(SecurityLog::default()),
        };
        let secure = keys.is_some();
        let thread = driver::spawn(&config.id, &config.join, config.timing, sockets, shared, keys)?;
        info!(id = %config.id, %endpoint, control = ?control_endpoint, secure, "node started");
        let mut node = Node {
            id: config.id,
            endpoint,
            control_endpoint,
            store,
            default: None,
            tenants,
            registry,
            inbox,
            view,
            stats,
            nf_counters,
            nf,
            thread: Some(thread),
            metrics,
        };
        node.default = node.tenant(DEFAULT_TENANT);
        Ok(node)
    }

    /// The library API of one tenant, if the node has it: its keys, global reads and
    /// reducers, and nothing of any other tenant's.
    pub fn tenant(&self, name: &str) -> Option<Tenant> {
        Some(Tenant {
            name: name.to_string(),
            store: self.store.tenant(name)?,
            quotas: self.tenants.quotas(name)?.clone(),
            inbox: self.inbox.clone(),
            registry: self.registry.clone(),
        })
    }

    /// The tenants of the node.
    pub fn tenants(&self) -> &Tenants {
        &self.tenants
    }

    fn default_tenant(&self) -> Result<&Tenant, NoDefault> {
        self.default.as_ref().ok_or(NoDefault)
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

    /// The address the metrics are served on (`http://ADDR/metrics`), if they are
    /// (with the actual port if port 0 was asked for).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(Exporter::addr)
    }

    /// The node's store (every tenant).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Sets `key` in the default tenant; returns the new version. An error if the
    /// node has no `default` tenant (use [`Node::tenant`]).
    pub fn set(&self, key: &str, value: Value) -> Result<u64, StoreError> {
        self.default_tenant().map_err(|_| StoreError::NoSuchTenant(DEFAULT_TENANT.into()))?.set(key, value)
    }

    /// Reads `key` from the default tenant (`None` without one).
    pub fn get(&self, key: &str) -> Option<Versioned> {
        self.default_tenant().ok()?.get(key)
    }

    /// Deletes `key` from the default tenant; returns whether it existed.
    pub fn del(&self, key: &str) -> bool {
        self.default_tenant().is_ok_and(|t| t.del(key))
    }

    /// Adds `delta` to the default tenant's integer counter at `key` (see
    /// [`Tenant::add`]); returns the new value.
    pub fn add(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        self.default_tenant().map_err(|_| StoreError::NoSuchTenant(DEFAULT_TENANT.into()))?.add(key, delta)
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
        let tenant = self.default_tenant().map_err(|e| GlobalError::Invalid(e.to_string()))?;
        tenant.get_global(pattern, reducer, options)
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
    /// (In the default tenant.)
    pub fn load_reducer(&self, name: &str, bytes: Vec<u8>, limits: &LimitOverrides) -> Result<ReducerInfo, LoadError> {
        let tenant = self.default_tenant().map_err(|_| LoadError::NoSuchTenant(DEFAULT_TENANT.into()))?;
        tenant.load_reducer(name, bytes, limits)
    }

    /// Unloads the default tenant's Wasm reducer `name`; returns whether it was loaded.
    pub fn unload_reducer(&self, name: &str) -> bool {
        self.default_tenant().is_ok_and(|t| t.unload_reducer(name))
    }

    /// Every reducer of the default tenant: built-ins, then loaded ones.
    pub fn reducers(&self) -> Vec<ReducerInfo> {
        self.registry.list(DEFAULT_TENANT)
    }

    /// The membership view: this node first, then the other members by id.
    pub fn members(&self) -> Vec<MemberView> {
        self.view.read().unwrap().clone()
    }

    /// The node's counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Calls `hook` for every global read this node serves from now on, its own reads
    /// included (`None`: no more calls). The hook runs on the node's I/O thread after
    /// the answer went out, so it must return quickly.
    pub fn on_served_read(&self, hook: Option<ServedHook>) -> Result<(), GlobalError> {
        self.inbox.send(Command::ObserveServed(hook))
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
        // The metrics endpoint last: it answers until the node is gone.
        if let Some(mut exporter) = self.metrics.take() {
            exporter.stop();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}
