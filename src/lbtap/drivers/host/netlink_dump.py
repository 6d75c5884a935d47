"""Fast RTM_GETLINK requests on a raw netlink socket, parsed with ``struct``.

Why not pyroute2 here: it decodes every attribute of every link (bridge timers, port
options, ...), which costs about 1 ms per link: a 1000-link dump took a second. The
agent lists links on every full reconcile and looks links up on every plug, so this
module reads only the attributes ``Link`` needs, and asks the kernel to leave the
counters out of dumps that do not need them (RTEXT_FILTER_SKIP_STATS).
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
import struct

from lbtap.drivers.host import netns as netns_mod
from lbtap.drivers.host.base import Link, LinkStats, VxlanInfo

RTM_NEWLINK = 16
RTM_GETLINK = 18
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_DUMP_INTR = 0x10
NLMSG_ERROR = 2
NLMSG_DONE = 3
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER = 1, 3, 4, 5, 10
IFLA_LINKINFO, IFLA_STATS64, IFLA_AF_SPEC, IFLA_EXT_MASK = 18, 23, 26, 29
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
RTEXT_FILTER_SKIP_STATS = 1 << 3
IFF_UP, IFF_LOWER_UP = 0x1, 0x10000

_NLMSG = struct.Struct("=IHHII")
_IFI = struct.Struct("=BxHiII")
_NLA = struct.Struct("=HH")
_U32 = struct.Struct("=I")
_STATS = struct.Struct("=8Q")
_seq = itertools.count(1)


class RawLinkError(OSError):
    pass


def _attrs(data: bytes, start: int, end: int, stop_at: int = -1, _unpack=_NLA.unpack_from) -> dict[int, tuple[int, int]]:
    """type -> (offset, end) of each attribute's payload, up to ``stop_at`` included."""
    out = {}
    off = start
    while off + 4 <= end:
        length, typ = _unpack(data, off)
        if length < 4:
            break
        typ &= 0x3FFF
        out[typ] = (off + 4, off + length)
        if typ == stop_at:
            break
        off += (length + 3) & ~3
    return out


def _nla(typ: int, payload: bytes) -> bytes:
    return _NLA.pack(4 + len(payload), typ) + payload + b"\0" * ((4 - len(payload) % 4) % 4)


def _ip(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6 if len(raw) == 16 else socket.AF_INET, raw)


class RawLinks:
    """One raw NETLINK_ROUTE socket, opened in ``netns``; use from one thread only."""

    def __init__(self, netns: str | None):
        with netns_mod.in_namespace(netns):
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((0, 0))
        self.sock.settimeout(10)  # a kernel that never answers must not hang the agent

    def close(self) -> None:
        self.sock.close()

    def _request(self, flags: int, index: int = 0, name: str | None = None, stats: bool = False,
                 mtype: int = RTM_GETLINK, ifi_flags: int = 0, ifi_change: int = 0, attrs: bytes = b"") -> list[tuple[bytes, int, int]]:
        seq = next(_seq) & 0xFFFFFFFF
        body = _IFI.pack(0, 0, index, ifi_flags, ifi_change) + attrs
        if name is not None:
            body += _nla(IFLA_IFNAME, name.encode() + b"\0")
        if not stats and mtype == RTM_GETLINK:
            body += _nla(IFLA_EXT_MASK, _U32.pack(RTEXT_FILTER_SKIP_STATS))
        self.sock.send(_NLMSG.pack(16 + len(body), mtype, NLM_F_REQUEST | flags, seq, 0) + body)
        out: list[tuple[bytes, int, int]] = []
        interrupted = False
        while True:
            data = self.sock.recv(1 << 20)
            off = 0
            while off + 16 <= len(data):
                length, mtype, mflags, mseq, _ = _NLMSG.unpack_from(data, off)
                if length < 16:
                    break
                if mseq == seq:
                    if mtype == NLMSG_ERROR:
                        (code,) = struct.unpack_from("=i", data, off + 16)
                        if code:
                            raise RawLinkError(-code, os.strerror(-code))
                        return out
                    if mtype == NLMSG_DONE:
                        if interrupted:
                            raise RawLinkError(errno.EAGAIN, "link dump interrupted")
                        return out
                    interrupted |= bool(mflags & NLM_F_DUMP_INTR)
                    out.append((data, off, off + length))
                    if not flags & NLM_F_DUMP:
                        return out
                off += (length + 3) & ~3

    def dump(self, *, stats: bool = False) -> list[tuple[bytes, int, int]]:
        for _ in range(3):  # a dump interrupted by concurrent changes is retried
            try:
                return self._request(NLM_F_DUMP, stats=stats)
            except RawLinkError as e:
                if e.errno != errno.EAGAIN:
                    raise
        return self._request(NLM_F_DUMP, stats=stats)

    def set(self, index: int, *, up: bool | None = None, mtu: int | None = None,
            mac: str | None = None, master: int | None = None) -> None:
        """RTM_NEWLINK on an existing link; raises ``RawLinkError`` with the errno."""
        attrs = b""
        if mtu is not None:
            attrs += _nla(IFLA_MTU, _U32.pack(mtu))
        if mac is not None:
            attrs += _nla(IFLA_ADDRESS, bytes(int(x, 16) for x in mac.split(":")))
        if master is not None:
            attrs += _nla(IFLA_MASTER, _U32.pack(master))
        flags = IFF_UP if up else 0
        change = IFF_UP if up is not None else 0
        self._request(NLM_F_ACK, index=index, mtype=RTM_NEWLINK, ifi_flags=flags, ifi_change=change, attrs=attrs)

    def get(self, name: str | None = None, index: int = 0) -> tuple[bytes, int, int] | None:
        try:
            got = self._request(0, index=index, name=name)
        except RawLinkError as e:
            if e.errno == errno.ENODEV:
                return None
            raise
        return got[0] if got else None


def msg_index(m: tuple[bytes, int, int]) -> int:
    return _IFI.unpack_from(m[0], m[1] + 16)[2]


def msg_name(m: tuple[bytes, int, int]) -> str:
    data, start, end = m
    length, typ = _NLA.unpack_from(data, start + 32)
    if typ & 0x3FFF == IFLA_IFNAME:  # the kernel puts the name first
        return data[start + 36:start + 32 + length].split(b"\0", 1)[0].decode()
    s, e = _attrs(data, start + 32, end, IFLA_IFNAME)[IFLA_IFNAME]
    return data[s:e].split(b"\0", 1)[0].decode()


def parse(m: tuple[bytes, int, int], names: dict[int, str] | None = None) -> tuple[Link, dict[str, int]]:
    """The ``Link`` and the ifindexes it refers to: ``master``, ``link`` (veth peer /
    VLAN parent) and ``vxlan_dev``. Their names come from ``names`` when given (else
    left unresolved, see ``resolve``)."""
    names = names or {}
    data, start, end = m
    _, _, index, flags, _ = _IFI.unpack_from(data, start + 16)
    # Every kernel since 2.6 writes the large IFLA_AF_SPEC after IFLA_LINKINFO (and
    # IFLA_LINK, IFLA_MASTER): stopping there halves the parsing time.
    a = _attrs(data, start + 32, end, IFLA_AF_SPEC)

    def u32(t: int, src=a) -> int | None:
        return _U32.unpack_from(data, src[t][0])[0] if t in src else None

    refs = {"master": u32(IFLA_MASTER) or 0, "link": u32(IFLA_LINK) or 0, "vxlan_dev": 0}
    s, e = a[IFLA_IFNAME]
    name = data[s:e].split(b"\0", 1)[0].decode()
    mac = None
    if IFLA_ADDRESS in a:
        s, e = a[IFLA_ADDRESS]
        mac = ":".join(f"{b:02x}" for b in data[s:e])
    kind = ""
    vxlan = None
    vlan_id = None
    if IFLA_LINKINFO in a:
        info = _attrs(data, *a[IFLA_LINKINFO])
        if IFLA_INFO_KIND in info:
            s, e = info[IFLA_INFO_KIND]
            kind = data[s:e].split(b"\0", 1)[0].decode()
        if IFLA_INFO_DATA in info and kind in ("vxlan", "vlan"):  # skip bridges' 40 options
            d = _attrs(data, *info[IFLA_INFO_DATA])
            if kind == "vxlan":
                def ip(t4: int, t6: int) -> str | None:
                    for t in (t4, t6):
                        if t in d:
                            s, e = d[t]
                            v = _ip(data[s:e])
                            if v not in ("0.0.0.0", "::"):
                                return v
                    return None
                refs["vxlan_dev"] = u32(3, d) or 0
                dev = names.get(refs["vxlan_dev"]) if refs["vxlan_dev"] else None
                port = struct.unpack_from("!H", data, d[15][0])[0] if 15 in d else 4789
                vxlan = VxlanInfo(
                    vni=u32(1, d) or 0, local=ip(4, 17), group=ip(2, 16), dev=dev, port=port,
                    learning=bool(data[d[7][0]]) if 7 in d else False,
                )
            elif kind == "vlan" and 1 in d:
                vlan_id = struct.unpack_from("=H", data, d[1][0])[0]
    link = Link(
        name=name, index=index, kind=kind, mac=mac, mtu=u32(IFLA_MTU) or 0,
        up=bool(flags & IFF_UP),
        # IFLA_CARRIER stays 1 on a down bridge; LOWER_UP while up is the operational truth.
        carrier=bool(flags & IFF_UP) and bool(flags & IFF_LOWER_UP),
        master=names.get(refs["master"]) if refs["master"] else None,
        vxlan=vxlan, vlan_id=vlan_id,
        parent=names.get(refs["link"]) if kind == "vlan" and refs["link"] else None,
        peer_index=(refs["link"] or None) if kind == "veth" else None,
    )
    return link, refs


def resolve(link: Link, refs: dict[str, int], names: dict[int, str | None]) -> Link:
    """Fill in names of the master, VLAN parent and VXLAN underlay."""
    from dataclasses import replace

    changes: dict = {}
    if refs["master"]:
        changes["master"] = names.get(refs["master"])
    if link.kind == "vlan" and refs["link"]:
        changes["parent"] = names.get(refs["link"])
    if link.vxlan is not None and refs["vxlan_dev"]:
        changes["vxlan"] = replace(link.vxlan, dev=names.get(refs["vxlan_dev"]))
    return replace(link, **changes) if changes else link


def stats(m: tuple[bytes, int, int]) -> LinkStats:
    data, start, end = m
    a = _attrs(data, start + 32, end)
    if IFLA_STATS64 not in a:
        return LinkStats()
    return LinkStats(*_STATS.unpack_from(data, a[IFLA_STATS64][0]))
