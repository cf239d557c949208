//! `ratelimit`: a rate limiter with one token bucket per source address. Each packet
//! costs one token from the bucket of its source; a packet whose source has no whole
//! token left is dropped. Buckets refill at a configured rate up to a configured burst.
//!
//! The logic ([`RateLimit`]) is plain `no_std` Rust that reaches its host only through
//! the SDK's [`State`] trait, the clock included, so the same code runs as a Wasm guest
//! (`wasm32`, on the node's state and clock through `estate_guest::HostState`) and
//! natively with a clock of the caller's choosing (the unit tests use
//! `estate_guest::testing::MemoryState` and are deterministic).
//!
//! # Configuration
//!
//! UTF-8 text, one `key = value` setting per line; blank lines and lines starting with
//! `#` are ignored. Both settings are required, each at most once:
//!
//! - `rate = <tokens per second>`: the refill rate, a decimal number with at most three
//!   digits after the point (`0.5`, `100`, `2.125`), more than 0 and at most
//!   [`MAX_RATE`];
//! - `burst = <n>`: the bucket size, an integer from 1 to [`MAX_BURST`]. A source seen
//!   for the first time starts with a full bucket.
//!
//! Anything else is a configuration error whose message names the offending line (or the
//! missing setting).
//!
//! # Buckets
//!
//! Tokens are kept in thousandths. On each packet the bucket of the source gains
//! `elapsed ms × rate / 1000` tokens up to `burst`, then the packet takes one token or
//! is dropped. The gain is rounded down to a thousandth of a token: the refill time only
//! advances when at least a thousandth accrued (so slow rates still accrue between
//! close packets), and a remainder below a thousandth is dropped when it does. A
//! clock that went back (e.g. a bucket written by a node whose clock is ahead) refills
//! nothing and restarts the bucket's refill time at the current time.
//!
//! # State keys
//!
//! | key                      | value                                                  |
//! |--------------------------|--------------------------------------------------------|
//! | `rl:bucket:<a.b.c.d>`    | the source's bucket, text `<thousandths of tokens>@<ms>` (the refill time, ms since the Unix epoch) |
//! | `rl:passed`              | packets forwarded (integer)                            |
//! | `rl:dropped`             | packets dropped (integer)                              |
//! | `rl:taken`               | buckets brought here from other nodes (integer)        |
//! | `rl:take_errors`         | moves whose buckets could not be brought (integer)     |
//!
//! A bucket value that does not parse (written by something else), or that the node
//! cannot read back, is replaced by a full bucket. A refused add to a counter only loses
//! that count.
//!
//! # Moved flows
//!
//! Buckets are keyed by source, not by flow, so the host does not move them with a
//! flow's `flow:<flow>:…` keys. Instead, when a flow moves to this node the NF takes the
//! buckets of both endpoints of the flow (a `take` of each bucket's exact key)
//! before the flow's first packet here: whatever the source's bucket held on the node it
//! came from continues here, and the other nodes' copies are deleted (with
//! `--flow-state copy` too: `take` always moves). A taken bucket
//! replaces the one this node may already have had for that source. Both endpoints are
//! taken because the flow key does not say which one is the client; a server shared by
//! many flows therefore has its bucket pulled to wherever one of its flows last moved.
//!
//! The semantics are per node, not global: a source whose flows are handled by several
//! nodes at the same time has one bucket on each of them, and may send up to the rate on
//! each. Without state sharing (`--flow-state off`) nothing is taken and a moved flow's
//! source starts with a fresh, full bucket.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
// A native build also links the `cdylib` crate type, which needs std's panic handler.
#[cfg(not(target_arch = "wasm32"))]
extern crate std;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use estate_guest::config::parse_ipv4;
use estate_guest::{Packet, State, Value, Verdict, pattern};

/// Largest accepted `rate`, in tokens per second.
pub const MAX_RATE: u64 = 1_000_000_000;

/// Largest accepted `burst`, in tokens.
pub const MAX_BURST: u64 = 1_000_000_000;

/// Thousandths of a token per token.
const MILLI: u64 = 1000;

/// A token bucket as stored in the node's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bucket {
    /// Tokens, in thousandths.
    pub millitokens: u64,
    /// When tokens were last added (or the bucket created), ms since the Unix epoch.
    pub at_ms: i64,
}

impl Bucket {
    /// The stored form: text `<millitokens>@<at_ms>`.
    pub fn to_value(self) -> Value {
        Value::Text(format!("{}@{}", self.millitokens, self.at_ms))
    }

    /// Parses the stored form; `None` for anything else.
    pub fn from_value(value: &Value) -> Option<Bucket> {
        let Value::Text(text) = value else { return None };
        let (tokens, at) = text.split_once('@')?;
        Some(Bucket { millitokens: tokens.parse().ok()?, at_ms: at.parse().ok()? })
    }
}

/// The key of the bucket of source `ip`.
pub fn bucket_key(ip: [u8; 4]) -> String {
    format!("rl:bucket:{}.{}.{}.{}", ip[0], ip[1], ip[2], ip[3])
}

/// A pattern that matches exactly the bucket key of `ip` (the dots escaped).
pub fn bucket_pattern(ip: [u8; 4]) -> String {
    pattern::exact(&bucket_key(ip))
}

/// The addresses of the two endpoints of a flow key `proto:a.b.c.d:p-e.f.g.h:q`.
pub fn flow_endpoints(flow: &str) -> Option<([u8; 4], [u8; 4])> {
    let (_proto, rest) = flow.split_once(':')?;
    let (lo, hi) = rest.split_once('-')?;
    let ip = |endpoint: &str| endpoint.rsplit_once(':').and_then(|(ip, _port)| parse_ipv4(ip));
    Some((ip(lo)?, ip(hi)?))
}

/// Parses a decimal with at most three fractional digits into thousandths.
fn parse_milli(text: &str) -> Option<u64> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits(int) || !digits(frac) || frac.len() > 3 || (text.contains('.') && frac.is_empty()) {
        return None;
    }
    let mut milli: u64 = int.parse::<u64>().ok()?.checked_mul(MILLI)?;
    let mut scale = 100;
    for b in frac.bytes() {
        milli = milli.checked_add(u64::from(b - b'0') * scale)?;
        scale /= 10;
    }
    Some(milli)
}

/// The rate limiter: its rate and burst.
#[derive(Clone, Debug)]
pub struct RateLimit {
    /// Refill rate in thousandths of a token per second.
    rate_milli: u64,
    /// Bucket size in tokens.
    burst: u64,
}

impl RateLimit {
    /// Builds the rate limiter from its configuration (see the crate documentation for
    /// the format); the error names the offending line or the missing setting.
    pub fn from_config(config: &str) -> Result<RateLimit, String> {
        let (mut rate, mut burst) = (None, None);
        for setting in estate_guest::config::settings(
            "ratelimit",
            config,
            "expected `rate = <tokens per second>` or `burst = <n>`",
        ) {
            let setting = setting?;
            let (key, value) = (setting.key, setting.value);
            let bad = |reason: &str| setting.error(reason);
            match key {
                "rate" => {
                    if rate.is_some() {
                        return Err(bad("rate given twice"));
                    }
                    match parse_milli(value) {
                        Some(r) if r > 0 && r <= MAX_RATE * MILLI => rate = Some(r),
                        _ => {
                            return Err(bad(&format!(
                                "rate must be a number of tokens per second, more than 0 and at most {MAX_RATE}, \
                                 with at most 3 decimals"
                            )));
                        }
                    }
                }
                "burst" => {
                    if burst.is_some() {
                        return Err(bad("burst given twice"));
                    }
                    match value.parse::<u64>() {
                        Ok(n) if (1..=MAX_BURST).contains(&n) && value.bytes().all(|b| b.is_ascii_digit()) => {
                            burst = Some(n)
                        }
                        _ => return Err(bad(&format!("burst must be an integer from 1 to {MAX_BURST}"))),
                    }
                }
                _ => return Err(bad("unknown setting (expected `rate` or `burst`)")),
            }
        }
        let rate = rate.ok_or("ratelimit: no rate configured (add a line `rate = <tokens per second>`)")?;
        let burst = burst.ok_or("ratelimit: no burst configured (add a line `burst = <n>`)")?;
        Ok(RateLimit { rate_milli: rate, burst })
    }

    /// The refill rate, in thousandths of a token per second.
    pub fn rate_milli(&self) -> u64 {
        self.rate_milli
    }

    /// The bucket size, in tokens.
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// `bucket` refilled up to `now`.
    pub fn refill(&self, bucket: Bucket, now: i64) -> Bucket {
        let cap = self.burst * MILLI;
        let mut b = Bucket { millitokens: bucket.millitokens.min(cap), at_ms: bucket.at_ms };
        if now < b.at_ms || b.millitokens == cap {
            // The clock went back, or the bucket is full: nothing accrues until now.
            b.at_ms = now;
            return b;
        }
        let elapsed = u128::from(now.abs_diff(b.at_ms));
        let accrued = elapsed * u128::from(self.rate_milli) / 1000;
        if accrued > 0 {
            b.millitokens = (u128::from(b.millitokens) + accrued).min(u128::from(cap)) as u64;
            b.at_ms = now;
        }
        b
    }

    /// Handles one packet: refills its source's bucket, then takes a token from it or
    /// drops the packet.
    pub fn on_packet(&mut self, p: &Packet<'_>, state: &mut impl State) -> Verdict {
        let key = bucket_key(p.src.0);
        let now = state.now_ms();
        let stored = state.get(&key).ok().flatten().as_ref().and_then(Bucket::from_value);
        let fresh = Bucket { millitokens: self.burst * MILLI, at_ms: now };
        let mut bucket = self.refill(stored.unwrap_or(fresh), now);
        let verdict = if bucket.millitokens >= MILLI {
            bucket.millitokens -= MILLI;
            Verdict::Forward
        } else {
            Verdict::Drop
        };
        if stored != Some(bucket) {
            // A refused write (the store is full) leaves the old bucket: the verdict
            // stands, the next packet sees the old count.
            let _ = state.set(&key, bucket.to_value());
        }
        count(state, if verdict == Verdict::Forward { "rl:passed" } else { "rl:dropped" }, 1);
        verdict
    }

    /// Called when `flow` moved to this node, before its first packet here: takes the
    /// buckets of both endpoints of the flow from the other nodes.
    pub fn on_flow_moved(&mut self, flow: &str, state: &mut impl State) {
        let Some((a, b)) = flow_endpoints(flow) else { return };
        let mut sources: Vec<[u8; 4]> = alloc::vec![a];
        if b != a {
            sources.push(b);
        }
        for ip in sources {
            match state.take(&bucket_pattern(ip)) {
                Ok(0) => {}
                Ok(n) => count(state, "rl:taken", i64::from(n)),
                Err(_) => count(state, "rl:take_errors", 1),
            }
        }
    }
}

/// Adds to a counter kept for the operator; a refused add only loses that count.
fn count(state: &mut impl State, key: &str, delta: i64) {
    let _ = state.counter_add(key, delta);
}

/// The Wasm form: [`RateLimit`] on the node's state and clock, wired to the NF ABI.
#[cfg(target_arch = "wasm32")]
mod guest {
    use alloc::string::String;
    use estate_guest::{Brought, HostState, Nf, Packet, Verdict};

    use crate::RateLimit;

    /// [`RateLimit`] as an [`Nf`].
    #[derive(Debug)]
    pub struct RateLimitNf(RateLimit);

    impl Nf for RateLimitNf {
        fn init(config: &str) -> Result<Self, String> {
            RateLimit::from_config(config).map(RateLimitNf)
        }

        fn on_packet(&mut self, packet: &Packet<'_>) -> Verdict {
            self.0.on_packet(packet, &mut HostState)
        }

        fn on_flow_moved(&mut self, flow: &str, _: Brought) {
            self.0.on_flow_moved(flow, &mut HostState)
        }
    }
}

#[cfg(target_arch = "wasm32")]
pub use guest::RateLimitNf;

#[cfg(target_arch = "wasm32")]
estate_guest::nf!(RateLimitNf);

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;
    use estate_guest::Direction;
    use estate_guest::testing::MemoryState;

    /// A node whose clock stands at `now`.
    fn at(now: i64) -> MemoryState {
        MemoryState { now, ..MemoryState::default() }
    }

    /// The bucket of `ip` on the node, if there is one that parses.
    fn bucket(state: &MemoryState, ip: [u8; 4]) -> Option<Bucket> {
        Bucket::from_value(state.values.get(&bucket_key(ip))?)
    }

    const A: [u8; 4] = [10, 0, 0, 1];
    const B: [u8; 4] = [10, 0, 0, 2];
    const SERVER: [u8; 4] = [192, 168, 0, 1];

    fn from(src: [u8; 4]) -> Packet<'static> {
        Packet {
            proto: 6,
            src: (src, 40000),
            dst: (SERVER, 443),
            direction: Direction::Forward,
            moved: false,
            tcp_flags: 0,
            flow: "6:10.0.0.1:40000-192.168.0.1:443",
            payload: b"x",
        }
    }

    fn limiter(rate: &str, burst: u64) -> RateLimit {
        RateLimit::from_config(&format!("rate = {rate}\nburst = {burst}\n")).unwrap()
    }

    #[test]
    fn configuration_parses_and_errors_name_the_line() {
        let rl = RateLimit::from_config("# limits\nrate = 2.5\n\n  burst=10  \n").unwrap();
        assert_eq!((rl.rate_milli(), rl.burst()), (2500, 10));
        assert_eq!(limiter("0.001", 1).rate_milli(), 1);
        assert_eq!(limiter("7", 1).rate_milli(), 7000);
        assert_eq!(limiter("1000000000", 1).rate_milli(), MAX_RATE * 1000);
        for (config, needle) in [
            ("rate = 0\nburst = 1", "line 1 \"rate = 0\": rate must be"),
            ("rate = 0.000\nburst = 1", "line 1 \"rate = 0.000\": rate must be"),
            ("rate = 1.2345\nburst = 1", "at most 3 decimals"),
            ("rate = -1\nburst = 1", "line 1 \"rate = -1\""),
            ("rate = 1.\nburst = 1", "line 1 \"rate = 1.\""),
            ("rate = .5\nburst = 1", "line 1 \"rate = .5\""),
            ("rate = fast\nburst = 1", "line 1 \"rate = fast\""),
            ("rate = 1000000001\nburst = 1", "at most 1000000000"),
            ("rate = 1\nburst = 0", "line 2 \"burst = 0\": burst must be an integer from 1"),
            ("rate = 1\nburst = 1.5", "line 2 \"burst = 1.5\""),
            ("rate = 1\nburst = +3", "line 2 \"burst = +3\""),
            ("rate = 1\nburst = 1000000001", "line 2"),
            ("rate = 1\nrate = 2\nburst = 1", "line 2 \"rate = 2\": rate given twice"),
            ("rate = 1\nburst = 1\nburst = 2", "line 3 \"burst = 2\": burst given twice"),
            ("rate = 1\nburst = 1\nceiling = 3", "line 3 \"ceiling = 3\": unknown setting"),
            ("rate 1", "line 1 \"rate 1\": expected"),
            ("burst = 3", "no rate configured"),
            ("rate = 3", "no burst configured"),
            ("", "no rate configured"),
        ] {
            let err = RateLimit::from_config(config).unwrap_err();
            assert!(err.starts_with("ratelimit: "), "{config:?}: {err}");
            assert!(err.contains(needle), "{config:?}: {err}");
        }
    }

    #[test]
    fn a_burst_passes_then_the_rate_refills_exactly() {
        let mut rl = limiter("2", 3);
        let mut env = at(1_000_000);
        for _ in 0..3 {
            assert_eq!(rl.on_packet(&from(A), &mut env), Verdict::Forward);
        }
        assert_eq!(rl.on_packet(&from(A), &mut env), Verdict::Drop);
        // 2 tokens/s: one token every 500 ms. At 499 ms 998 thousandths have accrued …
        env.now += 499;
        assert_eq!(rl.on_packet(&from(A), &mut env), Verdict::Drop);
        assert_eq!(bucket(&env, A), Some(Bucket { millitokens: 998, at_ms: 1_000_499 }));
        // … and at 500 ms the whole token is there: the drop lost no time.
        env.now += 1;
        assert_eq!(rl.on_packet(&from(A), &mut env), Verdict::Forward);
        assert_eq!(rl.on_packet(&from(A), &mut env), Verdict::Drop);
        assert_eq!(env.int("rl:passed"), Some(4));
        assert_eq!(env.int("rl:dropped"), Some(3));
    }

    #[test]
    fn slow_rates_accrue_between_close_packets() {
        // 0.3 tokens/s accrue 0.3 thousandths per ms: nothing in 3 ms, but the time
        // keeps counting until a whole thousandth is there.
        let rl = limiter("0.3", 1);
        let empty = Bucket { millitokens: 0, at_ms: 0 };
        assert_eq!(rl.refill(empty, 3), empty);
        assert_eq!(rl.refill(empty, 4), Bucket { millitokens: 1, at_ms: 4 });
        // 3334 ms give one token (1000.2 thousandths).
        assert_eq!(rl.refill(empty, 3334).millitokens, 1000);
        // Never more than the burst, and a full bucket accrues nothing while full.
        assert_eq!(rl.refill(empty, 1_000_000_000), Bucket { millitokens: 1000, at_ms: 1_000_000_000 });
        // A huge rate over a huge gap does not overflow.
        let fast = limiter("1000000000", 1_000_000_000);
        let b = fast.refill(Bucket { millitokens: 0, at_ms: i64::MIN }, i64::MAX);
        assert_eq!(b.millitokens, 1_000_000_000 * 1000);
    }

    #[test]
    fn buckets_are_per_source_and_start_full() {
        let mut rl = limiter("0.001", 2);
        let mut env = at(5);
        assert_eq!(rl.on_packet(&from(A), &mut env), Verdict::Forward);
        assert_eq!(rl.on_packet(&from(A), &mut env), Verdict::Forward);
        assert_eq!(rl.on_packet(&from(A), &mut env), Verdict::Drop);
        assert_eq!(rl.on_packet(&from(B), &mut env), Verdict::Forward);
        assert_eq!(bucket(&env, A), Some(Bucket { millitokens: 0, at_ms: 5 }));
        assert_eq!(bucket(&env, B), Some(Bucket { millitokens: 1000, at_ms: 5 }));
        assert_eq!(env.values.get("rl:bucket:10.0.0.2"), Some(&Value::Text("1000@5".into())));
    }

    #[test]
    fn a_clock_that_went_back_refills_nothing() {
        let mut rl = limiter("1000", 1);
        let mut env = at(10_000);
        // A bucket written by a node whose clock is 5 s ahead.
        env.values.insert(bucket_key(A), Bucket { millitokens: 0, at_ms: 15_000 }.to_value());
        assert_eq!(rl.on_packet(&from(A), &mut env), Verdict::Drop);
        assert_eq!(bucket(&env, A), Some(Bucket { millitokens: 0, at_ms: 10_000 }));
        env.now += 1;
        assert_eq!(rl.on_packet(&from(A), &mut env), Verdict::Forward);
    }

    #[test]
    fn a_malformed_bucket_is_replaced_by_a_full_one() {
        let mut rl = limiter("1", 2);
        let mut env = at(0);
        env.values.insert(bucket_key(A), Value::Text("lots".into()));
        assert_eq!(rl.on_packet(&from(A), &mut env), Verdict::Forward);
        assert_eq!(bucket(&env, A), Some(Bucket { millitokens: 1000, at_ms: 0 }));
        assert_eq!(Bucket::from_value(&Value::Int(3)), None);
        assert_eq!(Bucket::from_value(&Value::Text("1@x".into())), None);
        let b = Bucket { millitokens: 12, at_ms: -4 };
        assert_eq!(Bucket::from_value(&b.to_value()), Some(b));
    }

    #[test]
    fn a_moved_flow_brings_both_endpoints_buckets() {
        let mut rl = limiter("0.001", 5);
        let mut env = at(100);
        // Another node used up A's and the server's tokens.
        env.remote.insert(bucket_key(A), Bucket { millitokens: 0, at_ms: 90 }.to_value());
        env.remote.insert(bucket_key(SERVER), Bucket { millitokens: 500, at_ms: 90 }.to_value());
        env.remote.insert(bucket_key(B), Bucket { millitokens: 0, at_ms: 90 }.to_value());
        rl.on_flow_moved("6:10.0.0.1:40000-192.168.0.1:443", &mut env);
        assert_eq!(env.takes, vec!["rl:bucket:10\\.0\\.0\\.1".to_string(), "rl:bucket:192\\.168\\.0\\.1".to_string()]);
        assert_eq!(env.int("rl:taken"), Some(2));
        assert_eq!(rl.on_packet(&from(A), &mut env), Verdict::Drop, "the bucket came along empty");
        assert_eq!(rl.on_packet(&from(SERVER), &mut env), Verdict::Drop);
        // B's flow did not move: its bucket stays where it is, and B starts full here.
        assert!(env.remote.contains_key(&bucket_key(B)));
        assert_eq!(rl.on_packet(&from(B), &mut env), Verdict::Forward);

        // A failed take is counted; the flow's sources then start with fresh buckets.
        let mut env = MemoryState { unreachable: true, ..at(100) };
        env.remote.insert(bucket_key(A), Bucket { millitokens: 0, at_ms: 90 }.to_value());
        rl.on_flow_moved("6:10.0.0.1:40000-192.168.0.1:443", &mut env);
        assert_eq!(env.int("rl:take_errors"), Some(2));
        assert_eq!(rl.on_packet(&from(A), &mut env), Verdict::Forward);
        // A flow key that does not parse takes nothing.
        let mut env = at(0);
        rl.on_flow_moved("garbage", &mut env);
        rl.on_flow_moved("6:10.0.0.1:1-10.0.0", &mut env);
        assert!(env.takes.is_empty());
        // Both endpoints on one address: one take.
        rl.on_flow_moved("17:10.0.0.1:53-10.0.0.1:5353", &mut env);
        assert_eq!(env.takes, vec!["rl:bucket:10\\.0\\.0\\.1".to_string()]);
    }

    #[test]
    fn flow_keys_parse_into_their_endpoints() {
        assert_eq!(flow_endpoints("6:10.0.0.1:40000-192.168.0.1:443"), Some((A, SERVER)));
        assert_eq!(flow_endpoints("17:1.2.3.4:0-5.6.7.8:65535"), Some(([1, 2, 3, 4], [5, 6, 7, 8])));
        for bad in ["", "6", "6:10.0.0.1:1", "6:10.0.0.1-10.0.0.2", "6:10.0.0.300:1-10.0.0.2:2"] {
            assert_eq!(flow_endpoints(bad), None, "{bad}");
        }
        assert_eq!(bucket_pattern(SERVER), "rl:bucket:192\\.168\\.0\\.1");
    }
}
