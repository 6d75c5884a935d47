"""Pure decisions of the DHCP agent: which networks to (re)sync, and what a network needs.

The runtime feeds bus casts into ``DhcpIntents`` (handlers only record intent) and asks
it for a batch of work; ``plan_network`` turns one network's server-side state into
what the host side must do. No I/O here, so every rule is unit-tested directly.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from lbtap.drivers.dhcp.model import DhcpNetwork

# Casts that may change whether a network is served, or its subnets.
NETWORK_EVENTS = {"network_create_end", "network_update_end", "subnet_create_end", "subnet_update_end",
                  "subnet_delete_end"}
PORT_EVENTS = {"port_create_end", "port_update_end", "port_delete_end"}


@dataclass
class DhcpIntents:
    """What casts asked for since the last batch.

    Port events of networks this agent does not serve are dropped: they cannot change
    anything until a network/subnet event (or the periodic resync) makes it served.
    """

    dirty: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)
    full_sync: bool = True  # the first pass learns everything
    port_events: int = 0

    def on_cast(self, method: str, kwargs: dict[str, Any], served: set[str]) -> bool:
        """Record one cast; True if it asks for work."""
        net = kwargs.get("network_id")
        if not net:
            return False
        if method == "network_delete_end":
            self.deleted.add(net)
            self.dirty.discard(net)
            return True
        if method in NETWORK_EVENTS:
            self.dirty.add(net)
            self.deleted.discard(net)
            return True
        if method in PORT_EVENTS and net in served:
            self.dirty.add(net)
            self.port_events += 1
            return True
        return False

    def take(self) -> tuple[bool, set[str], set[str]]:
        """(full_sync, dirty, deleted) and reset."""
        out = (self.full_sync, set(self.dirty), set(self.deleted))
        self.full_sync = False
        self.dirty.clear()
        self.deleted.clear()
        self.port_events = 0
        return out


@dataclass(frozen=True)
class NetworkPlan:
    """What serving one network takes: "serve" (with the model) or "teardown"."""

    action: str
    network: DhcpNetwork | None = None


def plan_network(info: dict | None) -> NetworkPlan:
    """Serve a network iff it exists, is up and has a subnet dnsmasq can serve."""
    if info is None or not info.get("admin_state_up", True):
        return NetworkPlan("teardown")
    network = DhcpNetwork.from_dict(info)
    if not network.dhcp_subnets:
        return NetworkPlan("teardown")
    return NetworkPlan("serve", network)


def port_matches(port: dict | None, network: DhcpNetwork) -> bool:
    """Whether our DHCP port has exactly one address on each served subnet."""
    if port is None:
        return False
    have = {f["subnet_id"] for f in port.get("fixed_ips", ())}
    return have == {s.id for s in network.dhcp_subnets}


def port_cidrs(port: dict, network: DhcpNetwork) -> set[str]:
    """The DHCP port's addresses with their subnets' prefix lengths ("10.0.0.2/24")."""
    out = set()
    for f in port.get("fixed_ips", ()):
        sub = network.subnet(f["subnet_id"])
        if sub is not None:
            out.add(f"{f['ip_address']}/{sub.network.prefixlen}")
    return out


def dhcp_ips(port: dict) -> tuple[str, ...]:
    return tuple(sorted((f["ip_address"] for f in port.get("fixed_ips", ())),
                        key=lambda ip: (ipaddress.ip_address(ip).version, ipaddress.ip_address(ip))))
