//! Values as people and C programs write them: parsed from text by one rule, and shown
//! as plain text.

use estate_guest::Value;

/// A value given as text: an integer if it parses as i64, a float if f64, else text.
/// The command line's `set` and the C API's `es_set` use this one rule.
pub fn parse_value(s: &str) -> Value {
    if let Ok(v) = s.parse::<i64>() {
        Value::Int(v)
    } else if let Ok(v) = s.parse::<f64>() {
        Value::Float(v)
    } else {
        Value::Text(s.to_string())
    }
}

/// A value as plain text: integers in decimal, floats in their shortest form that reads
/// back as the same float (`2.5`, `100.0`), text as is, bytes as `0x` and hex.
pub fn plain(value: &Value) -> String {
    match value {
        Value::Int(v) => v.to_string(),
        Value::Float(v) => format!("{v:?}"),
        Value::Text(s) => s.clone(),
        Value::Bytes(b) => format!("0x{}", hex::encode(b)),
    }
}

/// A value as a person writes it: numbers bare (`1234578`, `100.67`), text in double
/// quotes with escapes (`"n2 wrote last"`), bytes as `0x` and hex.
pub fn human(value: &Value) -> String {
    match value {
        Value::Text(s) => format!("{s:?}"),
        other => plain(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_as_int_then_float_then_text() {
        assert_eq!(parse_value("1234567"), Value::Int(1_234_567));
        assert_eq!(parse_value("-5"), Value::Int(-5));
        assert_eq!(parse_value("2.5"), Value::Float(2.5));
        assert_eq!(parse_value("1e3"), Value::Float(1000.0));
        assert_eq!(parse_value("hello"), Value::Text("hello".into()));
        assert_eq!(parse_value("99999999999999999999"), Value::Float(1e20));
    }

    #[test]
    fn plain_text_reads_back_as_the_same_value() {
        for value in [Value::Int(-42), Value::Float(100.0), Value::Float(0.1), Value::Text("a b".into())] {
            assert_eq!(parse_value(&plain(&value)), value, "{value:?}");
        }
        assert_eq!(plain(&Value::Bytes(vec![1, 0xab])), "0x01ab");
    }

    #[test]
    fn people_see_numbers_bare_and_text_quoted() {
        assert_eq!(human(&Value::Int(1_234_578)), "1234578");
        assert_eq!(human(&Value::Float(100.67)), "100.67");
        assert_eq!(human(&Value::Text("n2 wrote \"last\"".into())), "\"n2 wrote \\\"last\\\"\"");
    }
}
