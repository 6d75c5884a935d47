"""The core under the real asyncio runtime: FakeHost driver, in-process bus, a fake
plugin. Checks the contract end to end (taps -> ACTIVE, one report each, no storm)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest

from lbtap.agent.core.retry import Backoff
from lbtap.config import Settings
from lbtap.domain.naming import bridge_name, tap_name
from lbtap.drivers.host import errors
from lbtap.drivers.host.fake import FakeHost
from lbtap.rpc import topics

from .harness import NET_A, FakeServer, port_id

runtime = pytest.importorskip("lbtap.agent.runtime")
memory = pytest.importorskip("lbtap.bus.memory")
proxies = pytest.importorskip("lbtap.rpc.proxies")


async def _until(cond, timeout=30.0):
    # Generous: it returns as soon as ``cond`` holds, and a loaded CI machine is slow.
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def test_runtime_drives_core_to_active_without_storm():
    url = f"memory://core-{uuid.uuid4().hex[:8]}"
    host = FakeHost()
    server = FakeServer()
    bad = tap_name(port_id(999))
    host.fail("enslave", bad, errors.Transient)
    messages: Counter[str] = Counter()

    def details(devices, agent_id, host):
        return [d.to_wire() for d in server.details(devices)]

    def update(devices_up, devices_down, agent_id, host):
        return server.update_device_list(devices_up, devices_down)

    plugin_bus = memory.MemoryBus(url)
    agent_bus = memory.MemoryBus(url)
    await plugin_bus.start()
    await agent_bus.start()
    await plugin_bus.serve(topics.PLUGIN, proxies.Dispatcher(
        {topics.GET_DEVICES_DETAILS_LIST: details, topics.UPDATE_DEVICE_LIST: update},
        on_message=messages.update, threaded=False))
    await plugin_bus.serve(topics.REPORTS, proxies.Dispatcher(
        {topics.REPORT_STATE: lambda agent_state, time: "alive"}, threaded=False))
    settings = Settings.model_validate({"agent": {"host": "h1", "retry_initial": 0.05, "retry_max": 0.4}})
    agent = runtime.L2Agent(settings, agent_bus, driver_factory=lambda s: host)
    task = asyncio.create_task(agent.run())
    try:
        taps = [server.add_port(port_id(i)) for i in range(20)]
        server.add_port(port_id(999))
        # The taps appear once the agent runs its loop (after its first full scan).
        await _until(lambda: agent.loop_iterations >= 1)
        for i in (*range(20), 999):
            host.create_tap(tap_name(port_id(i)))
        await _until(lambda: all(server.up_msgs[t] == 1 for t in taps))

        # The bad device keeps failing meanwhile, retried with backoff, not in a busy loop.
        # Counted in retries (five: ~0.75 s of backoff), not in seconds; each retry's due
        # time as the agent scheduled it on its own clock, per attempt number.
        due: dict[int, float] = {}

        def retried(n: int) -> bool:
            state = agent.core.snapshot()["retrying"].get(bad)
            if state is not None:
                due.setdefault(state["attempts"], state["next_at"])
            return state is not None and state["attempts"] >= n

        await _until(lambda: retried(5))
        assert all(host.get_link(t).master == bridge_name(NET_A) for t in taps)
        assert all(server.up_msgs[t] == 1 for t in taps) and server.up_msgs[bad] == 0
        # Attempt j comes no earlier than attempt i's due time, and is due itself its own
        # backoff later: due times are at least the sum of the backoffs in between apart.
        backoff = Backoff(settings.agent.retry_initial, settings.agent.retry_max)
        seen = sorted(due)
        assert len(seen) >= 2, due
        for i, j in zip(seen, seen[1:]):
            assert due[j] - due[i] >= sum(backoff.delay(k) for k in range(i + 1, j + 1)) - 1e-6, due
        assert messages[topics.UPDATE_DEVICE_LIST] <= 5
        host.clear_faults()
        await _until(lambda: server.up_msgs[bad] == 1)
        host.delete_link(taps[0])
        await _until(lambda: server.down_msgs[taps[0]] == 1)
        assert agent.loop_iterations < 500
    finally:
        agent.stop()
        await asyncio.wait_for(task, 30)
        await agent_bus.close()
        await plugin_bus.close()
