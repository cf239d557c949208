//! pcap replay: classic pcap files (read and written with the `pcap-file` crate) of
//! Ethernet frames, optionally 802.1Q-tagged, carrying IPv4 with TCP or UDP.
//!
//! As in the paper, the fabric marks flows it moved with a VLAN tag: a tagged frame is
//! a packet of a moved flow. A flow's forward direction is the direction of the first
//! packet of it in the file. Frames that are not IPv4 TCP/UDP (ARP, IPv6, ICMP…) or
//! are truncated are skipped and counted, never a panic.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::time::Duration;

use estate_guest::nf::{Direction, flow_key};
use pcap_file::pcap::{PcapPacket, PcapReader, PcapWriter};

use crate::traffic::OwnedPacket;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_VLAN: u16 = 0x8100;
/// The VLAN id [`write`] tags moved flows with (any tag marks a flow moved on reading).
pub const MOVED_VLAN: u16 = 42;

/// The transport parts of a frame.
#[derive(Debug, PartialEq, Eq)]
pub struct Parsed<'a> {
    /// IP protocol (6 or 17).
    pub proto: u8,
    /// Source address and port.
    pub src: ([u8; 4], u16),
    /// Destination address and port.
    pub dst: ([u8; 4], u16),
    /// Whether the frame carried a VLAN tag.
    pub tagged: bool,
    /// Transport payload.
    pub payload: &'a [u8],
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Parses an Ethernet frame; `None` for anything but well-formed IPv4 TCP/UDP.
pub fn parse(frame: &[u8]) -> Option<Parsed<'_>> {
    let mut ethertype = be16(frame, 12)?;
    let mut at = 14;
    let tagged = ethertype == ETHERTYPE_VLAN;
    if tagged {
        ethertype = be16(frame, 16)?;
        at = 18;
    }
    if ethertype != ETHERTYPE_IPV4 {
        return None;
    }
    let ip = frame.get(at..)?;
    let (version, ihl) = (ip.first()? >> 4, usize::from(ip.first()? & 0x0f) * 4);
    let total = usize::from(be16(ip, 2)?);
    if version != 4 || ihl < 20 || total < ihl || total > ip.len() {
        return None;
    }
    let proto = ip[9];
    let src_ip: [u8; 4] = ip[12..16].try_into().ok()?;
    let dst_ip: [u8; 4] = ip[16..20].try_into().ok()?;
    let l4 = &ip[ihl..total];
    let header = match proto {
        6 => usize::from(l4.get(12)? >> 4) * 4,
        17 => 8,
        _ => return None,
    };
    if header < 8 || header > l4.len() {
        return None;
    }
    Some(Parsed { proto, src: (src_ip, be16(l4, 0)?), dst: (dst_ip, be16(l4, 2)?), tagged, payload: &l4[header..] })
}

/// Builds the Ethernet frame of `p` (tagged with [`MOVED_VLAN`] if it is moved).
pub fn frame(p: &OwnedPacket) -> Vec<u8> {
    let l4_header = if p.proto == 6 { 20 } else { 8 };
    let total = 20 + l4_header + p.payload.len();
    let mut f = Vec::with_capacity(18 + total);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1]);
    if p.moved {
        f.extend_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
        f.extend_from_slice(&MOVED_VLAN.to_be_bytes());
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

/// Writes `packets` to a pcap file at `path`; returns how many were written.
pub fn write(path: &Path, packets: impl IntoIterator<Item = OwnedPacket>) -> Result<usize, String> {
    let file = File::create(path).map_err(|e| format!("creating {}: {e}", path.display()))?;
    let mut writer = PcapWriter::new(file).map_err(|e| format!("writing {}: {e}", path.display()))?;
    let mut n = 0;
    for (i, p) in packets.into_iter().enumerate() {
        let data = frame(&p);
        let packet = PcapPacket::new(Duration::from_micros(i as u64 * 10), data.len() as u32, &data);
        writer.write_packet(&packet).map_err(|e| format!("writing {}: {e}", path.display()))?;
        n += 1;
    }
    Ok(n)
}

/// The packets of a pcap file, in file order.
pub struct PcapSource {
    reader: PcapReader<BufReader<File>>,
    first_src: HashMap<String, ([u8; 4], u16)>,
    /// Frames skipped (not IPv4 TCP/UDP, or malformed).
    pub skipped: u64,
}

impl std::fmt::Debug for PcapSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcapSource").field("skipped", &self.skipped).finish_non_exhaustive()
    }
}

/// Opens a pcap file for replay.
pub fn read(path: &Path) -> Result<PcapSource, String> {
    let file = File::open(path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    let reader =
        PcapReader::new(BufReader::new(file)).map_err(|e| format!("{}: not a pcap file: {e}", path.display()))?;
    Ok(PcapSource { reader, first_src: HashMap::new(), skipped: 0 })
}

impl Iterator for PcapSource {
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
            let flow = flow_key(parsed.proto, parsed.src, parsed.dst);
            let first = *self.first_src.entry(flow.clone()).or_insert(parsed.src);
            let direction = if first == parsed.src { Direction::Forward } else { Direction::Reverse };
            return Some(OwnedPacket {
                proto: parsed.proto,
                src: parsed.src,
                dst: parsed.dst,
                direction,
                moved: parsed.tagged,
                flow,
                payload: parsed.payload.to_vec(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::{SynthConfig, synthetic};

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
                (a.proto, a.src, a.dst, &a.flow, &a.payload, a.moved),
                (b.proto, b.src, b.dst, &b.flow, &b.payload, b.moved)
            );
        }
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
}
