//! `sum`: the exact sum of integer values (combinable). A float, text or bytes value is an error
//! naming its key and origin; an overflow of i64 is an error too.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::format;
use estate_guest::ints::Ints;
use estate_guest::view::{ItemRef, ValueRef};
use estate_guest::{Item, Phase, ReduceResult, Value};

// The items are read in place (`borrowed`): no allocation per item.
fn sum(items: &[ItemRef<'_>], _: Phase) -> ReduceResult {
    if items.is_empty() {
        return Ok(None);
    }
    let mut total: i64 = 0;
    for item in items {
        let ValueRef::Int(v) = item.value else {
            return Err(format!(
                "sum: {} from {} is {}, not an integer",
                item.key,
                item.origin,
                item.value.type_name()
            ));
        };
        total = total.checked_add(v).ok_or_else(|| format!("sum: i64 overflow at {}", item.key))?;
    }
    Ok(Some(Item::of(Value::Int(total))))
}

// Where every item is an integer, the items' values alone: one load per item. An
// overflow is reported again by `sum` on whole items, naming the key.
fn sum_ints(values: Ints<'_>) -> ReduceResult {
    if values.is_empty() {
        return Ok(None);
    }
    let mut total: i64 = 0;
    for v in values {
        total = total.checked_add(v).ok_or("sum: i64 overflow")?;
    }
    Ok(Some(Item::of(Value::Int(total))))
}

// A sum of partial sums is the sum: combinable, and the partial is the answer. It reads
// only values (`values_only`, `ints`): pushed down, it gets no keys, origins or writers,
// and only when it fails does the host run it again on whole items, which its errors
// name.
estate_guest::reducer!(sum, combinable, borrowed, values_only, ints = sum_ints);
