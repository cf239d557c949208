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
    /// A pattern without regex syntax (metacharacters escaped at most): matches exactly
    /// that key.
    Exact {
        /// The key.
        key: String,
        /// The pattern as given.
        source: String,
    },
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

impl Pattern {
    /// Compiles `pattern`. A pattern without regex metacharacters is an exact key.
    pub fn new(pattern: &str) -> Result<Pattern, PatternError> {
        if pattern.len() > MAX_PATTERN_LEN {
            return Err(PatternError::TooLong(pattern.len()));
        }
        // One definition of what a literal is, shared with guests (`pattern::exact`).
        if let Some(key) = estate_guest::pattern::literal(pattern) {
            return Ok(Pattern::Exact { key, source: pattern.to_string() });
        }
        if let Some(prefix) = estate_guest::pattern::prefix(pattern) {
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
            Pattern::Exact { key: k, .. } => k == key,
            Pattern::Prefix { prefix, .. } => {
                key.strip_prefix(prefix.as_str()).is_some_and(|rest| !rest.contains('\n'))
            }
            Pattern::Regex { regex, .. } => regex.is_match(key),
        }
    }

    /// The key, if this is an exact-key pattern.
    pub fn exact(&self) -> Option<&str> {
        match self {
            Pattern::Exact { key, .. } => Some(key),
            Pattern::Prefix { .. } | Pattern::Regex { .. } => None,
        }
    }

    /// The literal prefix, if this is a prefix pattern.
    pub fn prefix(&self) -> Option<&str> {
        match self {
            Pattern::Prefix { prefix, .. } => Some(prefix),
            Pattern::Exact { .. } | Pattern::Regex { .. } => None,
        }
    }

    /// The pattern as given.
    pub fn source(&self) -> &str {
        match self {
            Pattern::Exact { source, .. } | Pattern::Prefix { source, .. } | Pattern::Regex { source, .. } => source,
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
    fn escaped_keys_take_the_exact_path_and_keep_their_escapes_on_the_wire() {
        let flow = "6:10.0.0.1:5000-10.0.0.2:443";
        let p = Pattern::new(&regex::escape(flow)).unwrap();
        assert_eq!(p.exact(), Some(flow), "regex::escape's `\\-` is a literal too");
        // What a peer compiles again is still exactly this key, not `.` as any character.
        let again = Pattern::new(p.source()).unwrap();
        assert!(again.matches(flow) && !again.matches("6:10x0.0.1:5000-10.0.0.2:443"));
        let moved = Pattern::new(&estate_guest::pattern::flow_keys(flow)).unwrap();
        assert_eq!(moved.prefix(), Some("flow:6:10.0.0.1:5000-10.0.0.2:443:"));
    }

    #[test]
    fn invalid_and_oversized_patterns_are_errors() {
        assert!(matches!(Pattern::new("flow:("), Err(PatternError::Invalid { .. })));
        assert!(matches!(Pattern::new(&"a".repeat(2000)), Err(PatternError::TooLong(2000))));
        assert!(matches!(Pattern::new("(a{1000}){1000}"), Err(PatternError::Invalid { .. })));
    }
}
