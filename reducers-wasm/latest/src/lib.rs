//! `latest`: the most recently written item (combinable, no finish).
//!
//! The item with the largest `(version, writer)` wins: a larger version is newer, and
//! equal versions are ordered by writer, as the store orders writes. Two items with equal
//! version and writer (the same write, held twice) are ordered by origin, then key, then
//! the value's encoding, so the answer is always deterministic. Any value type is
//! accepted.
//!
//! Partial result: the winning item itself, unchanged (key, value, origin, writer and
//! version); reducing partials picks the latest of them again, and the combined partial
//! is the answer.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::vec::Vec;
use core::cmp::Ordering;
use estate_guest::{Item, Phase, ReduceResult, Value};

fn latest(items: &[Item], _: Phase) -> ReduceResult {
    Ok(items.iter().max_by(|a, b| order(a, b)).cloned())
}

fn order(a: &Item, b: &Item) -> Ordering {
    (a.version, &a.writer, &a.origin, &a.key)
        .cmp(&(b.version, &b.writer, &b.origin, &b.key))
        .then_with(|| encoded(&a.value).cmp(&encoded(&b.value)))
}

fn encoded(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    value.encode(&mut out);
    out
}

estate_guest::reducer!(latest, combinable);
