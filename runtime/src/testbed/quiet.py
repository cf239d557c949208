# Run by estate::testbed once per testbed (`python3 -c SCRIPT HOST...`): keeps each
# namespace's wire quiet and its frames real. A HOST is `NS|IFACES|VETHS` (lists
# comma-separated); in namespace NS (entered by setns, one process for all):
#
#   IPv6 off for the namespace (all, default) and IFACES, so no router solicitation,
#   MLD report or DAD probe is ever sent;
#   TX checksumming, TSO, GSO and GRO off on VETHS (the legacy SIOCETHTOOL requests
#   `ethtool -K IF tx off tso off gso off gro off` makes), so every frame on the wire
#   is at most one MTU and carries a valid checksum.

import array
import ctypes
import fcntl
import os
import socket
import struct
import sys

CLONE_NEWNET = 0x40000000
SIOCETHTOOL = 0x8946
# (set, get) requests: tx-checksumming, tcp-segmentation-offload,
# generic-segmentation-offload, generic-receive-offload.
FEATURES = {"tx": (0x17, 0x16), "tso": (0x1F, 0x1E), "gso": (0x24, 0x23), "gro": (0x2C, 0x2B)}
LIBC = ctypes.CDLL(None, use_errno=True)


def enter(ns):
    # Where `ip netns` keeps them (/var/run is /run on current systems).
    path = next((p for p in (f"/run/netns/{ns}", f"/var/run/netns/{ns}") if os.path.exists(p)), f"/run/netns/{ns}")
    fd = os.open(path, os.O_RDONLY)
    try:
        if LIBC.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns {ns}: {os.strerror(errno)}")
    finally:
        os.close(fd)


def ethtool(sock, iface, cmd, data=0):
    value = array.array("I", [cmd, data])
    ifreq = struct.pack("16sP", iface.encode(), value.buffer_info()[0])
    fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifreq)
    return value[1]


def quiet(ns, ifaces, veths):
    enter(ns)
    # A kernel without IPv6 has nothing to quiet. /proc/sys/net is the namespace's
    # of the process opening it.
    confs = ["all", "default"] + ifaces if os.path.isdir("/proc/sys/net/ipv6") else []
    for conf in confs:
        with open(f"/proc/sys/net/ipv6/conf/{conf}/disable_ipv6", "w") as f:
            f.write("1")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for iface in veths:
            for name, (set_cmd, get_cmd) in FEATURES.items():
                ethtool(sock, iface, set_cmd, 0)
                if ethtool(sock, iface, get_cmd):
                    sys.exit(f"{ns}: {iface}: {name} is still on")


def main():
    for host in sys.argv[1:]:
        ns, ifaces, veths = host.split("|")
        quiet(ns, [i for i in ifaces.split(",") if i], [v for v in veths.split(",") if v])


main()
