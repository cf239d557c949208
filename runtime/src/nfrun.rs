//! Running an NF guest over a packet source, with a fail policy for guest faults.
//!
//! One thread per running NF hands it one packet at a time. A guest fault (a trap, a
//! budget exceeded, a broken ABI) gives that packet the NF's fail policy: forward
//! (fail-open) or drop (fail-closed); the fault is counted and logged, and the instance
//! is rebuilt from its configuration before the next packet, since a guest that
//! faulted may have left its memory in any state. State in the node's store survives.
//!
//! A moved flow's state is fetched before the NF sees the flow's first packet here. The
//! fabric's mark says which move brought the flow ([`OwnedPacket::mark`]): the state is
//! fetched again whenever a flow arrives with a mark other than the one it last came
//! with, so a flow that moves A→B→A→B is taken over by B twice.
//!
//! A packet source may wait for its packets (the steered input of
//! [`crate::switch::SteerSource`]); such a source polls its [`Input`]'s stop flag between
//! bounded waits, so stopping an NF never waits on traffic.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use estate_guest::{Brought, Verdict};
use tracing::{info, warn};

use crate::traffic::OwnedPacket;
use crate::wasm::{GuestError, NfInstance, NfModule, NfState, WasmHost};

/// What a packet gets when the NF faults on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailPolicy {
    /// Forward it (availability first).
    Open,
    /// Drop it (safety first).
    Closed,
}

impl FromStr for FailPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "open" => Ok(FailPolicy::Open),
            "closed" => Ok(FailPolicy::Closed),
            other => Err(format!("fail policy {other:?}: expected open or closed")),
        }
    }
}

impl FailPolicy {
    /// The verdict a packet gets under this policy when the NF faults.
    pub fn verdict(self) -> Verdict {
        match self {
            FailPolicy::Open => Verdict::Forward,
            FailPolicy::Closed => Verdict::Drop,
        }
    }
}

impl fmt::Display for FailPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailPolicy::Open => "open",
            FailPolicy::Closed => "closed",
        })
    }
}

/// What happens to a moved flow's state when its first packet reaches this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowState {
    /// Move: this node takes the flow's keys over; the old owners delete theirs, so
    /// global sums never count the flow twice.
    Take,
    /// The paper's copy: fetch the newest value of each key; the old copies stay.
    Copy,
    /// No state sharing (baseline): a moved flow starts from nothing here, and the
    /// NF's global reads are refused (it sees only what it counted itself).
    Off,
}

/// The NF state of a run without state sharing: everything local, no global reads.
struct Unshared(Arc<dyn NfState>);

impl NfState for Unshared {
    fn counter_add(&self, key: &str, delta: i64) -> Result<i64, String> {
        self.0.counter_add(key, delta)
    }

    fn get(&self, key: &str) -> Option<estate_guest::Value> {
        self.0.get(key)
    }

    fn set(&self, key: &str, value: estate_guest::Value) -> Result<(), String> {
        self.0.set(key, value)
    }

    fn del(&self, key: &str) -> bool {
        self.0.del(key)
    }

    fn global(&self, _: &str, _: &str, _: Duration, _: bool) -> Result<Option<estate_guest::Item>, String> {
        Err("state sharing is off on this node".into())
    }

    fn take(&self, _: &str) -> Result<usize, String> {
        Err("state sharing is off on this node".into())
    }

    fn metric_add(&self, name: &str, delta: i64) {
        self.0.metric_add(name, delta)
    }

    fn emit(&self, event: &str) {
        self.0.emit(event)
    }
}

impl FromStr for FlowState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "take" => Ok(FlowState::Take),
            "copy" => Ok(FlowState::Copy),
            "off" => Ok(FlowState::Off),
            other => Err(format!("flow state {other:?}: expected take, copy or off")),
        }
    }
}

/// How a running NF treats faults and moved flows.
#[derive(Clone, Copy, Debug)]
pub struct NfSettings {
    /// What a packet gets when the NF faults on it.
    pub fail: FailPolicy,
    /// What happens to a moved flow's state.
    pub flows: FlowState,
}

/// Counters of a running NF.
#[derive(Debug, Default)]
pub struct NfCounters {
    /// Packets the NF has decided (forwarded or dropped). Counted last, after the
    /// verdict and fault counters, so a reader that sees `packets = n` sees those
    /// counters for all n packets.
    pub packets: AtomicU64,
    /// Packets forwarded (by the NF, or by fail-open).
    pub forwarded: AtomicU64,
    /// Packets dropped (by the NF, or by fail-closed).
    pub dropped: AtomicU64,
    /// Times the NF was replaced by another module while running.
    pub replacements: AtomicU64,
    /// Packets on which the guest faulted.
    pub faults: AtomicU64,
    /// Times the instance was rebuilt after a fault.
    pub restarts: AtomicU64,
    /// Events the NF emitted.
    pub events: AtomicU64,
    /// Moved flows whose state was fetched before their first packet here.
    pub flows_adopted: AtomicU64,
    /// Keys those flows brought along.
    pub keys_adopted: AtomicU64,
    /// Moved flows whose state could not be fetched (they started from nothing).
    pub adopt_failures: AtomicU64,
    /// Frames of a steered input that were not IPv4 TCP/UDP, or malformed (skipped).
    pub bad_frames: AtomicU64,
    /// The NF's own metrics (`metric_add`).
    pub metrics: Mutex<BTreeMap<String, i64>>,
}

impl NfCounters {
    /// Every counter by name (`nf_…`, and `nf_metric:<name>` for the NF's metrics).
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        // Acquire pairs with the Release in `count_verdict`: everything counted for
        // the packets seen here is visible to the loads below.
        let packets = self.packets.load(Ordering::Acquire);
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut rows = vec![
            ("nf_packets".to_string(), packets),
            ("nf_forwarded".to_string(), get(&self.forwarded)),
            ("nf_dropped".to_string(), get(&self.dropped)),
            ("nf_faults".to_string(), get(&self.faults)),
            ("nf_restarts".to_string(), get(&self.restarts)),
            ("nf_replacements".to_string(), get(&self.replacements)),
            ("nf_events".to_string(), get(&self.events)),
            ("nf_flows_adopted".to_string(), get(&self.flows_adopted)),
            ("nf_keys_adopted".to_string(), get(&self.keys_adopted)),
            ("nf_adopt_failures".to_string(), get(&self.adopt_failures)),
            ("nf_bad_frames".to_string(), get(&self.bad_frames)),
        ];
        for (name, value) in self.metrics.lock().unwrap().iter() {
            rows.push((format!("nf_metric:{name}"), (*value).max(0) as u64));
        }
        rows
    }
}

/// A packet source.
pub type Packets = Box<dyn Iterator<Item = OwnedPacket> + Send>;

/// An NF's input: its packets and the flag that stops them. The running NF raises the
/// flag when it is stopped (unloaded, replaced by another input, its node shut down); a
/// source that waits for packets polls it between bounded waits and then ends.
pub struct Input {
    packets: Packets,
    stop: Arc<AtomicBool>,
}

impl Input {
    /// An input whose source ends once `stop` is raised.
    pub fn stoppable(packets: Packets, stop: Arc<AtomicBool>) -> Input {
        Input { packets, stop }
    }
}

impl From<Packets> for Input {
    /// An input whose source never waits (a generator, a file): it needs no stop flag of
    /// its own, the NF thread checks one between packets.
    fn from(packets: Packets) -> Input {
        Input { packets, stop: Arc::default() }
    }
}

impl fmt::Debug for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Input").field("stopped", &self.stop.load(Ordering::Relaxed)).finish_non_exhaustive()
    }
}

/// A new module and instance waiting to take over at the next packet.
struct Swap {
    module: NfModule,
    config: String,
    instance: NfInstance,
}

/// A running NF. Dropping it stops the packet thread after the current packet (or the
/// current bounded wait of a source that waits for packets).
pub struct NfRun {
    /// The input's stop flag.
    stop: Arc<AtomicBool>,
    swap: Arc<Mutex<Option<Swap>>>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for NfRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NfRun").field("finished", &self.is_finished()).finish_non_exhaustive()
    }
}

impl NfRun {
    /// Starts `module` with `config` over `input`. The instance is built before this
    /// returns, so a bad configuration is an error here, not a silent thread exit.
    pub fn start(
        host: Arc<WasmHost>,
        module: NfModule,
        config: String,
        state: Arc<dyn NfState>,
        input: impl Into<Input>,
        settings: NfSettings,
        counters: Arc<NfCounters>,
    ) -> Result<NfRun, GuestError> {
        let NfSettings { fail, flows } = settings;
        let Input { packets, stop } = input.into();
        // The mark each moved flow last arrived with here.
        let mut adopted: HashMap<String, u16> = HashMap::new();
        let (mut module, mut config) = (module, config);
        let mut instance = host.start_nf(&module, state.clone(), &config)?;
        let stopping = stop.clone();
        let swap: Arc<Mutex<Option<Swap>>> = Arc::default();
        let swapping = swap.clone();
        let thread = thread::Builder::new()
            .name("estate-nf".into())
            .spawn(move || {
                for packet in packets {
                    if stopping.load(Ordering::Relaxed) {
                        return;
                    }
                    // Hot replacement: the new instance takes over between packets; state
                    // in the store is untouched.
                    if let Some(new) = swapping.lock().unwrap().take() {
                        (module, config, instance) = (new.module, new.config, new.instance);
                        counters.replacements.fetch_add(1, Ordering::Relaxed);
                        info!("NF replaced");
                    }
                    // The first packet of a moved flow, or of a new move of it: its state
                    // comes first.
                    if packet.mark != 0 && flows != FlowState::Off && new_move(&mut adopted, &packet) {
                        let brought = match state.adopt_flow(&packet.flow, flows) {
                            Ok(keys) => {
                                counters.flows_adopted.fetch_add(1, Ordering::Relaxed);
                                counters.keys_adopted.fetch_add(keys as u64, Ordering::Relaxed);
                                if flows == FlowState::Take { Brought::Taken } else { Brought::Copied }
                            }
                            Err(e) => {
                                counters.adopt_failures.fetch_add(1, Ordering::Relaxed);
                                warn!(flow = %packet.flow, "could not fetch a moved flow's state: {e}");
                                Brought::Failed
                            }
                        };
                        // A fault here is handled like one on the packet itself.
                        let moved = instance.on_flow_moved(&packet.flow, brought);
                        if let Err(e) = moved {
                            let fresh = host.start_nf(&module, state.clone(), &config);
                            fault(&counters, &packet.flow, fail, &e, fresh, &mut instance);
                            count_verdict(&counters, fail.verdict());
                            continue;
                        }
                    }
                    let verdict = match instance.on_packet(&packet.as_packet()) {
                        Ok(v) => v,
                        Err(e) => {
                            let fresh = host.start_nf(&module, state.clone(), &config);
                            fault(&counters, &packet.flow, fail, &e, fresh, &mut instance);
                            fail.verdict()
                        }
                    };
                    count_verdict(&counters, verdict);
                }
                info!(packets = counters.packets.load(Ordering::Relaxed), "NF input finished");
            })
            .map_err(|e| GuestError::Abi(format!("spawning the NF thread: {e}")))?;
        Ok(NfRun { stop, swap, thread: Some(thread) })
    }

    fn replace(&self, module: NfModule, config: String, instance: NfInstance) {
        *self.swap.lock().unwrap() = Some(Swap { module, config, instance });
    }

    /// Waits until the input is exhausted.
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Whether the input is exhausted (or the thread stopped).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }
}

/// Whether `packet` is the first one of its flow's move here (its mark differs from the
/// one the flow last arrived with); records the mark.
fn new_move(adopted: &mut HashMap<String, u16>, packet: &OwnedPacket) -> bool {
    match adopted.get_mut(&packet.flow) {
        Some(mark) if *mark == packet.mark => false,
        Some(mark) => {
            *mark = packet.mark;
            true
        }
        None => {
            adopted.insert(packet.flow.clone(), packet.mark);
            true
        }
    }
}

/// Counts a guest fault and swaps in the rebuilt instance (a guest that faulted may
/// have left its memory in any state).
fn fault(
    counters: &NfCounters,
    flow: &str,
    fail: FailPolicy,
    error: &GuestError,
    fresh: Result<NfInstance, GuestError>,
    instance: &mut NfInstance,
) {
    let n = counters.faults.fetch_add(1, Ordering::Relaxed) + 1;
    warn!(flow, faults = n, policy = %fail, "NF fault: {error}");
    match fresh {
        Ok(fresh) => {
            *instance = fresh;
            counters.restarts.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => warn!("NF could not be rebuilt, keeping the old instance: {e}"),
    }
}

fn count_verdict(counters: &NfCounters, verdict: Verdict) {
    let counter = match verdict {
        Verdict::Forward => &counters.forwarded,
        Verdict::Drop => &counters.dropped,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    counters.packets.fetch_add(1, Ordering::Release);
}

impl Drop for NfRun {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The NF place of a node: at most one NF, its input, and hot loading, replacement and
/// unloading of the NF while the node runs.
pub struct NfSlot {
    host: Arc<WasmHost>,
    state: Arc<dyn NfState>,
    counters: Arc<NfCounters>,
    run: Mutex<Option<NfRun>>,
    /// The state the running NF sees (shared, or unshared for a baseline run).
    run_state: Mutex<Option<Arc<dyn NfState>>>,
    /// An input given without an NF, waiting for `load`.
    held: Mutex<Option<(Input, NfSettings)>>,
}

impl fmt::Debug for NfSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NfSlot").field("status", &self.status()).finish_non_exhaustive()
    }
}

impl NfSlot {
    /// An empty slot whose NFs run on `host` with `state`.
    pub fn new(host: Arc<WasmHost>, state: Arc<dyn NfState>, counters: Arc<NfCounters>) -> NfSlot {
        NfSlot { host, state, counters, run: Mutex::new(None), run_state: Mutex::new(None), held: Mutex::new(None) }
    }

    /// The counters of the slot's NFs (shared with packet sources that count, e.g. bad
    /// frames of a steered input).
    pub fn counters(&self) -> Arc<NfCounters> {
        self.counters.clone()
    }

    /// Starts the NF `bytes` over `packets` now (replacing any NF and held input).
    pub fn start(
        &self,
        bytes: &[u8],
        config: &str,
        packets: impl Into<Input>,
        settings: NfSettings,
    ) -> Result<(), GuestError> {
        let module = self.host.load_nf(bytes)?;
        let state: Arc<dyn NfState> = match settings.flows {
            FlowState::Off => Arc::new(Unshared(self.state.clone())),
            _ => self.state.clone(),
        };
        let run = NfRun::start(
            self.host.clone(),
            module,
            config.to_string(),
            state.clone(),
            packets,
            settings,
            self.counters.clone(),
        )?;
        *self.held.lock().unwrap() = None;
        *self.run_state.lock().unwrap() = Some(state);
        *self.run.lock().unwrap() = Some(run);
        Ok(())
    }

    /// Keeps `packets` until an NF is loaded.
    pub fn hold_input(&self, packets: impl Into<Input>, settings: NfSettings) {
        *self.held.lock().unwrap() = Some((packets.into(), settings));
    }

    /// Loads the NF `bytes`: it replaces the running NF between two packets (the state
    /// in the store stays), or starts on the held input. The new instance is built here,
    /// so a bad module or configuration is an error and changes nothing.
    pub fn load(&self, bytes: &[u8], config: &str) -> Result<&'static str, String> {
        self.load_or_replace(bytes, config, false)
    }

    /// Replaces the running NF with `bytes` between two packets (the state in the store
    /// stays); an error, changing nothing, if no NF is running or the module is bad.
    pub fn replace(&self, bytes: &[u8], config: &str) -> Result<&'static str, String> {
        self.load_or_replace(bytes, config, true)
    }

    fn load_or_replace(&self, bytes: &[u8], config: &str, replace_only: bool) -> Result<&'static str, String> {
        let module = self.host.load_nf(bytes).map_err(|e| e.to_string())?;
        let running = self.run.lock().unwrap();
        if let Some(run) = running.as_ref().filter(|r| !r.is_finished()) {
            let state = self.run_state.lock().unwrap().clone().unwrap_or_else(|| self.state.clone());
            let instance = self.host.start_nf(&module, state, config).map_err(|e| e.to_string())?;
            run.replace(module, config.to_string(), instance);
            return Ok("replaced");
        }
        drop(running);
        if replace_only {
            return Err("no NF is running on this node to replace (nf load starts one)".into());
        }
        let Some((packets, settings)) = self.held.lock().unwrap().take() else {
            return Err("no NF input on this node: start it with --input".into());
        };
        self.start(bytes, config, packets, settings).map_err(|e| e.to_string())?;
        Ok("started")
    }

    /// Stops the NF; the rest of its input is not processed. Returns whether one ran.
    pub fn unload(&self) -> bool {
        self.run.lock().unwrap().take().is_some()
    }

    /// `running`, `finished` (input exhausted), `waiting` (input held, no NF) or `none`.
    pub fn status(&self) -> &'static str {
        match self.run.lock().unwrap().as_ref() {
            Some(run) if !run.is_finished() => "running",
            Some(_) => "finished",
            None if self.held.lock().unwrap().is_some() => "waiting",
            None => "none",
        }
    }

    /// Whether no NF is processing packets.
    pub fn finished(&self) -> bool {
        self.run.lock().unwrap().as_ref().is_none_or(NfRun::is_finished)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use estate_guest::nf::Direction;

    #[test]
    fn a_flow_is_adopted_again_at_every_new_mark() {
        let mut adopted = HashMap::new();
        let mut packet = OwnedPacket::new(6, ([10, 0, 0, 1], 1000), ([10, 0, 0, 2], 80), Direction::Forward, vec![]);
        let mut adoptions = Vec::new();
        // A→B (1), more packets, B→A (2), A→B again (3): B adopts at 1 and 3.
        for mark in [1, 1, 1, 3, 3, 4, 4, 1] {
            packet.mark = mark;
            adoptions.push(new_move(&mut adopted, &packet));
        }
        assert_eq!(adoptions, [true, false, false, true, false, true, false, true]);
        let other = OwnedPacket { flow: "other".into(), ..packet.clone() };
        assert!(new_move(&mut adopted, &other), "per flow");
    }
}
