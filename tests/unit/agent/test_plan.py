"""Table-driven tests of the pure planner: (desired, actual) -> ops."""

from __future__ import annotations

import pytest

from lbtap.agent.core import ops as o
from lbtap.agent.core.hostview import HostView
from lbtap.agent.core.plan import Desired, PortWiring, network_wiring, plan
from lbtap.domain.models import Segment
from lbtap.drivers.host.base import Address, Link, Route, VxlanInfo

from .harness import settings

NET = "net1aaaaaaa-0000"
BR = "brqnet1aaaaaaa"
NET2 = "net2bbbbbbb-0000"
BR2 = "brqnet2bbbbbbb"
T1, T2 = "tap11111111111", "tap22222222222"
CFG = settings()
LOCAL = Segment("local", mtu=1500)
FLAT = Segment("flat", "physnet1", mtu=1500)
VLAN = Segment("vlan", "physnet1", 100, mtu=1500)
VXLAN = Segment("vxlan", None, 42, mtu=1450)
GW = Route(dst="default", ifname="eth1", gateway="198.51.100.1")


def tap(name=T1, master=None, mtu=1500, up=True, kind="tun"):
    return Link(name=name, index=hash(name) & 0xFFFF, kind=kind, mtu=mtu, up=up, master=master)


def bridge(name=BR, mtu=1500, up=True):
    return Link(name=name, index=hash(name) & 0xFFFF, kind="bridge", mtu=mtu, up=up)


def nic(name="eth1", master=None, up=True):
    return Link(name=name, index=2, kind="", up=up, master=master)


def vx(vni=42, master=BR, mtu=1450):
    return Link(name=f"vxlan-{vni}", index=50, kind="vxlan", mtu=mtu, up=True, master=master,
                vxlan=VxlanInfo(vni=vni, local="203.0.113.1"))


def short(op: o.Op) -> str:
    if isinstance(op, o.WirePort):
        bits = [f">{op.bridge}"] if op.bridge else []
        bits += [f"mtu={op.mtu}"] if op.mtu is not None else []
        bits += [f"up={op.up}"] if op.up is not None else []
        return f"WirePort {op.subject} {' '.join(bits)}"
    if isinstance(op, o.Enslave):
        return f"Enslave {op.subject}>{op.bridge}"
    if isinstance(op, o.SetLinkState):
        bits = [f"up={op.up}"] if op.up is not None else []
        bits += [f"mtu={op.mtu}"] if op.mtu is not None else []
        return f"SetLinkState {op.subject} {' '.join(bits)}"
    if isinstance(op, (o.AddAddress, o.DeleteAddress)):
        return f"{type(op).__name__} {op.subject} {op.cidr}"
    if isinstance(op, o.MoveRoute):
        return f"MoveRoute {op.subject}>{op.to} {op.route.dst}"
    return f"{type(op).__name__} {op.subject}"


def view(links, addresses=(), routes=()):
    v = HostView()
    v.set_links(links)
    v.set_addresses(addresses, routes)
    return v


def desired(segment=LOCAL, ports=((T1, True),), remove=(), network=NET):
    nets = {network: network_wiring(network, segment, CFG)}
    return Desired(nets, {d: PortWiring(d, network, up) for d, up in ports}, remove, frozenset({"eth1"}))


ADDR = Address("eth1", "198.51.100.5/24")
BR_ADDR = Address(BR, "198.51.100.5/24")

CASES = [
    ("local: nothing exists", desired(), view([tap()]), [
        f"CreateBridge {BR}", f"SetLinkState {BR} up=True", f"WirePort {T1} >{BR}"]),
    ("local: tap down and wrong MTU", desired(), view([tap(up=False, mtu=9000)]), [
        f"CreateBridge {BR}", f"SetLinkState {BR} up=True", f"WirePort {T1} >{BR} mtu=1500 up=True"]),
    ("local: correctly wired -> nothing", desired(), view([bridge(), tap(master=BR)]), []),
    ("compute port in another bridge is repaired", desired(), view([bridge(), bridge(BR2), tap(master=BR2)]), [
        f"WirePort {T1} >{BR}"]),
    ("admin down is applied to the link", desired(ports=((T1, False),)), view([bridge(), tap(master=BR)]), [
        f"WirePort {T1} up=False"]),
    ("MTU of an enslaved tap", desired(), view([bridge(), tap(master=BR, mtu=1450)]), [f"WirePort {T1} mtu=1500"]),
    ("bridge down and wrong MTU", desired(), view([bridge(up=False, mtu=1400), tap(master=BR)]), [
        f"SetLinkState {BR} up=True mtu=1500"]),
    ("veth taps are wired like TAPs", desired(), view([bridge(), tap(kind="veth")]), [f"WirePort {T1} >{BR}"]),
    ("two ports share one bridge", desired(ports=((T1, True), (T2, True))), view([tap(), tap(T2)]), [
        f"CreateBridge {BR}", f"SetLinkState {BR} up=True", f"WirePort {T1} >{BR}", f"WirePort {T2} >{BR}"]),
    ("bridge name taken by another kind", desired(), view([Link(name=BR, index=9, kind="tun"), tap()]), [
        f"Reject {BR}"]),
    ("vxlan: nothing exists", desired(VXLAN), view([tap(mtu=1450)]), [
        f"CreateBridge {BR}", f"SetLinkState {BR} up=True", "EnsureVxlan vxlan-42", "SetLinkState vxlan-42 up=True",
        f"Enslave vxlan-42>{BR}", f"WirePort {T1} >{BR}"]),
    ("vxlan: wired -> nothing", desired(VXLAN), view([bridge(mtu=1450), vx(), tap(master=BR, mtu=1450)]), []),
    ("vxlan: VNI clash", desired(VXLAN), view([tap(), Link(name="vxlan-42", index=3, kind="vxlan", vxlan=VxlanInfo(vni=7))]), [
        f"Reject {BR}"]),
    ("vlan: sub-interface created and enslaved", desired(VLAN), view([nic(), tap()]), [
        f"CreateBridge {BR}", f"SetLinkState {BR} up=True", "EnsureVlan eth1.100", "SetLinkState eth1.100 up=True",
        f"Enslave eth1.100>{BR}", f"WirePort {T1} >{BR}"]),
    ("vlan: parent NIC down is brought up", desired(VLAN), view([bridge(), nic(up=False), tap(master=BR)]), [
        "SetLinkState eth1 up=True", "EnsureVlan eth1.100", "SetLinkState eth1.100 up=True", f"Enslave eth1.100>{BR}"]),
    ("vlan: parent NIC missing", desired(VLAN), view([tap()]), [f"Reject {BR}"]),
    ("flat: NIC missing", desired(FLAT), view([tap()]), [f"Reject {BR}"]),
    ("flat: NIC enslaved elsewhere", desired(FLAT), view([nic(master=BR2), bridge(BR2), tap()]), [f"Reject {BR}"]),
    ("flat: enslave NIC, move address and default route", desired(FLAT), view([nic(), tap()], [ADDR], [GW]), [
        f"CreateBridge {BR}", f"SetLinkState {BR} up=True", f"Enslave eth1>{BR}", f"AddAddress {BR} 198.51.100.5/24",
        f"MoveRoute eth1>{BR} default", "SetPromoteSecondaries eth1", "DeleteAddress eth1 198.51.100.5/24",
        f"WirePort {T1} >{BR}"]),
    ("flat: the seed's fault (address on NIC and bridge) -> delete from NIC only", desired(FLAT),
     view([bridge(), nic(master=BR), tap(master=BR)], [Address("eth1", "192.168.44.160/32"), Address(BR, "192.168.44.160/32")]), [
        "SetPromoteSecondaries eth1", "DeleteAddress eth1 192.168.44.160/32"]),
    ("flat: link-local addresses stay on the NIC", desired(FLAT),
     view([bridge(), nic(master=BR), tap(master=BR)], [Address("eth1", "fe80::1/64", scope="link"), BR_ADDR]), []),
    ("flat: secondaries deleted before the primary", desired(FLAT),
     view([bridge(), nic(master=BR), tap(master=BR)],
          [Address("eth1", "198.51.100.5/24"), Address("eth1", "198.51.100.6/24", secondary=True)]), [
        f"AddAddress {BR} 198.51.100.5/24", f"AddAddress {BR} 198.51.100.6/24", "SetPromoteSecondaries eth1",
        "DeleteAddress eth1 198.51.100.6/24", "DeleteAddress eth1 198.51.100.5/24"]),
    ("flat: done -> nothing", desired(FLAT), view([bridge(), nic(master=BR), tap(master=BR)], [BR_ADDR],
                                                  [Route(dst="default", ifname=BR, gateway="198.51.100.1")]), []),
    ("missing physnet mapping", desired(Segment("flat", "physnet9")), view([tap()]), [f"Reject {BR}"]),
    ("remove: empty bridge, address and route back to the NIC",
     Desired(remove_bridges=[BR], uplink_nics=frozenset({"eth1"})),
     view([bridge(), nic(master=BR)], [BR_ADDR], [Route(dst="default", ifname=BR, gateway="198.51.100.1")]), [
        "AddAddress eth1 198.51.100.5/24", f"MoveRoute {BR}>eth1 default", f"DeleteBridge {BR}"]),
    ("remove: vxlan uplink deleted with the bridge", Desired(remove_bridges=[BR]), view([bridge(), vx()]), [
        "DeleteLink vxlan-42", f"DeleteBridge {BR}"]),
    ("remove: a tap is still enslaved -> keep", Desired(remove_bridges=[BR]), view([bridge(), tap(master=BR)]), []),
    ("remove: not a brq bridge -> never touched", Desired(remove_bridges=["br-ex"]), view([bridge("br-ex")]), []),
    ("remove: already gone -> nothing", Desired(remove_bridges=[BR]), view([]), []),
    ("remove: a wanted bridge is kept", desired(remove=[BR]), view([bridge(), tap(master=BR)]), []),
]


@pytest.mark.parametrize("want,actual,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_plan(want, actual, expected):
    ops = plan(want, actual)
    assert [short(op) for op in ops] == expected
    # Planning is pure: the same inputs give the same ops.
    assert plan(want, actual) == ops


def test_shared_ops_name_all_devices_of_the_network_port_ops_only_theirs():
    ops = plan(desired(VXLAN, ports=((T1, True), (T2, True))), view([tap(mtu=1450), tap(T2, mtu=1450)]))
    shared = [op for op in ops if op.subject in (BR, "vxlan-42")]
    assert shared and all(op.devices == (T1, T2) for op in shared)
    assert all(op.devices == (op.subject,) for op in ops if op.subject in (T1, T2))


WIRING_CASES = [
    ("local", LOCAL, {}, None, None),
    ("flat", FLAT, {}, ("flat", "eth1"), None),
    ("vlan", VLAN, {}, ("vlan", "eth1.100"), None),
    ("vlan long NIC name is hashed", Segment("vlan", "physnet1", 4000), {"physical_interface_mappings": {"physnet1": "enp0s31f6long"}},
     ("vlan", None), None),
    ("vxlan unicast", VXLAN, {}, ("vxlan", "vxlan-42"), None),
    ("vxlan without local_ip", VXLAN, {"local_ip": None}, None, "local_ip"),
    ("unmapped physnet", Segment("vlan", "physnet2", 5), {}, None, "physnet2"),
    ("bad VLAN id", Segment("vlan", "physnet1", 5000), {}, None, "VLAN id"),
    ("unknown type", Segment("gre", None, 5), {}, None, "unsupported"),
]


@pytest.mark.parametrize("segment,overrides,uplink,reject", [c[1:] for c in WIRING_CASES], ids=[c[0] for c in WIRING_CASES])
def test_network_wiring(segment, overrides, uplink, reject):
    net = network_wiring(NET, segment, settings(**overrides))
    assert net.bridge == BR and net.mtu == segment.mtu
    if reject:
        assert net.reject and reject in net.reject
        return
    assert net.reject is None
    if uplink is None:
        assert net.uplink is None
    else:
        assert net.uplink.kind == uplink[0]
        if uplink[1]:
            assert net.uplink.name == uplink[1]
        assert len(net.uplink.name) <= 15


def test_vxlan_multicast_group_and_learning_off():
    net = network_wiring(NET, VXLAN, settings(vxlan_group="239.1.1.1"))
    assert net.uplink.vxlan == VxlanInfo(vni=42, local="203.0.113.1", group="239.1.1.1", learning=False)
    assert network_wiring(NET, VXLAN, CFG).uplink.vxlan.group is None


def test_network_recheck_without_ports_plans_device_less_ops_scoped_by_bridge():
    want = Desired({NET: network_wiring(NET, VXLAN, CFG)}, {})
    ops = plan(want, view([bridge(up=False, mtu=1450), tap(master=BR, mtu=1450)]))
    assert [short(op) for op in ops] == [f"SetLinkState {BR} up=True", "EnsureVxlan vxlan-42",
                                         "SetLinkState vxlan-42 up=True", f"Enslave vxlan-42>{BR}"]
    assert all(op.devices == () and op.failure_key == BR for op in ops)
