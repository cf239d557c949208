//! NF configuration text in the form every standard NF uses: one `key = value`
//! setting per line, blank lines and lines starting with `#` skipped; errors name the
//! NF, the line number and the line.
//!
//! ```
//! use estate_guest::config::settings;
//! let mut threshold = None;
//! for setting in settings("my-nf", "# comment\nthreshold = 5\n", "expected `threshold = <n>`") {
//!     let setting = setting?;
//!     match setting.key {
//!         "threshold" => threshold = Some(setting.value.parse::<u32>().map_err(|_| setting.error("not a number"))?),
//!         _ => return Err(setting.error("unknown setting (expected `threshold`)")),
//!     }
//! }
//! assert_eq!(threshold, Some(5));
//! let err = settings("my-nf", "\nthreshold 5", "expected `threshold = <n>`").next().unwrap().unwrap_err();
//! assert_eq!(err, "my-nf: line 2 \"threshold 5\": expected `threshold = <n>`");
//! # Ok::<(), String>(())
//! ```

use alloc::format;
use alloc::string::String;

/// One `key = value` line, both sides trimmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setting<'a> {
    /// The key.
    pub key: &'a str,
    /// The value.
    pub value: &'a str,
    nf: &'a str,
    number: usize,
    line: &'a str,
}

impl Setting<'_> {
    /// An error about this setting: `<nf>: line <n> "<line>": <reason>`.
    pub fn error(&self, reason: &str) -> String {
        format!("{}: line {} {:?}: {reason}", self.nf, self.number, self.line)
    }
}

/// The settings of `config`, in order. A line without `=` is an error (its reason is
/// `expected`, which should say what a line looks like).
pub fn settings<'a>(
    nf: &'a str,
    config: &'a str,
    expected: &'a str,
) -> impl Iterator<Item = Result<Setting<'a>, String>> + 'a {
    config.lines().enumerate().filter_map(move |(index, raw)| {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let number = index + 1;
        Some(match line.split_once('=') {
            Some((key, value)) => Ok(Setting { key: key.trim(), value: value.trim(), nf, number, line }),
            None => Err(Setting { key: "", value: "", nf, number, line }.error(expected)),
        })
    })
}

/// Parses a dotted-quad IPv4 address, `a.b.c.d`: four parts of one to three digits,
/// each at most 255 (no sign, no spaces, nothing after), as NF configurations and
/// stored endpoints write them.
pub fn parse_ipv4(text: &str) -> Option<[u8; 4]> {
    let mut out = [0u8; 4];
    let mut parts = text.split('.');
    for byte in &mut out {
        let part = parts.next()?;
        // Digits only: `u8::from_str` would also take a leading `+`.
        if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *byte = part.parse().ok()?;
    }
    parts.next().is_none().then_some(out)
}

#[cfg(test)]
mod ipv4_tests {
    use super::parse_ipv4;

    #[test]
    fn dotted_quads_parse_and_nothing_else_does() {
        assert_eq!(parse_ipv4("10.0.0.1"), Some([10, 0, 0, 1]));
        assert_eq!(parse_ipv4("255.255.255.255"), Some([255; 4]));
        for bad in
            ["", "10.0.0", "10.0.0.1.2", "10.0.0.256", "+1.0.0.1", "1..0.1", " 10.0.0.1", "0010.0.0.1", "a.b.c.d"]
        {
            assert_eq!(parse_ipv4(bad), None, "{bad:?}");
        }
    }
}
