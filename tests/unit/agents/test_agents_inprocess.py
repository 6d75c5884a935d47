"""DHCP and L3 agent loops against a real in-process server, with the host side faked.

Checks the flows, not the kernel: casts reach the agent, it asks for the DHCP port,
bursts of port changes are batched, deletes tear down; the L3 agent claims routers,
applies changed ones only, and destroys deleted ones.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from lbtap.agents.dhcp import DhcpAgent
from lbtap.agents.l3 import L3Agent
from lbtap.bus.memory import MemoryBus
from lbtap.config import load_settings
from lbtap.server.context import Context
from lbtap.server.process import build_server, serve_rpc

ADMIN = Context.admin()


class FakeDhcpHost:
    def __init__(self):
        self.calls: list[tuple] = []
        self.serving: dict[str, tuple] = {}

    def serve(self, network, port, cidrs, ips):
        self.calls.append(("serve", network.id, len(network.ports)))
        self.serving[network.id] = (port["id"], cidrs)
        return "reloaded"

    def teardown(self, network_id):
        self.calls.append(("teardown", network_id))
        self.serving.pop(network_id, None)

    def check(self):
        return []

    def stale(self):
        return list(self.serving)

    def close(self):
        pass


async def until(pred, timeout=30.0):
    # Generous: it returns as soon as ``pred`` holds, and a loaded CI machine is slow.
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met")
        await asyncio.sleep(0.01)


@pytest.fixture
async def server(tmp_path):
    settings = load_settings(None, {"state_dir": str(tmp_path), "agent.host": "h1", "agent.report_interval": 0.2,
                                    "bus.transport_url": f"memory://{uuid.uuid4().hex}"})
    bus = MemoryBus(settings.bus.transport_url)
    await bus.start()
    parts = build_server(settings, bus, asyncio.get_running_loop())
    await serve_rpc(parts)
    yield settings, bus, parts.services
    await bus.close()
    parts.engine.dispose()


async def run_agent(agent):
    task = asyncio.create_task(agent.run())
    return task


async def create(svc, resource, body):
    return await asyncio.to_thread(svc.create, ADMIN, resource, body)


async def test_dhcp_agent_serves_batches_and_tears_down(server):
    settings, bus, svc = server
    agent = DhcpAgent(settings, bus)
    agent.dhcp = fake = FakeDhcpHost()
    task = await run_agent(agent)
    try:
        net = await create(svc, "networks", {"name": "n"})
        await asyncio.sleep(0.2)
        assert fake.calls == [], "a network without a subnet is not served"
        await create(svc, "subnets", {"network_id": net["id"], "cidr": "10.0.0.0/24", "ip_version": 4})
        await until(lambda: net["id"] in fake.serving)
        port_id, cidrs = fake.serving[net["id"]]
        dport = await asyncio.to_thread(svc.get, ADMIN, "ports", port_id)
        assert dport["device_owner"] == "network:dhcp" and dport["binding:host_id"] == "h1"
        assert cidrs == {dport["fixed_ips"][0]["ip_address"] + "/24"}

        fake.calls.clear()
        # On the loop's thread: the 50 casts are all queued before the agent can run, so
        # however slow the machine, they arrive as one burst (from a worker thread they
        # could trickle in over more than the agent's batch delay).
        ports = svc.create_bulk(ADMIN, "ports", [{"network_id": net["id"]} for _ in range(50)])
        await until(lambda: any(c[0] == "serve" and c[2] == 51 for c in fake.calls))
        serves = [c for c in fake.calls if c[0] == "serve"]
        assert len(serves) <= 3, f"50 port casts must be batched, got {len(serves)} serves"
        for p in ports:
            await asyncio.to_thread(svc.delete, ADMIN, "ports", p["id"])
        await until(lambda: fake.calls[-1][0] == "serve" and fake.calls[-1][2] == 1)
        assert net["id"] in fake.serving, "port deletes change leases, they do not stop DHCP"

        await asyncio.to_thread(svc.delete, ADMIN, "networks", net["id"])
        await until(lambda: ("teardown", net["id"]) in fake.calls)
        assert net["id"] not in agent.served
    finally:
        agent.stop()
        await asyncio.wait_for(task, 30)


async def test_l3_agent_claims_applies_changes_only_and_destroys(server):
    settings, bus, svc = server
    agent = L3Agent(settings, bus)
    synced, destroyed = [], []
    agent._sync = lambda d: synced.append(d["id"]) or type("R", (), {"changed": False, "problems": []})()
    agent._destroy = destroyed.append
    agent._present = lambda: set(agent.applied)
    task = await run_agent(agent)
    try:
        router = await create(svc, "routers", {"name": "r"})
        await until(lambda: router["id"] in synced)
        assert (await asyncio.to_thread(svc.get, ADMIN, "routers", router["id"]))["id"] == router["id"]
        n = len(synced)
        other = await create(svc, "routers", {"name": "r2"})
        await until(lambda: other["id"] in synced)
        assert synced[n:] == [other["id"]], "an unchanged router is not re-applied"
        await asyncio.to_thread(svc.delete, ADMIN, "routers", router["id"])
        await until(lambda: router["id"] in destroyed)
        assert router["id"] not in agent.applied
    finally:
        agent.stop()
        await asyncio.wait_for(task, 30)


class TearingDhcpHost(FakeDhcpHost):
    def teardown_all(self):
        nets = sorted(self.serving)
        for net in nets:
            self.teardown(net)
        self.calls.append(("teardown_all",))
        return nets


@pytest.mark.parametrize("teardown", [False, True])
async def test_dhcp_agent_tears_down_on_stop_only_when_asked(server, teardown):
    settings, bus, svc = server
    agent = DhcpAgent(settings, bus, teardown_on_stop=teardown)
    agent.dhcp = fake = TearingDhcpHost()
    task = await run_agent(agent)
    try:
        net = await create(svc, "networks", {"name": "n"})
        await create(svc, "subnets", {"network_id": net["id"], "cidr": "10.0.0.0/24", "ip_version": 4})
        await until(lambda: net["id"] in fake.serving)
        port_id = fake.serving[net["id"]][0]
    finally:
        agent.stop()
        await asyncio.wait_for(task, 30)
    if teardown:  # lbtap up stopping: nothing left, the DHCP port stays allocated for the next start
        assert fake.calls[-2:] == [("teardown", net["id"]), ("teardown_all",)] and not fake.serving
        assert agent.served == {}
        assert (await asyncio.to_thread(svc.get, ADMIN, "ports", port_id))["device_owner"] == "network:dhcp"
    else:  # a standalone agent: dnsmasq keeps serving for the next agent to adopt
        assert ("teardown_all",) not in fake.calls and net["id"] in fake.serving
    # The agents' lock is released: lbtap cleanup may run now.
    from lbtap.agents.state import ExclusiveLock

    with ExclusiveLock(settings.state_dir):
        pass


@pytest.mark.parametrize("teardown", [False, True])
async def test_l3_agent_destroys_its_routers_on_stop_only_when_asked(server, teardown):
    from lbtap.agents.state import NamespaceRecord, NamespaceRecords
    from lbtap.drivers.router.naming import router_namespace

    settings, bus, svc = server
    # A router a previous run of this host recorded (kept with --keep-on-exit), not given any more.
    old = "99999999-9999-4999-8999-999999999999"
    NamespaceRecords(settings.state_dir).add(NamespaceRecord(router_namespace(old), "router", old, "h1", None))
    NamespaceRecords(settings.state_dir).add(NamespaceRecord(router_namespace(old[::-1]), "router", old[::-1],
                                                             "other-host", None))
    agent = L3Agent(settings, bus, teardown_on_stop=teardown)
    synced, destroyed = [], []
    agent._sync = lambda d: synced.append(d["id"]) or type("R", (), {"changed": False, "problems": []})()
    agent._destroy = destroyed.append
    agent._present = lambda: set()
    task = await run_agent(agent)
    try:
        router = await create(svc, "routers", {"name": "r"})
        await until(lambda: router["id"] in synced)
        destroyed.clear()
    finally:
        agent.stop()
        await asyncio.wait_for(task, 30)
    if teardown:
        assert sorted(destroyed) == sorted([router["id"], old]), "another host's record is not this agent's"
        assert agent.applied == {}
    else:
        assert destroyed == [] and router["id"] in agent.applied
