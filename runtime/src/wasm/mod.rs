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
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use estate_guest::abi::{self, IMPORT_MODULE, export, import};
use estate_guest::nf::Rewrite;
use wasmtime::{
    Caller, Config, Engine, Instance, InstancePre, Linker, Memory, Module, Store, StoreLimits, StoreLimitsBuilder,
    TypedFunc,
};

/// The guest ABI version this host speaks.
pub const ABI_VERSION: i32 = abi::VERSION;

/// Budgets for one guest call. Every limit names itself in the error that enforces it.
#[derive(Clone, Debug, PartialEq, Eq)]
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
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(5);

#[cfg(test)]
mod batch_tests;
mod error;
mod hostcalls;
mod matcher;
mod nf;
mod reducer;
#[cfg(test)]
mod tests;

pub(crate) use error::classify;
pub use error::{EngineError, GuestError};
use hostcalls::*;
use matcher::{host_matcher_count, host_matcher_new};
pub use nf::{Decision, NfInstance, NfModule, NfState};
pub use reducer::ReducerModule;

/// Per-store host data.
pub(crate) struct GuestData {
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
    /// Matchers the guest built (`estate.matcher_new`), by handle.
    matchers: Vec<aho_corasick::AhoCorasick>,
    /// The matcher that scans every payload of a batch (`abi::matcher::SCAN_PAYLOADS`).
    payload_matcher: Option<usize>,
    /// The guest's exported memory, once instantiated.
    memory: Option<Memory>,
    /// The packet call running, if any (`estate.packet_rewrite` is valid only then).
    packet_call: PacketCall,
    /// The rewrites the guest asked for during the packet call: the packet's index in
    /// the call, and its last `estate.packet_rewrite`.
    rewrites: Vec<(usize, Rewrite)>,
}

/// Which packet call is running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PacketCall {
    /// None: `estate.packet_rewrite` is refused.
    None,
    /// `estate_on_packet`: one packet, index 0.
    One,
    /// `estate_on_packets`: the packet being handled is the first whose verdict byte,
    /// at `verdicts + index` in guest memory, is still pending.
    Batch { verdicts: usize, count: usize },
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
    pub fn new(limits: Limits) -> Result<WasmHost, EngineError> {
        let mut config = Config::new();
        config.consume_fuel(true).epoch_interruption(true);
        let engine = Engine::new(&config).map_err(EngineError::Engine)?;
        let mut linker = Linker::new(&engine);
        linker.func_wrap(IMPORT_MODULE, import::RESULT, host_result).map_err(EngineError::Engine)?;
        linker.func_wrap(IMPORT_MODULE, import::COUNTER_ADD, host_counter_add).map_err(EngineError::Engine)?;
        linker.func_wrap(IMPORT_MODULE, import::COUNTER_TRY_ADD, host_counter_try_add).map_err(EngineError::Engine)?;
        linker
            .func_wrap(IMPORT_MODULE, import::STAGED_LEN, |c: Caller<'_, GuestData>| c.data().staged.len() as i32)
            .map_err(EngineError::Engine)?;
        linker.func_wrap(IMPORT_MODULE, import::STAGED_READ, host_staged_read).map_err(EngineError::Engine)?;
        linker.func_wrap(IMPORT_MODULE, import::STATE_GET, host_state_get).map_err(EngineError::Engine)?;
        linker.func_wrap(IMPORT_MODULE, import::STATE_SET, host_state_set).map_err(EngineError::Engine)?;
        linker.func_wrap(IMPORT_MODULE, import::STATE_DEL, host_state_del).map_err(EngineError::Engine)?;
        linker.func_wrap(IMPORT_MODULE, import::GLOBAL, host_global::<false>).map_err(EngineError::Engine)?;
        linker.func_wrap(IMPORT_MODULE, import::GLOBAL_ALL, host_global::<true>).map_err(EngineError::Engine)?;
        linker.func_wrap(IMPORT_MODULE, import::TAKE, host_take).map_err(EngineError::Engine)?;
        linker
            .func_wrap(IMPORT_MODULE, import::NOW_MS, |_: Caller<'_, GuestData>| {
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
            })
            .map_err(EngineError::Engine)?;
        linker.func_wrap(IMPORT_MODULE, import::METRIC_ADD, host_metric_add).map_err(EngineError::Engine)?;
        linker.func_wrap(IMPORT_MODULE, import::EMIT, host_emit).map_err(EngineError::Engine)?;
        linker.func_wrap(IMPORT_MODULE, import::MATCHER_NEW, host_matcher_new).map_err(EngineError::Engine)?;
        linker.func_wrap(IMPORT_MODULE, import::MATCHER_COUNT, host_matcher_count).map_err(EngineError::Engine)?;
        linker.func_wrap(IMPORT_MODULE, import::PACKET_REWRITE, host_packet_rewrite).map_err(EngineError::Engine)?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        let (stop, ticking) = (ticker_stop.clone(), engine.weak());
        thread::Builder::new()
            .name("estate-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    thread::sleep(EPOCH_TICK);
                    match ticking.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(EngineError::Ticker)?;
        Ok(WasmHost { engine, linker, limits, ticker_stop })
    }

    /// The default limits of this host.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn compile(&self, bytes: &[u8], entry: &str) -> Result<Module, GuestError> {
        let module = Module::new(&self.engine, bytes).map_err(|e| GuestError::Invalid(format!("{e:#}")))?;
        for name in [export::ABI_VERSION, export::ALLOC, entry] {
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
            matchers: Vec::new(),
            payload_matcher: None,
            wall_ticks: wall_ticks(limits),
            memory: None,
            packet_call: PacketCall::None,
            rewrites: Vec::new(),
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
        let version: TypedFunc<(), i32> = typed(&instance, &mut *store, export::ABI_VERSION)?;
        let found = version.call(&mut *store, ()).map_err(|e| classify(e, store, limits))?;
        if found != ABI_VERSION {
            return Err(GuestError::AbiVersion { found });
        }
        let memory = instance
            .get_memory(&mut *store, export::MEMORY)
            .ok_or_else(|| GuestError::Invalid("missing export `memory`".into()))?;
        store.data_mut().memory = Some(memory);
        let alloc = typed(&instance, &mut *store, export::ALLOC)?;
        Ok(Guest { instance, memory, alloc })
    }
}

/// sha256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// An instance with its store, kept between reducer calls.
pub(crate) struct Warm {
    store: Store<GuestData>,
    guest: Guest,
}

/// Warm instances kept per reducer module (one per worker thread is enough).
const MAX_IDLE_INSTANCES: usize = 4;

pub(crate) struct Guest {
    instance: Instance,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
}

impl Guest {
    /// Copies `input` into a buffer the guest allocated; returns the guest pointer.
    fn write_input(&self, store: &mut Store<GuestData>, input: &[u8], limits: &Limits) -> Result<i32, GuestError> {
        let ptr = self.alloc.call(&mut *store, len_i32(input)?).map_err(|e| classify(e, store, limits))?;
        if ptr == abi::ALLOC_FAILED {
            return Err(GuestError::Abi(format!("estate_alloc({}) returned null", input.len())));
        }
        self.memory
            .write(&mut *store, ptr as u32 as usize, input)
            .map_err(|_| GuestError::Abi(format!("estate_alloc returned {ptr}, outside guest memory")))?;
        Ok(ptr)
    }
}

/// Gives a store a fresh budget for one call.
fn arm(store: &mut Store<GuestData>, limits: &Limits) {
    arm_for(store, limits, 1);
}

/// Arms a call that does the work of `calls` calls (a batch of packets): `calls` times
/// the fuel and wall time of one.
fn arm_for(store: &mut Store<GuestData>, limits: &Limits, calls: u64) {
    // Fuel is enabled on the engine, so setting it cannot fail.
    store.set_fuel(limits.fuel.saturating_mul(calls)).expect("fuel is enabled");
    store.set_epoch_deadline(wall_ticks(limits).saturating_mul(calls));
    store.epoch_deadline_trap();
}

fn wall_ticks(limits: &Limits) -> u64 {
    limits.wall_time.as_millis().div_ceil(EPOCH_TICK.as_millis()).max(1) as u64
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
    size_i32(buf.len())
}

/// A length as the guest ABI's `i32`; an input too large for it is refused.
fn size_i32(len: usize) -> Result<i32, GuestError> {
    i32::try_from(len).map_err(|_| GuestError::Abi(format!("input of {len} bytes is too large")))
}

fn message(bytes: Option<Vec<u8>>) -> String {
    bytes.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_else(|| "(no message)".into())
}
