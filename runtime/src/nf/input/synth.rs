//! Packet sources for NFs: a seeded synthetic generator (flows, payloads, a share of
//! them carrying patterns), with the host-side parse into the metadata an NF receives.
//!
//! The same seed always gives the same packets, on every machine, so runs and tests
//! are repeatable and the native and Wasm forms of an NF can be compared packet by
//! packet.

use std::fmt;
use std::str::FromStr;

use estate_guest::nf::{Direction, Packet, flow_key};

use crate::nf::input::live::Wire;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A packet owned by the host, with the metadata the host parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedPacket {
    /// IP protocol.
    pub proto: u8,
    /// Source address and port.
    pub src: ([u8; 4], u16),
    /// Destination address and port.
    pub dst: ([u8; 4], u16),
    /// Direction within the flow.
    pub direction: Direction,
    /// The fabric's move mark (the paper's VLAN tag): 0 for a flow that was never
    /// moved, else a number that changes with every move of the flow (see
    /// [`crate::switch::mark_of_move`]), so a node can tell a flow that came back from
    /// one it already took over.
    pub mark: u16,
    /// The TCP header's flags byte (`estate_guest::nf::tcp`); 0 for a packet that is
    /// not TCP.
    pub tcp_flags: u8,
    /// Canonical flow key (both directions alike).
    pub flow: String,
    /// Transport payload.
    pub payload: Vec<u8>,
    /// The frame as it came off a live interface, with its side and capture time (a
    /// live or inline input's packets; `None` for every other source).
    pub wire: Option<Box<Wire>>,
}

impl OwnedPacket {
    /// Builds a packet, computing its flow key (no TCP flags).
    pub fn new(proto: u8, src: ([u8; 4], u16), dst: ([u8; 4], u16), direction: Direction, payload: Vec<u8>) -> Self {
        OwnedPacket {
            proto,
            src,
            dst,
            direction,
            mark: 0,
            tcp_flags: 0,
            flow: flow_key(proto, src, dst),
            payload,
            wire: None,
        }
    }

    /// Whether the fabric marked the flow as moved.
    pub fn moved(&self) -> bool {
        self.mark != 0
    }

    /// The borrowed form the NF ABI encodes.
    pub fn as_packet(&self) -> Packet<'_> {
        Packet {
            proto: self.proto,
            src: self.src,
            dst: self.dst,
            direction: self.direction,
            moved: self.moved(),
            tcp_flags: self.tcp_flags,
            flow: &self.flow,
            payload: &self.payload,
        }
    }
}

/// Settings of the synthetic generator. As text (`--input synth:…`):
/// `seed=1,flows=100,packets=10000,share=0.1,patterns=attack|evil,payload=text`.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthConfig {
    /// Seed of the generator.
    pub seed: u64,
    /// Number of distinct flows.
    pub flows: usize,
    /// Number of packets.
    pub packets: usize,
    /// Share (0 to 1) of packets whose payload carries one of `patterns`.
    pub pattern_share: f64,
    /// Byte patterns planted in payloads.
    pub patterns: Vec<String>,
    /// Index of the first flow used: `first=10,flows=10` is flows 10..20 of the same
    /// deterministic flow set, so two sources can share some flows and not others.
    pub first: usize,
    /// Mark every packet as belonging to a moved flow (mark 1, as the fabric marks a
    /// flow's first move to this node).
    pub moved: bool,
    /// What payloads are made of (besides planted patterns).
    pub payload: PayloadKind,
}

/// The bytes of synthetic payloads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PayloadKind {
    /// Random lowercase letters (`payload=text`): every byte a pattern's letters are
    /// made of is common.
    #[default]
    Text,
    /// Uniformly random bytes (`payload=binary`), as encrypted or compressed traffic
    /// looks: any given byte value is rare.
    Binary,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            seed: 1,
            flows: 100,
            packets: 10_000,
            pattern_share: 0.1,
            patterns: vec!["attack".into(), "evil".into()],
            first: 0,
            moved: false,
            payload: PayloadKind::Text,
        }
    }
}

impl FromStr for SynthConfig {
    type Err = String;

    fn from_str(s: &str) -> Result<SynthConfig, String> {
        let mut c = SynthConfig::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| format!("synthetic input: {part:?} is not key=value"))?;
            let bad = |what: &str| format!("synthetic input: bad {what} {v:?}");
            match k {
                "seed" => c.seed = v.parse().map_err(|_| bad("seed"))?,
                "flows" => c.flows = v.parse().map_err(|_| bad("flows"))?,
                "packets" => c.packets = v.parse().map_err(|_| bad("packets"))?,
                "share" => c.pattern_share = v.parse().map_err(|_| bad("share"))?,
                "first" => c.first = v.parse().map_err(|_| bad("first"))?,
                "moved" => c.moved = v.parse::<u8>().map_err(|_| bad("moved"))? != 0,
                "patterns" => c.patterns = v.split('|').filter(|p| !p.is_empty()).map(String::from).collect(),
                "payload" => {
                    c.payload = match v {
                        "text" => PayloadKind::Text,
                        "binary" => PayloadKind::Binary,
                        _ => return Err(bad("payload (text or binary)")),
                    }
                }
                other => return Err(format!("synthetic input: unknown setting {other:?}")),
            }
        }
        if c.flows == 0 || !(0.0..=1.0).contains(&c.pattern_share) {
            return Err("synthetic input: flows must be > 0 and share within 0..=1".into());
        }
        if c.pattern_share > 0.0 && c.patterns.is_empty() {
            return Err("synthetic input: share > 0 needs patterns".into());
        }
        Ok(c)
    }
}

impl fmt::Display for SynthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed={},flows={},packets={},share={},patterns={},first={},moved={},payload={}",
            self.seed,
            self.flows,
            self.packets,
            self.pattern_share,
            self.patterns.join("|"),
            self.first,
            self.moved as u8,
            match self.payload {
                PayloadKind::Text => "text",
                PayloadKind::Binary => "binary",
            }
        )
    }
}

/// One synthetic flow: a client and a server endpoint.
#[derive(Clone, Copy, Debug)]
struct Flow {
    proto: u8,
    client: ([u8; 4], u16),
    server: ([u8; 4], u16),
}

/// The synthetic packet stream of `config`: packets spread over the flows at random,
/// two thirds client-to-server; payloads of 16 to 512 random lowercase letters (or
/// random bytes, [`PayloadKind::Binary`]), a `pattern_share` of them with one pattern
/// planted at a random offset.
pub fn synthetic(config: &SynthConfig) -> impl Iterator<Item = OwnedPacket> + use<> {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let flows: Vec<Flow> = (config.first..config.first + config.flows)
        .map(|i| Flow {
            proto: if i % 5 == 4 { 17 } else { 6 },
            client: ([10, 0, (i / 250) as u8, (i % 250) as u8 + 1], 20_000 + (i % 40_000) as u16),
            server: ([192, 168, 0, (i % 8) as u8 + 1], if i % 5 == 4 { 53 } else { 443 }),
        })
        .collect();
    let config = config.clone();
    (0..config.packets).map(move |_| {
        let flow = flows[rng.random_range(0..flows.len())];
        let forward = rng.random_range(0..3) < 2;
        let len = rng.random_range(16..=512usize);
        let mut payload: Vec<u8> = match config.payload {
            PayloadKind::Text => (0..len).map(|_| rng.random_range(b'a'..=b'z')).collect(),
            PayloadKind::Binary => (0..len).map(|_| rng.random()).collect(),
        };
        if !config.patterns.is_empty() && rng.random_bool(config.pattern_share) {
            let pattern = config.patterns[rng.random_range(0..config.patterns.len())].as_bytes();
            if pattern.len() <= payload.len() {
                let at = rng.random_range(0..=payload.len() - pattern.len());
                payload[at..at + pattern.len()].copy_from_slice(pattern);
            }
        }
        let (src, dst, direction) = if forward {
            (flow.client, flow.server, Direction::Forward)
        } else {
            (flow.server, flow.client, Direction::Reverse)
        };
        let mut packet = OwnedPacket::new(flow.proto, src, dst, direction, payload);
        packet.mark = u16::from(config.moved);
        packet
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_packets() {
        let c = SynthConfig { packets: 500, ..SynthConfig::default() };
        let a: Vec<_> = synthetic(&c).collect();
        let b: Vec<_> = synthetic(&c).collect();
        assert_eq!(a, b);
        let other: Vec<_> = synthetic(&SynthConfig { seed: 2, ..c.clone() }).collect();
        assert_ne!(a, other);
    }

    #[test]
    fn both_directions_share_a_flow_key_and_patterns_are_planted() {
        let c = SynthConfig { packets: 2000, flows: 10, pattern_share: 0.25, ..SynthConfig::default() };
        let packets: Vec<_> = synthetic(&c).collect();
        let flows: std::collections::BTreeSet<&str> = packets.iter().map(|p| p.flow.as_str()).collect();
        assert_eq!(flows.len(), 10);
        assert!(packets.iter().any(|p| p.direction == Direction::Reverse));
        let has = |p: &OwnedPacket, pat: &[u8]| p.payload.windows(pat.len()).any(|w| w == pat);
        let carrying = packets.iter().filter(|p| has(p, b"evil") || has(p, b"attack")).count();
        assert!((300..700).contains(&carrying), "{carrying} of 2000 carry a pattern");
    }

    #[test]
    fn config_parses_and_refuses_nonsense() {
        let c: SynthConfig = "seed=7,flows=3,packets=9,share=0.5,patterns=a|b".parse().unwrap();
        assert_eq!((c.seed, c.flows, c.packets, c.patterns.len()), (7, 3, 9, 2));
        assert_eq!(c.to_string().parse::<SynthConfig>().unwrap(), c);
        assert!("flows=0".parse::<SynthConfig>().is_err());
        assert!("share=2".parse::<SynthConfig>().is_err());
        assert!("bogus=1".parse::<SynthConfig>().is_err());
        let binary: SynthConfig = "payload=binary".parse().unwrap();
        assert_eq!(binary.payload, PayloadKind::Binary);
        assert_eq!(binary.to_string().parse::<SynthConfig>().unwrap(), binary);
        assert!("payload=jpeg".parse::<SynthConfig>().unwrap_err().contains("text or binary"));
    }

    #[test]
    fn binary_payloads_use_every_byte_and_still_carry_patterns() {
        let c = SynthConfig { packets: 400, payload: PayloadKind::Binary, ..SynthConfig::default() };
        let packets: Vec<OwnedPacket> = synthetic(&c).collect();
        let mut seen = [false; 256];
        packets.iter().flat_map(|p| &p.payload).for_each(|&b| seen[b as usize] = true);
        assert!(seen.iter().all(|&s| s), "every byte value occurs");
        let has = |p: &OwnedPacket, pat: &[u8]| p.payload.windows(pat.len()).any(|w| w == pat);
        assert!(packets.iter().filter(|p| has(p, b"evil") || has(p, b"attack")).count() > 10);
    }
}
