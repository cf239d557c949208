//! `mean`: the arithmetic mean of numeric values, as a `Float` (combinable, with finish).
//!
//! Integers and floats are both accepted (an integer beyond 2^53 is rounded to the nearest
//! f64); a text or bytes value is an error naming its key and origin.
//!
//! Partial result: an item whose value is `Value::Bytes` of exactly 16 bytes, the f64 sum
//! of the values (little-endian) followed by their i64 count (little-endian, at least 1).
//! Reducing partials adds sums and counts; any other partial is an error. `finish` turns
//! the combined partial into `Value::Float(sum / count)`.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use estate_guest::ints::Ints;
use estate_guest::{Item, Phase, ReduceResult, Value};

fn mean(items: &[Item], phase: Phase) -> ReduceResult {
    if items.is_empty() {
        return Ok(None);
    }
    let (mut sum, mut count) = (0.0_f64, 0_i64);
    for item in items {
        let (s, c) = match phase {
            Phase::Items => (number(item)?, 1),
            Phase::Partials => decode(item)?,
        };
        sum += s;
        count = count.checked_add(c).ok_or_else(|| String::from("mean: count overflows i64"))?;
    }
    Ok(Some(Item::of(encode(sum, count))))
}

// Where every item is an integer, their values alone (`ints`), added in the same order
// as `mean` adds them, so the answer is the same to the last bit.
fn mean_ints(values: Ints<'_>) -> ReduceResult {
    if values.is_empty() {
        return Ok(None);
    }
    let sum = values.iter().fold(0.0_f64, |sum, v| sum + v as f64);
    Ok(Some(Item::of(encode(sum, values.len() as i64))))
}

fn finish(partial: Item) -> ReduceResult {
    let (sum, count) = decode(&partial)?;
    Ok(Some(Item::of(Value::Float(sum / count as f64))))
}

fn number(item: &Item) -> Result<f64, String> {
    match item.value {
        Value::Int(v) => Ok(v as f64),
        Value::Float(v) => Ok(v),
        ref other => Err(format!("mean: {} from {} is {}, not a number", item.key, item.origin, other.type_name())),
    }
}

fn encode(sum: f64, count: i64) -> Value {
    let mut bytes = Vec::with_capacity(16);
    bytes.extend_from_slice(&sum.to_le_bytes());
    bytes.extend_from_slice(&count.to_le_bytes());
    Value::Bytes(bytes)
}

fn decode(partial: &Item) -> Result<(f64, i64), String> {
    if let Value::Bytes(b) = &partial.value
        && let (16, Some(sum), Some(count)) = (b.len(), b.first_chunk(), b.last_chunk())
    {
        let count = i64::from_le_bytes(*count);
        if count >= 1 {
            return Ok((f64::from_le_bytes(*sum), count));
        }
    }
    Err(format!(
        "mean: a partial result must be 16 bytes of (f64 sum, i64 count >= 1), not {}",
        describe(&partial.value)
    ))
}

fn describe(value: &Value) -> String {
    match value {
        Value::Bytes(b) if b.len() == 16 => String::from("a count below 1"),
        Value::Bytes(b) => format!("{} bytes", b.len()),
        other => String::from(other.type_name()),
    }
}

// It reads only values (`values_only`, `ints`); its errors name keys and origins, which
// the host passes when it repeats a failed call on whole items.
estate_guest::reducer!(mean, combinable, finish = finish, values_only, ints = mean_ints);
