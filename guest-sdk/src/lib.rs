//! SDK for estate guests: reducers and network functions (NFs) written in Rust and
//! compiled to `wasm32-unknown-unknown`, then loaded by an estate node.
//!
//! The SDK hides the guest ABI (`docs/abi.md`) completely: a guest crate writes plain
//! Rust functions and names them in one entry macro, and can `#![forbid(unsafe_code)]`.
//! The ABI's numbers and names are defined once, in [`abi`], for the SDK and the host.
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
//!
//! An NF implements [`Nf`] and reaches the node through the [`State`] trait: on wasm32
//! `HostState` (the host calls), natively [`testing::MemoryState`] or a host's own
//! implementation, so the same NF logic runs in both forms.
#![no_std]

extern crate alloc;

pub mod abi;
pub mod codec;
pub mod config;
mod error;
#[cfg(target_arch = "wasm32")]
mod hostcalls;
pub mod ints;
pub mod matcher;
pub mod nf;
pub mod pattern;
pub mod state;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
#[cfg(feature = "typed")]
pub mod typed;
pub mod view;

pub use abi::VERSION as ABI_VERSION;
pub use abi::{Brought, Direction, Phase, Verdict, flags, status};
pub use codec::{Item, Value};
pub use error::Error;
pub use nf::{Nf, Packet, Rewrite};
#[cfg(target_arch = "wasm32")]
pub use state::HostState;
pub use state::State;

/// What a reducer returns: one item, no item (nothing to reduce), or an error message.
/// A reducer whose answer is a plain value returns [`Item::of`]`(value)`.
pub type ReduceResult = Result<Option<Item>, alloc::string::String>;

impl Item {
    /// An item that carries only a value: the usual answer of a reducer.
    pub fn of(value: Value) -> Item {
        let none = alloc::string::String::new;
        Item { key: none(), value, origin: none(), writer: none(), version: 0 }
    }
}

/// The exports every guest has: `estate_abi_version` and `estate_alloc`.
#[doc(hidden)]
#[macro_export]
macro_rules! __common_exports {
    () => {
        /// ABI version of this guest.
        #[unsafe(no_mangle)]
        pub extern "C" fn estate_abi_version() -> i32 {
            $crate::abi::VERSION
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
/// - `reducer!(f, borrowed)` and `reducer!(f, combinable, borrowed)`: `f: fn(&[ItemRef],
///   Phase) -> ReduceResult` reads the items in place ([`view::ItemRef`]: keys and text
///   as `&str` into the input), with no allocation per item.
/// - `reducer!(f, combinable, borrowed, values_only)` and `reducer!(f, combinable,
///   finish = g, values_only)`: as without `values_only`, for a reducer that reads only
///   values and versions of store items (`abi::flags::VALUES_ONLY`): pushed down, its
///   items come with empty keys, origins and writers, and a call that fails is repeated
///   on whole items, so an error can still name them.
/// - `reducer!(f, combinable, borrowed, values_only, ints = g)` and `reducer!(f,
///   combinable, finish = g, values_only, ints = h)`: as without `ints`, and where every
///   item a node reduces is an integer, the host may call the ints function instead,
///   `fn(ints::Ints) -> ReduceResult`, with the items' values alone
///   (`abi::flags::INTS`): one 8-byte load per item. It must answer what `f` answers on
///   the same items; a call that fails is repeated with `f` on whole items.
#[macro_export]
macro_rules! reducer {
    ($reduce:path) => {
        $crate::reducer!(@exports $crate::__private::reduce, $reduce, $crate::abi::flags::NONE, $crate::__private::identity);
    };
    ($reduce:path, combinable) => {
        $crate::reducer!(@exports $crate::__private::reduce, $reduce, $crate::abi::flags::COMBINABLE, $crate::__private::identity);
    };
    ($reduce:path, combinable, finish = $finish:path) => {
        $crate::reducer!(@exports $crate::__private::reduce, $reduce, $crate::abi::flags::COMBINABLE, $finish);
    };
    ($reduce:path, combinable, finish = $finish:path, values_only) => {
        $crate::reducer!(@exports $crate::__private::reduce, $reduce, $crate::abi::flags::COMBINABLE | $crate::abi::flags::VALUES_ONLY, $finish);
    };
    ($reduce:path, borrowed) => {
        $crate::reducer!(@exports $crate::__private::reduce_borrowed, $reduce, $crate::abi::flags::NONE, $crate::__private::identity);
    };
    ($reduce:path, combinable, borrowed) => {
        $crate::reducer!(@exports $crate::__private::reduce_borrowed, $reduce, $crate::abi::flags::COMBINABLE, $crate::__private::identity);
    };
    ($reduce:path, combinable, borrowed, values_only) => {
        $crate::reducer!(@exports $crate::__private::reduce_borrowed, $reduce, $crate::abi::flags::COMBINABLE | $crate::abi::flags::VALUES_ONLY, $crate::__private::identity);
    };
    ($reduce:path, combinable, borrowed, values_only, ints = $ints:path) => {
        $crate::reducer!(@exports $crate::__private::reduce_borrowed, $reduce, $crate::abi::flags::COMBINABLE | $crate::abi::flags::VALUES_ONLY | $crate::abi::flags::INTS, $crate::__private::identity, Some($ints));
    };
    ($reduce:path, combinable, finish = $finish:path, values_only, ints = $ints:path) => {
        $crate::reducer!(@exports $crate::__private::reduce, $reduce, $crate::abi::flags::COMBINABLE | $crate::abi::flags::VALUES_ONLY | $crate::abi::flags::INTS, $finish, Some($ints));
    };
    (@exports $entry:path, $reduce:path, $flags:expr, $finish:path) => {
        $crate::reducer!(@exports $entry, $reduce, $flags, $finish, None);
    };
    (@exports $entry:path, $reduce:path, $flags:expr, $finish:path, $ints:expr) => {
        $crate::__common_exports!();
        /// Properties of this reducer (`abi::flags`).
        #[unsafe(no_mangle)]
        pub extern "C" fn estate_reducer_flags() -> i32 {
            $flags
        }
        /// Reduces the items encoded in the input buffer.
        #[unsafe(no_mangle)]
        pub extern "C" fn estate_reduce(ptr: i32, len: i32, phase: i32) -> i32 {
            let ints: Option<$crate::__private::IntsFn> = $ints;
            match ints {
                Some(ints) if phase == $crate::abi::INTS_PHASE => $crate::__private::reduce_ints(ptr, len, ints),
                _ => $entry(ptr, len, phase, $reduce),
            }
        }
        /// Turns a combined partial result into the answer.
        #[unsafe(no_mangle)]
        pub extern "C" fn estate_finish(ptr: i32, len: i32) -> i32 {
            $crate::__private::finish(ptr, len, $finish)
        }
    };
}

/// Wires a type implementing [`Nf`] to the guest ABI exports: `estate_nf_init` builds
/// it from the configuration, `estate_on_packet` hands it each packet.
#[macro_export]
macro_rules! nf {
    ($ty:ty) => {
        $crate::__common_exports!();
        static ESTATE_NF: $crate::__private::NfCell<$ty> = $crate::__private::NfCell::new();
        static ESTATE_PACKETS: $crate::__private::NfCell<$crate::__private::Vec<u8>> = $crate::__private::NfCell::new();
        /// Builds the NF from its configuration.
        #[unsafe(no_mangle)]
        pub extern "C" fn estate_nf_init(ptr: i32, len: i32) -> i32 {
            $crate::__private::nf_init(&ESTATE_NF, ptr, len)
        }
        /// Handles one packet record; returns its verdict.
        #[unsafe(no_mangle)]
        pub extern "C" fn estate_on_packet(ptr: i32, len: i32) -> i32 {
            $crate::__private::nf_on_packet(&ESTATE_NF, &ESTATE_PACKETS, ptr, len)
        }
        /// The buffer the host writes packet records into, kept across packets.
        #[unsafe(no_mangle)]
        pub extern "C" fn estate_packet_buffer(len: i32) -> i32 {
            $crate::__private::packet_buffer(&ESTATE_PACKETS, len)
        }
        /// Handles a batch of packet records in the packet buffer; writes each verdict.
        #[unsafe(no_mangle)]
        pub extern "C" fn estate_on_packets(ptr: i32, len: i32, count: i32) -> i32 {
            $crate::__private::nf_on_packets(&ESTATE_NF, &ESTATE_PACKETS, ptr, len, count)
        }
        /// Tells the NF a flow moved here (its state already brought over).
        #[unsafe(no_mangle)]
        pub extern "C" fn estate_on_flow_moved(ptr: i32, len: i32, brought: i32) -> i32 {
            $crate::__private::nf_on_flow_moved(&ESTATE_NF, ptr, len, brought)
        }
    };
}

#[doc(hidden)]
#[cfg(target_arch = "wasm32")]
pub mod __private {
    use crate::abi::{ALLOC_FAILED, Brought, Phase, status};
    use crate::{ReduceResult, codec, hostcalls};
    pub use alloc::vec::Vec;
    use core::alloc::Layout;

    #[global_allocator]
    static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

    #[panic_handler]
    fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
        // A panic is a bug in the guest; the host sees a trap and reports it.
        core::arch::wasm32::unreachable()
    }

    /// Allocates `len` bytes for the host to write an input into; [`ALLOC_FAILED`] on
    /// failure.
    pub fn alloc(len: i32) -> i32 {
        match usize::try_from(len) {
            // Any non-null pointer will do for no bytes; `take_input` never frees it.
            Ok(0) => 1,
            Ok(len) => match Layout::array::<u8>(len) {
                // SAFETY: the layout has a non-zero size. A null answer (out of memory)
                // is ALLOC_FAILED, 0, as the ABI wants.
                Ok(layout) => unsafe { alloc::alloc::alloc(layout) as i32 },
                Err(_) => ALLOC_FAILED,
            },
            Err(_) => ALLOC_FAILED,
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

    pub fn reduce(ptr: i32, len: i32, phase: i32, f: fn(&[crate::Item], Phase) -> ReduceResult) -> i32 {
        let input = take_input(ptr, len);
        let Some(phase) = Phase::from_code(phase) else {
            return bad_input(alloc::format!("unknown phase {phase}"));
        };
        let items = match codec::decode_items(&input) {
            Ok(items) => items,
            Err(e) => return bad_input(e),
        };
        drop(input);
        answer(f(&items, phase))
    }

    pub fn reduce_borrowed(
        ptr: i32,
        len: i32,
        phase: i32,
        f: for<'a> fn(&[crate::view::ItemRef<'a>], Phase) -> ReduceResult,
    ) -> i32 {
        let input = take_input(ptr, len);
        let Some(phase) = Phase::from_code(phase) else {
            return bad_input(alloc::format!("unknown phase {phase}"));
        };
        match crate::view::decode_item_refs(&input) {
            Ok(items) => answer(f(&items, phase)),
            Err(e) => bad_input(e),
        }
    }

    /// What `reducer!(…, ints = g)` names: a reducer of integer values alone.
    pub type IntsFn = for<'a> fn(crate::ints::Ints<'a>) -> ReduceResult;

    pub fn reduce_ints(ptr: i32, len: i32, f: IntsFn) -> i32 {
        let input = take_input(ptr, len);
        match crate::ints::Ints::decode(&input) {
            Ok(ints) => answer(f(ints)),
            Err(e) => bad_input(e),
        }
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

    /// The NF value of a guest. Wasm guests are single-threaded, so a `RefCell` in a
    /// static is sound; the wrapper only asserts `Sync` for that.
    pub struct NfCell<T>(core::cell::RefCell<Option<T>>);

    // SAFETY: wasm32 guests run on one thread (no `atomics` target feature is enabled),
    // so the cell is never touched concurrently.
    unsafe impl<T> Sync for NfCell<T> {}

    impl<T> NfCell<T> {
        pub const fn new() -> Self {
            NfCell(core::cell::RefCell::new(None))
        }
    }

    impl<T> core::fmt::Debug for NfCell<T> {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            f.write_str("NfCell")
        }
    }

    impl<T> Default for NfCell<T> {
        fn default() -> Self {
            Self::new()
        }
    }

    pub fn nf_init<T: crate::Nf>(cell: &NfCell<T>, ptr: i32, len: i32) -> i32 {
        let input = take_input(ptr, len);
        let Ok(config) = core::str::from_utf8(&input) else {
            return bad_input("configuration is not UTF-8");
        };
        match T::init(config) {
            Ok(nf) => {
                *cell.0.borrow_mut() = Some(nf);
                status::OK
            }
            Err(message) => {
                hostcalls::result(message.as_bytes());
                status::ERROR
            }
        }
    }

    pub fn nf_on_flow_moved<T: crate::Nf>(cell: &NfCell<T>, ptr: i32, len: i32, brought: i32) -> i32 {
        let input = take_input(ptr, len);
        let Ok(flow) = core::str::from_utf8(&input) else {
            return bad_input("flow key is not UTF-8");
        };
        let Some(brought) = Brought::from_code(brought) else {
            return bad_input("unknown `brought` code");
        };
        let mut nf = cell.0.borrow_mut();
        let Some(nf) = nf.as_mut() else {
            return bad_input("estate_nf_init was not called");
        };
        nf.on_flow_moved(flow, brought);
        status::OK
    }

    /// A buffer of at least `len` bytes for packet records, kept across packets.
    pub fn packet_buffer(buffer: &NfCell<Vec<u8>>, len: i32) -> i32 {
        let Ok(len) = usize::try_from(len) else {
            return ALLOC_FAILED;
        };
        let mut buffer = buffer.0.borrow_mut();
        let buffer = buffer.get_or_insert_with(Vec::new);
        if buffer.len() < len {
            if buffer.try_reserve_exact(len - buffer.len()).is_err() {
                return ALLOC_FAILED;
            }
            buffer.resize(len, 0);
        }
        buffer.as_mut_ptr() as i32
    }

    pub fn nf_on_packet<T: crate::Nf>(cell: &NfCell<T>, buffer: &NfCell<Vec<u8>>, ptr: i32, len: i32) -> i32 {
        // The record is in the kept buffer (`estate_packet_buffer`), or in a buffer of
        // its own from `estate_alloc`, which is ours to free.
        let kept = buffer.0.borrow();
        let owned;
        let input = match (kept.as_ref(), usize::try_from(len)) {
            (Some(kept), Ok(len)) if kept.as_ptr() as i32 == ptr && len <= kept.len() => &kept[..len],
            _ => {
                owned = take_input(ptr, len);
                &owned[..]
            }
        };
        let Ok(packet) = crate::nf::Packet::decode(input) else {
            return bad_input("malformed packet record");
        };
        let mut nf = cell.0.borrow_mut();
        let Some(nf) = nf.as_mut() else {
            return bad_input("estate_nf_init was not called");
        };
        nf.on_packet(&packet).code()
    }

    /// A batch (`abi::batch`) in the kept packet buffer: each packet is handled in turn
    /// and its verdict written before the next one, so a host that sees the call fail
    /// knows which packets were decided.
    pub fn nf_on_packets<T: crate::Nf>(
        cell: &NfCell<T>,
        buffer: &NfCell<Vec<u8>>,
        ptr: i32,
        len: i32,
        count: i32,
    ) -> i32 {
        let mut kept = buffer.0.borrow_mut();
        let (Some(kept), Ok(len), Ok(count)) = (kept.as_mut(), usize::try_from(len), usize::try_from(count)) else {
            return bad_input("a batch must be in the packet buffer");
        };
        if kept.as_ptr() as i32 != ptr || len > kept.len() {
            return bad_input("a batch must be in the packet buffer");
        }
        let Ok(batch) = crate::nf::batch::split(&mut kept[..len], count) else {
            return bad_input("a batch shorter than its verdict bytes and scan counts");
        };
        let crate::nf::batch::Split { verdicts, scans, mut records } = batch;
        let mut nf = cell.0.borrow_mut();
        let Some(nf) = nf.as_mut() else {
            return bad_input("estate_nf_init was not called");
        };
        for (i, (verdict, scan)) in verdicts.iter_mut().zip(scans.chunks_exact(4)).enumerate() {
            let Ok(packet) = crate::nf::Packet::read(&mut records) else {
                return bad_input(alloc::format!("malformed packet record {i} of the batch"));
            };
            crate::matcher::scanned(packet.payload, u32::from_le_bytes([scan[0], scan[1], scan[2], scan[3]]));
            *verdict = nf.on_packet(&packet).code() as u8;
        }
        crate::matcher::scanned(&[], crate::abi::batch::NOT_SCANNED);
        match records.finish() {
            Ok(()) => status::OK,
            Err(e) => bad_input(e),
        }
    }
}
