"""The core's model of the host: links, addresses and routes as last observed.

Observations replace it (a full scan) or patch it (link events); successful ops patch it
too (``assume``), so that the next plan does not re-emit work that is already done but
whose link events have not arrived yet. Bridge membership is indexed (``slaves``) so
that "is this bridge empty?" costs O(ports of the bridge), not O(links).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from lbtap.agent.core import ops as o
from lbtap.drivers.host.base import Address, Link, Route


class HostView:
    """Actual state of one namespace, as far as the agent needs it."""

    def __init__(self) -> None:
        self.links: dict[str, Link] = {}
        self._slaves: dict[str, set[str]] = {}
        self.addresses: dict[str, list[Address]] = {}
        self.routes: dict[str, list[Route]] = {}

    # ---- links -------------------------------------------------------------------
    def set_links(self, links: Iterable[Link]) -> None:
        """Replace every link (a full scan)."""
        self.links = {}
        self._slaves = {}
        for link in links:
            self.put_link(link)

    def put_link(self, link: Link) -> Link | None:
        """Add or replace one link; returns the previous version."""
        old = self.links.get(link.name)
        if old is not None and old.master is not None:
            self._slaves.get(old.master, set()).discard(link.name)
        self.links[link.name] = link
        if link.master is not None:
            self._slaves.setdefault(link.master, set()).add(link.name)
        return old

    def drop_link(self, name: str) -> Link | None:
        old = self.links.pop(name, None)
        if old is not None and old.master is not None:
            self._slaves.get(old.master, set()).discard(name)
        # The kernel releases the slaves of a deleted bridge.
        for slave in list(self._slaves.pop(name, ())):
            link = self.links.get(slave)
            if link is not None:
                self.links[slave] = replace(link, master=None)
        self.addresses.pop(name, None)
        self.routes.pop(name, None)
        return old

    def get(self, name: str) -> Link | None:
        return self.links.get(name)

    def slaves(self, bridge: str) -> frozenset[str]:
        return frozenset(self._slaves.get(bridge, ()))

    # ---- addresses and routes ------------------------------------------------------
    def set_addresses(self, addresses: Iterable[Address], routes: Iterable[Route]) -> None:
        """Replace every address and route (they are always observed as a whole)."""
        self.addresses = {}
        self.routes = {}
        for a in addresses:
            self.addresses.setdefault(a.ifname, []).append(a)
        for r in routes:
            self.routes.setdefault(r.ifname, []).append(r)

    def global_addresses(self, ifname: str) -> list[Address]:
        return [a for a in self.addresses.get(ifname, ()) if a.scope == "global"]

    def has_address(self, ifname: str, cidr: str) -> bool:
        return any(a.cidr == cidr for a in self.addresses.get(ifname, ()))

    def default_routes(self, ifname: str) -> list[Route]:
        return [r for r in self.routes.get(ifname, ()) if r.dst == "default"]

    # ---- effects of successful ops ---------------------------------------------------
    def assume(self, op: o.Op) -> None:
        """Record the effect of an op the executor reported as applied."""
        name = op.subject
        link = self.links.get(name)
        if isinstance(op, o.CreateBridge):
            if link is None:
                self.put_link(Link(name=name, index=-1, kind="bridge", mtu=op.mtu or 1500))
        elif isinstance(op, o.EnsureVxlan):
            if link is None:
                self.put_link(Link(name=name, index=-1, kind="vxlan", mtu=op.mtu or 1500, vxlan=op.info))
        elif isinstance(op, o.EnsureVlan):
            if link is None:
                self.put_link(Link(name=name, index=-1, kind="vlan", mtu=op.mtu or 1500, vlan_id=op.vlan_id, parent=op.parent))
        elif isinstance(op, (o.DeleteBridge, o.DeleteLink)):
            self.drop_link(name)
        elif isinstance(op, o.SetLinkState):
            if link is not None:
                self.put_link(replace(
                    link,
                    up=link.up if op.up is None else op.up,
                    mtu=link.mtu if op.mtu is None else op.mtu,
                ))
        elif isinstance(op, o.WirePort):
            if link is not None:
                self.put_link(replace(
                    link,
                    master=link.master if op.bridge is None else op.bridge,
                    mtu=link.mtu if op.mtu is None else op.mtu,
                    up=link.up if op.up is None else op.up,
                ))
        elif isinstance(op, o.Enslave):
            if link is not None:
                self.put_link(replace(link, master=op.bridge))
        elif isinstance(op, o.AddAddress):
            if not self.has_address(name, op.cidr):
                self.addresses.setdefault(name, []).append(Address(ifname=name, cidr=op.cidr))
        elif isinstance(op, o.DeleteAddress):
            self.addresses[name] = [a for a in self.addresses.get(name, ()) if a.cidr != op.cidr]
        elif isinstance(op, o.MoveRoute):
            self.routes[name] = [r for r in self.routes.get(name, ()) if r != op.route]
            self.routes.setdefault(op.to, []).append(replace(op.route, ifname=op.to))
