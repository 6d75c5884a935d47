"""FakeHost: the shared HostDriver contract plus fake-only helpers (fault injection,
operation log, simulated NICs and carrier)."""

from __future__ import annotations

import pytest

from lbtap.drivers.host import errors
from lbtap.drivers.host.base import LinkStats, Route
from lbtap.drivers.host.fake import FakeHost
from tests.host_contract import HostContract


@pytest.fixture
def host():
    return FakeHost()


@pytest.fixture
def peer_ns(host):
    return "lbtt-peer", host.namespace("lbtt-peer")


class TestFakeHostContract(HostContract):
    pass


def test_fail_injects_typed_error_without_changing_state(host):
    host.fail("create_tap", "tap1", errors.Busy)
    with pytest.raises(errors.Busy) as ei:
        host.create_tap("tap1")
    assert ei.value.op == "create_tap" and ei.value.device == "tap1"
    assert host.get_link("tap1") is None
    host.create_tap("tap2")  # other devices are unaffected
    with pytest.raises(errors.Busy):
        host.create_tap("tap1")  # persistent until cleared
    host.clear_faults()
    host.create_tap("tap1")


def test_fail_times_and_any_device(host):
    host.create_bridge("brq1")
    host.create_tap("tap1")
    host.create_tap("tap2")
    host.fail("enslave", times=2)
    with pytest.raises(errors.Transient):
        host.enslave("tap1", "brq1")
    with pytest.raises(errors.Transient):
        host.enslave("tap2", "brq1")
    host.enslave("tap1", "brq1")
    assert host.get_link("tap1").master == "brq1"


def test_fail_with_instance(host):
    err = errors.NotSupported("no vlan here", op="create_vlan")
    host.fail("create_vlan", error=err)
    host.create_physical("eth1")
    with pytest.raises(errors.NotSupported) as ei:
        host.create_vlan("eth1.5", "eth1", 5)
    assert ei.value is err


def test_calls_log(host):
    host.create_bridge("brq1")
    host.delete_link("brq1")
    assert host.calls[-2:] == [("create_bridge", "brq1"), ("delete_link", "brq1")]


def test_supports_vlan_flag():
    h = FakeHost(supports_vlan=False)
    h.create_physical("eth1")
    with pytest.raises(errors.NotSupported):
        h.create_vlan("eth1.100", "eth1", 100)
    h = FakeHost()
    h.create_physical("eth1", mtu=9000)
    h.create_vlan("eth1.100", "eth1", 100)
    h.create_vlan("eth1.100", "eth1", 100)
    link = h.get_link("eth1.100")
    assert (link.kind, link.parent, link.vlan_id, link.mtu) == ("vlan", "eth1", 100, 9000)
    with pytest.raises(errors.AlreadyExists):
        h.create_vlan("eth1.100", "eth1", 101)
    with pytest.raises(errors.AlreadyExists):
        h.create_vlan("vl101", "eth1", 100)
    with pytest.raises(errors.InvalidArgument):
        h.create_vlan("eth1.5000", "eth1", 5000)
    h.delete_link("eth1")
    assert h.get_link("eth1.100") is None  # VLAN links die with their parent


def test_physical_nic_and_carrier(host):
    host.create_physical("eth1", mac="02:00:00:00:aa:01")
    nic = host.get_link("eth1")
    assert (nic.kind, nic.up, nic.carrier, nic.mac) == ("", True, True, "02:00:00:00:aa:01")
    with pytest.raises(errors.AlreadyExists):
        host.create_physical("eth1")
    host.create_bridge("brq1")
    host.create_tap("tap1")
    host.enslave("tap1", "brq1")
    host.set_link("tap1", up=True)
    host.set_link("brq1", up=True)
    assert host.get_link("brq1").carrier is False
    host.set_carrier("tap1")  # the hypervisor opened the TAP
    assert host.get_link("tap1").carrier and host.get_link("brq1").carrier


def test_bridge_takes_lowest_port_mac(host):
    host.create_bridge("brq1")
    host.create_tap("tap1", mac="02:00:00:00:00:09")
    host.create_tap("tap2", mac="02:00:00:00:00:03")
    host.enslave("tap1", "brq1")
    host.enslave("tap2", "brq1")
    assert host.get_link("brq1").mac == "02:00:00:00:00:03"


def test_stats_and_overflow_helpers(host):
    events = []
    host.watch_links(events.append)
    host.create_tap("tap1")
    host.bump_stats("tap1", rx_packets=3, tx_bytes=100)
    assert host.link_stats()["tap1"] == LinkStats(rx_packets=3, tx_bytes=100)
    host.emit_overflow()
    assert events[-1].kind == "overflow" and events[-1].link is None


def test_events_are_synchronous_and_watcher_errors_contained(host):
    seen = []

    def bad(ev):
        raise RuntimeError("consumer bug")

    host.watch_links(bad)
    host.watch_links(seen.append)
    host.create_bridge("brq1")
    assert [(e.kind, e.name) for e in seen] == [("new", "brq1")]
    host.delete_link("brq1")
    assert seen[-1].kind == "del" and seen[-1].link.name == "brq1"


def test_veth_in_other_fake_namespace_events(host):
    guest = host.namespace("g1")
    seen = []
    guest.watch_links(seen.append)
    host.create_veth("tap1", "eth0", peer_netns="g1")
    assert ("new", "eth0") in [(e.kind, e.name) for e in seen]
    host.delete_link("tap1")
    assert seen[-1].kind == "del" and seen[-1].name == "eth0"


def test_route_via_down_link_errno(host):
    host.create_bridge("brq1")
    with pytest.raises(errors.HostError) as ei:
        host.add_route(Route("10.20.0.0/16", "brq1"))
    assert ei.value.code == 100  # ENETDOWN, as the kernel says
