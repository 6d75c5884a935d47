"""l2population end to end in one process: the real server (SQLite), the in-process bus,
three real agent runtimes, each on its own FakeHost with its own VTEP address."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from lbtap.agent.l2pop_fdb import ZERO_MAC
from lbtap.agent.runtime import L2Agent
from lbtap.bus.memory import MemoryBus
from lbtap.config import load_settings
from lbtap.domain.naming import tap_name, vxlan_name
from lbtap.drivers.host.fake import FakeHost
from lbtap.server.context import Context
from lbtap.server.process import build_server, serve_rpc
from tests.unit.agent_runtime.test_inprocess import wait_until

ADMIN = Context.admin()
HOSTS = {"h1": "10.0.0.1", "h2": "10.0.0.2", "h3": "10.0.0.3"}


def _settings(tmp_path, url, host=None, ip=None, group=None):
    over = {"state_dir": str(tmp_path), "server.tenant_network_types": ["vxlan"], "agent.report_interval": 0.05,
            "agent.retry_initial": 0.05, "agent.retry_max": 0.4, "bus.transport_url": url}
    if host:
        over.update({"agent.host": host, "agent.local_ip": ip, "agent.vxlan_group": group})
    return load_settings(None, over)


@pytest.fixture
async def cluster(tmp_path):
    url = f"memory://{uuid.uuid4().hex}"
    settings = _settings(tmp_path, url)
    bus = MemoryBus(url)
    await bus.start()
    parts = build_server(settings, bus, asyncio.get_running_loop())
    await serve_rpc(parts)
    agents, tasks, hosts, buses = {}, [], {}, [bus]
    running = {}  # host -> its agent's current run() task

    async def start(host):
        b = MemoryBus(url)
        await b.start()
        buses.append(b)
        hosts[host] = hosts.get(host) or FakeHost()
        fh = hosts[host]
        a = L2Agent(_settings(tmp_path, url, host, HOSTS[host]), b, driver_factory=lambda s: fh)
        agents[host] = a
        running[host] = asyncio.create_task(a.run())
        tasks.append(running[host])
        await wait_until(lambda: parts.rpc.agent_alive(host))
        return a

    for h in HOSTS:
        await start(h)

    class C:
        pass

    c = C()
    c.parts, c.svc, c.agents, c.hosts, c.start = parts, parts.services, agents, hosts, start

    async def stop(host):
        """Stop ``host``'s agent and wait until its loop has ended (it handles nothing more)."""
        agents[host].stop()
        await asyncio.wait_for(running[host], 30)

    c.stop = stop

    async def plug(host, port):
        a = agents[host]
        await a._host(lambda: (hosts[host].create_tap(tap_name(port["id"])),
                               hosts[host].set_link(tap_name(port["id"]), up=True)))

    async def unplug(host, port):
        await agents[host]._host(hosts[host].delete_link, tap_name(port["id"]))

    def fdb(host, vni):
        return {(e.mac, e.dst) for e in hosts[host].list_fdb(vxlan_name(vni)) if e.master is None}

    c.plug, c.unplug, c.fdb = plug, unplug, fdb
    yield c
    for a in agents.values():
        a.stop()
    await asyncio.gather(*tasks, return_exceptions=True)
    for b in buses:
        await b.close()
    parts.engine.dispose()


def _port(c, net, host):
    return c.svc.create(ADMIN, "ports", {"network_id": net["id"], "binding:host_id": host})


def _status(c, p):
    return c.svc.get(ADMIN, "ports", p["id"])["status"]


async def test_entries_follow_ports_across_three_hosts(cluster):
    c = cluster
    net = c.svc.create(ADMIN, "networks", {"name": "vx"})
    c.svc.create(ADMIN, "subnets", {"network_id": net["id"], "cidr": "10.9.0.0/24", "ip_version": 4})
    vni = net["provider:segmentation_id"]
    ports = {h: _port(c, net, h) for h in HOSTS}
    for h, p in ports.items():
        await c.plug(h, p)
    await wait_until(lambda: all(_status(c, p) == "ACTIVE" for p in ports.values()))

    def expected(host):
        return {e for h, ip in HOSTS.items() if h != host
                for e in ((ZERO_MAC, ip), (ports[h]["mac_address"], ip))}

    for h in HOSTS:
        await wait_until(lambda h=h: c.fdb(h, vni) == expected(h))

    # h3's port leaves: its MAC and its flooding entry leave h1 and h2 (none left there)
    await c.unplug("h3", ports["h3"])
    await wait_until(lambda: _status(c, ports["h3"]) == "DOWN")
    for h in ("h1", "h2"):
        await wait_until(lambda h=h: c.fdb(h, vni) == expected(h) - {(ZERO_MAC, "10.0.0.3"), (ports["h3"]["mac_address"], "10.0.0.3")})

    # a second port on h2, then the first is deleted through the API: flooding stays
    p2b = _port(c, net, "h2")
    await c.plug("h2", p2b)
    await wait_until(lambda: (p2b["mac_address"], "10.0.0.2") in c.fdb("h1", vni))
    c.svc.delete(ADMIN, "ports", ports["h2"]["id"])
    await wait_until(lambda: c.fdb("h1", vni) == {(ZERO_MAC, "10.0.0.2"), (p2b["mac_address"], "10.0.0.2")})
    assert c.parts.audit.counts()["duplicate_up"] == 0


async def test_restarted_agent_resyncs_and_repairs_its_fdb(cluster):
    c = cluster
    net = c.svc.create(ADMIN, "networks", {"name": "vx"})
    c.svc.create(ADMIN, "subnets", {"network_id": net["id"], "cidr": "10.9.0.0/24", "ip_version": 4})
    vni = net["provider:segmentation_id"]
    ports = {h: _port(c, net, h) for h in ("h1", "h2")}
    for h, p in ports.items():
        await c.plug(h, p)
    want = {(ZERO_MAC, "10.0.0.2"), (ports["h2"]["mac_address"], "10.0.0.2")}
    await wait_until(lambda: c.fdb("h1", vni) == want)

    # h1's agent dies; meanwhile h3 joins (h1 misses the fanout) and someone scribbles
    # on h1's FDB. The restarted agent asks for the full set and repairs the kernel.
    await c.stop("h1")
    p3 = _port(c, net, "h3")
    await c.plug("h3", p3)
    await wait_until(lambda: _status(c, p3) == "ACTIVE")
    from lbtap.drivers.host.base import FdbEntry
    c.hosts["h1"].add_fdb(FdbEntry("02:00:00:00:00:99", vxlan_name(vni), dst="10.0.0.77"))
    await c.start("h1")
    want |= {(ZERO_MAC, "10.0.0.3"), (p3["mac_address"], "10.0.0.3")}
    await wait_until(lambda: c.fdb("h1", vni) == want)
    assert c.parts.audit.counts()["up"] == 3  # the restart re-reported nothing


async def test_fdb_entries_rpc_leaves_out_the_asking_host(cluster):
    c = cluster
    net = c.svc.create(ADMIN, "networks", {"name": "vx"})
    c.svc.create(ADMIN, "subnets", {"network_id": net["id"], "cidr": "10.9.0.0/24", "ip_version": 4})
    ports = {h: _port(c, net, h) for h in HOSTS}
    for h, p in ports.items():
        await c.plug(h, p)
    await wait_until(lambda: all(_status(c, p) == "ACTIVE" for p in ports.values()))
    got = c.parts.l2pop.get_fdb_entries("h1")
    block = got[net["id"]]
    assert block["segment_id"] == net["provider:segmentation_id"] and block["network_type"] == "vxlan"
    assert set(block["ports"]) == {"10.0.0.2", "10.0.0.3"}
    ip2 = ports["h2"]["fixed_ips"][0]["ip_address"]
    assert block["ports"]["10.0.0.2"] == [[ZERO_MAC, "0.0.0.0"], [ports["h2"]["mac_address"], ip2]]
    assert c.parts.l2pop.get_fdb_entries("nohost") == {}


async def test_a_host_joining_while_l2pop_lags_gets_and_gives_the_flooding_entries(cluster):
    """h2's first two ports on a network go ACTIVE in two reports, both committed while
    l2population's reader is held: both of its reads then see two ACTIVE ports. h1 must
    still get h2's flooding entry (it travels with every add), and h2, which holds
    nothing of the network yet, must still get h1's entries (it asks when the network
    becomes local: the server does not guess)."""
    import threading

    c = cluster
    net = c.svc.create(ADMIN, "networks", {"name": "vx"})
    c.svc.create(ADMIN, "subnets", {"network_id": net["id"], "cidr": "10.9.0.0/24", "ip_version": 4})
    vni = net["provider:segmentation_id"]
    # h2's agent restarts after h1's port is up: its start resync has nothing of the
    # network (no port bound to h2 yet), nor has it heard h1's fanout.
    await c.stop("h2")
    p1 = _port(c, net, "h1")
    await c.plug("h1", p1)
    await wait_until(lambda: _status(c, p1) == "ACTIVE")
    await wait_until(lambda: c.parts.l2pop.idle())
    a2 = await c.start("h2")
    ext = next(e for e in a2.extensions if e.name == "l2pop")
    await wait_until(lambda: ext.stats["resyncs"] >= 1)
    assert net["id"] not in ext.table.nets

    gate = threading.Event()
    c.parts.l2pop._defer(gate.wait, 60)  # the reader lags from here on
    try:
        p2a, p2b = _port(c, net, "h2"), _port(c, net, "h2")
        await c.plug("h2", p2a)
        await wait_until(lambda: _status(c, p2a) == "ACTIVE")
        await c.plug("h2", p2b)
        await wait_until(lambda: _status(c, p2b) == "ACTIVE")
    finally:
        gate.set()
    ip = HOSTS
    await wait_until(lambda: c.fdb("h1", vni) == {(ZERO_MAC, ip["h2"]), (p2a["mac_address"], ip["h2"]),
                                                  (p2b["mac_address"], ip["h2"])})
    await wait_until(lambda: c.fdb("h2", vni) == {(ZERO_MAC, ip["h1"]), (p1["mac_address"], ip["h1"])})
    assert ext.stats["joins"] >= 1
