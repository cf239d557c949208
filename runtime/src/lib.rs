//! estate: state management for elastic network functions.
//!
//! Every node keeps its own state in a local store and answers global reads from its
//! peers over ZeroMQ; NF logic and custom reducers run as sandboxed Wasm guests.
//! See `docs/ARCHITECTURE.md` for the map.
pub mod guests;
pub mod wasm;
