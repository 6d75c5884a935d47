"""Several hosts, one control plane: `lbtap server` on RabbitMQ + PostgreSQL (MariaDB
once), one `lbtap agent` process per host namespace, hosts joined by an underlay bridge.

VXLAN between hosts with l2population (and once with a multicast group), isolation of
two VXLAN networks, a burst of plugs through a broker outage and a server restart,
`kill -9` of an agent, and no binding to a dead agent.
"""

from __future__ import annotations

import json
import signal
import time

import pytest

from lbtap.domain.naming import bridge_name, tap_name, vxlan_name
from tests.fullstack import harness as h
from tests.fullstack import multihost as mh
from tests.fullstack.test_broker_restart import _agents_frozen, _final_server_counts
from tests.support import fresh_db_url

CONFIG = ('[server]\ntenant_network_types = ["vxlan"]\nagent_down_time = 4.0\n'
          '[agent]\nreport_interval = 1.0\n')
UP = "lbtap_device_status_reports_total"
DUP = "lbtap_duplicate_up_reports_total"


def _net(d, name, cidr):
    net = d.create("networks", name=name)
    sub = d.create("subnets", network_id=net["id"], cidr=cidr, ip_version=4)
    return net, sub


def _port(d, net, sub, ip, host=None):
    body = {"network_id": net["id"], "fixed_ips": [{"subnet_id": sub["id"], "ip_address": ip}]}
    if host:
        body["binding:host_id"] = host
    return d.create("ports", **body)


def _pings(guest, ip, *, expect=True, timeout=h.PATIENCE):
    if expect:
        h.wait_for(lambda: h.ping(guest, ip), timeout, interval=0.1, what=f"{guest} -> {ip}")
    else:
        assert not h.ping(guest, ip, count=2, wait=0.5), f"{guest} reached {ip} across networks"


@pytest.mark.parametrize("db", ["postgresql", "mysql"])
def test_three_hosts_vxlan_l2population_and_isolation(deployment, netns_names, db):
    d = deployment(CONFIG, db_url=fresh_db_url(db))
    d.start_server()
    underlay, hosts = mh.make_hosts(netns_names, 3)
    by_name = {x.name: x for x in hosts}
    mh.start_agents(d, hosts)

    # Two VXLAN networks with the same CIDR: only L2 isolation keeps them apart.
    net_a, sub_a = _net(d, "a", "10.70.0.0/24")
    net_b, sub_b = _net(d, "b", "10.70.0.0/24")
    assert net_a["mtu"] == mh.UNDERLAY_MTU - 50 and net_a["provider:network_type"] == "vxlan"
    vni_a, vni_b = net_a["provider:segmentation_id"], net_b["provider:segmentation_id"]
    a = {x.name: _port(d, net_a, sub_a, f"10.70.0.{11 + i}") for i, x in enumerate(hosts)}
    b = {x.name: _port(d, net_b, sub_b, f"10.70.0.{21 + i}") for i, x in enumerate(hosts[:2])}
    guests_a, guests_b = {}, {}
    for name, p in a.items():
        guests_a[name] = netns_names("g")
        mh.plug_guest(d, p, by_name[name], guests_a[name])
    for name, p in b.items():
        guests_b[name] = netns_names("g")
        mh.plug_guest(d, p, by_name[name], guests_b[name])
    for p in [*a.values(), *b.values()]:
        d.wait_status(p["id"], "ACTIVE")

    # Guests get the VXLAN MTU; everyone on A reaches everyone on A, across hosts.
    for g in guests_a.values():
        assert json.loads(h.ns(g, "ip", "-j", "link", "show", "dev", "eth0").stdout)[0]["mtu"] == 1450
    for src, g in guests_a.items():
        for dst, p in a.items():
            if src != dst:
                _pings(g, mh.guest_ip(p))
    _pings(guests_b["host1"], mh.guest_ip(b["host2"]))
    # B is its own L2: not A's guests on other hosts, nor A's guest on the same host.
    for p in a.values():
        _pings(guests_b["host1"], mh.guest_ip(p), expect=False)

    # l2population: each host holds a flooding entry and the MACs of every remote port.
    ports_a = {n: [p] for n, p in a.items()}
    for x in hosts:
        want = mh.expected_fdb(ports_a, by_name, x.name)
        h.wait_for(lambda x=x, want=want: mh.fdb(x, vni_a) == want, what=f"{x.name} FDB of A")
    h.wait_for(lambda: mh.fdb(by_name["host1"], vni_b) == mh.expected_fdb({n: [p] for n, p in b.items()}, by_name, "host1"),
               what="host1 FDB of B")
    assert vxlan_name(vni_b) not in h.link_names(by_name["host3"].netns)  # no B port there

    # host3's port goes (unplugged, then deleted): its entries leave host1 and host2.
    d.vif("unplug", a["host3"]["id"], "host3", by_name["host3"].netns)
    d.wait_status(a["host3"]["id"], "DOWN")
    assert d.api.delete(f"/v2.0/ports/{a['host3']['id']}").status_code == 204
    del ports_a["host3"]
    for x in hosts[:2]:
        want = mh.expected_fdb(ports_a, by_name, x.name)
        h.wait_for(lambda x=x, want=want: mh.fdb(x, vni_a) == want, what=f"{x.name} FDB without host3")
    # B's port on host2 deleted while ACTIVE: host1's FDB of B empties.
    assert d.api.delete(f"/v2.0/ports/{b['host2']['id']}").status_code == 204
    h.wait_for(lambda: mh.fdb(by_name["host1"], vni_b) == set(), what="host1 FDB of B emptied")
    _pings(guests_a["host1"], mh.guest_ip(a["host2"]))
    assert d.metric(DUP) == 0


def test_multicast_group_mode(deployment, netns_names):
    d = deployment(CONFIG + 'vxlan_group = "239.1.1.7"\n', db_url=fresh_db_url("postgresql"))
    d.start_server()
    underlay, hosts = mh.make_hosts(netns_names, 2)
    mh.start_agents(d, hosts)
    net, sub = _net(d, "m", "10.71.0.0/24")
    ports = [_port(d, net, sub, f"10.71.0.{11 + i}") for i in range(2)]
    guests = [netns_names("g") for _ in ports]
    for p, x, g in zip(ports, hosts, guests):
        mh.plug_guest(d, p, x, g)
    for p in ports:
        d.wait_status(p["id"], "ACTIVE")
    _pings(guests[0], mh.guest_ip(ports[1]))
    _pings(guests[1], mh.guest_ip(ports[0]))
    vni = net["provider:segmentation_id"]
    for x in hosts:
        # Only the kernel's group entry: no l2population unicast entries in this mode.
        assert mh.fdb(x, vni) == {(mh.ZERO_MAC, "239.1.1.7")}


def _relayed_deployment(deployment, db_url):
    """A deployment whose server and agents reach RabbitMQ through two relays: cutting
    ``agents`` is a broker outage for the agents, ``server`` one for the server."""
    d = deployment(CONFIG, db_url=db_url)
    relays = {"server": mh.BrokerRelay(d.transport_url), "agents": mh.BrokerRelay(d.transport_url)}
    return d, relays


def _start_server_via(d, relay):
    direct, d.transport_url = d.transport_url, relay.url
    try:
        d.start_server()
    finally:
        d.transport_url = direct


def test_burst_through_broker_outage_and_server_restart(deployment, netns_names):
    d, relays = _relayed_deployment(deployment, fresh_db_url("postgresql"))
    try:
        _start_server_via(d, relays["server"])
        underlay, hosts = mh.make_hosts(netns_names, 3)
        direct, d.transport_url = d.transport_url, relays["agents"].url
        mh.start_agents(d, hosts)
        d.transport_url = direct
        net, sub = _net(d, "burst", "10.72.0.0/24")
        ports_by_host = {}
        for x in hosts:
            r = d.api.post("/v2.0/ports", json={"ports": [{"network_id": net["id"], "binding:host_id": x.name}
                                                          for _ in range(34 if x.name == "host1" else 33)]})
            assert r.status_code == 201, r.text
            ports_by_host[x.name] = r.json()["ports"]
        all_ports = [p for v in ports_by_host.values() for p in v]
        assert len(all_ports) == 100

        counted = {"up": 0.0, "dup": 0.0}

        def disturb(i):
            if i == 20:  # broker outage for every agent, mid-burst
                relays["agents"].cut()
            elif i == 45:
                relays["agents"].listen()
            elif i == 70:
                # Server restart. Its counters die with it: freeze the agents, let it drain
                # what they already sent (a handler still running when its bus is cut would
                # count after a read), read its final counts, then cut its bus, stop it and
                # start a fresh one (as in test_broker_restart).
                with _agents_frozen(d):
                    ups, dups = _final_server_counts(d)
                    counted["up"] += ups
                    counted["dup"] += dups
                    relays["server"].cut()
                    d.server.stop()
                relays["server"].listen()
                _start_server_via(d, relays["server"])
            if i % 5 == 0:
                time.sleep(0.1)  # a burst spread over ~2 s, so the faults land inside it

        mh.plug_taps(hosts, ports_by_host, disturb)
        params = {"network_id": net["id"], "status": "ACTIVE", "fields": "id"}
        h.wait_for(lambda: len(d.api.get("/v2.0/ports", params=params).json()["ports"]) == 100, 60,
                   interval=0.2, what="all 100 ports ACTIVE")

        def settled():
            return all(d.agent_conf(x.name).get("pending", 1) == 0 for x in hosts)

        h.wait_for(settled, 30, interval=0.2, what="agents with nothing pending")
        time.sleep(1.5)  # a late duplicate would land now
        ups = counted["up"] + d.metric(UP, kind="up")
        dups = counted["dup"] + d.metric(DUP)
        assert (ups, dups) == (100, 0)
        by_name = {x.name: x for x in hosts}
        for x in hosts:
            assert mh.taps(x) == {tap_name(p["id"]) for p in ports_by_host[x.name]}
            assert d.agent_conf(x.name).get("retrying", 1) == 0
            # FDB casts lost in the outage were made good by the resync on reconnect.
            want = mh.expected_fdb(ports_by_host, by_name, x.name)
            h.wait_for(lambda x=x, want=want: mh.fdb(x, net["provider:segmentation_id"]) == want,
                       what=f"{x.name} FDB after the outage")
    finally:
        for r in relays.values():
            r.close()


def test_agent_kill9_restart_and_no_binding_to_dead_agent(deployment, netns_names):
    d = deployment(CONFIG, db_url=fresh_db_url("postgresql"))
    d.start_server()
    underlay, hosts = mh.make_hosts(netns_names, 2)
    by_name = {x.name: x for x in hosts}
    mh.start_agents(d, hosts)
    net, sub = _net(d, "k", "10.73.0.0/24")
    solo, solo_sub = _net(d, "solo", "10.74.0.0/24")
    keep = _port(d, net, sub, "10.73.0.11")
    gone = _port(d, solo, solo_sub, "10.74.0.11")
    peer = _port(d, net, sub, "10.73.0.12")
    g_keep, g_gone, g_peer = netns_names("g"), netns_names("g"), netns_names("g")
    mh.plug_guest(d, keep, by_name["host1"], g_keep)
    mh.plug_guest(d, gone, by_name["host1"], g_gone)
    mh.plug_guest(d, peer, by_name["host2"], g_peer)
    for p in (keep, gone, peer):
        d.wait_status(p["id"], "ACTIVE")
    _pings(g_keep, mh.guest_ip(peer))
    ups = d.metric(UP, kind="up")
    assert ups == 3

    host1 = by_name["host1"]
    d.agents["host1"].stop(signal.SIGKILL)
    # While it is dead: a port of a network that only it had leaves (its bridge and
    # VXLAN device go stale), and the host is declared dead after agent_down_time.
    h.sh("ip", "netns", "del", g_gone)
    assert d.api.delete(f"/v2.0/ports/{gone['id']}").status_code == 204
    h.wait_for(lambda: not d.agent_alive("host1"), interval=0.2, what="host1 agent dead")
    late = _port(d, net, sub, "10.73.0.13", host="host1")
    assert late["binding:vif_type"] == "binding_failed"  # no live agent on host1
    assert _port(d, net, sub, "10.73.0.14", host="host2")["binding:vif_type"] == "bridge"
    g_late = netns_names("g")
    mh.plug_guest(d, late, host1, g_late)  # the hypervisor plugs it anyway
    assert d.get("ports", late["id"])["binding:vif_type"] == "binding_failed"

    agent = d.start_agent("host1", host1.netns, "--local-ip", host1.ip)

    def converged():
        conf = d.agent_conf("host1")
        return conf.get("pid") == agent.proc.pid and conf.get("pending", 1) == 0 and conf.get("devices") == 2

    h.wait_for(converged, interval=0.2, what="restarted host1 agent to converge")
    d.wait_status(late["id"], "ACTIVE")
    assert d.get("ports", late["id"])["binding:vif_type"] == "bridge"  # repaired by the live agent
    # Exactly one more up (the late port); the ports already ACTIVE were not re-reported.
    assert d.metric(UP, kind="up") == ups + 1 and d.metric(DUP) == 0
    # No stale devices: the solo network's bridge and VXLAN device are gone.
    links = h.link_names(host1.netns)
    assert bridge_name(solo["id"]) not in links and vxlan_name(solo["provider:segmentation_id"]) not in links
    assert mh.taps(host1) == {tap_name(keep["id"]), tap_name(late["id"])}
    # The restarted agent got the FDB back (resync), and traffic flows both ways.
    vni = net["provider:segmentation_id"]
    h.wait_for(lambda: mh.fdb(host1, vni) == mh.expected_fdb({"host2": [peer]}, by_name, "host1"),
               what="host1 FDB after restart")
    _pings(g_late, mh.guest_ip(peer))
    _pings(g_peer, mh.guest_ip(keep))


@pytest.mark.parametrize("kind", ["flat", "vlan"])
def test_provider_network_over_the_shared_underlay(deployment, netns_names, kind):
    if kind == "vlan":
        from lbtap.drivers.host import probe

        supported, reason = probe.vlan(prefix="lbtt-probe-")
        if not supported:
            pytest.skip(f"kernel lacks 802.1Q VLAN devices: {reason}")
    config = ('[server]\ntenant_network_types = ["vxlan"]\nnetwork_vlan_ranges = { physnet1 = [[100, 199]] }\n'
              '[agent]\nreport_interval = 1.0\nphysical_interface_mappings = { physnet1 = "uplink0" }\n')
    d = deployment(config, db_url=fresh_db_url("postgresql"))
    d.start_server()
    underlay, hosts = mh.make_hosts(netns_names, 2)
    mh.start_agents(d, hosts)
    attrs = {"provider:network_type": kind, "provider:physical_network": "physnet1"}
    if kind == "vlan":
        attrs["provider:segmentation_id"] = 150
    net = d.create("networks", name=kind, **attrs)
    assert net["mtu"] == mh.UNDERLAY_MTU  # no encapsulation overhead
    sub = d.create("subnets", network_id=net["id"], cidr="10.75.0.0/24", ip_version=4)
    ports = [_port(d, net, sub, f"10.75.0.{11 + i}") for i in range(2)]
    guests = [netns_names("g") for _ in ports]
    for p, x, g in zip(ports, hosts, guests):
        mh.plug_guest(d, p, x, g)
    for p in ports:
        d.wait_status(p["id"], "ACTIVE")
    _pings(guests[0], mh.guest_ip(ports[1]))
    if kind == "flat":
        # The NIC is in the bridge; its underlay address moved there and still answers.
        x = hosts[0]
        assert h.link_master(x.netns, "uplink0") == bridge_name(net["id"])
        assert f"{x.ip}/24" in h.addresses(x.netns, bridge_name(net["id"]))
        assert h.reaches(x.netns, hosts[1].ip)
