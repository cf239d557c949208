//! [`MemoryState`]: a [`State`] in memory, to run an NF's logic natively (unit tests,
//! benchmarks) without a node.
//!
//! ```
//! use estate_guest::testing::MemoryState;
//! use estate_guest::{State, Value, pattern};
//!
//! let mut state = MemoryState { now: 1_000, ..MemoryState::default() };
//! assert_eq!(state.counter_add("flow:f:matches", 2), Ok(2));
//! // The rest of the cluster holds 3 more of the flow's matches.
//! state.remote.insert("flow:f:matches".into(), Value::Int(3));
//! let sum = state.global(&pattern::exact("flow:f:matches"), "sum", 500).unwrap().unwrap();
//! assert_eq!(sum.value, Value::Int(5));
//! assert_eq!(state.reads.len(), 1);
//! state.unreachable = true;
//! assert!(state.global(&pattern::exact("flow:f:matches"), "sum", 500).is_err());
//! ```

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::codec::{Item, Value};
use crate::{Error, State, pattern};

/// One node's state in memory, and the rest of its cluster as one more map. Every field
/// is public: a test sets up what it needs and looks at what the NF did.
///
/// What each call does:
///
/// - `get`, `set`, `del` work on [`MemoryState::values`], the node's local store. No
///   write is ever refused.
/// - `counter_add` adds as the node does: a missing key counts as 0; a key that holds no
///   integer, or a sum that would overflow, is [`Error::Refused`] with the node's message
///   and changes nothing, as on a node.
/// - `now_ms` is [`MemoryState::now`], which only the test moves.
/// - `global` and `global_all` record the read in [`MemoryState::reads`] and then, unless
///   [`MemoryState::unreachable`] is set (then they fail, as with a member that does not
///   answer), reduce the matching keys of [`MemoryState::values`] and of
///   [`MemoryState::remote`] (the other members' keys, all in one map) with `sum` (of
///   integers), `count`, `min` or `max` (of integers). No matching key: `Ok(None)`. The
///   answer is a value-only item, as a node's is. Another reducer is refused.
/// - `take` records the pattern in [`MemoryState::takes`] and then, unless `unreachable`
///   is set, moves the matching keys from `remote` to `values` (a key taken replaces this
///   node's value, as the newer version would) and returns how many it moved.
/// - Patterns: an exact key ([`pattern::exact`]) or a literal prefix followed by `.*`
///   ([`pattern::flow_keys`]); there is no regex engine here, so any other pattern is
///   refused.
/// - `metric_add` adds to [`MemoryState::metrics`]; `emit` appends to
///   [`MemoryState::events`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MemoryState {
    /// The node's local store.
    pub values: BTreeMap<String, Value>,
    /// The keys the other members of the cluster hold, together.
    pub remote: BTreeMap<String, Value>,
    /// The node's clock, ms since the Unix epoch.
    pub now: i64,
    /// When set, global reads and takes fail.
    pub unreachable: bool,
    /// Every global read asked for, in order.
    pub reads: Vec<GlobalRead>,
    /// The pattern of every take asked for, in order.
    pub takes: Vec<String>,
    /// NF metrics.
    pub metrics: BTreeMap<String, i64>,
    /// Events emitted, in order.
    pub events: Vec<String>,
}

/// A global read a [`MemoryState`] was asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobalRead {
    /// The key pattern.
    pub pattern: String,
    /// The reducer name.
    pub reducer: String,
    /// The timeout, ms.
    pub timeout_ms: u32,
    /// Consistency `all` (`global_all`).
    pub all: bool,
}

/// Which keys a pattern matches, for the patterns [`MemoryState`] understands.
enum Keys {
    Exact(String),
    Prefix(String),
}

impl Keys {
    fn of(p: &str) -> Result<Keys, Error> {
        if let Some(key) = pattern::literal(p) {
            return Ok(Keys::Exact(key));
        }
        match pattern::prefix(p) {
            Some(prefix) => Ok(Keys::Prefix(prefix)),
            None => Err(Error::Refused(format!(
                "MemoryState matches exact keys and literal prefixes followed by `.*`, not {p:?}"
            ))),
        }
    }

    fn matches(&self, key: &str) -> bool {
        match self {
            Keys::Exact(k) => k == key,
            Keys::Prefix(prefix) => key.strip_prefix(prefix.as_str()).is_some_and(|rest| !rest.contains('\n')),
        }
    }
}

impl MemoryState {
    /// The integer at the local `key`; `None` if there is none, or not an integer.
    pub fn int(&self, key: &str) -> Option<i64> {
        match self.values.get(key)? {
            Value::Int(n) => Some(*n),
            _ => None,
        }
    }

    /// Local keys that start with `prefix`, in order.
    pub fn keys_with_prefix(&self, prefix: &str) -> Vec<String> {
        self.values.keys().filter(|k| k.starts_with(prefix)).cloned().collect()
    }

    fn read(&mut self, pattern: &str, reducer: &str, timeout_ms: u32, all: bool) -> Result<Option<Item>, Error> {
        self.reads.push(GlobalRead { pattern: pattern.into(), reducer: reducer.into(), timeout_ms, all });
        if self.unreachable {
            return Err(Error::Refused("a member did not answer (MemoryState::unreachable)".into()));
        }
        let keys = Keys::of(pattern)?;
        let matching: Vec<(&String, &Value)> =
            self.values.iter().chain(self.remote.iter()).filter(|(k, _)| keys.matches(k)).collect();
        if matching.is_empty() {
            return Ok(None);
        }
        let int = |(key, value): &(&String, &Value)| match value {
            Value::Int(n) => Ok(*n),
            other => Err(Error::Refused(format!("{reducer}: {key} is {}, not an integer", other.type_name()))),
        };
        let answer = match reducer {
            "count" => matching.len() as i64,
            "sum" => matching.iter().try_fold(0i64, |sum, kv| {
                sum.checked_add(int(kv)?).ok_or_else(|| Error::Refused("sum: i64 overflow".into()))
            })?,
            "min" => matching.iter().map(int).collect::<Result<Vec<_>, _>>()?.into_iter().min().unwrap_or(0),
            "max" => matching.iter().map(int).collect::<Result<Vec<_>, _>>()?.into_iter().max().unwrap_or(0),
            other => {
                return Err(Error::Refused(format!("MemoryState reduces with sum, count, min or max, not {other:?}")));
            }
        };
        Ok(Some(Item::of(Value::Int(answer))))
    }
}

impl State for MemoryState {
    fn get(&mut self, key: &str) -> Result<Option<Value>, Error> {
        Ok(self.values.get(key).cloned())
    }

    fn set(&mut self, key: &str, value: Value) -> Result<(), Error> {
        self.values.insert(key.to_string(), value);
        Ok(())
    }

    fn del(&mut self, key: &str) -> Result<bool, Error> {
        Ok(self.values.remove(key).is_some())
    }

    fn counter_add(&mut self, key: &str, delta: i64) -> Result<i64, Error> {
        let new = match self.values.get(key) {
            None => delta,
            Some(Value::Int(n)) => {
                n.checked_add(delta).ok_or_else(|| Error::Refused(format!("{key}: i64 overflow")))?
            }
            Some(other) => return Err(Error::Refused(format!("{key} holds {}, not an integer", other.type_name()))),
        };
        self.values.insert(key.to_string(), Value::Int(new));
        Ok(new)
    }

    fn global(&mut self, pattern: &str, reducer: &str, timeout_ms: u32) -> Result<Option<Item>, Error> {
        self.read(pattern, reducer, timeout_ms, false)
    }

    fn global_all(&mut self, pattern: &str, reducer: &str, timeout_ms: u32) -> Result<Option<Item>, Error> {
        self.read(pattern, reducer, timeout_ms, true)
    }

    fn take(&mut self, pattern: &str) -> Result<u32, Error> {
        self.takes.push(pattern.into());
        if self.unreachable {
            return Err(Error::Refused("a member did not answer (MemoryState::unreachable)".into()));
        }
        let keys = Keys::of(pattern)?;
        let taken: Vec<String> = self.remote.keys().filter(|k| keys.matches(k)).cloned().collect();
        for key in &taken {
            if let Some(value) = self.remote.remove(key) {
                self.values.insert(key.clone(), value);
            }
        }
        Ok(u32::try_from(taken.len()).unwrap_or(u32::MAX))
    }

    fn now_ms(&mut self) -> i64 {
        self.now
    }

    fn metric_add(&mut self, name: &str, delta: i64) {
        let metric = self.metrics.entry(name.to_string()).or_default();
        *metric = metric.saturating_add(delta);
    }

    fn emit(&mut self, event: &str) {
        self.events.push(event.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn local_calls_behave_like_a_node() {
        let mut s = MemoryState::default();
        assert_eq!(s.get("k"), Ok(None));
        assert_eq!(s.counter_add("k", 5), Ok(5));
        assert_eq!(s.counter_add("k", -7), Ok(-2));
        s.set("t", Value::Text("x".into())).unwrap();
        assert_eq!(s.counter_add("t", 1), Err(Error::Refused("t holds text, not an integer".into())));
        s.set("big", Value::Int(i64::MAX)).unwrap();
        assert_eq!(s.counter_add("big", 1), Err(Error::Refused("big: i64 overflow".into())));
        assert_eq!(s.int("big"), Some(i64::MAX), "a refused add changes nothing");
        assert_eq!((s.del("k"), s.del("k")), (Ok(true), Ok(false)));
        s.now = 42;
        assert_eq!(s.now_ms(), 42);
        s.metric_add("m", 2);
        s.metric_add("m", 3);
        s.emit("hello");
        assert_eq!((s.metrics.get("m"), s.events.as_slice()), (Some(&5), &["hello".to_string()][..]));
    }

    #[test]
    fn global_reads_reduce_local_and_remote_keys() {
        let mut s = MemoryState::default();
        s.counter_add("flow:a:n", 2).unwrap();
        s.counter_add("flow:b:n", 7).unwrap();
        s.remote.insert("flow:a:n".into(), Value::Int(3));
        s.remote.insert("other".into(), Value::Int(100));
        let answer = |s: &mut MemoryState, p: &str, r: &str| s.global(p, r, 10).map(|i| i.map(|i| i.value));
        assert_eq!(answer(&mut s, "flow:a:n", "sum"), Ok(Some(Value::Int(5))));
        assert_eq!(answer(&mut s, "flow:a:n", "count"), Ok(Some(Value::Int(2))));
        assert_eq!(answer(&mut s, "flow:.*", "sum"), Ok(Some(Value::Int(12))));
        assert_eq!(answer(&mut s, "flow:.*", "max"), Ok(Some(Value::Int(7))));
        assert_eq!(answer(&mut s, "flow:.*", "min"), Ok(Some(Value::Int(2))));
        assert_eq!(answer(&mut s, "flow:c:n", "sum"), Ok(None));
        assert!(answer(&mut s, "flow:a:n", "median").is_err());
        assert!(answer(&mut s, "flow:[ab]:n", "sum").is_err(), "no regex engine");
        s.set("flow:a:t", Value::Text("x".into())).unwrap();
        assert!(answer(&mut s, "flow:.*", "sum").is_err());
        assert_eq!(s.global_all("other", "count", 3).unwrap().map(|i| i.value), Some(Value::Int(1)));
        assert_eq!(s.reads.len(), 10);
        assert_eq!(
            s.reads.last(),
            Some(&GlobalRead { pattern: "other".into(), reducer: "count".into(), timeout_ms: 3, all: true })
        );
        s.unreachable = true;
        assert!(answer(&mut s, "flow:a:n", "sum").is_err());
        assert_eq!(s.reads.len(), 11, "a failed read is recorded too");
    }

    #[test]
    fn take_moves_matching_remote_keys_here() {
        let mut s = MemoryState::default();
        s.set("rl:bucket:10.0.0.1", Value::Int(1)).unwrap();
        s.remote.insert("rl:bucket:10.0.0.1".into(), Value::Int(9));
        s.remote.insert("rl:bucket:10.0.0.12".into(), Value::Int(8));
        s.remote.insert("flow:f:ct".into(), Value::Int(1));
        s.remote.insert("flow:f:seen".into(), Value::Int(2));
        assert_eq!(s.take(&pattern::exact("rl:bucket:10.0.0.1")), Ok(1));
        assert_eq!(s.int("rl:bucket:10.0.0.1"), Some(9), "the taken value replaces this node's");
        assert_eq!(s.take(&pattern::flow_keys("f")), Ok(2));
        assert_eq!(s.keys_with_prefix("flow:"), vec!["flow:f:ct".to_string(), "flow:f:seen".to_string()]);
        assert_eq!(s.remote.keys().collect::<Vec<_>>(), vec!["rl:bucket:10.0.0.12"]);
        s.unreachable = true;
        assert!(s.take(&pattern::exact("rl:bucket:10.0.0.12")).is_err());
        assert_eq!(s.takes.len(), 3);
        assert_eq!(s.remote.len(), 1, "a failed take moves nothing");
    }

    #[cfg(feature = "typed")]
    #[test]
    fn typed_values_round_trip_and_mismatches_are_typed_errors() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Conn {
            packets: u32,
        }
        let mut s = MemoryState::default();
        s.set_typed("c", &Conn { packets: 3 }).unwrap();
        assert_eq!(s.get_typed::<Conn>("c"), Ok(Some(Conn { packets: 3 })));
        assert_eq!(s.get_typed::<Conn>("missing"), Ok(None));
        s.set("c", Value::Int(1)).unwrap();
        assert!(matches!(s.get_typed::<Conn>("c"), Err(Error::Typed(_))));
    }
}
