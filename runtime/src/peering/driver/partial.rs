//! A node's partial of a pushed-down Wasm reducer, run on a worker: the matching items
//! in the least the reducer declared it reads.

use estate_guest::Phase;
use estate_guest::codec::Item;

use crate::peering::proto::MatchingItems;
use crate::wasm::{GuestError, ReducerModule, WasmHost};

/// Reduces `items` with `module`: as their integer values alone for a reducer that takes
/// them so (`abi::flags::INTS`) when every item is an integer, else as values and
/// versions for one that reads nothing else (`VALUES_ONLY`), else whole. A reducer that
/// fails on less than whole items runs again on whole items, so its error can name one.
pub(super) fn wasm_partial(
    host: &WasmHost,
    module: &ReducerModule,
    items: &MatchingItems,
) -> Result<Option<Item>, GuestError> {
    let whole = || host.reduce_encoded(module, &items.encode(false), Phase::Items);
    let lessened = match module.ints().then(|| items.encode_ints()).flatten() {
        Some(ints) => host.reduce_ints(module, &ints),
        None if module.values_only() => host.reduce_encoded(module, &items.encode(true), Phase::Items),
        None => return whole(),
    };
    match lessened {
        Err(GuestError::Guest(_)) => whole(),
        reduced => reduced,
    }
}
