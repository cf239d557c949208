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

#[cfg(test)]
mod tests {
    use estate_guest::Value;
    use estate_guest::abi::{self, flags};

    use super::*;
    use crate::pattern::Pattern;
    use crate::store::{DEFAULT_TENANT, Store};
    use crate::wasm::Limits;

    /// A reducer that declares `flags` and answers, as an integer, the input it got:
    /// `phase * 1,000,000 + its length in bytes`; with `fail_on` set, it fails (status
    /// `ERROR`) in that phase instead.
    fn telltale(flags: i32, fail_on: Option<i32>) -> Vec<u8> {
        let fail = fail_on.map_or(String::new(), |phase| {
            format!("(if (i32.eq (local.get 2) (i32.const {phase})) (then (call $result (i32.const 64) (i32.const 2)) (return (i32.const 2))))")
        });
        format!(
            r#"(module
                (import "estate" "result" (func $result (param i32 i32)))
                (memory (export "memory") 2)
                (data (i32.const 64) "no")
                (global $top (mut i32) (i32.const 1024))
                (func (export "estate_abi_version") (result i32) i32.const {version})
                (func (export "estate_alloc") (param i32) (result i32) (local i32)
                    (local.set 1 (global.get $top))
                    (global.set $top (i32.add (global.get $top) (local.get 0)))
                    (local.get 1))
                (func (export "estate_reducer_flags") (result i32) i32.const {flags})
                (func (export "estate_reduce") (param i32 i32 i32) (result i32)
                    {fail}
                    ;; An item with an empty key, origin and writer at 0: its value at 5.
                    (i64.store (i32.const 5) (i64.add
                        (i64.mul (i64.extend_i32_u (local.get 2)) (i64.const 1000000))
                        (i64.extend_i32_u (local.get 1))))
                    (call $result (i32.const 0) (i32.const 29))
                    i32.const 0))"#,
            version = abi::VERSION,
        )
        .into_bytes()
    }

    fn answer(result: Result<Option<Item>, GuestError>) -> i64 {
        match result {
            Ok(Some(Item { value: Value::Int(v), .. })) => v,
            other => panic!("expected an integer answer, got {other:?}"),
        }
    }

    /// The least input a reducer declared it reads: integer values alone (phase 2,
    /// 8 bytes an item) when every item is an integer, else values only (phase 0, 29
    /// bytes an item), else whole items; and whole items again after a failure on less.
    #[test]
    fn each_reducer_gets_the_least_input_it_declared_and_whole_items_after_a_failure() {
        let host = WasmHost::new(Limits::default()).unwrap();
        let store = Store::new("n1");
        let tenant = store.tenant(DEFAULT_TENANT).unwrap();
        for i in 0..3 {
            tenant.set(&format!("k:{i}"), Value::Int(i)).unwrap();
        }
        let items = MatchingItems::new(Some(tenant.clone()), Pattern::new("k:.*").unwrap(), "n1");
        let whole_len = items.encode(false).len() as i64;
        let values_len = 4 + 3 * 29;
        assert!(whole_len > values_len);
        let run = |flags: i32, fail_on: Option<i32>| {
            let module = host.load_reducer(&telltale(flags, fail_on)).unwrap();
            answer(wasm_partial(&host, &module, &items))
        };
        let (c, v, i) = (flags::COMBINABLE, flags::VALUES_ONLY, flags::INTS);
        assert_eq!(run(c | v | i, None), 2_000_000 + 3 * 8, "integers alone");
        assert_eq!(run(c | v, None), values_len, "values only");
        assert_eq!(run(c | i, None), 2_000_000 + 3 * 8, "integers alone, without VALUES_ONLY");
        assert_eq!(run(c, None), whole_len, "whole items");
        assert_eq!(run(c | v | i, Some(2)), whole_len, "whole items after a failure on integers");
        // Failing on whole items too, it fails.
        let failing = host.load_reducer(&telltale(c | v, Some(0))).unwrap();
        assert!(matches!(wasm_partial(&host, &failing, &items), Err(GuestError::Guest(m)) if m == "no"));

        // One item is not an integer: values only, or whole items.
        tenant.set("k:text", Value::Text("seven".into())).unwrap();
        let whole_len = items.encode(false).len() as i64;
        // A values-only text item: its 5 bytes and their length where an integer's 8 are.
        assert_eq!(run(c | v | i, None), 4 + 3 * 29 + 30, "values only");
        assert_eq!(run(c | i, None), whole_len, "whole items");
    }
}
