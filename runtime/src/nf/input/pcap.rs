//! pcap replay: classic pcap files (read and written with the `pcap-file` crate) of
//! Ethernet frames, optionally 802.1Q-tagged, carrying IPv4 with TCP or UDP.
//!
//! As in the paper, the fabric marks flows it moved with a VLAN tag: a tagged frame is
//! a packet of a moved flow, and its VLAN id is the flow's move mark
//! ([`OwnedPacket::mark`]), which changes with every move so a node can tell a new move
//! from one it already handled. A flow's forward direction is the direction of the first
//! packet of it in the file. Frames that are not IPv4 TCP/UDP (ARP, IPv6, ICMP…) or
//! are truncated are skipped and counted, never a panic.
//!
//! The same frames travel from the switch emulator to a node's steered input
//! ([`crate::switch`]), parsed by the same code.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::time::Duration;

use estate_guest::nf::{Direction, flow_key};
use pcap_file::pcap::{PcapPacket, PcapReader, PcapWriter};

use crate::nf::input::frame::{self, ETHERTYPE_IPV4, ETHERTYPE_VLAN, VLAN_ID};
use crate::nf::input::synth::OwnedPacket;

pub use crate::nf::input::frame::Parsed;

/// Parses an Ethernet frame; `None` for anything but a well-formed IPv4 TCP/UDP
/// datagram ([`frame::classify`] says why).
pub fn parse(frame: &[u8]) -> Option<Parsed<'_>> {
    frame::classify(frame).ok().map(|(parsed, _)| parsed)
}

/// Builds the Ethernet frame of `p`: 802.1Q-tagged with its mark as VLAN id if it is
/// moved, untagged otherwise. A mark is a VLAN id: only its low 12 bits are kept.
pub fn frame(p: &OwnedPacket) -> Vec<u8> {
    let l4_header = if p.proto == 6 { 20 } else { 8 };
    let total = 20 + l4_header + p.payload.len();
    let mut f = Vec::with_capacity(18 + total);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1]);
    if p.mark != 0 {
        f.extend_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
        f.extend_from_slice(&(p.mark & VLAN_ID).to_be_bytes());
    }
    f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&(total as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x40, 0, 64, p.proto, 0, 0]);
    f.extend_from_slice(&p.src.0);
    f.extend_from_slice(&p.dst.0);
    f.extend_from_slice(&p.src.1.to_be_bytes());
    f.extend_from_slice(&p.dst.1.to_be_bytes());
    if p.proto == 6 {
        f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    } else {
        f.extend_from_slice(&((8 + p.payload.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
    }
    f.extend_from_slice(&p.payload);
    f
}

/// Why a pcap file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    /// The file could not be opened or created.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a pcap file, or writing it failed.
    #[error("{path}: {source}")]
    Format {
        /// The file.
        path: String,
        /// What the pcap library said.
        source: pcap_file::PcapError,
    },
}

fn file_error(path: &Path) -> impl FnOnce(std::io::Error) -> PcapError + '_ {
    move |source| PcapError::File { path: path.display().to_string(), source }
}

fn format_error(path: &Path) -> impl FnOnce(pcap_file::PcapError) -> PcapError + '_ {
    move |source| PcapError::Format { path: path.display().to_string(), source }
}

/// Writes `packets` to a pcap file at `path`; returns how many were written.
pub fn write(path: &Path, packets: impl IntoIterator<Item = OwnedPacket>) -> Result<usize, PcapError> {
    let file = File::create(path).map_err(file_error(path))?;
    let mut writer = PcapWriter::new(file).map_err(format_error(path))?;
    let mut n = 0;
    for (i, p) in packets.into_iter().enumerate() {
        let data = frame(&p);
        let packet = PcapPacket::new(Duration::from_micros(i as u64 * 10), data.len() as u32, &data);
        writer.write_packet(&packet).map_err(format_error(path))?;
        n += 1;
    }
    Ok(n)
}

/// Flows whose direction a receiver of frames remembers, at most.
const MAX_DIRECTIONS: usize = 1 << 20;

/// Flow directions as a receiver of frames sees them: a flow's forward direction is the
/// direction of the first packet of it seen here (of the last [`MAX_DIRECTIONS`] flows).
#[derive(Debug, Default)]
pub struct FlowDirections {
    first_src: HashMap<String, ([u8; 4], u16)>,
}

impl FlowDirections {
    /// The packet of a parsed frame, with its flow key and direction.
    pub fn packet(&mut self, parsed: &Parsed<'_>) -> OwnedPacket {
        let flow = flow_key(parsed.proto, parsed.src, parsed.dst);
        if self.first_src.len() >= MAX_DIRECTIONS && !self.first_src.contains_key(&flow) {
            // A live input sees flows without end: forget them all rather than grow
            // without bound (a flow seen again starts over as forward).
            self.first_src.clear();
        }
        let first = *self.first_src.entry(flow.clone()).or_insert(parsed.src);
        let direction = if first == parsed.src { Direction::Forward } else { Direction::Reverse };
        OwnedPacket {
            proto: parsed.proto,
            src: parsed.src,
            dst: parsed.dst,
            direction,
            mark: parsed.mark,
            tcp_flags: parsed.tcp_flags,
            flow,
            payload: parsed.payload.to_vec(),
            wire: None,
        }
    }
}

/// The packets of a pcap file, in file order, read from `R` (a file by default).
pub struct PcapSource<R: Read = BufReader<File>> {
    reader: PcapReader<R>,
    directions: FlowDirections,
    /// Frames skipped (not IPv4 TCP/UDP, or malformed).
    pub skipped: u64,
}

impl<R: Read> std::fmt::Debug for PcapSource<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcapSource").field("skipped", &self.skipped).finish_non_exhaustive()
    }
}

/// Opens a pcap file for replay.
pub fn read(path: &Path) -> Result<PcapSource, PcapError> {
    let file = File::open(path).map_err(file_error(path))?;
    PcapSource::from_reader(BufReader::new(file), &path.display().to_string())
}

impl<R: Read> PcapSource<R> {
    /// Replays the pcap file that `reader` yields, from its global header on; `name`
    /// names it in errors.
    pub fn from_reader(reader: R, name: &str) -> Result<PcapSource<R>, PcapError> {
        let reader = PcapReader::new(reader).map_err(|source| PcapError::Format { path: name.to_string(), source })?;
        Ok(PcapSource { reader, directions: FlowDirections::default(), skipped: 0 })
    }
}

impl<R: Read> Iterator for PcapSource<R> {
    type Item = OwnedPacket;

    fn next(&mut self) -> Option<OwnedPacket> {
        loop {
            let packet = match self.reader.next_packet()? {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!("pcap replay stopped at a bad record: {e}");
                    return None;
                }
            };
            let Some(parsed) = parse(&packet.data) else {
                self.skipped += 1;
                continue;
            };
            return Some(self.directions.packet(&parsed));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nf::input::synth::{SynthConfig, synthetic};

    #[test]
    fn synthetic_traffic_survives_a_pcap_round_trip() {
        let config: SynthConfig = "seed=3,flows=30,packets=800,share=0.2,moved=1".parse().unwrap();
        let packets: Vec<OwnedPacket> = synthetic(&config).collect();
        let path = std::env::temp_dir().join(format!("estate-pcap-test-{}.pcap", std::process::id()));
        assert_eq!(write(&path, packets.clone()).unwrap(), 800);
        let back: Vec<OwnedPacket> = read(&path).unwrap().collect();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(back.len(), packets.len());
        for (a, b) in packets.iter().zip(&back) {
            assert_eq!(
                (a.proto, a.src, a.dst, &a.flow, &a.payload, a.mark),
                (b.proto, b.src, b.dst, &b.flow, &b.payload, b.mark)
            );
        }
    }

    #[test]
    fn the_vlan_id_is_the_move_mark() {
        let mut p = OwnedPacket::new(17, ([1, 2, 3, 4], 5), ([6, 7, 8, 9], 10), Direction::Forward, b"hi".to_vec());
        let untagged = frame(&p);
        assert_eq!(parse(&untagged).unwrap().mark, 0);
        p.mark = 1;
        assert_eq!(frame(&p).len(), untagged.len() + 4, "a 4-byte 802.1Q tag");
        for mark in [1, 2, 42, 4094] {
            p.mark = mark;
            assert_eq!(parse(&frame(&p)).unwrap().mark, mark);
        }
        // Priority bits are not part of the VLAN id; a priority-only tag is no move.
        let mut f = frame(&p);
        f[14] |= 0xe0;
        assert_eq!(parse(&f).unwrap().mark, 4094);
        f[14..16].copy_from_slice(&0xe000u16.to_be_bytes());
        assert_eq!(parse(&f).unwrap().mark, 0);
    }

    #[test]
    fn other_and_broken_frames_are_skipped() {
        let p = OwnedPacket::new(6, ([1, 2, 3, 4], 5), ([6, 7, 8, 9], 10), Direction::Forward, b"hello".to_vec());
        let good = frame(&p);
        assert_eq!(parse(&good).unwrap().payload, b"hello");
        for cut in 0..good.len() - 5 {
            assert!(parse(&good[..cut]).is_none(), "cut at {cut}");
        }
        let mut arp = good.clone();
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert!(parse(&arp).is_none());
        let mut icmp = good;
        icmp[14 + 9] = 1;
        assert!(parse(&icmp).is_none());
    }

    #[test]
    fn a_tcp_header_shorter_than_five_words_is_malformed() {
        // Found by the `ethernet` fuzz target: a data offset of 2 to 4 words made the
        // rest of the TCP header part of the payload.
        let p = OwnedPacket::new(6, ([1, 2, 3, 4], 5), ([6, 7, 8, 9], 10), Direction::Forward, b"hello".to_vec());
        let mut f = frame(&p);
        let offset = 14 + 20 + 12;
        assert_eq!(f[offset], 0x50);
        for words in 0..5 {
            f[offset] = words << 4;
            assert!(parse(&f).is_none(), "data offset {words}");
        }
        f[offset] = 0x50;
        assert_eq!(parse(&f).unwrap().payload, b"hello");
    }
}
