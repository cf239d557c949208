//! `libestate`: estate for native network functions, through a C ABI.
//!
//! Two APIs in one library (`libestate.so`), each with a header in `include/`:
//! - `estate.h`, the explicit API: nodes as handles (`estate_node_start`), status codes,
//!   `estate_last_error`, strings the caller frees with `estate_free_string`.
//! - `estatepp.h`, the prototype's API (`es_init`, `es_set`, `es_get_global`, …): one
//!   node per process, so that programs written for the prototype compile and link
//!   unchanged. It is built on the explicit one ([`compat`]).
//!
//! Every exported function catches panics at the boundary and reports them as a status
//! (or an `"ES_NONE"` answer): nothing unwinds into C.

pub mod api;
pub mod compat;
mod ffi;
