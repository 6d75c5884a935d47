"""TcQosDriver's choices (ifb shaping, police fallback, error mapping) against a
recording stand-in for the netlink socket: the kernel boundary, not the driver."""

from __future__ import annotations

import errno

import pytest

from lbtap.drivers.host import errors
from lbtap.domain.naming import tap_name
from lbtap.drivers.qos import BandwidthLimit, TcQosDriver, ifb_name


class NlError(Exception):
    """Shaped like pyroute2's NetlinkError: not an OSError, errno in ``.code``."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


class Msg(dict):
    def __init__(self, attrs: dict, **fields):
        super().__init__(fields)
        self.attrs = attrs

    def get_attr(self, name):
        return self.attrs.get(name)


class FakeIPRoute:
    """Links by name, qdiscs and filters per link index; records every tc call."""

    def __init__(self, links=("tapa",), ifb_supported=True, kinds=None):
        self.links = {name: i + 1 for i, name in enumerate(links)}
        self.kinds = dict(kinds or {})  # name -> link kind
        self.ifb_supported = ifb_supported
        self.qdiscs: dict[int, dict[int, str]] = {}  # index -> parent -> kind
        self.filters: dict[int, list[dict]] = {}
        self.calls: list[tuple] = []

    def link_lookup(self, ifname):
        return [self.links[ifname]] if ifname in self.links else []

    def link(self, cmd, **kw):
        self.calls.append(("link", cmd, kw.get("ifname") or kw.get("index")))
        if cmd == "add":
            if kw.get("kind") == "ifb" and not self.ifb_supported:
                raise NlError(errno.EOPNOTSUPP)
            self.links[kw["ifname"]] = max(self.links.values(), default=0) + 1
            self.kinds[kw["ifname"]] = kw.get("kind")
        elif cmd == "del":
            self.links = {n: i for n, i in self.links.items() if i != kw["index"]}

    def get_links(self):
        return [Msg({"IFLA_IFNAME": name, "IFLA_LINKINFO": Msg({"IFLA_INFO_KIND": self.kinds.get(name)})}, index=i)
                for name, i in self.links.items()]

    def get_qdiscs(self, index):
        return [Msg({"TCA_KIND": kind}, parent=parent) for parent, kind in self.qdiscs.get(index, {}).items()]

    def get_filters(self, index, parent):
        return list(self.filters.get(index, []))

    def tc(self, cmd, kind=None, index=None, handle=None, **kw):
        self.calls.append(("tc", cmd, kind, index, kw.get("action", {}).get("kind")))
        if cmd in ("replace", "add") and kind == "tbf":
            self.qdiscs.setdefault(index, {})[0xFFFFFFFF] = "tbf"
        elif cmd == "add" and kind == "ingress":
            self.qdiscs.setdefault(index, {})[0xFFFFFFF1] = "ingress"
        elif cmd == "add-filter":
            self.filters.setdefault(index, []).append(kw["action"])
        elif cmd == "del-filter":
            self.filters[index] = []
        elif cmd == "del":
            parent = 0xFFFFFFF1 if kind == "ingress" else 0xFFFFFFFF
            if parent not in self.qdiscs.get(index, {}):
                raise NlError(errno.ENOENT)
            del self.qdiscs[index][parent]
            if kind == "ingress":
                self.filters[index] = []

    def close(self):
        pass


def test_auto_mode_polices_when_the_kernel_refuses_ifb():
    ipr = FakeIPRoute(ifb_supported=False)
    TcQosDriver(None, ipr=ipr).set_limits("tapa", None, BandwidthLimit(6000, 600))
    (police,) = ipr.filters[1]
    assert police["kind"] == "police" and police["rate"] == 750_000 and police["burst"] == 75_000
    assert police["action"] == "drop"
    assert "ifba" not in ipr.links


def test_police_mode_never_creates_an_ifb_and_replaces_its_filter():
    ipr = FakeIPRoute()
    drv = TcQosDriver(None, egress_mode="police", ipr=ipr)
    drv.set_limits("tapa", None, BandwidthLimit(6000))
    drv.set_limits("tapa", None, BandwidthLimit(3000))
    assert [f["rate"] for f in ipr.filters[1]] == [375_000]
    assert not any(c[:2] == ("link", "add") for c in ipr.calls)


def test_ifb_mode_reports_missing_ifb_support_as_not_supported():
    drv = TcQosDriver(None, egress_mode="ifb", ipr=FakeIPRoute(ifb_supported=False))
    with pytest.raises(errors.NotSupported):
        drv.set_limits("tapa", None, BandwidthLimit(1000))


def test_removing_limits_deletes_only_what_is_there():
    ipr = FakeIPRoute(ifb_supported=False)
    drv = TcQosDriver(None, ipr=ipr)
    drv.set_limits("tapa", BandwidthLimit(1000), BandwidthLimit(2000))
    assert ipr.qdiscs[1] == {0xFFFFFFFF: "tbf", 0xFFFFFFF1: "ingress"}
    drv.set_limits("tapa", None, None)
    drv.set_limits("tapa", None, None)  # nothing left: no error
    assert ipr.qdiscs[1] == {} and ipr.filters[1] == []


def test_orphan_ifbs_of_lbtap_are_removed_and_no_others():
    live, dead = tap_name("11111111-aaaa"), tap_name("22222222-bbbb")
    ipr = FakeIPRoute(links=(live, ifb_name(live), ifb_name(dead), ifb_name("vethx"), "ifb0", "ifb1", "ifbmine",
                             "eth0"),
                      kinds={ifb_name(live): "ifb", ifb_name(dead): "ifb", ifb_name("vethx"): "ifb", "ifb0": "ifb",
                             "ifb1": "ifb", "ifbmine": "ifb", "eth0": "veth"})
    removed = TcQosDriver(None, ipr=ipr).remove_orphan_ifbs()
    assert sorted(removed) == sorted([ifb_name(dead), ifb_name("vethx")])
    assert set(ipr.links) == {live, ifb_name(live), "ifb0", "ifb1", "ifbmine", "eth0"}


def test_limits_reads_a_policer_as_a_limit():
    ipr = FakeIPRoute()
    drv = TcQosDriver(None, egress_mode="police", ipr=ipr)
    drv.set_limits("tapa", None, BandwidthLimit(6000))
    # the recording stand-in keeps the action dicts, not netlink messages: the rate is
    # unreadable, yet the tap must not read as unlimited
    ipr.filters[1] = [Msg({"TCA_OPTIONS": None})]
    assert not drv.limits("tapa").empty
