//! Key patterns of global reads: a regular expression matched against the whole key,
//! with a fast path for exact keys.

use regex::{Regex, RegexBuilder};

/// Longest pattern accepted, in bytes.
pub const MAX_PATTERN_LEN: usize = 1024;
/// Compiled-size budget of one pattern (regex's `size_limit`), so a hostile pattern
/// cannot make a node build a huge automaton.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A compiled key pattern.
#[derive(Clone, Debug)]
pub enum Pattern {
    /// A pattern without regex metacharacters: matches exactly that key.
    Exact(String),
    /// A literal followed by `.*` (`flow:<escaped flow key>:.*`, how a moved flow's
    /// keys are fetched): the keys that start with `prefix` (and, as `.` does not match
    /// a newline, have none after it). A store can find them without a scan.
    Prefix {
        /// The literal part.
        prefix: String,
        /// The pattern as given.
        source: String,
    },
    /// A regular expression that must match the whole key.
    Regex {
        /// The compiled, anchored expression.
        regex: Regex,
        /// The pattern as given.
        source: String,
    },
}

/// Why a pattern was refused.
#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    /// Longer than [`MAX_PATTERN_LEN`].
    #[error("pattern of {0} bytes is longer than the limit of {MAX_PATTERN_LEN}")]
    TooLong(usize),
    /// Not a valid regular expression, or too large once compiled.
    #[error("invalid pattern {pattern:?}: {reason}")]
    Invalid {
        /// The pattern as given.
        pattern: String,
        /// What the regex compiler said.
        reason: String,
    },
}

/// Outside a character class, only these characters are special.
const META: [char; 14] = ['\\', '.', '+', '*', '?', '(', ')', '|', '[', ']', '{', '}', '^', '$'];

/// The key a pattern stands for if it has no unescaped metacharacter (`flow:10\.0\.0\.1`
/// is the exact key `flow:10.0.0.1`), else `None`.
fn literal(pattern: &str) -> Option<String> {
    let mut key = String::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped) if META.contains(&escaped) => key.push(escaped),
                _ => return None,
            },
            c if META.contains(&c) => return None,
            c => key.push(c),
        }
    }
    Some(key)
}

impl Pattern {
    /// Compiles `pattern`. A pattern without regex metacharacters is an exact key.
    pub fn new(pattern: &str) -> Result<Pattern, PatternError> {
        if pattern.len() > MAX_PATTERN_LEN {
            return Err(PatternError::TooLong(pattern.len()));
        }
        if let Some(key) = literal(pattern) {
            return Ok(Pattern::Exact(key));
        }
        // (`a\.*` is none: before its `.*` is a lone backslash, which is no literal.)
        if let Some(prefix) = pattern.strip_suffix(".*").and_then(literal) {
            return Ok(Pattern::Prefix { prefix, source: pattern.to_string() });
        }
        RegexBuilder::new(&format!("^(?:{pattern})$"))
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map(|regex| Pattern::Regex { regex, source: pattern.to_string() })
            .map_err(|e| PatternError::Invalid { pattern: pattern.to_string(), reason: e.to_string() })
    }

    /// Whether `key` matches.
    pub fn matches(&self, key: &str) -> bool {
        match self {
            Pattern::Exact(k) => k == key,
            Pattern::Prefix { prefix, .. } => {
                key.strip_prefix(prefix.as_str()).is_some_and(|rest| !rest.contains('\n'))
            }
            Pattern::Regex { regex, .. } => regex.is_match(key),
        }
    }

    /// The key, if this is an exact-key pattern.
    pub fn exact(&self) -> Option<&str> {
        match self {
            Pattern::Exact(k) => Some(k),
            Pattern::Prefix { .. } | Pattern::Regex { .. } => None,
        }
    }

    /// The literal prefix, if this is a prefix pattern.
    pub fn prefix(&self) -> Option<&str> {
        match self {
            Pattern::Prefix { prefix, .. } => Some(prefix),
            Pattern::Exact(_) | Pattern::Regex { .. } => None,
        }
    }

    /// The pattern as given.
    pub fn source(&self) -> &str {
        match self {
            Pattern::Exact(k) => k,
            Pattern::Prefix { source, .. } | Pattern::Regex { source, .. } => source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_keys_take_the_exact_path() {
        assert_eq!(Pattern::new("c").unwrap().exact(), Some("c"));
        assert_eq!(Pattern::new("flow_1-a:b").unwrap().exact(), Some("flow_1-a:b"));
        assert!(Pattern::new("flow:.*").unwrap().exact().is_none());
        assert_eq!(Pattern::new(r"flow:6:10\.0\.0\.1:80").unwrap().exact(), Some("flow:6:10.0.0.1:80"));
        assert!(Pattern::new(r"a\d").unwrap().exact().is_none());
    }

    #[test]
    fn regex_matches_the_whole_key() {
        let p = Pattern::new("flow:.*").unwrap();
        assert!(p.matches("flow:1") && p.matches("flow:"));
        assert!(!p.matches("xflow:1"));
        let p = Pattern::new("k.").unwrap();
        assert!(p.matches("k1") && p.matches("k.") && !p.matches("k10"));
        let p = Pattern::new("a|b").unwrap();
        assert!(p.matches("a") && p.matches("b") && !p.matches("ab"));
    }

    #[test]
    fn prefix_patterns_match_like_the_regex_they_are() {
        let p = Pattern::new(r"flow:6:10\.0\.0\.1:80-1\.2\.3\.4:9:.*").unwrap();
        assert_eq!(p.prefix(), Some("flow:6:10.0.0.1:80-1.2.3.4:9:"));
        assert_eq!(Pattern::new("flow:.*").unwrap().prefix(), Some("flow:"));
        assert_eq!(Pattern::new(".*").unwrap().prefix(), Some(""));
        // Not prefixes: an escaped dot before the star, other regex syntax.
        for not in [r"a\.*", "a.+", "a|b.*", r"a\d.*"] {
            assert!(Pattern::new(not).unwrap().prefix().is_none(), "{not}");
        }
        assert_eq!(Pattern::new(r"a\\.*").unwrap().prefix(), Some("a\\"));
        let keys = ["flow:", "flow:1", "flow:1:packets", "flow:1\nx", "xflow:1", "flo", "flow:\n"];
        for source in ["flow:.*", r"flow:1.*", ".*", r"a\\.*"] {
            let (p, regex) = (Pattern::new(source).unwrap(), Regex::new(&format!("^(?:{source})$")).unwrap());
            for k in keys {
                assert_eq!(p.matches(k), regex.is_match(k), "{source} on {k:?}");
            }
        }
    }

    #[test]
    fn invalid_and_oversized_patterns_are_errors() {
        assert!(matches!(Pattern::new("flow:("), Err(PatternError::Invalid { .. })));
        assert!(matches!(Pattern::new(&"a".repeat(2000)), Err(PatternError::TooLong(2000))));
        assert!(matches!(Pattern::new("(a{1000}){1000}"), Err(PatternError::Invalid { .. })));
    }
}
