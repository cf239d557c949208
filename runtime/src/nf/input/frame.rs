//! Ethernet frames as they come off a wire: what the host can hand an NF (IPv4 TCP or
//! UDP, whole datagrams), what it cannot (ARP, other protocols, fragments) and what is
//! broken (truncated headers, lengths that do not add up); and the edits an inline NF
//! makes to a frame it forwards: its VLAN tag (the fabric's move mark) and the
//! addresses and ports a NAT rewrites, with the IP and TCP/UDP checksums computed again
//! (by `etherparse`).
//!
//! Classifying never panics and never reads past the frame, whatever its bytes.

use etherparse::{Ipv4Header, TcpHeader, UdpHeader};

pub(crate) const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
pub(crate) const ETHERTYPE_VLAN: u16 = 0x8100;
/// The VLAN id bits of an 802.1Q tag (the rest is priority and drop eligibility).
pub(crate) const VLAN_ID: u16 = 0x0fff;
/// The IPv4 flags-and-offset field's "more fragments" bit and offset bits.
const MORE_FRAGMENTS: u16 = 0x2000;
const FRAGMENT_OFFSET: u16 = 0x1fff;

/// The transport parts of a frame.
#[derive(Debug, PartialEq, Eq)]
pub struct Parsed<'a> {
    /// IP protocol (6 or 17).
    pub proto: u8,
    /// Source address and port.
    pub src: ([u8; 4], u16),
    /// Destination address and port.
    pub dst: ([u8; 4], u16),
    /// The VLAN id of the frame's 802.1Q tag: the move mark, 0 without a tag (or with a
    /// priority-only tag, whose VLAN id is 0).
    pub mark: u16,
    /// The TCP flags byte (0 for UDP).
    pub tcp_flags: u8,
    /// Transport payload.
    pub payload: &'a [u8],
}

/// Where a frame's headers are, once classified as a flow's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Offset of the IPv4 header.
    pub ip: usize,
    /// Offset of the TCP/UDP header.
    pub l4: usize,
    /// End of the IPv4 datagram (Ethernet padding may follow).
    pub end: usize,
}

/// A frame the host does not hand an NF, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unparsed {
    /// ARP: carries no flow, and a link needs it to work at all.
    #[error("an ARP frame")]
    Arp,
    /// Another EtherType (IPv6, LLDP…).
    #[error("EtherType {0:#06x}")]
    NotIpv4(u16),
    /// IPv4 carrying neither TCP nor UDP (ICMP…).
    #[error("IP protocol {0}")]
    NotTcpUdp(u8),
    /// A fragment of an IPv4 datagram: only the first holds the ports.
    #[error("an IPv4 fragment")]
    Fragment,
    /// A broken frame: what is wrong with it.
    #[error("a malformed frame ({0})")]
    Malformed(&'static str),
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Classifies an Ethernet frame: a flow's packet, or why not.
pub fn classify(frame: &[u8]) -> Result<(Parsed<'_>, Layout), Unparsed> {
    use Unparsed::Malformed;
    let mut ethertype = be16(frame, 12).ok_or(Malformed("shorter than an Ethernet header"))?;
    let mut at = 14;
    let mut mark = 0;
    if ethertype == ETHERTYPE_VLAN {
        mark = be16(frame, 14).ok_or(Malformed("truncated VLAN tag"))? & VLAN_ID;
        ethertype = be16(frame, 16).ok_or(Malformed("truncated VLAN tag"))?;
        at = 18;
    }
    match ethertype {
        ETHERTYPE_IPV4 => {}
        ETHERTYPE_ARP => return Err(Unparsed::Arp),
        other => return Err(Unparsed::NotIpv4(other)),
    }
    let ip = &frame[at..];
    let first = *ip.first().ok_or(Malformed("no IPv4 header"))?;
    let (version, ihl) = (first >> 4, usize::from(first & 0x0f) * 4);
    if version != 4 {
        return Err(Malformed("IP version is not 4"));
    }
    if ihl < 20 || ip.len() < ihl {
        return Err(Malformed("bad IPv4 header length"));
    }
    let total = usize::from(be16(ip, 2).expect("within the header"));
    if total < ihl || total > ip.len() {
        return Err(Malformed("bad IPv4 total length"));
    }
    let fragment = be16(ip, 6).expect("within the header");
    if fragment & (MORE_FRAGMENTS | FRAGMENT_OFFSET) != 0 {
        return Err(Unparsed::Fragment);
    }
    let proto = ip[9];
    let src_ip: [u8; 4] = ip[12..16].try_into().expect("within the header");
    let dst_ip: [u8; 4] = ip[16..20].try_into().expect("within the header");
    let l4 = &ip[ihl..total];
    // TCP's header is its data offset (at least 5 words); UDP's is 8 bytes.
    let (header, tcp_flags) = match proto {
        6 => {
            let offset = usize::from(l4.get(12).ok_or(Malformed("truncated TCP header"))? >> 4) * 4;
            if offset < 20 || offset > l4.len() {
                return Err(Malformed("bad TCP data offset"));
            }
            (offset, l4[13])
        }
        17 if l4.len() >= 8 => (8, 0),
        17 => return Err(Malformed("truncated UDP header")),
        other => return Err(Unparsed::NotTcpUdp(other)),
    };
    let src = (src_ip, be16(l4, 0).expect("within the header"));
    let dst = (dst_ip, be16(l4, 2).expect("within the header"));
    let parsed = Parsed { proto, src, dst, mark, tcp_flags, payload: &l4[header..] };
    Ok((parsed, Layout { ip: at, l4: at + ihl, end: at + total }))
}

/// `frame` with its 802.1Q tag set to `mark` (added if untagged), or removed for mark 0.
/// A frame too short to have an EtherType is returned unchanged.
pub fn retag(frame: &[u8], mark: u16) -> Vec<u8> {
    if frame.len() < 14 {
        return frame.to_vec();
    }
    let tagged = be16(frame, 12) == Some(ETHERTYPE_VLAN) && frame.len() >= 18;
    let rest = if tagged { &frame[16..] } else { &frame[12..] };
    let mut out = Vec::with_capacity(frame.len() + 4);
    out.extend_from_slice(&frame[..12]);
    if mark != 0 {
        out.extend_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
        out.extend_from_slice(&(mark & VLAN_ID).to_be_bytes());
    }
    out.extend_from_slice(rest);
    out
}

/// Why a frame could not be rewritten.
#[derive(Debug, thiserror::Error)]
#[error("cannot rewrite the frame: {0}")]
pub struct RewriteError(String);

/// Rewrites a flow's frame in place: its source becomes `src` and its destination
/// `dst` (addresses and ports), and the IPv4 header checksum and the TCP or UDP
/// checksum are computed again. A UDP datagram sent without a checksum (0) stays so.
pub fn rewrite(frame: &mut [u8], src: ([u8; 4], u16), dst: ([u8; 4], u16)) -> Result<(), RewriteError> {
    let (parsed, at) = classify(frame).map_err(|e| RewriteError(e.to_string()))?;
    let proto = parsed.proto;
    frame[at.ip + 12..at.ip + 16].copy_from_slice(&src.0);
    frame[at.ip + 16..at.ip + 20].copy_from_slice(&dst.0);
    frame[at.l4..at.l4 + 2].copy_from_slice(&src.1.to_be_bytes());
    frame[at.l4 + 2..at.l4 + 4].copy_from_slice(&dst.1.to_be_bytes());
    let bad = |e: &dyn std::fmt::Display| RewriteError(e.to_string());
    let (ip, _) = Ipv4Header::from_slice(&frame[at.ip..at.l4]).map_err(|e| bad(&e))?;
    frame[at.ip + 10..at.ip + 12].copy_from_slice(&ip.calc_header_checksum().to_be_bytes());
    let segment = &frame[at.l4..at.end];
    let (field, sum) = if proto == 6 {
        let (tcp, payload) = TcpHeader::from_slice(segment).map_err(|e| bad(&e))?;
        (16, tcp.calc_checksum_ipv4_raw(src.0, dst.0, payload).map_err(|e| bad(&e))?)
    } else {
        let (udp, payload) = UdpHeader::from_slice(segment).map_err(|e| bad(&e))?;
        if udp.checksum == 0 {
            return Ok(());
        }
        (6, udp.calc_checksum_ipv4_raw(src.0, dst.0, payload).map_err(|e| bad(&e))?)
    };
    frame[at.l4 + field..at.l4 + field + 2].copy_from_slice(&sum.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn tcp_frame(payload: &[u8]) -> Vec<u8> {
        let builder = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(40000, 80, 7, 1024)
            .syn();
        let mut out = Vec::new();
        builder.write(&mut out, payload).unwrap();
        out
    }

    fn udp_frame(payload: &[u8]) -> Vec<u8> {
        let builder = PacketBuilder::ethernet2([2; 6], [4; 6]).ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).udp(5353, 53);
        let mut out = Vec::new();
        builder.write(&mut out, payload).unwrap();
        out
    }

    /// Checks every checksum of a frame with etherparse's own.
    fn checksums_hold(frame: &[u8]) {
        let (_, at) = classify(frame).unwrap();
        let (ip, _) = Ipv4Header::from_slice(&frame[at.ip..at.l4]).unwrap();
        assert_eq!(ip.header_checksum, ip.calc_header_checksum());
        if ip.protocol.0 == 6 {
            let (tcp, payload) = TcpHeader::from_slice(&frame[at.l4..at.end]).unwrap();
            assert_eq!(tcp.checksum, tcp.calc_checksum_ipv4(&ip, payload).unwrap());
        } else {
            let (udp, payload) = UdpHeader::from_slice(&frame[at.l4..at.end]).unwrap();
            assert_eq!(udp.checksum, udp.calc_checksum_ipv4(&ip, payload).unwrap());
        }
    }

    #[test]
    fn a_tcp_frame_gives_its_flow_flags_and_payload() {
        let frame = tcp_frame(b"GET / HTTP/1.1\r\n");
        let (p, at) = classify(&frame).unwrap();
        assert_eq!((p.proto, p.src, p.dst, p.mark), (6, ([10, 0, 0, 1], 40000), ([10, 0, 0, 2], 80), 0));
        assert_eq!(p.tcp_flags & 0x02, 0x02, "SYN");
        assert_eq!(p.payload, b"GET / HTTP/1.1\r\n");
        assert_eq!((at.ip, at.l4, at.end), (14, 34, frame.len()));
    }

    #[test]
    fn tags_are_set_replaced_and_removed() {
        let frame = tcp_frame(b"x");
        let tagged = retag(&frame, 7);
        assert_eq!(classify(&tagged).unwrap().0.mark, 7);
        assert_eq!(classify(&retag(&tagged, 9)).unwrap().0.mark, 9);
        assert_eq!(retag(&tagged, 0), frame);
        assert_eq!(retag(&[1, 2, 3], 5), [1, 2, 3]);
    }

    #[test]
    fn what_is_not_a_flow_says_why() {
        let mut arp = tcp_frame(b"");
        arp[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
        assert_eq!(classify(&arp).unwrap_err(), Unparsed::Arp);
        let mut v6 = tcp_frame(b"");
        v6[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
        assert_eq!(classify(&v6).unwrap_err(), Unparsed::NotIpv4(0x86dd));
        let mut icmp = tcp_frame(b"");
        icmp[14 + 9] = 1;
        assert_eq!(classify(&icmp).unwrap_err(), Unparsed::NotTcpUdp(1));
        let mut fragment = tcp_frame(b"abc");
        fragment[14 + 6] = 0x20;
        assert_eq!(classify(&fragment).unwrap_err(), Unparsed::Fragment);
    }

    #[test]
    fn broken_frames_are_malformed_at_every_length() {
        let frame = tcp_frame(b"payload");
        for len in 0..frame.len() {
            match classify(&frame[..len]) {
                Err(Unparsed::Malformed(_)) => {}
                other => panic!("{len} bytes: {other:?}"),
            }
        }
        let mut long = frame.clone();
        long[14 + 2..14 + 4].copy_from_slice(&2000u16.to_be_bytes());
        assert_eq!(classify(&long).unwrap_err(), Unparsed::Malformed("bad IPv4 total length"));
        let mut version = frame.clone();
        version[14] = 0x65;
        assert_eq!(classify(&version).unwrap_err(), Unparsed::Malformed("IP version is not 4"));
        let mut offset = frame;
        offset[34 + 12] = 0x40;
        assert_eq!(classify(&offset).unwrap_err(), Unparsed::Malformed("bad TCP data offset"));
    }

    #[test]
    fn a_rewrite_moves_both_endpoints_and_keeps_checksums_valid() {
        for mut frame in [tcp_frame(b"hello"), retag(&tcp_frame(b"tagged"), 3), udp_frame(b"query")] {
            checksums_hold(&frame);
            rewrite(&mut frame, ([192, 0, 2, 7], 20001), ([10, 0, 0, 2], 8080)).unwrap();
            let (p, _) = classify(&frame).unwrap();
            assert_eq!((p.src, p.dst), (([192, 0, 2, 7], 20001), ([10, 0, 0, 2], 8080)));
            checksums_hold(&frame);
        }
        let mut arp = tcp_frame(b"");
        arp[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
        assert!(rewrite(&mut arp, ([1; 4], 1), ([2; 4], 2)).is_err());
    }
}
