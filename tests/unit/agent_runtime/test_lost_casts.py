"""Casts lost while the agent was away (a bus connection loss, or a partition the server
took for death) are made good at once, not at ``details_refresh_interval``: the agent
re-reads every device's details after a reconnect or a "revived" heartbeat answer, and
reports nothing twice.

One process: the real server (SQLite), the in-process bus, the real agent runtime on a
FakeHost; the agent's bus is wrapped so the test can cut it like a broker outage."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from types import SimpleNamespace

from lbtap.agent.runtime import L2Agent
from lbtap.bus.base import Unreachable
from lbtap.bus.memory import MemoryBus
from lbtap.config import load_settings
from lbtap.domain.naming import tap_name
from lbtap.drivers.host.fake import FakeHost
from lbtap.server.context import Context
from lbtap.server.process import build_server, serve_rpc
from tests.unit.agent_runtime.test_inprocess import make_ports, status, wait_until

ADMIN = Context.admin()


class CuttableBus:
    """The agent's bus with an outage switch.

    ``disconnect()`` behaves as ``AmqpBus`` on a connection loss: ``disconnects`` goes up,
    ``connected`` is false, calls fail at once and whatever is sent to the agent is lost
    (its exclusive fanout queue went with the connection); ``reconnect()`` restores it.
    ``partition()`` loses the same traffic with no connection loss to notice (an agent
    cut off from the server, or SIGSTOPped, for longer than ``agent_down_time``)."""

    def __init__(self, inner: MemoryBus) -> None:
        self.inner = inner
        self.disconnects = 0
        self.connected = True
        self.cut = False
        self.lost: list[str] = []

    def disconnect(self) -> None:
        self.disconnects += 1
        self.connected, self.cut = False, True

    def reconnect(self) -> None:
        self.connected, self.cut = True, False

    def partition(self) -> None:
        self.cut = True

    def heal(self) -> None:
        self.cut = False

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    def _check(self) -> None:
        if self.cut:
            raise Unreachable("cut off (test)")

    async def call(self, topic, method, *, timeout=10.0, **kwargs):
        self._check()
        return await self.inner.call(topic, method, timeout=timeout, **kwargs)

    async def cast(self, topic, method, **kwargs):
        self._check()
        await self.inner.cast(topic, method, **kwargs)

    async def fanout(self, topic, method, **kwargs):
        self._check()
        await self.inner.fanout(topic, method, **kwargs)

    async def serve(self, topic, handler, *, fanout=False):
        async def deliver(method, kwargs):
            if self.cut:
                self.lost.append(method)
                return None
            return await handler(method, kwargs)

        await self.inner.serve(topic, deliver, fanout=fanout)


@contextlib.asynccontextmanager
async def system_with_cuttable_bus(tmp_path, **overrides):
    url = f"memory://{uuid.uuid4().hex}"
    settings = load_settings(None, {
        "state_dir": str(tmp_path),
        "server.tenant_network_types": ["local"],
        "agent.host": "h1",
        "agent.local_ip": "10.0.0.1",  # l2pop on: its FDB resync must follow too
        "agent.report_interval": 0.05,
        "agent.retry_initial": 0.05,
        "agent.retry_max": 0.4,
        "bus.transport_url": url,
        **overrides,
    })
    server_bus = MemoryBus(url)
    await server_bus.start()
    parts = build_server(settings, server_bus, asyncio.get_running_loop())
    await serve_rpc(parts)
    bus = CuttableBus(MemoryBus(url))
    await bus.start()
    host = FakeHost()
    agent = L2Agent(settings, bus, driver_factory=lambda s: host)
    task = asyncio.create_task(agent.run())
    await wait_until(lambda: parts.rpc.agent_alive("h1"))

    try:
        yield SimpleNamespace(svc=parts.services, host=host, agent=agent, audit=parts.audit, bus=bus, parts=parts)
    finally:
        bus.reconnect()
        agent.stop()
        await asyncio.wait_for(task, 30)
        await bus.close()
        await server_bus.close()
        events = getattr(parts.app.state, "lbtap_events", None)
        if events is not None:
            events.store.close()
        parts.engine.dispose()


async def plug(s, tap):
    """Create the tap, up, on the agent's host worker (the thread that owns the host)."""
    await s.agent.on_host(lambda: (s.host.create_tap(tap), s.host.set_link(tap, up=True)))


async def _active_port(s):
    net, (port,) = make_ports(s, 1)
    tap = tap_name(port["id"])
    await plug(s, tap)
    await wait_until(lambda: status(s, port["id"]) == "ACTIVE")
    await wait_until(lambda: s.agent.converged_after is not None)
    assert s.audit.counts()["up"] == 1
    return net, port, tap


def _l2pop(s):
    return next(e for e in s.agent.extensions if e.name == "l2pop")


async def test_network_update_lost_while_disconnected_is_applied_on_reconnect(tmp_path):
    async with system_with_cuttable_bus(tmp_path) as s:
        net, port, tap = await _active_port(s)
        assert _l2pop(s).enabled
        await wait_until(lambda: _l2pop(s).stats["resyncs"] >= 1)
        resyncs = _l2pop(s).stats["resyncs"]

        s.bus.disconnect()
        s.svc.update(ADMIN, "networks", net["id"], {"admin_state_up": False})
        await wait_until(lambda: "network_update" in s.bus.lost)  # the fanout is gone for good
        s.bus.reconnect()

        # Well before details_refresh_interval (300 s): the reconnect re-reads the details.
        await wait_until(lambda: status(s, port["id"]) == "DOWN")
        assert s.host.get_link(tap).up is False
        assert s.agent.resyncs == 1
        await wait_until(lambda: _l2pop(s).stats["resyncs"] > resyncs)  # FDB re-fetched too
        counts = s.audit.counts()
        assert (counts["up"], counts["down"], counts["duplicate_up"]) == (1, 1, 0)

        # Connected again, casts flow as before; still nothing reported twice.
        s.svc.update(ADMIN, "networks", net["id"], {"admin_state_up": True})
        await wait_until(lambda: status(s, port["id"]) == "ACTIVE")
        assert s.host.get_link(tap).up is True
        counts = s.audit.counts()
        assert (counts["up"], counts["down"], counts["duplicate_up"]) == (2, 1, 0)
        assert s.agent.resyncs == 1


async def test_reconnect_rereads_quiet_devices_without_reporting_them_again(tmp_path):
    async with system_with_cuttable_bus(tmp_path) as s:
        net, ports = make_ports(s, 3)
        for p in ports:
            await plug(s, tap_name(p["id"]))
        await wait_until(lambda: all(status(s, p["id"]) == "ACTIVE" for p in ports))
        await wait_until(lambda: s.agent.converged_after is not None)
        asked = s.agent.core.counters["details_requested"]

        s.bus.disconnect()
        s.bus.reconnect()  # nothing changed meanwhile
        await wait_until(lambda: s.agent.core.counters["details_requested"] >= asked + 3)
        await wait_until(lambda: not s.agent.core.snapshot().get("waiting_details"))
        passes = s.agent.loop_iterations
        s.agent.wake()
        # A (wrong) re-report would go out in the pass that took the answers.
        await wait_until(lambda: s.agent.loop_iterations > passes
                         and not s.agent.core.snapshot().get("reports_pending"))
        counts = s.audit.counts()
        assert (counts["up"], counts["down"], counts["duplicate_up"]) == (3, 0, 0)
        assert all(status(s, p["id"]) == "ACTIVE" for p in ports)


async def test_agent_declared_dead_resyncs_when_told_it_was_revived(tmp_path):
    async with system_with_cuttable_bus(tmp_path, **{"server.agent_down_time": 1.0}) as s:
        net, port, tap = await _active_port(s)
        await wait_until(lambda: _l2pop(s).stats["resyncs"] >= 1)
        resyncs = _l2pop(s).stats["resyncs"]

        # No connection loss the agent could notice; heartbeats stop reaching the server.
        s.bus.partition()
        s.svc.update(ADMIN, "networks", net["id"], {"admin_state_up": False})
        await wait_until(lambda: "network_update" in s.bus.lost)
        await wait_until(lambda: not s.parts.rpc.agent_alive("h1"))
        s.bus.heal()

        # The next heartbeat is answered "revived": the agent re-reads what it may have missed.
        await wait_until(lambda: status(s, port["id"]) == "DOWN")
        assert s.host.get_link(tap).up is False
        assert s.agent.bus.revivals == 1 and s.bus.disconnects == 0
        assert s.agent.resyncs == 1
        await wait_until(lambda: _l2pop(s).stats["resyncs"] > resyncs)  # extensions resync as on a reconnect
        counts = s.audit.counts()
        assert (counts["up"], counts["down"], counts["duplicate_up"]) == (1, 1, 0)
