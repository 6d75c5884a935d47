"""Pure data the firewall renderer works from: ports, their rules, remote groups.

These are the agent-side view of Neutron's security-group data. They are frozen and
hashable so the driver can diff the previous state against the new one by value, and
validated on construction so the renderer never emits a script the kernel rejects for
a reason that was visible in the data.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from lbtap.domain import constants as c
from lbtap.domain.naming import validate_ifname

INGRESS = "ingress"  # toward the guest (Neutron's point of view: the VM's ingress)
EGRESS = "egress"  # from the guest
IPV4 = "IPv4"
IPV6 = "IPv6"

# Protocol names accepted in rules (Neutron accepts names and numbers); numbers for
# those nft cannot name after `meta l4proto`.
PROTOCOL_NUMBERS = {
    "icmp": 1, "igmp": 2, "tcp": 6, "udp": 17, "gre": 47, "esp": 50, "ah": 51,
    "icmpv6": 58, "ipv6-icmp": 58, "ospf": 89, "pim": 103, "vrrp": 112, "sctp": 132,
    "udplite": 136,
    # The rest of the names Neutron accepts (hopopt, 0, left out: 0 reads as "any" elsewhere).
    "ipip": 4, "egp": 8, "dccp": 33, "ipv6-encap": 41, "ipv6-route": 43, "ipv6-frag": 44,
    "rsvp": 46, "ipv6-nonxt": 59, "ipv6-opts": 60, "pgm": 113,
}
PORT_PROTOCOLS = {6: "tcp", 17: "udp", 132: "sctp", 136: "udplite"}
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def normalize_mac(mac: str) -> str:
    """Lower-case colon form; ValueError for anything else."""
    m = mac.strip().lower().replace("-", ":")
    if not _MAC_RE.match(m):
        raise ValueError(f"invalid MAC address {mac!r}")
    return m


def _network(prefix: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(prefix, strict=False)


@dataclass(frozen=True)
class Rule:
    """One security-group rule, Neutron's fields.

    ``protocol`` is a name ("tcp", "icmp"), a number as string or int, or None (any).
    For ICMP, ``port_range_min``/``port_range_max`` are the type and code, as in Neutron.
    """

    direction: str
    ethertype: str = IPV4
    protocol: str | int | None = None
    port_range_min: int | None = None
    port_range_max: int | None = None
    remote_ip_prefix: str | None = None
    remote_group_id: str | None = None

    def __post_init__(self) -> None:
        if self.direction not in (INGRESS, EGRESS):
            raise ValueError(f"direction must be ingress or egress, not {self.direction!r}")
        if self.ethertype not in (IPV4, IPV6):
            raise ValueError(f"ethertype must be IPv4 or IPv6, not {self.ethertype!r}")
        if self.remote_ip_prefix and self.remote_group_id:
            raise ValueError("remote_ip_prefix and remote_group_id are exclusive")
        if self.remote_ip_prefix:
            net = _network(self.remote_ip_prefix)
            if (net.version == 4) != (self.ethertype == IPV4):
                raise ValueError(f"remote_ip_prefix {self.remote_ip_prefix} does not match {self.ethertype}")
            # Normalised once here so the renderer never parses addresses again.
            object.__setattr__(self, "remote_ip_prefix", str(net) if net.prefixlen else None)
        proto = self.protocol_number
        if proto is not None and not 0 <= proto <= 255:
            raise ValueError(f"protocol number out of range: {self.protocol}")
        lo, hi = self.port_range_min, self.port_range_max
        if proto in PORT_PROTOCOLS:
            if lo is not None and not 1 <= lo <= 65535 or hi is not None and not 1 <= hi <= 65535:
                raise ValueError("ports must be 1-65535")
            if lo is not None and hi is not None and lo > hi:
                raise ValueError("port_range_min > port_range_max")
        elif proto in (1, 58):
            if lo is not None and not 0 <= lo <= 255 or hi is not None and not 0 <= hi <= 255:
                raise ValueError("ICMP type and code must be 0-255")
            if hi is not None and lo is None:
                raise ValueError("ICMP code given without type")
        elif lo is not None or hi is not None:
            raise ValueError(f"port range given for protocol {self.protocol!r}")

    def __hash__(self) -> int:
        # Cached: rule tuples are hashed on every renderer cache lookup.
        h = self.__dict__.get("_hash")
        if h is None:
            h = hash((self.direction, self.ethertype, self.protocol, self.port_range_min, self.port_range_max,
                      self.remote_ip_prefix, self.remote_group_id))
            object.__setattr__(self, "_hash", h)
        return h

    @property
    def protocol_number(self) -> int | None:
        """IP protocol number; ICMP under IPv6 means ICMPv6 (Neutron's behaviour)."""
        p = self.protocol
        if p is None or p == "" or p == "any":
            return None
        if isinstance(p, int) or str(p).isdigit():
            num = int(p)
        else:
            try:
                num = PROTOCOL_NUMBERS[str(p).lower()]
            except KeyError:
                raise ValueError(f"unknown protocol {p!r}") from None
        if self.ethertype == IPV6 and num == 1:
            return 58
        return num


@dataclass(frozen=True)
class PortFilter:
    """Everything the firewall needs to know about one port on this host.

    ``ips`` are the fixed IPs; ``allowed_address_pairs`` are (ip or cidr, mac or None —
    None meaning the port's own MAC). ``rules`` is the union of the rules of the
    port's security groups, already resolved by the server. ``network_id`` puts the
    port's traffic in its network's conntrack zone (None: the shared zone 0); ports
    of one network share the zone whether they are filtered or not.
    """

    tap: str
    mac: str
    ips: tuple[str, ...] = ()
    allowed_address_pairs: tuple[tuple[str, str | None], ...] = ()
    port_security_enabled: bool = True
    device_owner: str = ""
    rules: tuple[Rule, ...] = ()
    security_groups: tuple[str, ...] = ()
    network_id: str | None = None

    def __post_init__(self) -> None:
        validate_ifname(self.tap)
        if not self.network_id:
            object.__setattr__(self, "network_id", None)
        elif not _ID_RE.match(self.network_id):
            # It ends up quoted in the nft script (as the network's bridge name).
            raise ValueError(f"invalid network id {self.network_id!r}")
        object.__setattr__(self, "security_groups", tuple(sorted(set(self.security_groups))))
        object.__setattr__(self, "mac", normalize_mac(self.mac))
        # Addresses are normalised once here; the renderer only handles strings.
        object.__setattr__(self, "ips", tuple(str(ipaddress.ip_address(ip)) for ip in self.ips))
        pairs = []
        for ip, mac in self.allowed_address_pairs:
            ip = str(_network(ip)) if "/" in ip else str(ipaddress.ip_address(ip))
            pairs.append((ip, normalize_mac(mac) if mac else None))
        object.__setattr__(self, "allowed_address_pairs", tuple(pairs))
        object.__setattr__(self, "rules", tuple(self.rules))

    def __hash__(self) -> int:
        # Frozen dataclasses rehash every field on each call; the renderer's caches
        # look ports up thousands of times per compile.
        h = self.__dict__.get("_hash")
        if h is None:
            h = hash((self.tap, self.mac, self.ips, self.allowed_address_pairs, self.port_security_enabled,
                      self.device_owner, self.rules, self.security_groups, self.network_id))
            object.__setattr__(self, "_hash", h)
        return h

    @property
    def filtered(self) -> bool:
        """Neutron filters neither network-owned ports nor ports with security off."""
        return self.port_security_enabled and not self.device_owner.startswith(c.DEVICE_OWNER_NETWORK_PREFIX)

    def source_pairs(self) -> list[tuple[str, str]]:
        """(mac, ip-or-cidr) pairs the guest may use as sources, deduplicated, sorted.

        IPv6 link-local sources are not listed: the renderer accepts any fe80::/64
        source once the frame's MAC is the port's (one set element less per port, and
        guests with stable-privacy link-local addresses keep working).
        """
        out = {(self.mac, ip) for ip in self.ips}
        out.update((mac or self.mac, ip) for ip, mac in self.allowed_address_pairs)
        return sorted(out)

    def macs(self) -> list[str]:
        return sorted({self.mac} | {m or self.mac for _, m in self.allowed_address_pairs})


def eui64_link_local(mac: str) -> str:
    """fe80:: address a Linux/RFC 4291 host derives from ``mac``."""
    b = bytes.fromhex(mac.replace(":", ""))
    eui = bytes([b[0] ^ 0x02]) + b[1:3] + b"\xff\xfe" + b[3:]
    return str(ipaddress.IPv6Address(b"\xfe\x80" + b"\x00" * 6 + eui))


@dataclass(frozen=True)
class RemoteGroups:
    """Members of the security groups referenced as ``remote_group_id``.

    ``members[group_id]`` holds member IPs (or CIDRs from allowed address pairs) of both
    families; the renderer splits them into one IPv4 and one IPv6 nft set per group.
    """

    members: Mapping[str, frozenset[str]] = field(default_factory=dict)
    _split: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, groups: Mapping[str, Iterable[str]] | None = None) -> "RemoteGroups":
        norm: dict[str, frozenset[str]] = {}
        for gid, ips in (groups or {}).items():
            if not gid or not _ID_RE.match(gid):
                raise ValueError(f"invalid group id {gid!r}")
            norm[gid] = frozenset(str(_network(ip)) if "/" in ip else str(ipaddress.ip_address(ip)) for ip in ips)
        return cls(members=norm)

    def by_family(self, gid: str, version: int) -> frozenset[str]:
        """Members of ``gid`` of one IP version (4 or 6)."""
        key = (gid, version)
        if key not in self._split:
            # Members are normalised by ``of``, so a ':' tells the family.
            self._split[key] = frozenset(ip for ip in self.members.get(gid, ()) if (":" in ip) == (version == 6))
        return self._split[key]


def from_details(details, rules: Iterable[Rule] = ()) -> PortFilter:  # noqa: ANN001
    """A ``PortFilter`` from the server's ``DeviceDetails`` plus the port's resolved rules."""
    return PortFilter(
        tap=details.device,
        mac=details.mac_address,
        ips=tuple(f.ip_address for f in details.fixed_ips),
        allowed_address_pairs=tuple(details.allowed_address_pairs),
        port_security_enabled=details.port_security_enabled,
        device_owner=details.device_owner,
        rules=tuple(rules),
        security_groups=tuple(details.security_groups),
        network_id=details.network_id,
    )
