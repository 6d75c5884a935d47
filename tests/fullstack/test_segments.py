"""Segment types on one host: VXLAN devices and VLAN sub-interfaces as the agent builds them."""

from __future__ import annotations

import json

import pytest

from lbtap.domain.naming import bridge_name, tap_name, vlan_name, vxlan_name
from lbtap.drivers.host import probe
from tests.fullstack import harness as h


def _underlay(host: str, ext: str, ip: str) -> None:
    """A veth underlay NIC in the host namespace (peer in ``ext``) carrying ``ip``."""
    for n in (host, ext):
        h.sh("ip", "netns", "add", n)
    h.sh("ip", "-n", host, "link", "add", "uplink0", "type", "veth", "peer", "name", "ext0", "netns", ext)
    h.sh("ip", "-n", host, "addr", "add", ip, "dev", "uplink0")
    h.sh("ip", "-n", host, "link", "set", "uplink0", "up")
    h.sh("ip", "-n", ext, "link", "set", "ext0", "up")


@pytest.mark.parametrize("group", [None, "239.1.1.1"])
def test_vxlan_network_gets_a_vxlan_device_in_its_bridge(lbtap_up, netns_names, group):
    host, ext = netns_names("h"), netns_names("x")
    _underlay(host, ext, "203.0.113.10/24")
    config = '[server]\ntenant_network_types = ["vxlan"]\n[agent]\nreport_interval = 1.0\nlocal_ip = "203.0.113.10"\n'
    if group:
        config += f'vxlan_group = "{group}"\n'
    up = lbtap_up(config, netns=host)
    net = up.create("networks", name="vx")
    assert net["provider:network_type"] == "vxlan" and net["mtu"] == 1450
    up.create("subnets", network_id=net["id"], cidr="10.40.0.0/24", ip_version=4)
    port = up.create("ports", network_id=net["id"])
    guest = netns_names("g")
    up.vif("plug", port["id"], "--guest-netns", guest)
    up.wait_status(port["id"], "ACTIVE")

    vx = vxlan_name(net["provider:segmentation_id"])
    info = json.loads(h.ns(host, "ip", "-j", "-d", "link", "show", "dev", vx).stdout)[0]
    data = info["linkinfo"]["info_data"]
    assert info["master"] == bridge_name(net["id"])
    assert data["id"] == net["provider:segmentation_id"] and data["local"] == "203.0.113.10"
    assert data.get("group") == group
    assert info["mtu"] == 1450
    guest_mtu = json.loads(h.ns(guest, "ip", "-j", "link", "show", "dev", "eth0").stdout)[0]["mtu"]
    assert guest_mtu == 1450
    assert json.loads(h.ns(host, "ip", "-j", "link", "show", "dev", tap_name(port["id"])).stdout)[0]["mtu"] == 1450


def test_vlan_network_bridges_a_vlan_subinterface(lbtap_up, netns_names):
    supported, reason = probe.vlan(prefix="lbtt-probe-")
    if not supported:
        pytest.skip(f"kernel lacks 802.1Q VLAN devices: {reason}")
    host, ext = netns_names("h"), netns_names("x")
    _underlay(host, ext, "198.51.100.10/24")
    config = ('[server]\ntenant_network_types = ["local"]\nnetwork_vlan_ranges = { physnet1 = [[100, 199]] }\n'
              '[agent]\nreport_interval = 1.0\nphysical_interface_mappings = { physnet1 = "uplink0" }\n')
    up = lbtap_up(config, netns=host)
    net = up.create("networks", name="vl", **{"provider:network_type": "vlan", "provider:physical_network": "physnet1",
                                              "provider:segmentation_id": 120})
    up.create("subnets", network_id=net["id"], cidr="10.50.0.0/24", ip_version=4)
    port = up.create("ports", network_id=net["id"])
    up.vif("plug", port["id"], "--guest-netns", netns_names("g"))
    up.wait_status(port["id"], "ACTIVE")
    assert h.link_master(host, vlan_name("uplink0", 120)) == bridge_name(net["id"])
