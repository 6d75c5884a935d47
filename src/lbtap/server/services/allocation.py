"""Pure allocation decisions: MAC addresses, fixed IPs, segments, default pools, MTU.

Nothing here touches the database: callers load what is taken once, ask for as many
values as they need, and insert; the unique constraints catch the races.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass
from typing import Iterable, Iterator

from lbtap.domain import constants as c

IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network

# Random choice among the first free addresses spreads concurrent writers on
# PostgreSQL/MariaDB over different rows, while keeping addresses low and compact.
IP_PICK_WINDOW = 16


# -- MAC ---------------------------------------------------------------------------

def mac_generator(base_mac: str, taken: set[str], rng: random.Random | None = None) -> Iterator[str]:
    """Yields fresh MACs under ``base_mac`` not in ``taken`` (and adds them to it).

    The first three octets of the base are kept, and the fourth too when it is not
    zero (Neutron's rule); the rest is random.
    """
    rng = rng or random.SystemRandom()
    octets = [int(x, 16) for x in base_mac.split(":")]
    octets += [0] * (6 - len(octets))
    fixed = 4 if octets[3] else 3
    space = 2 ** (8 * (6 - fixed))
    while True:
        if len(taken) >= space:
            raise RuntimeError("MAC address space exhausted")
        for _ in range(100):
            n = rng.randrange(space)
            tail = [(n >> (8 * i)) & 0xFF for i in reversed(range(6 - fixed))]
            mac = ":".join(f"{o:02x}" for o in octets[:fixed] + tail)
            if mac not in taken:
                taken.add(mac)
                yield mac
                break
        else:
            raise RuntimeError("MAC address space nearly exhausted")


# -- IP ----------------------------------------------------------------------------

def default_gateway(net: IPNet) -> str | None:
    """First host address (network + 1), None when the subnet has no room."""
    if net.num_addresses < 2:
        return None
    return str(net.network_address + 1)


def usable_range(net: IPNet) -> tuple[int, int]:
    """First and last address an allocation pool may contain."""
    first, last = int(net.network_address), int(net.broadcast_address)
    if net.version == 4:
        if net.prefixlen >= 31:
            return first, last
        return first + 1, last - 1
    # IPv6 has no broadcast; the subnet-router anycast address (first) is reserved.
    return first + 1, last


def default_pools(net: IPNet, gateway: str | None) -> list[dict[str, str]]:
    """The whole usable range minus the gateway, as one or two pools."""
    lo, hi = usable_range(net)
    if lo > hi:
        return []
    gw = int(ipaddress.ip_address(gateway)) if gateway else None
    ranges = [(lo, hi)]
    if gw is not None and lo <= gw <= hi:
        ranges = [(a, b) for a, b in ((lo, gw - 1), (gw + 1, hi)) if a <= b]
    make = ipaddress.ip_address
    return [{"start": str(make(a)), "end": str(make(b))} for a, b in ranges]


def pool_ranges(pools: Iterable[dict[str, str]]) -> list[tuple[int, int]]:
    return sorted((int(ipaddress.ip_address(p["start"])), int(ipaddress.ip_address(p["end"])))
                  for p in pools)


def check_pools(net: IPNet, pools: list[dict[str, str]], gateway: str | None) -> str | None:
    """Why ``pools`` are invalid for ``net``, or None. Gateway inside a pool returns
    the marker "gateway" (a 409 in Neutron, not a 400)."""
    lo, hi = usable_range(net)
    ranges = []
    for p in pools:
        s, e = ipaddress.ip_address(p["start"]), ipaddress.ip_address(p["end"])
        if s.version != net.version or e.version != net.version:
            return f"pool {p['start']}-{p['end']} is not IPv{net.version}"
        if s not in net or e not in net or int(s) < lo or int(e) > hi:
            return f"pool {p['start']}-{p['end']} is not within the usable range of {net}"
        if int(s) > int(e):
            return f"pool start {p['start']} is after its end {p['end']}"
        ranges.append((int(s), int(e)))
    ranges.sort()
    for (_a, b), (c2, _d) in zip(ranges, ranges[1:]):
        if c2 <= b:
            return "allocation pools overlap"
    if gateway:
        g = int(ipaddress.ip_address(gateway))
        if any(a <= g <= b for a, b in ranges):
            return "gateway"
    return None


def free_ips(ranges: list[tuple[int, int]], used: set[int]) -> Iterator[int]:
    """Free addresses of the pools in ascending order."""
    for a, b in ranges:
        n = a
        while n <= b:
            if n not in used:
                yield n
            n += 1


def pick_ip(ranges: list[tuple[int, int]], used: set[int], *, window: int = IP_PICK_WINDOW,
            rng: random.Random | None = None) -> int | None:
    """A free address: random among the first ``window`` free ones (None if full)."""
    candidates = []
    for n in free_ips(ranges, used):
        candidates.append(n)
        if len(candidates) >= window:
            break
    if not candidates:
        return None
    return (rng or random).choice(candidates)


def eui64(net: IPNet, mac: str) -> str:
    """SLAAC address of ``mac`` in a /64 (modified EUI-64)."""
    o = [int(x, 16) for x in mac.split(":")]
    iid = bytes([o[0] ^ 0x02, o[1], o[2], 0xFF, 0xFE, o[3], o[4], o[5]])
    return str(ipaddress.IPv6Address(int(net.network_address) | int.from_bytes(iid, "big")))


def is_slaac(ipv6_address_mode: str | None) -> bool:
    return ipv6_address_mode in ("slaac", "dhcpv6-stateless")


# -- segments ----------------------------------------------------------------------

@dataclass(frozen=True)
class SegmentChoice:
    network_type: str
    physical_network: str | None
    segmentation_id: int | None


def first_free(ranges: Iterable[tuple[int, int]], taken: set[int]) -> int | None:
    for lo, hi in ranges:
        n = lo
        while n <= hi:
            if n not in taken:
                return n
            n += 1
    return None


def network_mtu(network_type: str, global_physnet_mtu: int, overlay_ip_version: int = 4) -> int:
    """Largest MTU a network of this type can carry (VXLAN: less its encapsulation over
    an IPv4 or IPv6 underlay)."""
    if network_type == c.TYPE_VXLAN:
        return global_physnet_mtu - (c.VXLAN_OVERHEAD_IPV6 if overlay_ip_version == 6 else c.VXLAN_OVERHEAD)
    return global_physnet_mtu
