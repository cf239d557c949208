//! Live interfaces: frames captured off a network interface (`live:IFACE`, observing),
//! or received on either side of a bump in the wire and sent out of the other once the
//! NF forwards them (`inline:A,B`).
//!
//! Capture and injection go through libpcap (the `pcap` crate): every frame the kernel
//! receives on the interface, in promiscuous mode, delivered at once (immediate mode),
//! only those coming in (frames this node sends out of an interface are not captured
//! again). One thread per interface captures, sorts and queues; the NF thread takes the
//! queued frames in order. When the NF falls behind, the queue fills, the capture thread
//! waits, and the kernel's ring drops what does not fit: counted as `nf_capture_drops`,
//! never a stall of the wire.
//!
//! # What the NF sees, and what it does not
//!
//! A frame holding a whole IPv4 TCP or UDP datagram (optionally 802.1Q-tagged: the tag
//! is the fabric's move mark, as with pcap files) is handed to the NF as a packet with
//! its capture time ([`Wire::captured`]). Everything else never reaches the NF:
//!
//! - ARP: counted in `nf_unparsed`; an inline input always passes it across unchanged
//!   (without it the two sides could not find each other).
//! - Other EtherTypes (IPv6…), IPv4 that is not TCP or UDP (ICMP…), and IPv4 fragments
//!   (only a first fragment holds the ports): counted in `nf_unparsed`; an inline input
//!   passes them across under [`Unparsed::Pass`] and drops them under
//!   [`Unparsed::Drop`] (the default: an NF that filters should not be bypassed by
//!   what it cannot read).
//! - Malformed frames (truncated headers, lengths that do not add up, a bad IP
//!   version): counted in `nf_bad_frames` and dropped, whatever the policy.
//!
//! A forwarded packet leaves by the other side as it came, byte for byte (its VLAN tag
//! too), unless the NF asked to rewrite it ([`estate_guest::nf::Rewrite`]): then its
//! addresses and ports are changed and its checksums computed again.
//!
//! The interfaces' offloads must hand the node real frames: with GRO or LRO on, the
//! kernel merges segments into frames larger than the link's MTU, which cannot be sent
//! out again (counted in `nf_transmit_errors`). `docs/live.md` says how to turn them off.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use estate_guest::Verdict;
use estate_guest::nf::Rewrite;
use pcap::{Active, Capture};
use tracing::{info, warn};

use crate::nf::counters::NfCounters;
use crate::nf::input::frame::{self, Unparsed as Why};
use crate::nf::input::pcap::FlowDirections;
use crate::nf::input::synth::OwnedPacket;
use crate::nf::input::{Input, Sink, rare_warn};

/// How long a capture waits for a frame before it checks its stop flag.
const POLL_MS: i32 = 50;
/// Frames taken from the kernel at one wakeup, at most (one batch).
const BATCH: usize = 256;
/// Batches captured and not yet taken by the NF, per input: up to 4,096 frames, fewer
/// when batches are small.
const QUEUE: usize = 4096 / BATCH;
/// The kernel ring of each capture, in bytes.
const RING_BYTES: i32 = 8 << 20;
/// Enough for any frame, including the merged ones offloads make.
const SNAPLEN: i32 = 262_144;
/// How often a capture reads libpcap's drop count.
const STATS_EVERY: Duration = Duration::from_secs(1);

/// Which side of an inline input a frame came in on; it leaves by the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The first interface named (for an observing input, its only one).
    A,
    /// The second interface named.
    B,
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

/// A captured frame, as it came off the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wire {
    /// The side it came in on.
    pub side: Side,
    /// The frame's bytes.
    pub frame: Vec<u8>,
    /// When the kernel captured it.
    pub captured: SystemTime,
}

/// What an inline input does with the frames it cannot hand to the NF (see the module
/// documentation). ARP always passes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Unparsed {
    /// Passed across unchanged.
    Pass,
    /// Dropped.
    #[default]
    Drop,
}

impl FromStr for Unparsed {
    type Err = String;

    fn from_str(s: &str) -> Result<Unparsed, String> {
        match s {
            "pass" => Ok(Unparsed::Pass),
            "drop" => Ok(Unparsed::Drop),
            other => Err(format!("unparsed-frame policy {other:?}: expected pass or drop")),
        }
    }
}

impl fmt::Display for Unparsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if *self == Unparsed::Pass { "pass" } else { "drop" })
    }
}

/// An interface could not be opened for capture or injection.
#[derive(Debug, thiserror::Error)]
#[error("interface {iface}: {what}: {source}")]
pub struct LiveError {
    /// The interface.
    pub iface: String,
    /// What was being done.
    pub what: &'static str,
    /// What libpcap said.
    #[source]
    pub source: pcap::Error,
}

fn open(iface: &str, capture: bool) -> Result<Capture<Active>, LiveError> {
    let err = |what| move |source| LiveError { iface: iface.to_string(), what, source };
    let handle = Capture::from_device(iface)
        .map_err(err("finding the interface"))?
        .promisc(capture)
        .immediate_mode(true)
        .snaplen(if capture { SNAPLEN } else { 64 })
        .buffer_size(if capture { RING_BYTES } else { 1 << 16 })
        .timeout(POLL_MS)
        .open()
        .map_err(err("opening it (capturing needs root or CAP_NET_RAW)"))?;
    handle.direction(pcap::Direction::In).map_err(err("capturing only incoming frames"))?;
    let mut handle = handle;
    if !capture {
        // A handle that only sends captures nothing ("less 1": no frame is that short).
        handle.filter("less 1", true).map_err(err("setting the send handle's filter"))?;
    }
    Ok(handle)
}

/// A handle that sends frames out of one interface.
pub(crate) struct Sender {
    iface: String,
    handle: Mutex<Capture<Active>>,
}

impl Sender {
    pub(crate) fn open(iface: &str) -> Result<Sender, LiveError> {
        Ok(Sender { iface: iface.to_string(), handle: Mutex::new(open(iface, false)?) })
    }

    /// Sends `frame`, counting it as transmitted or as a transmit error.
    pub(crate) fn send(&self, frame: &[u8], counters: &NfCounters) -> bool {
        match self.handle.lock().unwrap().sendpacket(frame) {
            Ok(()) => {
                counters.transmitted.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) => {
                let n = counters.transmit_errors.fetch_add(1, Ordering::Relaxed) + 1;
                rare_warn(
                    n,
                    format_args!("live input: sending a {}-byte frame out of {}: {e}", frame.len(), self.iface),
                );
                false
            }
        }
    }
}

/// Two interface names separated by a comma (`eth1,eth2`), as `--inline` and the live
/// switch's ports take them; `None` unless both are there and non-empty.
pub fn interface_pair(text: &str) -> Option<[String; 2]> {
    match text.split_once(',') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() && !b.contains(',') => Some([a.to_string(), b.to_string()]),
        _ => None,
    }
}

/// One capture thread's settings.
struct Capturing {
    side: Side,
    iface: String,
    /// For an inline input: where unparsed frames pass to, and the policy.
    pass: Option<(Arc<Sender>, Unparsed)>,
    counters: Arc<NfCounters>,
    stop: Arc<AtomicBool>,
}

impl Capturing {
    /// Captures until stopped: each wakeup takes every frame the kernel has (up to
    /// [`BATCH`]) and queues the flows' frames as one batch, so the NF thread and this
    /// one meet once per batch, not once per frame.
    fn run(self, mut handle: Capture<Active>, queue: SyncSender<Vec<Wire>>) {
        let mut kernel_drops = 0u64;
        let mut stats_at = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            if stats_at.elapsed() >= STATS_EVERY {
                stats_at = Instant::now();
                if let Ok(stats) = handle.stats() {
                    let total = u64::from(stats.dropped);
                    self.counters.capture_drops.fetch_add(total.saturating_sub(kernel_drops), Ordering::Relaxed);
                    kernel_drops = total;
                }
            }
            let mut batch = Vec::new();
            match handle.dispatch(Some(BATCH), |packet| self.frame(packet, &mut batch)) {
                Ok(_) => {}
                Err(pcap::Error::TimeoutExpired) => {}
                Err(e) => {
                    warn!(iface = %self.iface, "live input: capture failed, stopping this side: {e}");
                    return;
                }
            }
            if !batch.is_empty() && queue.send(batch).is_err() {
                return;
            }
        }
    }

    /// Sorts one captured frame: a flow's frame joins `batch`; the others are counted,
    /// and passed across or dropped.
    fn frame(&self, packet: pcap::Packet<'_>, batch: &mut Vec<Wire>) {
        let data = packet.data;
        match frame::classify(data) {
            Ok(_) => {
                let ts = packet.header.ts;
                let captured = SystemTime::UNIX_EPOCH
                    + Duration::new(ts.tv_sec.max(0) as u64, (ts.tv_usec.clamp(0, 999_999) as u32) * 1000);
                batch.push(Wire { side: self.side, frame: data.to_vec(), captured });
            }
            Err(Why::Malformed(why)) => {
                let n = self.counters.bad_frames.fetch_add(1, Ordering::Relaxed) + 1;
                rare_warn(n, format_args!("live input: dropped a malformed frame on {} ({why})", self.iface));
            }
            Err(why) => {
                self.counters.unparsed.fetch_add(1, Ordering::Relaxed);
                if let Some((out, policy)) = &self.pass
                    && (why == Why::Arp || *policy == Unparsed::Pass)
                    && out.send(data, &self.counters)
                {
                    self.counters.unparsed_passed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// The packets of a live or inline input, in the order they were captured (per side).
pub struct LiveSource {
    queue: Receiver<Vec<Wire>>,
    /// The rest of the batch being taken.
    batch: std::vec::IntoIter<Wire>,
    stop: Arc<AtomicBool>,
    directions: FlowDirections,
    threads: Vec<JoinHandle<()>>,
}

impl fmt::Debug for LiveSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveSource").field("captures", &self.threads.len()).finish_non_exhaustive()
    }
}

/// Opens an observing input on `iface`: every frame captured, nothing sent.
pub fn observe(iface: &str, counters: Arc<NfCounters>) -> Result<Input, LiveError> {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, queue) = mpsc::sync_channel(QUEUE);
    let capturing = Capturing { side: Side::A, iface: iface.to_string(), pass: None, counters, stop: stop.clone() };
    let thread = spawn(capturing, open(iface, true)?, tx);
    info!(%iface, "live input: capturing");
    let source = LiveSource {
        queue,
        batch: Vec::new().into_iter(),
        stop: stop.clone(),
        directions: FlowDirections::default(),
        threads: vec![thread],
    };
    Ok(Input::stoppable(Box::new(source), stop))
}

/// Opens an inline input between `a` and `b`: frames in on one side go out of the other
/// when the NF forwards them.
pub fn inline(a: &str, b: &str, unparsed: Unparsed, counters: Arc<NfCounters>) -> Result<Input, LiveError> {
    let stop = Arc::new(AtomicBool::new(false));
    let (source, senders) = two_sided(a, b, unparsed, counters.clone(), stop.clone())?;
    info!(%a, %b, %unparsed, "inline input: forwarding between the two sides");
    let sink = InlineSink { senders, counters };
    Ok(Input::stoppable(Box::new(source), stop).with_sink(Box::new(sink)))
}

/// Captures on `a` and `b`: the flows' packets for the caller, which sends them on
/// through the returned senders (indexed by [`Side`]); frames without a flow pass to the
/// other side under `unparsed` (ARP always). Ends once `stop` is raised.
pub(crate) fn two_sided(
    a: &str,
    b: &str,
    unparsed: Unparsed,
    counters: Arc<NfCounters>,
    stop: Arc<AtomicBool>,
) -> Result<(LiveSource, [Arc<Sender>; 2]), LiveError> {
    let (handle_a, handle_b) = (open(a, true)?, open(b, true)?);
    let senders = [Arc::new(Sender::open(a)?), Arc::new(Sender::open(b)?)];
    let (tx, queue) = mpsc::sync_channel(QUEUE);
    let mut threads = Vec::new();
    for (side, iface, handle) in [(Side::A, a, handle_a), (Side::B, b, handle_b)] {
        let out = senders[side.other() as usize].clone();
        let capturing = Capturing {
            side,
            iface: iface.to_string(),
            pass: Some((out, unparsed)),
            counters: counters.clone(),
            stop: stop.clone(),
        };
        threads.push(spawn(capturing, handle, tx.clone()));
    }
    Ok((
        LiveSource { queue, batch: Vec::new().into_iter(), stop, directions: FlowDirections::default(), threads },
        senders,
    ))
}

/// Copies every frame coming in on `from` out of `to`, without its VLAN tag, until
/// `stop` is raised: the fixed path back from an NF to a host.
pub(crate) fn patch(
    from: &str,
    to: Arc<Sender>,
    counters: Arc<NfCounters>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, LiveError> {
    let mut handle = open(from, true)?;
    let iface = from.to_string();
    let run = move || {
        while !stop.load(Ordering::Relaxed) {
            match handle.next_packet() {
                Ok(packet) => {
                    to.send(&frame::retag(packet.data, 0), &counters);
                }
                Err(pcap::Error::TimeoutExpired) => {}
                Err(e) => {
                    warn!(%iface, "live patch: capture failed, stopping: {e}");
                    return;
                }
            }
        }
    };
    Ok(thread::Builder::new().name(format!("estate-patch-{from}")).spawn(run).expect("spawning a patch thread"))
}

fn spawn(capturing: Capturing, handle: Capture<Active>, queue: SyncSender<Vec<Wire>>) -> JoinHandle<()> {
    let name = format!("estate-capture-{}", capturing.iface);
    thread::Builder::new().name(name).spawn(move || capturing.run(handle, queue)).expect("spawning a capture thread")
}

impl Iterator for LiveSource {
    type Item = OwnedPacket;

    fn next(&mut self) -> Option<OwnedPacket> {
        loop {
            // The frames in hand are handed out first: `size_hint` counts them.
            let wire = match self.batch.next() {
                Some(wire) => wire,
                None if self.stop.load(Ordering::Relaxed) => return None,
                None => match self.queue.recv_timeout(Duration::from_millis(POLL_MS as u64)) {
                    Ok(batch) => {
                        self.batch = batch.into_iter();
                        continue;
                    }
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return None,
                },
            };
            // The capture thread queues only frames that classify as a flow's.
            let Ok((parsed, _)) = frame::classify(&wire.frame) else { continue };
            let mut packet = self.directions.packet(&parsed);
            packet.tcp_flags = parsed.tcp_flags;
            packet.wire = Some(Box::new(wire));
            return Some(packet);
        }
    }

    /// At least the frames received and not yet handed out (every one the capture
    /// thread queues classifies as a flow's).
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.batch.len(), None)
    }
}

impl Drop for LiveSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // The queue goes first: a capture thread waiting on a full queue then gets an
        // error and ends, instead of waiting for a reader that is gone.
        drop(std::mem::replace(&mut self.queue, mpsc::sync_channel(0).1));
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Where an inline input's forwarded packets go: out of the other side.
struct InlineSink {
    /// Indexed by side.
    senders: [Arc<Sender>; 2],
    counters: Arc<NfCounters>,
}

impl Sink for InlineSink {
    fn decided(&mut self, packet: &OwnedPacket, verdict: Verdict, rewrite: Option<&Rewrite>) {
        let Some(wire) = packet.wire.as_deref() else { return };
        if verdict != Verdict::Forward {
            return;
        }
        let out = &self.senders[wire.side.other() as usize];
        match rewrite {
            None => {
                out.send(&wire.frame, &self.counters);
            }
            Some(r) => {
                let mut rewritten = wire.frame.clone();
                match frame::rewrite(&mut rewritten, r.src, r.dst) {
                    Ok(()) => {
                        if out.send(&rewritten, &self.counters) {
                            self.counters.rewritten.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        let n = self.counters.transmit_errors.fetch_add(1, Ordering::Relaxed) + 1;
                        rare_warn(n, format_args!("live input: dropped a packet of {}: {e}", packet.flow));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_whose_queue_is_full_stops_without_waiting_for_a_reader() {
        let (tx, queue) = mpsc::sync_channel(1);
        // A capture thread that queues until the queue is full, and then waits there.
        let thread = thread::spawn(move || while tx.send(Vec::new()).is_ok() {});
        let stop = Arc::new(AtomicBool::new(false));
        let source = LiveSource {
            queue,
            batch: Vec::new().into_iter(),
            stop,
            directions: FlowDirections::default(),
            threads: vec![thread],
        };
        thread::sleep(Duration::from_millis(20));
        let (done, dropped) = mpsc::channel();
        thread::spawn(move || {
            drop(source);
            let _ = done.send(());
        });
        assert!(dropped.recv_timeout(Duration::from_secs(10)).is_ok(), "dropping the source waited on its capture");
    }

    #[test]
    fn the_unparsed_policy_parses_and_prints_back() {
        for policy in [Unparsed::Pass, Unparsed::Drop] {
            assert_eq!(policy.to_string().parse::<Unparsed>(), Ok(policy));
        }
        assert_eq!(Unparsed::default(), Unparsed::Drop);
        assert!("forward".parse::<Unparsed>().unwrap_err().contains("expected pass or drop"));
    }
}
