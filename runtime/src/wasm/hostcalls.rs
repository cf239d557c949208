//! The host functions guests import (module `estate`), each bounds-checked.

use std::sync::Arc;
use std::time::Duration;

use estate_guest::abi;
use estate_guest::codec::{self, Value};
use wasmtime::{AsContextMut, Caller};

use super::*;

/// The caller's exported memory, cached at instantiation: a by-name export lookup on
/// every host call is not free.
fn guest_memory(caller: &Caller<'_, GuestData>) -> wasmtime::Result<Memory> {
    caller.data().memory.ok_or_else(|| wasmtime::format_err!("guest has no exported memory"))
}

/// Reads `len` bytes at `ptr` from the caller's memory, bounds-checked.
pub(crate) fn guest_bytes(caller: &mut Caller<'_, GuestData>, ptr: u32, len: u32) -> wasmtime::Result<Vec<u8>> {
    let memory = guest_memory(caller)?;
    span(memory.data(&caller), ptr, len).map(<[u8]>::to_vec)
}

/// `estate.result(ptr, len)`: the guest hands back its output.
pub(crate) fn host_result(mut caller: Caller<'_, GuestData>, ptr: u32, len: u32) -> wasmtime::Result<()> {
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
pub(crate) fn span(memory: &[u8], ptr: u32, len: u32) -> wasmtime::Result<&[u8]> {
    let (start, len) = (ptr as usize, len as usize);
    memory
        .get(start..)
        .and_then(|s| s.get(..len))
        .ok_or_else(|| wasmtime::format_err!("guest buffer {start}+{len} is outside its memory"))
}

/// Runs `f` on the NF's state, the key at `ptr..ptr + len` and the guest's memory, all
/// borrowed: the per-packet state calls copy nothing on the way in.
pub(crate) fn with_key<R>(
    caller: &mut Caller<'_, GuestData>,
    ptr: u32,
    len: u32,
    call: &str,
    f: impl FnOnce(&dyn NfState, &str, &[u8]) -> wasmtime::Result<R>,
) -> wasmtime::Result<R> {
    let memory = guest_memory(caller)?;
    let (memory, data) = memory.data_and_store_mut(caller);
    let (key, state) = key_and_state(memory, data, ptr, len, call)?;
    f(state, key, memory)
}

/// The key at `ptr..ptr + len` in `memory`, and the NF's state.
fn key_and_state<'a>(
    memory: &'a [u8],
    data: &'a GuestData,
    ptr: u32,
    len: u32,
    call: &str,
) -> wasmtime::Result<(&'a str, &'a dyn NfState)> {
    let key = codec::utf8(span(memory, ptr, len)?).map_err(|_| wasmtime::format_err!("{call}: key is not UTF-8"))?;
    let state =
        data.nf_state.as_deref().ok_or_else(|| wasmtime::format_err!("{call} is only available to NF guests"))?;
    Ok((key, state))
}

/// `estate.counter_add(key_ptr, key_len, delta) -> i64`.
pub(crate) fn host_counter_add(
    mut caller: Caller<'_, GuestData>,
    ptr: u32,
    len: u32,
    delta: i64,
) -> wasmtime::Result<i64> {
    with_key(&mut caller, ptr, len, "counter_add", |state, key, _| {
        state.counter_add(key, delta).map_err(|e| wasmtime::format_err!("counter_add({key}): {e}"))
    })
}

/// `estate.counter_try_add(key_ptr, key_len, delta, out_ptr) -> i32`: `OK` and the new
/// value written at `out_ptr` (8 bytes, little-endian), or `REFUSED` and the message
/// staged (nothing changed). An `out_ptr` outside guest memory traps (a guest bug).
pub(crate) fn host_counter_try_add(
    mut caller: Caller<'_, GuestData>,
    ptr: u32,
    len: u32,
    delta: i64,
    out: u32,
) -> wasmtime::Result<i32> {
    // One look-up of the guest's memory for the key and the answer.
    let memory = guest_memory(&caller)?;
    let (memory, data) = memory.data_and_store_mut(&mut caller);
    let (key, state) = key_and_state(memory, data, ptr, len, "counter_try_add")?;
    let value = match state.counter_add(key, delta) {
        Ok(value) => value,
        Err(message) => {
            data.staged = message.into_bytes();
            return Ok(abi::counter_try_add::REFUSED);
        }
    };
    let slot = memory
        .get_mut(out as usize..)
        .and_then(|s| s.get_mut(..8))
        .ok_or_else(|| wasmtime::format_err!("counter_try_add: output {out}+8 is outside guest memory"))?;
    slot.copy_from_slice(&value.to_le_bytes());
    Ok(abi::counter_try_add::OK)
}

pub(crate) fn nf_state(caller: &Caller<'_, GuestData>, call: &str) -> wasmtime::Result<Arc<dyn NfState>> {
    caller.data().nf_state.clone().ok_or_else(|| wasmtime::format_err!("{call} is only available to NF guests"))
}

pub(crate) fn guest_str(
    caller: &mut Caller<'_, GuestData>,
    ptr: u32,
    len: u32,
    what: &str,
) -> wasmtime::Result<String> {
    String::from_utf8(guest_bytes(caller, ptr, len)?).map_err(|_| wasmtime::format_err!("{what} is not UTF-8"))
}

/// `estate.staged_read(ptr, len)`: copies the staged bytes into guest memory.
/// The staged bytes are then gone; the buffer is kept for the next call unless it grew
/// past [`KEPT_STAGING`].
pub(crate) fn host_staged_read(mut caller: Caller<'_, GuestData>, ptr: u32, len: u32) -> wasmtime::Result<()> {
    let memory = guest_memory(&caller)?;
    let (memory, data) = memory.data_and_store_mut(&mut caller);
    let staged = &mut data.staged;
    if len as usize != staged.len() {
        let staged = std::mem::take(staged).len();
        wasmtime::bail!("staged_read of {len} bytes, {staged} staged");
    }
    let out = memory
        .get_mut(ptr as usize..)
        .and_then(|m| m.get_mut(..len as usize))
        .ok_or_else(|| wasmtime::format_err!("staged_read buffer {ptr}+{len} is outside guest memory"))?;
    out.copy_from_slice(staged);
    if staged.capacity() > KEPT_STAGING {
        *staged = Vec::new();
    } else {
        staged.clear();
    }
    Ok(())
}

/// The largest staging buffer kept across host calls (a large global read's answer is
/// not kept).
const KEPT_STAGING: usize = 64 << 10;

/// `estate.state_get(key_ptr, key_len) -> i32`: 1 and the value staged, or 0.
pub(crate) fn host_state_get(mut caller: Caller<'_, GuestData>, ptr: u32, len: u32) -> wasmtime::Result<i32> {
    Ok(match with_key(&mut caller, ptr, len, "state_get", |state, key, _| Ok(state.get(key)))? {
        Some(value) => {
            // Into the staging buffer kept across calls: no allocation per get.
            let staged = &mut caller.data_mut().staged;
            staged.clear();
            value.encode(staged);
            abi::state_get::FOUND
        }
        None => abi::state_get::ABSENT,
    })
}

/// `estate.state_set(key_ptr, key_len, val_ptr, val_len) -> i32`: 0, or 1 and an error
/// message staged. A value that is not a valid encoding traps (a guest bug).
pub(crate) fn host_state_set(
    mut caller: Caller<'_, GuestData>,
    kp: u32,
    kl: u32,
    vp: u32,
    vl: u32,
) -> wasmtime::Result<i32> {
    let set = with_key(&mut caller, kp, kl, "state_set", |state, key, memory| {
        let value = Value::decode_exact(span(memory, vp, vl)?)
            .map_err(|e| wasmtime::format_err!("state_set({key}): malformed value: {e}"))?;
        Ok(state.set(key, value))
    })?;
    Ok(match set {
        Ok(()) => abi::state_set::OK,
        Err(message) => {
            caller.data_mut().staged = message.into_bytes();
            abi::state_set::REFUSED
        }
    })
}

/// `estate.state_del(key_ptr, key_len) -> i32`: 1 if the key existed, else 0.
pub(crate) fn host_state_del(mut caller: Caller<'_, GuestData>, ptr: u32, len: u32) -> wasmtime::Result<i32> {
    with_key(&mut caller, ptr, len, "state_del", |state, key, _| {
        Ok(if state.del(key) { abi::state_del::DELETED } else { abi::state_del::ABSENT })
    })
}

/// `estate.global(pat_ptr, pat_len, red_ptr, red_len, timeout_ms) -> i32` (and
/// `estate.global_all`, the same with consistency `all`): 0 no item, 1 an encoded item
/// staged, 2 an error message staged.
pub(crate) fn host_global<const ALL: bool>(
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
pub(crate) fn rearm_wall_time(caller: &mut Caller<'_, GuestData>) {
    let ticks = caller.data().wall_ticks;
    caller.as_context_mut().set_epoch_deadline(ticks);
}

/// `estate.take(pat_ptr, pat_len) -> i64`: the number of keys brought here, or -1 and
/// an error message staged.
pub(crate) fn host_take(mut caller: Caller<'_, GuestData>, ptr: u32, len: u32) -> wasmtime::Result<i64> {
    let pattern = guest_str(&mut caller, ptr, len, "take pattern")?;
    let answer = nf_state(&caller, "take")?.take(&pattern);
    rearm_wall_time(&mut caller);
    Ok(match answer {
        Ok(n) => n as i64,
        Err(message) => {
            caller.data_mut().staged = message.into_bytes();
            abi::take::ERROR
        }
    })
}

pub(crate) fn global_call(
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
        Ok(None) => (abi::global::NONE, Vec::new()),
        Ok(Some(item)) => {
            let mut staged = Vec::new();
            item.encode(&mut staged);
            (abi::global::ITEM, staged)
        }
        Err(message) => (abi::global::ERROR, message.into_bytes()),
    };
    caller.data_mut().staged = staged;
    Ok(code)
}

/// `estate.metric_add(name_ptr, name_len, delta)`.
pub(crate) fn host_metric_add(
    mut caller: Caller<'_, GuestData>,
    ptr: u32,
    len: u32,
    delta: i64,
) -> wasmtime::Result<()> {
    let name = guest_str(&mut caller, ptr, len, "metric name")?;
    nf_state(&caller, "metric_add")?.metric_add(&name, delta);
    Ok(())
}

/// `estate.emit(ptr, len)`: an event from the NF.
pub(crate) fn host_emit(mut caller: Caller<'_, GuestData>, ptr: u32, len: u32) -> wasmtime::Result<()> {
    let event = guest_str(&mut caller, ptr, len, "event")?;
    nf_state(&caller, "emit")?.emit(&event);
    Ok(())
}

/// `estate.packet_rewrite(src_ip, src_port, dst_ip, dst_port) -> i32`: records the
/// rewrite of the packet being handled (replacing an earlier one), `OK`; `ERROR` outside
/// `estate_on_packet` or for a port outside `0..=65535`. Reducers may not call it.
pub(crate) fn host_packet_rewrite(
    mut caller: Caller<'_, GuestData>,
    src_ip: i32,
    src_port: i32,
    dst_ip: i32,
    dst_port: i32,
) -> wasmtime::Result<i32> {
    if caller.data().nf_state.is_none() {
        wasmtime::bail!("packet_rewrite is only available to NF guests");
    }
    let index = match caller.data().packet_call {
        PacketCall::None => None,
        PacketCall::One => Some(0),
        PacketCall::Batch { verdicts, count } => {
            let memory = caller.data().memory.expect("an NF's memory is known once it runs");
            let bytes = verdicts.checked_add(count).and_then(|end| memory.data(&caller).get(verdicts..end));
            bytes.and_then(|bytes| bytes.iter().position(|&b| b == abi::batch::PENDING))
        }
    };
    match (Rewrite::from_args(src_ip, src_port, dst_ip, dst_port), index) {
        (Some(rewrite), Some(index)) => {
            let rewrites = &mut caller.data_mut().rewrites;
            match rewrites.last_mut() {
                Some(last) if last.0 == index => last.1 = rewrite,
                _ => rewrites.push((index, rewrite)),
            }
            Ok(abi::rewrite::OK)
        }
        _ => Ok(abi::rewrite::ERROR),
    }
}
