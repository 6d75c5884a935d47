"""The DHCPRELEASE packet sent for deleted ports."""

from __future__ import annotations

import struct

from lbtap.drivers.dhcp.release import MAGIC_COOKIE, release_packet


def test_release_packet_fields() -> None:
    pkt = release_packet("10.20.0.11", "fa:16:3e:20:00:01", "10.20.0.2", xid=0x1234)
    op, htype, hlen, hops, xid = struct.unpack("!BBBBI", pkt[:8])
    assert (op, htype, hlen, hops, xid) == (1, 1, 6, 0, 0x1234)
    assert pkt[12:16] == bytes([10, 20, 0, 11])  # ciaddr: the released address
    assert pkt[16:28] == b"\0" * 12  # yiaddr, siaddr, giaddr
    assert pkt[28:34] == bytes.fromhex("fa163e200001") and pkt[34:44] == b"\0" * 10
    assert pkt[236:240] == MAGIC_COOKIE
    opts = pkt[240:]
    assert opts == bytes([53, 1, 7, 54, 4, 10, 20, 0, 2, 255])  # DHCPRELEASE, server id, end
