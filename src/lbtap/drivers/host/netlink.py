"""``NetlinkHost``: the ``HostDriver`` on the real kernel (pyroute2 0.9 + raw netlink).

Namespace safety (see docs/MACHINE-NOTES): a netlink socket stays bound to the
namespace it was created in, and pyroute2's sync ``IPRoute`` keeps one socket *per
thread*, created lazily in whatever namespace that thread is in. So every thread gets
its own sockets, created while the thread is switched into the target namespace
(``netns.in_namespace``). TAP devices are made with the TUN ioctl, which acts in the
calling thread's namespace, so that too runs inside ``in_namespace``; so does the
``promote_secondaries`` sysctl.

Link reads and link changes on the hot path (lookups, dumps, up/MTU/MAC, enslave) use a
lean raw socket (``netlink_dump``); creations, addresses, routes and FDB use pyroute2.
Call it from plain threads: pyroute2's sync ``IPRoute`` cannot run inside a running
asyncio loop (the driver may be *constructed* there; its sockets are made lazily).
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import threading
from typing import Callable

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from lbtap.drivers.host import errors, netlink_dump
from lbtap.drivers.host import netns as netns_mod
from lbtap.drivers.host.base import Link, LinkEvent, LinkStats, VxlanInfo
from lbtap.drivers.host.kernel_rules import norm_mac, validate_mtu, validate_name
from lbtap.drivers.host.netlink_dump import RawLinks
from lbtap.drivers.host.netlink_events import DEFAULT_RCVBUF, LinkWatcher
from lbtap.drivers.host.netlink_l3 import NetlinkL3, translate

TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000


class NetlinkHost(NetlinkL3):
    """The ``HostDriver`` for namespace ``netns`` (None: the caller's own namespace).

    ``event_rcvbuf`` sizes the link-event socket's receive buffer (tests make it tiny
    to provoke an overflow).
    """

    def __init__(self, netns: str | None = None, *, event_rcvbuf: int = DEFAULT_RCVBUF):
        if netns is not None and not netns_mod.exists(netns):
            raise errors.NotFound(f"no namespace {netns}", op="open", device=netns, code=errno.ENOENT)
        self.netns = netns
        self.event_rcvbuf = event_rcvbuf
        self._local = threading.local()
        self._lock = threading.Lock()
        self._sockets: list = []  # IPRoute and RawLinks of every thread
        self._watchers: list[LinkWatcher] = []
        # Fail early (permissions, namespace) with the raw socket only: pyroute2's
        # IPRoute is created lazily, per thread, so that the driver may be constructed
        # in an asyncio thread and used from executor threads.
        self._raw()

    # ------------------------------------------------------------------ plumbing
    def _ipr(self) -> IPRoute:
        ipr = getattr(self._local, "ipr", None)
        if ipr is None:
            with translate("open", self.netns), netns_mod.in_namespace(self.netns):
                # groups=0: a request socket must not collect broadcasts nobody reads.
                ipr = IPRoute(groups=0)
            self._local.ipr = ipr
            with self._lock:
                self._sockets.append(ipr)
        return ipr

    def _raw(self) -> RawLinks:
        raw = getattr(self._local, "raw", None)
        if raw is None:
            with translate("open", self.netns):
                raw = RawLinks(self.netns)
            self._local.raw = raw
            with self._lock:
                self._sockets.append(raw)
        return raw

    def _lookup(self, name: str, op: str) -> tuple[Link, dict[str, int]] | None:
        """``name``'s link (names of referenced links unresolved) and refs, or None."""
        validate_name(name, op)
        with translate(op, name):
            m = self._raw().get(name=name)
        return None if m is None else netlink_dump.parse(m)

    def _index(self, name: str, op: str) -> int:
        found = self._lookup(name, op)
        if found is None:
            raise errors.NotFound(f"no link {name}", op=op, device=name, code=errno.ENODEV)
        return found[0].index

    def _names(self) -> dict[int, str]:
        with translate("list_links", None):
            return {netlink_dump.msg_index(m): netlink_dump.msg_name(m) for m in self._raw().dump()}

    def _name_of(self, index: int | None) -> str | None:
        if not index:
            return None
        with translate("get_link", None):
            m = self._raw().get(index=index)
        return None if m is None else netlink_dump.msg_name(m)

    def _resolved(self, found: tuple[Link, dict[str, int]]) -> Link:
        link, refs = found
        names = {i: self._name_of(i) for i in refs.values() if i}
        return netlink_dump.resolve(link, refs, names)

    def _exists_as(self, name: str, kind: str, op: str, same: Callable[[Link], bool] | None = None) -> bool:
        """After EEXIST (or before a create): True if ``name`` is already what was asked
        for, False if absent; ``AlreadyExists`` if it is something else."""
        found = self._lookup(name, op)
        if found is None:
            return False
        link = self._resolved(found)
        if link.kind != kind or (same is not None and not same(link)):
            raise errors.AlreadyExists(f"{name} exists as {link.kind or 'device'}", op=op, device=name, code=errno.EEXIST)
        return True

    def _add(self, op: str, name: str, kind: str, same: Callable[[Link], bool] | None = None, **kw) -> None:
        validate_name(name, op)
        if kw.get("mtu") is not None:
            validate_mtu(kw["mtu"], op, name)
        kw = {k: v for k, v in kw.items() if v is not None}
        try:
            self._ipr().link("add", ifname=name, kind=kind, **kw)
        except NetlinkError as e:
            if e.code == errno.EEXIST and self._exists_as(name, kind, op, same):
                return
            raise errors.from_errno(e.code, f"{op} {name}: {e}", op=op, device=name) from e

    # ------------------------------------------------------------------ links
    def list_links(self) -> list[Link]:
        """All links, from one netlink dump."""
        with translate("list_links", None):
            msgs = self._raw().dump()
        names = {netlink_dump.msg_index(m): netlink_dump.msg_name(m) for m in msgs}
        return [netlink_dump.parse(m, names)[0] for m in msgs]

    def get_link(self, name: str) -> Link | None:
        found = self._lookup(name, "get_link")
        return None if found is None else self._resolved(found)

    def create_bridge(self, name: str, *, mtu: int | None = None) -> None:
        self._add("create_bridge", name, "bridge", mtu=mtu)

    def create_tap(self, name: str, *, mac: str | None = None, mtu: int | None = None) -> None:
        """A persistent TAP (IFF_TAP|IFF_NO_PI) that a hypervisor can open later."""
        op = "create_tap"
        validate_name(name, op)
        if mtu is not None:
            validate_mtu(mtu, op, name)
        if self._exists_as(name, "tun", op):
            return
        ifr = struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI)
        with translate(op, name), netns_mod.in_namespace(self.netns):
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
            try:
                fcntl.ioctl(fd, TUNSETIFF, ifr)
                fcntl.ioctl(fd, TUNSETPERSIST, 1)
            finally:
                os.close(fd)
        if mac is not None or mtu is not None:
            self.set_link(name, mac=mac, mtu=mtu)

    def create_veth(self, name: str, peer: str, *, peer_netns: str | None = None, mac: str | None = None, peer_mac: str | None = None, mtu: int | None = None) -> None:
        """A veth pair; ``peer`` is created directly inside ``peer_netns`` if given
        (one atomic request, so no half-moved pair is ever left behind)."""
        op = "create_veth"
        validate_name(peer, op)
        peer_attrs: dict = {"ifname": peer}
        if peer_mac:
            peer_attrs["address"] = norm_mac(peer_mac)
        if mtu is not None:
            peer_attrs["mtu"] = mtu
        fd = None
        if peer_netns is not None:
            fd = netns_mod.open_fd(peer_netns)
            peer_attrs["net_ns_fd"] = fd
        try:
            self._add(op, name, "veth", peer=peer_attrs, address=norm_mac(mac) if mac else None, mtu=mtu)
        finally:
            if fd is not None:
                os.close(fd)

    def create_vxlan(self, name: str, info: VxlanInfo, *, mtu: int | None = None) -> None:
        op = "create_vxlan"
        kw: dict = {"vxlan_id": info.vni, "vxlan_port": info.port, "vxlan_learning": int(info.learning)}
        if info.local:
            kw["vxlan_local6" if ":" in info.local else "vxlan_local"] = info.local
        if info.group:
            kw["vxlan_group6" if ":" in info.group else "vxlan_group"] = info.group
        if info.dev:
            kw["vxlan_link"] = self._index(info.dev, op)
        self._add(op, name, "vxlan", same=lambda link: link.vxlan == info, mtu=mtu, **kw)

    def create_vlan(self, name: str, parent: str, vlan_id: int, *, mtu: int | None = None) -> None:
        """An 802.1Q link; ``NotSupported`` when the kernel lacks VLAN support."""
        op = "create_vlan"
        pidx = self._index(parent, op)
        self._add(op, name, "vlan", same=lambda link: (link.parent, link.vlan_id) == (parent, vlan_id),
                  link=pidx, vlan_id=vlan_id, mtu=mtu)

    def delete_link(self, name: str) -> None:
        op = "delete_link"
        found = self._lookup(name, op)
        if found is None:
            return
        try:
            self._ipr().link("del", index=found[0].index)
        except NetlinkError as e:
            if e.code != errno.ENODEV:
                raise errors.from_errno(e.code, f"{op} {name}: {e}", op=op, device=name) from e

    def set_link(self, name: str, *, up: bool | None = None, mtu: int | None = None, mac: str | None = None) -> None:
        op = "set_link"
        idx = self._index(name, op)
        if mtu is not None:
            validate_mtu(mtu, op, name)
        if up is None and mtu is None and mac is None:
            return
        with translate(op, name):
            self._raw().set(idx, up=up, mtu=mtu, mac=norm_mac(mac) if mac else None)

    def enslave(self, name: str, bridge: str) -> None:
        op = "enslave"
        found = self._lookup(name, op)
        if found is None:
            raise errors.NotFound(f"no link {name}", op=op, device=name, code=errno.ENODEV)
        bidx = self._index(bridge, op)
        if found[1]["master"] == bidx:
            return
        with translate(op, name):
            self._raw().set(found[0].index, master=bidx)

    def release(self, name: str) -> None:
        """Take ``name`` out of its bridge; a missing link or no bridge is success."""
        op = "release"
        found = self._lookup(name, op)
        if found is None or not found[1]["master"]:
            return
        try:
            self._raw().set(found[0].index, master=0)
        except OSError as e:
            if e.errno != errno.ENODEV:
                raise errors.from_errno(e.errno, f"{op} {name}: {e}", op=op, device=name) from e

    # ------------------------------------------------------------------ counters, events
    def link_stats(self) -> dict[str, LinkStats]:
        """Counters of every link (IFLA_STATS64), from one dump."""
        with translate("link_stats", None):
            return {netlink_dump.msg_name(m): netlink_dump.stats(m) for m in self._raw().dump(stats=True)}

    def watch_links(self, callback: Callable[[LinkEvent], None]) -> Callable[[], None]:
        """Call ``callback`` from a reader thread for every link change in the namespace
        until the returned ``stop()`` is called; ``LinkEvent("overflow")`` after lost
        events (the socket is then reopened)."""
        with translate("watch_links", self.netns):
            w = LinkWatcher(self.netns, callback, snapshot=self._names, rcvbuf=self.event_rcvbuf)
        with self._lock:
            self._watchers.append(w)
        return w.stop

    def close(self) -> None:
        """Stop watchers and close this host's netlink sockets."""
        with self._lock:
            watchers, self._watchers = self._watchers, []
            sockets, self._sockets = self._sockets, []
        for w in watchers:
            w.stop()
        for ipr in sockets:
            try:
                ipr.close()
            except Exception:  # a socket owned by an exited thread may be half gone
                pass
        self._local = threading.local()
