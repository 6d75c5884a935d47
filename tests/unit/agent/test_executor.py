"""Executor on a FakeHost: assert the resulting host state, and failure scoping."""

from __future__ import annotations

import pytest

from lbtap.agent.core import ops as o
from lbtap.agent.core.executor import apply
from lbtap.agent.core.hostview import HostView
from lbtap.agent.core.plan import Desired, PortWiring, network_wiring, plan
from lbtap.domain.models import Segment
from lbtap.drivers.host import errors
from lbtap.drivers.host.base import Route
from lbtap.drivers.host.fake import FakeHost

from .harness import settings

CFG = settings()
NET_A, BR_A = "neta0000000-x", "brqneta0000000"
NET_B, BR_B = "netb0000000-x", "brqnetb0000000"
A1, A2, B1 = "tapa1a1a1a1a1a", "tapa2a2a2a2a2a", "tapb1b1b1b1b1b"


def observe(host: FakeHost) -> HostView:
    v = HostView()
    v.set_links(host.list_links())
    v.set_addresses(host.list_addresses(), host.list_routes())
    return v


def wire(host: FakeHost, nets: dict[str, Segment], ports: dict[str, str], remove=()):
    desired = Desired(
        {n: network_wiring(n, s, CFG) for n, s in nets.items()},
        {d: PortWiring(d, n) for d, n in ports.items()},
        remove, frozenset({"eth1"}),
    )
    ops = plan(desired, observe(host))
    return ops, apply(host, ops)


@pytest.fixture
def host():
    h = FakeHost()
    for t in (A1, A2, B1):
        h.create_tap(t)
    return h


def test_local_and_vxlan_wiring(host):
    ops, r = wire(host, {NET_A: Segment("local"), NET_B: Segment("vxlan", None, 42, 1450)},
                  {A1: NET_A, A2: NET_A, B1: NET_B})
    assert r.ok and r.succeeded == {A1, A2, B1}
    assert host.get_link(A1).master == BR_A and host.get_link(A2).master == BR_A
    assert host.get_link(B1).master == BR_B and host.get_link(B1).mtu == 1450
    vx = host.get_link("vxlan-42")
    assert vx.master == BR_B and vx.up and vx.mtu == 1450 and vx.vxlan.local == "203.0.113.1"
    assert host.get_link(BR_B).mtu == 1450 and host.get_link(BR_B).up
    # Converged: planning again from the real state yields nothing.
    assert wire(host, {NET_A: Segment("local"), NET_B: Segment("vxlan", None, 42, 1450)},
                {A1: NET_A, A2: NET_A, B1: NET_B})[0] == []


def test_failed_bridge_fails_exactly_its_networks_devices(host):
    host.fail("create_bridge", BR_A, errors.Busy)
    _, r = wire(host, {NET_A: Segment("local"), NET_B: Segment("local")}, {A1: NET_A, A2: NET_A, B1: NET_B})
    assert set(r.failed) == {A1, A2} and r.succeeded == {B1}
    assert isinstance(r.failed[A1], errors.Busy)
    assert host.get_link(A1).master is None and host.get_link(B1).master == BR_B
    assert r.skipped > 0  # A1/A2's later ops were not attempted


def test_failed_device_op_skips_only_that_device(host):
    host.fail("enslave", A1)
    _, r = wire(host, {NET_A: Segment("local")}, {A1: NET_A, A2: NET_A})
    assert set(r.failed) == {A1} and r.succeeded == {A2}
    assert host.get_link(A2).master == BR_A and host.get_link(A1).master is None
    assert not host.get_link(A1).up  # its "up" op after the failed enslave was skipped


def test_vlan_not_supported_fails_only_that_network(host):
    h = FakeHost(supports_vlan=False)
    h.create_physical("eth1")
    for t in (A1, B1):
        h.create_tap(t)
    _, r = wire(h, {NET_A: Segment("vlan", "physnet1", 100), NET_B: Segment("local")}, {A1: NET_A, B1: NET_B})
    assert isinstance(r.failed[A1], errors.NotSupported) and not r.failed[A1].retriable
    assert r.succeeded == {B1} and h.get_link(B1).master == BR_B


def test_flat_moves_address_and_route_to_the_bridge_and_back():
    h = FakeHost()
    h.create_physical("eth1")
    h.create_tap(A1)
    h.add_address("eth1", "198.51.100.5/24")
    h.add_address("eth1", "198.51.100.6/24")  # a secondary
    h.add_route(Route(dst="default", ifname="eth1", gateway="198.51.100.1"))
    _, r = wire(h, {NET_A: Segment("flat", "physnet1")}, {A1: NET_A})
    assert r.ok, r.failed
    assert h.get_link("eth1").master == BR_A
    assert {a.cidr for a in h.list_addresses(BR_A)} == {"198.51.100.5/24", "198.51.100.6/24"}
    assert h.list_addresses("eth1") == []
    assert [(x.ifname, x.gateway) for x in h.list_routes() if x.dst == "default"] == [(BR_A, "198.51.100.1")]

    h.delete_link(A1)
    _, r = wire(h, {}, {}, remove=[BR_A])
    assert r.ok, r.other_failures
    assert h.get_link(BR_A) is None and h.get_link("eth1").master is None
    assert {a.cidr for a in h.list_addresses("eth1")} == {"198.51.100.5/24", "198.51.100.6/24"}
    assert [(x.ifname, x.gateway) for x in h.list_routes() if x.dst == "default"] == [("eth1", "198.51.100.1")]


def test_seed_fault_address_on_nic_and_bridge_converges():
    """The seed's production fault: add-on-bridge succeeded, delete-from-NIC did not,
    the agent restarted. Re-adding must not be attempted (it was "File exists"
    forever); only the missing delete runs, and the address ends on the bridge only."""
    h = FakeHost()
    h.create_physical("eth1")
    h.create_tap(A1)
    h.create_bridge(BR_A, mtu=1500)
    h.set_link(BR_A, up=True)
    h.enslave("eth1", BR_A)
    h.add_address("eth1", "192.168.44.160/32")
    h.add_address(BR_A, "192.168.44.160/32")
    h.fail("add_address", None, errors.AlreadyExists("RTNETLINK answers: File exists", op="add_address"))
    ops, r = wire(h, {NET_A: Segment("flat", "physnet1")}, {A1: NET_A})
    assert not any(isinstance(op, o.AddAddress) for op in ops)
    assert r.ok, r.failed
    assert {a.cidr for a in h.list_addresses(BR_A)} == {"192.168.44.160/32"}
    assert h.list_addresses("eth1") == []
    assert h.get_link(A1).master == BR_A
    assert wire(h, {NET_A: Segment("flat", "physnet1")}, {A1: NET_A})[0] == []


def test_failed_route_move_puts_the_route_back():
    h = FakeHost()
    h.create_physical("eth1")
    h.create_bridge(BR_A)
    h.set_link(BR_A, up=True)
    h.add_address("eth1", "198.51.100.5/24")
    gw = Route(dst="default", ifname="eth1", gateway="198.51.100.1")
    h.add_route(gw)
    # The bridge has no address on the gateway's subnet: the add fails (unreachable).
    r = apply(h, [o.MoveRoute("eth1", route=h.list_routes()[0], to=BR_A, devices=(A1,))])
    assert A1 in r.failed
    assert [(x.ifname, x.gateway) for x in h.list_routes()] == [("eth1", "198.51.100.1")]


def test_teardown_scope_stops_at_first_failure():
    h = FakeHost()
    h.create_bridge(BR_A)
    h.create_vxlan("vxlan-42", __import__("lbtap.drivers.host.base", fromlist=["VxlanInfo"]).VxlanInfo(vni=42))
    h.enslave("vxlan-42", BR_A)
    h.fail("delete_link", "vxlan-42")
    ops, r = wire(h, {}, {}, remove=[BR_A])
    assert [type(op).__name__ for op in ops] == ["DeleteLink", "DeleteBridge"]
    assert set(r.other_failures) == {BR_A} and r.skipped == 1
    assert h.get_link(BR_A) is not None  # not deleted half-way


def test_reject_touches_nothing_and_is_not_retriable():
    h = FakeHost()
    before = len(h.calls)
    r = apply(h, [o.Reject(BR_A, devices=(A1,), reason="no mapping")])
    assert isinstance(r.failed[A1], o.WiringRejected) and not r.failed[A1].retriable
    assert len(h.calls) == before


def test_driver_bug_is_contained_per_device(host):
    class Buggy:
        def __getattr__(self, name):
            if name == "enslave":
                def boom(dev, br):
                    if dev == A1:
                        raise RuntimeError("bug")
                    return host.enslave(dev, br)
                return boom
            return getattr(host, name)

    ops = plan(Desired({NET_A: network_wiring(NET_A, Segment("local"), CFG)},
                       {A1: PortWiring(A1, NET_A), A2: PortWiring(A2, NET_A)}), observe(host))
    r = apply(Buggy(), ops)
    assert set(r.failed) == {A1} and r.succeeded == {A2}
    assert isinstance(r.failed[A1], errors.HostError)
