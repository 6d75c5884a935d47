"""The L2 agent end to end: real `lbtap up`, real kernel devices, real packets."""

from __future__ import annotations

import json
import time

import pytest

from lbtap.domain.naming import bridge_name, tap_name
from tests.fullstack import harness as h

CONFIG = """
[server]
tenant_network_types = ["local"]
[agent]
report_interval = 1.0
"""


def make_net(up, name, cidr="10.10.0.0/24", dhcp=True):
    net = up.create("networks", name=name)
    sub = up.create("subnets", network_id=net["id"], cidr=cidr, ip_version=4, enable_dhcp=dhcp)
    return net, sub


def wait_dhcp_port_active(up, net):
    """`lbtap up` runs a DHCP agent: its port on the network is one more ACTIVE tap."""
    def active():
        r = up.api.get("/v2.0/ports", params={"network_id": net["id"], "device_owner": "network:dhcp"})
        return [p for p in r.json()["ports"] if p["status"] == "ACTIVE"]
    return h.wait_for(active, what="DHCP port ACTIVE")[0]


def plug_guest(up, netns_names, net, **port_kw):
    port = up.create("ports", network_id=net["id"], **port_kw)
    guest = netns_names("g")
    up.vif("plug", port["id"], "--guest-netns", guest)
    return port, guest


def ip_of(port):
    return port["fixed_ips"][0]["ip_address"]


def test_plug_unplug_status_and_bridge_lifecycle(lbtap_up, netns_names):
    up = lbtap_up(CONFIG)
    # No DHCP: a DHCP port is a port too, and would keep the bridge this test watches.
    net, _ = make_net(up, "n1", dhcp=False)
    br = bridge_name(net["id"])
    assert br not in h.link_names(up.netns), "a network alone must not create a bridge"

    p1 = up.create("ports", network_id=net["id"], name="vm1")
    assert p1["status"] == "DOWN" and p1["binding:vif_type"] == "unbound"
    g1 = netns_names("g")
    up.vif("plug", p1["id"], "--guest-netns", g1)
    up.wait_status(p1["id"], "ACTIVE")
    assert h.link_master(up.netns, tap_name(p1["id"])) == br
    bound = up.get("ports", p1["id"])
    assert bound["binding:host_id"] == up.host and bound["binding:vif_type"] == "bridge"

    p2, g2 = plug_guest(up, netns_names, net, name="vm2")
    up.wait_status(p2["id"], "ACTIVE")
    assert h.reaches(g1, ip_of(p2)) and h.reaches(g2, ip_of(p1))

    up.vif("unplug", p1["id"])
    up.wait_status(p1["id"], "DOWN")
    assert br in h.link_names(up.netns), "bridge must stay while a port remains"
    up.vif("unplug", p2["id"])
    up.wait_status(p2["id"], "DOWN")
    h.wait_for(lambda: br not in h.link_names(up.netns), what="bridge removal after last port")


def test_networks_are_isolated_even_with_the_same_cidr(lbtap_up, netns_names):
    up = lbtap_up(CONFIG)
    # No DHCP: network b's DHCP port could hold the address of a guest on a, and answer.
    net_a, _ = make_net(up, "a", "10.30.0.0/24", dhcp=False)
    net_b, sub_b = make_net(up, "b", "10.30.0.0/24", dhcp=False)
    a1, ga1 = plug_guest(up, netns_names, net_a)
    a2, ga2 = plug_guest(up, netns_names, net_a)
    b1, gb1 = plug_guest(up, netns_names, net_b, fixed_ips=[{"subnet_id": sub_b["id"], "ip_address": "10.30.0.200"}])
    for p in (a1, a2, b1):
        up.wait_status(p["id"], "ACTIVE")
    assert h.reaches(ga1, ip_of(a2))
    assert not h.ping(gb1, ip_of(a1)), "guest on network b reached network a"
    assert not h.ping(ga2, "10.30.0.200"), "guest on network a reached network b"
    assert bridge_name(net_a["id"]) != bridge_name(net_b["id"])
    assert h.link_master(up.netns, tap_name(b1["id"])) == bridge_name(net_b["id"])


def test_restart_keeps_ports_active_without_reporting_them_again(lbtap_up, netns_names, tmp_path):
    up = lbtap_up(CONFIG)
    net, _ = make_net(up, "r")
    ports = [plug_guest(up, netns_names, net) for _ in range(3)]
    for p, _ in ports:
        up.wait_status(p["id"], "ACTIVE")
    wait_dhcp_port_active(up, net)
    # Three guests and the DHCP agent's port: one up report each.
    assert up.metric("lbtap_device_status_reports_total", kind="up") == 4

    assert up.stop() == 0
    up.start()
    # The restarted agent reconciles (asks the server about its devices) ...
    h.wait_for(lambda: up.metric("lbtap_rpc_messages_total", method="get_devices_details_list") >= 1,
               what="restarted agent to reconcile")

    def converged() -> bool:
        # A heartbeat of the new process (not the old one's, still in the database), with
        # nothing pending: any report it was going to send has been sent by now.
        conf = up.agent_conf()
        return conf.get("pid") == up.proc.pid and conf.get("pending", 1) == 0 and conf.get("devices") == 4

    h.wait_for(converged, what="restarted agent to converge")
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:  # ... and every port stays ACTIVE throughout
        assert all(up.port_status(p["id"]) == "ACTIVE" for p, _ in ports)
        time.sleep(0.1)
    assert up.metric("lbtap_device_status_reports_total", kind="up") == 0
    assert up.metric("lbtap_device_status_reports_total", kind="down") == 0
    (p1, g1), (p2, _) = ports[0], ports[1]
    assert h.reaches(g1, ip_of(p2))


def test_persistent_device_fault_does_not_storm(lbtap_up, netns_names, tmp_path):
    """One device whose enslave always fails: retried with backoff, alone, for 60 s."""
    up = lbtap_up(CONFIG)
    net, _ = make_net(up, "f")
    ports = [up.create("ports", network_id=net["id"], name=f"p{i}") for i in range(20)]
    bad = ports[0]
    up.stop()
    up.config_path.write_text(CONFIG + f'retry_initial = 0.5\nretry_max = 8.0\ninject_faults = ["enslave:{tap_name(bad["id"])}"]\n')
    up.start()
    for p in ports:
        up.vif("plug", p["id"])
    for p in ports[1:]:
        up.wait_status(p["id"], "ACTIVE")
    time.sleep(60)
    assert up.port_status(bad["id"]) == "DOWN"
    assert all(up.port_status(p["id"]) == "ACTIVE" for p in ports[1:])
    # Exactly one up per healthy device, none for the bad one, no duplicates.
    assert up.metric("lbtap_device_status_reports_total", kind="up") == len(ports) - 1
    assert up.metric("lbtap_duplicate_up_reports_total") == 0
    def retries() -> list[str]:
        return [l for l in up.log_path.read_text().splitlines() if tap_name(bad["id"]) in l and "retry" in l]

    # At most a handful in those 60 s (a slow machine only retries less) and at least a
    # few, however slow (waited for, not assumed from the 60 s).
    assert len(retries()) <= 20, f"expected a handful of backed-off retries, got {len(retries())}"
    h.wait_for(lambda: len(retries()) >= 3, what="three backed-off retries")


def test_seed_fault_flat_uplink_address_on_nic_and_bridge(lbtap_up, netns_names):
    """The seed's exact fault: flat network, the NIC and the bridge both hold the NIC's
    address (add on bridge succeeded, delete from NIC did not), agent restarted."""
    host, ext = netns_names("h"), netns_names("x")
    for n in (host, ext):
        h.sh("ip", "netns", "add", n)
    h.sh("ip", "-n", host, "link", "add", "uplink0", "type", "veth", "peer", "name", "ext0", "netns", ext)
    h.sh("ip", "-n", ext, "addr", "add", "198.51.100.1/24", "dev", "ext0")
    h.sh("ip", "-n", ext, "link", "set", "ext0", "up")
    h.sh("ip", "-n", host, "addr", "add", "198.51.100.10/24", "dev", "uplink0")
    h.sh("ip", "-n", host, "link", "set", "uplink0", "up")
    h.sh("ip", "-n", host, "route", "add", "default", "via", "198.51.100.1")
    config = CONFIG + '[agent.physical_interface_mappings]\nphysnet1 = "uplink0"\n'
    up = lbtap_up(config, netns=host)

    net = up.create("networks", name="ext", **{"provider:network_type": "flat", "provider:physical_network": "physnet1"})
    up.create("subnets", network_id=net["id"], cidr="198.51.100.0/24", ip_version=4, gateway_ip="198.51.100.1",
              allocation_pools=[{"start": "198.51.100.100", "end": "198.51.100.200"}])
    port, guest = plug_guest(up, netns_names, net)
    up.wait_status(port["id"], "ACTIVE")
    br = bridge_name(net["id"])
    assert h.link_master(host, "uplink0") == br
    assert h.addresses(host, br) == {"198.51.100.10/24"} and h.addresses(host, "uplink0") == set()
    routes = json.loads(h.ns(host, "ip", "-j", "route", "show", "default").stdout)
    assert routes and routes[0]["dev"] == br
    assert h.reaches(guest, "198.51.100.1") and h.reaches(host, "198.51.100.1")

    up.stop()
    h.sh("ip", "-n", host, "addr", "add", "198.51.100.10/24", "dev", "uplink0")  # the fault state
    up.start()
    h.wait_for(lambda: h.addresses(host, "uplink0") == set(), what="NIC address to converge onto the bridge")
    assert h.addresses(host, br) == {"198.51.100.10/24"}
    assert up.port_status(port["id"]) == "ACTIVE"
    assert h.reaches(guest, "198.51.100.1") and h.reaches(host, "198.51.100.1")
    assert up.metric("lbtap_duplicate_up_reports_total") == 0
