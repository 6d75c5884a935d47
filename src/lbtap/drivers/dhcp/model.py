"""The data the DHCP driver renders from: a network, its subnets and its ports.

Frozen value types, built from Neutron API dicts with ``from_dict`` so the DHCP agent
can hand over what the server sent without translating field by field.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from lbtap.domain import constants as c

# ipv6_address_mode / ipv6_ra_mode values (neutron_lib.constants).
IPV6_SLAAC = "slaac"
IPV6_DHCP_STATEFUL = "dhcpv6-stateful"
IPV6_DHCP_STATELESS = "dhcpv6-stateless"


@dataclass(frozen=True)
class HostRoute:
    destination: str
    nexthop: str


@dataclass(frozen=True)
class Subnet:
    """A subnet as far as DHCP cares about it."""

    id: str
    cidr: str
    ip_version: int = 4
    gateway_ip: str | None = None
    dns_nameservers: tuple[str, ...] = ()
    host_routes: tuple[HostRoute, ...] = ()
    enable_dhcp: bool = True
    ipv6_address_mode: str | None = None
    ipv6_ra_mode: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Subnet":
        return cls(
            id=d["id"],
            cidr=d["cidr"],
            ip_version=int(d.get("ip_version") or ipaddress.ip_network(d["cidr"], strict=False).version),
            gateway_ip=d.get("gateway_ip") or None,
            dns_nameservers=tuple(d.get("dns_nameservers") or ()),
            host_routes=tuple(HostRoute(r["destination"], r["nexthop"]) for r in d.get("host_routes") or ()),
            enable_dhcp=bool(d.get("enable_dhcp", True)),
            ipv6_address_mode=d.get("ipv6_address_mode"),
            ipv6_ra_mode=d.get("ipv6_ra_mode"),
        )

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_network(self.cidr, strict=False)

    @property
    def dhcp_mode(self) -> str | None:
        """dnsmasq's range mode for this subnet, or None when dnsmasq must not serve it.

        IPv4 and DHCPv6 (stateful or stateless, or an IPv6 subnet without modes, as
        Neutron keeps for backward compatibility) are served with a ``static`` range;
        SLAAC subnets get addresses from router advertisements, not from dnsmasq.
        IPv6 prefixes longer than /64 are ignored as Neutron does.
        """
        if not self.enable_dhcp:
            return None
        if self.ip_version == 4:
            return "static"
        if self.network.prefixlen < 64:
            return None
        mode, ra = self.ipv6_address_mode, self.ipv6_ra_mode
        if mode in (IPV6_DHCP_STATEFUL, IPV6_DHCP_STATELESS) or (not mode and not ra):
            return "static"
        return None

    @property
    def stateful(self) -> bool:
        """Whether dnsmasq hands out addresses (not only options) on this subnet."""
        if self.ip_version == 4:
            return True
        return self.ipv6_address_mode in (IPV6_DHCP_STATEFUL, None) and self.dhcp_mode is not None


@dataclass(frozen=True)
class FixedIP:
    subnet_id: str
    ip_address: str


@dataclass(frozen=True)
class Port:
    """A port of the network: a static lease for each of its addresses."""

    id: str
    mac_address: str
    fixed_ips: tuple[FixedIP, ...] = ()
    dns_name: str = ""
    device_owner: str = ""
    admin_state_up: bool = True

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Port":
        return cls(
            id=d["id"],
            mac_address=d["mac_address"].lower(),
            fixed_ips=tuple(FixedIP(f["subnet_id"], f["ip_address"]) for f in d.get("fixed_ips") or ()),
            dns_name=d.get("dns_name") or "",
            device_owner=d.get("device_owner") or "",
            admin_state_up=bool(d.get("admin_state_up", True)),
        )


@dataclass(frozen=True)
class DhcpNetwork:
    """A network served by one dnsmasq: subnets, MTU and ports."""

    id: str
    subnets: tuple[Subnet, ...] = ()
    ports: tuple[Port, ...] = ()
    mtu: int = c.DEFAULT_MTU

    @classmethod
    def from_dict(cls, d: dict[str, Any], subnets: list[dict[str, Any]] | None = None,
                  ports: list[dict[str, Any]] | None = None) -> "DhcpNetwork":
        """From a network dict; ``subnets``/``ports`` default to ``d["subnets"]`` and
        ``d["ports"]`` when those hold dicts (the DHCP RPC shape)."""
        subs = subnets if subnets is not None else [s for s in d.get("subnets") or () if isinstance(s, dict)]
        prts = ports if ports is not None else list(d.get("ports") or ())
        return cls(
            id=d["id"],
            subnets=tuple(Subnet.from_dict(s) for s in subs),
            ports=tuple(Port.from_dict(p) for p in prts),
            mtu=int(d.get("mtu") or c.DEFAULT_MTU),
        )

    def with_ports(self, ports: tuple[Port, ...] | list[Port]) -> "DhcpNetwork":
        return DhcpNetwork(id=self.id, subnets=self.subnets, ports=tuple(ports), mtu=self.mtu)

    def subnet(self, subnet_id: str) -> Subnet | None:
        for s in self.subnets:
            if s.id == subnet_id:
                return s
        return None

    @property
    def dhcp_subnets(self) -> tuple[Subnet, ...]:
        """Subnets dnsmasq serves (has a range for)."""
        return tuple(s for s in self.subnets if s.dhcp_mode is not None)
