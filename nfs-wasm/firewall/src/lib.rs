//! `firewall`: a stateful firewall with connection tracking. Hosts on the configured
//! inside networks may open flows to anywhere; traffic from outside passes only on a
//! flow an inside host opened (the return traffic of an established flow).
//!
//! The logic ([`Firewall`]) is plain `no_std` Rust that reaches its host only through
//! the SDK's [`State`] trait, so the same code runs as a Wasm guest (`wasm32`, on the
//! node's state through `estate_guest::HostState`) and natively (a host links the `rlib`
//! and drives [`Firewall`] with a [`State`] of its own; the unit tests use
//! `estate_guest::testing::MemoryState`).
//!
//! # Configuration
//!
//! UTF-8 text, one `key = value` setting per line; blank lines and lines starting with
//! `#` are ignored:
//!
//! - `inside = <address>/<prefix length>` (repeatable, at least one): an inside network,
//!   e.g. `10.0.0.0/8`. A bare address is a `/32`. An address with bits set beyond the
//!   prefix (`10.1.0.0/8`) is refused rather than silently widened.
//! - `idle_timeout_ms = <n>` (at most once, `n >= 1`; default: none): a conntrack entry
//!   whose flow passed no packet for longer than `n` ms is closed (see below).
//! - `new_tcp = any|syn` (at most once; default `any`): which TCP packets from inside
//!   open a conntrack entry. `any`: every one. `syn`: only a connection's opening
//!   segment, SYN set and ACK clear (see below).
//!
//! Anything else (an unknown setting, a line without `=`, a bad network, no `inside` at
//! all) is a configuration error whose message names the offending line.
//!
//! # Rule
//!
//! For each packet, by its source address (not by its direction within the flow: the
//! first packet a node sees of a flow that moved to it is not necessarily the flow's
//! first packet):
//!
//! - source inside: the flow's conntrack entry is opened, or refreshed if it exists, and
//!   the packet is forwarded; except, with `new_tcp = syn`, a TCP packet of a flow
//!   without an entry that is not an opening SYN (SYN set, ACK clear): it opens nothing,
//!   and is dropped and counted in `fw:invalid` (a mid-connection segment of a flow this
//!   firewall never saw open, or whose entry expired). UDP and other protocols are not
//!   affected by `new_tcp`;
//! - source outside: the packet is forwarded if the flow's conntrack entry exists, and
//!   dropped otherwise.
//!
//! There is no close handling: the packet records carry the TCP flags
//! ([`Packet::tcp_flags`]), but this version uses them only to tell an opening SYN
//! (`new_tcp = syn`); a FIN or RST does not close an entry. Without an idle timeout an
//! entry lives until its key is deleted (e.g. `estate del`). With `idle_timeout_ms`,
//! every forwarded packet
//! records the time (`flow:<flow>:seen`, the host's wall clock), and an entry idle for
//! longer than the timeout is closed: by the flow's next packet (which then meets the
//! rule above as if the flow were new), or by a sweep that, on every packet, looks at a
//! few of the flows this instance tracks, oldest first, and deletes the keys of those
//! idle too long, so entries of flows that never send again do not pile up. A flow whose
//! state moved to another node is swept here harmlessly (its keys are gone).
//!
//! # State keys
//!
//! Integer counters in the node's local store (`<flow>` is the packet's flow key):
//!
//! | key              | meaning                                                        |
//! |------------------|----------------------------------------------------------------|
//! | `flow:<flow>:ct` | the conntrack entry: packets the flow's inside end has sent     |
//! | `flow:<flow>:seen` | with a timeout: when the flow last passed a packet (ms)       |
//! | `fw:expired`     | entries closed for being idle                                   |
//! | `fw:opened`      | conntrack entries this node created                             |
//! | `fw:passed`      | packets forwarded                                               |
//! | `fw:dropped`     | packets dropped                                                 |
//! | `fw:invalid`     | with `new_tcp = syn`: of those, TCP packets from inside that were no opening SYN of a flow without an entry |
//!
//! A refused add to one of the `fw:` counters only loses that count; an entry that cannot
//! be read counts as no entry.
//!
//! The entry lives under `flow:<flow>:…`, so when a flow moves to another node the host
//! brings the entry along before the flow's first packet there (`--flow-state take` or
//! `copy`): return traffic keeps passing across the move. Without state sharing
//! (`--flow-state off`) the new node drops it until the inside end sends again.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
// A native build also links the `cdylib` crate type, which needs std's panic handler.
#[cfg(not(target_arch = "wasm32"))]
extern crate std;

use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use estate_guest::config::parse_ipv4;
use estate_guest::nf::tcp;
use estate_guest::{Packet, State, Value, Verdict};

/// How many tracked flows the sweep looks at per packet.
const SWEEP_PER_PACKET: usize = 4;

/// An IPv4 network: the addresses whose first `len` bits equal those of `net`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    net: u32,
    len: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/len` (or a bare address, a `/32`).
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, len) = match text.split_once('/') {
            Some((addr, len)) => {
                let len = match len.parse::<u8>() {
                    Ok(n) if n <= 32 => n,
                    _ => return Err(format!("prefix length {len:?} is not 0..=32")),
                };
                (addr, len)
            }
            None => (text, 32),
        };
        let net = u32::from_be_bytes(parse_ipv4(addr).ok_or_else(|| format!("{addr:?} is not an IPv4 address"))?);
        let cidr = Cidr { net, len };
        if net & !cidr.mask() != 0 {
            let base = (net & cidr.mask()).to_be_bytes();
            return Err(format!(
                "{addr} has bits set beyond the /{len} prefix (the network is {}.{}.{}.{}/{len})",
                base[0], base[1], base[2], base[3]
            ));
        }
        Ok(cidr)
    }

    fn mask(self) -> u32 {
        if self.len == 0 { 0 } else { u32::MAX << (32 - self.len) }
    }

    /// Whether `ip` is in this network.
    pub fn contains(self, ip: [u8; 4]) -> bool {
        u32::from_be_bytes(ip) & self.mask() == self.net
    }
}

/// Which TCP packets from inside open a conntrack entry (the `new_tcp` setting).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NewTcp {
    /// Every TCP packet from inside (`any`, the default).
    #[default]
    Any,
    /// Only a connection's opening segment: SYN set, ACK clear (`syn`).
    Syn,
}

/// The IP protocol number of TCP.
const TCP: u8 = 6;

/// The firewall: its inside networks and, with an idle timeout, the flows it tracks.
#[derive(Clone, Debug)]
pub struct Firewall {
    inside: Vec<Cidr>,
    idle_timeout_ms: Option<i64>,
    new_tcp: NewTcp,
    /// With a timeout: each tracked flow's last forwarded packet here (ms), and the
    /// flows in the order the sweep visits them.
    last_seen: BTreeMap<String, i64>,
    sweep: VecDeque<String>,
}

/// The conntrack key of a flow.
pub fn ct_key(flow: &str) -> String {
    format!("flow:{flow}:ct")
}

/// The key of the time a flow last passed a packet (with an idle timeout).
pub fn seen_key(flow: &str) -> String {
    format!("flow:{flow}:seen")
}

impl Firewall {
    /// Builds the firewall from its configuration (see the crate documentation for the
    /// format); the error names the offending line.
    pub fn from_config(config: &str) -> Result<Firewall, String> {
        let (mut inside, mut idle_timeout_ms, mut new_tcp) = (Vec::new(), None, None);
        let expected = "expected `inside = <address>/<prefix length>`, `idle_timeout_ms = <n>` or `new_tcp = any|syn`";
        for setting in estate_guest::config::settings("firewall", config, expected) {
            let setting = setting?;
            let (key, value) = (setting.key, setting.value);
            let bad = |reason: &str| setting.error(reason);
            match key {
                "inside" => inside.push(Cidr::parse(value).map_err(|e| bad(&e))?),
                "idle_timeout_ms" => {
                    if idle_timeout_ms.is_some() {
                        return Err(bad("idle_timeout_ms given twice"));
                    }
                    match value.parse::<i64>() {
                        Ok(n) if n >= 1 => idle_timeout_ms = Some(n),
                        _ => return Err(bad("idle_timeout_ms must be an integer >= 1")),
                    }
                }
                "new_tcp" => {
                    if new_tcp.is_some() {
                        return Err(bad("new_tcp given twice"));
                    }
                    new_tcp = Some(match value {
                        "any" => NewTcp::Any,
                        "syn" => NewTcp::Syn,
                        _ => return Err(bad("new_tcp must be `any` or `syn`")),
                    });
                }
                _ => return Err(bad("unknown setting (expected `inside`, `idle_timeout_ms` or `new_tcp`)")),
            }
        }
        if inside.is_empty() {
            return Err("firewall: no inside network configured (add a line `inside = 10.0.0.0/8`)".into());
        }
        let new_tcp = new_tcp.unwrap_or_default();
        Ok(Firewall { inside, idle_timeout_ms, new_tcp, last_seen: BTreeMap::new(), sweep: VecDeque::new() })
    }

    /// The idle timeout, if one is configured.
    pub fn idle_timeout_ms(&self) -> Option<i64> {
        self.idle_timeout_ms
    }

    /// Which TCP packets from inside open a conntrack entry.
    pub fn new_tcp(&self) -> NewTcp {
        self.new_tcp
    }

    /// Whether `p` may open a conntrack entry: with `new_tcp = syn`, a TCP packet must be
    /// an opening SYN (SYN set, ACK clear); any other packet may.
    pub fn may_open(&self, p: &Packet<'_>) -> bool {
        self.new_tcp == NewTcp::Any || p.proto != TCP || p.tcp_flags & (tcp::SYN | tcp::ACK) == tcp::SYN
    }

    /// The number of flows this instance tracks for the idle timeout.
    pub fn tracked(&self) -> usize {
        self.last_seen.len()
    }

    /// The configured inside networks.
    pub fn inside(&self) -> &[Cidr] {
        &self.inside
    }

    /// Whether `ip` is in one of the inside networks.
    pub fn is_inside(&self, ip: [u8; 4]) -> bool {
        self.inside.iter().any(|c| c.contains(ip))
    }

    /// Handles one packet per the rule in the crate documentation.
    pub fn on_packet(&mut self, p: &Packet<'_>, state: &mut impl State) -> Verdict {
        let ct = ct_key(p.flow);
        // With a timeout: the clock, and this flow's time key (read now, written below).
        let timed = self.idle_timeout_ms.map(|timeout| (timeout, state.now_ms(), seen_key(p.flow)));
        if let Some((timeout, now, seen)) = &timed {
            self.sweep(*timeout, *now, state);
            // This flow's own entry, if it idled too long, closes before the rule.
            if get_int(state, seen).is_some_and(|seen| now.saturating_sub(seen) > *timeout) {
                close(p.flow, state);
            }
        }
        let verdict = if self.is_inside(p.src.0) {
            if !self.may_open(p) && !exists(state, &ct) {
                count(state, "fw:invalid");
                Verdict::Drop
            } else {
                if state.counter_add(&ct, 1) == Ok(1) {
                    count(state, "fw:opened");
                }
                Verdict::Forward
            }
        } else if exists(state, &ct) {
            Verdict::Forward
        } else {
            Verdict::Drop
        };
        count(state, if verdict == Verdict::Forward { "fw:passed" } else { "fw:dropped" });
        if let (Some((_, now, seen)), Verdict::Forward) = (timed, verdict) {
            // A refused write (the node is leaving) only loses a timestamp.
            let _ = state.set(&seen, Value::Int(now));
            if self.last_seen.insert(p.flow.into(), now).is_none() {
                self.sweep.push_back(p.flow.into());
            }
        }
        verdict
    }

    /// Looks at the next [`SWEEP_PER_PACKET`] tracked flows, round robin: an active one
    /// goes to the back; an idle one (by the store's record too, which a copy brought
    /// from another node may have refreshed) is closed and forgotten.
    fn sweep(&mut self, timeout: i64, now: i64, state: &mut impl State) {
        for _ in 0..SWEEP_PER_PACKET.min(self.sweep.len()) {
            let Some(flow) = self.sweep.pop_front() else { break };
            let seen = self.last_seen.get(&flow).copied().unwrap_or(i64::MIN);
            if now.saturating_sub(seen) <= timeout {
                self.sweep.push_back(flow);
                continue;
            }
            match get_int(state, &seen_key(&flow)) {
                Some(stored) if now.saturating_sub(stored) <= timeout => {
                    self.last_seen.insert(flow.clone(), stored);
                    self.sweep.push_back(flow);
                }
                Some(_) => {
                    close(&flow, state);
                    self.last_seen.remove(&flow);
                }
                // Gone (moved to another node, or deleted): nothing to close here.
                None => {
                    self.last_seen.remove(&flow);
                }
            }
        }
    }
}

/// Closes `flow`'s conntrack entry.
fn close(flow: &str, state: &mut impl State) {
    if exists(state, &ct_key(flow)) {
        count(state, "fw:expired");
    }
    // A key the node could not delete is met again by the rule or the sweep.
    let _ = state.del(&ct_key(flow));
    let _ = state.del(&seen_key(flow));
}

/// Whether `key` exists in the local store (an unreadable entry counts as none: the
/// firewall fails closed).
fn exists(state: &mut impl State, key: &str) -> bool {
    matches!(state.get(key), Ok(Some(_)))
}

/// The integer at `key`, if there is one.
fn get_int(state: &mut impl State, key: &str) -> Option<i64> {
    match state.get(key) {
        Ok(Some(Value::Int(v))) => Some(v),
        _ => None,
    }
}

/// Adds 1 to a counter kept for the operator; a refused add only loses that count.
fn count(state: &mut impl State, key: &str) {
    let _ = state.counter_add(key, 1);
}

/// The Wasm form: [`Firewall`] on the node's state, wired to the NF ABI.
#[cfg(target_arch = "wasm32")]
mod guest {
    use alloc::string::String;
    use estate_guest::{HostState, Nf, Packet, Verdict};

    use crate::Firewall;

    /// [`Firewall`] as an [`Nf`].
    #[derive(Debug)]
    pub struct FirewallNf(Firewall);

    impl Nf for FirewallNf {
        fn init(config: &str) -> Result<Self, String> {
            Firewall::from_config(config).map(FirewallNf)
        }

        fn on_packet(&mut self, packet: &Packet<'_>) -> Verdict {
            self.0.on_packet(packet, &mut HostState)
        }
    }
}

#[cfg(target_arch = "wasm32")]
pub use guest::FirewallNf;

#[cfg(target_arch = "wasm32")]
estate_guest::nf!(FirewallNf);

#[cfg(test)]
mod tests;
