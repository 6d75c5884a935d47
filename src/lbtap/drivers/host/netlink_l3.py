"""Addresses, routes, bridge FDB and the promote_secondaries sysctl of ``NetlinkHost``
(a mixin: it uses the host's per-thread ``_ipr()`` and name lookups)."""

from __future__ import annotations

import errno
import ipaddress
import socket
from contextlib import contextmanager
from typing import Iterator

from pyroute2.netlink.exceptions import NetlinkError

from lbtap.drivers.host import errors
from lbtap.drivers.host import netns as netns_mod
from lbtap.drivers.host.base import Address, FdbEntry, Route
from lbtap.drivers.host.kernel_rules import norm_mac, normalize_route, validate_name
from lbtap.drivers.host.netlink_parse import (
    NTF_MASTER,
    NTF_SELF,
    NUD_NOARP,
    NUD_PERMANENT,
    ROUTE_SCOPES,
    RT_TABLE_MAIN,
    parse_address,
    parse_fdb,
    parse_route,
)

ZERO_MAC = "00:00:00:00:00:00"


@contextmanager
def translate(op: str, device: str | None) -> Iterator[None]:
    """The one place netlink/OS errors become ``HostError``s."""
    try:
        yield
    except NetlinkError as e:
        raise errors.from_errno(e.code, f"{op} {device or ''}: {e}", op=op, device=device) from e
    except TimeoutError as e:  # no errno: the kernel did not answer in time
        raise errors.Transient(f"{op} {device or ''}: netlink timeout", op=op, device=device, code=errno.ETIMEDOUT) from e
    except OSError as e:
        raise errors.from_errno(e.errno, f"{op} {device or ''}: {e}", op=op, device=device) from e


def _iface(cidr: str, op: str, device: str):
    try:
        return ipaddress.ip_interface(cidr)
    except ValueError as e:
        raise errors.InvalidArgument(f"invalid address {cidr!r}", op=op, device=device, code=errno.EINVAL) from e


class NetlinkL3:
    # ------------------------------------------------------------------ addresses
    def list_addresses(self, ifname: str | None = None) -> list[Address]:
        op = "list_addresses"
        with translate(op, ifname):
            if ifname is not None:
                idx = self._index(ifname, op)
                names = {idx: ifname}
                msgs = [m for m in self._ipr().addr("dump") if m["index"] == idx]
            else:
                names = self._names()
                msgs = list(self._ipr().addr("dump"))
        out = [parse_address(m, names) for m in msgs]
        return [a for a in out if a is not None]

    def add_address(self, ifname: str, cidr: str) -> None:
        """Add ``cidr``; success if this link has it already (another link may too)."""
        op = "add_address"
        iface = _iface(cidr, op, ifname)
        idx = self._index(ifname, op)
        try:
            self._ipr().addr("add", index=idx, address=str(iface.ip), prefixlen=iface.network.prefixlen)
        except NetlinkError as e:
            if e.code != errno.EEXIST:
                raise errors.from_errno(e.code, f"{op} {cidr} on {ifname}: {e}", op=op, device=ifname) from e

    def delete_address(self, ifname: str, cidr: str) -> None:
        op = "delete_address"
        iface = _iface(cidr, op, ifname)
        found = self._lookup(ifname, op)
        if found is None:
            return
        try:
            self._ipr().addr("del", index=found[0].index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
        except NetlinkError as e:
            if e.code not in (errno.EADDRNOTAVAIL, errno.ENODEV, errno.ENOENT):
                raise errors.from_errno(e.code, f"{op} {cidr} on {ifname}: {e}", op=op, device=ifname) from e

    def set_promote_secondaries(self, ifname: str, on: bool = True) -> None:
        """Write net.ipv4.conf.<ifname>.promote_secondaries in the namespace (the thread
        must be inside it: /proc/sys/net shows the opening thread's namespace)."""
        op = "set_promote_secondaries"
        validate_name(ifname, op)
        path = f"/proc/sys/net/ipv4/conf/{ifname}/promote_secondaries"
        with translate(op, ifname), netns_mod.in_namespace(self.netns):
            try:
                with open(path, "w") as f:
                    f.write("1\n" if on else "0\n")
            except FileNotFoundError as e:
                raise errors.NotFound(f"no link {ifname}", op=op, device=ifname, code=errno.ENODEV) from e

    # ------------------------------------------------------------------ routes
    def list_routes(self, ifname: str | None = None) -> list[Route]:
        """Main-table unicast routes, without the kernel's own connected routes."""
        op = "list_routes"
        with translate(op, ifname):
            names = self._names()
            msgs = []
            for fam in (socket.AF_INET, socket.AF_INET6):
                msgs += list(self._ipr().route("dump", family=fam))
        routes = [r for r in (parse_route(m, names) for m in msgs) if r is not None]
        return [r for r in routes if ifname is None or r.ifname == ifname]

    def _route_kw(self, r: Route, idx: int) -> dict:
        kw: dict = {
            "family": socket.AF_INET6 if r.family == 6 else socket.AF_INET,
            "oif": idx,
            "table": RT_TABLE_MAIN,
        }
        if r.dst == "default":
            kw["dst"] = "::" if r.family == 6 else "0.0.0.0"
            kw["dst_len"] = 0
        else:
            net = ipaddress.ip_network(r.dst)
            kw["dst"] = str(net.network_address)
            kw["dst_len"] = net.prefixlen
        if r.gateway:
            kw["gateway"] = r.gateway
        if r.metric is not None:
            kw["priority"] = r.metric
        return kw

    def add_route(self, route: Route) -> None:
        """Add a route; success if the same one exists, ``AlreadyExists`` if another
        route holds the same destination and metric."""
        op = "add_route"
        r = normalize_route(route, op)
        idx = self._index(r.ifname, op)
        kw = self._route_kw(r, idx)
        kw["scope"] = ROUTE_SCOPES.get(r.scope, 0)
        kw["proto"] = 3  # RTPROT_BOOT, as `ip route add`
        try:
            self._ipr().route("add", **kw)
        except NetlinkError as e:
            if e.code == errno.EEXIST:
                for x in self.list_routes():
                    if (x.family, x.dst, x.metric) == (r.family, r.dst, r.metric):
                        if (x.ifname, x.gateway, x.scope) == (r.ifname, r.gateway, r.scope):
                            return
                        break
            raise errors.from_errno(e.code, f"{op} {r.dst} via {r.ifname}: {e}", op=op, device=r.ifname) from e

    def delete_route(self, route: Route) -> None:
        op = "delete_route"
        r = normalize_route(route, op)
        found = self._lookup(r.ifname, op)
        if found is None:
            return
        kw = self._route_kw(r, found[0].index)
        if route.metric is None:
            kw.pop("priority", None)  # no metric given: whichever the route has
        try:
            self._ipr().route("del", **kw)
        except NetlinkError as e:
            if e.code not in (errno.ESRCH, errno.ENOENT, errno.ENODEV):
                raise errors.from_errno(e.code, f"{op} {r.dst} via {r.ifname}: {e}", op=op, device=r.ifname) from e

    # ------------------------------------------------------------------ FDB
    def list_fdb(self, ifname: str | None = None, *, master: str | None = None) -> list[FdbEntry]:
        """Bridge-table entries (``master`` set) and VXLAN-device entries (``dst``)."""
        with translate("list_fdb", ifname):
            links = self.list_links()
            names = {link.index: link.name for link in links}
            kinds = {link.index: link.kind for link in links}
            msgs = list(self._ipr().fdb("dump"))
        out = [e for e in (parse_fdb(m, names, kinds) for m in msgs) if e is not None]
        return [e for e in out if (ifname is None or e.ifname == ifname) and (master is None or e.master == master)]

    def _fdb_target(self, entry: FdbEntry, op: str) -> tuple[int, int]:
        """(ifindex, NTF flag) after the same checks ``FakeHost`` makes."""
        found = self._lookup(entry.ifname, op)
        if found is None:
            raise errors.NotFound(f"no link {entry.ifname}", op=op, device=entry.ifname, code=errno.ENODEV)
        link, refs = found
        if entry.master is not None:
            if not refs["master"] or self._name_of(refs["master"]) != entry.master:
                raise errors.NotSupported(f"{entry.ifname} is not a port of {entry.master}", op=op, device=entry.ifname, code=errno.EOPNOTSUPP)
            return link.index, NTF_MASTER
        if link.kind != "vxlan":
            raise errors.NotSupported(f"{entry.ifname} has no own FDB", op=op, device=entry.ifname, code=errno.EOPNOTSUPP)
        return link.index, NTF_SELF

    def add_fdb(self, entry: FdbEntry) -> None:
        """Add (or, for a unicast MAC, move) an entry. All-zero MACs on a VXLAN device
        form the flooding list: each ``dst`` is its own entry (NLM_F_APPEND)."""
        op = "add_fdb"
        mac = norm_mac(entry.mac)
        idx, flag = self._fdb_target(entry, op)
        if flag == NTF_SELF:
            state = NUD_PERMANENT | NUD_NOARP  # VXLAN refuses NOARP alone (EINVAL)
        else:
            state = NUD_PERMANENT if entry.permanent else NUD_NOARP  # local vs static
        kw: dict = {"ifindex": idx, "lladdr": mac, "flags": flag, "state": state}
        if entry.dst:
            kw["dst"] = entry.dst
        cmd = "append" if flag == NTF_SELF and mac == ZERO_MAC else "replace"
        try:
            self._ipr().fdb(cmd, **kw)
        except NetlinkError as e:
            if e.code != errno.EEXIST:  # append of an identical flood entry
                raise errors.from_errno(e.code, f"{op} {mac} on {entry.ifname}: {e}", op=op, device=entry.ifname) from e

    def delete_fdb(self, entry: FdbEntry) -> None:
        op = "delete_fdb"
        mac = norm_mac(entry.mac)
        try:
            idx, flag = self._fdb_target(entry, op)
        except (errors.NotFound, errors.NotSupported):
            return  # nothing of that kind can exist, so it is gone
        kw: dict = {"ifindex": idx, "lladdr": mac, "flags": flag}
        if entry.dst:
            kw["dst"] = entry.dst
        try:
            self._ipr().fdb("del", **kw)
        except NetlinkError as e:
            if e.code not in (errno.ENOENT, errno.ENODEV, errno.ESRCH):
                raise errors.from_errno(e.code, f"{op} {mac} on {entry.ifname}: {e}", op=op, device=entry.ifname) from e
