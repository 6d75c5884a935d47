"""The whole L2 flow in one process without root: real server code on SQLite, the
in-process bus, the real agent runtime and core, and the in-memory FakeHost."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest

from lbtap.agent.runtime import L2Agent
from lbtap.bus.memory import MemoryBus
from lbtap.config import load_settings
from lbtap.domain.naming import bridge_name, tap_name
from lbtap.drivers.host.errors import Busy
from lbtap.drivers.host.fake import FakeHost
from lbtap.server.context import Context
from lbtap.server.process import build_server, serve_rpc

ADMIN = Context.admin()


async def wait_until(pred, timeout=30.0):
    # Generous: it returns as soon as ``pred`` holds, and a loaded CI machine is slow.
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def in_process_system(tmp_path, **overrides):
    """Server parts + in-process bus + the real agent runtime on a FakeHost, started and
    (on exit) stopped; ``overrides`` are extra settings (``"agent.test_hooks": True``)."""
    settings = load_settings(None, {
        "state_dir": str(tmp_path),
        "server.tenant_network_types": ["local"],
        "agent.host": "h1",
        "agent.report_interval": 0.05,
        "agent.retry_initial": 0.05,
        "agent.retry_max": 0.4,
        "bus.transport_url": f"memory://{uuid.uuid4().hex}",
        **overrides,
    })
    bus = MemoryBus(settings.bus.transport_url)
    await bus.start()
    parts = build_server(settings, bus, asyncio.get_running_loop())
    await serve_rpc(parts)
    host = FakeHost()
    agent = L2Agent(settings, bus, driver_factory=lambda s: host)
    task = asyncio.create_task(agent.run())
    await wait_until(lambda: parts.services.list(ADMIN, "agents", _q()).items)

    class System:
        pass

    s = System()
    s.svc, s.host, s.agent, s.audit, s.bus, s.parts = parts.services, host, agent, parts.audit, bus, parts
    s.events = getattr(parts.app.state, "lbtap_events", None)

    async def on_host(fn, *args, **kw):
        # The agent's worker thread owns the host: serialise test changes through it.
        return await agent._host(lambda: fn(*args, **kw))

    s.on_host = on_host
    try:
        yield s
    finally:
        agent.stop()
        await asyncio.wait_for(task, 30)
        await bus.close()
        if s.events is not None:
            s.events.store.close()
        parts.engine.dispose()


@pytest.fixture
async def system(tmp_path):
    async with in_process_system(tmp_path) as s:
        yield s


def _q():
    from lbtap.server.services.query import ListQuery

    return ListQuery()


def status(s, port_id):
    return s.svc.get(ADMIN, "ports", port_id)["status"]


def make_ports(s, n, net_name="n"):
    net = s.svc.create(ADMIN, "networks", {"name": net_name})
    s.svc.create(ADMIN, "subnets", {"network_id": net["id"], "cidr": "10.0.0.0/24", "ip_version": 4})
    ports = [s.svc.create(ADMIN, "ports", {"network_id": net["id"]}) for _ in range(n)]
    return net, ports


async def test_tap_goes_active_in_its_bridge_and_down_when_removed(system):
    s = system
    net, (port,) = make_ports(s, 1)
    tap, br = tap_name(port["id"]), bridge_name(net["id"])
    await s.on_host(s.host.create_tap, tap)
    await s.on_host(s.host.set_link, tap, up=True)
    await wait_until(lambda: status(s, port["id"]) == "ACTIVE")
    assert s.host.get_link(tap).master == br
    assert s.svc.get(ADMIN, "ports", port["id"])["binding:host_id"] == "h1"

    await s.on_host(s.host.delete_link, tap)
    await wait_until(lambda: status(s, port["id"]) == "DOWN")
    await wait_until(lambda: s.host.get_link(br) is None)
    assert s.audit.counts()["up"] == 1 and s.audit.counts()["down"] == 1


async def test_one_failing_device_is_retried_alone(system):
    s = system
    net, ports = make_ports(s, 10)
    bad = tap_name(ports[0]["id"])
    s.host.fail("enslave", bad, Busy("injected", op="enslave", device=bad))
    for p in ports:
        await s.on_host(s.host.create_tap, tap_name(p["id"]))
        await s.on_host(s.host.set_link, tap_name(p["id"]), up=True)
    await wait_until(lambda: all(status(s, p["id"]) == "ACTIVE" for p in ports[1:]))
    # Several backoff periods: counted in the agent's retries, not in seconds.
    await wait_until(lambda: s.agent.core.snapshot()["retrying"].get(bad, {}).get("attempts", 0) >= 3)
    assert status(s, ports[0]["id"]) == "DOWN"
    counts = s.audit.counts()
    assert counts["up"] == 9 and counts["duplicate_up"] == 0

    s.host.clear_faults()  # the device heals: it joins on its next retry
    await wait_until(lambda: status(s, ports[0]["id"]) == "ACTIVE")
    assert s.audit.counts()["up"] == 10


async def test_admin_state_down_takes_link_down_and_reports_down(system):
    s = system
    net, (port,) = make_ports(s, 1)
    tap = tap_name(port["id"])
    await s.on_host(s.host.create_tap, tap)
    await s.on_host(s.host.set_link, tap, up=True)
    await wait_until(lambda: status(s, port["id"]) == "ACTIVE")
    s.svc.update(ADMIN, "ports", port["id"], {"admin_state_up": False})
    await wait_until(lambda: status(s, port["id"]) == "DOWN")
    assert s.host.get_link(tap).up is False
    s.svc.update(ADMIN, "ports", port["id"], {"admin_state_up": True})
    await wait_until(lambda: status(s, port["id"]) == "ACTIVE")
    assert s.host.get_link(tap).up is True
