//! Counters of a running NF.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tracing::info;

use crate::peering::stats::Durations;

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
    /// Frames of a steered input that were not IPv4 TCP/UDP, or malformed frames of a
    /// live input (skipped; never passed on).
    pub bad_frames: AtomicU64,
    /// Well-formed frames of a live input that carry no flow the NF can see (ARP, other
    /// EtherTypes, IPv4 other than TCP/UDP, fragments): not handed to the NF.
    pub unparsed: AtomicU64,
    /// Of those, the frames an inline input passed to its other side unchanged (ARP
    /// always; the rest under `--unparsed pass`).
    pub unparsed_passed: AtomicU64,
    /// Frames an inline input sent out (forwarded by the NF, or passed unparsed).
    pub transmitted: AtomicU64,
    /// Frames an inline input failed to send, or could not rewrite (dropped).
    pub transmit_errors: AtomicU64,
    /// Packets the NF asked to rewrite (`packet_rewrite`) and forwarded.
    pub rewritten: AtomicU64,
    /// Frames the kernel dropped before a live input could capture them (its ring was
    /// full: the NF did not keep up), as libpcap reports them.
    pub capture_drops: AtomicU64,
    /// Global reads the NF made (answered or not).
    pub global_reads: AtomicU64,
    /// Their total time, in microseconds (the NF waited that long).
    pub global_read_us: AtomicU64,
    /// Requests to an external state backend (Redis) that failed.
    pub backend_errors: AtomicU64,
    /// The NF's own metrics (`metric_add`).
    pub metrics: Mutex<BTreeMap<String, i64>>,
    /// How long the NF thread spent on each packet it decided (observed just before
    /// `packets` counts it). A histogram: not among `snapshot`'s counters (`estate node
    /// --metrics` exports it).
    pub packet_time: Durations,
    /// For the packets of a live or inline input: the time from the kernel's capture
    /// timestamp to the verdict (waiting in the node's queue, and the NF's time). A
    /// histogram, like `packet_time`.
    pub wire_time: Durations,
}

impl NfCounters {
    /// Runs the global read `read`, counting it and its time.
    pub(crate) fn timed_global<T>(&self, read: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let result = read();
        self.global_read_us.fetch_add(start.elapsed().as_micros() as u64, Ordering::Relaxed);
        self.global_reads.fetch_add(1, Ordering::Relaxed);
        result
    }

    /// Adds to the NF's metric `name`.
    pub(crate) fn metric_add(&self, name: &str, delta: i64) {
        *self.metrics.lock().unwrap().entry(name.to_string()).or_default() += delta;
    }

    /// Counts and logs an event the NF emitted.
    pub(crate) fn emit(&self, event: &str) {
        self.events.fetch_add(1, Ordering::Relaxed);
        info!(target: "estate::nf", "{event}");
    }

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
            ("nf_unparsed".to_string(), get(&self.unparsed)),
            ("nf_unparsed_passed".to_string(), get(&self.unparsed_passed)),
            ("nf_transmitted".to_string(), get(&self.transmitted)),
            ("nf_transmit_errors".to_string(), get(&self.transmit_errors)),
            ("nf_rewritten".to_string(), get(&self.rewritten)),
            ("nf_capture_drops".to_string(), get(&self.capture_drops)),
            ("nf_global_reads".to_string(), get(&self.global_reads)),
            ("nf_global_read_us".to_string(), get(&self.global_read_us)),
            ("nf_backend_errors".to_string(), get(&self.backend_errors)),
        ];
        for (name, value) in self.metrics.lock().unwrap().iter() {
            rows.push((format!("nf_metric:{name}"), (*value).max(0) as u64));
        }
        rows
    }
}
