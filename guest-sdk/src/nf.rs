//! Network functions: the packet record the host hands an NF, and the [`Nf`] trait.
//!
//! The packet record is host-parsed metadata followed by the payload (`docs/abi.md`,
//! "Packet record"); [`Packet::encode`] and [`Packet::decode`] are used by both sides.

use alloc::string::String;
use alloc::vec::Vec;

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
    /// The flow's key, the same for both directions (`proto:a.b.c.d:p-e.f.g.h:q`, lower
    /// endpoint first).
    pub flow: &'a str,
    /// The transport payload.
    pub payload: &'a [u8],
}

/// The canonical flow key of a 5-tuple: both directions give the same key.
pub fn flow_key(proto: u8, a: ([u8; 4], u16), b: ([u8; 4], u16)) -> String {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let ip = |x: [u8; 4]| alloc::format!("{}.{}.{}.{}", x[0], x[1], x[2], x[3]);
    alloc::format!("{proto}:{}:{}-{}:{}", ip(lo.0), lo.1, ip(hi.0), hi.1)
}

impl<'a> Packet<'a> {
    /// Appends the packet record to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.proto);
        out.push(self.direction.code());
        out.push(self.moved as u8);
        out.extend_from_slice(&self.src.0);
        out.extend_from_slice(&self.src.1.to_le_bytes());
        out.extend_from_slice(&self.dst.0);
        out.extend_from_slice(&self.dst.1.to_le_bytes());
        out.extend_from_slice(&(self.flow.len() as u32).to_le_bytes());
        out.extend_from_slice(self.flow.as_bytes());
        out.extend_from_slice(&(self.payload.len() as u32).to_le_bytes());
        out.extend_from_slice(self.payload);
    }

    /// Decodes a buffer that holds exactly one packet record.
    pub fn decode(buf: &'a [u8]) -> Result<Packet<'a>, DecodeError> {
        let mut r = Reader::new(buf);
        let proto = r.u8()?;
        let direction = r.u8()?;
        let direction = Direction::from_code(direction).ok_or(DecodeError::BadTag(direction))?;
        let moved = r.u8()? != 0;
        let endpoint = |r: &mut Reader<'a>| -> Result<([u8; 4], u16), DecodeError> {
            let ip = [r.u8()?, r.u8()?, r.u8()?, r.u8()?];
            let port = u16::from_le_bytes([r.u8()?, r.u8()?]);
            Ok((ip, port))
        };
        let src = endpoint(&mut r)?;
        let dst = endpoint(&mut r)?;
        let flow = core::str::from_utf8(r.bytes()?).map_err(|_| DecodeError::BadUtf8)?;
        let payload = r.bytes()?;
        r.finish()?;
        Ok(Packet { proto, src, dst, direction, moved, flow, payload })
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
            flow: &flow,
            payload: b"GET /",
        };
        let mut buf = Vec::new();
        p.encode(&mut buf);
        assert_eq!(Packet::decode(&buf).unwrap(), p);
        for cut in 0..buf.len() {
            assert!(Packet::decode(&buf[..cut]).is_err());
        }
    }
}
