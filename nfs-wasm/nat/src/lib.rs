//! `nat`: a NAT (source address and port translation). Each new flow gets an external
//! port from a range shared by every NAT instance of the cluster, and no two flows
//! anywhere get the same port — without a central controller: instances claim blocks of
//! the range through their own state and a cluster-wide read.
//!
//! Each flow's mapping is decided and recorded (`flow:<flow>:nat = <port>`, and an event
//! `nat map flow=<flow> port=<port>` when the mapping is made); the packets of mapped
//! flows are forwarded, those the NAT cannot map dropped. With an external address
//! configured (`external = A.B.C.D`), the NAT also translates: it asks the host to
//! rewrite each packet it forwards (the guest ABI's `packet_rewrite` host call, see
//! "Translation" below). Without one it only allocates and records, as a control plane
//! for a data plane that rewrites by the mapping.
//!
//! The logic ([`Nat`]) is plain `no_std` Rust that reaches its host only through the
//! SDK's [`State`] trait, so the same code runs as a Wasm guest (`wasm32`, on
//! `estate_guest::HostState`) and natively (the unit tests run several instances over
//! one simulated cluster, each with a [`State`] of its own over its member's store).
//! [`Nat::decide`] answers a [`Decision`]: the verdict, and the rewrite to ask for; the
//! Wasm form hands that rewrite to the host with `estate_guest::nf::rewrite`.
//!
//! # Configuration
//!
//! UTF-8 text, one `key = value` setting per line; blank lines and lines starting with
//! `#` are ignored:
//!
//! - `ports = LO-HI` (required): the external port range shared by all instances,
//!   `1 <= LO <= HI <= 65535`, e.g. `20000-59999`. Every instance of the cluster must be
//!   given the same range and block size.
//! - `block = N` (default [`DEFAULT_BLOCK`], `1 <= N <= 65535`): ports per block. The
//!   range is cut into blocks of `N` ports from `LO` on; the last block may be shorter.
//! - `external = A.B.C.D` (optional): the NAT's external IPv4 address. With it, packets
//!   are translated (below); without it, they are not.
//!
//! Anything else is a configuration error whose message names the offending line (or the
//! missing setting).
//!
//! # Allocation
//!
//! A packet whose flow has a mapping (`flow:<flow>:nat` in the node's store) is
//! forwarded. That includes a flow that moved here from another node: the mapping lives
//! under the flow's keys, so the host brings it along before the flow's first packet
//! here (`--flow-state take` or `copy`), and the flow keeps its port.
//!
//! A packet of a flow without a mapping gets the next unused port of the block this
//! instance allocates from (its *active* block), and the mapping is stored. When there is
//! no active block, or it is used up, the instance claims a new block:
//!
//! 1. It picks a candidate block: the first one is the block of a hash of the flow key
//!    that asked for a port (so instances do not all start at block 0); then the
//!    following blocks in order; after a conflict, a block of a fresh hash (of the flow
//!    key, the clock and the attempt). Blocks it has claimed before (its own keys
//!    `nat:block:<b>`, in use or used up) are skipped without asking anyone.
//! 2. It writes its claim to its own store: `nat:block:<b> = 0`.
//! 3. It counts the claims of that block in the whole cluster: a global read of the
//!    exact key `nat:block:<b>` (its pattern made by `estate_guest::pattern::exact`)
//!    with the reducer `count` and consistency `all` (an error
//!    unless every member answered), waiting at most [`CLAIM_TIMEOUT_MS`].
//! 4. A count of exactly 1 (its own claim) makes the block its own; it allocates from
//!    it. A larger count (another instance claims it, now or from before) is a conflict:
//!    it deletes its claim and tries another candidate. A failed read (a member did not
//!    answer) also withdraws the claim and ends the attempt: the block is not used.
//!
//! An attempt asks the cluster at most [`MAX_CLAIM_READS`] times. When it finds no block,
//! the packet is dropped and counted in `nat:exhausted`, and for [`CLAIM_RETRY_MS`] the
//! packets of unmapped flows are dropped (and counted) without a new attempt, so an
//! exhausted range or an unreachable member does not cost every new flow a round of
//! cluster reads.
//!
//! # Why two instances never use the same block
//!
//! Suppose instances A and B both use block `b`. Each stored its claim before it sent its
//! read, kept the claim while using the block, and read a count of 1. Say B's store
//! answered A's read before A's store answered B's read (one of the two answers came
//! first). B's answer to A did not contain B's claim (A counted 1), so B wrote its claim
//! after answering A — and B sent its own read after writing its claim. A's store
//! therefore answered B's read after A's read had started, hence after A's claim was
//! stored, and A's claim was still there (A keeps it, since it uses the block): B counted
//! at least 2. A contradiction; the other order is symmetric. Each store is a single
//! local map that reads and writes in order, and a read with consistency `all` asks every
//! member, so no claim is missed.
//!
//! Two instances that claim the same block at the same time may both see 2 and both
//! withdraw: the block stays free for a later claim. No instance ever uses a block it saw
//! contested.
//!
//! The argument assumes every claimer counts the other as a member: start the NAT on a
//! node after it has joined the cluster and sees the other members (a node that one side
//! does not know yet is not asked). A node that goes away without handing its keys to
//! another member (a crash) takes its claims with it: its blocks become claimable again,
//! while the flows that moved away from it keep their ports from those blocks — in this
//! version those ports may then be handed out a second time.
//!
//! Ports are not reused in this version: a port stays allocated after its flow ends (the
//! NAT does not track the end of a flow, though the packet records carry the TCP flags
//! that would show it), and a used-up block stays claimed for as long as its node runs.
//!
//! Without state sharing (`--flow-state off`) the global read is refused, no block can be
//! claimed, and every packet of an unmapped flow is dropped.
//!
//! # Translation
//!
//! With `external` set, every packet is either inbound or outbound:
//!
//! - Inbound: its destination address is `external`. The NAT looks up the reverse
//!   mapping of its destination port, `nat:port:<port>` (text `a.b.c.d:p`, the inside
//!   endpoint the port was allocated for, stored by the instance that made the mapping).
//!   Found in this node's store: the packet's destination is rewritten to that inside
//!   endpoint (its source unchanged) and it is forwarded. Absent here, and the port is in
//!   the configured range: the port may have been allocated by another instance (see
//!   "Moving flows" below), so the NAT asks the cluster — a global read of the exact
//!   key `nat:port:<port>` with the reducer `latest` and best-effort consistency (the
//!   members that answer), waiting at most [`INBOUND_TIMEOUT_MS`]. An endpoint found
//!   there is copied into this node's store under the same key (a cache: the later
//!   packets of the connection need no cluster read; ports are unique in the cluster,
//!   so the copies never disagree with the original), counted in `nat:inbound_remote`,
//!   and the packet is rewritten and forwarded as above. (If the store refuses the copy,
//!   the packet is still forwarded; the next one asks again.) Nothing found, a value that
//!   is no endpoint, a failed read, or a port outside the range: the packet is dropped
//!   and counted in `nat:unsolicited`. Whoever the sender is, a mapped port reaches its
//!   inside endpoint (endpoint-independent filtering); an inbound packet never allocates.
//!
//!   Misses are remembered: a port whose cluster read found nothing (or failed) is not
//!   asked about again for [`MISS_TTL_MS`]; its packets are dropped and counted at once,
//!   so a flood of unsolicited traffic to unmapped ports costs at most one cluster read
//!   per port and window. The memory is the instance's own (not the store), holds at
//!   most [`MAX_MISSES`] ports (a new miss beyond that forgets the oldest), and is
//!   forgotten if the clock goes back. A reply to a port that another instance maps
//!   within that window after a miss here is dropped too (the sender's retransmission
//!   after the window gets through). A reverse key in the local store that holds no
//!   endpoint (written behind the NF's back) is not looked up in the cluster: the packet
//!   is dropped.
//! - Outbound: any other packet. Its flow's port is looked up or allocated as above;
//!   then its source is rewritten to (`external`, port) (its destination unchanged) and
//!   it is forwarded. A packet that gets no port is dropped as above.
//!
//! The host applies the rewrite to the frame it forwards (inline input; see
//! `docs/abi.md`, `packet_rewrite`). If the host refuses it (it cannot while a packet is
//! handled), the packet is dropped and counted in `nat:rewrite_errors`: untranslated
//! traffic would leak inside addresses.
//!
//! Moving flows: the reverse key `nat:port:<port>` lives outside the flow's keys, and an
//! inbound packet's flow key (server ↔ `external`:port) differs from its outbound flow's
//! (inside endpoint ↔ server). So a switch that spreads flows over several instances by
//! flow key often sends the replies of a connection to an instance other than the one
//! that allocated its port, and when the fabric moves a NAT flow to another instance, the
//! outbound mapping follows it (`flow:<flow>:nat`) but the reverse key need not. Either
//! way the instance that gets a reply finds the reverse key in the cluster (above) and
//! translates it: replies reaching any instance are translated, as long as the instance
//! that holds the reverse key answers the read. Two instances never hand out the same
//! port, thanks to the block claims, so the reverse keys of the cluster, and the copies
//! cached from them, never disagree (but see the crash caveat above).
//!
//! Without state sharing (`--flow-state off`) the cluster read is refused: an inbound
//! packet is translated only by the instance that allocated its port, and dropped (and
//! counted) elsewhere.
//!
//! # State keys
//!
//! In the node's local store:
//!
//! | key               | meaning                                                        |
//! |-------------------|----------------------------------------------------------------|
//! | `flow:<flow>:nat` | the flow's external port                                       |
//! | `nat:port:<port>` | with `external`: the inside endpoint of the port, text `a.b.c.d:p` (allocated here, or cached from the cluster) |
//! | `nat:block:<b>`   | this node's claim of block `b`: the number of its ports handed out |
//! | `nat:active`      | the block this node allocates from (a restarted instance resumes from it) |
//! | `nat:allocated`   | ports handed out                                               |
//! | `nat:claimed`     | blocks claimed                                                 |
//! | `nat:conflicts`   | claims withdrawn because another instance claimed the block    |
//! | `nat:claim_errors`| claims withdrawn because the cluster read failed               |
//! | `nat:exhausted`   | packets dropped because no port could be allocated             |
//! | `nat:inbound_remote` | inbound packets translated by a reverse mapping read from the cluster |
//! | `nat:unsolicited` | inbound packets dropped: no reverse mapping for their port     |
//! | `nat:rewrite_errors` | packets dropped because the host refused their rewrite      |
//!
//! All integers except `nat:port:<port>`. A refused add to one of the counters only loses that count; a block whose claim key
//! the node refuses to count on (it holds no integer: written behind the NF's back) hands
//! out no more ports.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
// A native build also links the `cdylib` crate type, which needs std's panic handler.
#[cfg(not(target_arch = "wasm32"))]
extern crate std;

use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::string::String;

use estate_guest::config::parse_ipv4;
use estate_guest::nf::Rewrite;
use estate_guest::{Packet, State, Value, Verdict, pattern};

/// Ports per block when the configuration sets none.
pub const DEFAULT_BLOCK: u32 = 256;

/// How long the Wasm form waits for the cluster to count a block's claims.
pub const CLAIM_TIMEOUT_MS: u32 = 500;

/// Cluster reads per attempt to claim a block, at most.
pub const MAX_CLAIM_READS: u32 = 8;

/// After an attempt that found no block, how long unmapped flows are dropped before the
/// next attempt.
pub const CLAIM_RETRY_MS: i64 = 100;

/// How long the Wasm form waits for the cluster to find the reverse mapping of an
/// inbound packet's port that is not in this node's store (a best-effort read: the
/// members that answered within it count). The same as [`CLAIM_TIMEOUT_MS`].
pub const INBOUND_TIMEOUT_MS: u32 = CLAIM_TIMEOUT_MS;

/// After a cluster read found no reverse mapping for a port (or failed), how long the
/// inbound packets to that port are dropped without a new read.
pub const MISS_TTL_MS: i64 = CLAIM_RETRY_MS;

/// Ports whose misses an instance remembers at most; a new miss beyond that forgets the
/// oldest.
pub const MAX_MISSES: usize = 1024;

/// The key of this node's block cursor.
pub const ACTIVE_KEY: &str = "nat:active";

/// The mapping key of a flow.
pub fn nat_key(flow: &str) -> String {
    format!("flow:{flow}:nat")
}

/// The reverse-mapping key of external port `port`.
pub fn port_key(port: u16) -> String {
    format!("nat:port:{port}")
}

/// An endpoint as the reverse mapping stores it: `a.b.c.d:p`.
pub fn endpoint_text((ip, port): ([u8; 4], u16)) -> String {
    format!("{}.{}.{}.{}:{port}", ip[0], ip[1], ip[2], ip[3])
}

/// Parses an endpoint `a.b.c.d:p` (the reverse mapping's value).
pub fn parse_endpoint(text: &str) -> Option<([u8; 4], u16)> {
    let (ip, port) = text.rsplit_once(':')?;
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((parse_ipv4(ip)?, port.parse().ok()?))
}

/// What the NAT decided for a packet: its verdict, and the rewrite to ask of the host
/// (only for a forwarded packet, and only with an `external` address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Forward or drop.
    pub verdict: Verdict,
    /// The packet's new source and destination.
    pub rewrite: Option<Rewrite>,
}

impl Decision {
    /// Drop the packet.
    const DROP: Decision = Decision { verdict: Verdict::Drop, rewrite: None };
}

/// The claim key of block `b`.
pub fn block_key(b: u32) -> String {
    format!("nat:block:{b}")
}

/// FNV-1a, 64 bits.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// splitmix64's finaliser: spreads `x` over all 64 bits.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The block this instance allocates from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Active {
    block: u32,
    /// Ports of the block handed out so far.
    used: u32,
}

/// The ports whose cluster read for a reverse mapping found nothing lately (see
/// "Translation" in the crate documentation): at most [`MAX_MISSES`], each for
/// [`MISS_TTL_MS`].
#[derive(Clone, Debug, Default)]
struct Misses {
    /// Port → time of its miss.
    at: BTreeMap<u16, i64>,
    /// The same entries, oldest first (misses are recorded in time order).
    order: VecDeque<(u16, i64)>,
}

impl Misses {
    /// Whether `port` missed less than [`MISS_TTL_MS`] before `now`; forgets the misses
    /// that expired (all of them if the clock went back).
    fn recent(&mut self, port: u16, now: i64) -> bool {
        if self.order.back().is_some_and(|&(_, at)| at > now) {
            self.at.clear();
            self.order.clear();
        }
        while let Some(&(old, at)) = self.order.front() {
            if now.saturating_sub(at) < MISS_TTL_MS {
                break;
            }
            self.order.pop_front();
            self.at.remove(&old);
        }
        self.at.contains_key(&port)
    }

    /// Records a miss of `port` (not [`Misses::recent`]) at `now`, forgetting the oldest
    /// beyond [`MAX_MISSES`].
    fn record(&mut self, port: u16, now: i64) {
        if self.at.insert(port, now).is_some() {
            // Only after a `recent` that said no, so never; keep the two in step anyway.
            self.order.retain(|&(p, _)| p != port);
        }
        self.order.push_back((port, now));
        while self.order.len() > MAX_MISSES {
            if let Some((old, _)) = self.order.pop_front() {
                self.at.remove(&old);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.order.len()
    }
}

/// The NAT: its port range, its blocks, and where it is in its active block.
#[derive(Clone, Debug)]
pub struct Nat {
    lo: u16,
    hi: u16,
    /// The external address, if the NAT translates.
    external: Option<[u8; 4]>,
    block: u32,
    blocks: u32,
    active: Option<Active>,
    /// Whether the active block was looked up in the store (after a start or restart).
    resumed: bool,
    /// No attempt to claim a block before this time.
    retry_at: Option<i64>,
    /// Inbound ports lately not found in the cluster.
    misses: Misses,
}

impl Nat {
    /// Builds the NAT from its configuration (see the crate documentation for the
    /// format); the error names the offending line or the missing setting.
    pub fn from_config(config: &str) -> Result<Nat, String> {
        let (mut ports, mut block, mut external) = (None, None, None);
        let expected = "expected `ports = LO-HI`, `block = N` or `external = A.B.C.D`";
        for setting in estate_guest::config::settings("nat", config, expected) {
            let setting = setting?;
            let (key, value) = (setting.key, setting.value);
            let bad = |reason: &str| setting.error(reason);
            let number = |s: &str| -> Option<u32> {
                let s = s.trim();
                if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                s.parse().ok()
            };
            match key {
                "ports" => {
                    if ports.is_some() {
                        return Err(bad("ports given twice"));
                    }
                    let range = value.split_once('-').and_then(|(lo, hi)| Some((number(lo)?, number(hi)?)));
                    match range {
                        Some((lo, hi)) if 1 <= lo && lo <= hi && hi <= 65535 => ports = Some((lo as u16, hi as u16)),
                        _ => return Err(bad("ports must be a range LO-HI with 1 <= LO <= HI <= 65535")),
                    }
                }
                "block" => {
                    if block.is_some() {
                        return Err(bad("block given twice"));
                    }
                    match number(value) {
                        Some(n) if (1..=65535).contains(&n) => block = Some(n),
                        _ => return Err(bad("block must be an integer from 1 to 65535")),
                    }
                }
                "external" => {
                    if external.is_some() {
                        return Err(bad("external given twice"));
                    }
                    external = Some(parse_ipv4(value).ok_or_else(|| bad("external must be an IPv4 address A.B.C.D"))?);
                }
                _ => return Err(bad("unknown setting (expected `ports`, `block` or `external`)")),
            }
        }
        let (lo, hi) = ports.ok_or("nat: no port range configured (add a line `ports = LO-HI`)")?;
        let block = block.unwrap_or(DEFAULT_BLOCK);
        let size = u32::from(hi) - u32::from(lo) + 1;
        let blocks = size.div_ceil(block);
        Ok(Nat {
            lo,
            hi,
            external,
            block,
            blocks,
            active: None,
            resumed: false,
            retry_at: None,
            misses: Misses::default(),
        })
    }

    /// The port range, inclusive.
    pub fn ports(&self) -> (u16, u16) {
        (self.lo, self.hi)
    }

    /// The external address, if the NAT translates.
    pub fn external(&self) -> Option<[u8; 4]> {
        self.external
    }

    /// Ports per block.
    pub fn block_size(&self) -> u32 {
        self.block
    }

    /// The number of blocks in the range.
    pub fn blocks(&self) -> u32 {
        self.blocks
    }

    /// The first port of block `b` and its number of ports.
    pub fn block_ports(&self, b: u32) -> (u16, u32) {
        let first = u32::from(self.lo) + b * self.block;
        (first as u16, self.block.min(u32::from(self.hi) + 1 - first))
    }

    /// The block `port` belongs to, if it is in the range.
    pub fn block_of(&self, port: u16) -> Option<u32> {
        (self.lo..=self.hi).contains(&port).then(|| (u32::from(port) - u32::from(self.lo)) / self.block)
    }

    /// Handles one packet: [`Nat::decide`]'s verdict (the rewrite left aside).
    pub fn on_packet(&mut self, p: &Packet<'_>, state: &mut impl State) -> Verdict {
        self.decide(p, state).verdict
    }

    /// Decides one packet (see the crate documentation): without `external`, forwards
    /// it if its flow has a port (allocating one for a new flow) and drops it if no port
    /// could be allocated; with `external`, the same for an outbound packet, rewriting
    /// its source, and for an inbound one the lookup of its port's inside endpoint.
    pub fn decide(&mut self, p: &Packet<'_>, state: &mut impl State) -> Decision {
        let Some(external) = self.external else {
            let verdict = if self.port_of(p, state).is_some() { Verdict::Forward } else { Verdict::Drop };
            return Decision { verdict, rewrite: None };
        };
        if p.dst.0 == external {
            let Some(inside) = self.inside_of(p.dst.1, state) else {
                count(state, "nat:unsolicited");
                return Decision::DROP;
            };
            return Decision { verdict: Verdict::Forward, rewrite: Some(Rewrite { src: p.src, dst: inside }) };
        }
        // Only a store changed behind the NF's back holds a mapping that is no port.
        match self.port_of(p, state).and_then(|port| u16::try_from(port).ok()) {
            Some(port) => {
                Decision { verdict: Verdict::Forward, rewrite: Some(Rewrite { src: (external, port), dst: p.dst }) }
            }
            None => Decision::DROP,
        }
    }

    /// The inside endpoint of external port `port`: its reverse mapping in this node's
    /// store, or else (for a port of the range not lately missed) in the cluster, then
    /// cached here (counted in `nat:inbound_remote`). `None` (not counted) if there is
    /// none.
    fn inside_of(&mut self, port: u16, state: &mut impl State) -> Option<([u8; 4], u16)> {
        let key = port_key(port);
        match state.get(&key) {
            Ok(Some(Value::Text(text))) => return parse_endpoint(&text),
            Ok(None) => {}
            // Something else under the key (or an unreadable store): not looked up.
            _ => return None,
        }
        self.block_of(port)?;
        let now = state.now_ms();
        if self.misses.recent(port, now) {
            return None;
        }
        let found = match state.global(&pattern::exact(&key), "latest", INBOUND_TIMEOUT_MS) {
            Ok(Some(item)) => match item.value {
                Value::Text(text) => parse_endpoint(&text),
                _ => None,
            },
            _ => None,
        };
        let Some(inside) = found else {
            self.misses.record(port, now);
            return None;
        };
        // A refused copy only costs the next packet another read.
        let _ = state.set(&key, Value::Text(endpoint_text(inside)));
        count(state, "nat:inbound_remote");
        Some(inside)
    }

    /// The external port of `p`'s flow: its mapping, or a new one (with `external`, and
    /// its reverse mapping to `p`'s source); `None` (counted) if none could be made.
    fn port_of(&mut self, p: &Packet<'_>, state: &mut impl State) -> Option<i64> {
        let key = nat_key(p.flow);
        if let Ok(Some(Value::Int(port))) = state.get(&key) {
            return Some(port);
        }
        let Some(port) = self.allocate(p.flow, state) else {
            count(state, "nat:exhausted");
            return None;
        };
        let reverse = self.external.map(|_| port_key(port));
        let stored =
            reverse.as_ref().is_none_or(|reverse| state.set(reverse, Value::Text(endpoint_text(p.src))).is_ok())
                && state.set(&key, Value::Int(i64::from(port))).is_ok();
        if !stored {
            // The store refused the mapping (full): the port is spent, the flow unmapped.
            if let Some(reverse) = reverse {
                let _ = state.del(&reverse);
            }
            count(state, "nat:exhausted");
            return None;
        }
        count(state, "nat:allocated");
        state.emit(&format!("nat map flow={} port={port}", p.flow));
        Some(i64::from(port))
    }

    /// A fresh port for `flow`, claiming a block if needed.
    fn allocate(&mut self, flow: &str, state: &mut impl State) -> Option<u16> {
        self.resume(state);
        if let Some(port) = self.next_port(state) {
            return Some(port);
        }
        let now = state.now_ms();
        if self.retry_at.is_some_and(|at| now < at) {
            return None;
        }
        match self.claim(flow, now, state) {
            Some(b) => {
                self.active = Some(Active { block: b, used: 0 });
                self.retry_at = None;
                // Only a hint for a restarted instance; without it a restart claims anew.
                let _ = state.set(ACTIVE_KEY, Value::Int(i64::from(b)));
                self.next_port(state)
            }
            None => {
                self.retry_at = Some(now.saturating_add(CLAIM_RETRY_MS));
                None
            }
        }
    }

    /// After a start or restart of the instance, continues the active block recorded in
    /// the store, where the last instance left it.
    fn resume(&mut self, state: &mut impl State) {
        if self.resumed {
            return;
        }
        self.resumed = true;
        let Ok(Some(Value::Int(b))) = state.get(ACTIVE_KEY) else { return };
        let Some(b) = u32::try_from(b).ok().filter(|b| *b < self.blocks) else { return };
        if let Ok(Some(Value::Int(used))) = state.get(&block_key(b)) {
            let used = u32::try_from(used.max(0)).unwrap_or(u32::MAX).min(self.block_ports(b).1);
            self.active = Some(Active { block: b, used });
        }
    }

    /// The next port of the active block, if it has one left.
    fn next_port(&mut self, state: &mut impl State) -> Option<u16> {
        let (first, len) = self.block_ports(self.active?.block);
        let active = self.active.as_mut()?;
        if active.used >= len {
            return None;
        }
        // The claim key counts the block's ports handed out, so a restarted instance
        // continues after the last port handed out. A count the node refuses to add to
        // (a value written behind the NF's back) gives no port.
        let used = state.counter_add(&block_key(active.block), 1).ok()?;
        active.used = u32::try_from(used).unwrap_or(u32::MAX);
        // Only a store changed behind the NF's back can put the count out of bounds.
        (1..=len).contains(&active.used).then(|| first + (active.used - 1) as u16)
    }

    /// One attempt to claim a block (the protocol in the crate documentation).
    fn claim(&mut self, flow: &str, now: i64, state: &mut impl State) -> Option<u32> {
        let n = u64::from(self.blocks);
        let seed = fnv1a(flow.as_bytes());
        let mut candidate = (seed % n) as u32;
        let mut reads = 0;
        for _ in 0..self.blocks {
            let b = candidate;
            candidate = (candidate + 1) % self.blocks;
            let key = block_key(b);
            if !matches!(state.get(&key), Ok(None)) {
                // Ours already: in use or used up (or unreadable: not to be claimed).
                continue;
            }
            if reads == MAX_CLAIM_READS {
                break;
            }
            reads += 1;
            if state.set(&key, Value::Int(0)).is_err() {
                count(state, "nat:claim_errors");
                return None;
            }
            match count_all(state, &key) {
                Some(1) => {
                    count(state, "nat:claimed");
                    return Some(b);
                }
                Some(claims) if claims > 1 => {
                    let _ = state.del(&key);
                    count(state, "nat:conflicts");
                    candidate = (mix(seed ^ mix(now as u64) ^ u64::from(reads)) % n) as u32;
                }
                // Zero (our own claim missing) or a failed read: not usable, and another
                // read now would most likely fail the same way.
                _ => {
                    let _ = state.del(&key);
                    count(state, "nat:claim_errors");
                    return None;
                }
            }
        }
        None
    }
}

/// How many members of the cluster (this one included) hold `key`: a global read of
/// its exact pattern with the reducer `count` and consistency `all`. `None` if the read
/// failed (a member did not answer) or answered no integer.
fn count_all(state: &mut impl State, key: &str) -> Option<i64> {
    match state.global_all(&pattern::exact(key), "count", CLAIM_TIMEOUT_MS) {
        Ok(None) => Some(0),
        Ok(Some(item)) => match item.value {
            Value::Int(n) => Some(n),
            _ => None,
        },
        Err(_) => None,
    }
}

/// Adds 1 to a counter kept for the operator; a refused add only loses that count.
fn count(state: &mut impl State, key: &str) {
    let _ = state.counter_add(key, 1);
}

/// The Wasm form: [`Nat`] on the node's state, wired to the NF ABI.
#[cfg(target_arch = "wasm32")]
mod guest {
    use alloc::string::String;
    use estate_guest::{HostState, Nf, Packet, Verdict};

    use crate::{Nat, count};

    /// [`Nat`] as an [`Nf`].
    #[derive(Debug)]
    pub struct NatNf(Nat);

    impl Nf for NatNf {
        fn init(config: &str) -> Result<Self, String> {
            Nat::from_config(config).map(NatNf)
        }

        fn on_packet(&mut self, packet: &Packet<'_>) -> Verdict {
            let decision = self.0.decide(packet, &mut HostState);
            match decision.rewrite {
                Some(rewrite) if estate_guest::nf::rewrite(&rewrite).is_err() => {
                    count(&mut HostState, "nat:rewrite_errors");
                    Verdict::Drop
                }
                _ => decision.verdict,
            }
        }
    }
}

#[cfg(target_arch = "wasm32")]
pub use guest::NatNf;

#[cfg(target_arch = "wasm32")]
estate_guest::nf!(NatNf);

#[cfg(test)]
mod tests;
