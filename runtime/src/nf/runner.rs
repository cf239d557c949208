//! The NF thread: packets in, verdicts out. A moved flow's packets wait for its state,
//! in order, while the other flows' packets go on (`parking.rs`).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Instant, SystemTime};

use estate_guest::abi::batch::MAX_PACKETS;
use estate_guest::nf::Rewrite;
use estate_guest::{Brought, Verdict};
use tracing::{info, warn};

use crate::nf::counters::NfCounters;
use crate::nf::env::NfEnv;
use crate::nf::input::synth::OwnedPacket;
use crate::nf::input::{Input, Sink};
use crate::nf::parking::{Arrived, MAX_HELD, Parking};
use crate::nf::{FailPolicy, FlowState, NfSettings};
use crate::wasm::{Decision, GuestError, NfInstance, NfModule, WasmHost};

/// A new module and instance waiting to take over at the next packet.
pub(crate) struct Swap {
    pub(crate) module: NfModule,
    pub(crate) config: String,
    pub(crate) instance: NfInstance,
}

/// A running NF. Dropping it stops the packet thread after the current batch (or the
/// current bounded wait of a source that waits for packets).
pub struct NfRun {
    /// The input's stop flag.
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) swap: Arc<Mutex<Option<Swap>>>,
    pub(crate) thread: Option<JoinHandle<()>>,
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
        state: Arc<dyn NfEnv>,
        input: impl Into<Input>,
        settings: NfSettings,
        counters: Arc<NfCounters>,
    ) -> Result<NfRun, GuestError> {
        let Input { mut packets, stop, sink, waits } = input.into();
        let instance = host.start_nf(&module, state.clone(), &config)?;
        let mut nf = Running {
            host,
            module,
            config,
            instance,
            state,
            counters,
            settings,
            adopted: HashMap::new(),
            sink,
            verdicts: Vec::new(),
        };
        let stopping = stop.clone();
        let swap: Arc<Mutex<Option<Swap>>> = Arc::default();
        let swapping = swap.clone();
        let thread = thread::Builder::new()
            .name("estate-nf".into())
            .spawn(move || {
                let mut parking = Parking::default();
                // Packets for the NF, handed to it in one call (each with its time).
                let mut batch: Vec<(OwnedPacket, Instant)> = Vec::with_capacity(MAX_PACKETS);
                let mut ended = false;
                while let Some(packet) = packets.next() {
                    if stopping.load(Ordering::Relaxed) {
                        return;
                    }
                    // Hot replacement: the new instance takes over between batches; state
                    // in the store is untouched.
                    if let Some(new) = swapping.lock().unwrap().take() {
                        (nf.module, nf.config, nf.instance) = (new.module, new.config, new.instance);
                        nf.counters.replacements.fetch_add(1, Ordering::Relaxed);
                        info!("NF replaced");
                    }
                    for arrived in parking.arrived() {
                        nf.arrived(arrived);
                    }
                    // The packet's time (`packet_time`): from here to its verdict.
                    nf.route(packet, Instant::now(), &mut parking, &mut batch);
                    // More packets that are there already join the batch.
                    for _ in 1..MAX_PACKETS {
                        if waits && packets.size_hint().0 == 0 {
                            break;
                        }
                        let Some(packet) = packets.next() else {
                            ended = true;
                            break;
                        };
                        nf.route(packet, Instant::now(), &mut parking, &mut batch);
                    }
                    nf.packets(&mut batch);
                    while parking.held() > MAX_HELD {
                        let Some(arrived) = parking.wait_oldest() else { break };
                        nf.arrived(arrived);
                    }
                    if ended {
                        break;
                    }
                }
                while let Some(arrived) = parking.wait_oldest() {
                    nf.arrived(arrived);
                }
                info!(packets = nf.counters.packets.load(Ordering::Relaxed), "NF input finished");
            })
            .map_err(|e| GuestError::Abi(format!("spawning the NF thread: {e}")))?;
        Ok(NfRun { stop, swap, thread: Some(thread) })
    }

    pub(crate) fn replace(&self, module: NfModule, config: String, instance: NfInstance) {
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

/// The NF thread's side of a running NF.
struct Running {
    host: Arc<WasmHost>,
    module: NfModule,
    config: String,
    instance: NfInstance,
    state: Arc<dyn NfEnv>,
    counters: Arc<NfCounters>,
    settings: NfSettings,
    /// The mark each moved flow last arrived with here.
    adopted: HashMap<String, u16>,
    /// Where decided packets go (an inline input's other side).
    sink: Option<Box<dyn Sink>>,
    /// The verdicts of a batch, kept across batches.
    verdicts: Vec<Decision>,
}

impl Running {
    /// Whether `packet` starts a move of its flow here (and the node shares state).
    fn moves_here(&mut self, packet: &OwnedPacket) -> bool {
        packet.mark != 0 && self.settings.flows != FlowState::Off && new_move(&mut self.adopted, packet)
    }

    /// Sends `packet` on its way: into `batch`, or, if its flow waits for its state or
    /// starts a move here, into the parking (a move after the batch so far has been
    /// handled, so the NF sees everything before the move first).
    fn route(
        &mut self,
        packet: OwnedPacket,
        started: Instant,
        parking: &mut Parking,
        batch: &mut Vec<(OwnedPacket, Instant)>,
    ) {
        if parking.is_parked(&packet.flow) {
            // Behind the packets of its flow that wait for the flow's state (the batch
            // holds none of that flow's).
            parking.hold(packet, started);
        } else if self.moves_here(&packet) {
            // The first packet of a moved flow, or of a new move of it: its state comes
            // first, and the flow waits for it (other flows not).
            self.packets(batch);
            let adoption = self.state.start_adopt(&packet.flow, self.settings.flows);
            parking.park(packet, started, adoption);
        } else {
            batch.push((packet, started));
        }
    }

    /// Hands `batch` to the NF (in one call where it can), counts each verdict and
    /// empties it. A packet the NF faulted on gets the fail policy; the packets after it
    /// go to the rebuilt instance.
    fn packets(&mut self, batch: &mut Vec<(OwnedPacket, Instant)>) {
        let mut done = 0;
        while done < batch.len() {
            let views: Vec<_> = batch[done..].iter().map(|(packet, _)| packet.as_packet()).collect();
            let mut verdicts = std::mem::take(&mut self.verdicts);
            let outcome = self.instance.on_packets(&views, &mut verdicts);
            drop(views);
            for (verdict, rewrite) in verdicts.drain(..) {
                let (packet, started) = &batch[done];
                self.decided(packet, verdict, rewrite.as_ref(), *started);
                done += 1;
            }
            self.verdicts = verdicts;
            if let Err(e) = outcome {
                // The error is the next packet's; with none left, the call failed after
                // deciding them all, and only the instance is rebuilt.
                let Some((packet, started)) = batch.get(done) else {
                    let flow = batch.last().map(|(packet, _)| packet.flow.clone()).unwrap_or_default();
                    self.fault(&flow, &e);
                    break;
                };
                self.fault(&packet.flow, &e);
                self.decided(packet, self.settings.fail.verdict(), None, *started);
                done += 1;
            }
        }
        batch.clear();
    }

    /// Counts `packet`'s verdict and hands it to the sink, if any. A rewrite of a packet
    /// that is forwarded is counted here when no sink applies it.
    fn decided(&mut self, packet: &OwnedPacket, verdict: Verdict, rewrite: Option<&Rewrite>, started: Instant) {
        match &mut self.sink {
            Some(sink) => sink.decided(packet, verdict, rewrite),
            None if rewrite.is_some() && verdict == Verdict::Forward => {
                self.counters.rewritten.fetch_add(1, Ordering::Relaxed);
            }
            None => {}
        }
        // Before the packet is counted: a reader that sees it counted sees this too.
        if let Some(waited) = packet.wire.as_ref().and_then(|w| SystemTime::now().duration_since(w.captured).ok()) {
            self.counters.wire_time.observe(waited);
        }
        count_verdict(&self.counters, verdict, started);
    }

    /// A moved flow's state is in (or failed to come): the NF is told, then the flow's
    /// held packets go through in order, in batches.
    fn arrived(&mut self, (flow, brought, held): Arrived) {
        let mut held = held.into_iter();
        let Some((first, started)) = held.next() else { return };
        let mut batch = Vec::with_capacity(held.len() + 1);
        if self.flow_moved(&flow, brought) {
            batch.push((first, started));
        } else {
            self.decided(&first, self.settings.fail.verdict(), None, started);
        }
        for (packet, started) in held {
            // A packet of a flow moved again meanwhile brings its state first, at once.
            if self.moves_here(&packet) {
                self.packets(&mut batch);
                let brought = self.state.adopt_flow(&packet.flow, self.settings.flows);
                if !self.flow_moved(&packet.flow, brought) {
                    self.decided(&packet, self.settings.fail.verdict(), None, started);
                    continue;
                }
            }
            batch.push((packet, started));
        }
        self.packets(&mut batch);
    }

    /// Counts how a moved flow's state came and tells the NF; false if the NF faulted
    /// (the packet that started the move then gets the fail policy).
    fn flow_moved(&mut self, flow: &str, brought: Result<usize, String>) -> bool {
        let brought = match brought {
            Ok(keys) => {
                self.counters.flows_adopted.fetch_add(1, Ordering::Relaxed);
                self.counters.keys_adopted.fetch_add(keys as u64, Ordering::Relaxed);
                if self.settings.flows == FlowState::Take { Brought::Taken } else { Brought::Copied }
            }
            Err(e) => {
                self.counters.adopt_failures.fetch_add(1, Ordering::Relaxed);
                warn!(%flow, "could not fetch a moved flow's state: {e}");
                Brought::Failed
            }
        };
        // A fault here is handled like one on the packet itself.
        match self.instance.on_flow_moved(flow, brought) {
            Ok(()) => true,
            Err(e) => {
                self.fault(flow, &e);
                false
            }
        }
    }

    fn fault(&mut self, flow: &str, error: &GuestError) {
        let fresh = self.host.start_nf(&self.module, self.state.clone(), &self.config);
        fault(&self.counters, flow, self.settings.fail, error, fresh, &mut self.instance);
    }
}

/// Whether `packet` is the first one of its flow's move here (its mark differs from the
/// one the flow last arrived with); records the mark.
pub(crate) fn new_move(adopted: &mut HashMap<String, u16>, packet: &OwnedPacket) -> bool {
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
pub(crate) fn fault(
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

/// Counts a packet's verdict, and the time since `started` (when the NF thread took the
/// packet) in `packet_time`.
pub(crate) fn count_verdict(counters: &NfCounters, verdict: Verdict, started: Instant) {
    counters.packet_time.observe(started.elapsed());
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
