"""Multicast VXLAN needs its underlay device: the link holding local_ip."""

from lbtap.agent.core import ops as o
from lbtap.agent.core.hostview import HostView
from lbtap.agent.core.plan import Desired, PortWiring, network_wiring, plan
from lbtap.config import AgentSettings
from lbtap.domain.models import Segment
from lbtap.drivers.host.base import Address, Link


def _plan(addresses):
    settings = AgentSettings(host="h", local_ip="203.0.113.10", vxlan_group="239.1.1.1")
    net = network_wiring("net-1", Segment("vxlan", None, 7, 1450), settings)
    view = HostView()
    view.set_links([Link("uplink0", 2, up=True), Link("tapport-1", 3, kind="tun", up=True)])
    view.set_addresses(addresses, [])
    return plan(Desired(networks={"net-1": net}, ports={"tapport-1": PortWiring("tapport-1", "net-1")}), view)


def test_group_mode_uses_the_link_that_holds_local_ip():
    ops = _plan([Address("uplink0", "203.0.113.10/24")])
    (vx,) = [op for op in ops if isinstance(op, o.EnsureVxlan)]
    assert vx.info.dev == "uplink0" and vx.info.group == "239.1.1.1" and vx.info.vni == 7


def test_group_mode_without_local_ip_on_host_rejects_that_network_only():
    ops = _plan([Address("uplink0", "198.51.100.1/24")])
    assert not [op for op in ops if isinstance(op, o.EnsureVxlan)]
    (rej,) = [op for op in ops if isinstance(op, o.Reject)]
    assert "203.0.113.10" in rej.reason and "tapport-1" in rej.devices
