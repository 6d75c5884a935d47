"""MemoryBus: the in-process transport shared by all buses of one URL."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid

import pytest

from lbtap.bus.base import CallTimeout, RemoteError, Unreachable, make_bus
from lbtap.bus.memory import MemoryBus, reset_brokers


@pytest.fixture
def url():
    u = f"memory://test-{uuid.uuid4().hex}"
    yield u
    reset_brokers(u)


@pytest.fixture
async def buses(url):
    made: list[MemoryBus] = []

    def make() -> MemoryBus:
        b = MemoryBus(url)
        made.append(b)
        return b

    yield make
    for b in made:
        await b.close()


class Recorder:
    """A handler that records what it got and echoes its arguments."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self.got: list[tuple[str, dict]] = []
        self.event = asyncio.Event()

    async def __call__(self, method, kwargs):
        self.got.append((method, kwargs))
        self.event.set()
        if method == "fail":
            raise ValueError("handler says no")
        return {"by": self.name, "method": method, "kwargs": kwargs}


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


# A deadline for what must happen at once: far below the calls' own timeout (so hitting
# it still tells "failed at once" from "waited out its timeout"), far above any delay a
# loaded machine could add.
AT_ONCE = 30
LONG = 3600  # a call timeout the test must never wait out


async def test_make_bus_builds_memory_bus():
    assert isinstance(make_bus("memory://"), MemoryBus)


async def test_call_reaches_server_on_another_bus_of_the_same_url(buses):
    server, client = buses(), buses()
    await server.serve("plugin", Recorder("s"))
    reply = await client.call("plugin", "get", devices=["tap1"], n=2)
    assert reply == {"by": "s", "method": "get", "kwargs": {"devices": ["tap1"], "n": 2}}


async def test_buses_of_different_urls_are_isolated(buses):
    server = buses()
    await server.serve("plugin", Recorder())
    other = MemoryBus(f"memory://other-{uuid.uuid4().hex}")
    with pytest.raises(Unreachable):
        await other.call("plugin", "get", timeout=5)
    await other.close()


async def test_call_to_never_served_topic_is_unreachable_at_once(buses):
    with pytest.raises(Unreachable):
        await asyncio.wait_for(buses().call("nobody", "x", timeout=LONG), AT_ONCE)


async def test_call_to_topic_whose_servers_left_times_out(buses):
    server, client = buses(), buses()
    await server.serve("plugin", Recorder())
    await server.close()
    t0 = time.monotonic()
    with pytest.raises(CallTimeout, match=r"within 0\.2s"):
        await client.call("plugin", "x", timeout=0.2)
    # It waited for a server (a slow machine can only make this longer).
    assert time.monotonic() - t0 >= 0.19


async def test_expired_call_is_not_delivered_to_a_later_server(buses):
    first, client = buses(), buses()
    await first.serve("plugin", Recorder())
    await first.close()
    with pytest.raises(CallTimeout):
        await client.call("plugin", "stale", timeout=0.05)
    late = Recorder()
    await buses().serve("plugin", late)
    await settle()
    assert late.got == []


async def test_cast_waits_for_the_next_server_of_its_topic(buses):
    agent, server = buses(), buses()
    await agent.serve("agent.h1", Recorder())
    await agent.close()  # the agent restarts...
    for i in range(3):
        await server.cast("agent.h1", "port_update", port={"id": i})
    restarted = Recorder()
    await buses().serve("agent.h1", restarted)
    await settle()
    assert [kw["port"]["id"] for _, kw in restarted.got] == [0, 1, 2]


async def test_cast_to_never_served_topic_is_dropped(buses):
    await buses().cast("nobody", "x", a=1)  # no error
    late = Recorder()
    await buses().serve("nobody", late)
    await settle()
    assert late.got == []


async def test_cast_round_robins_between_competing_servers(buses):
    a, b, client = Recorder("a"), Recorder("b"), buses()
    await buses().serve("plugin", a)
    await buses().serve("plugin", b)
    for i in range(10):
        await client.cast("plugin", "x", i=i)
    await settle()
    assert len(a.got) == 5 and len(b.got) == 5
    assert sorted(kw["i"] for _, kw in a.got + b.got) == list(range(10))


async def test_fanout_reaches_every_subscriber_and_no_server(buses):
    subs = [Recorder(str(i)) for i in range(3)]
    for r in subs:
        await buses().serve("fan", r, fanout=True)
    competing = Recorder()
    await buses().serve("fan", competing)  # same name, but a call/cast queue
    await buses().fanout("fan", "port_delete", port_id="p1")
    await settle()
    for r in subs:
        assert r.got == [("port_delete", {"port_id": "p1"})]
    assert competing.got == []


async def test_fanout_is_not_kept_for_later_subscribers(buses):
    await buses().fanout("fan", "x")
    late = Recorder()
    await buses().serve("fan", late, fanout=True)
    await settle()
    assert late.got == []


async def test_handler_exception_is_remote_error_for_calls(buses):
    await buses().serve("plugin", Recorder())
    with pytest.raises(RemoteError) as info:
        await buses().call("plugin", "fail")
    assert info.value.exc_type == "ValueError"
    assert "handler says no" in info.value.message


async def test_handler_exception_in_cast_is_logged_and_bus_keeps_going(buses, caplog):
    rec = Recorder()
    await buses().serve("agent", rec)
    client = buses()
    with caplog.at_level(logging.ERROR, logger="lbtap.bus.memory"):
        await client.cast("agent", "fail")
        await settle()
    assert any("fail" in r.getMessage() for r in caplog.records)
    assert await client.call("agent", "ok") == {"by": "", "method": "ok", "kwargs": {}}


async def test_unserialisable_result_is_remote_error(buses):
    async def handler(method, kwargs):
        return {"s": {1, 2}}

    await buses().serve("plugin", handler)
    with pytest.raises(RemoteError) as info:
        await buses().call("plugin", "x")
    assert info.value.exc_type == "TypeError"


async def test_slow_handler_does_not_block_other_messages(buses):
    release = asyncio.Event()

    async def handler(method, kwargs):
        if method == "slow":
            await release.wait()
        return method

    await buses().serve("plugin", handler)
    client = buses()
    slow = asyncio.create_task(client.call("plugin", "slow"))
    assert await asyncio.wait_for(client.call("plugin", "fast", timeout=LONG), AT_ONCE) == "fast"
    assert not slow.done()
    release.set()
    assert await slow == "slow"


async def test_payload_is_a_json_copy_for_each_receiver(buses):
    seen = []

    async def mutating(method, kwargs):
        seen.append(kwargs)
        kwargs["port"]["name"] = "changed"
        kwargs["port"]["tags"].append("x")

    await buses().serve("fan", mutating, fanout=True)
    await buses().serve("fan", mutating, fanout=True)
    port = {"name": "p", "tags": [], "pair": (1, 2)}
    await buses().fanout("fan", "port_update", port=port)
    await settle()
    assert port == {"name": "p", "tags": [], "pair": (1, 2)}
    assert len(seen) == 2 and seen[0] is not seen[1]
    assert seen[0]["port"]["tags"] == ["x"]  # not ["x", "x"]: no shared list
    assert seen[0]["port"]["pair"] == [1, 2]  # tuples arrive as JSON lists


async def test_unserialisable_payload_fails_at_the_sender(buses):
    await buses().serve("plugin", Recorder())
    with pytest.raises(TypeError):
        await buses().call("plugin", "x", obj=object())
    with pytest.raises(ValueError):
        await buses().cast("plugin", "x", n=float("nan"))


async def test_closed_bus_stops_receiving_and_sending(buses):
    rec = Recorder()
    server, client = buses(), buses()
    await server.serve("fan", rec, fanout=True)
    await server.close()
    await client.fanout("fan", "x")
    await settle()
    assert rec.got == []
    with pytest.raises(Unreachable):
        await server.call("fan", "x")


async def test_close_cancels_handlers_in_flight(buses):
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def handler(method, kwargs):
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    server = buses()
    await server.serve("agent", handler)
    await buses().cast("agent", "x")
    await asyncio.wait_for(started.wait(), AT_ONCE)
    await server.close()
    assert cancelled.is_set()


async def test_server_on_another_thread_and_loop(url):
    ready = threading.Event()
    stop: list = []

    def run_server():
        async def main():
            bus = MemoryBus(url)

            async def handler(method, kwargs):
                return threading.get_ident()

            await bus.serve("plugin", handler)
            done = asyncio.Event()
            stop.append((asyncio.get_running_loop(), done))
            ready.set()
            await done.wait()
            await bus.close()

        asyncio.run(main())

    th = threading.Thread(target=run_server)
    th.start()
    try:
        assert await asyncio.to_thread(ready.wait, 30)
        client = MemoryBus(url)
        ident = await client.call("plugin", "who", timeout=30)
        assert ident == th.ident != threading.get_ident()
        await client.close()
    finally:
        loop, done = stop[0]
        loop.call_soon_threadsafe(done.set)
        await asyncio.to_thread(th.join, 30)


async def test_leftovers_of_a_finished_loop_are_ignored(url, buses):
    """A bus never closed, on a loop that ended (an earlier test, a stopped thread),
    neither swallows messages nor hands them its stale ones."""

    def earlier_loop():
        async def main():
            stale = MemoryBus(url)
            await stale.serve("plugin", Recorder("stale"))
            await stale.serve("fan", Recorder("stale"), fanout=True)
            await stale.serve("agent.h1", Recorder())
            await MemoryBus(url).close()
            await stale.close()  # the agent goes away...
            await MemoryBus(url).cast("agent.h1", "old_news")  # ...and a cast waits for it
            fresh = MemoryBus(url)  # never closed: its subscriptions outlive the loop
            await fresh.serve("plugin", Recorder("zombie"))
            await fresh.serve("fan", Recorder("zombie"), fanout=True)

        asyncio.run(main())

    await asyncio.to_thread(earlier_loop)
    live, agent = Recorder("live"), Recorder()
    await buses().serve("plugin", live)
    await buses().serve("agent.h1", agent)
    client = buses()
    for _ in range(4):
        assert (await client.call("plugin", "x", timeout=30))["by"] == "live"
    await settle()
    assert agent.got == []


async def test_many_concurrent_calls(buses):
    async def handler(method, kwargs):
        await asyncio.sleep(0.001)
        return kwargs["i"] * 2

    for _ in range(2):
        await buses().serve("plugin", handler)
    client = buses()
    results = await asyncio.wait_for(
        asyncio.gather(*(client.call("plugin", "x", i=i, timeout=60) for i in range(1000))), 120
    )
    assert results == [i * 2 for i in range(1000)]
