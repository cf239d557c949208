//! The numbers and names of the guest ABI (`docs/abi.md`), defined once for both sides.
//!
//! The SDK's exports and host calls use these, and so does the host runtime (it depends
//! on this crate natively), so a number changes in one place or not at all. The byte
//! layouts that cross the boundary are code, not numbers, and are shared the same way:
//! values and items in [`crate::codec`], the packet record in [`crate::nf::Packet`].
//!
//! Entry points and host calls that answer with a code have their codes here: an enum
//! with `code()`/`from_code()` where the code stands for a value the program works with
//! ([`Phase`], [`Verdict`], [`Brought`], [`Direction`]), a module of constants where it
//! is a status.

/// The ABI version: `estate_abi_version` returns it, and the host refuses any other.
pub const VERSION: i32 = 3;

/// The module every host call is imported from.
pub const IMPORT_MODULE: &str = "estate";

/// What `estate_alloc` returns when it cannot allocate.
pub const ALLOC_FAILED: i32 = 0;

/// Names of the guest's exports.
pub mod export {
    /// The guest's linear memory.
    pub const MEMORY: &str = "memory";
    /// `() -> i32`: [`super::VERSION`].
    pub const ABI_VERSION: &str = "estate_abi_version";
    /// `(len) -> ptr`: a buffer for an input ([`super::ALLOC_FAILED`] on failure).
    pub const ALLOC: &str = "estate_alloc";
    /// `(ptr, len, phase) -> status`: a reducer reduces an item list ([`super::Phase`],
    /// [`super::status`]).
    pub const REDUCE: &str = "estate_reduce";
    /// `() -> flags`: a reducer's [`super::flags`] (optional; 0 without it).
    pub const REDUCER_FLAGS: &str = "estate_reducer_flags";
    /// `(ptr, len) -> status`: a reducer turns its combined partial into the answer
    /// (optional; the identity without it).
    pub const FINISH: &str = "estate_finish";
    /// `(ptr, len) -> status`: an NF is built from its configuration.
    pub const NF_INIT: &str = "estate_nf_init";
    /// `(ptr, len) -> verdict`: an NF handles one packet record ([`super::Verdict`]).
    pub const ON_PACKET: &str = "estate_on_packet";
    /// `(ptr, len, brought) -> status`: a flow moved to this node ([`super::Brought`];
    /// optional).
    pub const ON_FLOW_MOVED: &str = "estate_on_flow_moved";
    /// `(len) -> ptr`: an NF's buffer of at least `len` bytes for packet records, kept
    /// by the guest across packets (optional; [`super::ALLOC_FAILED`] on failure). The
    /// host asks again only for a longer record, and otherwise writes each record
    /// there, instead of an `estate_alloc` per packet.
    pub const PACKET_BUFFER: &str = "estate_packet_buffer";
    /// `(ptr, len, count) -> status`: an NF handles a batch of `count` packet records in
    /// its packet buffer, writing each one's verdict into the batch
    /// ([`super::batch`]; optional, and used only with [`PACKET_BUFFER`]).
    pub const ON_PACKETS: &str = "estate_on_packets";

    /// Every export name above.
    pub const ALL: [&str; 11] = [
        MEMORY,
        ABI_VERSION,
        ALLOC,
        REDUCE,
        REDUCER_FLAGS,
        FINISH,
        NF_INIT,
        ON_PACKET,
        ON_FLOW_MOVED,
        PACKET_BUFFER,
        ON_PACKETS,
    ];
}

/// A batch of packets for `estate_on_packets`: `count` verdict bytes, `count` scan
/// counts (`u32`), then the `count` packet records back to back. The host fills the
/// verdict bytes with [`batch::PENDING`]; the guest writes each packet's [`Verdict`]
/// code there once it has handled the packet, in order. A scan count is the number of
/// matches of the NF's payload matcher ([`matcher::SCAN_PAYLOADS`]) in the packet's
/// payload, [`batch::NOT_SCANNED`] without one.
pub mod batch {
    /// A verdict byte of a packet not handled (yet).
    pub const PENDING: u8 = 0xff;
    /// The scan count of a packet when the NF has no payload matcher.
    pub const NOT_SCANNED: u32 = u32::MAX;
    /// The most packets the host puts in one batch.
    pub const MAX_PACKETS: usize = 32;
}

/// Names of the host calls, imported from [`IMPORT_MODULE`].
pub mod import {
    /// `(ptr, len)`: the call's output.
    pub const RESULT: &str = "result";
    /// `() -> i32`: the length of the staged bytes.
    pub const STAGED_LEN: &str = "staged_len";
    /// `(ptr, len)`: copy the staged bytes into guest memory.
    pub const STAGED_READ: &str = "staged_read";
    /// `(key_ptr, key_len) -> i32`: [`super::state_get`].
    pub const STATE_GET: &str = "state_get";
    /// `(key_ptr, key_len, val_ptr, val_len) -> i32`: [`super::state_set`].
    pub const STATE_SET: &str = "state_set";
    /// `(key_ptr, key_len) -> i32`: [`super::state_del`].
    pub const STATE_DEL: &str = "state_del";
    /// `(key_ptr, key_len, delta: i64) -> i64`: the counter's new value.
    pub const COUNTER_ADD: &str = "counter_add";
    /// `(key_ptr, key_len, delta: i64, out_ptr) -> i32`: [`super::counter_try_add`]; the
    /// new value is written at `out_ptr` (8 bytes, little-endian). What the SDK uses: a
    /// refused add is an error for the guest to handle, not a trap.
    pub const COUNTER_TRY_ADD: &str = "counter_try_add";
    /// `(pat_ptr, pat_len, red_ptr, red_len, timeout_ms) -> i32`: [`super::global`].
    pub const GLOBAL: &str = "global";
    /// As [`GLOBAL`], with consistency `all`.
    pub const GLOBAL_ALL: &str = "global_all";
    /// `(pat_ptr, pat_len) -> i64`: the number of keys brought, or [`super::take::ERROR`].
    pub const TAKE: &str = "take";
    /// `() -> i64`: the node's wall clock, ms since the Unix epoch.
    pub const NOW_MS: &str = "now_ms";
    /// `(name_ptr, name_len, delta: i64)`.
    pub const METRIC_ADD: &str = "metric_add";
    /// `(ptr, len)`: an event.
    pub const EMIT: &str = "emit";
    /// `(ptr, len, flags) -> i32`: compiles the patterns encoded at `ptr` (see
    /// [`super::matcher`]) into a matcher the host runs natively; its handle (`>= 0`),
    /// or [`super::matcher::ERROR`] with the message staged.
    pub const MATCHER_NEW: &str = "matcher_new";
    /// `(handle, ptr, len) -> i32`: the number of non-overlapping, leftmost-first
    /// matches of the handle's patterns in `ptr..ptr + len`.
    pub const MATCHER_COUNT: &str = "matcher_count";
    /// `(src_ip, src_port, dst_ip, dst_port) -> i32`: asks the host to rewrite the packet
    /// being handled (only during `estate_on_packet`); [`super::rewrite`]. Addresses are
    /// big-endian `u32`s (`a.b.c.d` is `a << 24 | b << 16 | c << 8 | d`), ports
    /// `0..=65535`.
    pub const PACKET_REWRITE: &str = "packet_rewrite";

    /// Host calls the SDK does not import: `counter_add`, the form that traps the guest
    /// on a refused add (the SDK answers a refusal, through `counter_try_add`), kept for
    /// guests written against the raw ABI.
    pub const LEGACY: [&str; 1] = [COUNTER_ADD];

    /// Every host call name above.
    pub const ALL: [&str; 17] = [
        RESULT,
        STAGED_LEN,
        STAGED_READ,
        STATE_GET,
        STATE_SET,
        STATE_DEL,
        COUNTER_ADD,
        COUNTER_TRY_ADD,
        GLOBAL,
        GLOBAL_ALL,
        TAKE,
        NOW_MS,
        METRIC_ADD,
        EMIT,
        MATCHER_NEW,
        MATCHER_COUNT,
        PACKET_REWRITE,
    ];
}

/// The host's multi-pattern matcher (`matcher_new`, `matcher_count`). Patterns are
/// encoded as a `u32` count, then each as a `u32` length and its bytes; a match is
/// leftmost-first (of patterns matching at the same place, the first configured wins)
/// and the count is of non-overlapping matches, as the `ids` NF counts.
pub mod matcher {
    /// `matcher_new` failed; the message is staged.
    pub const ERROR: i32 = -1;
    /// Flag of `matcher_new`: no prefilter (skip-ahead to rare bytes) before the
    /// automaton; the matches are the same either way.
    pub const NO_PREFILTER: i32 = 1;
    /// Flag of `matcher_new`: the host also scans every packet's payload with this
    /// matcher before a batch reaches the NF, and passes the count in the batch
    /// ([`super::batch`]); one matcher per instance at most.
    pub const SCAN_PAYLOADS: i32 = 2;
    /// Most patterns in one matcher.
    pub const MAX_PATTERNS: u32 = 1024;
    /// Most pattern bytes in one matcher, all patterns together.
    pub const MAX_PATTERN_BYTES: u32 = 64 * 1024;
    /// Most matchers one instance may build.
    pub const MAX_MATCHERS: u32 = 8;
    /// Fuel charged per scanned byte is one per this many bytes (and one per call).
    pub const BYTES_PER_FUEL: u32 = 8;
}

/// Answers of the `packet_rewrite` host call.
pub mod rewrite {
    /// The rewrite is recorded for the packet being handled (replacing an earlier one).
    pub const OK: i32 = 0;
    /// Refused: called outside `estate_on_packet`, or a port outside `0..=65535`.
    /// Nothing recorded, nothing staged.
    pub const ERROR: i32 = 1;
}

/// Bits of `estate_reducer_flags`.
pub mod flags {
    /// No flag set: also the flags of a reducer without `estate_reducer_flags`.
    pub const NONE: i32 = 0;
    /// The reducer is associative and commutative: it can reduce its own partial
    /// results, so it may be pushed down to peers.
    pub const COMBINABLE: i32 = 1;
    /// In phase 0 the reducer reads only its items' values and versions: the host may
    /// pass every item with an empty key, origin and writer. A call on such an input that
    /// fails (status `ERROR`) is repeated with whole items, so an error can name them.
    pub const VALUES_ONLY: i32 = 2;
    /// The reducer also takes its store items as their integer values alone
    /// ([`super::INTS_PHASE`]): where every item is an integer, the host may pass
    /// phase `INTS_PHASE` instead of phase 0. A call on such an input that fails
    /// (status `ERROR`) is repeated with whole items, so an error can name them.
    pub const INTS: i32 = 4;
}

/// Status codes of the entry points: `estate_reduce` and `estate_finish` answer
/// `ITEM`, `NONE`, `ERROR` or `BAD_INPUT`; `estate_nf_init` answers `OK`, `ERROR` or
/// `BAD_INPUT`; `estate_on_flow_moved` answers `OK` or `BAD_INPUT`; `estate_on_packet`
/// answers a [`Verdict`] code or `BAD_INPUT`.
pub mod status {
    /// An item was handed to the host through `estate.result`.
    pub const ITEM: i32 = 0;
    /// The reducer produced no item.
    pub const NONE: i32 = 1;
    /// The call failed; the UTF-8 message was handed over through `estate.result`.
    pub const ERROR: i32 = 2;
    /// The input could not be decoded; the message was handed over through
    /// `estate.result`.
    pub const BAD_INPUT: i32 = 3;
    /// `estate_nf_init` or `estate_on_flow_moved` succeeded.
    pub const OK: i32 = 0;
}

/// Answers of the `state_get` host call.
pub mod state_get {
    /// No such key; nothing staged.
    pub const ABSENT: i32 = 0;
    /// The encoded value is staged.
    pub const FOUND: i32 = 1;
}

/// Answers of the `state_set` host call.
pub mod state_set {
    /// The value was stored.
    pub const OK: i32 = 0;
    /// The node refused the write; the message is staged.
    pub const REFUSED: i32 = 1;
}

/// Answers of the `state_del` host call.
pub mod state_del {
    /// There was no such key.
    pub const ABSENT: i32 = 0;
    /// The key existed and was deleted.
    pub const DELETED: i32 = 1;
}

/// Answers of the `global` and `global_all` host calls.
pub mod global {
    /// The read found nothing to reduce, or the reducer answered no item.
    pub const NONE: i32 = 0;
    /// The answer (an encoded item) is staged.
    pub const ITEM: i32 = 1;
    /// The read failed; the message is staged.
    pub const ERROR: i32 = 2;
}

/// Answers of the `counter_try_add` host call.
pub mod counter_try_add {
    /// Added; the new value is at `out_ptr`.
    pub const OK: i32 = 0;
    /// Refused (not an integer, or an overflow); nothing changed; the message is staged.
    pub const REFUSED: i32 = 1;
}

/// Answers of the `take` host call (other than a count of keys, `>= 0`).
pub mod take {
    /// The take failed; the message is staged.
    pub const ERROR: i64 = -1;
}

/// Tags of the value encoding (`docs/abi.md`, "Encoding"; [`crate::codec::Value`]).
pub mod value_tag {
    /// `Int`: an i64 follows.
    pub const INT: u8 = 0;
    /// `Float`: an f64 follows.
    pub const FLOAT: u8 = 1;
    /// `Text`: a u32 length and UTF-8 bytes follow.
    pub const TEXT: u8 = 2;
    /// `Bytes`: a u32 length and the bytes follow.
    pub const BYTES: u8 = 3;
}

/// An enum whose variants are ABI codes, with `code()` and `from_code()`; each code is
/// written once, in the enum's definition.
macro_rules! abi_codes {
    (
        $(#[$meta:meta])*
        pub enum $name:ident: $repr:ty {
            $($(#[$vmeta:meta])* $variant:ident = $code:literal,)*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            /// Every value, in code order.
            pub const ALL: &[$name] = &[$($name::$variant,)*];

            /// The ABI code.
            pub const fn code(self) -> $repr {
                match self {
                    $($name::$variant => $code,)*
                }
            }

            /// The value of an ABI code; `None` for a code the ABI does not define.
            pub const fn from_code(code: $repr) -> Option<$name> {
                match code {
                    $($code => Some($name::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

abi_codes! {
    /// What a reducer's input items are (the `phase` argument of `estate_reduce`).
    pub enum Phase: i32 {
        /// Items from the state store.
        Items = 0,
        /// Partial results of this same reducer, one per node (push-down, combinable
        /// reducers only): the reducer combines them.
        Partials = 1,
    }
}

/// The `phase` of `estate_reduce` whose input is the integer values of store items
/// alone, 8 bytes each (`i64`, little-endian; [`crate::ints::Ints`]), for a reducer
/// that declared [`flags::INTS`]. It is not a [`Phase`]: a reducer sees such a call
/// through the function it names for it (`reducer!(…, ints = g)`).
pub const INTS_PHASE: i32 = 2;

abi_codes! {
    /// What an NF decides for a packet (the answer of `estate_on_packet`).
    pub enum Verdict: i32 {
        /// Pass the packet on.
        Forward = 0,
        /// Drop the packet.
        Drop = 1,
    }
}

abi_codes! {
    /// How a moved flow's state reached this node (the `brought` argument of
    /// `estate_on_flow_moved`).
    pub enum Brought: i32 {
        /// Copied: the newest value of each key is here; the other nodes keep theirs.
        Copied = 0,
        /// Taken: the other nodes gave their keys up to this node, so every share of the
        /// flow's counters is here now.
        Taken = 1,
        /// The state could not be fetched (e.g. the cluster did not answer): the flow
        /// goes on from whatever this node has.
        Failed = 2,
    }
}

abi_codes! {
    /// Which way a packet travels relative to the flow's first packet (the `direction`
    /// byte of the packet record).
    pub enum Direction: u8 {
        /// Same direction as the packet that opened the flow.
        Forward = 0,
        /// The reply direction.
        Reverse = 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_codes_are_none() {
        for (i, p) in Phase::ALL.iter().enumerate() {
            assert_eq!((p.code(), Phase::from_code(p.code())), (i as i32, Some(*p)));
        }
        for (i, v) in Verdict::ALL.iter().enumerate() {
            assert_eq!((v.code(), Verdict::from_code(v.code())), (i as i32, Some(*v)));
        }
        for (i, b) in Brought::ALL.iter().enumerate() {
            assert_eq!((b.code(), Brought::from_code(b.code())), (i as i32, Some(*b)));
        }
        for (i, d) in Direction::ALL.iter().enumerate() {
            assert_eq!((d.code(), Direction::from_code(d.code())), (i as u8, Some(*d)));
        }
        assert_eq!((Phase::from_code(2), Phase::from_code(-1)), (None, None));
        assert_eq!((Verdict::from_code(2), Verdict::from_code(status::BAD_INPUT)), (None, None));
        assert_eq!(Brought::from_code(3), None);
        assert_eq!(Direction::from_code(2), None);
    }

    #[test]
    fn the_numbers_are_those_of_docs_abi_md() {
        // A change here is a change of the ABI: bump VERSION and docs/abi.md with it.
        assert_eq!(VERSION, 3);
        assert_eq!((status::ITEM, status::NONE, status::ERROR, status::BAD_INPUT, status::OK), (0, 1, 2, 3, 0));
        assert_eq!((flags::NONE, flags::COMBINABLE), (0, 1));
        assert_eq!((state_get::ABSENT, state_get::FOUND), (0, 1));
        assert_eq!((state_set::OK, state_set::REFUSED), (0, 1));
        assert_eq!((state_del::ABSENT, state_del::DELETED), (0, 1));
        assert_eq!((global::NONE, global::ITEM, global::ERROR), (0, 1, 2));
        assert_eq!(take::ERROR, -1);
        assert_eq!((rewrite::OK, rewrite::ERROR), (0, 1));
        assert_eq!((value_tag::INT, value_tag::FLOAT, value_tag::TEXT, value_tag::BYTES), (0, 1, 2, 3));
        assert_eq!(ALLOC_FAILED, 0);
    }

    /// The SDK must spell its import and export names as literals (attributes and
    /// `#[no_mangle]` function names take no constants): check that it spells each one
    /// of the names above, and no other.
    #[test]
    fn the_sdk_imports_and_exports_exactly_these_names() {
        let hostcalls = include_str!("hostcalls.rs");
        let current = import::ALL.len() - import::LEGACY.len();
        let linked = hostcalls.matches("#[link_name = \"").count();
        assert_eq!(linked, current, "one `link_name` per current host call");
        for name in import::ALL {
            let imported = hostcalls.contains(&alloc::format!("#[link_name = \"{name}\"]"));
            assert_eq!(imported, !import::LEGACY.contains(&name), "{name}: imported exactly when current");
        }
        let modules = hostcalls.matches("#[link(wasm_import_module = \"").count();
        let ours = hostcalls.matches(&alloc::format!("#[link(wasm_import_module = \"{IMPORT_MODULE}\")]")).count();
        assert_eq!((modules, ours), (current, current));
        let lib = include_str!("lib.rs");
        for name in export::ALL.iter().filter(|n| **n != export::MEMORY) {
            assert!(lib.contains(&alloc::format!("extern \"C\" fn {name}(")), "{name} is not exported");
        }
        assert_eq!(lib.matches("extern \"C\" fn estate_").count(), export::ALL.len() - 1);
    }
}
