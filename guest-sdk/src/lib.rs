//! SDK for estate guests: reducers and network functions (NFs) written in Rust and
//! compiled to `wasm32-unknown-unknown`, then loaded by an estate node.
//!
//! The SDK hides the guest ABI (`docs/abi.md`) completely: a guest crate writes plain
//! Rust functions and names them in one entry macro, and can `#![forbid(unsafe_code)]`.
//!
//! ```ignore
//! #![no_std]
//! #![forbid(unsafe_code)]
//! extern crate alloc;
//! use estate_guest::{Item, Phase, ReduceResult, Value};
//!
//! fn sum(items: &[Item], _: Phase) -> ReduceResult {
//!     let mut total: i64 = 0;
//!     for item in items {
//!         match item.value {
//!             Value::Int(v) => total = total.checked_add(v).ok_or("integer overflow")?,
//!             _ => return Err(alloc::format!("{} from {} is not an integer", item.key, item.origin)),
//!         }
//!     }
//!     Ok(Some(Item::of(Value::Int(total))))
//! }
//! estate_guest::reducer!(sum, combinable);
//! ```
#![no_std]

extern crate alloc;

pub mod codec;

pub use codec::{Item, Value};

/// The guest ABI version this SDK implements; exported as `estate_abi_version`.
pub const ABI_VERSION: i32 = 1;

/// What a reducer returns: one item, no item (nothing to reduce), or an error message.
/// A reducer whose answer is a plain value returns [`Item::of`]`(value)`.
pub type ReduceResult = Result<Option<Item>, alloc::string::String>;

/// What a reducer's input items are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Items from the state store.
    Items,
    /// Partial results of this same reducer, one per node (push-down, combinable
    /// reducers only): the reducer combines them.
    Partials,
}

impl Item {
    /// An item that carries only a value: the usual answer of a reducer.
    pub fn of(value: Value) -> Item {
        Item { key: alloc::string::String::new(), value, origin: alloc::string::String::new(), version: 0 }
    }
}

/// Bits of `estate_reducer_flags`.
pub mod flags {
    /// The reducer is associative and commutative: it can reduce its own partial
    /// results, so it may be pushed down to peers.
    pub const COMBINABLE: i32 = 1;
}

/// What an NF decides for a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Pass the packet on.
    Forward,
    /// Drop the packet.
    Drop,
}

/// Status codes of `estate_reduce` and `estate_finish` (see `docs/abi.md`).
pub mod status {
    /// An item was handed to the host through `estate.result`.
    pub const ITEM: i32 = 0;
    /// The reducer produced no item.
    pub const NONE: i32 = 1;
    /// The reducer failed; the UTF-8 message was handed over through `estate.result`.
    pub const ERROR: i32 = 2;
    /// The input could not be decoded.
    pub const BAD_INPUT: i32 = 3;
}

/// The exports every guest has: `estate_abi_version` and `estate_alloc`.
#[doc(hidden)]
#[macro_export]
macro_rules! __common_exports {
    () => {
        /// ABI version of this guest.
        #[unsafe(no_mangle)]
        pub extern "C" fn estate_abi_version() -> i32 {
            $crate::ABI_VERSION
        }
        /// Allocates an input buffer for the host.
        #[unsafe(no_mangle)]
        pub extern "C" fn estate_alloc(len: i32) -> i32 {
            $crate::__private::alloc(len)
        }
    };
}

/// Wires a reducer to the guest ABI exports.
///
/// - `reducer!(f)`: `f: fn(&[Item], Phase) -> ReduceResult`; not combinable, so it is
///   only run where all items are (never pushed down).
/// - `reducer!(f, combinable)`: `f` can reduce its own partial results (it is then
///   called with [`Phase::Partials`]); the combined partial is the answer.
/// - `reducer!(f, combinable, finish = g)`: as above, and `g: fn(Item) -> ReduceResult`
///   turns the combined partial into the answer (e.g. a mean from a sum and a count).
#[macro_export]
macro_rules! reducer {
    ($reduce:path) => {
        $crate::reducer!(@exports $reduce, 0, $crate::__private::identity);
    };
    ($reduce:path, combinable) => {
        $crate::reducer!(@exports $reduce, $crate::flags::COMBINABLE, $crate::__private::identity);
    };
    ($reduce:path, combinable, finish = $finish:path) => {
        $crate::reducer!(@exports $reduce, $crate::flags::COMBINABLE, $finish);
    };
    (@exports $reduce:path, $flags:expr, $finish:path) => {
        $crate::__common_exports!();
        /// Properties of this reducer (`flags::COMBINABLE`).
        #[unsafe(no_mangle)]
        pub extern "C" fn estate_reducer_flags() -> i32 {
            $flags
        }
        /// Reduces the items encoded in the input buffer.
        #[unsafe(no_mangle)]
        pub extern "C" fn estate_reduce(ptr: i32, len: i32, phase: i32) -> i32 {
            $crate::__private::reduce(ptr, len, phase, $reduce)
        }
        /// Turns a combined partial result into the answer.
        #[unsafe(no_mangle)]
        pub extern "C" fn estate_finish(ptr: i32, len: i32) -> i32 {
            $crate::__private::finish(ptr, len, $finish)
        }
    };
}

/// Wires an NF function `fn(&[u8]) -> Verdict` to the guest ABI exports.
#[macro_export]
macro_rules! nf {
    ($on_packet:path) => {
        $crate::__common_exports!();
        /// Handles one packet; returns its verdict.
        #[unsafe(no_mangle)]
        pub extern "C" fn estate_on_packet(ptr: i32, len: i32) -> i32 {
            $crate::__private::on_packet(ptr, len, $on_packet)
        }
    };
}

/// State of the node the guest runs in.
#[cfg(target_arch = "wasm32")]
pub mod state {
    /// Adds `delta` to the integer counter `key` in the node's local state (a missing
    /// key counts as 0) and returns the new value.
    pub fn counter_add(key: &str, delta: i64) -> i64 {
        crate::hostcalls::counter_add(key, delta)
    }
}

#[cfg(target_arch = "wasm32")]
mod hostcalls {
    #[link(wasm_import_module = "estate")]
    unsafe extern "C" {
        #[link_name = "result"]
        fn estate_result(ptr: *const u8, len: usize);
        #[link_name = "counter_add"]
        fn estate_counter_add(key_ptr: *const u8, key_len: usize, delta: i64) -> i64;
    }

    pub(crate) fn result(bytes: &[u8]) {
        // SAFETY: the host only reads `len` bytes at `ptr`, which `bytes` covers.
        unsafe { estate_result(bytes.as_ptr(), bytes.len()) }
    }

    pub(crate) fn counter_add(key: &str, delta: i64) -> i64 {
        // SAFETY: the host only reads `key.len()` bytes at `key.as_ptr()`.
        unsafe { estate_counter_add(key.as_ptr(), key.len(), delta) }
    }
}

#[doc(hidden)]
#[cfg(target_arch = "wasm32")]
pub mod __private {
    use crate::{ReduceResult, Verdict, codec, hostcalls, status};
    use alloc::vec::Vec;
    use core::alloc::Layout;

    #[global_allocator]
    static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

    #[panic_handler]
    fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
        // A panic is a bug in the guest; the host sees a trap and reports it.
        core::arch::wasm32::unreachable()
    }

    /// Allocates `len` bytes for the host to write an input into; 0 on failure.
    pub fn alloc(len: i32) -> i32 {
        match usize::try_from(len) {
            Ok(0) => 1,
            Ok(len) => match Layout::array::<u8>(len) {
                // SAFETY: the layout has a non-zero size.
                Ok(layout) => unsafe { alloc::alloc::alloc(layout) as i32 },
                Err(_) => 0,
            },
            Err(_) => 0,
        }
    }

    /// Takes back ownership of a buffer returned by [`alloc`] and filled by the host.
    fn take_input(ptr: i32, len: i32) -> Vec<u8> {
        match usize::try_from(len) {
            Ok(len) if len > 0 && ptr != 0 => {
                // SAFETY: the ABI says the host passes back a pointer it got from
                // `estate_alloc(len)` with the same `len`, after writing `len` bytes;
                // that allocation has exactly the layout of a `Vec<u8>` of capacity
                // `len`, and ownership passes here once.
                unsafe { Vec::from_raw_parts(ptr as *mut u8, len, len) }
            }
            _ => Vec::new(),
        }
    }

    /// The default `finish`: the combined partial is the answer.
    pub fn identity(item: crate::Item) -> ReduceResult {
        Ok(Some(item))
    }

    fn answer(result: ReduceResult) -> i32 {
        match result {
            Ok(Some(item)) => {
                let mut out = Vec::new();
                item.encode(&mut out);
                hostcalls::result(&out);
                status::ITEM
            }
            Ok(None) => status::NONE,
            Err(message) => {
                hostcalls::result(message.as_bytes());
                status::ERROR
            }
        }
    }

    fn bad_input(e: impl core::fmt::Display) -> i32 {
        hostcalls::result(alloc::format!("bad input: {e}").as_bytes());
        status::BAD_INPUT
    }

    pub fn reduce(ptr: i32, len: i32, phase: i32, f: fn(&[crate::Item], crate::Phase) -> ReduceResult) -> i32 {
        let input = take_input(ptr, len);
        let phase = match phase {
            0 => crate::Phase::Items,
            1 => crate::Phase::Partials,
            other => return bad_input(alloc::format!("unknown phase {other}")),
        };
        let items = match codec::decode_items(&input) {
            Ok(items) => items,
            Err(e) => return bad_input(e),
        };
        drop(input);
        answer(f(&items, phase))
    }

    pub fn finish(ptr: i32, len: i32, f: fn(crate::Item) -> ReduceResult) -> i32 {
        let input = take_input(ptr, len);
        let mut r = codec::Reader::new(&input);
        let item = match codec::Item::decode(&mut r).and_then(|item| r.finish().map(|()| item)) {
            Ok(item) => item,
            Err(e) => return bad_input(e),
        };
        answer(f(item))
    }

    pub fn on_packet(ptr: i32, len: i32, f: fn(&[u8]) -> Verdict) -> i32 {
        let packet = take_input(ptr, len);
        match f(&packet) {
            Verdict::Forward => 0,
            Verdict::Drop => 1,
        }
    }
}
