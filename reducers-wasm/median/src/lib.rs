//! `median`: the median of numeric values (not combinable: it runs where all the items
//! are, never pushed down, so it has no partial result).
//!
//! With an odd count the answer is the middle value: an `Int` if every value is an
//! integer, otherwise a `Float`. With an even count it is the mean of the two middle
//! values, always a `Float`. When integers and floats are mixed, the integers are
//! converted to f64 first. A text, bytes or NaN value is an error naming its key and
//! origin.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use estate_guest::{Item, Phase, ReduceResult, Value};

fn median(items: &[Item], phase: Phase) -> ReduceResult {
    if phase == Phase::Partials {
        return Err("median: not combinable, it has no partials to reduce".into());
    }
    if items.is_empty() {
        return Ok(None);
    }
    let mut ints = Vec::with_capacity(items.len());
    let mut floats = Vec::with_capacity(items.len());
    for item in items {
        match item.value {
            Value::Int(v) => ints.push(v),
            Value::Float(v) if !v.is_nan() => floats.push(v),
            ref other => return Err(not_a_number(item, other)),
        }
    }
    let n = items.len();
    let answer = if floats.is_empty() {
        ints.sort_unstable();
        let high = ints[n / 2];
        if n % 2 == 1 {
            Value::Int(high)
        } else {
            // Exact sum in i128; one rounding to f64, then an exact halving.
            Value::Float((i128::from(ints[n / 2 - 1]) + i128::from(high)) as f64 / 2.0)
        }
    } else {
        floats.extend(ints.iter().map(|&v| v as f64));
        floats.sort_unstable_by(f64::total_cmp);
        let high = floats[n / 2];
        if n % 2 == 1 {
            Value::Float(high)
        } else {
            // Halve first, so two huge values cannot overflow to infinity.
            Value::Float(floats[n / 2 - 1] / 2.0 + high / 2.0)
        }
    };
    Ok(Some(Item::of(answer)))
}

fn not_a_number(item: &Item, value: &Value) -> String {
    let what = match value {
        Value::Float(_) => "NaN",
        other => other.type_name(),
    };
    format!("median: {} from {} is {what}, not a number", item.key, item.origin)
}

// Not combinable: a median of medians is not the median.
estate_guest::reducer!(median);
