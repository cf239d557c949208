//! `topk`: the 3 items with the largest numeric values (combinable, with finish).
//!
//! Order: larger value first (integers and floats are compared exactly, `Int(2)` equals
//! `Float(2.0)`); equal values by smaller key, then smaller origin, then larger version,
//! then smaller writer, then the value's encoding, so the selection is deterministic. A text, bytes or NaN
//! value is an error naming its key and origin.
//!
//! Partial result: an item whose value is `Value::Bytes` holding at most 3 items, in that
//! order, encoded with `estate_guest::codec::encode_items` (the original items with their
//! key, value, origin, writer and version). Reducing partials decodes and merges them; a partial
//! that does not decode is an error. `finish` renders `Value::Text` with one line per
//! item, `key origin value`, largest first, joined by '\n' (floats always show a decimal
//! point or exponent, e.g. `2.0`).
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::cmp::Ordering;
use estate_guest::codec::{decode_items, encode_items};
use estate_guest::{Item, Phase, ReduceResult, Value};

/// How many items the answer holds.
const K: usize = 3;

fn topk(items: &[Item], phase: Phase) -> ReduceResult {
    let mut top: Vec<Item> = Vec::with_capacity(K + 1);
    for item in items {
        match phase {
            Phase::Items => insert(&mut top, checked(item)?),
            Phase::Partials => {
                for inner in decode(item)? {
                    insert(&mut top, checked(&inner)?);
                }
            }
        }
    }
    if top.is_empty() {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    encode_items(&top, &mut bytes);
    Ok(Some(Item::of(Value::Bytes(bytes))))
}

fn finish(partial: Item) -> ReduceResult {
    let top = decode(&partial)?;
    if top.is_empty() {
        return Ok(None);
    }
    let mut lines = Vec::with_capacity(top.len());
    for item in &top {
        let value = match &checked(item)?.value {
            Value::Int(v) => format!("{v}"),
            // Debug keeps the decimal point: `2.0`, not `2`.
            Value::Float(v) => format!("{v:?}"),
            other => format!("{other:?}"),
        };
        lines.push(format!("{} {} {value}", item.key, item.origin));
    }
    Ok(Some(Item::of(Value::Text(lines.join("\n")))))
}

/// Puts `item` in its place in `top` (kept sorted), if it is among the first `K`.
fn insert(top: &mut Vec<Item>, item: &Item) {
    let at = top.partition_point(|t| rank(t, item) == Ordering::Less);
    if at < K {
        top.insert(at, item.clone());
        top.truncate(K);
    }
}

/// `item` if its value is a number other than NaN.
fn checked(item: &Item) -> Result<&Item, String> {
    let what = match item.value {
        Value::Int(_) => return Ok(item),
        Value::Float(v) if !v.is_nan() => return Ok(item),
        Value::Float(_) => "NaN",
        ref other => other.type_name(),
    };
    Err(format!("topk: {} from {} is {what}, not a number", item.key, item.origin))
}

fn decode(partial: &Item) -> Result<Vec<Item>, String> {
    match &partial.value {
        Value::Bytes(bytes) => decode_items(bytes).map_err(|e| format!("topk: a partial result does not decode: {e}")),
        other => Err(format!("topk: a partial result must be bytes of encoded items, not {}", other.type_name())),
    }
}

/// The answer's order: `Less` means `a` comes first.
fn rank(a: &Item, b: &Item) -> Ordering {
    compare(&b.value, &a.value)
        .then_with(|| a.key.cmp(&b.key))
        .then_with(|| a.origin.cmp(&b.origin))
        .then_with(|| b.version.cmp(&a.version))
        .then_with(|| a.writer.cmp(&b.writer))
        .then_with(|| encoded(&a.value).cmp(&encoded(&b.value)))
}

fn encoded(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    value.encode(&mut out);
    out
}

/// Exact numeric order of two numbers (NaN is rejected before).
fn compare(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        (Value::Float(x), Value::Float(y)) => x.partial_cmp(y).unwrap_or(Ordering::Equal),
        (Value::Int(x), Value::Float(y)) => int_vs_float(*x, *y),
        (Value::Float(x), Value::Int(y)) => int_vs_float(*y, *x).reverse(),
        _ => Ordering::Equal,
    }
}

/// Compares an integer with a float without rounding the integer.
fn int_vs_float(i: i64, f: f64) -> Ordering {
    const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
    if f >= TWO_POW_63 {
        return Ordering::Less;
    }
    if f < -TWO_POW_63 {
        return Ordering::Greater;
    }
    // In range, `as` truncates towards zero exactly, and |f - t| < 1: an integer other
    // than `t` compares with `f` as it compares with `t`.
    let t = f as i64;
    i.cmp(&t).then_with(|| (t as f64).partial_cmp(&f).unwrap_or(Ordering::Equal))
}

estate_guest::reducer!(topk, combinable, finish = finish);
