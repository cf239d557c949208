//! The guest modules built from `reducers-wasm/`, `nfs-wasm/` and `guest-c/` by
//! `runtime/build.rs`.
//!
//! Each guest crate appears as a constant holding the path of its `.wasm` file, named
//! after the crate (`reducer-sum` → [`REDUCER_SUM`]), listed in [`ALL`]; each C guest
//! likewise after its file (`guest-c/reducers/sum.c` → [`C_REDUCER_SUM`]), listed in
//! [`C_ALL`]. With `ESTATE_SKIP_GUEST_BUILD` set the guests are not built, [`BUILT`] is
//! false and [`require`] fails.

include!(concat!(env!("OUT_DIR"), "/guests.rs"));

/// Why a guest module could not be had.
#[derive(Debug, thiserror::Error)]
pub enum GuestModuleError {
    /// The build skipped the guests.
    #[error("the wasm32 guests were not built (ESTATE_SKIP_GUEST_BUILD is set)")]
    NotBuilt,
    /// No guest has that name.
    #[error("no guest named {name:?}; built guests: {known}")]
    Unknown {
        /// The name asked for.
        name: String,
        /// The built guests, comma-separated.
        known: String,
    },
    /// The module file could not be read.
    #[error("reading guest {name} at {path}: {source}")]
    Read {
        /// The guest.
        name: String,
        /// Its file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Reads the bytes of the guest module `name` (a crate name such as `reducer_sum`, or a
/// C guest's name such as `c_reducer_sum`).
pub fn require(name: &str) -> Result<Vec<u8>, GuestModuleError> {
    if !BUILT {
        return Err(GuestModuleError::NotBuilt);
    }
    let Some((_, path)) = ALL.iter().chain(C_ALL).find(|(n, _)| *n == name) else {
        let known: Vec<&str> = ALL.iter().chain(C_ALL).map(|(n, _)| *n).collect();
        return Err(GuestModuleError::Unknown { name: name.to_string(), known: known.join(", ") });
    };
    std::fs::read(path).map_err(|source| GuestModuleError::Read {
        name: name.to_string(),
        path: path.to_string(),
        source,
    })
}
