"""pyroute2 ``ifaddrmsg`` / ``rtmsg`` / ``ndmsg`` messages to the driver's value types
(links are parsed by the leaner ``netlink_dump``)."""

from __future__ import annotations

import socket

from lbtap.drivers.host.base import Address, FdbEntry, Route

IFA_F_SECONDARY = 0x01
NTF_SELF = 0x02
NTF_MASTER = 0x04
NUD_NOARP = 0x40
NUD_PERMANENT = 0x80
RT_TABLE_MAIN = 254
RTN_UNICAST = 1
RTPROT_KERNEL = 2
USER_HZ = 100

_SCOPES = {0: "global", 200: "site", 253: "link", 254: "host"}
ROUTE_SCOPES = {"universe": 0, "link": 253, "host": 254}
_ROUTE_SCOPE_NAMES = {v: k for k, v in ROUTE_SCOPES.items()}


def parse_address(msg, names: dict[int, str]) -> Address | None:
    name = names.get(msg["index"])
    if name is None:
        return None
    ip = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
    return Address(
        ifname=name,
        cidr=f"{ip}/{msg['prefixlen']}",
        scope=_SCOPES.get(msg["scope"], str(msg["scope"])),
        secondary=bool(msg["flags"] & IFA_F_SECONDARY),
    )


def parse_route(msg, names: dict[int, str]) -> Route | None:
    """A user-visible main-table unicast route, or None for the kernel's own
    (connected, link-local, local table) and multipath routes."""
    table = msg.get_attr("RTA_TABLE") or msg["table"]
    if table != RT_TABLE_MAIN or msg["type"] != RTN_UNICAST or msg["proto"] == RTPROT_KERNEL:
        return None
    oif = msg.get_attr("RTA_OIF")
    if oif is None or oif not in names:
        return None
    family = 6 if msg["family"] == socket.AF_INET6 else 4
    dst = msg.get_attr("RTA_DST")
    dst = f"{dst}/{msg['dst_len']}" if dst is not None else "default"
    metric = msg.get_attr("RTA_PRIORITY")
    if family == 4 and not metric:
        metric = None
    return Route(
        dst=dst,
        ifname=names[oif],
        gateway=msg.get_attr("RTA_GATEWAY"),
        metric=metric,
        family=family,
        scope=_ROUTE_SCOPE_NAMES.get(msg["scope"], str(msg["scope"])),
    )


def parse_fdb(msg, names: dict[int, str], kinds: dict[int, str]) -> FdbEntry | None:
    """Bridge-table entries and VXLAN-device entries; the per-device multicast lists
    every link carries in its own table are left out."""
    idx = msg["ifindex"]
    if idx not in names:
        return None
    master = msg.get_attr("NDA_MASTER")
    if master is None and kinds.get(idx) != "vxlan":
        return None
    mac = msg.get_attr("NDA_LLADDR")
    if mac is None:
        return None
    age = None
    state = msg["state"]
    permanent = bool(state & NUD_PERMANENT)
    if not state & (NUD_PERMANENT | NUD_NOARP):
        ci = msg.get_attr("NDA_CACHEINFO")
        if ci is not None:
            age = ci.get("ndm_updated", 0) / USER_HZ
    return FdbEntry(
        mac=mac.lower(),
        ifname=names[idx],
        master=names.get(master) if master else None,
        dst=msg.get_attr("NDA_DST"),
        permanent=permanent,
        age=age,
    )
