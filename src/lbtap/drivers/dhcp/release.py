"""DHCPRELEASE on behalf of a deleted port (what dnsmasq-utils' ``dhcp_release`` does).

When a port is deleted, removing its line from the hosts file is not enough: dnsmasq
keeps the lease in memory until it expires (a day by default) and refuses to give
that address to another MAC meanwhile ("not using configured address ... because it
is leased to ..."). Neutron runs ``dhcp_release``; that tool is not installed
everywhere (it is not on the project's machines), so we send the same packet
ourselves: a BOOTREQUEST with ciaddr = the leased address, chaddr = the port's MAC,
option 53 = DHCPRELEASE and option 54 = the server, to the server's own address,
from a socket bound to the DHCP interface inside the namespace (that binding makes
dnsmasq see the packet arrive on the interface it serves). Local delivery needs the
namespace's loopback up, so it is brought up first.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

from lbtap.drivers.host import errors
from lbtap.drivers.host import netns as netns_mod

DHCP_SERVER_PORT = 67
MAGIC_COOKIE = b"\x63\x82\x53\x63"
DHCPRELEASE = 7


def release_packet(ip: str, mac: str, server: str, xid: int = 0) -> bytes:
    """A DHCPRELEASE for the lease of ``ip`` held by ``mac``, addressed to ``server``."""
    hw = bytes.fromhex(mac.replace(":", ""))
    header = struct.pack(
        "!BBBBIHH4s4s4s4s16s64s128s",
        1, 1, len(hw), 0,  # op BOOTREQUEST, htype Ethernet, hlen, hops
        xid, 0, 0,  # xid, secs, flags
        ipaddress.IPv4Address(ip).packed,  # ciaddr: the address being released
        b"\0" * 4, b"\0" * 4, b"\0" * 4,  # yiaddr, siaddr, giaddr
        hw.ljust(16, b"\0"), b"\0" * 64, b"\0" * 128,  # chaddr, sname, file
    )
    options = bytes([53, 1, DHCPRELEASE, 54, 4]) + ipaddress.IPv4Address(server).packed + b"\xff"
    return header + MAGIC_COOKIE + options


def _loopback_up(namespace: str) -> None:
    """The packet to our own address travels through ``lo``: down (as in a fresh
    namespace) it would be dropped without an error."""
    from lbtap.drivers.host.netlink import NetlinkHost

    drv = NetlinkHost(netns=namespace)
    try:
        link = drv.get_link("lo")
        if link is not None and not link.up:
            drv.set_link("lo", up=True)
    finally:
        drv.close()


def send_releases(namespace: str, interface: str, releases: list[tuple[str, str, str]]) -> None:
    """Send one DHCPRELEASE per (ip, mac, server) from ``interface`` in ``namespace``."""
    if not releases:
        return
    _loopback_up(namespace)
    with netns_mod.in_namespace(namespace):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
        for ip, mac, server in releases:
            sock.sendto(release_packet(ip, mac, server), (server, DHCP_SERVER_PORT))
    except OSError as e:
        raise errors.from_errno(e.errno, f"DHCPRELEASE on {interface} in {namespace}: {e}",
                                op="dhcp_release", device=interface) from e
    finally:
        sock.close()
