//! Key patterns for global reads and takes, built from keys.
//!
//! A pattern is a regular expression (the Rust `regex` crate's syntax) that must match a
//! whole key. A key used as a pattern as it is matches more than itself wherever it holds
//! regex syntax: the flow key `6:10.0.0.1:5000-10.0.0.2:443` has dots, which match any
//! character. [`exact`] escapes a key into the pattern of exactly that key, the same way
//! `regex::escape` does; [`flow_keys`] is the pattern of every key of a flow's state.
//!
//! [`literal`] and [`prefix`] go the other way, for the node (and
//! [`crate::testing::MemoryState`]): the key, or the key prefix, a pattern stands for when
//! it has no regex syntax, so a store can look it up instead of scanning.
//!
//! ```
//! use estate_guest::pattern;
//! let flow = "6:10.0.0.1:5000-10.0.0.2:443";
//! assert_eq!(pattern::exact("rl:bucket:10.0.0.1"), r"rl:bucket:10\.0\.0\.1");
//! assert_eq!(pattern::flow_keys(flow), r"flow:6:10\.0\.0\.1:5000\-10\.0\.0\.2:443:.*");
//! assert_eq!(pattern::literal(&pattern::exact(flow)).as_deref(), Some(flow));
//! ```

use alloc::string::String;

/// Whether `c` is escaped by [`exact`]: exactly the characters `regex::escape` escapes
/// (`regex_syntax::is_meta_character`).
pub const fn is_meta(c: char) -> bool {
    matches!(
        c,
        '\\' | '.' | '+' | '*' | '?' | '(' | ')' | '|' | '[' | ']' | '{' | '}' | '^' | '$' | '#' | '&' | '-' | '~'
    )
}

/// Whether `c`, unescaped outside a character class, is regex syntax. The other
/// characters [`is_meta`] names (`#`, `&`, `-`, `~`) are syntax only inside a class or in
/// verbose mode, both of which need one of these first.
const fn is_syntax(c: char) -> bool {
    matches!(c, '\\' | '.' | '+' | '*' | '?' | '(' | ')' | '|' | '[' | ']' | '{' | '}' | '^' | '$')
}

/// The pattern that matches exactly `key`: every [`is_meta`] character escaped with a
/// backslash, as `regex::escape(key)` gives.
pub fn exact(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 8);
    push_exact(&mut out, key);
    out
}

/// Appends [`exact`]`(key)` to `out`.
pub fn push_exact(out: &mut String, key: &str) {
    for c in key.chars() {
        if is_meta(c) {
            out.push('\\');
        }
        out.push(c);
    }
}

/// The pattern of every key of `flow`'s state, `flow:<flow>:…`: `flow:<exact(flow)>:.*`.
/// The node brings these keys along when it moves a flow.
pub fn flow_keys(flow: &str) -> String {
    let mut out = String::with_capacity(5 + flow.len() + 8 + 3);
    out.push_str("flow:");
    push_exact(&mut out, flow);
    out.push_str(":.*");
    out
}

/// The key `pattern` matches exactly, if it has no regex syntax: each character stands
/// for itself, or is a backslash followed by an [`is_meta`] character (which stands for
/// that character). `None` for any other pattern. `literal(&exact(key)) == Some(key)`.
pub fn literal(pattern: &str) -> Option<String> {
    let mut key = String::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped) if is_meta(escaped) => key.push(escaped),
                _ => return None,
            },
            c if is_syntax(c) => return None,
            c => key.push(c),
        }
    }
    Some(key)
}

/// The prefix of the keys `pattern` matches, if it is a [`literal`] followed by `.*`
/// (as [`flow_keys`] makes): it matches the keys that start with the prefix and have no
/// newline after it (`.` does not match a newline). `None` for any other pattern.
pub fn prefix(pattern: &str) -> Option<String> {
    // `a\.*` is none: before its `.*` is a lone backslash, which is no literal.
    pattern.strip_suffix(".*").and_then(literal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    /// Keys and the patterns `regex::escape` makes of them.
    const TABLE: &[(&str, &str)] = &[
        ("", ""),
        ("plain:key_1", "plain:key_1"),
        ("6:10.0.0.1:5000-10.0.0.2:443", r"6:10\.0\.0\.1:5000\-10\.0\.0\.2:443"),
        ("rl:bucket:192.168.0.1", r"rl:bucket:192\.168\.0\.1"),
        ("nat:block:7", "nat:block:7"),
        (r"\", r"\\"),
        (".+*?()|[]{}^$#&-~", r"\.\+\*\?\(\)\|\[\]\{\}\^\$\#\&\-\~"),
        ("a b\tc\nd", "a b\tc\nd"),
        ("!\"%',/:;<=>@_`", "!\"%',/:;<=>@_`"),
        ("hé-ß.€", r"hé\-ß\.€"),
    ];

    #[test]
    fn exact_escapes_as_regex_escape_does() {
        for (key, pattern) in TABLE {
            assert_eq!(exact(key), *pattern, "{key:?}");
            assert_eq!(literal(pattern).as_deref(), Some(*key), "{pattern:?}");
        }
        let ascii: String = (0u8..128).map(char::from).collect();
        assert_eq!(exact(&ascii), regex::escape(&ascii));
        for (key, _) in TABLE {
            assert_eq!(exact(key), regex::escape(key));
        }
    }

    #[test]
    fn an_exact_pattern_matches_its_key_and_nothing_else() {
        let keys: Vec<&str> = TABLE.iter().map(|(k, _)| *k).chain(["6:10x0.0.1:5000-10.0.0.2:443", "a"]).collect();
        for key in &keys {
            let re = regex::Regex::new(&alloc::format!("^(?:{})$", exact(key))).unwrap();
            for other in &keys {
                assert_eq!(re.is_match(other), key == other, "{key:?} against {other:?}");
            }
        }
    }

    #[test]
    fn flow_keys_is_the_prefix_of_a_flows_keys() {
        let flow = "6:10.0.0.1:5000-10.0.0.2:443";
        let p = flow_keys(flow);
        assert_eq!(p, r"flow:6:10\.0\.0\.1:5000\-10\.0\.0\.2:443:.*");
        assert_eq!(prefix(&p).as_deref(), Some("flow:6:10.0.0.1:5000-10.0.0.2:443:"));
        let re = regex::Regex::new(&alloc::format!("^(?:{p})$")).unwrap();
        assert!(re.is_match("flow:6:10.0.0.1:5000-10.0.0.2:443:ct"));
        assert!(!re.is_match("flow:6:10.0.0.1:5000-10.0.0.2:4430:ct"));
        assert!(!re.is_match("flow:6:10x0.0.1:5000-10.0.0.2:443:ct"));
    }

    #[test]
    fn patterns_with_regex_syntax_are_no_literal() {
        for p in ["a.b", "a+", "a*", "a?", "(a)", "a|b", "[a]", "a{2}", "^a", "a$", r"a\d", r"a\", r"\n"] {
            assert_eq!(literal(p), None, "{p:?}");
        }
        // Outside a class these are no syntax: literal as they are, or escaped.
        assert_eq!(literal("a-b#c&d~e").as_deref(), Some("a-b#c&d~e"));
        assert_eq!(prefix("flow:.*").as_deref(), Some("flow:"));
        assert_eq!(prefix(".*").as_deref(), Some(""));
        assert_eq!(prefix(r"a\\.*").as_deref(), Some("a\\"));
        for not in [r"a\.*", "a.+", "a|b.*", r"a\d.*", "a"] {
            assert_eq!(prefix(not), None, "{not:?}");
        }
    }
}
