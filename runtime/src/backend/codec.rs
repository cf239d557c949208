//! How NF state is laid out in Redis: keys, values, and the glob a global read scans
//! with.
//!
//! A key `K` of tenant `T` written by instance `N` is the Redis key `estate:T:N:K`, so
//! that each instance's local state stays its own (as in the node's store) and a global
//! read finds every instance's copy of `K`. Integers are stored as decimal text, so
//! `INCRBY` works on them; other values carry a type prefix (`f:` float, `s:` text,
//! `b:` bytes), so a text that looks like a number reads back as text.

use estate_guest::Value;

use crate::pattern::Pattern;

/// The Redis key of `key`, for tenant `tenant` and instance `node`.
pub(crate) fn redis_key(tenant: &str, node: &str, key: &str) -> String {
    format!("estate:{tenant}:{node}:{key}")
}

/// Splits a Redis key of `tenant` into (instance, key); `None` for a key of another
/// layout.
pub(crate) fn split_key<'a>(tenant: &str, redis_key: &'a str) -> Option<(&'a str, &'a str)> {
    let rest = redis_key.strip_prefix("estate:")?.strip_prefix(tenant)?.strip_prefix(':')?;
    rest.split_once(':')
}

/// The bytes stored for `value`.
pub(crate) fn encode(value: &Value) -> Vec<u8> {
    match value {
        Value::Int(n) => n.to_string().into_bytes(),
        Value::Float(x) => format!("f:{x:?}").into_bytes(),
        Value::Text(s) => [b"s:", s.as_bytes()].concat(),
        Value::Bytes(b) => [b"b:", b.as_slice()].concat(),
    }
}

/// The value of stored bytes. Bytes of another writer (no prefix, not an integer) read
/// as [`Value::Bytes`], so nothing is lost.
pub(crate) fn decode(bytes: &[u8]) -> Value {
    let text = std::str::from_utf8(bytes).ok();
    if let Some(n) = text.and_then(|t| t.parse::<i64>().ok()) {
        return Value::Int(n);
    }
    match bytes.split_at_checked(2) {
        Some((b"f:", rest)) => {
            if let Some(x) = std::str::from_utf8(rest).ok().and_then(|t| t.parse::<f64>().ok()) {
                return Value::Float(x);
            }
        }
        Some((b"s:", rest)) => {
            if let Ok(s) = std::str::from_utf8(rest) {
                return Value::Text(s.to_string());
            }
        }
        Some((b"b:", rest)) => return Value::Bytes(rest.to_vec()),
        _ => {}
    }
    Value::Bytes(bytes.to_vec())
}

/// `text` with Redis glob metacharacters escaped.
fn escape_glob(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The `SCAN … MATCH` glob for the keys of `tenant` (any instance) that `pattern` may
/// match: the exact key or literal prefix where the pattern has one, else every key of
/// the tenant (the regular expression then filters what the scan returns; Redis has no
/// regular expressions).
pub(crate) fn scan_glob(tenant: &str, pattern: &Pattern) -> String {
    let base = format!("estate:{}:*:", escape_glob(tenant));
    match (pattern.exact(), pattern.prefix()) {
        (Some(key), _) => base + &escape_glob(key),
        (None, Some(prefix)) => base + &escape_glob(prefix) + "*",
        (None, None) => base + "*",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_back_as_written() {
        let values = [
            Value::Int(-42),
            Value::Int(i64::MAX),
            Value::Float(1.5),
            Value::Float(-0.0),
            Value::Text("12".into()),
            Value::Text(String::new()),
            Value::Bytes(vec![0, 255, b':']),
        ];
        for value in values {
            assert_eq!(decode(&encode(&value)), value);
        }
        assert_eq!(encode(&Value::Int(7)), b"7", "INCRBY needs plain decimal integers");
        assert_eq!(decode(b"written by someone else"), Value::Bytes(b"written by someone else".to_vec()));
        assert_eq!(decode(b"f:not a float"), Value::Bytes(b"f:not a float".to_vec()));
    }

    #[test]
    fn keys_split_back_into_instance_and_key() {
        let key = redis_key("default", "n1", "flow:6-10.0.0.1:80:x");
        assert_eq!(split_key("default", &key), Some(("n1", "flow:6-10.0.0.1:80:x")));
        assert_eq!(split_key("other", &key), None);
        assert_eq!(split_key("default", "unrelated"), None);
    }

    #[test]
    fn globs_narrow_the_scan_as_far_as_the_pattern_allows() {
        let exact = Pattern::new(&estate_guest::pattern::exact("flow:a*b:matches")).unwrap();
        assert_eq!(scan_glob("t", &exact), r"estate:t:*:flow:a\*b:matches");
        let prefix = Pattern::new(&estate_guest::pattern::flow_keys("6-1.2.3.4:5")).unwrap();
        assert!(scan_glob("t", &prefix).ends_with('*'), "{}", scan_glob("t", &prefix));
        let regex = Pattern::new("flow:.*:matches").unwrap();
        assert_eq!(scan_glob("t", &regex), "estate:t:*:*");
    }
}
