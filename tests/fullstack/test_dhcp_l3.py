"""DHCP and L3 agents end to end (issue 7): real ``lbtap up``, dnsmasq, dhclient, NAT.

Hosts, guests and the "external" host are ``lbtt-`` namespaces; the agent host name is
``lbtt…`` too, so every ``qdhcp-``/``qrouter-`` namespace carries it and the fixtures
remove whatever a failed test leaves.
"""

from __future__ import annotations

import os
import signal

import pytest

from lbtap.domain.naming import bridge_name, tap_name
from lbtap.drivers.dhcp.naming import dhcp_namespace
from tests.fullstack import guests as gu
from tests.fullstack import harness as h

pytestmark = pytest.mark.timeout(240)

CONFIG = """
[server]
tenant_network_types = ["local"]
[agent]
report_interval = 1.0
"""


def dhcp_ports(up, net_id):
    r = up.api.get("/v2.0/ports", params={"network_id": net_id, "device_owner": "network:dhcp"})
    return r.json()["ports"]


def hosts_file(up, net_id) -> str:
    """dnsmasq's static leases for the network, as the DHCP agent wrote them ("" if none yet)."""
    try:
        return (up.workdir / "state" / "dhcp" / net_id / "host").read_text()
    except FileNotFoundError:
        return ""


def wait_dhcp_port(up, net_id, timeout=h.PATIENCE):
    return h.wait_for(lambda: [p for p in dhcp_ports(up, net_id) if p["status"] == "ACTIVE"], timeout,
                      what="DHCP port ACTIVE")[0]


def test_dhcp_guest_gets_address_gateway_mtu_and_leases_follow_ports(lbtap_up, netns_names, tmp_path):
    up = lbtap_up(CONFIG)
    state = up.workdir / "state"
    net = up.create("networks", name="d", mtu=1400)
    sub = up.create("subnets", network_id=net["id"], cidr="10.40.0.0/24", ip_version=4,
                    gateway_ip="10.40.0.1", dns_nameservers=["198.51.100.53"])

    # Seed flow: network+subnet -> DHCP port allocated, tap plugged, ACTIVE via the L2 agent.
    dport = wait_dhcp_port(up, net["id"])
    assert dport["binding:host_id"] == up.host and dport["fixed_ips"][0]["subnet_id"] == sub["id"]
    assert dhcp_namespace(net["id"], up.host) in gu.namespaces("qdhcp-", up.host)
    assert h.link_master(up.netns, tap_name(dport["id"])) == bridge_name(net["id"])
    h.wait_for(lambda: gu.dnsmasq_pids(state), what="dnsmasq running")
    [pid] = gu.dnsmasq_pids(state)

    def dhcp_guest():
        port = up.create("ports", network_id=net["id"])
        guest = netns_names("g")
        up.vif("plug", port["id"], "--guest-netns", guest, "--dhcp")
        # The DHCP agent has given dnsmasq the new port (not a race with dhclient's tries).
        h.wait_for(lambda: port["mac_address"] in hosts_file(up, net["id"]), what="lease file entry")
        env = gu.dhclient(guest, tmp_path)
        return port, guest, env

    p1, g1, env = dhcp_guest()
    assert env, "no DHCP answer"
    assert env["new_ip_address"] == p1["fixed_ips"][0]["ip_address"]
    assert env["new_routers"] == "10.40.0.1"
    assert env["new_interface_mtu"] == "1400"
    assert env["new_subnet_mask"] == "255.255.255.0"
    assert "198.51.100.53" in env["new_domain_name_servers"]
    gu.apply_lease(g1, env)
    assert h.reaches(g1, dport["fixed_ips"][0]["ip_address"])

    # A new port gets its lease from the same dnsmasq: reload, not restart.
    p2, g2, env2 = dhcp_guest()
    assert env2.get("new_ip_address") == p2["fixed_ips"][0]["ip_address"]
    assert gu.dnsmasq_pids(state) == [pid]

    # A fixed-IP change reaches the lease too.
    r = up.api.put(f"/v2.0/ports/{p2['id']}", json={"port": {"fixed_ips": [
        {"subnet_id": sub["id"], "ip_address": "10.40.0.77"}]}})
    assert r.status_code == 200, r.text
    h.wait_for(lambda: "10.40.0.77" in hosts_file(up, net["id"]), what="lease file update")
    env2b = gu.dhclient(g2, tmp_path)
    assert env2b.get("new_ip_address") == "10.40.0.77"
    assert gu.dnsmasq_pids(state) == [pid]

    # A crashed dnsmasq is noticed and restarted; it serves again.
    os.kill(pid, signal.SIGKILL)
    h.wait_for(lambda: [p for p in gu.dnsmasq_pids(state) if p != pid], what="dnsmasq restarted")
    _p3, _g3, env3 = dhcp_guest()
    assert env3.get("new_ip_address") == _p3["fixed_ips"][0]["ip_address"]

    # Deleting the subnet tears DHCP down and releases the DHCP port.
    for p in (p1, p2, _p3):
        up.vif("unplug", p["id"])
        assert up.api.delete(f"/v2.0/ports/{p['id']}").status_code == 204
    assert up.api.delete(f"/v2.0/subnets/{sub['id']}").status_code == 204
    h.wait_for(lambda: not gu.namespaces("qdhcp-", up.host), what="qdhcp namespace removal")
    h.wait_for(lambda: not gu.dnsmasq_pids(state), what="dnsmasq stopped")
    h.wait_for(lambda: not dhcp_ports(up, net["id"]), what="DHCP port released")
    assert tap_name(dport["id"]) not in h.link_names(up.netns)
    assert up.api.delete(f"/v2.0/networks/{net['id']}").status_code == 204


def test_network_delete_tears_dhcp_down(lbtap_up):
    up = lbtap_up(CONFIG)
    state = up.workdir / "state"
    net = up.create("networks", name="d2")
    up.create("subnets", network_id=net["id"], cidr="10.41.0.0/24", ip_version=4)
    dport = wait_dhcp_port(up, net["id"])
    assert up.api.delete(f"/v2.0/networks/{net['id']}").status_code == 204
    h.wait_for(lambda: not gu.namespaces("qdhcp-", up.host), what="qdhcp namespace removal")
    h.wait_for(lambda: not gu.dnsmasq_pids(state), what="dnsmasq stopped")
    assert tap_name(dport["id"]) not in h.link_names(up.netns)
    h.wait_for(lambda: bridge_name(net["id"]) not in h.link_names(up.netns), what="bridge removal")


# ---------------------------------------------------------------------------- L3
EXT_HOST = "203.0.113.1"


def put(up, path, body):
    r = up.api.put(path, json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_router_snat_floating_ip_and_port_statuses(lbtap_up, netns_names):
    host, ext = netns_names("h"), netns_names("x")
    for n in (host, ext):
        h.sh("ip", "netns", "add", n)
    # The "external" world: a host at 203.0.113.1 behind a NIC of the agent's host.
    h.sh("ip", "-n", host, "link", "add", "uplink0", "type", "veth", "peer", "name", "ext0", "netns", ext)
    h.sh("ip", "-n", ext, "addr", "add", f"{EXT_HOST}/24", "dev", "ext0")
    h.sh("ip", "-n", ext, "link", "set", "ext0", "up")
    h.sh("ip", "-n", host, "link", "set", "uplink0", "up")
    up = lbtap_up(CONFIG + '[agent.physical_interface_mappings]\nphysnet1 = "uplink0"\n', netns=host)

    extnet = up.create("networks", name="public", **{"router:external": True, "provider:network_type": "flat",
                                                      "provider:physical_network": "physnet1"})
    up.create("subnets", network_id=extnet["id"], cidr="203.0.113.0/24", gateway_ip=EXT_HOST, enable_dhcp=False,
              allocation_pools=[{"start": "203.0.113.100", "end": "203.0.113.150"}], ip_version=4)
    net_a = up.create("networks", name="a")
    sub_a = up.create("subnets", network_id=net_a["id"], cidr="10.50.1.0/24", ip_version=4)
    net_b = up.create("networks", name="b")
    sub_b = up.create("subnets", network_id=net_b["id"], cidr="10.50.2.0/24", ip_version=4, enable_dhcp=False)

    router = up.create("routers", name="r1", external_gateway_info={"network_id": extnet["id"]})
    gw_ip = router["external_gateway_info"]["external_fixed_ips"][0]["ip_address"]
    ia = put(up, f"/v2.0/routers/{router['id']}/add_router_interface", {"subnet_id": sub_a["id"]})
    ib = put(up, f"/v2.0/routers/{router['id']}/add_router_interface", {"subnet_id": sub_b["id"]})
    assert ia["subnet_id"] == sub_a["id"] and ia["port_id"]

    guests = {}
    for key, net in (("a", net_a), ("b", net_b)):
        # Routing and NAT under test, not security groups: default groups deny ingress
        # from outside the group (the floating IP's pings would need a rule).
        port = up.create("ports", network_id=net["id"], name=f"vm-{key}", port_security_enabled=False)
        g = netns_names("g")
        up.vif("plug", port["id"], "--guest-netns", g)
        guests[key] = (port, g)
    (pa, ga), (pb, gb) = guests["a"], guests["b"]
    for p in (pa, pb, {"id": ia["port_id"]}, {"id": ib["port_id"]}):
        up.wait_status(p["id"], "ACTIVE")

    # Two subnets joined by the router; SNAT to the outside (the external host has no
    # route back to 10.50.0.0/16, so only a SNATed flow gets an answer).
    ip_a, ip_b = pa["fixed_ips"][0]["ip_address"], pb["fixed_ips"][0]["ip_address"]
    assert h.wait_for(lambda: h.ping(ga, ip_b), what="a -> b through the router")
    assert h.reaches(gb, ip_a)
    assert h.wait_for(lambda: h.ping(ga, EXT_HOST), what="a -> external through SNAT")
    assert not h.ping(ext, ip_a), "the external host must not reach a fixed IP"

    # Floating IP: DNAT/SNAT pair; the external host reaches the guest, until disassociated.
    fip = up.create("floatingips", floating_network_id=extnet["id"], port_id=pa["id"])
    assert fip["fixed_ip_address"] == ip_a and fip["router_id"] == router["id"] and fip["status"] == "ACTIVE"
    assert h.wait_for(lambda: h.ping(ext, fip["floating_ip_address"]), what="external -> floating IP")
    put(up, f"/v2.0/floatingips/{fip['id']}", {"floatingip": {"port_id": None}})
    h.wait_for(lambda: not h.ping(ext, fip["floating_ip_address"], wait=0.5), what="floating IP to stop answering")
    assert up.get("floatingips", fip["id"])["status"] == "DOWN"

    # The seed's port table: device owners and statuses.
    ports = {p["id"]: p for p in up.api.get("/v2.0/ports").json()["ports"]}
    gw_port = next(p for p in ports.values() if p["device_owner"] == "network:router_gateway")
    up.wait_status(gw_port["id"], "ACTIVE")
    assert gw_port["fixed_ips"][0]["ip_address"] == gw_ip and gw_port["device_id"] == router["id"]
    fip_port = next(p for p in ports.values() if p["device_owner"] == "network:floatingip")
    assert fip_port["status"] == "N/A" and fip_port["device_id"] == fip["id"]
    assert ports[ia["port_id"]]["device_owner"] == "network:router_interface"
    assert ports[ia["port_id"]]["fixed_ips"][0]["ip_address"] == sub_a["gateway_ip"]
    dhcp = [p for p in ports.values() if p["device_owner"] == "network:dhcp"]
    assert len(dhcp) == 1 and dhcp[0]["network_id"] == net_a["id"]
    up.wait_status(dhcp[0]["id"], "ACTIVE")

    # Removing an interface cuts the route.
    put(up, f"/v2.0/routers/{router['id']}/remove_router_interface", {"subnet_id": sub_b["id"]})
    h.wait_for(lambda: not h.ping(ga, ip_b, wait=0.5), what="route to b cut")
    assert h.reaches(ga, EXT_HOST), "a must still reach the outside"

    # Tear everything down: nothing of the router or DHCP stays on the host.
    assert up.api.delete(f"/v2.0/floatingips/{fip['id']}").status_code == 204
    r = up.api.delete(f"/v2.0/routers/{router['id']}")
    assert r.status_code == 409, "a router with interfaces must not be deletable"
    put(up, f"/v2.0/routers/{router['id']}/remove_router_interface", {"port_id": ia["port_id"]})
    assert up.api.delete(f"/v2.0/routers/{router['id']}").status_code == 204
    for p, g in guests.values():
        up.vif("unplug", p["id"])
        assert up.api.delete(f"/v2.0/ports/{p['id']}").status_code == 204
    for net in (net_a, net_b, extnet):
        assert up.api.delete(f"/v2.0/networks/{net['id']}").status_code == 204, net
    h.wait_for(lambda: not gu.namespaces("qrouter-", up.host) and not gu.namespaces("qdhcp-", up.host),
               what="router and DHCP namespaces removed")
    h.wait_for(lambda: not gu.dnsmasq_pids(up.workdir / "state"), what="dnsmasq stopped")
    assert up.api.get("/v2.0/ports").json()["ports"] == []
    h.wait_for(lambda: not [l for l in h.link_names(host) if l.startswith(("tap", "brq"))],
               what="taps and bridges gone")


# ------------------------------------------------------------- stopping lbtap up
def _dhcp_and_router(up, cidr):
    """A network served by DHCP and a router with an interface on it; returns when
    dnsmasq runs and both namespaces exist."""
    state = up.workdir / "state"
    net = up.create("networks", name="s")
    sub = up.create("subnets", network_id=net["id"], cidr=cidr, ip_version=4)
    router = up.create("routers", name="r")
    iface = put(up, f"/v2.0/routers/{router['id']}/add_router_interface", {"subnet_id": sub["id"]})
    wait_dhcp_port(up, net["id"])
    up.wait_status(iface["port_id"], "ACTIVE")
    pids = h.wait_for(lambda: gu.dnsmasq_pids(state), what="dnsmasq running")
    assert gu.namespaces("qdhcp-", up.host) and gu.namespaces("qrouter-", up.host)
    return net, router, pids


def _gone(pid):
    return not os.path.exists(f"/proc/{pid}")


def cleanup_cli(*args):
    return h.sh(h.LBTAP, "cleanup", *args, check=False, timeout=60)


def test_clean_stop_of_lbtap_up_leaves_no_dhcp_or_router_state(lbtap_up):
    up = lbtap_up(CONFIG)
    state = up.workdir / "state"
    net, _router, pids = _dhcp_and_router(up, "10.43.0.0/24")

    assert up.stop() == 0, up.log_tail()  # SIGTERM: a clean stop
    assert not gu.namespaces("qdhcp-", up.host) and not gu.namespaces("qrouter-", up.host)
    for pid in pids:  # stopped by the PID it started, and reaped by lbtap up itself
        assert _gone(pid), f"dnsmasq {pid} still there after lbtap up stopped"
    assert not [l for l in h.link_names(up.netns) if l.startswith("tap")], "DHCP/router tap ends left"
    assert not list((state / "netns").glob("q*")), "namespace records left"
    r = cleanup_cli("--state-dir", str(state), "--host", up.host)
    assert (r.returncode, r.stdout) == (0, "nothing to clean up\n"), r.stderr

    # The next start sets it all up again from the server's state.
    up.start()
    h.wait_for(lambda: gu.dnsmasq_pids(state), what="dnsmasq after restart")
    h.wait_for(lambda: gu.namespaces("qrouter-", up.host), what="router namespace after restart")
    assert dhcp_namespace(net["id"], up.host) in gu.namespaces("qdhcp-", up.host)


def test_keep_on_exit_keeps_dhcp_serving_and_cleanup_removes_a_killed_ones(lbtap_up):
    up = lbtap_up(CONFIG)
    up.stop()
    up.extra = ("--keep-on-exit",)
    up.start()
    state = up.workdir / "state"
    _net, _router, [pid] = _dhcp_and_router(up, "10.44.0.0/24")
    qdhcp, qrouter = gu.namespaces("qdhcp-", up.host), gu.namespaces("qrouter-", up.host)

    assert up.stop() == 0, up.log_tail()
    assert gu.dnsmasq_pids(state) == [pid], "--keep-on-exit: dnsmasq keeps serving"
    assert gu.namespaces("qdhcp-", up.host) == qdhcp and gu.namespaces("qrouter-", up.host) == qrouter

    up.start()  # adopts the running dnsmasq: no DHCP outage
    h.wait_for(lambda: ": adopted" in up.log_path.read_text(), what="dnsmasq adopted")
    assert gu.dnsmasq_pids(state) == [pid]

    # A crash leaves everything; lbtap cleanup removes it, and only it.
    up.stop(signal.SIGKILL)
    assert gu.dnsmasq_pids(state) == [pid] and gu.namespaces("qdhcp-", up.host) == qdhcp
    r = cleanup_cli("--state-dir", str(state), "--host", up.host)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"stopped dnsmasq pid {pid} ")
    assert {f"deleted namespace {n}" for n in qdhcp + qrouter} <= set(lines)
    assert not gu.dnsmasq_pids(state)
    assert not gu.namespaces("qdhcp-", up.host) and not gu.namespaces("qrouter-", up.host)
    assert up.netns in h.sh("ip", "netns", "list").stdout.split(), "the host namespace is not cleanup's"
    r = cleanup_cli("--state-dir", str(state), "--host", up.host)
    assert (r.returncode, r.stdout) == (0, "nothing to clean up\n"), r.stderr
