"""Apply a ``Router`` to its namespace: devices, addresses, routes, forwarding, NAT.

``RouterNamespace.sync(router)`` is declarative and idempotent: it makes the namespace
hold exactly what ``router`` describes (creating what is missing, removing what is
stale, leaving what is right untouched), so the L3 agent can call it after any
``router_update`` or after a restart without tracking what it did before. The
decisions are pure functions (``desired_addresses``, ``desired_routes``,
``render_nat``); the class only compares them with what the kernel reports.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field

from lbtap.drivers.host import errors
from lbtap.drivers.host.base import Route
from lbtap.drivers.router.model import Router, RouterPort
from lbtap.drivers.router.nat import render_nat
from lbtap.drivers.router.naming import (
    DHCP_DEV_PREFIX,
    GATEWAY_DEV_PREFIX,
    INTERNAL_DEV_PREFIX,
    gateway_device,
    host_device,
    internal_device,
    router_namespace,
)
from lbtap.drivers.router.system import LinuxSystem, RouterSystem

log = logging.getLogger(__name__)

SYSCTLS = (
    ("net.ipv4.ip_forward", "1"),
    ("net.ipv6.conf.all.forwarding", "1"),
)


def port_devices(router: Router) -> dict[str, tuple[RouterPort, str]]:
    """Router-side device name → (port, host-side device name), gateway included."""
    out = {internal_device(p.id): (p, host_device(p.id)) for p in router.interfaces}
    if router.gateway is not None:
        p = router.gateway.port
        out[gateway_device(p.id)] = (p, host_device(p.id))
    return out


def desired_addresses(router: Router) -> dict[str, set[str]]:
    """Device → CIDRs it must carry; floating IPs sit on the gateway device as /32."""
    out = {dev: set(port.ip_cidrs) for dev, (port, _) in port_devices(router).items()}
    if router.gateway is not None:
        qg = gateway_device(router.gateway.port.id)
        out[qg] |= {f"{f.floating_ip_address}/32" for f in router.active_floating_ips}
    return out


def _device_for(nexthop: str, router: Router) -> str | None:
    """The device whose on-link prefix contains ``nexthop`` (None: unreachable)."""
    ip = ipaddress.ip_address(nexthop)
    for dev, (port, _) in port_devices(router).items():
        if any(ip in iface.network for iface in port.interfaces):
            return dev
    return None


def desired_routes(router: Router) -> tuple[list[Route], list[str]]:
    """The default route(s) via the external gateway and the extra routes.

    Returns (routes, problems): an extra route whose next hop is on none of the
    router's subnets cannot be installed and is reported instead (Neutron's API
    refuses those; an agent must not fail the whole router for one).
    """
    routes: list[Route] = []
    problems: list[str] = []
    if router.gateway is not None:
        qg = gateway_device(router.gateway.port.id)
        for hop in router.gateway.gateway_ips:
            if _device_for(hop, router) != qg:
                problems.append(f"gateway {hop} is not on the gateway port's subnets")
                continue
            fam = ipaddress.ip_address(hop).version
            routes.append(Route(dst="default", ifname=qg, gateway=hop, family=fam))
    for r in sorted(router.routes, key=lambda r: (r.destination, r.nexthop)):
        dev = _device_for(r.nexthop, router)
        if dev is None:
            problems.append(f"route {r.destination} via {r.nexthop}: next hop not on any router subnet")
            continue
        net = ipaddress.ip_network(r.destination, strict=False)
        dst = "default" if net.prefixlen == 0 else str(net)
        routes.append(Route(dst=dst, ifname=dev, gateway=r.nexthop, family=net.version))
    return routes, problems


def _route_key(r: Route) -> tuple:
    return (r.family, r.dst, r.ifname, r.gateway)


@dataclass
class SyncResult:
    """What one ``sync`` changed, for logs, metrics and tests."""

    created: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    addresses_added: list[str] = field(default_factory=list)
    addresses_removed: list[str] = field(default_factory=list)
    routes_added: list[str] = field(default_factory=list)
    routes_removed: list[str] = field(default_factory=list)
    floating_ips_removed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any((self.created, self.deleted, self.addresses_added, self.addresses_removed,
                    self.routes_added, self.routes_removed))


class RouterNamespace:
    """The namespace ``qrouter-<router_id>[-<host>]`` of one router.

    ``host_netns`` is where the host ends (``tap…``) of the veths go, for the L2 agent
    to enslave (None: the caller's own namespace); ``host`` is the name suffix used
    when an agent manages a simulated host. ``system`` defaults to ``LinuxSystem``.
    """

    def __init__(self, router_id: str, *, host: str | None = None, host_netns: str | None = None,
                 system: RouterSystem | None = None):
        self.router_id = router_id
        self.name = router_namespace(router_id, host)
        self.host_netns = host_netns
        self.system: RouterSystem = system if system is not None else LinuxSystem()

    def exists(self) -> bool:
        return self.system.namespace_exists(self.name)

    # ------------------------------------------------------------------ sync
    def sync(self, router: Router) -> SyncResult:
        """Make the namespace hold exactly ``router``; idempotent."""
        if router.id != self.router_id:
            raise ValueError(f"router {router.id} synced into namespace of {self.router_id}")
        res = SyncResult()
        sysm = self.system
        sysm.create_namespace(self.name)
        rdrv = sysm.driver(self.name)
        for key, value in SYSCTLS:
            sysm.set_sysctl(self.name, key, value)
        rdrv.set_link("lo", up=True)

        # Floating IPs about to go (also with a removed or replaced gateway port):
        # their tracked flows must stop being NATed too, so remember them now.
        links = rdrv.list_links()
        gw_cidrs = set(router.gateway.port.ip_cidrs) if router.gateway is not None else set()
        old_fips = {a.cidr.split("/")[0] for link in links if link.name.startswith(GATEWAY_DEV_PREFIX)
                    for a in rdrv.list_addresses(link.name) if a.cidr.endswith("/32") and a.cidr not in gw_cidrs}
        res.floating_ips_removed = sorted(old_fips - {f.floating_ip_address for f in router.active_floating_ips},
                                          key=ipaddress.ip_address)

        wanted = port_devices(router)
        for link in links:
            if link.name.startswith((INTERNAL_DEV_PREFIX, GATEWAY_DEV_PREFIX)) and link.name not in wanted:
                rdrv.delete_link(link.name)  # takes the host end with it
                res.deleted.append(link.name)
        for dev, (port, tap) in sorted(wanted.items()):
            self._ensure_veth(dev, port, tap, res)

        for dev, cidrs in sorted(desired_addresses(router).items()):
            self._sync_addresses(dev, cidrs, res)

        routes, res.problems = desired_routes(router)
        self._sync_routes(routes, res)

        sysm.apply_nft(self.name, render_nat(router))
        sysm.flush_conntrack(self.name, res.floating_ips_removed)
        return res

    def _ensure_veth(self, dev: str, port: RouterPort, tap: str, res: SyncResult) -> None:
        rdrv = self.system.driver(self.name)
        hdrv = self.system.driver(self.host_netns)
        inside = rdrv.get_link(dev)
        outside = hdrv.get_link(tap)
        if inside is not None and (inside.kind != "veth" or outside is None):
            # Not a pair we can use (wrong kind, or its host end is elsewhere): rebuild.
            rdrv.delete_link(dev)
            inside = None
        if inside is None:
            if outside is not None:
                hdrv.delete_link(tap)  # a leftover whose peer is gone or misplaced
            hdrv.create_veth(tap, dev, peer_netns=self.name, peer_mac=port.mac_address, mtu=port.mtu)
            res.created.append(dev)
        link = rdrv.get_link(dev)
        if link is None:
            raise errors.NotFound(f"{dev} missing in {self.name} after create", op="router_sync", device=dev)
        if link.mac != port.mac_address or link.mtu != port.mtu or not link.up:
            rdrv.set_link(dev, mac=port.mac_address, mtu=port.mtu, up=True)
        host_link = hdrv.get_link(tap)
        if host_link is not None and (host_link.mtu != port.mtu or not host_link.up):
            hdrv.set_link(tap, mtu=port.mtu, up=True)

    def _sync_addresses(self, dev: str, cidrs: set[str], res: SyncResult) -> None:
        rdrv = self.system.driver(self.name)
        have = {a.cidr for a in rdrv.list_addresses(dev) if a.scope == "global"}
        want = {str(ipaddress.ip_interface(c)) for c in cidrs}
        for cidr in sorted(have - want):
            rdrv.delete_address(dev, cidr)
            res.addresses_removed.append(f"{dev} {cidr}")
        for cidr in sorted(want - have):
            rdrv.add_address(dev, cidr)
            res.addresses_added.append(f"{dev} {cidr}")

    def _sync_routes(self, routes: list[Route], res: SyncResult) -> None:
        rdrv = self.system.driver(self.name)
        want = {_route_key(r): r for r in routes}
        # Only this driver adds routes in a router namespace; every non-kernel route
        # that is not wanted is stale.
        have = {_route_key(r): r for r in rdrv.list_routes()}
        for key in sorted(set(have) - set(want), key=str):
            rdrv.delete_route(have[key])
            res.routes_removed.append(f"{have[key].dst} via {have[key].gateway}")
        for key in sorted(set(want) - set(have), key=str):
            r = want[key]
            try:
                rdrv.add_route(r)
            except errors.HostError as e:
                if not e.retriable:
                    res.problems.append(f"route {r.dst} via {r.gateway}: {e}")
                    continue
                raise
            res.routes_added.append(f"{r.dst} via {r.gateway}")

    # ------------------------------------------------------------------ teardown
    def destroy(self) -> None:
        """Remove the namespace and everything in it, host ends included; idempotent.

        The veths are deleted explicitly first: a namespace is freed only when the
        last reference goes (the kernel frees it asynchronously even then), and until
        then its devices (and their host ends on the bridges) would linger. The NAT
        table goes with the namespace.
        """
        destroy_namespace(self.system, self.name)


def destroy_namespace(system: RouterSystem, name: str) -> bool:
    """Delete the veths in namespace ``name`` (their host ends go with them), then the
    namespace; False if there was none. Shared by the L3 and DHCP agents and ``lbtap
    cleanup``; the caller decides that ``name`` is one of lbtap's."""
    if not system.namespace_exists(name):
        return False
    drv = system.driver(name)
    for link in drv.list_links():
        if link.kind == "veth" or link.name.startswith((INTERNAL_DEV_PREFIX, GATEWAY_DEV_PREFIX, DHCP_DEV_PREFIX)):
            drv.delete_link(link.name)
    system.delete_namespace(name)
    return True
