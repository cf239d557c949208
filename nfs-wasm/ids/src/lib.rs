//! `ids`: the intrusion detection NF. It scans every packet's payload for a set of byte
//! patterns, counts packets and matches in the node's state, per flow and in total, and
//! raises one alert per flow and node once the flow's match count *across the cluster*
//! reaches a threshold. It only observes: every packet is forwarded.
//!
//! The logic ([`Ids`]) is plain `no_std` Rust that reaches its host only through the
//! SDK's [`State`] trait, so the same code runs in two forms:
//!
//! - as a Wasm guest (`wasm32`): the crate's `cdylib` is an NF on the estate guest ABI,
//!   where the state is the node's, through `estate_guest::HostState`;
//! - natively (any other target): a host links the `rlib` and drives [`Ids`] with a
//!   [`State`] of its own, e.g. to compare both forms on the same traffic (the unit tests
//!   use `estate_guest::testing::MemoryState`).
//!
//! # Configuration
//!
//! UTF-8 text, one `key = value` setting per line; blank lines and lines starting with
//! `#` are ignored:
//!
//! - `pattern = <bytes>` (repeatable, at least one): a byte pattern to look for. The
//!   value is trimmed; `\\` stands for a backslash and `\xHH` for the byte `0xHH`, so
//!   binary patterns and patterns with outer spaces can be written. Empty patterns are
//!   refused.
//! - `threshold = <n>` (at most once, `n >= 1`, default 5): alert when a flow's global
//!   match count reaches `n`.
//! - `prefilter = on|off` (at most once, default `on`): whether the scan first skips
//!   ahead to the rarest bytes of the patterns. That pays where those bytes are rare in
//!   the traffic; where they are common (as in the synthetic generator's lowercase
//!   payloads, where one byte in 13 is a candidate) the plain automaton scan is about
//!   twice as fast, as Wasm and natively. Matches are the same either way.
//! - `scan = host|guest` (at most once, default `host`): in the Wasm form, whether the
//!   host scans the payload with the same automaton compiled natively (the patterns
//!   are registered once, at init, as the NF's payload matcher, which the host runs on
//!   each payload before handing the packet over; `estate_guest::matcher`), or the
//!   guest scans it in Wasm. Natively the scan is native code either way. Matches are
//!   the same.
//!
//! Anything else (an unknown setting, a line without `=`, a bad value, no pattern at all)
//! is a configuration error whose message names the offending line.
//!
//! Matches are counted non-overlapping, leftmost-first: scanning from the start of the
//! payload, the earliest match wins, among matches at the same position the pattern
//! configured first wins, and the scan resumes after the match.
//!
//! # State keys
//!
//! Integer counters in the node's local store (`<flow>` is the packet's flow key):
//!
//! | key                    | added per packet                              |
//! |------------------------|-----------------------------------------------|
//! | `ids:packets`          | 1                                             |
//! | `flow:<flow>:packets`  | 1                                             |
//! | `ids:matches`          | its number of matches (only if > 0)           |
//! | `flow:<flow>:matches`  | its number of matches (only if > 0)           |
//! | `ids:alerts`           | 1 for each alert raised                       |
//!
//! Keys are only written when they change, so a flow without matches has no
//! `flow:<flow>:matches` key.
//!
//! # Alert rule
//!
//! After counting the matches of a packet that has any (for a flow this node has not
//! alerted for yet), the NF needs the flow's global match count: the `sum` of
//! `flow:<flow>:matches` over every node of the cluster (a global read of the key's
//! exact pattern, `estate_guest::pattern::exact`). It estimates it as its own count
//! plus the other nodes' share, and reads the real count (a global read with a timeout
//! of [`GLOBAL_TIMEOUT_MS`]) when that estimate reaches the threshold, so an alert is
//! always confirmed by a fresh read. The other nodes' share is 0 for a flow the fabric
//! never moved (packets not marked moved) and for a flow whose state the host took over
//! when it moved here (every share came along); for a moved flow whose state was copied
//! (or could not be fetched) it is read the first time the flow has matches here after
//! the move, then remembered as the answer minus this node's count.
//! If a read fails (or answers no integer), it uses this node's own count instead. If
//! the node refuses to add to `flow:<flow>:matches` (it holds no integer: written by
//! something else), the packet is not checked against the threshold; a refused add to
//! the other counters only loses that count. When the count is at least
//! the threshold, it emits the event `ids alert flow=<flow> matches=<n>` (`n` the count
//! it compared) and adds 1 to `ids:alerts`. Each node alerts at most once
//! per flow for as long as the NF runs; packets without matches never alert. Given the
//! same packets and the same answers from its environment, the NF does the same writes
//! and raises the same alerts, in the same order.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
// A native build also links the `cdylib` crate type, which needs std's panic handler.
#[cfg(not(target_arch = "wasm32"))]
extern crate std;

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use aho_corasick::{AhoCorasick, MatchKind};
use estate_guest::{Packet, State, Value, Verdict, pattern};

/// How payloads are scanned (`scan = host|guest`).
#[derive(Clone, Debug)]
enum Scanner {
    /// aho-corasick in this code: Wasm code in the Wasm form.
    Here(AhoCorasick),
    /// The host's matcher, with the number of patterns (the Wasm form only).
    #[cfg(target_arch = "wasm32")]
    Host(estate_guest::matcher::Matcher, usize),
}

/// Threshold used when the configuration sets none.
pub const DEFAULT_THRESHOLD: i64 = 5;

/// How long the Wasm form waits for the global read of a flow's match count.
pub const GLOBAL_TIMEOUT_MS: u32 = 500;

/// The IDS: its patterns, its threshold and the flows it has alerted for.
#[derive(Clone, Debug)]
pub struct Ids {
    scanner: Scanner,
    threshold: i64,
    /// Flows this instance has alerted for (ordered, so iteration is deterministic).
    alerted: BTreeSet<String>,
    /// Per flow: the other nodes' share of its match count at the last global read.
    remote: BTreeMap<String, i64>,
    /// The buffer the per-flow keys are built in, kept across packets.
    key: KeyBuf,
}

impl Ids {
    /// Builds the IDS from its configuration (see the crate documentation for the
    /// format); the error names the offending line.
    pub fn from_config(config: &str) -> Result<Ids, String> {
        let mut patterns: Vec<Vec<u8>> = Vec::new();
        let (mut threshold, mut prefilter, mut scan_host) = (None, None, None);
        let expected = "expected `pattern = <bytes>`, `threshold = <n>`, `prefilter = on|off` or `scan = host|guest`";
        for setting in estate_guest::config::settings("ids", config, expected) {
            let setting = setting?;
            let (key, value) = (setting.key, setting.value);
            let bad = |reason: &str| setting.error(reason);
            match key {
                "pattern" => {
                    let pattern = unescape(value).map_err(|e| bad(&e))?;
                    if pattern.is_empty() {
                        return Err(bad("empty pattern"));
                    }
                    patterns.push(pattern);
                }
                "threshold" => {
                    if threshold.is_some() {
                        return Err(bad("threshold given twice"));
                    }
                    match value.parse::<i64>() {
                        Ok(n) if n >= 1 => threshold = Some(n),
                        _ => return Err(bad("threshold must be an integer >= 1")),
                    }
                }
                "prefilter" => two_way(&mut prefilter, key, value, ["on", "off"]).map_err(|e| bad(&e))?,
                "scan" => two_way(&mut scan_host, key, value, ["host", "guest"]).map_err(|e| bad(&e))?,
                _ => return Err(bad("unknown setting (expected `pattern`, `threshold`, `prefilter` or `scan`)")),
            }
        }
        if patterns.is_empty() {
            return Err("ids: no pattern configured (add a line `pattern = <bytes>`)".into());
        }
        let prefilter = prefilter.unwrap_or(true);
        let scanner = match scan_host.unwrap_or(true) {
            #[cfg(target_arch = "wasm32")]
            true => estate_guest::matcher::Matcher::for_payloads(&patterns, prefilter)
                .map(|m| Scanner::Host(m, patterns.len()))
                .map_err(|e| format!("ids: cannot build the pattern matcher: {e}"))?,
            _ => Scanner::Here(
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostFirst)
                    .prefilter(prefilter)
                    .build(&patterns)
                    .map_err(|e| format!("ids: cannot build the pattern matcher: {e}"))?,
            ),
        };
        let threshold = threshold.unwrap_or(DEFAULT_THRESHOLD);
        Ok(Ids { scanner, threshold, alerted: BTreeSet::new(), remote: BTreeMap::new(), key: KeyBuf::default() })
    }

    /// The alert threshold.
    pub fn threshold(&self) -> i64 {
        self.threshold
    }

    /// The number of configured patterns.
    pub fn pattern_count(&self) -> usize {
        match &self.scanner {
            Scanner::Here(matcher) => matcher.patterns_len(),
            #[cfg(target_arch = "wasm32")]
            Scanner::Host(_, n) => *n,
        }
    }

    /// The number of non-overlapping, leftmost-first matches in `payload`.
    pub fn count_matches(&self, payload: &[u8]) -> usize {
        match &self.scanner {
            Scanner::Here(matcher) => matcher.find_iter(payload).count(),
            #[cfg(target_arch = "wasm32")]
            Scanner::Host(matcher, _) => matcher.count(payload),
        }
    }

    /// `flow` moved to this node. If its state was `taken` here, every other node's
    /// share of its count came along (the other nodes hold 0); otherwise what they hold
    /// is not known and the next match asks the cluster.
    pub fn flow_moved(&mut self, flow: &str, taken: bool) {
        match taken {
            true => self.remote.insert(flow.into(), 0),
            false => self.remote.remove(flow),
        };
    }

    /// Handles one packet: counts it and its matches, and alerts per the alert rule.
    /// Always forwards.
    pub fn on_packet(&mut self, p: &Packet<'_>, state: &mut impl State) -> Verdict {
        let matches = self.count_matches(p.payload) as i64;
        count(state, "ids:packets", 1);
        count(state, self.key.flow(p.flow, "packets"), 1);
        if matches > 0 {
            count(state, "ids:matches", matches);
            let key = self.key.flow(p.flow, "matches");
            let Ok(local) = state.counter_add(key, matches) else {
                return Verdict::Forward;
            };
            if self.alerted.contains(p.flow) {
                return Verdict::Forward;
            }
            // The cluster is asked only when the answer could matter: when the estimate
            // reaches the threshold, and for a moved flow the first time it has matches
            // here. A flow the fabric never moved was never counted anywhere else.
            let remote = self.remote.get(p.flow).copied().or((!p.moved).then_some(0));
            let estimate = remote.map(|remote| local + remote);
            let total = match estimate {
                Some(total) if total < self.threshold => total,
                _ => match global_sum(state, key) {
                    Some(total) => {
                        self.remote.insert(p.flow.into(), total - local);
                        total
                    }
                    None => local,
                },
            };
            if total >= self.threshold {
                self.alerted.insert(p.flow.into());
                state.emit(&format!("ids alert flow={} matches={total}", p.flow));
                count(state, "ids:alerts", 1);
            }
        }
        Verdict::Forward
    }
}

/// Adds to a counter kept for the operator; a refused add only loses that count.
fn count(state: &mut impl State, key: &str, delta: i64) {
    let _ = state.counter_add(key, delta);
}

/// The sum of the integer `key` over every node of the cluster (0 if no node has it);
/// `None` if the read failed or answered no integer.
fn global_sum(state: &mut impl State, key: &str) -> Option<i64> {
    match state.global(&pattern::exact(key), "sum", GLOBAL_TIMEOUT_MS) {
        Ok(None) => Some(0),
        Ok(Some(item)) => match item.value {
            Value::Int(n) => Some(n),
            _ => None,
        },
        Err(_) => None,
    }
}

/// One buffer for the per-flow keys of every packet (`flow:<flow>:<what>`, built without
/// the formatting machinery, which costs several times as much as the copies, in Wasm
/// most): once it is long enough, a key costs its copies and no allocation.
#[derive(Clone, Debug, Default)]
struct KeyBuf(String);

impl KeyBuf {
    /// `flow:<flow>:<what>`, in the buffer.
    fn flow(&mut self, flow: &str, what: &str) -> &str {
        self.0.clear();
        for part in ["flow:", flow, ":", what] {
            self.0.push_str(part);
        }
        &self.0
    }
}

/// Decodes a configured pattern: `\\` is a backslash, `\xHH` the byte `0xHH`.
fn unescape(value: &str) -> Result<Vec<u8>, String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        match bytes.get(i + 1) {
            Some(b'\\') => {
                out.push(b'\\');
                i += 2;
            }
            Some(b'x') => {
                let hex = bytes.get(i + 2..i + 4).and_then(|h| core::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(byte) => out.push(byte),
                    None => return Err("`\\x` must be followed by two hex digits".into()),
                }
                i += 4;
            }
            _ => return Err("unknown escape (use `\\\\` or `\\xHH`)".into()),
        }
    }
    Ok(out)
}

/// A setting given at most once with one of two words: `yes` sets `slot` to true,
/// `no` to false.
fn two_way(slot: &mut Option<bool>, key: &str, value: &str, [yes, no]: [&str; 2]) -> Result<(), String> {
    if slot.is_some() {
        return Err(format!("{key} given twice"));
    }
    match value {
        v if v == yes => *slot = Some(true),
        v if v == no => *slot = Some(false),
        _ => return Err(format!("{key} must be `{yes}` or `{no}`")),
    }
    Ok(())
}

/// The Wasm form: [`Ids`] on the node's state, wired to the NF ABI.
#[cfg(target_arch = "wasm32")]
mod guest {
    use alloc::string::String;
    use estate_guest::{Brought, HostState, Nf, Packet, Verdict};

    use crate::Ids;

    /// [`Ids`] as an [`Nf`].
    #[derive(Debug)]
    pub struct IdsNf(Ids);

    impl Nf for IdsNf {
        fn init(config: &str) -> Result<Self, String> {
            Ids::from_config(config).map(IdsNf)
        }

        fn on_packet(&mut self, packet: &Packet<'_>) -> Verdict {
            self.0.on_packet(packet, &mut HostState)
        }

        fn on_flow_moved(&mut self, flow: &str, brought: Brought) {
            self.0.flow_moved(flow, brought == Brought::Taken)
        }
    }
}

#[cfg(target_arch = "wasm32")]
pub use guest::IdsNf;

#[cfg(target_arch = "wasm32")]
estate_guest::nf!(IdsNf);

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;
    use estate_guest::Direction;
    use estate_guest::testing::MemoryState;

    /// A node whose global reads add `others` (the other nodes' matches of each of
    /// `flows`) to its own count.
    fn with_others(others: i64, flows: &[&str]) -> MemoryState {
        let mut state = MemoryState::default();
        set_others(&mut state, others, flows);
        state
    }

    fn set_others(state: &mut MemoryState, others: i64, flows: &[&str]) {
        for flow in flows {
            state.remote.insert(KeyBuf::default().flow(flow, "matches").into(), Value::Int(others));
        }
    }

    fn packet<'a>(flow: &'a str, payload: &'a [u8]) -> Packet<'a> {
        Packet {
            proto: 6,
            src: ([10, 0, 0, 1], 40000),
            dst: ([10, 0, 0, 2], 443),
            direction: Direction::Forward,
            moved: false,
            tcp_flags: 0,
            flow,
            payload,
        }
    }

    #[test]
    fn configuration_parses_and_errors_name_the_line() {
        let ids = Ids::from_config("# rules\npattern = attack\n\n  pattern = \\x00\\\\x  \nthreshold = 3\n").unwrap();
        assert_eq!((ids.pattern_count(), ids.threshold()), (2, 3));
        assert_eq!(ids.count_matches(b"attack \x00\\x attack"), 3);
        assert_eq!(Ids::from_config("pattern = a").unwrap().threshold(), DEFAULT_THRESHOLD);
        for scan in ["host", "guest"] {
            let ids = Ids::from_config(&format!("pattern = ab\nscan = {scan}")).unwrap();
            assert_eq!(ids.count_matches(b"abab"), 2, "scan = {scan}");
        }
        for (config, needle) in [
            ("pattern = a\nthreshold = x", "line 2 \"threshold = x\""),
            ("pattern = a\nthreshold = 0", "threshold = 0"),
            ("pattern = a\nthreshold = 2\nthreshold = 3", "twice"),
            ("pattern = a\nbogus = 1", "line 2 \"bogus = 1\""),
            ("pattern = a\nprefilter = maybe", "`on` or `off`"),
            ("pattern = a\nprefilter = on\nprefilter = off", "twice"),
            ("pattern = a\nscan = gpu", "`host` or `guest`"),
            ("pattern = a\nscan = host\nscan = guest", "twice"),
            ("pattern a", "line 1 \"pattern a\""),
            ("pattern = ", "empty pattern"),
            ("pattern = \\xZZ", "hex digits"),
            ("pattern = \\q", "unknown escape"),
            ("threshold = 5", "no pattern"),
            ("", "no pattern"),
        ] {
            let err = Ids::from_config(config).unwrap_err();
            assert!(err.contains(needle), "{config:?}: {err}");
        }
    }

    #[test]
    fn matches_are_non_overlapping_and_leftmost_first() {
        for prefilter in ["on", "off"] {
            let ids = Ids::from_config(&format!("pattern = abcd\npattern = bc\npattern = aa\nprefilter = {prefilter}"))
                .unwrap();
            assert_eq!(ids.count_matches(b"aaaa"), 2);
            assert_eq!(ids.count_matches(b"abcd"), 1);
            assert_eq!(ids.count_matches(b"xbcabcdbc"), 3);
            assert_eq!(ids.count_matches(b""), 0);
        }
    }

    #[test]
    fn the_prefilter_does_not_change_what_matches() {
        let config =
            |prefilter| format!("pattern = attack\npattern = evil\npattern = \\x00\\xff\nprefilter = {prefilter}");
        let (on, off) = (Ids::from_config(&config("on")).unwrap(), Ids::from_config(&config("off")).unwrap());
        // Pseudo-random payloads over a small alphabet, so patterns occur and overlap.
        let (mut x, mut total): (u32, usize) = (7, 0);
        for _ in 0..2_000 {
            let payload: Vec<u8> = (0..64)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    b"atckevil\x00\xff"[(x >> 16) as usize % 10]
                })
                .collect();
            let n = on.count_matches(&payload);
            assert_eq!(n, off.count_matches(&payload), "{payload:?}");
            total += n;
        }
        assert!(total > 1_000, "the payloads hold matches: {total}");
    }

    #[test]
    fn the_cluster_is_asked_only_when_the_answer_could_matter() {
        let mut ids = Ids::from_config("pattern = evil\nthreshold = 10").unwrap();
        let mut env = with_others(3, &["f1"]);
        let moved = |flow| Packet { moved: true, ..packet(flow, b"evil") };
        ids.on_packet(&moved("f1"), &mut env);
        assert_eq!(env.reads.len(), 1, "first matches of a moved flow: the cluster is asked");
        for _ in 0..5 {
            ids.on_packet(&moved("f1"), &mut env);
        }
        assert_eq!(env.reads.len(), 1, "6 + 3 < 10: the estimate suffices");
        assert!(env.events.is_empty());
        // Another node counted meanwhile: the estimate (7 + 3) reaches the threshold,
        // and the fresh read confirms it with the real share.
        set_others(&mut env, 5, &["f1", "f2", "f3", "f4"]);
        ids.on_packet(&packet("f1", b"evil"), &mut env);
        assert_eq!(env.reads.len(), 2);
        assert_eq!(env.events, vec!["ids alert flow=f1 matches=12".to_string()]);
        // Alerted: no more reads for the flow. A moved flow is asked about again.
        ids.on_packet(&packet("f1", b"evil"), &mut env);
        assert_eq!(env.reads.len(), 2);
        ids.on_packet(&moved("f2"), &mut env);
        ids.on_packet(&moved("f2"), &mut env);
        assert_eq!(env.reads.len(), 3);
        ids.flow_moved("f2", false);
        ids.on_packet(&moved("f2"), &mut env);
        assert_eq!(env.reads.len(), 4, "moved again, copied: the cluster is asked again");
        // Taken: every share is here, nothing to ask.
        ids.flow_moved("f4", true);
        ids.on_packet(&moved("f4"), &mut env);
        assert_eq!(env.reads.len(), 4);
        // A flow never moved: nobody else counted it, no read until the threshold.
        for _ in 0..9 {
            ids.on_packet(&packet("f3", b"evil"), &mut env);
        }
        assert_eq!(env.reads.len(), 4);
        ids.on_packet(&packet("f3", b"evil"), &mut env);
        assert_eq!(env.reads.len(), 5, "the alert is confirmed by a read");
        assert_eq!(env.events.last().unwrap(), "ids alert flow=f3 matches=15");
    }

    #[test]
    fn counts_and_alerts_once_per_flow_on_the_global_count() {
        let mut ids = Ids::from_config("pattern = evil\nthreshold = 4").unwrap();
        // Other nodes have seen 2 matches of every flow (moved flows, so they ask).
        let packet = |flow, payload| Packet { moved: true, ..packet(flow, payload) };
        let mut env = with_others(2, &["f1", "f2"]);
        assert_eq!(ids.on_packet(&packet("f1", b"evil"), &mut env), Verdict::Forward);
        assert!(env.events.is_empty());
        assert_eq!(ids.on_packet(&packet("f1", b"nothing"), &mut env), Verdict::Forward);
        assert_eq!(ids.on_packet(&packet("f1", b"evil evil"), &mut env), Verdict::Forward);
        assert_eq!(env.events, vec!["ids alert flow=f1 matches=5".to_string()]);
        ids.on_packet(&packet("f1", b"evil"), &mut env);
        ids.on_packet(&packet("f2", b"x"), &mut env);
        assert_eq!(env.events.len(), 1);
        let c = |k: &str| env.int(k);
        assert_eq!(c("ids:packets"), Some(5));
        assert_eq!(c("ids:matches"), Some(4));
        assert_eq!(c("ids:alerts"), Some(1));
        assert_eq!(c("flow:f1:packets"), Some(4));
        assert_eq!(c("flow:f1:matches"), Some(4));
        assert_eq!(c("flow:f2:packets"), Some(1));
        assert_eq!(c("flow:f2:matches"), None);
    }

    #[test]
    fn a_failed_global_read_falls_back_to_the_local_count() {
        let mut ids = Ids::from_config("pattern = evil\nthreshold = 2").unwrap();
        let mut env = MemoryState { unreachable: true, ..MemoryState::default() };
        ids.on_packet(&packet("f", b"evil"), &mut env);
        assert!(env.events.is_empty());
        ids.on_packet(&packet("f", b"evil"), &mut env);
        assert_eq!(env.events, vec!["ids alert flow=f matches=2".to_string()]);
    }

    #[test]
    fn the_global_read_sums_exactly_the_flows_match_key() {
        let mut ids = Ids::from_config("pattern = evil").unwrap();
        let flow = "6:10.0.0.1:5000-10.0.0.2:443";
        // Another flow whose key the unescaped pattern would match (`.` is any byte).
        let lookalike = "6:10x0.0.1:5000-10.0.0.2:443";
        let mut env = with_others(4, &[flow, lookalike]);
        ids.on_packet(&Packet { moved: true, ..packet(flow, b"evil") }, &mut env);
        let read = &env.reads[0];
        assert_eq!(read.pattern, "flow:6:10\\.0\\.0\\.1:5000\\-10\\.0\\.0\\.2:443:matches");
        assert_eq!((read.reducer.as_str(), read.timeout_ms, read.all), ("sum", GLOBAL_TIMEOUT_MS, false));
        assert_eq!(env.events, vec![format!("ids alert flow={flow} matches=5")]);
    }
}
