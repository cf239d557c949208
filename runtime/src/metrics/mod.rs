//! The node's metrics in Prometheus' text exposition format (version 0.0.4), served
//! by `estate node --metrics ADDR` on `http://ADDR/metrics` ([`Exporter`]).
//!
//! Nothing is counted twice: a custom collector reads the node's own counters at
//! scrape time — [`Stats`] (every row `estate stats` prints), the NF's
//! [`NfCounters`], each tenant's store, reducers and quota refusals — and the
//! duration histograms kept next to them in atomics (`Stats::read_time`,
//! `Stats::reducer_time`, `NfCounters::packet_time`). The names, types and help texts
//! are in [`table`], and `docs/metrics.md` lists them.
//!
//! Only this module uses `prometheus-client` and `tiny_http`.

mod http;
pub mod table;

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry as Prometheus;

use crate::nf::NfCounters;
use crate::peering::stats::{DurationsSnapshot, Stats};
use crate::reduce::registry::Registry;
use crate::store::Store;
use crate::tenancy::Tenants;
pub use http::{Exporter, ServeError};
use table::{Exported, Kind};

/// The `Content-Type` of what [`Metrics::render`] returns.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// What the metrics are read from: the node's counters, store and registry.
pub(crate) struct Sources {
    pub(crate) stats: Arc<Stats>,
    pub(crate) nf: Arc<NfCounters>,
    /// The tenant that owns the NF place (the NF metrics' `tenant` label).
    pub(crate) nf_tenant: String,
    pub(crate) store: Arc<Store>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) tenants: Arc<Tenants>,
}

/// A node's metrics, read afresh on every [`Metrics::render`].
#[derive(Debug)]
pub struct Metrics {
    registry: Prometheus,
}

impl Metrics {
    pub(crate) fn new(sources: Sources) -> Metrics {
        let packets = sources.nf.packets.load(Ordering::Acquire);
        let last = Mutex::new(LastScrape { at: Instant::now(), packets });
        let mut registry = Prometheus::default();
        registry.register_collector(Box::new(NodeCollector { sources, last }));
        Metrics { registry }
    }

    /// Every metric as it is now, in the Prometheus text format ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String fails only if a collector does, and ours do not.
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            .expect("encoding metrics into a String");
        text
    }
}

/// The packet count at the previous scrape, for the packet rate.
struct LastScrape {
    at: Instant,
    packets: u64,
}

struct NodeCollector {
    sources: Sources,
    last: Mutex<LastScrape>,
}

impl fmt::Debug for NodeCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeCollector").field("nf_tenant", &self.sources.nf_tenant).finish_non_exhaustive()
    }
}

/// A sample's labels.
type Labels = Vec<(&'static str, String)>;

/// A sample's value.
#[derive(Clone, Copy, Debug)]
enum Value {
    Int(u64),
    Signed(i64),
    Float(f64),
}

/// One metric family: its descriptor, then one sample per label set (none: nothing).
fn family(
    encoder: &mut DescriptorEncoder<'_>,
    metric: &str,
    help: &str,
    kind: Kind,
    samples: &[(Labels, Value)],
) -> fmt::Result {
    if samples.is_empty() {
        return Ok(());
    }
    let (name, metric_type) = match kind {
        // The encoder appends a counter's `_total`.
        Kind::Counter => (metric.strip_suffix("_total").unwrap_or(metric), MetricType::Counter),
        Kind::Gauge => (metric, MetricType::Gauge),
    };
    let mut descriptor = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (labels, value) in samples {
        let sample = descriptor.encode_family(labels)?;
        match (kind, *value) {
            (Kind::Counter, Value::Float(v)) => ConstCounter::new(v).encode(sample)?,
            (Kind::Counter, Value::Int(v)) => ConstCounter::new(v).encode(sample)?,
            (Kind::Counter, Value::Signed(v)) => ConstCounter::new(v.max(0) as u64).encode(sample)?,
            (Kind::Gauge, Value::Float(v)) => ConstGauge::new(v).encode(sample)?,
            (Kind::Gauge, Value::Int(v)) => ConstGauge::new(v).encode(sample)?,
            (Kind::Gauge, Value::Signed(v)) => ConstGauge::new(v).encode(sample)?,
        }
    }
    Ok(())
}

/// One histogram family of durations, in seconds.
fn histogram(
    encoder: &mut DescriptorEncoder<'_>,
    metric: &str,
    help: &str,
    samples: &[(Labels, DurationsSnapshot)],
) -> fmt::Result {
    let mut descriptor = encoder.encode_descriptor(metric, help, None, MetricType::Histogram)?;
    for (labels, h) in samples {
        let mut sample = descriptor.encode_family(labels)?;
        sample.encode_histogram::<NoLabelSet>(h.sum_seconds, h.count, &h.buckets, None)?;
    }
    Ok(())
}

/// The rows of `exported` found in `rows` (a counters snapshot), each with `labels`.
fn exported_rows(
    encoder: &mut DescriptorEncoder<'_>,
    exported: &[Exported],
    rows: &[(String, u64)],
    labels: &Labels,
) -> fmt::Result {
    for e in exported {
        let Some((_, raw)) = rows.iter().find(|(name, _)| name == e.stat) else { continue };
        let value = if e.scale == 1.0 { Value::Int(*raw) } else { Value::Float(*raw as f64 * e.scale) };
        family(encoder, e.metric, e.help, e.kind, &[(labels.clone(), value)])?;
    }
    Ok(())
}

const PACKET_RATE_HELP: &str = "Packets the NF decided per second, averaged over the time since the previous \
     scrape of this endpoint by any client (since the node started, at the first scrape); rate() over \
     estate_nf_packets_total is exact.";

impl NodeCollector {
    /// The NF's packets per second since the previous scrape.
    fn packet_rate(&self, packets: u64) -> f64 {
        let mut last = self.last.lock().unwrap();
        let now = Instant::now();
        let seconds = now.duration_since(last.at).as_secs_f64();
        let rate = if seconds > 0.0 { packets.saturating_sub(last.packets) as f64 / seconds } else { 0.0 };
        *last = LastScrape { at: now, packets };
        rate
    }

    fn node(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let s = &self.sources;
        exported_rows(encoder, table::STATS, &s.stats.snapshot(), &Vec::new())?;
        histogram(
            encoder,
            table::READ_TIME,
            "Time of the global reads started on this node (library calls, control requests, the NF's reads; \
             not flow takes), from the start to the answer handed to the caller, answered or failed.",
            &[(Vec::new(), s.stats.read_time.snapshot())],
        )?;
        histogram(
            encoder,
            table::REDUCER_TIME,
            "Time of each step of Wasm reducer calls on this node: a member's partial over its own items (for its \
             own read or another member's), or a reader's final reduction.",
            &[(Vec::new(), s.stats.reducer_time.snapshot())],
        )
    }

    fn nf(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let s = &self.sources;
        let tenant: Labels = vec![("tenant", s.nf_tenant.clone())];
        let rows = s.nf.snapshot();
        exported_rows(encoder, table::NF, &rows, &tenant)?;
        let packets = rows.iter().find(|(name, _)| name == "nf_packets").map_or(0, |(_, n)| *n);
        let rate = Value::Float(self.packet_rate(packets));
        family(encoder, table::NF_PACKET_RATE, PACKET_RATE_HELP, Kind::Gauge, &[(tenant.clone(), rate)])?;
        histogram(
            encoder,
            table::NF_PACKET_TIME,
            "Time the NF thread spent on one packet: the guest's packet call and, for the first packet of a \
             moved flow here, fetching the flow's state and the guest's flow-moved call (and rebuilding the \
             instance after a fault).",
            &[(tenant.clone(), s.nf.packet_time.snapshot())],
        )?;
        histogram(
            encoder,
            table::NF_WIRE_TIME,
            "For the packets of a live or inline input: from the kernel's capture timestamp to the verdict \
             (waiting in the node's queue, and the NF's time).",
            &[(tenant.clone(), s.nf.wire_time.snapshot())],
        )?;
        let guest: Vec<(Labels, Value)> =
            s.nf.metrics
                .lock()
                .unwrap()
                .iter()
                .map(|(name, v)| {
                    let mut labels = tenant.clone();
                    labels.push(("metric", name.clone()));
                    (labels, Value::Signed(*v))
                })
                .collect();
        let help = "The NF's own metrics (the guest's metric_add), by name: the sum of what it added.";
        family(encoder, table::NF_GUEST_METRIC, help, Kind::Gauge, &guest)
    }

    fn tenants(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let s = &self.sources;
        let mut items = Vec::new();
        let mut bytes = Vec::new();
        let mut reducers = Vec::new();
        let mut modules = Vec::new();
        let mut module_bytes = Vec::new();
        let mut refusals = Vec::new();
        for name in s.tenants.names() {
            let tenant: Labels = vec![("tenant", name.to_string())];
            let mut refused: Vec<(String, u64)> = table::QUOTAS.iter().map(|q| (q.to_string(), 0)).collect();
            let mut count = |quota: &str, n: u64| match refused.iter_mut().find(|(q, _)| q == quota) {
                Some((_, total)) => *total += n,
                None => refused.push((quota.to_string(), n)),
            };
            if let Some(store) = s.store.tenant(name) {
                items.push((tenant.clone(), Value::Int(store.len() as u64)));
                bytes.push((tenant.clone(), Value::Int(store.bytes())));
                store.refusals().into_iter().for_each(|(quota, n)| count(quota, n));
            }
            s.stats.quota_refusals(name).into_iter().for_each(|(quota, n)| count(quota, n));
            let (cached, cached_bytes) = s.registry.cached(name);
            reducers.push((tenant.clone(), Value::Int(s.registry.loaded(name) as u64)));
            modules.push((tenant.clone(), Value::Int(cached as u64)));
            module_bytes.push((tenant.clone(), Value::Int(cached_bytes as u64)));
            for (quota, n) in refused {
                let mut labels = tenant.clone();
                labels.push(("quota", quota));
                refusals.push((labels, Value::Int(n)));
            }
        }
        let gauge = Kind::Gauge;
        family(encoder, table::TENANT_ITEMS, "Items the tenant holds in this node's store.", gauge, &items)?;
        let help = "Key and value bytes the tenant holds in this node's store.";
        family(encoder, table::TENANT_BYTES, help, gauge, &bytes)?;
        let help = "Wasm reducers the tenant has loaded by name on this node.";
        family(encoder, table::TENANT_REDUCERS, help, gauge, &reducers)?;
        let help = "Compiled Wasm reducer modules cached for the tenant (loaded by name or fetched for push-down).";
        family(encoder, table::TENANT_MODULES, help, gauge, &modules)?;
        let help = "Bytes of the Wasm reducer modules cached for the tenant.";
        family(encoder, table::TENANT_MODULE_BYTES, help, gauge, &module_bytes)?;
        let help = "Requests of the tenant refused by one of its quotas, by quota.";
        family(encoder, table::TENANT_REFUSALS, help, Kind::Counter, &refusals)
    }
}

impl Collector for NodeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        self.node(&mut encoder)?;
        self.nf(&mut encoder)?;
        self.tenants(&mut encoder)
    }
}
