//! Built-in reducers: latest, sum, avg, min, max, count, list.
//!
//! Numeric rules: integers stay exact. `sum` of integers is an `i64` computed with
//! checked arithmetic (overflow is an error, never a silent wrap or a float); a sum that
//! mixes integers and floats is a float (documented promotion). `avg` is always a float.
//! `min`/`max` compare integers exactly and mixed numbers as floats, and return the
//! winning item's own value. A text or bytes value given to a numeric reducer is an
//! error naming its key and origin.

use std::fmt;
use std::str::FromStr;

use estate_guest::view::ValueRef;
use estate_guest::{Item, Value};
use serde::{Deserialize, Serialize};

use crate::store::newer;

pub mod registry;

/// A reducer that ships with every node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Builtin {
    /// The item of the newest write: the largest version, equal versions ordered by
    /// writer id, as the store orders writes ([`crate::store::newer`]).
    Latest,
    /// The exact sum of the values.
    Sum,
    /// The mean of the values, as a float.
    Avg,
    /// The smallest value.
    Min,
    /// The largest value.
    Max,
    /// The number of items.
    Count,
    /// Every item with its origin and version, sorted by key, then origin.
    List,
}

impl Builtin {
    /// Every built-in, in documentation order.
    pub const ALL: [Builtin; 7] =
        [Builtin::Latest, Builtin::Sum, Builtin::Avg, Builtin::Min, Builtin::Max, Builtin::Count, Builtin::List];

    /// The reducer's name as users type it.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::Latest => "latest",
            Builtin::Sum => "sum",
            Builtin::Avg => "avg",
            Builtin::Min => "min",
            Builtin::Max => "max",
            Builtin::Count => "count",
            Builtin::List => "list",
        }
    }
}

impl fmt::Display for Builtin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Builtin {
    type Err = String;

    fn from_str(s: &str) -> Result<Builtin, String> {
        Builtin::ALL.into_iter().find(|b| b.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Builtin::ALL.iter().map(|b| b.name()).collect();
            format!("unknown reducer {s:?}; built-in reducers: {}", names.join(", "))
        })
    }
}

/// What a reduction produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Reduced {
    /// No items matched.
    Nothing,
    /// One value (sum, avg, count, min, max).
    Value(Value),
    /// One item (latest).
    Item(Item),
    /// Every item (list).
    Items(Vec<Item>),
}

/// Why a reduction failed.
#[derive(Clone, Debug, PartialEq, thiserror::Error, Serialize, Deserialize)]
pub enum ReduceError {
    /// A numeric reducer met a value that is not a number.
    #[error("{reducer}: {key} from {origin} is {found}, not a number")]
    NotNumeric {
        /// The reducer.
        reducer: String,
        /// The key of the offending item.
        key: String,
        /// Its origin node.
        origin: String,
        /// The type it holds.
        found: String,
    },
    /// An integer sum left the range of i64.
    #[error("sum: i64 overflow (at {key} from {origin})")]
    Overflow {
        /// The key whose value overflowed the running sum.
        key: String,
        /// Its origin node.
        origin: String,
    },
}

enum Num {
    Int(i64),
    Float(f64),
}

fn num(reducer: Builtin, item: &Item) -> Result<Num, ReduceError> {
    match item.value {
        Value::Int(v) => Ok(Num::Int(v)),
        Value::Float(v) => Ok(Num::Float(v)),
        ref other => Err(ReduceError::NotNumeric {
            reducer: reducer.name().into(),
            key: item.key.clone(),
            origin: item.origin.clone(),
            found: other.type_name().into(),
        }),
    }
}

fn as_f64(n: &Num) -> f64 {
    match *n {
        Num::Int(v) => v as f64,
        Num::Float(v) => v,
    }
}

/// Reduces `items` (from any number of nodes) with `reducer`.
pub fn reduce(reducer: Builtin, mut items: Vec<Item>) -> Result<Reduced, ReduceError> {
    if items.is_empty() {
        return Ok(match reducer {
            Builtin::Count => Reduced::Value(Value::Int(0)),
            Builtin::List => Reduced::Items(Vec::new()),
            _ => Reduced::Nothing,
        });
    }
    Ok(match reducer {
        Builtin::Count => Reduced::Value(Value::Int(items.len() as i64)),
        Builtin::List => {
            items.sort_by(|a, b| (&a.key, &a.origin).cmp(&(&b.key, &b.origin)));
            Reduced::Items(items)
        }
        Builtin::Latest => {
            let mut best = items.swap_remove(0);
            for item in items {
                if later(&item, &best) {
                    best = item;
                }
            }
            Reduced::Item(best)
        }
        Builtin::Sum => Reduced::Value(sum(&items)?),
        Builtin::Avg => {
            let mut total = 0.0;
            for item in &items {
                total += as_f64(&num(reducer, item)?);
            }
            Reduced::Value(Value::Float(total / items.len() as f64))
        }
        Builtin::Min | Builtin::Max => {
            Reduced::Value(extreme(reducer, &items)?.map(|item| item.value.clone()).unwrap_or(Value::Int(0)))
        }
    })
}

/// Whether `a` is a later write than `b` ([`newer`] on version and writer). The store
/// never gives two writes the same version and writer; should two items still tie (the
/// same write held twice), the holder, then the key decide, so "latest" never depends
/// on the order the answers arrived in.
fn later(a: &Item, b: &Item) -> bool {
    newer(a.version, &a.writer, b.version, &b.writer)
        || (a.version == b.version && a.writer == b.writer && (&a.origin, &a.key) > (&b.origin, &b.key))
}

/// The item with the smallest (min) or largest (max) value.
fn extreme(reducer: Builtin, items: &[Item]) -> Result<Option<&Item>, ReduceError> {
    let mut best: Option<(Num, &Item)> = None;
    for item in items {
        let n = num(reducer, item)?;
        let better = match &best {
            None => true,
            Some((b, _)) => {
                let ord = match (&n, b) {
                    (Num::Int(x), Num::Int(y)) => x.cmp(y),
                    (x, y) => as_f64(x).total_cmp(&as_f64(y)),
                };
                if reducer == Builtin::Min { ord.is_lt() } else { ord.is_gt() }
            }
        };
        if better {
            best = Some((n, item));
        }
    }
    Ok(best.map(|(_, item)| item))
}

/// One node's share of a pushed-down built-in reduction: small, whatever the number of
/// items it stands for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Partial {
    /// Representative items: the node's sum as one item (sum), its winner (min, max,
    /// latest), or every item (list). Combined by the same reducer.
    Items(Vec<Item>),
    /// The node's count (count): combined by adding.
    Count(u64),
    /// The node's sum and count (avg).
    Avg {
        /// Sum of the node's values.
        sum: f64,
        /// Number of values.
        count: u64,
    },
}

/// Reduces one node's `items` to its [`Partial`] for `reducer`, on that node.
pub fn partial(reducer: Builtin, node: &str, items: Vec<Item>) -> Result<Partial, ReduceError> {
    let mut builder = PartialBuilder::new(reducer, node);
    for item in &items {
        builder.push(&item.key, (&item.value).into(), || &item.writer, item.version)?;
    }
    Ok(builder.finish())
}

/// Builds one node's [`Partial`] from borrowed entries, cloning only what the partial
/// keeps (one item at most, except for `list`), so a push-down read scans the store
/// without copying it.
#[derive(Debug)]
pub struct PartialBuilder<'a> {
    reducer: Builtin,
    node: &'a str,
    count: u64,
    int: i64,
    float: Option<f64>,
    max_version: u64,
    best: Option<Item>,
    list: Vec<Item>,
}

impl<'a> PartialBuilder<'a> {
    /// An empty partial of `reducer` on node `node`.
    pub fn new(reducer: Builtin, node: &'a str) -> Self {
        PartialBuilder { reducer, node, count: 0, int: 0, float: None, max_version: 0, best: None, list: Vec::new() }
    }

    fn item(&self, key: &str, value: ValueRef<'_>, writer: &str, version: u64) -> Item {
        let origin = self.node.to_string();
        Item { key: key.to_string(), value: value.to_value(), origin, writer: writer.to_string(), version }
    }

    fn overflow(&self, key: &str) -> ReduceError {
        ReduceError::Overflow { key: key.to_string(), origin: self.node.to_string() }
    }

    fn num(&self, key: &str, value: ValueRef<'_>) -> Result<Num, ReduceError> {
        match value {
            ValueRef::Int(v) => Ok(Num::Int(v)),
            ValueRef::Float(v) => Ok(Num::Float(v)),
            other => Err(ReduceError::NotNumeric {
                reducer: self.reducer.name().into(),
                key: key.to_string(),
                origin: self.node.to_string(),
                found: other.type_name().into(),
            }),
        }
    }

    /// Adds one entry of this node, with the writer and version of its last write (the
    /// writer is asked for only by the reducers that keep or compare it).
    pub fn push<'w>(
        &mut self,
        key: &str,
        value: ValueRef<'_>,
        writer: impl FnOnce() -> &'w str,
        version: u64,
    ) -> Result<(), ReduceError> {
        self.count += 1;
        self.max_version = self.max_version.max(version);
        match self.reducer {
            Builtin::Count => {}
            Builtin::List => self.list.push(self.item(key, value, writer(), version)),
            // The common case first: an integer added to an integer sum.
            Builtin::Sum if let ValueRef::Int(v) = value => {
                self.int = self.int.checked_add(v).ok_or_else(|| self.overflow(key))?;
            }
            Builtin::Sum | Builtin::Avg => match self.num(key, value)? {
                Num::Int(v) if self.reducer == Builtin::Sum => {
                    self.int = self.int.checked_add(v).ok_or_else(|| self.overflow(key))?;
                }
                n => *self.float.get_or_insert(0.0) += as_f64(&n),
            },
            Builtin::Latest => {
                // As `later`, whose holder is the same for every entry here.
                let writer = writer();
                let later = |b: &Item| (version, writer, key) > (b.version, b.writer.as_str(), b.key.as_str());
                if self.best.as_ref().is_none_or(later) {
                    self.best = Some(self.item(key, value, writer, version));
                }
            }
            Builtin::Min | Builtin::Max => {
                let n = self.num(key, value)?;
                let better = match &self.best {
                    None => true,
                    Some(b) => {
                        let ord = match (&n, &b.value) {
                            (Num::Int(x), Value::Int(y)) => x.cmp(y),
                            (x, Value::Float(y)) => as_f64(x).total_cmp(y),
                            (x, Value::Int(y)) => as_f64(x).total_cmp(&(*y as f64)),
                            _ => unreachable!("only numbers are kept"),
                        };
                        if self.reducer == Builtin::Min { ord.is_lt() } else { ord.is_gt() }
                    }
                };
                if better {
                    self.best = Some(self.item(key, value, writer(), version));
                }
            }
        }
        Ok(())
    }

    /// The partial.
    pub fn finish(self) -> Partial {
        match self.reducer {
            Builtin::Count => Partial::Count(self.count),
            Builtin::Avg => Partial::Avg { sum: self.float.unwrap_or(0.0), count: self.count },
            Builtin::List => Partial::Items(self.list),
            Builtin::Sum if self.count == 0 => Partial::Items(Vec::new()),
            Builtin::Sum => {
                let value = match self.float {
                    None => Value::Int(self.int),
                    Some(f) => Value::Float(f + self.int as f64),
                };
                // The node's own item, made from its entries, as of the newest of them.
                Partial::Items(vec![Item {
                    key: format!("(sum of {} items)", self.count),
                    value,
                    origin: self.node.to_string(),
                    writer: self.node.to_string(),
                    version: self.max_version,
                }])
            }
            Builtin::Latest | Builtin::Min | Builtin::Max => Partial::Items(self.best.into_iter().collect()),
        }
    }
}

/// Combines the partials of every node into the answer, on the requesting node.
pub fn combine(reducer: Builtin, partials: Vec<Partial>) -> Result<Reduced, ReduceError> {
    let mut items = Vec::new();
    let (mut count, mut sum) = (0u64, 0.0);
    for p in partials {
        match p {
            Partial::Items(mut i) => items.append(&mut i),
            Partial::Count(n) => count += n,
            Partial::Avg { sum: s, count: n } => {
                sum += s;
                count += n;
            }
        }
    }
    match reducer {
        Builtin::Count => Ok(Reduced::Value(Value::Int(count as i64))),
        Builtin::Avg if count == 0 => Ok(Reduced::Nothing),
        Builtin::Avg => Ok(Reduced::Value(Value::Float(sum / count as f64))),
        Builtin::Sum => match reduce(reducer, items)? {
            Reduced::Value(v) => Ok(Reduced::Value(v)),
            other => Ok(other),
        },
        _ => reduce(reducer, items),
    }
}

fn sum(items: &[Item]) -> Result<Value, ReduceError> {
    let mut int: i64 = 0;
    let mut float: Option<f64> = None;
    for item in items {
        match num(Builtin::Sum, item)? {
            Num::Int(v) => {
                int = int
                    .checked_add(v)
                    .ok_or_else(|| ReduceError::Overflow { key: item.key.clone(), origin: item.origin.clone() })?;
            }
            Num::Float(v) => *float.get_or_insert(0.0) += v,
        }
    }
    Ok(match float {
        None => Value::Int(int),
        Some(f) => Value::Float(f + int as f64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn it(key: &str, value: Value, origin: &str, version: u64) -> Item {
        written(key, value, origin, origin, version)
    }

    fn written(key: &str, value: Value, origin: &str, writer: &str, version: u64) -> Item {
        Item { key: key.into(), value, origin: origin.into(), writer: writer.into(), version }
    }

    fn ints(values: &[i64]) -> Vec<Item> {
        values.iter().enumerate().map(|(i, v)| it("c", Value::Int(*v), &format!("n{i}"), i as u64)).collect()
    }

    #[test]
    fn sum_is_exact() {
        assert_eq!(reduce(Builtin::Sum, ints(&[1_234_567, 1])).unwrap(), Reduced::Value(Value::Int(1_234_568)));
        assert_eq!(reduce(Builtin::Sum, ints(&[5, 5, 5])).unwrap(), Reduced::Value(Value::Int(15)));
        // Past 2^53 a float sum would be wrong; the integer sum is not.
        let big = (1i64 << 53) + 1;
        assert_eq!(reduce(Builtin::Sum, ints(&[big, 2])).unwrap(), Reduced::Value(Value::Int(big + 2)));
    }

    #[test]
    fn sum_overflow_is_an_error() {
        let err = reduce(Builtin::Sum, ints(&[i64::MAX, 1])).unwrap_err();
        assert!(matches!(err, ReduceError::Overflow { .. }), "{err}");
    }

    #[test]
    fn mixed_sum_promotes_to_float() {
        let mut items = ints(&[1, 2]);
        items.push(it("c", Value::Float(0.5), "n9", 1));
        assert_eq!(reduce(Builtin::Sum, items).unwrap(), Reduced::Value(Value::Float(3.5)));
    }

    #[test]
    fn non_numeric_input_names_key_and_origin() {
        let mut items = ints(&[1]);
        items.push(it("flow:7", Value::Text("x".into()), "node-b", 1));
        for r in [Builtin::Sum, Builtin::Avg, Builtin::Min, Builtin::Max] {
            let msg = reduce(r, items.clone()).unwrap_err().to_string();
            assert!(msg.contains("flow:7") && msg.contains("node-b") && msg.contains("text"), "{msg}");
        }
    }

    #[test]
    fn avg_min_max_count() {
        assert_eq!(reduce(Builtin::Avg, ints(&[1, 2])).unwrap(), Reduced::Value(Value::Float(1.5)));
        assert_eq!(reduce(Builtin::Min, ints(&[3, -7, 2])).unwrap(), Reduced::Value(Value::Int(-7)));
        assert_eq!(reduce(Builtin::Max, ints(&[3, -7, 2])).unwrap(), Reduced::Value(Value::Int(3)));
        let mut mixed = ints(&[3]);
        mixed.push(it("c", Value::Float(3.5), "n9", 0));
        assert_eq!(reduce(Builtin::Max, mixed).unwrap(), Reduced::Value(Value::Float(3.5)));
        assert_eq!(reduce(Builtin::Count, ints(&[3, 3, 3])).unwrap(), Reduced::Value(Value::Int(3)));
        assert_eq!(reduce(Builtin::Count, vec![]).unwrap(), Reduced::Value(Value::Int(0)));
        assert_eq!(reduce(Builtin::Sum, vec![]).unwrap(), Reduced::Nothing);
    }

    #[test]
    fn latest_uses_version_then_writer() {
        let items = vec![
            it("k", Value::Int(1), "a", 10),
            written("k", Value::Int(2), "a", "c", 12),
            written("k", Value::Int(3), "d", "b", 12),
        ];
        let Reduced::Item(item) = reduce(Builtin::Latest, items.clone()).unwrap() else { panic!() };
        assert_eq!((item.value, item.origin.as_str(), item.writer.as_str()), (Value::Int(2), "a", "c"));
        // The answer does not depend on the order the answers arrived in.
        let mut reversed = items;
        reversed.reverse();
        let Reduced::Item(again) = reduce(Builtin::Latest, reversed).unwrap() else { panic!() };
        assert_eq!(again.writer, "c");
        // Pushed down: a node's partial is its own latest by version and writer.
        let held = vec![written("k", Value::Int(5), "a", "b", 12), written("j", Value::Int(6), "a", "c", 12)];
        let Partial::Items(best) = partial(Builtin::Latest, "a", held).unwrap() else { panic!() };
        assert_eq!((&best[0].value, best[0].writer.as_str()), (&Value::Int(6), "c"));
    }

    #[test]
    fn list_is_sorted() {
        let items =
            vec![it("b", Value::Int(1), "x", 1), it("a", Value::Int(2), "y", 1), it("a", Value::Int(3), "x", 1)];
        let Reduced::Items(list) = reduce(Builtin::List, items).unwrap() else { panic!() };
        let order: Vec<_> = list.iter().map(|i| (i.key.as_str(), i.origin.as_str())).collect();
        assert_eq!(order, [("a", "x"), ("a", "y"), ("b", "x")]);
    }

    /// Push-down (partial per node, then combine) gives what fetch-all gives, for every
    /// built-in, over random items spread over random numbers of nodes.
    #[test]
    fn push_down_equals_fetch_all() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for case in 0..300 {
            let nodes = 1 + (next() % 8) as usize;
            let count = (next() % 40) as usize;
            let floats = case % 3 == 0;
            let items: Vec<Item> = (0..count)
                .map(|i| {
                    let v = (next() % 2001) as i64 - 1000;
                    let value = if floats && i % 2 == 0 { Value::Float(v as f64 / 4.0) } else { Value::Int(v) };
                    // A node holds items written on any node (they moved there). A
                    // writer's clock never repeats a version; across writers, versions
                    // tie: every 4 items share one, each with its own writer.
                    let node = next() % nodes as u64;
                    let writer = i as u64 % 4 + next() % 2 * 4;
                    let key = format!("k{}", next() % 10);
                    written(&key, value, &format!("n{node}"), &format!("n{writer}"), i as u64 / 4)
                })
                .collect();
            for b in Builtin::ALL {
                let fetch = reduce(b, items.clone()).unwrap();
                let mut by_node: Vec<Vec<Item>> = vec![Vec::new(); nodes];
                for item in &items {
                    let n: usize = item.origin[1..].parse().unwrap();
                    by_node[n].push(item.clone());
                }
                let partials =
                    by_node.into_iter().enumerate().map(|(n, i)| partial(b, &format!("n{n}"), i).unwrap()).collect();
                let pushed = combine(b, partials).unwrap();
                match (&fetch, &pushed) {
                    (Reduced::Value(Value::Float(a)), Reduced::Value(Value::Float(b))) => {
                        assert!((a - b).abs() <= 1e-9 * a.abs().max(1.0), "case {case}: {a} vs {b}");
                    }
                    (Reduced::Items(a), Reduced::Items(b)) => {
                        // The same items, whatever order each way lists them in.
                        let sorted = |items: &[Item]| {
                            let mut v: Vec<(String, String, u64, String)> = items
                                .iter()
                                .map(|i| (i.key.clone(), i.origin.clone(), i.version, format!("{:?}", i.value)))
                                .collect();
                            v.sort();
                            v
                        };
                        assert_eq!(sorted(a), sorted(b), "case {case}");
                    }
                    _ => assert_eq!(fetch, pushed, "case {case} {b}"),
                }
            }
        }
    }

    #[test]
    fn names_parse() {
        for b in Builtin::ALL {
            assert_eq!(b.name().parse::<Builtin>().unwrap(), b);
        }
        assert!("median".parse::<Builtin>().unwrap_err().contains("sum"));
    }
}
