//! How a guest call fails.

use std::time::Duration;

use wasmtime::{Store, Trap};

use super::*;

/// Why the Wasm engine could not be set up. Nothing was started.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// wasmtime refused the configuration or a host function.
    #[error("setting up the Wasm engine: {0:#}")]
    Engine(wasmtime::Error),
    /// The epoch ticker thread could not be spawned.
    #[error("starting the epoch ticker: {0}")]
    Ticker(std::io::Error),
}

/// Why a guest call failed. The guest's store is discarded; the node is unaffected.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// The module is larger than `Limits::module_bytes`.
    #[error("module of {size} bytes exceeds the module size limit of {limit} bytes")]
    ModuleSize {
        /// The module's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The module is not valid Wasm, or not a guest of the expected kind.
    #[error("invalid guest module: {0}")]
    Invalid(String),
    /// The guest exports a different ABI version.
    #[error("guest ABI version {found}, this host speaks {ABI_VERSION}")]
    AbiVersion {
        /// The version the guest exported.
        found: i32,
    },
    /// The call used up its fuel (`Limits::fuel`).
    #[error("guest ran out of fuel (limit {0} units)")]
    OutOfFuel(u64),
    /// The call ran past its wall-clock deadline (`Limits::wall_time`).
    #[error("guest exceeded its wall-time limit of {0:?}")]
    Timeout(Duration),
    /// The guest tried to grow its memory past `Limits::memory_bytes`, and trapped.
    #[error("guest exceeded its memory limit of {0} bytes")]
    MemoryLimit(usize),
    /// The guest handed back more than `Limits::output_bytes`.
    #[error("guest output of {size} bytes exceeds the output limit of {limit} bytes")]
    OutputLimit {
        /// Bytes the guest tried to hand back.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The guest trapped (`unreachable`, out-of-bounds access, a panic in the guest…).
    #[error("guest trapped: {0}")]
    Trap(String),
    /// The guest returned something the ABI does not allow.
    #[error("guest broke the ABI: {0}")]
    Abi(String),
    /// The guest reported an error of its own (a reducer's `Err`).
    #[error("{0}")]
    Guest(String),
}

pub(crate) fn classify(err: wasmtime::Error, store: &Store<GuestData>, limits: &Limits) -> GuestError {
    if let Some(size) = store.data().output_refused {
        return GuestError::OutputLimit { size, limit: limits.output_bytes };
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => GuestError::OutOfFuel(limits.fuel),
        Some(Trap::Interrupt) => GuestError::Timeout(limits.wall_time),
        Some(Trap::AllocationTooLarge) => GuestError::MemoryLimit(limits.memory_bytes),
        Some(trap) => GuestError::Trap(trap.to_string()),
        None => {
            let text = format!("{err:#}");
            if text.contains("memory") && text.contains("limit") || text.contains("forcing trap when growing") {
                GuestError::MemoryLimit(limits.memory_bytes)
            } else {
                GuestError::Trap(text)
            }
        }
    }
}
