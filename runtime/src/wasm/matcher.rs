//! The host's multi-pattern matcher (`estate.matcher_new`, `estate.matcher_count`): an
//! NF's byte patterns compiled natively once, each scan bounded by the guest buffer it
//! names and charged to the call's fuel. A payload matcher (`SCAN_PAYLOADS`) scans each
//! packet of a batch before the call (`nf.rs`), charged the same.

use aho_corasick::{AhoCorasick, MatchKind};
use estate_guest::abi::matcher as limits;
use estate_guest::matcher::decode_patterns;
use wasmtime::{Caller, Trap};

use super::GuestData;
use super::hostcalls::{guest_bytes, span};

/// Takes `cost` fuel from the call, or traps as out of fuel.
fn charge(caller: &mut Caller<'_, GuestData>, cost: u64) -> wasmtime::Result<()> {
    let fuel = caller.get_fuel()?;
    if fuel < cost {
        caller.set_fuel(0)?;
        return Err(Trap::OutOfFuel.into());
    }
    caller.set_fuel(fuel - cost)
}

/// The fuel a scan (or a build) over `bytes` bytes costs.
pub(crate) fn cost(bytes: usize) -> u64 {
    1 + bytes as u64 / u64::from(limits::BYTES_PER_FUEL)
}

/// `estate.matcher_new(ptr, len, flags) -> i32`: a handle, or `ERROR` and the reason
/// staged (bad encoding, limits, too many matchers).
pub(crate) fn host_matcher_new(
    mut caller: Caller<'_, GuestData>,
    ptr: u32,
    len: u32,
    flags: i32,
) -> wasmtime::Result<i32> {
    let encoded = guest_bytes(&mut caller, ptr, len)?;
    // Building the automaton costs about as much as scanning its patterns a few times.
    charge(&mut caller, 16 * cost(encoded.len()))?;
    let payloads = flags & limits::SCAN_PAYLOADS != 0;
    let built = (|| {
        if caller.data().matchers.len() >= limits::MAX_MATCHERS as usize {
            return Err(format!("matcher_new: at most {} matchers per instance", limits::MAX_MATCHERS));
        }
        if payloads && caller.data().payload_matcher.is_some() {
            return Err("matcher_new: only one matcher per instance scans payloads".into());
        }
        let patterns = decode_patterns(&encoded).map_err(|e| format!("matcher_new: {e}"))?;
        AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostFirst)
            .prefilter(flags & limits::NO_PREFILTER == 0)
            .build(patterns)
            .map_err(|e| format!("matcher_new: {e}"))
    })();
    match built {
        Ok(matcher) => {
            let data = caller.data_mut();
            data.matchers.push(matcher);
            let handle = data.matchers.len() - 1;
            if payloads {
                data.payload_matcher = Some(handle);
            }
            Ok(handle as i32)
        }
        Err(message) => {
            caller.data_mut().staged = message.into_bytes();
            Ok(limits::ERROR)
        }
    }
}

/// `estate.matcher_count(handle, ptr, len) -> i32`. An unknown handle or a buffer
/// outside guest memory traps (a guest bug).
pub(crate) fn host_matcher_count(
    mut caller: Caller<'_, GuestData>,
    handle: i32,
    ptr: u32,
    len: u32,
) -> wasmtime::Result<i32> {
    charge(&mut caller, cost(len as usize))?;
    let memory = caller.data().memory.ok_or_else(|| wasmtime::format_err!("guest has no exported memory"))?;
    let (memory, data) = memory.data_and_store_mut(&mut caller);
    let matcher = usize::try_from(handle)
        .ok()
        .and_then(|h| data.matchers.get(h))
        .ok_or_else(|| wasmtime::format_err!("matcher_count: no matcher {handle}"))?;
    let found = matcher.find_iter(span(memory, ptr, len)?).count();
    Ok(i32::try_from(found).unwrap_or(i32::MAX))
}
