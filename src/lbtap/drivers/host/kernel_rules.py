"""The kernel's rules both drivers share (name, MTU, MAC and route normalisation),
and the address and route tables of ``FakeHost`` that follow them.

Kept apart from ``fake.py`` so the link model stays readable. Nothing here is public API.
"""

from __future__ import annotations

import errno
import ipaddress
import re
from dataclasses import dataclass, replace

from lbtap.drivers.host import errors
from lbtap.drivers.host.base import Address, Route

_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
IFNAMSIZ = 16
IPV6_DEFAULT_METRIC = 1024  # what the kernel stores for an IPv6 route given no metric


def validate_name(name: str, op: str) -> None:
    """The kernel's ``dev_valid_name``: 1-15 chars, no '/', ':' or whitespace."""
    if (not name or len(name) >= IFNAMSIZ or name in (".", "..")
            or any(c in name for c in "/:") or any(c.isspace() for c in name)):
        raise errors.InvalidArgument(f"invalid interface name {name!r}", op=op, device=name, code=errno.EINVAL)


def validate_mtu(mtu: int, op: str, device: str, kind: str = "") -> None:
    """68..65535; a TAP's maximum leaves room for its Ethernet header (65521)."""
    if not 68 <= mtu <= (65521 if kind == "tun" else 65535):
        raise errors.InvalidArgument(f"invalid MTU {mtu}", op=op, device=device, code=errno.EINVAL)


def norm_mac(mac: str) -> str:
    m = mac.strip().lower()
    if not _MAC_RE.match(m):
        raise errors.InvalidArgument(f"invalid MAC {mac!r}", op="mac", code=errno.EINVAL)
    return m


def _iface(cidr: str, op: str, device: str | None) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    try:
        return ipaddress.ip_interface(cidr)
    except ValueError as e:
        raise errors.InvalidArgument(f"invalid address {cidr!r}", op=op, device=device, code=errno.EINVAL) from e


def _scope(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if ip.is_loopback:
        return "host"
    if ip.is_link_local:
        return "link"
    return "global"


@dataclass
class _Addr:
    ifname: str
    iface: ipaddress.IPv4Interface | ipaddress.IPv6Interface
    secondary: bool = False


class FakeAddresses:
    """IPv4/IPv6 addresses per link, with IPv4 primary/secondary semantics."""

    def __init__(self) -> None:
        self._rows: list[_Addr] = []

    def list(self, ifname: str | None, link_order: dict[str, int]) -> list[Address]:
        rows = [r for r in self._rows if ifname is None or r.ifname == ifname]
        # The kernel dumps IPv4 before IPv6, link by link, primaries before secondaries.
        rows.sort(key=lambda r: (r.iface.version, link_order.get(r.ifname, 0), r.secondary))
        return [Address(r.ifname, str(r.iface), _scope(r.iface.ip), r.secondary) for r in rows]

    def add(self, ifname: str, cidr: str, op: str) -> None:
        iface = _iface(cidr, op, ifname)
        mine = [r for r in self._rows if r.ifname == ifname]
        if any(r.iface == iface for r in mine):
            return  # same address and prefix on the same link: idempotent
        secondary = iface.version == 4 and any(
            not r.secondary and r.iface.version == 4 and r.iface.network == iface.network for r in mine
        )
        self._rows.append(_Addr(ifname, iface, secondary))

    def delete(self, ifname: str, cidr: str, *, promote: bool, op: str) -> None:
        iface = _iface(cidr, op, ifname)
        row = next((r for r in self._rows if r.ifname == ifname and r.iface == iface), None)
        if row is None:
            return
        self._rows.remove(row)
        if iface.version != 4 or row.secondary:
            return
        same_net = [r for r in self._rows if r.ifname == ifname and r.secondary and r.iface.network == iface.network]
        if promote and same_net:
            same_net[0].secondary = False
        elif same_net:
            # Without promote_secondaries the kernel drops the primary's secondaries too.
            self._rows = [r for r in self._rows if r not in same_net]

    def has_v4(self, ifname: str) -> bool:
        return any(r.ifname == ifname and r.iface.version == 4 for r in self._rows)

    def connected(self, ifname: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [r.iface.network for r in self._rows if r.ifname == ifname]

    def drop_link(self, ifname: str, family: int | None = None) -> None:
        self._rows = [r for r in self._rows if not (r.ifname == ifname and family in (None, r.iface.version))]


def normalize_route(route: Route, op: str = "route") -> Route:
    """Canonical form both drivers report: "default" or a network CIDR, family derived,
    IPv4 metric 0 as None, IPv6 metric None as the kernel's 1024."""
    dst = route.dst
    family = route.family
    if dst in ("default", "0.0.0.0/0", "::/0"):
        if dst == "::/0" or (route.gateway and ":" in route.gateway):
            family = 6
        elif dst == "0.0.0.0/0":
            family = 4
        dst = "default"
    else:
        try:
            net = ipaddress.ip_network(dst)
        except ValueError as e:
            raise errors.InvalidArgument(f"invalid route destination {dst!r}", op=op, device=route.ifname, code=errno.EINVAL) from e
        dst, family = str(net), net.version
    gateway = route.gateway
    if gateway is not None:
        try:
            gw = ipaddress.ip_address(gateway)
        except ValueError as e:
            raise errors.InvalidArgument(f"invalid gateway {gateway!r}", op=op, device=route.ifname, code=errno.EINVAL) from e
        if gw.version != family:
            raise errors.InvalidArgument("gateway family differs from destination", op=op, device=route.ifname, code=errno.EINVAL)
        gateway = str(gw)
    metric = route.metric
    if family == 4 and metric == 0:
        metric = None
    if family == 6 and metric is None:
        metric = IPV6_DEFAULT_METRIC
    return replace(route, dst=dst, family=family, gateway=gateway, metric=metric)


class FakeRoutes:
    """Main-table routes added by users (the kernel's own connected routes are not
    listed, as in ``NetlinkHost``)."""

    def __init__(self) -> None:
        self._rows: list[Route] = []

    def list(self, ifname: str | None) -> list[Route]:
        return [r for r in self._rows if ifname is None or r.ifname == ifname]

    def add(self, route: Route, *, link_up: bool, connected: list, op: str) -> None:
        r = normalize_route(route, op)
        dev = r.ifname
        if r.gateway is not None:
            gw = ipaddress.ip_address(r.gateway)
            # Connected routes exist only while the link is up; link-local IPv6 gateways
            # need none.
            reachable = link_up and (
                (gw.version == 6 and gw.is_link_local) or any(gw in n for n in connected if n.version == gw.version)
            )
            if not reachable:
                code = errno.EHOSTUNREACH if link_up else errno.ENETUNREACH
                raise errors.from_errno(code, f"gateway {r.gateway} not reachable on {dev}", op=op, device=dev)
        if not link_up:
            raise errors.from_errno(errno.ENETDOWN, f"{dev} is down", op=op, device=dev)
        for existing in self._rows:
            if (existing.family, existing.dst, existing.metric) == (r.family, r.dst, r.metric):
                if (existing.ifname, existing.gateway, existing.scope) == (r.ifname, r.gateway, r.scope):
                    return
                raise errors.AlreadyExists(f"route {r.dst} exists via {existing.ifname}", op=op, device=dev, code=errno.EEXIST)
        self._rows.append(r)

    def delete(self, route: Route) -> None:
        r = normalize_route(route, "delete_route")
        any_metric = route.metric is None
        self._rows = [
            x for x in self._rows
            if not (x.family == r.family and x.dst == r.dst and x.ifname == r.ifname
                    and (r.gateway is None or x.gateway == r.gateway)
                    and (any_metric or x.metric == r.metric))
        ]

    def flush_link(self, ifname: str, family: int | None = None) -> None:
        """The kernel flushes a link's routes when it goes down (or loses its last
        IPv4 address, for IPv4 routes)."""
        self._rows = [r for r in self._rows if not (r.ifname == ifname and (family is None or r.family == family))]

    def drop_link(self, ifname: str) -> None:
        self.flush_link(ifname)
