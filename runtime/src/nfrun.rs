//! Running an NF guest over a packet source, with a fail policy for guest faults.
//!
//! One thread per running NF hands it one packet at a time. A guest fault (a trap, a
//! budget exceeded, a broken ABI) gives that packet the NF's fail policy: forward
//! (fail-open) or drop (fail-closed); the fault is counted and logged, and the instance
//! is rebuilt from its configuration before the next packet, since a guest that
//! faulted may have left its memory in any state. State in the node's store survives.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use estate_guest::Verdict;
use tracing::{info, warn};

use crate::traffic::OwnedPacket;
use crate::wasm::{GuestError, NfModule, NfState, WasmHost};

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
    /// No state sharing (baseline): the flow starts from nothing here.
    Off,
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
    /// Packets handed to the NF.
    pub packets: AtomicU64,
    /// Packets forwarded (by the NF, or by fail-open).
    pub forwarded: AtomicU64,
    /// Packets dropped (by the NF, or by fail-closed).
    pub dropped: AtomicU64,
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
    /// The NF's own metrics (`metric_add`).
    pub metrics: Mutex<BTreeMap<String, i64>>,
}

impl NfCounters {
    /// Every counter by name (`nf_…`, and `nf_metric:<name>` for the NF's metrics).
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut rows = vec![
            ("nf_packets".to_string(), get(&self.packets)),
            ("nf_forwarded".to_string(), get(&self.forwarded)),
            ("nf_dropped".to_string(), get(&self.dropped)),
            ("nf_faults".to_string(), get(&self.faults)),
            ("nf_restarts".to_string(), get(&self.restarts)),
            ("nf_events".to_string(), get(&self.events)),
            ("nf_flows_adopted".to_string(), get(&self.flows_adopted)),
            ("nf_keys_adopted".to_string(), get(&self.keys_adopted)),
            ("nf_adopt_failures".to_string(), get(&self.adopt_failures)),
        ];
        for (name, value) in self.metrics.lock().unwrap().iter() {
            rows.push((format!("nf_metric:{name}"), (*value).max(0) as u64));
        }
        rows
    }
}

/// A running NF. Dropping it stops the packet thread after the current packet.
#[derive(Debug)]
pub struct NfRun {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl NfRun {
    /// Starts `module` with `config` over `packets`. The instance is built before this
    /// returns, so a bad configuration is an error here, not a silent thread exit.
    pub fn start(
        host: Arc<WasmHost>,
        module: NfModule,
        config: String,
        state: Arc<dyn NfState>,
        packets: Box<dyn Iterator<Item = OwnedPacket> + Send>,
        settings: NfSettings,
        counters: Arc<NfCounters>,
    ) -> Result<NfRun, GuestError> {
        let NfSettings { fail, flows } = settings;
        let mut adopted: HashSet<String> = HashSet::new();
        let mut instance = host.start_nf(&module, state.clone(), &config)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = thread::Builder::new()
            .name("estate-nf".into())
            .spawn(move || {
                for packet in packets {
                    if stopping.load(Ordering::Relaxed) {
                        return;
                    }
                    counters.packets.fetch_add(1, Ordering::Relaxed);
                    // The first packet of a moved flow: its state comes first.
                    if packet.moved && flows != FlowState::Off && adopted.insert(packet.flow.clone()) {
                        match state.adopt_flow(&packet.flow, flows) {
                            Ok(keys) => {
                                counters.flows_adopted.fetch_add(1, Ordering::Relaxed);
                                counters.keys_adopted.fetch_add(keys as u64, Ordering::Relaxed);
                            }
                            Err(e) => {
                                counters.adopt_failures.fetch_add(1, Ordering::Relaxed);
                                warn!(flow = %packet.flow, "could not fetch a moved flow's state: {e}");
                            }
                        }
                    }
                    let verdict = match instance.on_packet(&packet.as_packet()) {
                        Ok(v) => v,
                        Err(e) => {
                            let n = counters.faults.fetch_add(1, Ordering::Relaxed) + 1;
                            warn!(flow = %packet.flow, faults = n, policy = %fail, "NF fault: {e}");
                            match host.start_nf(&module, state.clone(), &config) {
                                Ok(fresh) => {
                                    instance = fresh;
                                    counters.restarts.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(e) => warn!("NF could not be rebuilt, keeping the old instance: {e}"),
                            }
                            match fail {
                                FailPolicy::Open => Verdict::Forward,
                                FailPolicy::Closed => Verdict::Drop,
                            }
                        }
                    };
                    let counter = match verdict {
                        Verdict::Forward => &counters.forwarded,
                        Verdict::Drop => &counters.dropped,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                info!(packets = counters.packets.load(Ordering::Relaxed), "NF input finished");
            })
            .map_err(|e| GuestError::Abi(format!("spawning the NF thread: {e}")))?;
        Ok(NfRun { stop, thread: Some(thread) })
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

impl Drop for NfRun {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
