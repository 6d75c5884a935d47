"""The server's notification hand-off: work handed over from any thread is run on the
loop, failures stay there, and a stopping server sends what is pending before the bus
closes."""

from __future__ import annotations

import asyncio
import threading
import uuid

from lbtap.bus.memory import MemoryBus
from lbtap.config import load_settings
from lbtap.domain import constants as c
from lbtap.rpc import topics
from lbtap.server.context import Context
from lbtap.server.outbox import Outbox
from lbtap.server.process import build_server, drain_notifications

ADMIN = Context.admin()


async def test_work_from_another_thread_runs_on_the_loop_and_drain_waits_for_it():
    loop = asyncio.get_running_loop()
    out = Outbox(loop)
    ran: list[tuple[str, threading.Thread]] = []

    async def second():
        ran.append(("second", threading.current_thread()))

    async def first():
        await asyncio.sleep(0.05)
        ran.append(("first", threading.current_thread()))
        out.submit(second)  # handed over by work that is finishing: drain waits for it too

    worker = threading.Thread(target=lambda: out.submit(first, delay=0.05))
    worker.start()
    worker.join()
    assert not out.idle()
    assert await out.drain(timeout=30)
    assert [name for name, _ in ran] == ["first", "second"]
    assert all(t is threading.current_thread() for _, t in ran)
    assert out.idle()


async def test_a_failure_is_logged_not_raised_and_counts_as_done(caplog):
    out = Outbox(asyncio.get_running_loop(), "demo cast")

    async def boom():
        raise RuntimeError("broker gone")

    out.submit(boom)
    assert await out.drain(timeout=30)
    assert any("demo cast failed: broker gone" in r.getMessage() for r in caplog.records)


async def test_drain_gives_up_at_its_timeout():
    out = Outbox(asyncio.get_running_loop())
    never = asyncio.Event()
    out.submit(never.wait)
    assert await out.drain(timeout=0.05) is False
    never.set()
    assert await out.drain(timeout=30)


def test_without_a_loop_or_after_it_closed_nothing_is_left_pending():
    async def nothing():
        pass

    dropped = Outbox(None)
    dropped.submit(nothing)
    assert dropped.idle()
    loop = asyncio.new_event_loop()
    loop.close()
    late = Outbox(loop)
    late.submit(nothing)  # from a request thread after the server's loop ended
    assert late.idle()


async def test_a_stopping_server_sends_the_push_of_its_last_request_before_the_bus_closes(tmp_path):
    url = f"memory://{uuid.uuid4().hex}"
    settings = load_settings(None, {"state_dir": str(tmp_path), "server.tenant_network_types": ["local"],
                                    "bus.transport_url": url})
    server_bus, agent_bus = MemoryBus(url), MemoryBus(url)
    await server_bus.start()
    await agent_bus.start()
    heard: list[tuple[str, dict]] = []

    async def agent(method, kwargs):
        heard.append((method, kwargs))

    await agent_bus.serve(topics.agent_host_topic("h1"), agent)
    parts = build_server(settings, server_bus, asyncio.get_running_loop())
    parts.rpc.report_state({"agent_state": {"agent_type": c.AGENT_TYPE_LINUXBRIDGE, "host": "h1",
                                            "binary": "lbtap-agent", "topic": "q-agent-notifier",
                                            "start_flag": True}})
    net = parts.services.create(ADMIN, "networks", {"name": "n"})
    # The last request before SIGTERM: its push waits out the coalescing window.
    port = parts.services.create(ADMIN, "ports", {"network_id": net["id"], "binding:host_id": "h1"})
    assert await drain_notifications(parts, timeout=30)
    await server_bus.close()
    for _ in range(3000):
        if heard:
            break
        await asyncio.sleep(0.01)
    try:
        assert [(m, [d["port_id"] for d in kw["details"]]) for m, kw in heard] == [
            (topics.DEVICES_DETAILS, [port["id"]])]
    finally:
        await agent_bus.close()
        parts.engine.dispose()


async def test_a_task_cancelled_before_it_started_counts_as_done():
    out = Outbox(asyncio.get_running_loop())

    async def never_runs():
        raise AssertionError("cancelled before its first step")

    out.submit(never_runs)  # on the loop's thread: the task exists at once
    (task,) = out._tasks
    task.cancel()  # as at loop shutdown
    assert await out.drain(timeout=30)
