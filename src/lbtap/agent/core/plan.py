"""Pure reconcile planning: desired wiring + actual host state -> ordered ops.

``plan`` only emits the steps that are missing, so re-running it on a correctly wired
host yields nothing, and a half-done step converges instead of failing: the seed's fault
state (the uplink NIC's address on both NIC and bridge) plans just the delete from the
NIC. Cost is linear in the ports being planned plus the slaves of bridges being removed.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace

from lbtap.agent.core import ops as o
from lbtap.agent.core.hostview import HostView
from lbtap.config import AgentSettings
from lbtap.domain import constants as c
from lbtap.domain.models import Segment
from lbtap.domain.naming import VXLAN_PREFIX, bridge_name, is_bridge, is_tap, vlan_name, vxlan_name
from lbtap.drivers.host.base import Link, VxlanInfo


@dataclass(frozen=True)
class Uplink:
    """The link that connects a network's bridge to the outside.

    ``kind`` is the segment type: "flat" (``name`` is the mapped NIC itself), "vlan"
    (``name`` is ``<parent>.<vlan_id>``) or "vxlan" (``name`` is ``vxlan-<vni>``).
    """

    kind: str
    name: str
    parent: str | None = None
    vlan_id: int | None = None
    vxlan: VxlanInfo | None = None

    @property
    def carries_host_ip(self) -> bool:
        """Flat NICs and VLAN sub-interfaces may hold host addresses to move to the bridge."""
        return self.kind in (c.TYPE_FLAT, c.TYPE_VLAN)


@dataclass(frozen=True)
class NetworkWiring:
    """How one network is wired on this host; ``reject`` says why it cannot be."""

    network_id: str
    bridge: str
    mtu: int
    uplink: Uplink | None = None
    reject: str | None = None


@dataclass(frozen=True)
class PortWiring:
    device: str
    network_id: str
    admin_up: bool = True


@dataclass(frozen=True)
class Desired:
    """What to converge in one plan.

    ``ports`` are the devices to (re)check now; ``networks`` must hold the network of
    each, and may hold more: a network without ports here gets its bridge, uplink and
    host-IP move re-checked (device-less ops). ``remove_bridges`` are bridges that no wanted network uses: each is deleted if
    it still exists and no tap is enslaved to it. ``uplink_nics`` are the mapped NICs
    (the only physical links whose addresses the agent may move back).
    """

    networks: Mapping[str, NetworkWiring] = field(default_factory=dict)
    ports: Mapping[str, PortWiring] = field(default_factory=dict)
    remove_bridges: Collection[str] = ()
    uplink_nics: frozenset[str] = frozenset()


def network_wiring(network_id: str, segment: Segment | None, settings: AgentSettings) -> NetworkWiring:
    """Derive a network's wiring from its segment and the agent's configuration."""
    bridge = bridge_name(network_id)
    seg = segment or Segment(c.TYPE_LOCAL)
    mtu = seg.mtu

    def reject(why: str) -> NetworkWiring:
        return NetworkWiring(network_id, bridge, mtu, reject=why)

    if seg.network_type == c.TYPE_LOCAL:
        return NetworkWiring(network_id, bridge, mtu)
    if seg.network_type in (c.TYPE_FLAT, c.TYPE_VLAN):
        nic = settings.physical_interface_mappings.get(seg.physical_network or "")
        if nic is None:
            return reject(f"no physical_interface_mappings entry for physical network {seg.physical_network!r}")
        if seg.network_type == c.TYPE_FLAT:
            return NetworkWiring(network_id, bridge, mtu, Uplink(c.TYPE_FLAT, nic))
        vid = seg.segmentation_id
        if vid is None or not 1 <= vid <= c.MAX_VLAN_ID:
            return reject(f"invalid VLAN id {vid!r}")
        return NetworkWiring(network_id, bridge, mtu, Uplink(c.TYPE_VLAN, vlan_name(nic, vid), parent=nic, vlan_id=vid))
    if seg.network_type == c.TYPE_VXLAN:
        vni = seg.segmentation_id
        if vni is None or not 1 <= vni <= c.MAX_VXLAN_VNI:
            return reject(f"invalid VXLAN VNI {vni!r}")
        if not settings.local_ip:
            return reject("VXLAN network but no local_ip configured")
        info = VxlanInfo(vni=vni, local=settings.local_ip, group=settings.vxlan_group, learning=False)
        return NetworkWiring(network_id, bridge, mtu, Uplink(c.TYPE_VXLAN, vxlan_name(vni), vxlan=info))
    return reject(f"unsupported network type {seg.network_type!r}")


def plan(desired: Desired, actual: HostView) -> list[o.Op]:
    """Ops that take ``actual`` to ``desired``, in the order they must run.

    Per network in ``desired.networks``: bridge, uplink, host-IP move, then each of its
    ``desired.ports`` (MTU, enslave, admin state). Then the removal of bridges nobody
    wants. Bridge and uplink ops name the network's ports being planned as their
    ``devices`` (none when only the network is re-checked); the host-IP move names none:
    it is the host's connectivity, not the ports', so its failure never fails a port.
    Every network-level op is scoped by the bridge for device-less failure handling.
    """
    by_network: dict[str, list[PortWiring]] = {}
    for port in desired.ports.values():
        by_network.setdefault(port.network_id, []).append(port)

    ops: list[o.Op] = []
    for network_id in sorted(desired.networks):
        ports = sorted(by_network.get(network_id, ()), key=lambda p: p.device)
        devices = tuple(p.device for p in ports)
        net = desired.networks[network_id]
        if net.reject is None:
            problem = _check_conflicts(net, actual)
            if problem is not None:
                net = replace(net, reject=problem)
        if net.reject is not None:
            ops.append(o.Reject(net.bridge, devices=devices, scope=net.bridge, reason=net.reject))
            continue
        _plan_bridge(net, actual, devices, ops)
        if net.uplink is not None:
            _plan_uplink(net, net.uplink, actual, devices, ops)
        for port in ports:
            _plan_port(port, net, actual, ops)

    wanted_bridges = {net.bridge for net in desired.networks.values()}
    for bridge in sorted(set(desired.remove_bridges)):
        if bridge not in wanted_bridges:
            _plan_bridge_removal(bridge, actual, desired.uplink_nics, ops)
    return ops


def _check_conflicts(net: NetworkWiring, actual: HostView) -> str | None:
    """A link in the way that creating would not fix (wrong kind, wrong segment)."""
    bridge = actual.get(net.bridge)
    if bridge is not None and bridge.kind != "bridge":
        return f"{net.bridge} exists but is a {bridge.kind or 'physical'} link, not a bridge"
    up = net.uplink
    if up is None:
        return None
    link = actual.get(up.name)
    if up.kind == c.TYPE_VXLAN and link is not None:
        if link.kind != "vxlan" or (link.vxlan is not None and link.vxlan.vni != up.vxlan.vni):  # type: ignore[union-attr]
            return f"{up.name} exists but is not VXLAN {up.vxlan.vni}"  # type: ignore[union-attr]
    if up.kind == c.TYPE_VLAN:
        if actual.get(up.parent or "") is None:
            return f"uplink NIC {up.parent} for VLAN {up.vlan_id} does not exist"
        if link is not None and link.kind != "vlan":
            return f"{up.name} exists but is not a VLAN link"
    if up.kind == c.TYPE_FLAT and link is None:
        return f"uplink NIC {up.name} does not exist"
    if link is not None and link.master not in (None, net.bridge):
        return f"uplink {up.name} is already enslaved to {link.master}"
    return None


def _link_fix(name: str, link: Link | None, *, up: bool | None, mtu: int | None, devices: tuple[str, ...], scope: str) -> o.Op | None:
    """SetLinkState for whatever differs (a missing link is about to be created down)."""
    want_up = up if up is not None and (link is None or link.up != up) else None
    want_mtu = mtu if mtu is not None and (link is None or link.mtu != mtu) else None
    if want_up is None and want_mtu is None:
        return None
    return o.SetLinkState(name, up=want_up, mtu=want_mtu, devices=devices, scope=scope)


def _plan_bridge(net: NetworkWiring, actual: HostView, devices: tuple[str, ...], ops: list[o.Op]) -> None:
    scope = net.bridge
    link = actual.get(net.bridge)
    if link is None:
        ops.append(o.CreateBridge(net.bridge, mtu=net.mtu, devices=devices, scope=scope))
        ops.append(o.SetLinkState(net.bridge, up=True, devices=devices, scope=scope))
        return
    fix = _link_fix(net.bridge, link, up=True, mtu=net.mtu, devices=devices, scope=scope)
    if fix is not None:
        ops.append(fix)


def _link_with_address(actual: HostView, ip: str | None) -> str | None:
    for ifname, addrs in actual.addresses.items():
        if any(a.cidr.split("/")[0] == ip for a in addrs):
            return ifname
    return None


def _plan_uplink(net: NetworkWiring, up: Uplink, actual: HostView, devices: tuple[str, ...], ops: list[o.Op]) -> None:
    scope = net.bridge
    link = actual.get(up.name)
    mtu: int | None = net.mtu
    if up.kind == c.TYPE_VXLAN and link is None:
        info = up.vxlan
        if info is not None and info.group and info.dev is None:
            # The kernel needs the underlay device for a multicast group (EINVAL without it):
            # it is the link that holds local_ip, as in Neutron.
            dev = _link_with_address(actual, info.local)
            if dev is None:
                ops.append(o.Reject(up.name, reason=f"local_ip {info.local} is on no interface of this host",
                                    devices=devices, scope=scope))
                return
            info = replace(info, dev=dev)
        ops.append(o.EnsureVxlan(up.name, info=info, mtu=net.mtu, devices=devices, scope=scope))  # type: ignore[arg-type]
    elif up.kind == c.TYPE_VLAN:
        parent = actual.get(up.parent or "")
        if parent is not None and not parent.up:
            ops.append(o.SetLinkState(parent.name, up=True, devices=devices, scope=scope))
        if link is None:
            ops.append(o.EnsureVlan(up.name, parent=up.parent or "", vlan_id=up.vlan_id or 0, mtu=net.mtu,
                                    devices=devices, scope=scope))
    elif up.kind == c.TYPE_FLAT:
        mtu = None  # the NIC's MTU belongs to the host, not to one network
    if link is None:
        mtu = None  # created with the right MTU above
    fix = _link_fix(up.name, link, up=True, mtu=mtu, devices=devices, scope=scope)
    if fix is not None:
        ops.append(fix)
    if link is None or link.master != net.bridge:
        ops.append(o.Enslave(up.name, bridge=net.bridge, devices=devices, scope=scope))
    if up.carries_host_ip:
        _plan_ip_move(up.name, net.bridge, actual, ops)


def _plan_ip_move(src: str, dst: str, actual: HostView, ops: list[o.Op]) -> None:
    """Move global addresses and default routes from ``src`` to bridge ``dst``, missing
    steps only.

    Add on ``dst`` unless already there (the seed's half-done move), move the default
    route(s), then delete from ``src`` -- secondaries first, after promote_secondaries,
    so that deleting a primary never silently drops the others. Scoped by the bridge:
    if a step fails, the later ones are skipped (never delete what was not copied).
    """
    addresses = actual.global_addresses(src)
    for a in addresses:
        if not actual.has_address(dst, a.cidr):
            ops.append(o.AddAddress(dst, cidr=a.cidr, scope=dst))
    for r in actual.default_routes(src):
        ops.append(o.MoveRoute(src, route=r, to=dst, scope=dst))
    if addresses:
        ops.append(o.SetPromoteSecondaries(src, scope=dst))
        for a in sorted(addresses, key=lambda a: not a.secondary):
            ops.append(o.DeleteAddress(src, cidr=a.cidr, scope=dst))


def _plan_port(port: PortWiring, net: NetworkWiring, actual: HostView, ops: list[o.Op]) -> None:
    link = actual.links.get(port.device)
    if link is None:
        return  # gone since it was observed; the core handles the removal
    bridge = net.bridge if link.master != net.bridge else None
    mtu = net.mtu if link.mtu != net.mtu else None
    up = port.admin_up if link.up != port.admin_up else None
    if bridge is not None or mtu is not None or up is not None:
        ops.append(o.WirePort(port.device, bridge=bridge, mtu=mtu, up=up, devices=(port.device,)))


def _plan_bridge_removal(bridge: str, actual: HostView, uplink_nics: frozenset[str], ops: list[o.Op]) -> None:
    """Tear down an unwanted ``brq`` bridge once no tap is enslaved to it.

    Addresses and default routes go back to the flat NIC first; VXLAN and VLAN uplinks
    the agent created are deleted; any other link is left alone.
    """
    link = actual.get(bridge)
    if link is None or link.kind != "bridge" or not is_bridge(bridge):
        return
    slaves = actual.slaves(bridge)
    if any(is_tap(s) for s in slaves):
        return
    for name in sorted(slaves):
        slave = actual.get(name)
        if slave is None:
            continue
        if slave.kind == "" and name in uplink_nics:
            for a in actual.global_addresses(bridge):
                if not actual.has_address(name, a.cidr):
                    ops.append(o.AddAddress(name, cidr=a.cidr, scope=bridge))
            for r in actual.default_routes(bridge):
                ops.append(o.MoveRoute(bridge, route=r, to=name, scope=bridge))
        elif (slave.kind == "vxlan" and name.startswith(VXLAN_PREFIX)) or (
            slave.kind == "vlan" and slave.parent in uplink_nics
        ):
            ops.append(o.DeleteLink(name, scope=bridge))
    ops.append(o.DeleteBridge(bridge, scope=bridge))
