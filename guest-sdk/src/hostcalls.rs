//! The host calls (`docs/abi.md`, "Host imports"): each raw import, then directly below
//! it its safe wrapper, which passes pointer/length pairs of Rust slices and returns the
//! host's raw answer. [`crate::state::HostState`] gives the answers their meaning.
//!
//! Each declaration has the signature `docs/abi.md` gives the import (pointers and
//! lengths are `i32` on wasm32). What the `unsafe` calls rely on (the host's side of the
//! ABI): the host reads exactly `len` bytes at a `ptr` it is given and keeps no pointer
//! after the call; it writes guest memory only in `staged_read`, exactly `len` bytes at
//! `ptr`. The imports without pointers are declared `safe`. Import and module names are
//! literals because attributes take no constants; `abi`'s tests check them against
//! [`crate::abi::import`].

use alloc::vec::Vec;

#[link(wasm_import_module = "estate")]
unsafe extern "C" {
    #[link_name = "result"]
    fn estate_result(ptr: *const u8, len: usize);
}

/// Hands the call's output to the host (the last call wins).
pub(crate) fn result(bytes: &[u8]) {
    // SAFETY: the host reads `bytes.len()` bytes at `bytes.as_ptr()`, all inside `bytes`.
    unsafe { estate_result(bytes.as_ptr(), bytes.len()) }
}

#[link(wasm_import_module = "estate")]
unsafe extern "C" {
    #[link_name = "staged_len"]
    safe fn estate_staged_len() -> i32;
}

#[link(wasm_import_module = "estate")]
unsafe extern "C" {
    #[link_name = "staged_read"]
    fn estate_staged_read(ptr: *mut u8, len: usize);
}

/// The bytes the last host call staged (a value, an item or an error message).
pub(crate) fn staged() -> Vec<u8> {
    let len = usize::try_from(estate_staged_len()).unwrap_or(0);
    let mut buf = alloc::vec![0u8; len];
    // SAFETY: the host writes `len` bytes at `buf.as_mut_ptr()`, and `buf` owns `len`
    // initialised bytes there; `buf` is not otherwise borrowed during the call.
    unsafe { estate_staged_read(buf.as_mut_ptr(), len) };
    buf
}

#[link(wasm_import_module = "estate")]
unsafe extern "C" {
    #[link_name = "state_get"]
    fn estate_state_get(key_ptr: *const u8, key_len: usize) -> i32;
}

/// `state_get`: stages the value at `key`; answers `abi::state_get`.
pub(crate) fn state_get(key: &str) -> i32 {
    // SAFETY: the host reads `key.len()` bytes at `key.as_ptr()`, all inside `key`.
    unsafe { estate_state_get(key.as_ptr(), key.len()) }
}

#[link(wasm_import_module = "estate")]
unsafe extern "C" {
    #[link_name = "state_set"]
    fn estate_state_set(key_ptr: *const u8, key_len: usize, val_ptr: *const u8, val_len: usize) -> i32;
}

/// `state_set`: sets `key` to the encoded `value`; answers `abi::state_set`.
pub(crate) fn state_set(key: &str, value: &[u8]) -> i32 {
    // SAFETY: the host reads `key.len()` bytes at `key.as_ptr()` and `value.len()` bytes
    // at `value.as_ptr()`, all inside `key` and `value`.
    unsafe { estate_state_set(key.as_ptr(), key.len(), value.as_ptr(), value.len()) }
}

#[link(wasm_import_module = "estate")]
unsafe extern "C" {
    #[link_name = "state_del"]
    fn estate_state_del(key_ptr: *const u8, key_len: usize) -> i32;
}

/// `state_del`: deletes `key`; answers `abi::state_del`.
pub(crate) fn state_del(key: &str) -> i32 {
    // SAFETY: the host reads `key.len()` bytes at `key.as_ptr()`, all inside `key`.
    unsafe { estate_state_del(key.as_ptr(), key.len()) }
}

#[link(wasm_import_module = "estate")]
unsafe extern "C" {
    #[link_name = "counter_try_add"]
    fn estate_counter_try_add(key_ptr: *const u8, key_len: usize, delta: i64, out: *mut i64) -> i32;
}

/// `counter_try_add`: answers `abi::counter_try_add`; on `OK` the new value is in `out`.
pub(crate) fn counter_try_add(key: &str, delta: i64, out: &mut i64) -> i32 {
    // SAFETY: the host reads `key.len()` bytes at `key.as_ptr()`, all inside `key`, and
    // writes 8 bytes at `out`, a live and aligned `i64`.
    unsafe { estate_counter_try_add(key.as_ptr(), key.len(), delta, out) }
}

#[link(wasm_import_module = "estate")]
unsafe extern "C" {
    #[link_name = "global"]
    fn estate_global(pat_ptr: *const u8, pat_len: usize, red_ptr: *const u8, red_len: usize, timeout_ms: u32) -> i32;
}

/// `global`: a global read; stages its answer; answers `abi::global`.
pub(crate) fn global(pattern: &str, reducer: &str, timeout_ms: u32) -> i32 {
    let (p, r) = (pattern, reducer);
    // SAFETY: the host reads `p.len()` bytes at `p.as_ptr()` and `r.len()` bytes at
    // `r.as_ptr()`, all inside `pattern` and `reducer`.
    unsafe { estate_global(p.as_ptr(), p.len(), r.as_ptr(), r.len(), timeout_ms) }
}

#[link(wasm_import_module = "estate")]
unsafe extern "C" {
    #[link_name = "global_all"]
    fn estate_global_all(
        pat_ptr: *const u8,
        pat_len: usize,
        red_ptr: *const u8,
        red_len: usize,
        timeout_ms: u32,
    ) -> i32;
}

/// `global_all`: [`global`] with consistency `all`.
pub(crate) fn global_all(pattern: &str, reducer: &str, timeout_ms: u32) -> i32 {
    let (p, r) = (pattern, reducer);
    // SAFETY: the host reads `p.len()` bytes at `p.as_ptr()` and `r.len()` bytes at
    // `r.as_ptr()`, all inside `pattern` and `reducer`.
    unsafe { estate_global_all(p.as_ptr(), p.len(), r.as_ptr(), r.len(), timeout_ms) }
}

#[link(wasm_import_module = "estate")]
unsafe extern "C" {
    #[link_name = "take"]
    fn estate_take(pat_ptr: *const u8, pat_len: usize) -> i64;
}

/// `take`: the number of keys brought, or `abi::take::ERROR` with a message staged.
pub(crate) fn take(pattern: &str) -> i64 {
    // SAFETY: the host reads `pattern.len()` bytes at `pattern.as_ptr()`, all inside
    // `pattern`.
    unsafe { estate_take(pattern.as_ptr(), pattern.len()) }
}

#[link(wasm_import_module = "estate")]
unsafe extern "C" {
    #[link_name = "now_ms"]
    safe fn estate_now_ms() -> i64;
}

/// `now_ms`: the node's wall clock, ms since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    estate_now_ms()
}

#[link(wasm_import_module = "estate")]
unsafe extern "C" {
    #[link_name = "metric_add"]
    fn estate_metric_add(name_ptr: *const u8, name_len: usize, delta: i64);
}

/// `metric_add`: adds `delta` to the NF metric `name`.
pub(crate) fn metric_add(name: &str, delta: i64) {
    // SAFETY: the host reads `name.len()` bytes at `name.as_ptr()`, all inside `name`.
    unsafe { estate_metric_add(name.as_ptr(), name.len(), delta) }
}

#[link(wasm_import_module = "estate")]
unsafe extern "C" {
    #[link_name = "emit"]
    fn estate_emit(ptr: *const u8, len: usize);
}

/// `emit`: an event from the NF.
pub(crate) fn emit(event: &str) {
    // SAFETY: the host reads `event.len()` bytes at `event.as_ptr()`, all inside `event`.
    unsafe { estate_emit(event.as_ptr(), event.len()) }
}

#[link(wasm_import_module = "estate")]
unsafe extern "C" {
    #[link_name = "matcher_new"]
    fn estate_matcher_new(ptr: *const u8, len: usize, flags: i32) -> i32;
}

/// `matcher_new`: a host matcher over the encoded `patterns`; answers its handle or
/// `abi::matcher::ERROR` (the message staged).
pub(crate) fn matcher_new(patterns: &[u8], flags: i32) -> i32 {
    // SAFETY: the host reads `patterns.len()` bytes at `patterns.as_ptr()`, all inside.
    unsafe { estate_matcher_new(patterns.as_ptr(), patterns.len(), flags) }
}

#[link(wasm_import_module = "estate")]
unsafe extern "C" {
    #[link_name = "matcher_count"]
    fn estate_matcher_count(handle: i32, ptr: *const u8, len: usize) -> i32;
}

/// `matcher_count`: the matches of matcher `handle` in `haystack`.
pub(crate) fn matcher_count(handle: i32, haystack: &[u8]) -> i32 {
    // SAFETY: the host reads `haystack.len()` bytes at `haystack.as_ptr()`, all inside.
    unsafe { estate_matcher_count(handle, haystack.as_ptr(), haystack.len()) }
}

#[link(wasm_import_module = "estate")]
unsafe extern "C" {
    #[link_name = "packet_rewrite"]
    safe fn estate_packet_rewrite(src_ip: i32, src_port: i32, dst_ip: i32, dst_port: i32) -> i32;
}

/// `packet_rewrite`: asks the host to rewrite the packet being handled; answers
/// `abi::rewrite`.
pub(crate) fn packet_rewrite(src_ip: i32, src_port: i32, dst_ip: i32, dst_port: i32) -> i32 {
    estate_packet_rewrite(src_ip, src_port, dst_ip, dst_port)
}
