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
