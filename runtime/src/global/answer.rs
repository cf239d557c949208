//! What members answer to a read, and the final reduction of those answers.
//!
//! A fetch-all read gathers items, a push-down read gathers one partial per member, a
//! take gathers the items the members gave up. Reducing them is plain computation:
//! built-ins inline, Wasm reducers through the host (callers run those on a worker).

use estate_guest::{Item, Phase};
use serde::{Deserialize, Serialize};

use crate::global::GlobalError;
use crate::reduce::{self, Builtin, Partial, Reduced};
use crate::store::Moving;
use crate::wasm::{ReducerModule, WasmHost};

/// What a node contributes to a global read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Answer {
    /// Its matching items (fetch-all).
    Items(Vec<Item>),
    /// Its matching items, given up to the requester (take): deleted on this node.
    Taken(Vec<Moving>),
    /// Its partial for a pushed-down built-in.
    Builtin(Partial),
    /// Its partial for a pushed-down Wasm reducer (`None`: it had nothing to reduce).
    Wasm(Option<Item>),
}

const PARTIAL_EXPECTED: &str = "a member sent items where a partial was asked for";

/// Flattens the answers of a fetch-all read into items.
pub fn items_of(parts: Vec<Answer>) -> Result<Vec<Item>, String> {
    let mut items = Vec::new();
    for part in parts {
        match part {
            Answer::Items(mut i) => items.append(&mut i),
            Answer::Taken(taken) => items.extend(taken.into_iter().map(|m| m.item)),
            _ => return Err("a member sent a partial where items were asked for".into()),
        }
    }
    Ok(items)
}

/// The items the members of a take gave up, and how many answers were something else.
pub fn taken_of(parts: Vec<Answer>) -> (Vec<Moving>, usize) {
    let (mut taken, mut strays) = (Vec::new(), 0);
    for part in parts {
        match part {
            Answer::Taken(mut items) => taken.append(&mut items),
            _ => strays += 1,
        }
    }
    (taken, strays)
}

/// Reduces a read's answers with a built-in: the items (fetch-all), or the members'
/// partials (push-down, `remote`).
pub fn finish_builtin(reducer: Builtin, remote: bool, parts: Vec<Answer>) -> Result<Reduced, GlobalError> {
    if !remote {
        let items = items_of(parts).map_err(GlobalError::Invalid)?;
        return Ok(reduce::reduce(reducer, items)?);
    }
    let mut partials = Vec::with_capacity(parts.len());
    for part in parts {
        match part {
            Answer::Builtin(p) => partials.push(p),
            _ => return Err(GlobalError::Invalid(PARTIAL_EXPECTED.into())),
        }
    }
    Ok(reduce::combine(reducer, partials)?)
}

/// Reduces a read's answers with a Wasm reducer: all items at once (fetch-all), or the
/// members' partials combined and finished (push-down, `remote`). Runs guest code: call
/// it off the I/O thread.
pub fn finish_wasm(
    host: &WasmHost,
    module: &ReducerModule,
    remote: bool,
    parts: Vec<Answer>,
) -> Result<Option<Item>, String> {
    if !remote {
        return host.reduce_all(module, &items_of(parts)?).map_err(|e| e.to_string());
    }
    let mut partials = Vec::new();
    for part in parts {
        match part {
            Answer::Wasm(Some(item)) => partials.push(item),
            Answer::Wasm(None) => {}
            _ => return Err(PARTIAL_EXPECTED.into()),
        }
    }
    if partials.is_empty() {
        return Ok(None);
    }
    match host.reduce(module, &partials, Phase::Partials).map_err(|e| e.to_string())? {
        Some(item) => host.finish(module, item).map_err(|e| e.to_string()),
        None => Ok(None),
    }
}
