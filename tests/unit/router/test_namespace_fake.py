"""RouterNamespace.sync/destroy against FakeHost namespaces (no root needed).

``FakeSystem`` stands in for the machine (namespaces, sysctls, nft, conntrack) and
records what it was asked; links, addresses and routes live in ``FakeHost``, which
obeys the same ``HostDriver`` contract as the real netlink driver.
"""

from __future__ import annotations

import pytest

from lbtap.drivers.host.base import Route
from lbtap.drivers.host.fake import FakeHost
from lbtap.drivers.router import ExtraRoute, FloatingIP, Gateway, Router, RouterNamespace, RouterPort, render_nat

HOST_NS = "host-a"
A = RouterPort("pa0000000000", "fa:16:3e:00:0a:01", ("10.0.0.1/24",), 1450)
B = RouterPort("pb0000000000", "fa:16:3e:00:0b:01", ("10.1.0.1/24",), 1450)
G = RouterPort("pg0000000000", "fa:16:3e:00:0c:01", ("203.0.113.2/24",))
FIP = FloatingIP("203.0.113.10", "10.0.0.5")


class FakeSystem:
    def __init__(self) -> None:
        self.root = FakeHost()
        self.root.namespace(HOST_NS)
        self.sysctls: dict[tuple[str, str], str] = {}
        self.nft: dict[str, str] = {}
        self.flushed: list[str] = []

    def namespace_exists(self, name: str) -> bool:
        return name in self.root._world

    def create_namespace(self, name: str) -> None:
        self.root.namespace(name)

    def delete_namespace(self, name: str) -> None:
        ns = self.root._world.pop(name, None)
        if ns is not None:  # the kernel destroys the namespace's virtual links
            for link in ns.list_links():
                if link.name != "lo":
                    ns.delete_link(link.name)
        self.nft.pop(name, None)

    def driver(self, netns: str | None) -> FakeHost:
        return self.root._world[netns or ""]

    def forget(self, netns: str) -> None:
        pass

    def set_sysctl(self, netns: str, key: str, value: str) -> None:
        self.sysctls[(netns, key)] = value

    def apply_nft(self, netns: str, script: str) -> None:
        self.nft[netns] = script

    def flush_conntrack(self, netns: str, addresses: list[str]) -> None:
        self.flushed += addresses


def router(*ports: RouterPort, fips=(), routes=(), gw: bool = True) -> Router:
    return Router("r1", ports, Gateway(G, ("203.0.113.1",)) if gw else None, routes, fips)


@pytest.fixture
def sysm() -> FakeSystem:
    return FakeSystem()


def names(drv: FakeHost) -> set[str]:
    return {link.name for link in drv.list_links()}


def test_sync_builds_the_namespace(sysm: FakeSystem) -> None:
    rns = RouterNamespace("r1", host="h1", host_netns=HOST_NS, system=sysm)
    r = router(A, B, fips=(FIP,), routes=(ExtraRoute("10.50.0.0/16", "10.0.0.254"),))
    res = rns.sync(r)
    assert rns.name == "qrouter-r1-h1"
    inside, host = sysm.driver(rns.name), sysm.driver(HOST_NS)
    assert names(inside) == {"lo", "qr-pa000000000", "qr-pb000000000", "qg-pg000000000"}
    assert {"tappa000000000", "tappb000000000", "tappg000000000"} <= names(host)
    qr = inside.get_link("qr-pa000000000")
    assert qr.mac == A.mac_address and qr.mtu == 1450 and qr.up
    assert host.get_link("tappa000000000").up and host.get_link("tappa000000000").mtu == 1450
    assert {a.cidr for a in inside.list_addresses("qg-pg000000000")} == {"203.0.113.2/24", "203.0.113.10/32"}
    routes = {(x.dst, x.ifname, x.gateway) for x in inside.list_routes()}
    assert routes == {("default", "qg-pg000000000", "203.0.113.1"), ("10.50.0.0/16", "qr-pa000000000", "10.0.0.254")}
    assert sysm.sysctls[(rns.name, "net.ipv4.ip_forward")] == "1"
    assert sysm.nft[rns.name] == render_nat(r)
    assert sorted(res.created) == ["qg-pg000000000", "qr-pa000000000", "qr-pb000000000"]
    assert not res.problems


def test_sync_is_idempotent(sysm: FakeSystem) -> None:
    rns = RouterNamespace("r1", host_netns=HOST_NS, system=sysm)
    r = router(A, B, fips=(FIP,))
    assert rns.sync(r).changed
    again = rns.sync(r)
    assert not again.changed and not again.created and not again.floating_ips_removed


def test_sync_converges_to_a_new_router(sysm: FakeSystem) -> None:
    rns = RouterNamespace("r1", host_netns=HOST_NS, system=sysm)
    rns.sync(router(A, B, fips=(FIP,), routes=(ExtraRoute("10.50.0.0/16", "10.1.0.254"),)))
    a2 = RouterPort(A.id, A.mac_address, ("10.0.0.1/24", "10.0.9.1/24"), 1450)
    res = rns.sync(router(a2))
    inside, host = sysm.driver(rns.name), sysm.driver(HOST_NS)
    assert res.deleted == ["qr-pb000000000"]
    assert "qr-pb000000000" not in names(inside) and "tappb000000000" not in names(host)
    assert res.floating_ips_removed == ["203.0.113.10"] and sysm.flushed == ["203.0.113.10"]
    assert {a.cidr for a in inside.list_addresses("qr-pa000000000")} == {"10.0.0.1/24", "10.0.9.1/24"}
    assert [x.dst for x in inside.list_routes()] == ["default"]
    # Gateway removed: its device, default route and NAT go.
    rns.sync(router(a2, fips=(FloatingIP("203.0.113.11", "10.0.0.6"),)))
    res = rns.sync(router(a2, gw=False))
    assert res.deleted == ["qg-pg000000000"] and "tappg000000000" not in names(host)
    assert res.floating_ips_removed == ["203.0.113.11"]
    assert inside.list_routes() == []
    assert "snat" not in sysm.nft[rns.name]


def test_sync_rebuilds_a_pair_whose_host_end_vanished(sysm: FakeSystem) -> None:
    rns = RouterNamespace("r1", host_netns=HOST_NS, system=sysm)
    rns.sync(router(A))
    inside, host = sysm.driver(rns.name), sysm.driver(HOST_NS)
    inside.delete_link("qr-pa000000000")
    inside.create_veth("qr-pa000000000", "stray0")  # same name, peer in the wrong place
    res = rns.sync(router(A))
    assert "qr-pa000000000" in res.created
    assert inside.get_link("qr-pa000000000").mac == A.mac_address
    assert "tappa000000000" in names(host) and "stray0" not in names(inside)


def test_unreachable_routes_are_reported_not_fatal(sysm: FakeSystem) -> None:
    rns = RouterNamespace("r1", host_netns=HOST_NS, system=sysm)
    res = rns.sync(router(A, routes=(ExtraRoute("10.70.0.0/16", "172.31.0.1"),)))
    assert res.problems and "172.31.0.1" in res.problems[0]
    assert Route("10.70.0.0/16", "qr-pa000000000", "172.31.0.1") not in sysm.driver(rns.name).list_routes()


def test_destroy_leaves_nothing(sysm: FakeSystem) -> None:
    rns = RouterNamespace("r1", host_netns=HOST_NS, system=sysm)
    rns.sync(router(A, B, fips=(FIP,)))
    rns.destroy()
    assert not sysm.namespace_exists(rns.name)
    assert not any(n.startswith("tap") for n in names(sysm.driver(HOST_NS)))
    rns.destroy()  # idempotent


def test_refuses_another_routers_data(sysm: FakeSystem) -> None:
    with pytest.raises(ValueError):
        RouterNamespace("r2", system=sysm).sync(router(A))
