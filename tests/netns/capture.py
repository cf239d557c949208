#!/usr/bin/env python3
"""Captures the frames on one interface for a while and sums them up (the testbed's
proof that its wire carries real frames: at most one MTU, valid checksums, no IPv6).

    capture.py IFACE SECONDS

Prints `ready` once capturing, then, after SECONDS, one JSON object: frames, max_len
(bytes, Ethernet header included), ipv4, ipv6 (frames of that EtherType), tcp,
bad_checksums (IPv4 header, TCP or UDP checksums that do not verify).
"""

import json
import select
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003


def fold(total):
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def ones_sum(data):
    if len(data) % 2:
        data += b"\0"
    return sum(struct.unpack(f"!{len(data) // 2}H", data))


def valid(packet):
    """Whether the IPv4 header checksum and the TCP/UDP checksum of `packet` verify."""
    ihl = (packet[0] & 0x0F) * 4
    if fold(ones_sum(packet[:ihl])) != 0xFFFF:
        return False
    total = struct.unpack("!H", packet[2:4])[0]
    proto = packet[9]
    fragment = struct.unpack("!H", packet[6:8])[0] & 0x3FFF
    if proto not in (6, 17) or fragment:
        return True
    segment = packet[ihl:total]
    if proto == 17 and struct.unpack("!H", segment[6:8])[0] == 0:
        return True  # UDP without a checksum
    pseudo = packet[12:20] + struct.pack("!BBH", 0, proto, len(segment))
    return fold(ones_sum(pseudo) + ones_sum(segment)) == 0xFFFF


def main():
    iface, seconds = sys.argv[1], float(sys.argv[2])
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    # Room for a burst: a full buffer would drop frames uncounted.
    sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), 64 << 20)
    sock.bind((iface, 0))
    print("ready", flush=True)
    stats = {"frames": 0, "max_len": 0, "ipv4": 0, "ipv6": 0, "tcp": 0, "bad_checksums": 0}
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        if not select.select([sock], [], [], left)[0]:
            continue
        frame = sock.recv(1 << 17)
        stats["frames"] += 1
        stats["max_len"] = max(stats["max_len"], len(frame))
        kind = struct.unpack("!H", frame[12:14])[0]
        if kind == 0x86DD:
            stats["ipv6"] += 1
        if kind != 0x0800:
            continue
        stats["ipv4"] += 1
        packet = frame[14:]
        stats["tcp"] += packet[9] == 6
        stats["bad_checksums"] += not valid(packet)
    print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    main()
