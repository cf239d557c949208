//! Network functions: the packet record the host hands an NF, the [`Nf`] trait, and the
//! packet rewrite an NF may ask of the host ([`Rewrite`]; on wasm32 `rewrite`).
//!
//! The packet record is host-parsed metadata followed by the payload (`docs/abi.md`,
//! "Packet record"); [`Packet::encode`] and [`Packet::decode`] are used by both sides.

use alloc::string::String;
use alloc::vec::Vec;

#[cfg(target_arch = "wasm32")]
use crate::Error;
use crate::Verdict;
pub use crate::abi::{Brought, Direction};
use crate::codec::{DecodeError, Reader};

/// One packet as an NF sees it: the host's parse of its headers, and the payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    /// IP protocol number (6 TCP, 17 UDP, …).
    pub proto: u8,
    /// Source address and port.
    pub src: ([u8; 4], u16),
    /// Destination address and port.
    pub dst: ([u8; 4], u16),
    /// Direction within the flow.
    pub direction: Direction,
    /// The fabric marked this flow as moved to this node (the paper's VLAN tag).
    pub moved: bool,
    /// The TCP header's flags byte ([`tcp`]: `FIN`, `SYN`, …); 0 for a packet that is
    /// not TCP.
    pub tcp_flags: u8,
    /// The flow's key, the same for both directions (`proto:a.b.c.d:p-e.f.g.h:q`, lower
    /// endpoint first).
    pub flow: &'a str,
    /// The transport payload.
    pub payload: &'a [u8],
}

/// The bits of [`Packet::tcp_flags`]: the TCP header's flags byte.
pub mod tcp {
    /// No more data from the sender.
    pub const FIN: u8 = 0x01;
    /// Synchronise sequence numbers: opens a connection.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push the buffered data to the application.
    pub const PSH: u8 = 0x08;
    /// The acknowledgment number is significant.
    pub const ACK: u8 = 0x10;
    /// The urgent pointer is significant.
    pub const URG: u8 = 0x20;
    /// ECN echo.
    pub const ECE: u8 = 0x40;
    /// Congestion window reduced.
    pub const CWR: u8 = 0x80;
}

/// A rewrite of the packet being handled, asked of the host with `rewrite` (on wasm32): its
/// source becomes `src` and its destination `dst` (address and port each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rewrite {
    /// The new source address and port.
    pub src: ([u8; 4], u16),
    /// The new destination address and port.
    pub dst: ([u8; 4], u16),
}

impl Rewrite {
    /// The arguments of the `packet_rewrite` host call: `(src_ip, src_port, dst_ip,
    /// dst_port)`, each address as a big-endian `u32` (`a.b.c.d` is
    /// `a << 24 | b << 16 | c << 8 | d`) in an `i32`.
    pub fn to_args(&self) -> (i32, i32, i32, i32) {
        let ip = |ip: [u8; 4]| u32::from_be_bytes(ip) as i32;
        (ip(self.src.0), i32::from(self.src.1), ip(self.dst.0), i32::from(self.dst.1))
    }

    /// The rewrite the arguments of a `packet_rewrite` call ask for; `None` if a port
    /// is outside `0..=65535`.
    pub fn from_args(src_ip: i32, src_port: i32, dst_ip: i32, dst_port: i32) -> Option<Rewrite> {
        let ip = |ip: i32| (ip as u32).to_be_bytes();
        let src = (ip(src_ip), u16::try_from(src_port).ok()?);
        let dst = (ip(dst_ip), u16::try_from(dst_port).ok()?);
        Some(Rewrite { src, dst })
    }
}

/// Asks the host to rewrite the packet being handled as `rewrite` says (the
/// `packet_rewrite` host call; `docs/abi.md` says what the host does with it). Only
/// during [`Nf::on_packet`]; a second call for the same packet replaces the first.
/// [`Error::Refused`] when the host refuses (called outside `on_packet`).
#[cfg(target_arch = "wasm32")]
pub fn rewrite(rewrite: &Rewrite) -> Result<(), Error> {
    use crate::abi::{import, rewrite as status};
    let (src_ip, src_port, dst_ip, dst_port) = rewrite.to_args();
    match crate::hostcalls::packet_rewrite(src_ip, src_port, dst_ip, dst_port) {
        status::OK => Ok(()),
        status::ERROR => Err(Error::Refused("packet_rewrite: refused (only valid while a packet is handled)".into())),
        code => Err(Error::UnknownCode { call: import::PACKET_REWRITE, code: code.into() }),
    }
}

/// The canonical flow key of a 5-tuple: both directions give the same key.
pub fn flow_key(proto: u8, a: ([u8; 4], u16), b: ([u8; 4], u16)) -> String {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let ip = |x: [u8; 4]| alloc::format!("{}.{}.{}.{}", x[0], x[1], x[2], x[3]);
    alloc::format!("{proto}:{}:{}-{}:{}", ip(lo.0), lo.1, ip(hi.0), hi.1)
}

/// The packet record's fixed fields: proto, direction, moved, TCP flags, two endpoints.
const RECORD_HEADER: usize = 4 + 2 * (4 + 2);

impl<'a> Packet<'a> {
    /// Appends the packet record to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + self.encoded_len(), 0);
        self.write_to(&mut out[start..]);
    }

    /// The length of the packet record.
    pub fn encoded_len(&self) -> usize {
        RECORD_HEADER + 4 + self.flow.len() + 4 + self.payload.len()
    }

    /// Writes the packet record into `out`, which is exactly
    /// [`encoded_len`](Packet::encoded_len) bytes long (the host writes it straight into
    /// the guest's memory this way).
    ///
    /// # Panics
    /// If `out` has another length.
    pub fn write_to(&self, out: &mut [u8]) {
        assert_eq!(out.len(), self.encoded_len(), "a packet record's buffer has its length");
        let (header, rest) = out.split_at_mut(RECORD_HEADER);
        header[..4].copy_from_slice(&[self.proto, self.direction.code(), self.moved as u8, self.tcp_flags]);
        header[4..8].copy_from_slice(&self.src.0);
        header[8..10].copy_from_slice(&self.src.1.to_le_bytes());
        header[10..14].copy_from_slice(&self.dst.0);
        header[14..16].copy_from_slice(&self.dst.1.to_le_bytes());
        let (flow, rest) = rest.split_at_mut(4 + self.flow.len());
        flow[..4].copy_from_slice(&(self.flow.len() as u32).to_le_bytes());
        flow[4..].copy_from_slice(self.flow.as_bytes());
        rest[..4].copy_from_slice(&(self.payload.len() as u32).to_le_bytes());
        rest[4..].copy_from_slice(self.payload);
    }

    /// Decodes a buffer that holds exactly one packet record.
    pub fn decode(buf: &'a [u8]) -> Result<Packet<'a>, DecodeError> {
        let mut r = Reader::new(buf);
        let packet = Packet::read(&mut r)?;
        r.finish()?;
        Ok(packet)
    }

    /// Reads one packet record from `r` (a record says its own length, so records can
    /// follow one another, as in a batch).
    pub fn read(r: &mut Reader<'a>) -> Result<Packet<'a>, DecodeError> {
        // The fixed fields in one bounds check.
        let h: [u8; RECORD_HEADER] = r.array()?;
        let [proto, direction, moved, tcp_flags, ..] = h;
        let direction = Direction::from_code(direction).ok_or(DecodeError::BadTag(direction))?;
        let moved = moved != 0;
        let endpoint = |e: &[u8]| ([e[0], e[1], e[2], e[3]], u16::from_le_bytes([e[4], e[5]]));
        let (src, dst) = (endpoint(&h[4..10]), endpoint(&h[10..16]));
        let flow = r.str()?;
        let payload = r.bytes()?;
        Ok(Packet { proto, src, dst, direction, moved, tcp_flags, flow, payload })
    }
}

/// A batch of packets for `estate_on_packets` ([`crate::abi::batch`]): one verdict byte
/// per packet, one scan count (`u32`) per packet, then the packets' records back to
/// back.
pub mod batch {
    use super::*;
    use crate::abi::batch::PENDING;

    /// The length of the batch of `packets`.
    pub fn encoded_len(packets: &[Packet<'_>]) -> usize {
        5 * packets.len() + packets.iter().map(Packet::encoded_len).sum::<usize>()
    }

    /// Writes the batch of `packets` into `out`, which is exactly [`encoded_len`] bytes
    /// long: every verdict byte [`PENDING`], each packet's scan count as `scan` gives it.
    ///
    /// # Panics
    /// If `out` has another length.
    pub fn write_to(packets: &[Packet<'_>], mut scan: impl FnMut(&Packet<'_>) -> u32, out: &mut [u8]) {
        assert_eq!(out.len(), encoded_len(packets), "a batch's buffer has its length");
        let (verdicts, rest) = out.split_at_mut(packets.len());
        verdicts.fill(PENDING);
        let (scans, mut records) = rest.split_at_mut(4 * packets.len());
        for (packet, count) in packets.iter().zip(scans.chunks_exact_mut(4)) {
            count.copy_from_slice(&scan(packet).to_le_bytes());
            let (record, rest) = records.split_at_mut(packet.encoded_len());
            packet.write_to(record);
            records = rest;
        }
    }

    /// The verdicts the guest wrote, in order, up to the first byte that is not a verdict
    /// (still [`PENDING`], or a code the ABI does not define).
    pub fn verdicts(bytes: &[u8]) -> impl Iterator<Item = Verdict> + '_ {
        bytes.iter().map_while(|&b| Verdict::from_code(i32::from(b)))
    }

    /// A batch as the guest reads it.
    #[derive(Debug)]
    pub struct Split<'a> {
        /// One byte per packet, for its verdict.
        pub verdicts: &'a mut [u8],
        /// The scan counts, 4 bytes each (`u32`, little-endian).
        pub scans: &'a [u8],
        /// The records.
        pub records: Reader<'a>,
    }

    /// Splits a batch of `count` packets into its parts.
    pub fn split(buf: &mut [u8], count: usize) -> Result<Split<'_>, DecodeError> {
        if count.checked_mul(5).is_none_or(|fixed| fixed > buf.len()) {
            return Err(DecodeError::Truncated);
        }
        let (verdicts, rest) = buf.split_at_mut(count);
        let (scans, records) = rest.split_at(4 * count);
        Ok(Split { verdicts, scans, records: Reader::new(records) })
    }
}

/// A network function. One value of the type lives in the guest for as long as the NF
/// is loaded; the host calls it one packet at a time.
pub trait Nf: Sized {
    /// Builds the NF from its configuration (UTF-8 text whose format the NF defines).
    fn init(config: &str) -> Result<Self, String>;

    /// Handles one packet and decides its fate.
    fn on_packet(&mut self, packet: &Packet<'_>) -> Verdict;

    /// `flow` was moved to this node by the fabric. The host has already brought the
    /// flow's state (keys `flow:<flow>:…`) here, as `brought` says; this runs before
    /// the flow's first packet after each move here, so the NF can bring anything else
    /// it keys differently (see [`crate::State::take`]). Not called when the node runs
    /// without state sharing.
    fn on_flow_moved(&mut self, flow: &str, brought: Brought) {
        let _ = (flow, brought);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_round_trip_and_truncation() {
        let flow = flow_key(6, ([10, 0, 0, 2], 443), ([10, 0, 0, 1], 5000));
        assert_eq!(flow, "6:10.0.0.1:5000-10.0.0.2:443");
        assert_eq!(flow, flow_key(6, ([10, 0, 0, 1], 5000), ([10, 0, 0, 2], 443)));
        let p = Packet {
            proto: 6,
            src: ([10, 0, 0, 2], 443),
            dst: ([10, 0, 0, 1], 5000),
            direction: Direction::Reverse,
            moved: true,
            tcp_flags: tcp::SYN | tcp::ACK,
            flow: &flow,
            payload: b"GET /",
        };
        let mut buf = alloc::vec![7];
        p.encode(&mut buf);
        assert_eq!(buf.remove(0), 7, "appended after what was there");
        assert_eq!(buf.len(), p.encoded_len());
        assert_eq!(Packet::decode(&buf).unwrap(), p);
        let mut written = alloc::vec![0; p.encoded_len()];
        p.write_to(&mut written);
        assert_eq!(written, buf);
        for cut in 0..buf.len() {
            assert!(Packet::decode(&buf[..cut]).is_err());
        }
        // The flags byte follows `moved`.
        assert_eq!(&buf[..4], &[6, Direction::Reverse.code(), 1, 0x12]);
        let mut extra = buf.clone();
        extra.push(0);
        assert!(Packet::decode(&extra).is_err(), "trailing bytes");
    }

    #[test]
    #[should_panic(expected = "a packet record's buffer has its length")]
    fn a_record_is_written_only_into_a_buffer_of_its_length() {
        let p = Packet {
            proto: 17,
            src: ([10, 0, 0, 1], 1),
            dst: ([10, 0, 0, 2], 2),
            direction: Direction::Forward,
            moved: false,
            tcp_flags: 0,
            flow: "f",
            payload: b"x",
        };
        p.write_to(&mut alloc::vec![0; p.encoded_len() + 1]);
    }

    #[test]
    fn tcp_flags_are_the_header_bits() {
        let all = [tcp::FIN, tcp::SYN, tcp::RST, tcp::PSH, tcp::ACK, tcp::URG, tcp::ECE, tcp::CWR];
        for (i, flag) in all.iter().enumerate() {
            assert_eq!(*flag, 1 << i);
        }
    }

    #[test]
    fn rewrite_arguments_round_trip_and_ports_are_checked() {
        let r = Rewrite { src: ([192, 0, 2, 1], 20000), dst: ([10, 0, 0, 7], 65535) };
        let args = r.to_args();
        assert_eq!(args, (0xc000_0201_u32 as i32, 20000, 0x0a00_0007, 65535));
        assert_eq!(Rewrite::from_args(args.0, args.1, args.2, args.3), Some(r));
        let high = Rewrite { src: ([255, 255, 255, 255], 0), dst: ([128, 0, 0, 0], 1) };
        let a = high.to_args();
        assert_eq!(Rewrite::from_args(a.0, a.1, a.2, a.3), Some(high));
        for (sp, dp) in [(-1, 0), (0, 65536), (i32::MIN, 1), (1, i32::MAX)] {
            assert_eq!(Rewrite::from_args(0, sp, 0, dp), None, "{sp} {dp}");
        }
    }
}
