//! NF guests: modules, running instances, and the node state they reach.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use estate_guest::Verdict;
use estate_guest::abi::{export, status};
use estate_guest::codec::{Item, Value};
use estate_guest::nf::{Packet, batch};
use wasmtime::{InstancePre, Store, TypedFunc};

use super::*;

/// The smallest packet buffer asked of a guest: an Ethernet frame's payload and its
/// record's header fit.
const MIN_PACKET_BUFFER: usize = 2048;

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

    /// Adds to an NF metric.
    fn metric_add(&self, name: &str, delta: i64) {
        let _ = (name, delta);
    }

    /// Receives an event (alert, log line) the NF emitted.
    fn emit(&self, event: &str) {
        let _ = event;
    }
}

impl WasmHost {
    /// Compiles and checks an NF module (exports `estate_on_packet`).
    pub fn load_nf(&self, bytes: &[u8]) -> Result<NfModule, GuestError> {
        if bytes.len() > self.limits.module_bytes {
            return Err(GuestError::ModuleSize { size: bytes.len(), limit: self.limits.module_bytes });
        }
        let module = self.compile(bytes, export::ON_PACKET)?;
        if module.get_export(export::NF_INIT).is_none() {
            return Err(GuestError::Invalid("missing export `estate_nf_init`".into()));
        }
        let pre = self.linker.instantiate_pre(&module).map_err(|e| GuestError::Invalid(format!("{e:#}")))?;
        Ok(NfModule { pre })
    }

    /// Starts an NF: one instance whose memory persists across packets.
    /// Starts an NF: one instance whose memory persists across packets, built from
    /// `config` by its `estate_nf_init`.
    pub fn start_nf(&self, nf: &NfModule, state: Arc<dyn NfState>, config: &str) -> Result<NfInstance, GuestError> {
        let mut store = self.store(&self.limits, Some(state));
        let guest = self.instantiate(&mut store, &nf.pre, &self.limits)?;
        let on_packet = typed(&guest.instance, &mut store, export::ON_PACKET)?;
        // Optional: NFs that do not care about moved flows need not export it.
        let on_flow_moved = match guest.instance.get_export(&mut store, export::ON_FLOW_MOVED) {
            Some(_) => Some(typed(&guest.instance, &mut store, export::ON_FLOW_MOVED)?),
            None => None,
        };
        let packet_buffer = match guest.instance.get_export(&mut store, export::PACKET_BUFFER) {
            Some(_) => Some(typed(&guest.instance, &mut store, export::PACKET_BUFFER)?),
            None => None,
        };
        // Batches go through the packet buffer: without one, packets go one at a time.
        let on_packets = match guest.instance.get_export(&mut store, export::ON_PACKETS) {
            Some(_) if packet_buffer.is_some() => Some(typed(&guest.instance, &mut store, export::ON_PACKETS)?),
            _ => None,
        };
        let init: TypedFunc<(i32, i32), i32> = typed(&guest.instance, &mut store, export::NF_INIT)?;
        let ptr = guest.write_input(&mut store, config.as_bytes(), &self.limits)?;
        let code =
            init.call(&mut store, (ptr, len_i32(config.as_bytes())?)).map_err(|e| classify(e, &store, &self.limits))?;
        let output = store.data_mut().result.take();
        match code {
            status::OK => Ok(NfInstance {
                store,
                guest,
                on_packet,
                on_packets,
                on_flow_moved,
                packet_buffer,
                buffer: None,
                limits: self.limits.clone(),
                record: Vec::new(),
            }),
            status::ERROR => Err(GuestError::Guest(message(output))),
            other => Err(GuestError::Abi(format!("estate_nf_init returned {other}: {}", message(output)))),
        }
    }
}

/// What an NF decided for a packet: its verdict, and the rewrite it asked for, if any.
pub type Decision = (Verdict, Option<Rewrite>);

/// A compiled, checked NF module.
#[derive(Clone)]
pub struct NfModule {
    pub(crate) pre: InstancePre<GuestData>,
}

impl fmt::Debug for NfModule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NfModule").finish_non_exhaustive()
    }
}

/// A running NF guest. Not shared: one packet at a time.
pub struct NfInstance {
    pub(crate) store: Store<GuestData>,
    pub(crate) guest: Guest,
    pub(crate) on_packet: TypedFunc<(i32, i32), i32>,
    /// The guest's `estate_on_packets`, if it has one and a packet buffer.
    pub(crate) on_packets: Option<TypedFunc<(i32, i32, i32), i32>>,
    pub(crate) on_flow_moved: Option<TypedFunc<(i32, i32, i32), i32>>,
    /// The guest's `estate_packet_buffer`, if it has one, and the buffer it last gave
    /// (pointer, length).
    pub(crate) packet_buffer: Option<TypedFunc<i32, i32>>,
    pub(crate) buffer: Option<(i32, usize)>,
    pub(crate) limits: Limits,
    /// The packet record being passed in, kept across packets (no allocation each).
    pub(crate) record: Vec<u8>,
}

impl fmt::Debug for NfInstance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NfInstance").field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl NfInstance {
    /// Hands one packet to the NF and returns its verdict; the rewrite it asked for, if
    /// any, is then [`NfInstance::take_rewrite`]'s. After an error the instance may be
    /// in any state: the caller applies its fail policy and should restart it (and no
    /// rewrite is left).
    pub fn on_packet(&mut self, packet: &Packet<'_>) -> Result<Verdict, GuestError> {
        self.store.data_mut().rewrites.clear();
        let verdict = self.handle(packet);
        let data = self.store.data_mut();
        data.packet_call = PacketCall::None;
        if verdict.is_err() {
            data.rewrites.clear();
        }
        verdict
    }

    /// The rewrite the NF asked for (`estate.packet_rewrite`) while handling the packet
    /// of the last [`NfInstance::on_packet`], if it asked for one and that call did not
    /// fail; `None` after it has been taken.
    pub fn take_rewrite(&mut self) -> Option<Rewrite> {
        self.store.data_mut().rewrites.pop().map(|(_, rewrite)| rewrite)
    }

    /// Hands `packets` to the NF in one call (`estate_on_packets`, in batches of at most
    /// [`abi::batch::MAX_PACKETS`], also a batch of one; one call each for a guest
    /// without it) and appends
    /// each packet's verdict and rewrite to `decided`, in order. On an error, `decided`
    /// holds the packets decided before it, and the error is the next packet's: the
    /// caller applies its fail policy to that one, restarts the instance and hands it
    /// the rest.
    pub fn on_packets(&mut self, packets: &[Packet<'_>], decided: &mut Vec<Decision>) -> Result<(), GuestError> {
        if self.on_packets.is_none() {
            for packet in packets {
                let verdict = self.on_packet(packet)?;
                decided.push((verdict, self.take_rewrite()));
            }
            return Ok(());
        }
        for batch in packets.chunks(abi::batch::MAX_PACKETS) {
            // `handle_batch` takes the batch's rewrites once the call is over.
            self.store.data_mut().rewrites.clear();
            let outcome = self.handle_batch(batch, decided);
            self.store.data_mut().packet_call = PacketCall::None;
            outcome?;
        }
        Ok(())
    }

    /// One `estate_on_packets` call; its budget is a packet's times the packet count.
    fn handle_batch(&mut self, packets: &[Packet<'_>], decided: &mut Vec<Decision>) -> Result<(), GuestError> {
        let count = packets.len();
        arm_for(&mut self.store, &self.limits, count as u64);
        let len = batch::encoded_len(packets);
        let ptr = self.packet_buffer(len)?;
        let start = ptr as u32 as usize;
        // A payload matcher scans each payload now, charged as `matcher_count` would be.
        let (memory, data) = self.guest.memory.data_and_store_mut(&mut self.store);
        let matcher = data.payload_matcher.and_then(|handle| data.matchers.get(handle));
        let mut charge = 0;
        let scan = |packet: &Packet<'_>| match matcher {
            Some(matcher) => {
                charge += matcher::cost(packet.payload.len());
                u32::try_from(matcher.find_iter(packet.payload).count()).unwrap_or(u32::MAX - 1)
            }
            None => abi::batch::NOT_SCANNED,
        };
        batch::write_to(packets, scan, &mut memory[start..start + len]);
        data.packet_call = PacketCall::Batch { verdicts: start, count };
        if charge > 0 {
            let fuel = self.store.get_fuel().expect("fuel is enabled");
            self.store.set_fuel(fuel.saturating_sub(charge)).expect("fuel is enabled");
        }
        let call = self.on_packets.as_ref().expect("called for guests with estate_on_packets");
        let code = call.call(&mut self.store, (ptr, size_i32(len)?, size_i32(count)?));
        // The verdicts the guest wrote stand even if the call failed after them.
        let rewrites = std::mem::take(&mut self.store.data_mut().rewrites);
        let memory = self.guest.memory.data(&self.store);
        let before = decided.len();
        decided.extend(batch::verdicts(&memory[start..start + count]).enumerate().map(|(i, verdict)| {
            let rewrite = rewrites.iter().rev().find(|(at, _)| *at == i).map(|(_, r)| *r);
            (verdict, rewrite)
        }));
        let code = code.map_err(|e| classify(e, &self.store, &self.limits))?;
        let handled = decided.len() - before;
        match code {
            status::OK if handled == count => Ok(()),
            status::OK => Err(GuestError::Abi(format!("estate_on_packets left packet {handled} of {count} undecided"))),
            status::BAD_INPUT => Err(self.rejected()),
            other => Err(GuestError::Abi(format!("estate_on_packets returned {other}"))),
        }
    }

    /// The error of an entry point that answered "bad input", with the guest's message.
    fn rejected(&mut self) -> GuestError {
        GuestError::Abi(format!("NF rejected its input: {}", message(self.store.data_mut().result.take())))
    }

    /// [`NfInstance::on_packet`] without the rewrite bookkeeping around it.
    fn handle(&mut self, packet: &Packet<'_>) -> Result<Verdict, GuestError> {
        arm(&mut self.store, &self.limits);
        let len = packet.encoded_len();
        let ptr = if self.packet_buffer.is_some() {
            let ptr = self.packet_buffer(len)?;
            let start = ptr as u32 as usize;
            packet.write_to(&mut self.guest.memory.data_mut(&mut self.store)[start..start + len]);
            ptr
        } else {
            self.record.clear();
            packet.encode(&mut self.record);
            self.guest.write_input(&mut self.store, &self.record, &self.limits)?
        };
        let len = size_i32(len)?;
        self.store.data_mut().packet_call = PacketCall::One;
        let code =
            self.on_packet.call(&mut self.store, (ptr, len)).map_err(|e| classify(e, &self.store, &self.limits))?;
        if let Some(verdict) = Verdict::from_code(code) {
            return Ok(verdict);
        }
        match code {
            status::BAD_INPUT => Err(self.rejected()),
            other => Err(GuestError::Abi(format!("unknown verdict {other}"))),
        }
    }

    /// The guest's kept packet buffer, at least `len` bytes long and inside guest memory
    /// (its pointer; a guest's memory never shrinks); a longer one (at least an Ethernet
    /// frame's worth) is asked for only when `len` bytes do not fit in the one it last
    /// gave.
    fn packet_buffer(&mut self, len: usize) -> Result<i32, GuestError> {
        let ptr = match self.buffer {
            Some((ptr, capacity)) if capacity >= len => ptr,
            _ => {
                let want = len.max(MIN_PACKET_BUFFER);
                let packet_buffer = self.packet_buffer.as_ref().expect("called for guests with a packet buffer");
                let ptr = packet_buffer
                    .call(&mut self.store, size_i32(want)?)
                    .map_err(|e| classify(e, &self.store, &self.limits))?;
                if ptr == abi::ALLOC_FAILED {
                    return Err(GuestError::Abi(format!("estate_packet_buffer({want}) returned null")));
                }
                let end = (ptr as u32 as usize).checked_add(want);
                if end.is_none_or(|end| end > self.guest.memory.data_size(&self.store)) {
                    let message = format!("estate_packet_buffer({want}) returned {ptr}, outside guest memory");
                    return Err(GuestError::Abi(message));
                }
                self.buffer = Some((ptr, want));
                ptr
            }
        };
        Ok(ptr)
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
            status::OK => Ok(()),
            other => Err(GuestError::Abi(format!(
                "estate_on_flow_moved returned {other}: {}",
                message(self.store.data_mut().result.take())
            ))),
        }
    }
}
