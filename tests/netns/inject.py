#!/usr/bin/env python3
"""Injects broken and unparsable frames on an interface (tests/all/live.rs).

    inject.py IFACE

Sends, through a raw AF_PACKET socket, frames an NF host must count and survive:
malformed ones (truncated Ethernet, VLAN, IPv4, TCP and UDP headers, lengths that do
not add up, a wrong IP version, garbage) and well-formed ones the NF cannot see (IPv6,
ICMP, an IPv4 fragment). Prints a JSON object with how many of each were sent.
"""

import json
import random
import socket
import struct
import sys

DST = b"\xff" * 6
SRC = b"\x02\x00\x00\x00\x00\x99"


def eth(ethertype, payload):
    return DST + SRC + struct.pack("!H", ethertype) + payload


def ipv4(proto, body, total=None, version_ihl=0x45, frag=0):
    total = 20 + len(body) if total is None else total
    header = struct.pack("!BBHHHBBH4s4s", version_ihl, 0, total, 1, frag, 64, proto, 0,
                         bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    return header + body


def tcp(offset_words=5, flags=0x02):
    return struct.pack("!HHIIBBHHH", 40000, 8080, 1, 0, offset_words << 4, flags, 1024, 0, 0)


def main():
    iface = sys.argv[1]
    rng = random.Random(7)
    # A veth's receiver itself drops frames shorter than an Ethernet header and frames
    # whose VLAN tag is cut short, so those never reach a capture (the NF's parser
    # refuses them too: runtime/src/nf/input/frame.rs tests every truncation).
    malformed = [
        eth(0x0800, b""),                                       # no IPv4 header
        eth(0x0800, ipv4(6, tcp(), version_ihl=0x65)),          # IP version 6 in IPv4
        eth(0x0800, ipv4(6, tcp(), version_ihl=0x44)),          # header shorter than 20
        eth(0x0800, ipv4(6, tcp(), total=1400)),                # total beyond the frame
        eth(0x0800, ipv4(6, tcp(), total=12)),                  # total below the header
        eth(0x0800, ipv4(6, tcp(offset_words=2))),              # TCP data offset < 5
        eth(0x0800, ipv4(6, tcp()[:10])),                       # truncated TCP header
        eth(0x0800, ipv4(17, b"\x00\x35\x00")),                 # truncated UDP header
    ]
    for _ in range(6):                                          # garbage after a header
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(20, 200)))
        malformed.append(eth(0x0800, b"\x45\x00\xff\xff" + junk))
    unparsed = [
        eth(0x86DD, bytes(60)),                                 # IPv6
        eth(0x0800, ipv4(1, b"\x08\x00" + bytes(30))),          # ICMP
        eth(0x0800, ipv4(6, tcp() + b"data", frag=0x2000)),     # first fragment of many
    ]
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((iface, 0))
    sent = {"malformed": 0, "unparsed": 0}
    for kind, frames in (("malformed", malformed), ("unparsed", unparsed)):
        for frame in frames:
            try:
                sock.send(frame)
                sent[kind] += 1
            except OSError as e:
                print(f"not sent ({len(frame)} bytes): {e}", file=sys.stderr)
    print(json.dumps(sent))


if __name__ == "__main__":
    main()
