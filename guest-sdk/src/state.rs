//! The node's state and services as an NF sees them: the [`State`] trait, and on wasm32
//! `HostState`, its implementation over the host calls.
//!
//! An NF written against `State` (its logic takes `&mut impl State`) runs unchanged as a
//! guest, with `HostState`, and natively, e.g. in unit tests with
//! [`crate::testing::MemoryState`] or in a host that links the NF as a library with a
//! `State` of its own.

use crate::Error;
use crate::codec::{Item, Value};

/// The node's state and services, for NFs. Keys and values live in the node's local
/// store (the NF's tenant); [`State::global`] and [`State::take`] reach the whole
/// cluster.
pub trait State {
    /// The value at `key`, if any.
    fn get(&mut self, key: &str) -> Result<Option<Value>, Error>;

    /// Sets `key` to `value`; [`Error::Refused`] says why the node refused (e.g. its
    /// store is full).
    fn set(&mut self, key: &str, value: Value) -> Result<(), Error>;

    /// Deletes `key`; returns whether it existed.
    fn del(&mut self, key: &str) -> Result<bool, Error>;

    /// Adds `delta` to the integer counter `key` (a missing key counts as 0) and returns
    /// the new value; [`Error::Refused`] if the key holds no integer or the sum would
    /// overflow, and nothing changed (on a node this is the `counter_try_add` host call).
    fn counter_add(&mut self, key: &str, delta: i64) -> Result<i64, Error>;

    /// A global read across the cluster: `reducer` (a built-in or loaded reducer name)
    /// over the keys that match `pattern` (a regex over whole keys; see
    /// [`crate::pattern`]) on every member, waiting at most `timeout_ms`. `Ok(None)`: no
    /// item (nothing matched, or the reducer answered none).
    fn global(&mut self, pattern: &str, reducer: &str, timeout_ms: u32) -> Result<Option<Item>, Error>;

    /// [`State::global`] with consistency `all`: an error unless every live member of
    /// the cluster answered within `timeout_ms`.
    fn global_all(&mut self, pattern: &str, reducer: &str, timeout_ms: u32) -> Result<Option<Item>, Error>;

    /// Moves every key matching `pattern` from the other members of the cluster to this
    /// node: the newest version of each is stored here and the members delete theirs.
    /// Returns the number of keys brought.
    fn take(&mut self, pattern: &str) -> Result<u32, Error>;

    /// Milliseconds since the Unix epoch, from the node's clock.
    fn now_ms(&mut self) -> i64;

    /// Adds `delta` to the NF metric `name` (reported by the node).
    fn metric_add(&mut self, name: &str, delta: i64);

    /// Emits an event (an alert, a log line) to the node.
    fn emit(&mut self, event: &str);

    /// The value of type `T` at `key` (stored by [`State::set_typed`]); `Ok(None)` if
    /// there is no such key, [`Error::Typed`] if the value there is not a `T`.
    #[cfg(feature = "typed")]
    fn get_typed<T: serde::de::DeserializeOwned>(&mut self, key: &str) -> Result<Option<T>, Error>
    where
        Self: Sized,
    {
        match self.get(key)? {
            None => Ok(None),
            Some(value) => crate::typed::from_value(&value).map(Some).map_err(Error::Typed),
        }
    }

    /// Stores `value` (any serde type) at `key`, as one bytes value
    /// ([`crate::typed::to_value`]).
    #[cfg(feature = "typed")]
    fn set_typed<T: serde::Serialize>(&mut self, key: &str, value: &T) -> Result<(), Error>
    where
        Self: Sized,
    {
        self.set(key, crate::typed::to_value(value).map_err(Error::Typed)?)
    }
}

/// The node's state through the guest ABI's host calls: the [`State`] of an NF guest.
/// It holds nothing; `HostState.counter_add("k", 1)` is one host call.
#[cfg(target_arch = "wasm32")]
#[derive(Clone, Copy, Debug, Default)]
pub struct HostState;

#[cfg(target_arch = "wasm32")]
mod host {
    use alloc::string::String;
    use alloc::vec::Vec;

    use super::{HostState, State};
    use crate::abi::{self, import};
    use crate::codec::{self, Item, Value};
    use crate::{Error, hostcalls as h};

    /// The staged bytes, as the node's error message.
    fn staged_message() -> String {
        String::from_utf8_lossy(&h::staged()).into_owned()
    }

    /// The answer of `global` or `global_all`.
    fn global_answer(call: &'static str, code: i32) -> Result<Option<Item>, Error> {
        match code {
            abi::global::NONE => Ok(None),
            abi::global::ITEM => {
                let bytes = h::staged();
                let mut r = codec::Reader::new(&bytes);
                Item::decode(&mut r)
                    .and_then(|item| r.finish().map(|()| Some(item)))
                    .map_err(|error| Error::Malformed { call, error })
            }
            abi::global::ERROR => Err(Error::Refused(staged_message())),
            code => Err(Error::UnknownCode { call, code: code.into() }),
        }
    }

    impl State for HostState {
        fn get(&mut self, key: &str) -> Result<Option<Value>, Error> {
            match h::state_get(key) {
                abi::state_get::ABSENT => Ok(None),
                abi::state_get::FOUND => Value::decode_exact(&h::staged())
                    .map(Some)
                    .map_err(|error| Error::Malformed { call: import::STATE_GET, error }),
                code => Err(Error::UnknownCode { call: import::STATE_GET, code: code.into() }),
            }
        }

        fn set(&mut self, key: &str, value: Value) -> Result<(), Error> {
            let mut buf = Vec::new();
            value.encode(&mut buf);
            match h::state_set(key, &buf) {
                abi::state_set::OK => Ok(()),
                abi::state_set::REFUSED => Err(Error::Refused(staged_message())),
                code => Err(Error::UnknownCode { call: import::STATE_SET, code: code.into() }),
            }
        }

        fn del(&mut self, key: &str) -> Result<bool, Error> {
            match h::state_del(key) {
                abi::state_del::ABSENT => Ok(false),
                abi::state_del::DELETED => Ok(true),
                code => Err(Error::UnknownCode { call: import::STATE_DEL, code: code.into() }),
            }
        }

        fn counter_add(&mut self, key: &str, delta: i64) -> Result<i64, Error> {
            let mut value = 0;
            match h::counter_try_add(key, delta, &mut value) {
                abi::counter_try_add::OK => Ok(value),
                abi::counter_try_add::REFUSED => Err(Error::Refused(staged_message())),
                code => Err(Error::UnknownCode { call: import::COUNTER_TRY_ADD, code: code.into() }),
            }
        }

        fn global(&mut self, pattern: &str, reducer: &str, timeout_ms: u32) -> Result<Option<Item>, Error> {
            global_answer(import::GLOBAL, h::global(pattern, reducer, timeout_ms))
        }

        fn global_all(&mut self, pattern: &str, reducer: &str, timeout_ms: u32) -> Result<Option<Item>, Error> {
            global_answer(import::GLOBAL_ALL, h::global_all(pattern, reducer, timeout_ms))
        }

        fn take(&mut self, pattern: &str) -> Result<u32, Error> {
            match h::take(pattern) {
                // More keys than a u32 counts cannot fit a guest's view anyway.
                n if n >= 0 => Ok(u32::try_from(n).unwrap_or(u32::MAX)),
                abi::take::ERROR => Err(Error::Refused(staged_message())),
                code => Err(Error::UnknownCode { call: import::TAKE, code }),
            }
        }

        fn now_ms(&mut self) -> i64 {
            h::now_ms()
        }

        fn metric_add(&mut self, name: &str, delta: i64) {
            h::metric_add(name, delta)
        }

        fn emit(&mut self, event: &str) {
            h::emit(event)
        }
    }
}
