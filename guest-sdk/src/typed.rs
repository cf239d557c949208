//! Typed state: any serde type kept in the node's store as one value
//! ([`Value::Bytes`], encoded with postcard), so an NF can keep a struct per flow
//! instead of one key per field. `state::get_typed` and `state::set_typed` use these.
//!
//! ```
//! # use estate_guest::typed::{from_value, to_value};
//! #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
//! struct Conn { packets: u32, seen_reply: bool }
//! let v = to_value(&Conn { packets: 3, seen_reply: true }).unwrap();
//! assert_eq!(from_value::<Conn>(&v).unwrap(), Conn { packets: 3, seen_reply: true });
//! ```
//!
//! A typed value moves with its flow like any other (keep it under
//! `flow:<flow>:<name>`); as it is not a counter, merging two copies keeps the newer.

use alloc::format;
use alloc::string::String;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Value;

/// `value` as a store value.
pub fn to_value<T: Serialize>(value: &T) -> Result<Value, String> {
    postcard::to_allocvec(value).map(Value::Bytes).map_err(|e| format!("cannot encode the value: {e}"))
}

/// The `T` a store value holds (written by [`to_value`]).
pub fn from_value<T: DeserializeOwned>(value: &Value) -> Result<T, String> {
    match value {
        Value::Bytes(bytes) => {
            let (decoded, rest) =
                postcard::take_from_bytes(bytes).map_err(|e| format!("not the expected type: {e}"))?;
            if !rest.is_empty() {
                return Err(format!("not the expected type: {} bytes left over", rest.len()));
            }
            Ok(decoded)
        }
        other => Err(format!("a typed value is bytes, this is {}", other.type_name())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Bucket {
        tokens: u64,
        refill_ms: i64,
        sources: Vec<String>,
    }

    #[test]
    fn values_round_trip_and_wrong_types_are_errors() {
        let b = Bucket { tokens: 7, refill_ms: -3, sources: vec!["10.0.0.1".into()] };
        let v = to_value(&b).unwrap();
        assert!(matches!(v, Value::Bytes(_)));
        assert_eq!(from_value::<Bucket>(&v).unwrap(), b);
        // Through the host/guest byte format too.
        let mut buf = Vec::new();
        v.encode(&mut buf);
        assert_eq!(from_value::<Bucket>(&Value::decode_exact(&buf).unwrap()).unwrap(), b);
        assert!(from_value::<Bucket>(&Value::Int(3)).unwrap_err().contains("bytes"));
        assert!(from_value::<u8>(&v).unwrap_err().contains("left over"));
        assert!(from_value::<Bucket>(&Value::Bytes(vec![0xff])).is_err());
    }
}
