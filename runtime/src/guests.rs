//! The guest modules built from `reducers-wasm/` and `nfs-wasm/` by `runtime/build.rs`.
//!
//! Each guest crate appears as a constant holding the path of its `.wasm` file, named
//! after the crate (`reducer-sum` → [`REDUCER_SUM`]). With `ESTATE_SKIP_GUEST_BUILD`
//! set the guests are not built, [`BUILT`] is false and [`require`] fails.

include!(concat!(env!("OUT_DIR"), "/guests.rs"));

/// Reads the bytes of the guest module `name` (a crate name such as `reducer_sum`).
pub fn require(name: &str) -> anyhow::Result<Vec<u8>> {
    if !BUILT {
        anyhow::bail!("the wasm32 guests were not built (ESTATE_SKIP_GUEST_BUILD is set)");
    }
    let Some((_, path)) = ALL.iter().find(|(n, _)| *n == name) else {
        let known: Vec<&str> = ALL.iter().map(|(n, _)| *n).collect();
        anyhow::bail!("no guest named {name:?}; built guests: {}", known.join(", "));
    };
    std::fs::read(path).map_err(|e| anyhow::anyhow!("reading guest {name} at {path}: {e}"))
}
