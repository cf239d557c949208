//! `union`: the set of distinct text values (combinable, no finish).
//!
//! Every value must be text; any other value is an error naming its key and origin. A
//! value is split on '\n' and each line counts as one member, so a value containing
//! '\n' contributes several members (an empty value contributes the empty string).
//!
//! Partial result and answer: an item whose value is `Value::Text` holding the distinct
//! members sorted (by bytes) and joined by '\n'. Reducing partials splits each on '\n'
//! and merges the members the same way; a non-text partial is an error.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::collections::BTreeSet;
use alloc::format;
use alloc::vec::Vec;
use estate_guest::{Item, Phase, ReduceResult, Value};

fn union(items: &[Item], phase: Phase) -> ReduceResult {
    if items.is_empty() {
        return Ok(None);
    }
    let mut members = BTreeSet::new();
    for item in items {
        let Value::Text(text) = &item.value else {
            let what = item.value.type_name();
            return Err(match phase {
                Phase::Items => format!("union: {} from {} is {what}, not text", item.key, item.origin),
                Phase::Partials => format!("union: a partial result is {what}, not text"),
            });
        };
        members.extend(text.split('\n'));
    }
    let members: Vec<&str> = members.into_iter().collect();
    Ok(Some(Item::of(Value::Text(members.join("\n")))))
}

// Splitting and merging the joined members gives the same set: combinable, and the
// partial is the answer.
estate_guest::reducer!(union, combinable);
