"""What a router looks like to the L3 driver: ports, gateway, routes, floating IPs.

Frozen value types; ``Router.from_dict`` reads the shape Neutron's L3 RPC
(``sync_routers``) hands to an agent: ``_interfaces``, ``gw_port``, ``_floatingips``,
``routes`` and ``enable_snat``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from lbtap.domain import constants as c


@dataclass(frozen=True)
class RouterPort:
    """An interface or gateway port: its MAC, addresses (CIDR form) and MTU."""

    id: str
    mac_address: str
    ip_cidrs: tuple[str, ...] = ()  # "10.0.0.1/24": address and on-link prefix
    mtu: int = c.DEFAULT_MTU

    @classmethod
    def from_dict(cls, d: dict[str, Any], mtu: int | None = None) -> "RouterPort":
        """From a Neutron port dict; prefix lengths come from ``fixed_ips[].prefixlen``
        or from the ``subnets`` list the L3 RPC attaches to router ports."""
        cidrs = {s["id"]: s["cidr"] for s in d.get("subnets") or () if "id" in s and "cidr" in s}
        out = []
        for f in d.get("fixed_ips") or ():
            plen = f.get("prefixlen")
            if plen is None and f.get("subnet_id") in cidrs:
                plen = ipaddress.ip_network(cidrs[f["subnet_id"]], strict=False).prefixlen
            if plen is None:
                raise ValueError(f"port {d['id']}: no prefix length for {f['ip_address']}")
            out.append(f"{f['ip_address']}/{plen}")
        return cls(id=d["id"], mac_address=d["mac_address"].lower(), ip_cidrs=tuple(out),
                   mtu=int(mtu or d.get("mtu") or c.DEFAULT_MTU))

    @property
    def interfaces(self) -> tuple[ipaddress.IPv4Interface | ipaddress.IPv6Interface, ...]:
        return tuple(ipaddress.ip_interface(x) for x in self.ip_cidrs)


@dataclass(frozen=True)
class Gateway:
    """The ``network:router_gateway`` port and the external subnets' gateways."""

    port: RouterPort
    gateway_ips: tuple[str, ...] = ()  # next hops for the default route (v4 and/or v6)
    enable_snat: bool = True


@dataclass(frozen=True)
class ExtraRoute:
    destination: str
    nexthop: str


@dataclass(frozen=True)
class FloatingIP:
    """A floating IP associated with a fixed IP behind this router."""

    floating_ip_address: str
    fixed_ip_address: str
    id: str = ""


@dataclass(frozen=True)
class Router:
    """Everything the namespace of one router must hold."""

    id: str
    interfaces: tuple[RouterPort, ...] = ()
    gateway: Gateway | None = None
    routes: tuple[ExtraRoute, ...] = ()
    floating_ips: tuple[FloatingIP, ...] = ()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Router":
        """From an L3 RPC router dict (see the module docstring)."""
        gw = None
        if d.get("gw_port"):
            gp = d["gw_port"]
            hops = tuple(s["gateway_ip"] for s in gp.get("subnets") or () if s.get("gateway_ip"))
            info = d.get("external_gateway_info") or {}
            snat = d.get("enable_snat", info.get("enable_snat", True))
            gw = Gateway(RouterPort.from_dict(gp), hops, bool(snat))
        return cls(
            id=d["id"],
            interfaces=tuple(RouterPort.from_dict(p) for p in d.get("_interfaces") or ()),
            gateway=gw,
            routes=tuple(ExtraRoute(r["destination"], r["nexthop"]) for r in d.get("routes") or ()),
            floating_ips=tuple(
                FloatingIP(f["floating_ip_address"], f["fixed_ip_address"], f.get("id", ""))
                for f in d.get("_floatingips") or () if f.get("fixed_ip_address")
            ),
        )

    @property
    def internal_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """The subnets behind the router's interfaces (sorted, no duplicates)."""
        nets = {i.network for p in self.interfaces for i in p.interfaces}
        return tuple(sorted(nets, key=lambda n: (n.version, n)))

    @property
    def active_floating_ips(self) -> tuple[FloatingIP, ...]:
        """Floating IPs that can work: IPv4, with a gateway, fixed IP behind an interface.

        Sorted and de-duplicated by floating address (one address maps to one fixed IP).
        """
        if self.gateway is None:
            return ()
        nets = [n for n in self.internal_networks if n.version == 4]
        seen: dict[str, FloatingIP] = {}
        for f in self.floating_ips:
            fixed = ipaddress.ip_address(f.fixed_ip_address)
            if fixed.version == 4 and any(fixed in n for n in nets):
                seen.setdefault(f.floating_ip_address, f)
        return tuple(sorted(seen.values(), key=lambda f: ipaddress.ip_address(f.floating_ip_address)))
