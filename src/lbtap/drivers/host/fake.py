"""``FakeHost``: an in-memory network namespace with the kernel's semantics.

Everything the ``HostDriver`` interface exposes behaves as the Linux kernel does (checked
by the shared contract suite in ``tests/host_contract.py``, which also runs against the
real ``NetlinkHost``), so code tested on the fake does not surprise on a real host:

* creates and deletes are idempotent; a name taken by another kind is ``AlreadyExists``;
* a bridge cannot be enslaved into a bridge; only bridges accept ports;
* deleting a bridge releases its ports; deleting a link drops its addresses, routes and
  FDB entries; deleting a veth end deletes its peer;
* routes need their link up (and a gateway on a connected subnet) and are flushed
  when the link goes down (or, for IPv4, loses its last IPv4 address); a link going
  down loses its IPv6 addresses (keep_addr_on_down=0); ``lo`` gets 127.0.0.1/8 and
  ::1 when brought up;
* an unconfigured bridge takes the lowest MTU and MAC of its ports (an MTU given at
  creation is only a default; ``set_link(mtu=)`` pins it);
* the same IPv4 address may sit on two links (the seed's fault state); a second address
  in an existing subnet becomes secondary, and deleting the primary drops the
  secondaries unless ``promote_secondaries`` is set.

Test helpers that are not part of the interface: ``fail`` (fault injection),
``calls`` (operation log), ``create_physical`` (a NIC), ``set_carrier`` (a hypervisor
opening a TAP), ``bump_stats``, ``emit_overflow`` and ``namespace`` (a sibling namespace
for veth peers).
"""

from __future__ import annotations

import errno
import logging
import threading
from dataclasses import dataclass, field, replace
from typing import Callable

from lbtap.drivers.host import errors
from lbtap.drivers.host.base import Address, FdbEntry, Link, LinkEvent, LinkStats, Route, VxlanInfo
from lbtap.drivers.host.fake_helpers import FakeTestHelpers, _Fault, random_mac
from lbtap.drivers.host.kernel_rules import (
    FakeAddresses,
    FakeRoutes,
    norm_mac,
    validate_mtu,
    validate_name,
)

log = logging.getLogger(__name__)

ZERO_MAC = "00:00:00:00:00:00"


@dataclass
class _Link:
    name: str
    index: int
    kind: str
    mac: str
    mtu: int = 1500
    up: bool = False
    master: str | None = None
    vxlan: VxlanInfo | None = None
    vlan_id: int | None = None
    parent: str | None = None
    peer: tuple["FakeHost", str] | None = None  # veth peer: (its host, its name)
    reader: bool = False  # a TAP with a process attached (gives carrier)
    phys_carrier: bool = True
    mtu_by_user: bool = False
    mac_by_user: bool = False
    stats: LinkStats = field(default_factory=LinkStats)


class FakeHost(FakeTestHelpers):
    """An in-memory ``HostDriver`` for one namespace.

    ``supports_vlan=False`` simulates a kernel without 802.1Q (``create_vlan`` raises
    ``NotSupported``, as on the project's VMs). Thread-safe; ``watch_links`` callbacks
    are called synchronously, after the change, in the thread that made it.
    """

    def __init__(self, *, supports_vlan: bool = True, netns: str = "", _world: dict | None = None):
        self.supports_vlan = supports_vlan
        self.netns = netns
        self._world: dict[str, FakeHost] = _world if _world is not None else {}
        self._world[netns] = self
        self._lock = threading.RLock()
        self._links: dict[str, _Link] = {}
        self._next_index = 1
        self._addrs = FakeAddresses()
        self._routes = FakeRoutes()
        self._fdb: list[FdbEntry] = []
        self._promote: set[str] = set()
        self._watchers: list[Callable[[LinkEvent], None]] = []
        self._faults: list[_Fault] = []
        self._pending: list[LinkEvent] = []
        self.calls: list[tuple[str, str | None]] = []
        self._add("lo", "", ZERO_MAC, mtu=65536)
        self._pending.clear()

    # ------------------------------------------------------------------ internals
    def _add(self, name: str, kind: str, mac: str, **kw) -> _Link:
        link = _Link(name=name, index=self._next_index, kind=kind, mac=mac, **kw)
        self._next_index += 1
        self._links[name] = link
        self._changed(name)
        return link

    def _get(self, name: str, op: str) -> _Link:
        link = self._links.get(name)
        if link is None:
            raise errors.NotFound(f"no link {name}", op=op, device=name, code=errno.ENODEV)
        return link

    def _carrier(self, link: _Link) -> bool:
        if not link.up:
            return False
        if link.kind == "tun":
            return link.reader
        if link.kind == "veth":
            if link.peer is None:
                return False
            host, pname = link.peer
            peer = host._links.get(pname)
            return bool(peer and peer.up)
        if link.kind == "bridge":
            return any(self._carrier(p) for p in self._links.values() if p.master == link.name)
        if link.kind == "vlan":
            parent = self._links.get(link.parent or "")
            return bool(parent and self._carrier(parent))
        if link.kind == "":
            return link.phys_carrier
        return True

    def _snapshot(self, link: _Link) -> Link:
        peer_index = None
        if link.peer is not None:
            host, pname = link.peer
            p = host._links.get(pname)
            peer_index = p.index if p else None
        return Link(
            name=link.name, index=link.index, kind=link.kind, mac=link.mac, mtu=link.mtu,
            up=link.up, carrier=self._carrier(link), master=link.master, vxlan=link.vxlan,
            vlan_id=link.vlan_id, parent=link.parent, peer_index=peer_index,
        )

    def _changed(self, name: str) -> None:
        link = self._links.get(name)
        if link is not None:
            self._pending.append(LinkEvent("new", self._snapshot(link), name))

    def _flush_events(self) -> None:
        with self._lock:
            events, self._pending = self._pending, []
        self._emit(events)

    def _emit(self, events: list[LinkEvent]) -> None:
        for ev in events:
            for cb in list(self._watchers):
                try:
                    cb(ev)
                except Exception:  # a watcher's bug must not corrupt host state
                    log.exception("link watcher failed on %s", ev)

    def _bridge_recalc(self, bridge: str) -> None:
        """The kernel derives an unconfigured bridge's MTU and MAC from its ports."""
        br = self._links.get(bridge)
        if br is None:
            return
        ports = [p for p in self._links.values() if p.master == bridge]
        before = (br.mtu, br.mac)
        if not br.mtu_by_user:
            br.mtu = min((p.mtu for p in ports), default=1500)
        if not br.mac_by_user and ports:
            br.mac = min(p.mac for p in ports)
        if (br.mtu, br.mac) != before:
            self._changed(bridge)

    def _link_down(self, name: str) -> None:
        self._routes.flush_link(name)
        # keep_addr_on_down=0 (the default): IPv6 addresses go with the link.
        self._addrs.drop_link(name, family=6)

    def _link_up(self, name: str) -> None:
        if name == "lo":  # the kernel gives loopback its addresses when it comes up
            self._addrs.add("lo", "127.0.0.1/8", "set_link")
            self._addrs.add("lo", "::1/128", "set_link")

    # ------------------------------------------------------------------ links
    def list_links(self) -> list[Link]:
        with self._lock:
            self._enter("list_links", None)
            return [self._snapshot(link) for link in sorted(self._links.values(), key=lambda x: x.index)]

    def get_link(self, name: str) -> Link | None:
        with self._lock:
            self._enter("get_link", name)
            link = self._links.get(name)
            return self._snapshot(link) if link else None

    def _check_create(self, op: str, name: str, kind: str, mtu: int | None) -> _Link | None:
        validate_name(name, op)
        if mtu is not None:
            validate_mtu(mtu, op, name, kind)
        existing = self._links.get(name)
        if existing is not None and existing.kind != kind:
            raise errors.AlreadyExists(f"{name} exists as {existing.kind or 'device'}", op=op, device=name, code=errno.EEXIST)
        return existing

    def create_bridge(self, name: str, *, mtu: int | None = None) -> None:
        with self._lock:
            self._enter("create_bridge", name)
            if self._check_create("create_bridge", name, "bridge", mtu) is None:
                link = self._add(name, "bridge", random_mac())
                if mtu is not None:
                    # The kernel treats an MTU given at creation as a default: ports
                    # still lower it. Only a later set_link(mtu=) pins it.
                    link.mtu = mtu
                    self._changed(name)
        self._flush_events()

    def create_tap(self, name: str, *, mac: str | None = None, mtu: int | None = None) -> None:
        with self._lock:
            self._enter("create_tap", name)
            if self._check_create("create_tap", name, "tun", mtu) is None:
                self._add(name, "tun", norm_mac(mac) if mac else random_mac(), mtu=mtu or 1500)
        self._flush_events()

    def create_veth(self, name: str, peer: str, *, peer_netns: str | None = None, mac: str | None = None, peer_mac: str | None = None, mtu: int | None = None) -> None:
        op = "create_veth"
        with self._lock:
            self._enter(op, name)
            if self._check_create(op, name, "veth", mtu) is not None:
                return
            validate_name(peer, op)
            other = self
            if peer_netns:
                other = self._world.get(peer_netns)  # type: ignore[assignment]
                if other is None:
                    raise errors.NotFound(f"no namespace {peer_netns}", op=op, device=name, code=errno.ENOENT)
            if peer in other._links or (other is self and peer == name):
                raise errors.AlreadyExists(f"peer name {peer} taken", op=op, device=name, code=errno.EEXIST)
            a = self._add(name, "veth", norm_mac(mac) if mac else random_mac(), mtu=mtu or 1500)
            b = other._add(peer, "veth", norm_mac(peer_mac) if peer_mac else random_mac(), mtu=mtu or 1500)
            a.peer, b.peer = (other, peer), (self, name)
        self._flush_events()
        if other is not self:
            other._flush_events()

    def create_vxlan(self, name: str, info: VxlanInfo, *, mtu: int | None = None) -> None:
        op = "create_vxlan"
        with self._lock:
            self._enter(op, name)
            if not 0 < info.vni < 2**24:
                raise errors.InvalidArgument(f"bad VNI {info.vni}", op=op, device=name, code=errno.ERANGE)
            existing = self._check_create(op, name, "vxlan", mtu)
            if existing is not None:
                if existing.vxlan != info:
                    raise errors.AlreadyExists(f"{name} exists with {existing.vxlan}", op=op, device=name, code=errno.EEXIST)
                return
            if info.dev is not None:
                self._get(info.dev, op)
            for other in self._links.values():
                v = other.vxlan
                if v and v.vni == info.vni and v.port == info.port and v.local == info.local:
                    raise errors.AlreadyExists(f"VNI {info.vni} used by {other.name}", op=op, device=name, code=errno.EEXIST)
            # With an underlay the kernel leaves room for the VXLAN headers; without
            # one it keeps the Ethernet default.
            v6 = ":" in (info.local or info.group or "")
            default_mtu = self._links[info.dev].mtu - (70 if v6 else 50) if info.dev else 1500
            self._add(name, "vxlan", random_mac(), mtu=mtu or default_mtu, vxlan=info)
        self._flush_events()

    def create_vlan(self, name: str, parent: str, vlan_id: int, *, mtu: int | None = None) -> None:
        op = "create_vlan"
        with self._lock:
            self._enter(op, name)
            existing = self._check_create(op, name, "vlan", mtu)
            p = self._get(parent, op)
            if not self.supports_vlan:
                raise errors.NotSupported("kernel lacks 802.1Q", op=op, device=name, code=errno.EOPNOTSUPP)
            if existing is not None:
                if (existing.parent, existing.vlan_id) != (parent, vlan_id):
                    raise errors.AlreadyExists(f"{name} is vlan {existing.vlan_id} on {existing.parent}", op=op, device=name, code=errno.EEXIST)
                return
            if not 0 <= vlan_id < 4095:
                raise errors.InvalidArgument(f"bad VLAN id {vlan_id}", op=op, device=name, code=errno.ERANGE)
            for other in self._links.values():
                if other.parent == parent and other.vlan_id == vlan_id:
                    raise errors.AlreadyExists(f"VLAN {vlan_id} on {parent} is {other.name}", op=op, device=name, code=errno.EEXIST)
            self._add(name, "vlan", p.mac, mtu=mtu or p.mtu, vlan_id=vlan_id, parent=parent)
        self._flush_events()

    def _remove(self, name: str) -> list[LinkEvent]:
        link = self._links.pop(name, None)
        if link is None:
            return []
        dels = [LinkEvent("del", self._snapshot(link), name)]
        self._addrs.drop_link(name)
        self._routes.drop_link(name)
        self._fdb = [e for e in self._fdb if e.ifname != name and e.master != name]
        self._promote.discard(name)
        if link.kind == "bridge":
            for port in self._links.values():
                if port.master == name:
                    port.master = None
                    self._changed(port.name)
        if link.master:
            self._bridge_recalc(link.master)
            self._changed(link.master)
        for dep in [d for d in self._links.values() if d.kind == "vlan" and d.parent == name]:
            dels += self._remove(dep.name)  # VLAN links die with their parent
        if link.peer is not None:
            host, pname = link.peer
            if host is self:
                dels += self._remove(pname)
            else:
                with host._lock:
                    host._pending += host._remove(pname)
                host._flush_events()
        return dels

    def delete_link(self, name: str) -> None:
        with self._lock:
            self._enter("delete_link", name)
            self._pending += self._remove(name)
        self._flush_events()

    def set_link(self, name: str, *, up: bool | None = None, mtu: int | None = None, mac: str | None = None) -> None:
        op = "set_link"
        with self._lock:
            self._enter(op, name)
            link = self._get(name, op)
            if mtu is not None:
                validate_mtu(mtu, op, name, link.kind)
            if mac is not None:
                link.mac = norm_mac(mac)
                link.mac_by_user = True
            if mtu is not None:
                link.mtu = mtu
                link.mtu_by_user = True
            if up is not None and up != link.up:
                link.up = up
                (self._link_up if up else self._link_down)(name)
            self._changed(name)
            if link.master:
                self._bridge_recalc(link.master)
                self._changed(link.master)
            if link.peer is not None and link.peer[0] is self:
                self._changed(link.peer[1])
        self._flush_events()

    def enslave(self, name: str, bridge: str) -> None:
        op = "enslave"
        with self._lock:
            self._enter(op, name)
            link = self._get(name, op)
            br = self._get(bridge, op)
            if link.master == bridge:
                return
            if br.kind != "bridge":
                raise errors.NotSupported(f"{bridge} is not a bridge", op=op, device=name, code=errno.EOPNOTSUPP)
            if link.kind == "bridge":
                raise errors.InvalidArgument("cannot enslave a bridge to a bridge", op=op, device=name, code=errno.ELOOP)
            if name == "lo":
                raise errors.InvalidArgument("cannot enslave loopback", op=op, device=name, code=errno.EINVAL)
            old = link.master
            link.master = bridge
            self._fdb = [e for e in self._fdb if not (e.ifname == name and e.master == old)]
            self._changed(name)
            if old:
                self._bridge_recalc(old)
                self._changed(old)
            self._bridge_recalc(bridge)
            self._changed(bridge)
        self._flush_events()

    def release(self, name: str) -> None:
        """Take ``name`` out of its bridge; a missing link or no bridge is success."""
        with self._lock:
            self._enter("release", name)
            link = self._links.get(name)
            if link is None or link.master is None:
                return
            old, link.master = link.master, None
            self._fdb = [e for e in self._fdb if not (e.ifname == name and e.master == old)]
            self._changed(name)
            self._bridge_recalc(old)
            self._changed(old)
        self._flush_events()

    # ------------------------------------------------------------------ addresses and routes
    def list_addresses(self, ifname: str | None = None) -> list[Address]:
        with self._lock:
            self._enter("list_addresses", ifname)
            order = {n: link.index for n, link in self._links.items()}
            return self._addrs.list(ifname, order)

    def add_address(self, ifname: str, cidr: str) -> None:
        op = "add_address"
        with self._lock:
            self._enter(op, ifname)
            self._get(ifname, op)
            self._addrs.add(ifname, cidr, op)

    def delete_address(self, ifname: str, cidr: str) -> None:
        op = "delete_address"
        with self._lock:
            self._enter(op, ifname)
            if ifname not in self._links:
                return
            self._addrs.delete(ifname, cidr, promote=ifname in self._promote, op=op)
            if not self._addrs.has_v4(ifname):
                self._routes.flush_link(ifname, family=4)

    def list_routes(self, ifname: str | None = None) -> list[Route]:
        with self._lock:
            self._enter("list_routes", ifname)
            return self._routes.list(ifname)

    def add_route(self, route: Route) -> None:
        op = "add_route"
        with self._lock:
            self._enter(op, route.ifname)
            link = self._get(route.ifname, op)
            self._routes.add(route, link_up=link.up, connected=self._addrs.connected(route.ifname), op=op)

    def delete_route(self, route: Route) -> None:
        with self._lock:
            self._enter("delete_route", route.ifname)
            self._routes.delete(route)

    def set_promote_secondaries(self, ifname: str, on: bool = True) -> None:
        op = "set_promote_secondaries"
        with self._lock:
            self._enter(op, ifname)
            self._get(ifname, op)
            (self._promote.add if on else self._promote.discard)(ifname)

    # ------------------------------------------------------------------ forwarding database
    def list_fdb(self, ifname: str | None = None, *, master: str | None = None) -> list[FdbEntry]:
        with self._lock:
            self._enter("list_fdb", ifname)
            own = [
                FdbEntry(mac=p.mac, ifname=p.name, master=p.master, permanent=True)
                for p in sorted(self._links.values(), key=lambda x: x.index)
                if p.master
            ]
            entries = own + [e for e in self._fdb if e not in own]
            return [
                e for e in entries
                if (ifname is None or e.ifname == ifname) and (master is None or e.master == master)
            ]

    def add_fdb(self, entry: FdbEntry) -> None:
        """Add (or, for a unicast MAC, move) an entry. All-zero MACs on a VXLAN device
        form the flooding list: each ``dst`` is its own entry."""
        op = "add_fdb"
        with self._lock:
            self._enter(op, entry.ifname)
            link = self._get(entry.ifname, op)
            mac = norm_mac(entry.mac)
            entry = replace(entry, mac=mac, age=None)
            if entry.master is not None:
                if link.master != entry.master:
                    raise errors.NotSupported(f"{entry.ifname} is not a port of {entry.master}", op=op, device=entry.ifname, code=errno.EOPNOTSUPP)
                self._fdb = [e for e in self._fdb if not (e.master == entry.master and e.mac == mac)]
            else:
                if link.kind != "vxlan":
                    raise errors.NotSupported(f"{entry.ifname} has no own FDB", op=op, device=entry.ifname, code=errno.EOPNOTSUPP)
                entry = replace(entry, permanent=True)  # VXLAN entries are always permanent
                if mac == ZERO_MAC:
                    if entry in self._fdb:
                        return
                else:
                    self._fdb = [e for e in self._fdb if not (e.master is None and e.ifname == entry.ifname and e.mac == mac)]
            self._fdb.append(entry)

    def delete_fdb(self, entry: FdbEntry) -> None:
        with self._lock:
            self._enter("delete_fdb", entry.ifname)
            mac = norm_mac(entry.mac)
            self._fdb = [
                e for e in self._fdb
                if not (e.mac == mac and e.ifname == entry.ifname and e.master == entry.master
                        and (entry.dst is None or e.dst == entry.dst))
            ]

    # ------------------------------------------------------------------ counters, events
    def link_stats(self) -> dict[str, LinkStats]:
        with self._lock:
            self._enter("link_stats", None)
            return {n: link.stats for n, link in self._links.items()}

    def watch_links(self, callback: Callable[[LinkEvent], None]) -> Callable[[], None]:
        """Call ``callback`` synchronously for every link change from now on."""
        with self._lock:
            self._enter("watch_links", None)
            self._watchers.append(callback)

        def stop() -> None:
            with self._lock:
                if callback in self._watchers:
                    self._watchers.remove(callback)

        return stop

    def close(self) -> None:
        with self._lock:
            self._watchers.clear()
