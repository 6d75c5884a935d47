"""Port security and QoS end to end: API -> RPC -> agent -> nftables/tc -> real packets.

One real ``lbtap up`` per test; guests are ``lbtt-`` namespaces joined by veths whose
host ends are the ports' taps. Drops are read back from lbtap's named nft counters in
the host namespace; bandwidth is measured with iperf3 between two guests.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from lbtap.domain.naming import tap_name
from tests.fullstack import harness as h
from tests.fullstack.test_l2_agent import CONFIG, ip_of, make_net, plug_guest


def counters(up) -> dict[str, int]:
    out = {}
    for family in ("bridge", "inet"):
        r = h.ns(up.netns, "nft", "-j", "list", "counters", "table", family, "lbtap", check=False)
        if r.returncode == 0:
            for item in json.loads(r.stdout)["nftables"]:
                if "counter" in item:
                    out[item["counter"]["name"]] = item["counter"]["packets"]
    return out


def api(up, method: str, path: str, body: dict | None = None, status: int = 200) -> dict:
    r = up.api.request(method, path, json=body)
    assert r.status_code == status, r.text
    return r.json() if r.content else {}


def add_rule(up, sg_id: str, **rule) -> dict:
    return api(up, "POST", "/v2.0/security-group-rules",
               {"security_group_rule": {"security_group_id": sg_id, **rule}}, 201)["security_group_rule"]


def tcp_ok(guest: str, ip: str, port: int, timeout: float = 1.0) -> bool:
    code = (f"import socket; s=socket.create_connection(('{ip}', {port}), timeout={timeout}); "
            "s.sendall(b'x'); assert s.recv(1) == b'x'")
    return h.ns(guest, sys.executable, "-c", code, check=False, timeout=10).returncode == 0


def tcp_echo_server(guest: str, port: int) -> subprocess.Popen:
    code = ("import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            f"s.bind(('0.0.0.0', {port})); s.listen(8)\n"
            "while True:\n c,_=s.accept(); c.sendall(c.recv(1)); c.close()\n")
    return subprocess.Popen(["ip", "netns", "exec", guest, sys.executable, "-c", code])


def eventually(pred, timeout: float = h.PATIENCE, what: str = "condition") -> None:
    h.wait_for(pred, timeout, interval=0.1, what=what)


def listening(guest: str, port: int) -> bool:
    return bool(h.ns(guest, "ss", "-Hltn", f"sport = :{port}").stdout.strip())


def wait_listening(guest: str, proc: subprocess.Popen, port: int) -> None:
    """Until the server ``proc`` started in ``guest`` accepts connections on ``port``."""
    def ready() -> bool:
        assert proc.poll() is None, f"the server on port {port} in {guest} exited"
        return listening(guest, port)

    eventually(ready, what=f"a server listening on port {port} in {guest}")


def tc_kbps(up, port: dict) -> tuple[int | None, int | None]:
    """(toward the guest, from the guest) kbit/s limits that tc holds on the port's tap now."""
    from lbtap.drivers.qos import TcQosDriver

    tap = tap_name(port["id"])
    tc = TcQosDriver(up.netns)
    try:
        lim = tc.limits(tap)
    finally:
        tc.close()
    egress = lim.egress.max_kbps if lim.egress else None
    if egress is None:  # policed instead of shaped by an ifb (kernels without ifb)
        shown = h.ns(up.netns, "tc", "filter", "show", "dev", tap, "parent", "ffff:", check=False).stdout
        m = re.search(r"police .*?\brate (\d+(?:\.\d+)?)([KMG]?)bit", shown, re.S)
        if m:
            egress = round(float(m.group(1)) * {"": 0.001, "K": 1, "M": 1000, "G": 1000_000}[m.group(2)])
    return (lim.ingress.max_kbps if lim.ingress else None, egress)


def wait_tc(up, port: dict, ingress: int | None, egress: int | None) -> None:
    """Until the agent has put exactly these limits (kbit/s, None: none) on the port's tap."""
    eventually(lambda: tc_kbps(up, port) == (ingress, egress),
               what=f"tc limits ingress={ingress} egress={egress} on {tap_name(port['id'])}")


def never(pred, duration: float = 1.0, what: str = "condition") -> None:
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        assert not pred(), f"unexpectedly: {what}"
        time.sleep(0.2)


def test_default_group_rules_and_statefulness(lbtap_up, netns_names):
    up = lbtap_up(CONFIG)
    net, _ = make_net(up, "sg", "10.40.0.0/24")
    p1, g1 = plug_guest(up, netns_names, net, name="vm1")
    p2, g2 = plug_guest(up, netns_names, net, name="vm2")
    web = api(up, "POST", "/v2.0/security-groups", {"security_group": {"name": "web"}}, 201)["security_group"]
    p3, g3 = plug_guest(up, netns_names, net, name="web", security_groups=[web["id"]])
    p4, g4 = plug_guest(up, netns_names, net, name="open", port_security_enabled=False)
    for p in (p1, p2, p3, p4):
        up.wait_status(p["id"], "ACTIVE")
    assert p1["security_groups"] and p1["security_groups"] == p2["security_groups"], "default group applied"

    # Default group: members reach each other.
    assert h.reaches(g1, ip_of(p2)) and h.reaches(g2, ip_of(p1))
    # A new group allows only egress: ingress is denied and counted ...
    before = counters(up).get("ingress_drop", 0)
    assert not h.ping(g1, ip_of(p3))
    eventually(lambda: counters(up).get("ingress_drop", 0) > before, what="the ingress drop counted")
    # ... yet replies to its own egress come back (stateful), also from an unfiltered port.
    assert h.reaches(g3, ip_of(p4)) and not h.ping(g4, ip_of(p3))

    # ICMP opened by a rule, closed again when the rule is deleted.
    icmp = add_rule(up, web["id"], direction="ingress", protocol="icmp")
    eventually(lambda: h.ping(g1, ip_of(p3)), what="ICMP rule to open ingress")
    api(up, "DELETE", f"/v2.0/security-group-rules/{icmp['id']}", status=204)
    eventually(lambda: not h.ping(g4, ip_of(p3)), what="ICMP closed after rule deletion")

    # A TCP port: only that port opens.
    server = tcp_echo_server(g3, 8080)
    other = tcp_echo_server(g3, 8081)
    try:
        # Both listen: a refused connection below is the firewall's doing, not a late server.
        wait_listening(g3, server, 8080)
        wait_listening(g3, other, 8081)
        assert not tcp_ok(g1, ip_of(p3), 8080)
        rule = add_rule(up, web["id"], direction="ingress", protocol="tcp", port_range_min=8080,
                        port_range_max=8080, remote_ip_prefix="10.40.0.0/24")
        eventually(lambda: tcp_ok(g1, ip_of(p3), 8080), what="TCP rule to open port 8080")
        assert not tcp_ok(g1, ip_of(p3), 8081)
        api(up, "DELETE", f"/v2.0/security-group-rules/{rule['id']}", status=204)
        eventually(lambda: not tcp_ok(g1, ip_of(p3), 8080), what="port 8080 closed again")
    finally:
        server.kill()
        other.kill()
        server.wait()
        other.wait()

    # Changing a port's groups through the API moves it: p3 joins default, p1 reaches it.
    api(up, "PUT", f"/v2.0/ports/{p3['id']}", {"port": {"security_groups": p1["security_groups"]}})
    eventually(lambda: h.ping(g1, ip_of(p3)), what="port update to apply the default group")


ARP_REPLY = """
import socket, struct, sys
src_mac, claim_ip, dst_mac, dst_ip = sys.argv[1:5]
mac = lambda m: bytes.fromhex(m.replace(':', ''))
ip = socket.inet_aton
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(('eth0', 0))
frame = mac(dst_mac) + mac(src_mac) + b'\\x08\\x06' + struct.pack('!HHBBH', 1, 0x0800, 6, 4, 2)
frame += mac(src_mac) + ip(claim_ip) + mac(dst_mac) + ip(dst_ip)
for _ in range(3):
    s.send(frame)
"""


def neigh_mac(guest: str, ip: str) -> str | None:
    out = json.loads(h.ns(guest, "ip", "-j", "neigh", "show", ip).stdout or "[]")
    return out[0].get("lladdr") if out else None


def test_anti_spoofing_and_allowed_address_pairs(lbtap_up, netns_names):
    up = lbtap_up(CONFIG)
    net, _ = make_net(up, "as", "10.41.0.0/24")
    p1, g1 = plug_guest(up, netns_names, net, name="vm1")
    p2, g2 = plug_guest(up, netns_names, net, name="vm2")
    p3, g3 = plug_guest(up, netns_names, net, name="vm3")
    for p in (p1, p2, p3):
        up.wait_status(p["id"], "ACTIVE")
    assert h.reaches(g1, ip_of(p2))

    # Spoofed source IP: an address the port does not own.
    h.ns(g1, "ip", "addr", "add", "10.41.0.250/24", "dev", "eth0")
    c0 = counters(up)
    r = h.ns(g1, "ping", "-n", "-q", "-c", "2", "-W", "1", "-I", "10.41.0.250", ip_of(p2), check=False)
    assert r.returncode != 0, "spoofed source IP got through"
    eventually(lambda: counters(up).get("spoof_ip", 0) > c0.get("spoof_ip", 0), what="the spoofed IP counted")

    # An allowed address pair makes that address legitimate.
    api(up, "PUT", f"/v2.0/ports/{p1['id']}", {"port": {"allowed_address_pairs": [{"ip_address": "10.41.0.250"}]}})
    eventually(lambda: h.ns(g1, "ping", "-n", "-q", "-c", "1", "-W", "1", "-I", "10.41.0.250", ip_of(p2),
                            check=False).returncode == 0, what="allowed address pair to pass")

    # ARP reply claiming another guest's IP (p2's), sent to p3: dropped and counted.
    c1 = counters(up)
    mac1, mac3 = p1["mac_address"], p3["mac_address"]
    h.ns(g1, sys.executable, "-c", ARP_REPLY, mac1, ip_of(p2), mac3, ip_of(p3))
    eventually(lambda: counters(up).get("spoof_arp", 0) > c1.get("spoof_arp", 0), what="the ARP spoofing counted")
    assert neigh_mac(g3, ip_of(p2)) != mac1, "ARP spoofing poisoned the neighbour's cache"

    # Spoofed source MAC: nothing gets through, counted.
    c2 = counters(up)
    h.ns(g1, "ip", "neigh", "replace", ip_of(p2), "lladdr", p2["mac_address"], "dev", "eth0")
    h.ns(g1, "ip", "link", "set", "eth0", "address", "fa:16:3e:de:ad:01")
    assert not h.ping(g1, ip_of(p2), count=2)
    eventually(lambda: counters(up).get("spoof_mac", 0) > c2.get("spoof_mac", 0), what="the spoofed MAC counted")


def iperf_kbps(client: str, server: str, server_ip: str, *, reverse: bool = False, seconds: int = 4) -> float:
    srv = subprocess.Popen(["ip", "netns", "exec", server, "iperf3", "-s", "-1", "-p", "5201"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(server, srv, 5201)
        args = ["iperf3", "-c", server_ip, "-p", "5201", "-t", str(seconds), "-O", "1", "-J"]
        r = h.ns(client, *args, *(["-R"] if reverse else []), timeout=seconds + 20)
        kbps = json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"] / 1000
        print(f"iperf3 {client} -> {server}{' (reverse)' if reverse else ''}: {kbps:.0f} kbps")
        return kbps
    finally:
        srv.kill()
        srv.wait()


@pytest.mark.skipif(subprocess.run(["which", "iperf3"], capture_output=True).returncode != 0,
                    reason="iperf3 is not installed")
def test_bandwidth_limit_follows_the_rule(lbtap_up, netns_names):
    up = lbtap_up(CONFIG)
    net, _ = make_net(up, "q", "10.42.0.0/24")
    policy = api(up, "POST", "/v2.0/qos/policies", {"policy": {"name": "slow"}}, 201)["policy"]
    rules = f"/v2.0/qos/policies/{policy['id']}/bandwidth_limit_rules"
    egress = api(up, "POST", rules, {"bandwidth_limit_rule": {"max_kbps": 8000, "direction": "egress"}},
                 201)["bandwidth_limit_rule"]
    p1, g1 = plug_guest(up, netns_names, net, name="limited", qos_policy_id=policy["id"])
    p2, g2 = plug_guest(up, netns_names, net, name="peer")
    for p in (p1, p2):
        up.wait_status(p["id"], "ACTIVE")
    wait_tc(up, p1, ingress=None, egress=8000)  # QoS does not hold the port's ACTIVE back

    kbps = iperf_kbps(g1, g2, ip_of(p2))  # from the limited guest: its egress
    assert 8000 * 0.8 <= kbps <= 8000 * 1.2, kbps
    free = iperf_kbps(g2, g1, ip_of(p1))  # toward it: no ingress rule yet
    assert free > 8000 * 2, free

    api(up, "PUT", f"{rules}/{egress['id']}", {"bandwidth_limit_rule": {"max_kbps": 4000}})
    api(up, "POST", rules, {"bandwidth_limit_rule": {"max_kbps": 6000, "direction": "ingress"}}, 201)
    wait_tc(up, p1, ingress=6000, egress=4000)
    kbps = iperf_kbps(g1, g2, ip_of(p2))
    assert 4000 * 0.8 <= kbps <= 4000 * 1.2, kbps
    kbps = iperf_kbps(g2, g1, ip_of(p1))
    assert 6000 * 0.8 <= kbps <= 6000 * 1.2, kbps

    # Detaching the policy removes the limits.
    api(up, "PUT", f"/v2.0/ports/{p1['id']}", {"port": {"qos_policy_id": None}})
    wait_tc(up, p1, ingress=None, egress=None)
    assert iperf_kbps(g1, g2, ip_of(p2)) > 8000 * 2


def test_rule_and_member_changes_reach_every_host(deployment, netns_names):
    """Two hosts over VXLAN, one `lbtap agent` each, RabbitMQ between them: a rule added
    on the server opens ingress on the other host; a port created later on host1 joins
    the default group and host2's remote-group set learns its address."""
    from tests.fullstack import multihost as mh
    from tests.fullstack.test_multihost import CONFIG as MH_CONFIG, _net, _pings, _port

    d = deployment(MH_CONFIG)
    d.start_server()
    _underlay, (host1, host2) = mh.make_hosts(netns_names, 2)
    mh.start_agents(d, [host1, host2])
    net, sub = _net(d, "mh", "10.43.0.0/24")
    web = api(d, "POST", "/v2.0/security-groups", {"security_group": {"name": "web"}}, 201)["security_group"]
    a = _port(d, net, sub, "10.43.0.11")  # default group, host1
    b = d.create("ports", network_id=net["id"], security_groups=[web["id"]],
                 fixed_ips=[{"subnet_id": sub["id"], "ip_address": "10.43.0.12"}])  # web, host2
    c = _port(d, net, sub, "10.43.0.13")  # default group, host2
    guests = {}
    for port, host in ((a, host1), (b, host2), (c, host2)):
        guests[port["id"]] = netns_names("g")
        mh.plug_guest(d, port, host, guests[port["id"]])
    for port in (a, b, c):
        d.wait_status(port["id"], "ACTIVE")
    ga, gb, gc = (guests[p["id"]] for p in (a, b, c))

    _pings(ga, "10.43.0.13")  # default members across hosts
    _pings(ga, "10.43.0.12", expect=False)  # web: no ingress
    add_rule(d, web["id"], direction="ingress", protocol="icmp", remote_ip_prefix="10.43.0.0/24")
    _pings(ga, "10.43.0.12")  # the rule reached host2

    # A new member on host1: host2 (where c lives) must learn its address.
    e = _port(d, net, sub, "10.43.0.14")
    ge = netns_names("g")
    mh.plug_guest(d, e, host1, ge)
    d.wait_status(e["id"], "ACTIVE")
    _pings(ge, "10.43.0.13")


def test_openstacksdk_drives_security_groups_and_qos(lbtap_up):
    openstack = pytest.importorskip("openstack")
    up = lbtap_up(CONFIG)
    conn = openstack.connect(auth_type="none", network_endpoint_override=up.url + "/")
    net = conn.network.create_network(name="sdk")
    conn.network.create_subnet(network_id=net.id, cidr="10.44.0.0/24", ip_version=4)
    sg = conn.network.create_security_group(name="web")
    assert len(sg.security_group_rules) == 2
    rule = conn.network.create_security_group_rule(security_group_id=sg.id, direction="ingress", protocol="tcp",
                                                   port_range_min=22, port_range_max=22)
    assert {g.name for g in conn.network.security_groups()} == {"default", "web"}
    port = conn.network.create_port(network_id=net.id, security_group_ids=[sg.id])
    assert port.security_group_ids == [sg.id]
    conn.network.delete_security_group_rule(rule)
    policy = conn.network.create_qos_policy(name="q")
    bw = conn.network.create_qos_bandwidth_limit_rule(policy, max_kbps=1000, direction="egress")
    conn.network.update_qos_bandwidth_limit_rule(bw, policy, max_kbps=2000)
    assert [r.max_kbps for r in conn.network.qos_bandwidth_limit_rules(policy)] == [2000]
    conn.network.update_port(port, qos_policy_id=policy.id)
    assert conn.network.get_port(port.id).qos_policy_id == policy.id
    with pytest.raises(openstack.exceptions.BadRequestException):
        conn.network.create_security_group_rule(security_group_id=sg.id, direction="sideways")
    with pytest.raises(openstack.exceptions.ConflictException):
        conn.network.delete_qos_policy(policy)
