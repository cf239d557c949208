//! Which metric exports which row of `estate stats`, and the names of every other
//! metric family: the one list `docs/metrics.md` and the tests are checked against.

/// Whether a metric only goes up (a counter) or may also go down (a gauge).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (until the node restarts).
    Counter,
    /// May go up and down.
    Gauge,
}

/// A row of `estate stats` and the metric that exports it.
#[derive(Clone, Copy, Debug)]
pub struct Exported {
    /// The row's name in `estate stats` (`frames`, `nf_packets`, …).
    pub stat: &'static str,
    /// The metric's name as exposed (a counter's with its `_total`).
    pub metric: &'static str,
    /// Counter or gauge.
    pub kind: Kind,
    /// What it counts (the `# HELP` line).
    pub help: &'static str,
    /// The factor from the row's unit to the metric's (microseconds to seconds: 1e-6).
    pub scale: f64,
}

const fn counter(stat: &'static str, metric: &'static str, help: &'static str) -> Exported {
    Exported { stat, metric, kind: Kind::Counter, help, scale: 1.0 }
}

/// The node's counters ([`crate::node::Stats`]), without labels.
pub const STATS: &[Exported] = &[
    counter("frames", "estate_peer_frames_received_total", "Peer frames received at the listen endpoint."),
    counter(
        "malformed",
        "estate_peer_frames_malformed_total",
        "Peer frames dropped as not valid estate frames (bad magic, version or body).",
    ),
    counter("oversized", "estate_peer_frames_oversized_total", "Peer frames dropped as larger than the frame limit."),
    counter(
        "rejected",
        "estate_peer_messages_rejected_total",
        "Well-formed peer messages dropped: from non-members, replies to no outstanding read, module bytes nobody asked for.",
    ),
    counter(
        "send_dropped",
        "estate_peer_sends_dropped_total",
        "Peer messages not sent because the peer's queue was full.",
    ),
    counter(
        "control_malformed",
        "estate_control_requests_malformed_total",
        "Control requests that could not be decoded.",
    ),
    counter(
        "served",
        "estate_global_reads_served_total",
        "Global reads of other members that this node answered (its own reads are not counted here).",
    ),
    counter("bytes_in", "estate_peer_received_bytes_total", "Bytes of peer frames received."),
    counter("bytes_out", "estate_peer_sent_bytes_total", "Bytes of peer frames sent."),
    counter("handoff_out", "estate_handoff_items_sent_total", "Items this node handed to members when it left."),
    counter("handoff_in", "estate_handoff_items_received_total", "Items leaving members handed to this node."),
    counter(
        "handoff_resent",
        "estate_handoff_batches_resent_total",
        "Hand-off batches this node sent again because no acknowledgement came.",
    ),
    counter(
        "handoff_duplicates",
        "estate_handoff_duplicate_batches_total",
        "Hand-off batches received again (acknowledged again, not stored twice).",
    ),
    counter(
        "unknown_tenant",
        "estate_unknown_tenant_refusals_total",
        "Peer messages and control requests refused for naming a tenant this node does not have.",
    ),
    counter(
        "module_refused",
        "estate_module_requests_refused_total",
        "Module requests refused: no read of this node in flight pushes the module down to the asker for that tenant.",
    ),
    counter(
        "control_unauthenticated",
        "estate_control_requests_unauthenticated_total",
        "Control requests without a credential, or with one the node does not accept.",
    ),
    counter(
        "control_forbidden",
        "estate_control_requests_forbidden_total",
        "Control requests their principal may not make (another tenant's, the admin's).",
    ),
    counter("handshakes", "estate_secure_handshakes_total", "Secure peering: handshakes completed (either side)."),
    counter(
        "unknown_peer",
        "estate_secure_unknown_peer_refusals_total",
        "Secure peering: handshakes refused because the peer's key is not in the roster.",
    ),
    counter(
        "bad_handshake",
        "estate_secure_bad_handshakes_total",
        "Secure peering: handshake messages that failed (malformed, not authentic, or answering no handshake of this node).",
    ),
    counter(
        "handshake_evicted",
        "estate_secure_handshakes_evicted_total",
        "Secure peering: unanswered handshakes dropped, the oldest first, to make room.",
    ),
    counter("bad_mac", "estate_secure_unauthentic_frames_total", "Secure peering: frames that failed authentication."),
    counter(
        "replay",
        "estate_secure_replayed_frames_total",
        "Secure peering: frames refused as replayed or too old for the replay window.",
    ),
    counter(
        "identity_mismatch",
        "estate_secure_identity_mismatches_total",
        "Secure peering: authenticated messages whose sender id is not the one the roster gives their key.",
    ),
    counter(
        "plaintext_refused",
        "estate_secure_plaintext_refused_total",
        "Secure peering: plaintext peer frames refused.",
    ),
    counter(
        "unknown_session",
        "estate_secure_unknown_session_frames_total",
        "Secure peering: frames for a session this node does not have (the sender is told).",
    ),
    counter("key_reloads", "estate_secure_key_reloads_total", "Secure peering: key file or roster changes taken up."),
    counter(
        "key_reload_failed",
        "estate_secure_key_reload_failures_total",
        "Secure peering: key file or roster changes refused (unreadable, not private, malformed); the node keeps what it had.",
    ),
    Exported {
        stat: "stale_sessions",
        metric: "estate_secure_stale_sessions",
        kind: Kind::Gauge,
        help: "Secure peering: sending sessions still made with a key this node has replaced (renewed at once).",
        scale: 1.0,
    },
];

/// The NF's counters ([`crate::nf::NfCounters`]), labelled with the tenant that owns
/// the node's NF place. (`nf_metric:NAME` rows are [`NF_GUEST_METRIC`].)
pub const NF: &[Exported] = &[
    counter("nf_packets", "estate_nf_packets_total", "Packets the NF decided (forwarded or dropped)."),
    counter("nf_forwarded", "estate_nf_packets_forwarded_total", "Packets forwarded (by the NF, or by fail-open)."),
    counter("nf_dropped", "estate_nf_packets_dropped_total", "Packets dropped (by the NF, or by fail-closed)."),
    counter("nf_faults", "estate_nf_faults_total", "Packets on which the NF guest faulted (they got the fail policy)."),
    counter("nf_restarts", "estate_nf_restarts_total", "Times the NF instance was rebuilt after a fault."),
    counter(
        "nf_replacements",
        "estate_nf_replacements_total",
        "Times the NF was replaced by another module while running.",
    ),
    counter("nf_events", "estate_nf_events_total", "Events the NF emitted."),
    counter(
        "nf_flows_adopted",
        "estate_nf_flows_adopted_total",
        "Moved flows whose state was fetched before their first packet here.",
    ),
    counter("nf_keys_adopted", "estate_nf_keys_adopted_total", "Keys that adopted flows brought along."),
    counter(
        "nf_adopt_failures",
        "estate_nf_adopt_failures_total",
        "Moved flows whose state could not be fetched (they started from nothing).",
    ),
    counter(
        "nf_bad_frames",
        "estate_nf_bad_frames_total",
        "Frames of a steered input that were not IPv4 TCP/UDP, or malformed frames of a live input (skipped).",
    ),
    counter(
        "nf_unparsed",
        "estate_nf_unparsed_frames_total",
        "Well-formed frames of a live input without a flow the NF can see (ARP, non-IPv4, not TCP/UDP, fragments).",
    ),
    counter(
        "nf_unparsed_passed",
        "estate_nf_unparsed_frames_passed_total",
        "Of those, frames an inline input passed to its other side unchanged.",
    ),
    counter("nf_transmitted", "estate_nf_frames_transmitted_total", "Frames an inline input sent out."),
    counter(
        "nf_transmit_errors",
        "estate_nf_transmit_errors_total",
        "Frames an inline input failed to send or to rewrite (dropped).",
    ),
    counter("nf_rewritten", "estate_nf_packets_rewritten_total", "Packets the NF rewrote and forwarded."),
    counter(
        "nf_capture_drops",
        "estate_nf_capture_drops_total",
        "Frames the kernel dropped before a live input captured them (the NF did not keep up).",
    ),
    counter("nf_global_reads", "estate_nf_global_reads_total", "Global reads the NF made (answered or not)."),
    Exported {
        stat: "nf_global_read_us",
        metric: "estate_nf_global_read_seconds_total",
        kind: Kind::Counter,
        help: "Time the NF waited for its global reads, in seconds.",
        scale: 1e-6,
    },
    counter(
        "nf_backend_errors",
        "estate_nf_backend_errors_total",
        "Requests of the NF to an external state backend (Redis) that failed.",
    ),
];

/// The NF's own metrics (`metric_add`), by `metric` name, with `tenant`.
pub const NF_GUEST_METRIC: &str = "estate_nf_guest_metric";
/// Packets per second, with `tenant` (see the help text in `mod.rs`).
pub const NF_PACKET_RATE: &str = "estate_nf_packets_per_second";
/// The NF thread's time per packet, with `tenant`.
pub const NF_PACKET_TIME: &str = "estate_nf_packet_duration_seconds";
/// Live inputs: capture to verdict, with `tenant`.
pub const NF_WIRE_TIME: &str = "estate_nf_wire_delay_seconds";
/// Global reads started on this node.
pub const READ_TIME: &str = "estate_global_read_duration_seconds";
/// Wasm reducer calls on this node.
pub const REDUCER_TIME: &str = "estate_reducer_call_duration_seconds";
/// Per tenant: items in the store.
pub const TENANT_ITEMS: &str = "estate_store_items";
/// Per tenant: key and value bytes in the store.
pub const TENANT_BYTES: &str = "estate_store_bytes";
/// Per tenant: Wasm reducers loaded by name.
pub const TENANT_REDUCERS: &str = "estate_reducers_loaded";
/// Per tenant: compiled reducer modules cached.
pub const TENANT_MODULES: &str = "estate_reducer_modules";
/// Per tenant: bytes of those modules.
pub const TENANT_MODULE_BYTES: &str = "estate_reducer_module_bytes";
/// Per tenant and quota: refusals.
pub const TENANT_REFUSALS: &str = "estate_quota_refusals_total";

/// The quotas refusals are counted for, each exported for every tenant (0 until the
/// first refusal): the store's `keys` and `bytes`, then those the node checks.
pub const QUOTAS: [&str; 7] = ["keys", "bytes", "reducers", "modules", "module_bytes", "reads", "wasm_jobs"];

/// Every metric family the node exposes, by name.
pub fn families() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = STATS.iter().chain(NF).map(|e| e.metric).collect();
    names.extend([
        NF_GUEST_METRIC,
        NF_PACKET_RATE,
        NF_PACKET_TIME,
        NF_WIRE_TIME,
        READ_TIME,
        REDUCER_TIME,
        TENANT_ITEMS,
        TENANT_BYTES,
        TENANT_REDUCERS,
        TENANT_MODULES,
        TENANT_MODULE_BYTES,
        TENANT_REFUSALS,
    ]);
    names
}
