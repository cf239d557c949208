//! The Wasm host: runs reducer and NF guests under wasmtime with budgets.
//!
//! One [`WasmHost`] per node holds the `Engine`, one `Linker` for every store, and the
//! epoch ticker. Every guest call gets a fresh fuel budget, an epoch (wall-clock)
//! deadline and a memory cap, so a guest can trap, loop or grow memory only until its
//! budget runs out: the caller gets a typed [`GuestError`], the node carries on.
//!
//! **Architecture invariant:** guests never see host pointers. All data crosses the
//! boundary as bytes copied into or out of the guest's own linear memory, with bounds
//! checks on every access (`docs/abi.md`).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use estate_guest::codec::{self, Item, Value};
use estate_guest::nf::Packet;
use estate_guest::{Phase, Verdict, status};
use wasmtime::{
    AsContextMut, Caller, Config, Engine, Instance, InstancePre, Linker, Memory, Module, Store, StoreLimits,
    StoreLimitsBuilder, Trap, TypedFunc,
};

/// The guest ABI version this host speaks.
pub const ABI_VERSION: i32 = estate_guest::ABI_VERSION;

/// Budgets for one guest call. Every limit names itself in the error that enforces it.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Fuel (roughly, Wasm instructions) per call.
    pub fuel: u64,
    /// Wall-clock deadline per call.
    pub wall_time: Duration,
    /// Largest linear memory, in bytes.
    pub memory_bytes: usize,
    /// Largest output a guest may hand back through `estate.result`, in bytes.
    pub output_bytes: usize,
    /// Largest module accepted, in bytes.
    pub module_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 50_000_000,
            wall_time: Duration::from_millis(200),
            memory_bytes: 64 << 20,
            output_bytes: 1 << 20,
            module_bytes: 4 << 20,
        }
    }
}

/// How often the epoch ticker advances the engine's epoch.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Why a guest call failed. The guest's store is discarded; the node is unaffected.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// The module is larger than `Limits::module_bytes`.
    #[error("module of {size} bytes exceeds the module size limit of {limit} bytes")]
    ModuleSize {
        /// The module's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The module is not valid Wasm, or not a guest of the expected kind.
    #[error("invalid guest module: {0}")]
    Invalid(String),
    /// The guest exports a different ABI version.
    #[error("guest ABI version {found}, this host speaks {ABI_VERSION}")]
    AbiVersion {
        /// The version the guest exported.
        found: i32,
    },
    /// The call used up its fuel (`Limits::fuel`).
    #[error("guest ran out of fuel (limit {0} units)")]
    OutOfFuel(u64),
    /// The call ran past its wall-clock deadline (`Limits::wall_time`).
    #[error("guest exceeded its wall-time limit of {0:?}")]
    Timeout(Duration),
    /// The guest tried to grow its memory past `Limits::memory_bytes`, and trapped.
    #[error("guest exceeded its memory limit of {0} bytes")]
    MemoryLimit(usize),
    /// The guest handed back more than `Limits::output_bytes`.
    #[error("guest output of {size} bytes exceeds the output limit of {limit} bytes")]
    OutputLimit {
        /// Bytes the guest tried to hand back.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The guest trapped (`unreachable`, out-of-bounds access, a panic in the guest…).
    #[error("guest trapped: {0}")]
    Trap(String),
    /// The guest returned something the ABI does not allow.
    #[error("guest broke the ABI: {0}")]
    Abi(String),
    /// The guest reported an error of its own (a reducer's `Err`).
    #[error("{0}")]
    Guest(String),
}

/// Node state an NF guest may use through host calls.
pub trait NfState: Send + Sync {
    /// Adds `delta` to the integer at `key` (a missing key counts as 0); returns the new
    /// value, or an error message (e.g. the key holds a non-integer, or overflow).
    fn counter_add(&self, key: &str, delta: i64) -> Result<i64, String>;

    /// The value at `key`.
    fn get(&self, key: &str) -> Option<Value> {
        let _ = key;
        None
    }

    /// Sets `key`; an error says why it was refused.
    fn set(&self, key: &str, value: Value) -> Result<(), String> {
        let _ = (key, value);
        Err("this NF has no writable state".into())
    }

    /// Deletes `key`; returns whether it existed.
    fn del(&self, key: &str) -> bool {
        let _ = key;
        false
    }

    /// A global read across the cluster. With `all`, an error unless every live member
    /// answered (consistency `all`).
    fn global(&self, pattern: &str, reducer: &str, timeout: Duration, all: bool) -> Result<Option<Item>, String> {
        let _ = (pattern, reducer, timeout, all);
        Err("global reads are not available to this NF".into())
    }

    /// Moves every key matching `pattern` from the other members to this node (their
    /// copies are deleted); returns the number of keys brought.
    fn take(&self, pattern: &str) -> Result<usize, String> {
        let _ = pattern;
        Err("take is not available to this NF".into())
    }

    /// Brings the state of `flow` (keys `flow:<flow>:…`) to this node from wherever it
    /// is in the cluster, before the NF sees the flow's first packet here; returns the
    /// number of keys adopted.
    fn adopt_flow(&self, flow: &str, mode: crate::nfrun::FlowState) -> Result<usize, String> {
        let _ = (flow, mode);
        Ok(0)
    }

    /// Adds to an NF metric.
    fn metric_add(&self, name: &str, delta: i64) {
        let _ = (name, delta);
    }

    /// Receives an event (alert, log line) the NF emitted.
    fn emit(&self, event: &str) {
        let _ = event;
    }
}

/// Per-store host data.
struct GuestData {
    limits: StoreLimits,
    output_limit: usize,
    /// What the guest handed back through `estate.result` during this call.
    result: Option<Vec<u8>>,
    /// Set when `estate.result` was refused for size, to report it precisely.
    output_refused: Option<usize>,
    nf_state: Option<Arc<dyn NfState>>,
    /// Bytes a host call staged for the guest to read (`estate.staged_read`).
    staged: Vec<u8>,
    /// The call's wall-time budget in epoch ticks.
    wall_ticks: u64,
    /// The guest's exported memory, once instantiated.
    memory: Option<Memory>,
}

/// The engine, linker and epoch ticker shared by every guest of a node.
pub struct WasmHost {
    engine: Engine,
    linker: Linker<GuestData>,
    limits: Limits,
    ticker_stop: Arc<AtomicBool>,
}

impl fmt::Debug for WasmHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WasmHost").field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl Drop for WasmHost {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl WasmHost {
    /// A host whose guests run under `limits` by default.
    pub fn new(limits: Limits) -> anyhow::Result<WasmHost> {
        let mut config = Config::new();
        config.consume_fuel(true).epoch_interruption(true);
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        linker.func_wrap("estate", "result", host_result)?;
        linker.func_wrap("estate", "counter_add", host_counter_add)?;
        linker.func_wrap("estate", "staged_len", |c: Caller<'_, GuestData>| c.data().staged.len() as i32)?;
        linker.func_wrap("estate", "staged_read", host_staged_read)?;
        linker.func_wrap("estate", "state_get", host_state_get)?;
        linker.func_wrap("estate", "state_set", host_state_set)?;
        linker.func_wrap("estate", "state_del", host_state_del)?;
        linker.func_wrap("estate", "global", host_global::<false>)?;
        linker.func_wrap("estate", "global_all", host_global::<true>)?;
        linker.func_wrap("estate", "take", host_take)?;
        linker.func_wrap("estate", "now_ms", |_: Caller<'_, GuestData>| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
        })?;
        linker.func_wrap("estate", "metric_add", host_metric_add)?;
        linker.func_wrap("estate", "emit", host_emit)?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        let (stop, ticking) = (ticker_stop.clone(), engine.weak());
        thread::Builder::new().name("estate-epoch".into()).spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                thread::sleep(EPOCH_TICK);
                match ticking.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })?;
        Ok(WasmHost { engine, linker, limits, ticker_stop })
    }

    /// The default limits of this host.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Compiles and checks a reducer module under the host's default limits.
    pub fn load_reducer(&self, bytes: &[u8]) -> Result<ReducerModule, GuestError> {
        self.load_reducer_with(bytes, self.limits.clone())
    }

    /// Compiles and checks a reducer module that runs under `limits`. It must export
    /// `memory`, `estate_abi_version`, `estate_alloc` and `estate_reduce` with the ABI's
    /// types; `estate_reducer_flags` and `estate_finish` are optional.
    pub fn load_reducer_with(&self, bytes: &[u8], limits: Limits) -> Result<ReducerModule, GuestError> {
        if bytes.len() > limits.module_bytes {
            return Err(GuestError::ModuleSize { size: bytes.len(), limit: limits.module_bytes });
        }
        let module = self.compile(bytes, "estate_reduce")?;
        let pre = self.linker.instantiate_pre(&module).map_err(|e| GuestError::Invalid(format!("{e:#}")))?;
        // Instantiate once now so a bad module fails at load time, not at first use.
        let mut store = self.store(&limits, None);
        let guest = self.instantiate(&mut store, &pre, &limits)?;
        let _: TypedFunc<(i32, i32, i32), i32> = typed(&guest.instance, &mut store, "estate_reduce")?;
        let has_finish = module.get_export("estate_finish").is_some();
        if has_finish {
            let _: TypedFunc<(i32, i32), i32> = typed(&guest.instance, &mut store, "estate_finish")?;
        }
        let flags = match module.get_export("estate_reducer_flags") {
            None => 0,
            Some(_) => {
                let f: TypedFunc<(), i32> = typed(&guest.instance, &mut store, "estate_reducer_flags")?;
                f.call(&mut store, ()).map_err(|e| classify(e, &store, &limits))?
            }
        };
        Ok(ReducerModule {
            pre,
            idle: Arc::default(),
            hash: sha256(bytes),
            combinable: flags & estate_guest::flags::COMBINABLE != 0,
            has_finish,
            limits,
        })
    }

    /// Compiles and checks an NF module (exports `estate_on_packet`).
    pub fn load_nf(&self, bytes: &[u8]) -> Result<NfModule, GuestError> {
        if bytes.len() > self.limits.module_bytes {
            return Err(GuestError::ModuleSize { size: bytes.len(), limit: self.limits.module_bytes });
        }
        let module = self.compile(bytes, "estate_on_packet")?;
        if module.get_export("estate_nf_init").is_none() {
            return Err(GuestError::Invalid("missing export `estate_nf_init`".into()));
        }
        let pre = self.linker.instantiate_pre(&module).map_err(|e| GuestError::Invalid(format!("{e:#}")))?;
        Ok(NfModule { pre })
    }

    /// Runs a reducer over `items` (store items, or its own partials).
    pub fn reduce(&self, reducer: &ReducerModule, items: &[Item], phase: Phase) -> Result<Option<Item>, GuestError> {
        let mut input = Vec::new();
        codec::encode_items(items, &mut input);
        self.reduce_encoded(reducer, &input, phase)
    }

    /// [`WasmHost::reduce`] over an item list already in the guest encoding.
    pub fn reduce_encoded(
        &self,
        reducer: &ReducerModule,
        input: &[u8],
        phase: Phase,
    ) -> Result<Option<Item>, GuestError> {
        let phase = match phase {
            Phase::Items => 0,
            Phase::Partials => 1,
        };
        self.call_reducer(reducer, "estate_reduce", input, Some(phase))
    }

    /// Turns a reducer's combined result into its answer (`estate_finish`; without
    /// that export, the result is the answer).
    pub fn finish(&self, reducer: &ReducerModule, partial: Item) -> Result<Option<Item>, GuestError> {
        if !reducer.has_finish {
            return Ok(Some(partial));
        }
        let mut input = Vec::new();
        partial.encode(&mut input);
        self.call_reducer(reducer, "estate_finish", &input, None)
    }

    /// `finish(reduce(items))`: the whole reduction where all items are at hand.
    pub fn reduce_all(&self, reducer: &ReducerModule, items: &[Item]) -> Result<Option<Item>, GuestError> {
        match self.reduce(reducer, items, Phase::Items)? {
            Some(partial) => self.finish(reducer, partial),
            None => Ok(None),
        }
    }

    fn call_reducer(
        &self,
        reducer: &ReducerModule,
        export: &str,
        input: &[u8],
        phase: Option<i32>,
    ) -> Result<Option<Item>, GuestError> {
        let limits = &reducer.limits;
        // A warm instance from an earlier call if there is one (no instantiation: the
        // call then costs about what the guest's own work does), else a fresh one.
        let warm = reducer.idle.lock().unwrap().pop();
        let Warm { mut store, guest } = match warm {
            Some(mut warm) => {
                arm(&mut warm.store, limits);
                warm
            }
            None => {
                let mut store = self.store(limits, None);
                let guest = self.instantiate(&mut store, &reducer.pre, limits)?;
                arm(&mut store, limits);
                Warm { store, guest }
            }
        };
        store.data_mut().result = None;
        let ptr = guest.write_input(&mut store, input, limits)?;
        let len = len_i32(input)?;
        let called = match phase {
            Some(phase) => {
                typed::<(i32, i32, i32), i32>(&guest.instance, &mut store, export)?.call(&mut store, (ptr, len, phase))
            }
            None => typed::<(i32, i32), i32>(&guest.instance, &mut store, export)?.call(&mut store, (ptr, len)),
        };
        // A trap leaves the instance in an unknown state: it is dropped, never reused.
        let code = called.map_err(|e| classify(e, &store, limits))?;
        let output = store.data_mut().result.take();
        let answer = match (code, output) {
            (status::ITEM, Some(bytes)) => {
                let mut r = codec::Reader::new(&bytes);
                Item::decode(&mut r)
                    .and_then(|item| r.finish().map(|()| Some(item)))
                    .map_err(|e| GuestError::Abi(format!("reducer returned a malformed item: {e}")))
            }
            (status::ITEM, None) => Err(GuestError::Abi("reducer said ITEM but handed none back".into())),
            (status::NONE, _) => Ok(None),
            (status::ERROR, msg) => Err(GuestError::Guest(message(msg))),
            (status::BAD_INPUT, msg) => Err(GuestError::Abi(format!("reducer rejected its input: {}", message(msg)))),
            (other, _) => Err(GuestError::Abi(format!("unknown reducer status {other}"))),
        };
        // Only an instance that kept to the ABI goes back for reuse.
        if matches!(answer, Ok(_) | Err(GuestError::Guest(_))) {
            let mut idle = reducer.idle.lock().unwrap();
            if idle.len() < MAX_IDLE_INSTANCES {
                idle.push(Warm { store, guest });
            }
        }
        answer
    }

    /// Starts an NF: one instance whose memory persists across packets.
    /// Starts an NF: one instance whose memory persists across packets, built from
    /// `config` by its `estate_nf_init`.
    pub fn start_nf(&self, nf: &NfModule, state: Arc<dyn NfState>, config: &str) -> Result<NfInstance, GuestError> {
        let mut store = self.store(&self.limits, Some(state));
        let guest = self.instantiate(&mut store, &nf.pre, &self.limits)?;
        let on_packet = typed(&guest.instance, &mut store, "estate_on_packet")?;
        // Optional: NFs that do not care about moved flows need not export it.
        let on_flow_moved = match guest.instance.get_export(&mut store, "estate_on_flow_moved") {
            Some(_) => Some(typed(&guest.instance, &mut store, "estate_on_flow_moved")?),
            None => None,
        };
        let init: TypedFunc<(i32, i32), i32> = typed(&guest.instance, &mut store, "estate_nf_init")?;
        let ptr = guest.write_input(&mut store, config.as_bytes(), &self.limits)?;
        let code =
            init.call(&mut store, (ptr, len_i32(config.as_bytes())?)).map_err(|e| classify(e, &store, &self.limits))?;
        let output = store.data_mut().result.take();
        match code {
            0 => Ok(NfInstance {
                store,
                guest,
                on_packet,
                on_flow_moved,
                limits: self.limits.clone(),
                record: Vec::new(),
            }),
            status::ERROR => Err(GuestError::Guest(message(output))),
            other => Err(GuestError::Abi(format!("estate_nf_init returned {other}: {}", message(output)))),
        }
    }

    fn compile(&self, bytes: &[u8], entry: &str) -> Result<Module, GuestError> {
        let module = Module::new(&self.engine, bytes).map_err(|e| GuestError::Invalid(format!("{e:#}")))?;
        for name in ["estate_abi_version", "estate_alloc", entry] {
            if module.get_export(name).is_none() {
                return Err(GuestError::Invalid(format!("missing export `{name}`")));
            }
        }
        Ok(module)
    }

    fn store(&self, limits: &Limits, nf_state: Option<Arc<dyn NfState>>) -> Store<GuestData> {
        let data = GuestData {
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes)
                .instances(1)
                .tables(4)
                .memories(1)
                .trap_on_grow_failure(true)
                .build(),
            output_limit: limits.output_bytes,
            result: None,
            output_refused: None,
            nf_state,
            staged: Vec::new(),
            wall_ticks: wall_ticks(limits),
            memory: None,
        };
        let mut store = Store::new(&self.engine, data);
        store.limiter(|d| &mut d.limits);
        arm(&mut store, limits);
        store
    }

    fn instantiate(
        &self,
        store: &mut Store<GuestData>,
        pre: &InstancePre<GuestData>,
        limits: &Limits,
    ) -> Result<Guest, GuestError> {
        let instance = pre.instantiate(&mut *store).map_err(|e| classify(e, store, limits))?;
        let version: TypedFunc<(), i32> = typed(&instance, &mut *store, "estate_abi_version")?;
        let found = version.call(&mut *store, ()).map_err(|e| classify(e, store, limits))?;
        if found != ABI_VERSION {
            return Err(GuestError::AbiVersion { found });
        }
        let memory = instance
            .get_memory(&mut *store, "memory")
            .ok_or_else(|| GuestError::Invalid("missing export `memory`".into()))?;
        store.data_mut().memory = Some(memory);
        let alloc = typed(&instance, &mut *store, "estate_alloc")?;
        Ok(Guest { instance, memory, alloc })
    }
}

/// A compiled, checked reducer module. Cheap to clone; instantiated per call.
#[derive(Clone)]
pub struct ReducerModule {
    pre: InstancePre<GuestData>,
    /// Instances that finished a call cleanly, ready for the next one.
    idle: Arc<Mutex<Vec<Warm>>>,
    hash: [u8; 32],
    combinable: bool,
    has_finish: bool,
    limits: Limits,
}

impl fmt::Debug for ReducerModule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReducerModule")
            .field("hash", &hex::encode(self.hash))
            .field("combinable", &self.combinable)
            .field("has_finish", &self.has_finish)
            .field("limits", &self.limits)
            .finish()
    }
}

impl fmt::Debug for NfModule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NfModule").finish_non_exhaustive()
    }
}

impl ReducerModule {
    /// sha256 of the module's bytes: its identity on the wire and in caches.
    pub fn hash(&self) -> &[u8; 32] {
        &self.hash
    }

    /// Whether the reducer declared itself combinable (it may be pushed down).
    pub fn combinable(&self) -> bool {
        self.combinable
    }

    /// The limits its calls run under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

/// sha256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// A compiled, checked NF module.
#[derive(Clone)]
pub struct NfModule {
    pre: InstancePre<GuestData>,
}

/// An instance with its store, kept between reducer calls.
struct Warm {
    store: Store<GuestData>,
    guest: Guest,
}

/// Warm instances kept per reducer module (one per worker thread is enough).
const MAX_IDLE_INSTANCES: usize = 4;

struct Guest {
    instance: Instance,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
}

impl Guest {
    /// Copies `input` into a buffer the guest allocated; returns the guest pointer.
    fn write_input(&self, store: &mut Store<GuestData>, input: &[u8], limits: &Limits) -> Result<i32, GuestError> {
        let ptr = self.alloc.call(&mut *store, len_i32(input)?).map_err(|e| classify(e, store, limits))?;
        if ptr == 0 {
            return Err(GuestError::Abi(format!("estate_alloc({}) returned null", input.len())));
        }
        self.memory
            .write(&mut *store, ptr as u32 as usize, input)
            .map_err(|_| GuestError::Abi(format!("estate_alloc returned {ptr}, outside guest memory")))?;
        Ok(ptr)
    }
}

/// A running NF guest. Not shared: one packet at a time.
pub struct NfInstance {
    store: Store<GuestData>,
    guest: Guest,
    on_packet: TypedFunc<(i32, i32), i32>,
    on_flow_moved: Option<TypedFunc<(i32, i32, i32), i32>>,
    limits: Limits,
    /// The packet record being passed in, kept across packets (no allocation each).
    record: Vec<u8>,
}

impl fmt::Debug for NfInstance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NfInstance").field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl NfInstance {
    /// Hands one packet to the NF and returns its verdict. After an error the instance
    /// may be in any state: the caller applies its fail policy and should restart it.
    pub fn on_packet(&mut self, packet: &Packet<'_>) -> Result<Verdict, GuestError> {
        arm(&mut self.store, &self.limits);
        self.record.clear();
        packet.encode(&mut self.record);
        let ptr = self.guest.write_input(&mut self.store, &self.record, &self.limits)?;
        let code = self
            .on_packet
            .call(&mut self.store, (ptr, len_i32(&self.record)?))
            .map_err(|e| classify(e, &self.store, &self.limits))?;
        match code {
            0 => Ok(Verdict::Forward),
            1 => Ok(Verdict::Drop),
            status::BAD_INPUT => {
                Err(GuestError::Abi(format!("NF rejected its input: {}", message(self.store.data_mut().result.take()))))
            }
            other => Err(GuestError::Abi(format!("unknown verdict {other}"))),
        }
    }

    /// Tells the NF that `flow` moved here (its state has been brought over), before the
    /// flow's first packet here. A no-op for NFs without `estate_on_flow_moved`.
    pub fn on_flow_moved(&mut self, flow: &str, brought: estate_guest::Brought) -> Result<(), GuestError> {
        let Some(callback) = self.on_flow_moved.clone() else {
            return Ok(());
        };
        arm(&mut self.store, &self.limits);
        let ptr = self.guest.write_input(&mut self.store, flow.as_bytes(), &self.limits)?;
        let code = callback
            .call(&mut self.store, (ptr, len_i32(flow.as_bytes())?, brought.code()))
            .map_err(|e| classify(e, &self.store, &self.limits))?;
        match code {
            0 => Ok(()),
            other => Err(GuestError::Abi(format!(
                "estate_on_flow_moved returned {other}: {}",
                message(self.store.data_mut().result.take())
            ))),
        }
    }
}

/// Gives a store a fresh budget for one call.
fn arm(store: &mut Store<GuestData>, limits: &Limits) {
    // Fuel is enabled on the engine, so setting it cannot fail.
    store.set_fuel(limits.fuel).expect("fuel is enabled");
    store.set_epoch_deadline(wall_ticks(limits));
    store.epoch_deadline_trap();
}

fn wall_ticks(limits: &Limits) -> u64 {
    limits.wall_time.as_millis().div_ceil(EPOCH_TICK.as_millis()).max(1) as u64
}

fn classify(err: wasmtime::Error, store: &Store<GuestData>, limits: &Limits) -> GuestError {
    if let Some(size) = store.data().output_refused {
        return GuestError::OutputLimit { size, limit: limits.output_bytes };
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => GuestError::OutOfFuel(limits.fuel),
        Some(Trap::Interrupt) => GuestError::Timeout(limits.wall_time),
        Some(Trap::AllocationTooLarge) => GuestError::MemoryLimit(limits.memory_bytes),
        Some(trap) => GuestError::Trap(trap.to_string()),
        None => {
            let text = format!("{err:#}");
            if text.contains("memory") && text.contains("limit") || text.contains("forcing trap when growing") {
                GuestError::MemoryLimit(limits.memory_bytes)
            } else {
                GuestError::Trap(text)
            }
        }
    }
}

fn typed<P, R>(instance: &Instance, store: &mut Store<GuestData>, name: &str) -> Result<TypedFunc<P, R>, GuestError>
where
    P: wasmtime::WasmParams,
    R: wasmtime::WasmResults,
{
    instance
        .get_typed_func::<P, R>(&mut *store, name)
        .map_err(|e| GuestError::Invalid(format!("export `{name}`: {e:#}")))
}

fn len_i32(buf: &[u8]) -> Result<i32, GuestError> {
    i32::try_from(buf.len()).map_err(|_| GuestError::Abi(format!("input of {} bytes is too large", buf.len())))
}

fn message(bytes: Option<Vec<u8>>) -> String {
    bytes.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_else(|| "(no message)".into())
}

/// Reads `len` bytes at `ptr` from the caller's memory, bounds-checked.
fn guest_bytes(caller: &mut Caller<'_, GuestData>, ptr: u32, len: u32) -> wasmtime::Result<Vec<u8>> {
    // Cached at instantiation: a by-name export lookup on every host call is not free.
    let Some(memory) = caller.data().memory else {
        wasmtime::bail!("guest has no exported memory");
    };
    span(memory.data(&caller), ptr, len).map(<[u8]>::to_vec)
}

/// `estate.result(ptr, len)`: the guest hands back its output.
fn host_result(mut caller: Caller<'_, GuestData>, ptr: u32, len: u32) -> wasmtime::Result<()> {
    let limit = caller.data().output_limit;
    if len as usize > limit {
        caller.data_mut().output_refused = Some(len as usize);
        wasmtime::bail!("output of {len} bytes exceeds the limit of {limit}");
    }
    let bytes = guest_bytes(&mut caller, ptr, len)?;
    caller.data_mut().result = Some(bytes);
    Ok(())
}

/// `len` bytes at `ptr` of guest memory `memory`, bounds-checked.
fn span(memory: &[u8], ptr: u32, len: u32) -> wasmtime::Result<&[u8]> {
    let (start, len) = (ptr as usize, len as usize);
    memory
        .get(start..)
        .and_then(|s| s.get(..len))
        .ok_or_else(|| wasmtime::format_err!("guest buffer {start}+{len} is outside its memory"))
}

/// Runs `f` on the NF's state, the key at `ptr..ptr + len` and the guest's memory, all
/// borrowed: the per-packet state calls copy nothing on the way in.
fn with_key<R>(
    caller: &mut Caller<'_, GuestData>,
    ptr: u32,
    len: u32,
    call: &str,
    f: impl FnOnce(&dyn NfState, &str, &[u8]) -> wasmtime::Result<R>,
) -> wasmtime::Result<R> {
    let Some(memory) = caller.data().memory else {
        wasmtime::bail!("guest has no exported memory");
    };
    let (memory, data) = memory.data_and_store_mut(caller);
    let key =
        std::str::from_utf8(span(memory, ptr, len)?).map_err(|_| wasmtime::format_err!("{call}: key is not UTF-8"))?;
    let state =
        data.nf_state.as_deref().ok_or_else(|| wasmtime::format_err!("{call} is only available to NF guests"))?;
    f(state, key, memory)
}

/// `estate.counter_add(key_ptr, key_len, delta) -> i64`.
fn host_counter_add(mut caller: Caller<'_, GuestData>, ptr: u32, len: u32, delta: i64) -> wasmtime::Result<i64> {
    with_key(&mut caller, ptr, len, "counter_add", |state, key, _| {
        state.counter_add(key, delta).map_err(|e| wasmtime::format_err!("counter_add({key}): {e}"))
    })
}

fn nf_state(caller: &Caller<'_, GuestData>, call: &str) -> wasmtime::Result<Arc<dyn NfState>> {
    caller.data().nf_state.clone().ok_or_else(|| wasmtime::format_err!("{call} is only available to NF guests"))
}

fn guest_str(caller: &mut Caller<'_, GuestData>, ptr: u32, len: u32, what: &str) -> wasmtime::Result<String> {
    String::from_utf8(guest_bytes(caller, ptr, len)?).map_err(|_| wasmtime::format_err!("{what} is not UTF-8"))
}

/// `estate.staged_read(ptr, len)`: copies the staged bytes into guest memory.
fn host_staged_read(mut caller: Caller<'_, GuestData>, ptr: u32, len: u32) -> wasmtime::Result<()> {
    let staged = std::mem::take(&mut caller.data_mut().staged);
    if len as usize != staged.len() {
        wasmtime::bail!("staged_read of {len} bytes, {} staged", staged.len());
    }
    // Cached at instantiation: a by-name export lookup on every host call is not free.
    let Some(memory) = caller.data().memory else {
        wasmtime::bail!("guest has no exported memory");
    };
    memory
        .write(&mut caller, ptr as usize, &staged)
        .map_err(|_| wasmtime::format_err!("staged_read buffer {ptr}+{len} is outside guest memory"))
}

/// `estate.state_get(key_ptr, key_len) -> i32`: 1 and the value staged, or 0.
fn host_state_get(mut caller: Caller<'_, GuestData>, ptr: u32, len: u32) -> wasmtime::Result<i32> {
    Ok(match with_key(&mut caller, ptr, len, "state_get", |state, key, _| Ok(state.get(key)))? {
        Some(value) => {
            let mut staged = Vec::new();
            value.encode(&mut staged);
            caller.data_mut().staged = staged;
            1
        }
        None => 0,
    })
}

/// `estate.state_set(key_ptr, key_len, val_ptr, val_len) -> i32`: 0, or 1 and an error
/// message staged. A value that is not a valid encoding traps (a guest bug).
fn host_state_set(mut caller: Caller<'_, GuestData>, kp: u32, kl: u32, vp: u32, vl: u32) -> wasmtime::Result<i32> {
    let set = with_key(&mut caller, kp, kl, "state_set", |state, key, memory| {
        let value = Value::decode_exact(span(memory, vp, vl)?)
            .map_err(|e| wasmtime::format_err!("state_set({key}): malformed value: {e}"))?;
        Ok(state.set(key, value))
    })?;
    Ok(match set {
        Ok(()) => 0,
        Err(message) => {
            caller.data_mut().staged = message.into_bytes();
            1
        }
    })
}

/// `estate.state_del(key_ptr, key_len) -> i32`: 1 if the key existed, else 0.
fn host_state_del(mut caller: Caller<'_, GuestData>, ptr: u32, len: u32) -> wasmtime::Result<i32> {
    with_key(&mut caller, ptr, len, "state_del", |state, key, _| Ok(state.del(key) as i32))
}

/// `estate.global(pat_ptr, pat_len, red_ptr, red_len, timeout_ms) -> i32` (and
/// `estate.global_all`, the same with consistency `all`): 0 no item, 1 an encoded item
/// staged, 2 an error message staged.
fn host_global<const ALL: bool>(
    caller: Caller<'_, GuestData>,
    pp: u32,
    pl: u32,
    rp: u32,
    rl: u32,
    timeout_ms: u32,
) -> wasmtime::Result<i32> {
    global_call(caller, (pp, pl), (rp, rl), timeout_ms, ALL)
}

/// Time spent waiting on the cluster is not the guest's own: its wall-time budget
/// starts again when control returns to it.
fn rearm_wall_time(caller: &mut Caller<'_, GuestData>) {
    let ticks = caller.data().wall_ticks;
    caller.as_context_mut().set_epoch_deadline(ticks);
}

/// `estate.take(pat_ptr, pat_len) -> i64`: the number of keys brought here, or -1 and
/// an error message staged.
fn host_take(mut caller: Caller<'_, GuestData>, ptr: u32, len: u32) -> wasmtime::Result<i64> {
    let pattern = guest_str(&mut caller, ptr, len, "take pattern")?;
    let answer = nf_state(&caller, "take")?.take(&pattern);
    rearm_wall_time(&mut caller);
    Ok(match answer {
        Ok(n) => n as i64,
        Err(message) => {
            caller.data_mut().staged = message.into_bytes();
            -1
        }
    })
}

fn global_call(
    mut caller: Caller<'_, GuestData>,
    (pp, pl): (u32, u32),
    (rp, rl): (u32, u32),
    timeout_ms: u32,
    all: bool,
) -> wasmtime::Result<i32> {
    let pattern = guest_str(&mut caller, pp, pl, "global pattern")?;
    let reducer = guest_str(&mut caller, rp, rl, "reducer name")?;
    let state = nf_state(&caller, "global")?;
    let answer = state.global(&pattern, &reducer, Duration::from_millis(timeout_ms.into()), all);
    rearm_wall_time(&mut caller);
    let (code, staged) = match answer {
        Ok(None) => (0, Vec::new()),
        Ok(Some(item)) => {
            let mut staged = Vec::new();
            item.encode(&mut staged);
            (1, staged)
        }
        Err(message) => (2, message.into_bytes()),
    };
    caller.data_mut().staged = staged;
    Ok(code)
}

/// `estate.metric_add(name_ptr, name_len, delta)`.
fn host_metric_add(mut caller: Caller<'_, GuestData>, ptr: u32, len: u32, delta: i64) -> wasmtime::Result<()> {
    let name = guest_str(&mut caller, ptr, len, "metric name")?;
    nf_state(&caller, "metric_add")?.metric_add(&name, delta);
    Ok(())
}

/// `estate.emit(ptr, len)`: an event from the NF.
fn host_emit(mut caller: Caller<'_, GuestData>, ptr: u32, len: u32) -> wasmtime::Result<()> {
    let event = guest_str(&mut caller, ptr, len, "event")?;
    nf_state(&caller, "emit")?.emit(&event);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> WasmHost {
        WasmHost::new(Limits { wall_time: Duration::from_millis(100), ..Limits::default() }).unwrap()
    }

    /// A reducer shell in WAT whose `estate_reduce` body is `body`.
    fn wat_reducer(body: &str) -> Vec<u8> {
        format!(
            r#"(module
                (import "estate" "result" (func $result (param i32 i32)))
                (memory (export "memory") 1)
                (func (export "estate_abi_version") (result i32) i32.const 1)
                (func (export "estate_alloc") (param i32) (result i32) i32.const 1024)
                (func (export "estate_reduce") (param i32 i32 i32) (result i32) {body}))"#
        )
        .into_bytes()
    }

    #[test]
    fn infinite_loop_runs_out_of_fuel() {
        // A generous wall-time limit, so fuel is the limit that binds even on a loaded
        // machine.
        let host =
            WasmHost::new(Limits { fuel: 1_000_000, wall_time: Duration::from_secs(30), ..Limits::default() }).unwrap();
        let r = host.load_reducer(&wat_reducer("(loop (br 0)) i32.const 0")).unwrap();
        assert!(matches!(host.reduce_all(&r, &[]), Err(GuestError::OutOfFuel(1_000_000))));
    }

    #[test]
    fn infinite_loop_without_fuel_pressure_hits_the_deadline() {
        let host =
            WasmHost::new(Limits { fuel: u64::MAX / 2, wall_time: Duration::from_millis(30), ..Limits::default() })
                .unwrap();
        let r = host.load_reducer(&wat_reducer("(loop (br 0)) i32.const 0")).unwrap();
        assert!(matches!(host.reduce_all(&r, &[]), Err(GuestError::Timeout(_))));
    }

    #[test]
    fn memory_grow_bomb_hits_the_memory_limit() {
        let host = host();
        let r = host.load_reducer(&wat_reducer("(drop (memory.grow (i32.const 60000))) i32.const 1")).unwrap();
        assert!(matches!(host.reduce_all(&r, &[]), Err(GuestError::MemoryLimit(_))), "{:?}", host.reduce_all(&r, &[]));
    }

    #[test]
    fn unreachable_is_a_trap() {
        let host = host();
        let r = host.load_reducer(&wat_reducer("unreachable")).unwrap();
        assert!(matches!(host.reduce_all(&r, &[]), Err(GuestError::Trap(_))));
    }

    #[test]
    fn huge_output_is_refused() {
        let host = host();
        let r = host.load_reducer(&wat_reducer("(call $result (i32.const 0) (i32.const 65536)) i32.const 0")).unwrap();
        let mut limits = host.limits().clone();
        limits.output_bytes = 100;
        let small = WasmHost::new(limits).unwrap();
        let r2 =
            small.load_reducer(&wat_reducer("(call $result (i32.const 0) (i32.const 65536)) i32.const 0")).unwrap();
        assert!(matches!(small.reduce_all(&r2, &[]), Err(GuestError::OutputLimit { size: 65536, limit: 100 })));
        // Within the default limit the same bytes are a malformed value, not a crash.
        assert!(matches!(host.reduce_all(&r, &[]), Err(GuestError::Abi(_))));
    }

    #[test]
    fn out_of_bounds_result_traps() {
        let host = host();
        let r =
            host.load_reducer(&wat_reducer("(call $result (i32.const 65530) (i32.const 100)) i32.const 0")).unwrap();
        assert!(matches!(host.reduce_all(&r, &[]), Err(GuestError::Trap(_))));
    }

    #[test]
    fn missing_and_mistyped_exports_are_rejected_at_load() {
        let host = host();
        let missing = br#"(module (memory (export "memory") 1))"#;
        assert!(matches!(host.load_reducer(missing), Err(GuestError::Invalid(_))));
        let mistyped = br#"(module (memory (export "memory") 1)
                (func (export "estate_abi_version") (result i64) i64.const 1)
                (func (export "estate_alloc") (param i32) (result i32) i32.const 0)
                (func (export "estate_reduce") (param i32 i32) (result i32) i32.const 0))"#;
        assert!(matches!(host.load_reducer(mistyped), Err(GuestError::Invalid(_))));
        assert!(matches!(host.load_reducer(b"not wasm"), Err(GuestError::Invalid(_))));
    }

    #[test]
    fn oversized_modules_are_refused_naming_the_limit() {
        let host = host();
        let bytes = wat_reducer("i32.const 1");
        let limits = Limits { module_bytes: bytes.len() - 1, ..host.limits().clone() };
        let err = host.load_reducer_with(&bytes, limits).unwrap_err();
        assert!(matches!(err, GuestError::ModuleSize { .. }), "{err}");
        assert!(err.to_string().contains("module size limit"), "{err}");
    }

    #[test]
    fn warm_instances_are_reused_and_stay_correct() {
        let host = host();
        let sum = host.load_reducer(&crate::guests::require("reducer_sum").unwrap()).unwrap();
        for n in 1..=20i64 {
            let items: Vec<Item> = (1..=n)
                .map(|i| Item { key: format!("k{i}"), value: Value::Int(i), origin: "a".into(), version: 1 })
                .collect();
            let answer = host.reduce_all(&sum, &items).unwrap().unwrap();
            assert_eq!(answer.value, Value::Int(n * (n + 1) / 2));
        }
        assert_eq!(sum.idle.lock().unwrap().len(), 1, "one warm instance served every call");
    }

    #[test]
    fn wrong_abi_version_is_rejected() {
        let host = host();
        let bytes = br#"(module (memory (export "memory") 1)
                (func (export "estate_abi_version") (result i32) i32.const 99)
                (func (export "estate_alloc") (param i32) (result i32) i32.const 0)
                (func (export "estate_reduce") (param i32 i32) (result i32) i32.const 0))"#;
        assert!(matches!(host.load_reducer(bytes), Err(GuestError::AbiVersion { found: 99 })));
    }

    /// An NF whose `estate_on_flow_moved` has `sig` and body `body`.
    fn flow_moved_nf(sig: &str, body: &str) -> Vec<u8> {
        format!(
            r#"(module (memory (export "memory") 1)
                (func (export "estate_abi_version") (result i32) i32.const 1)
                (func (export "estate_alloc") (param i32) (result i32) i32.const 1024)
                (func (export "estate_nf_init") (param i32 i32) (result i32) i32.const 0)
                (func (export "estate_on_packet") (param i32 i32) (result i32) i32.const 0)
                (func (export "estate_on_flow_moved") {sig} {body}))"#
        )
        .into_bytes()
    }

    #[test]
    fn the_flow_moved_callback_gets_how_the_state_came_and_is_checked() {
        let host = host();
        let state: Arc<dyn NfState> = crate::store::Store::new("n").tenant(crate::store::DEFAULT_TENANT);
        // Returns `brought` itself: 0 (copied) is ok, 1 (taken) is an error status.
        let nf = host.load_nf(&flow_moved_nf("(param i32 i32 i32) (result i32)", "local.get 2")).unwrap();
        let mut instance = host.start_nf(&nf, state.clone(), "").unwrap();
        instance.on_flow_moved("6:10.0.0.1:1-10.0.0.2:2", estate_guest::Brought::Copied).unwrap();
        let err = instance.on_flow_moved("f", estate_guest::Brought::Taken).unwrap_err();
        assert!(err.to_string().contains("estate_on_flow_moved returned 1"), "{err}");
        // A trap in the callback is a guest fault like any other.
        let nf = host.load_nf(&flow_moved_nf("(param i32 i32 i32) (result i32)", "unreachable")).unwrap();
        let mut instance = host.start_nf(&nf, state.clone(), "").unwrap();
        assert!(matches!(instance.on_flow_moved("f", estate_guest::Brought::Failed), Err(GuestError::Trap(_))));
        // The export with the wrong type is refused when the NF starts.
        let nf = host.load_nf(&flow_moved_nf("(param i32 i32) (result i32)", "i32.const 0")).unwrap();
        let err = host.start_nf(&nf, state, "").unwrap_err();
        assert!(err.to_string().contains("estate_on_flow_moved"), "{err}");
    }

    /// An NF whose `estate_on_packet` runs `body` (then forwards), with the state calls
    /// imported and, in its memory, the key "k" at 0, the bytes ff fe at 16 and an Int(7)
    /// value at 32.
    fn state_nf(body: &str) -> Vec<u8> {
        format!(
            r#"(module
                (import "estate" "counter_add" (func $add (param i32 i32 i64) (result i64)))
                (import "estate" "state_set" (func $set (param i32 i32 i32 i32) (result i32)))
                (import "estate" "state_get" (func $get (param i32 i32) (result i32)))
                (memory (export "memory") 1)
                (data (i32.const 0) "k")
                (data (i32.const 16) "\ff\fe")
                (data (i32.const 32) "\00\07\00\00\00\00\00\00\00")
                (func (export "estate_abi_version") (result i32) i32.const 1)
                (func (export "estate_alloc") (param i32) (result i32) i32.const 1024)
                (func (export "estate_nf_init") (param i32 i32) (result i32) i32.const 0)
                (func (export "estate_on_packet") (param i32 i32) (result i32) {body} i32.const 0))"#
        )
        .into_bytes()
    }

    #[test]
    fn state_calls_check_what_the_guest_points_at() {
        let host = host();
        let store = crate::store::Store::new("n").tenant(crate::store::DEFAULT_TENANT);
        let packet = crate::traffic::OwnedPacket::new(
            6,
            ([10, 0, 0, 1], 1),
            ([10, 0, 0, 2], 2),
            estate_guest::nf::Direction::Forward,
            b"x".to_vec(),
        );
        let run = |body: &str| {
            let nf = host.load_nf(&state_nf(body)).unwrap();
            host.start_nf(&nf, store.clone(), "").unwrap().on_packet(&packet.as_packet())
        };
        // Well-formed calls work, borrowing key and value from guest memory.
        run("(drop (call $add (i32.const 0) (i32.const 1) (i64.const 5)))").unwrap();
        assert_eq!(store.get("k").map(|v| v.value), Some(Value::Int(5)));
        run("(drop (call $set (i32.const 0) (i32.const 1) (i32.const 32) (i32.const 9)))").unwrap();
        assert_eq!(store.get("k").map(|v| v.value), Some(Value::Int(7)));
        // Bad pointers, keys that are not UTF-8 and malformed values are guest faults
        // that name the problem; the store is untouched.
        for (body, needle) in [
            ("(drop (call $add (i32.const 65530) (i32.const 100) (i64.const 1)))", "outside its memory"),
            ("(drop (call $add (i32.const 16) (i32.const 2) (i64.const 1)))", "not UTF-8"),
            ("(drop (call $get (i32.const -1) (i32.const 1)))", "outside its memory"),
            ("(drop (call $set (i32.const 0) (i32.const 1) (i32.const 16) (i32.const 2)))", "malformed value"),
            ("(drop (call $set (i32.const 0) (i32.const 1) (i32.const 65535) (i32.const 9)))", "outside its memory"),
        ] {
            let err = run(body).unwrap_err();
            assert!(err.to_string().contains(needle), "{body}: {err}");
        }
        assert_eq!(store.get("k").map(|v| v.value), Some(Value::Int(7)));
    }
}
