"""AmqpBus against the real RabbitMQ of this machine (skips when it is not running).

Every test uses its own uuid topics and deletes its queues and exchanges afterwards.
Most broker outages are simulated for *this test's* connections only: a TCP relay that
is cut, or RabbitMQ closing one connection (`rabbitmqctl close_connection`). The
broker-restart tests at the end restart the machine's broker itself (`rabbitmqctl
stop_app`/`start_app`, serialised by a file lock, always started again): they disturb
any other client of that broker while they run.
"""

from __future__ import annotations

import asyncio
import logging
import contextlib
import fcntl
import os
import shutil
import statistics
import subprocess
import time
import uuid
from collections import Counter
from urllib.parse import urlparse

import aio_pika
import pytest

from lbtap.bus.amqp import FANOUT_PREFIX, AmqpBus
from lbtap.bus.base import BusError, CallTimeout, RemoteError, Unreachable, make_bus
from tests.support import service_url


@pytest.fixture
def amqp_url():
    return service_url("LBTAP_TEST_AMQP_URL")


@pytest.fixture
async def env(amqp_url):
    """Makes buses and topic names; cleans both up."""

    class Env:
        def __init__(self) -> None:
            self.buses: list[AmqpBus] = []
            self.topics: list[str] = []

        async def bus(self, **kw) -> AmqpBus:
            b = AmqpBus(amqp_url, **kw)
            await b.start()
            self.buses.append(b)
            return b

        def topic(self) -> str:
            t = f"test-{uuid.uuid4().hex}"
            self.topics.append(t)
            return t

    e = Env()
    yield e
    for b in e.buses:
        await b.close()
    conn = await aio_pika.connect(amqp_url)
    ch = await conn.channel()
    for t in e.topics:
        await ch.queue_delete(t)
        await ch.exchange_delete(FANOUT_PREFIX + t)
    await conn.close()


class Recorder:
    def __init__(self, name: str = "") -> None:
        self.name = name
        self.got: list[tuple[str, dict]] = []

    async def __call__(self, method, kwargs):
        self.got.append((method, kwargs))
        if method == "fail":
            raise KeyError("no such port")
        return {"by": self.name, "kwargs": kwargs}


# What must happen at once is given this long: far below the calls' own timeouts (so it
# still tells "failed at once" from "waited out its timeout"), far above what a loaded
# machine adds. Waits for what must happen end as soon as it has.
PATIENCE = 30.0
LONG = 3600.0  # a call timeout the test must never wait out


async def eventually(predicate, timeout: float = PATIENCE) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def close_connection_on_broker(connection_name: str) -> None:
    """Make RabbitMQ drop exactly the connection with this client-provided name."""
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl not available to simulate an outage")
    out = subprocess.run(
        ["rabbitmqctl", "list_connections", "-q", "pid", "client_properties"],
        capture_output=True, text=True, check=True,
    ).stdout
    pids = [line.split()[0] for line in out.splitlines() if connection_name in line]
    assert len(pids) == 1, f"connection {connection_name} not found on the broker"
    subprocess.run(["rabbitmqctl", "close_connection", pids[0], "lbtap test outage"],
                   capture_output=True, check=True)


async def test_make_bus_builds_amqp_bus(amqp_url):
    assert isinstance(make_bus(amqp_url), AmqpBus)


async def test_call_reply_between_two_connections(env):
    server, client = await env.bus(), await env.bus()
    t = env.topic()
    await server.serve(t, Recorder("s"))
    assert await client.call(t, "get", devices=["tap1"], n=1) == {
        "by": "s", "kwargs": {"devices": ["tap1"], "n": 1}
    }


async def test_remote_error(env):
    server, client = await env.bus(), await env.bus()
    t = env.topic()
    await server.serve(t, Recorder())
    with pytest.raises(RemoteError) as info:
        await client.call(t, "fail")
    assert info.value.exc_type == "KeyError"
    assert "no such port" in info.value.message
    assert (await client.call(t, "ok"))["kwargs"] == {}  # server still serving


async def test_call_to_never_served_topic_is_unreachable_at_once(env):
    client = await env.bus()
    with pytest.raises(Unreachable):
        await asyncio.wait_for(client.call(env.topic(), "x", timeout=LONG), PATIENCE)


async def test_call_to_topic_without_live_server_times_out(env):
    server, client = await env.bus(), await env.bus()
    t = env.topic()
    await server.serve(t, Recorder())
    await server.close()  # the durable queue stays, nobody consumes it
    t0 = time.monotonic()
    with pytest.raises(CallTimeout, match=r"within 0\.3s"):
        await client.call(t, "x", timeout=0.3)
    # It waited for a server (a slow machine can only make this longer).
    assert time.monotonic() - t0 >= 0.29
    # The request expired with the call: a server coming later never sees it. A cast sent
    # after it comes after it in the queue: once the cast is in, the request would be too.
    late = Recorder()
    await (await env.bus()).serve(t, late)
    await client.cast(t, "marker")
    await eventually(lambda: late.got)
    assert late.got == [("marker", {})]


async def test_cast_goes_to_one_of_competing_servers(env):
    a, b = Recorder("a"), Recorder("b")
    t = env.topic()
    await (await env.bus()).serve(t, a)
    await (await env.bus()).serve(t, b)
    client = await env.bus()
    for i in range(20):
        await client.cast(t, "x", i=i)
    await eventually(lambda: len(a.got) + len(b.got) == 20)
    await asyncio.sleep(0.1)
    assert len(a.got) + len(b.got) == 20  # each message exactly once
    assert a.got and b.got  # RabbitMQ round-robins between consumers
    assert sorted(kw["i"] for _, kw in a.got + b.got) == list(range(20))


async def test_cast_survives_a_consumer_restart(env):
    t = env.topic()
    agent = await env.bus()
    await agent.serve(t, Recorder())
    await agent.close()
    sender = await env.bus()
    for i in range(3):
        await sender.cast(t, "port_update", port={"id": i})
    restarted = Recorder()
    await (await env.bus()).serve(t, restarted)
    await eventually(lambda: len(restarted.got) == 3)
    assert [kw["port"]["id"] for _, kw in restarted.got] == [0, 1, 2]


async def test_fanout_reaches_every_subscriber(env):
    t = env.topic()
    subs = [Recorder(str(i)) for i in range(3)]
    for r in subs:
        await (await env.bus()).serve(t, r, fanout=True)
    competing = Recorder()
    await (await env.bus()).serve(t, competing)
    await (await env.bus()).fanout(t, "network_delete", network_id="n1")
    await eventually(lambda: all(r.got for r in subs))
    await asyncio.sleep(0.1)
    for r in subs:
        assert r.got == [("network_delete", {"network_id": "n1"})]
    assert competing.got == []


async def test_fanout_without_subscribers_is_not_an_error(env):
    await (await env.bus()).fanout(env.topic(), "x")


async def test_slow_handler_does_not_block_other_calls(env):
    release = asyncio.Event()

    async def handler(method, kwargs):
        if method == "slow":
            await release.wait()
        return method

    t = env.topic()
    await (await env.bus()).serve(t, handler)
    client = await env.bus()
    slow = asyncio.create_task(client.call(t, "slow"))
    assert await asyncio.wait_for(client.call(t, "fast", timeout=LONG), PATIENCE) == "fast"
    release.set()
    assert await slow == "slow"


async def test_thousand_concurrent_calls(env):
    async def handler(method, kwargs):
        return kwargs["i"] * 2

    t = env.topic()
    await (await env.bus()).serve(t, handler)
    await (await env.bus()).serve(t, handler)
    client = await env.bus()
    t0 = time.monotonic()
    results = await asyncio.gather(*(client.call(t, "x", i=i, timeout=120) for i in range(1000)))
    elapsed = time.monotonic() - t0
    # A figure only (~1.5 s on an idle 2-CPU machine): speed is not asserted, as the
    # machine's load decides it; bench/ measures it.
    print(f"1000 concurrent amqp calls in {elapsed:.2f}s")
    assert results == [i * 2 for i in range(1000)]


async def test_single_call_latency(env):
    async def handler(method, kwargs):
        return None

    t = env.topic()
    await (await env.bus()).serve(t, handler)
    client = await env.bus()
    for _ in range(20):  # warm up
        await client.call(t, "x")
    samples = []
    for _ in range(300):
        t0 = time.perf_counter()
        await client.call(t, "x")
        samples.append(time.perf_counter() - t0)
    p50 = statistics.median(samples) * 1000
    # A figure only: latency is not asserted, as the machine's load decides it.
    print(f"amqp call round trip p50 {p50:.2f} ms")


async def test_unreachable_broker_fails_promptly():
    bus = AmqpBus("amqp://guest:guest@127.0.0.1:1/", connect_timeout=2)
    with pytest.raises(Unreachable):
        await asyncio.wait_for(bus.call("q-plugin", "x", timeout=LONG), PATIENCE)
    await bus.close()


class BrokerProxy:
    """A TCP relay in front of RabbitMQ that a test can cut: a real outage for the
    buses connected through it, and nobody else's."""

    def __init__(self, amqp_url: str) -> None:
        u = urlparse(amqp_url)
        self.target = (u.hostname or "127.0.0.1", u.port or 5672)
        self._url = u
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        creds = self._url.netloc.rpartition("@")[0]
        return self._url._replace(netloc=f"{creds}@127.0.0.1:{self.port}").geturl()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Refuse new connections and drop the open ones."""
        assert self._server is not None
        self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    async def _relay(self, reader, writer) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src, dst):
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@pytest.fixture
async def proxy(amqp_url):
    p = BrokerProxy(amqp_url)
    await p.start()
    yield p
    await p.cut()


async def test_broker_outage_is_unreachable_at_once_then_recovers(env, proxy):
    t, slow_t, f = env.topic(), env.topic(), env.topic()
    await (await env.bus()).serve(t, Recorder("s"))
    started, release = asyncio.Event(), asyncio.Event()

    async def slow(method, kwargs):
        started.set()
        await release.wait()

    await (await env.bus()).serve(slow_t, slow)
    client = AmqpBus(proxy.url, reconnect_interval=0.3)
    env.buses.append(client)
    fan = Recorder("fan")
    await client.serve(f, fan, fanout=True)
    assert (await client.call(t, "x"))["by"] == "s"
    in_flight = asyncio.create_task(client.call(slow_t, "x", timeout=LONG))
    await asyncio.wait_for(started.wait(), PATIENCE)  # in the server's hands

    await proxy.cut()
    await eventually(lambda: not client.connected)
    # The call in flight fails at once instead of waiting out its timeout.
    with pytest.raises(Unreachable):
        await asyncio.wait_for(in_flight, PATIENCE)
    await asyncio.sleep(1)  # several failed reconnection attempts later...
    # While disconnected: refused at once, nothing waits for the broker to come back.
    with pytest.raises(Unreachable):
        await asyncio.wait_for(client.call(t, "x", timeout=LONG), PATIENCE)
    with pytest.raises(Unreachable):
        await asyncio.wait_for(client.cast(t, "x"), PATIENCE)
    with pytest.raises(Unreachable):
        await asyncio.wait_for(client.fanout(f, "x"), PATIENCE)
    release.set()

    await proxy.start()  # the broker is back, on the same address
    await eventually(lambda: client.connected)
    assert client.disconnects == 1
    assert (await client.call(t, "x"))["by"] == "s"  # reply queue restored
    await (await env.bus()).fanout(f, "after")  # fanout subscription restored
    await eventually(lambda: fan.got == [("after", {})])


async def test_server_outage_delays_calls_and_casts_without_losing_them(env, proxy):
    t = env.topic()
    rec = Recorder("s")
    server = AmqpBus(proxy.url, reconnect_interval=0.3)
    env.buses.append(server)
    await server.serve(t, rec)
    client = await env.bus()
    assert (await client.call(t, "before"))["by"] == "s"

    await proxy.cut()
    await eventually(lambda: not server.connected)
    for i in range(3):
        await client.cast(t, "while_down", i=i)  # wait in the durable queue
    call = asyncio.create_task(client.call(t, "spanning", timeout=60))
    await asyncio.sleep(0.5)
    assert not call.done()

    await proxy.start()
    assert (await call)["by"] == "s"  # answered once the server's consumer is back
    await eventually(lambda: len([m for m, _ in rec.got if m == "while_down"]) == 3)
    assert [kw["i"] for m, kw in rec.got if m == "while_down"] == [0, 1, 2]


async def test_broker_forced_close_is_survived(env):
    """RabbitMQ itself closes the connection (CONNECTION_FORCED), as on a broker restart."""
    t, f = env.topic(), env.topic()
    rec, fan = Recorder("s"), Recorder("f")
    server = await env.bus(reconnect_interval=0.3)
    await server.serve(t, rec)
    await server.serve(f, fan, fanout=True)
    client = await env.bus()
    assert (await client.call(t, "x"))["by"] == "s"

    await asyncio.to_thread(close_connection_on_broker, server.connection_name)
    await eventually(lambda: server.disconnects == 1 and server.connected)
    assert (await client.call(t, "after", timeout=PATIENCE))["by"] == "s"
    await client.fanout(f, "fan_after")
    await eventually(lambda: fan.got == [("fan_after", {})])



# -- a real broker restart ------------------------------------------------------------
#
# ``rabbitmqctl stop_app`` / ``start_app`` does to clients what a broker restart does:
# every connection is closed (CONNECTION_FORCED), new ones are refused meanwhile, and
# exclusive/auto-delete queues and transient messages are gone; durable exchanges,
# queues, bindings and persistent messages remain. It hits every client of the
# machine's broker, so restarts are serialised across processes by a file lock and
# ``start_app`` always runs. The helpers are shared with tests/fullstack.

BROKER_LOCK = "/tmp/lbtap-test-broker-restart.lock"


def rabbitmqctl_or_skip() -> None:
    """Skip (fail with LBTAP_REQUIRE_SERVICES=1) when rabbitmqctl is missing."""
    if shutil.which("rabbitmqctl") is None:
        msg = "rabbitmqctl not available to restart the broker"
        if os.environ.get("LBTAP_REQUIRE_SERVICES") == "1":
            pytest.fail(msg + " (LBTAP_REQUIRE_SERVICES=1)")
        pytest.skip(msg)


def _rabbitmqctl(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=timeout, check=True)


def amqp_accepts(amqp_url: str) -> bool:
    """True when an AMQP connection to ``amqp_url`` (its vhost included) opens.
    Synchronous: call it from a thread when inside an event loop."""

    async def probe() -> bool:
        try:
            conn = await aio_pika.connect(amqp_url, timeout=5)
        except Exception:  # noqa: BLE001 - any failure means "not yet"
            return False
        await conn.close()
        return True

    return asyncio.run(probe())


def stop_broker() -> None:
    """``rabbitmqctl stop_app``: drops every client connection, refuses new ones."""
    _rabbitmqctl("stop_app")


def start_broker(amqp_url: str, timeout: float = 180.0) -> None:
    """``rabbitmqctl start_app`` (retried), then wait until the broker has booted and
    accepts connections to ``amqp_url`` (vhost management works again by then)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            _rabbitmqctl("start_app")
            _rabbitmqctl("await_startup")
            break
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"RabbitMQ did not start again: {exc}") from exc
            time.sleep(2)
    while not amqp_accepts(amqp_url):
        if time.monotonic() > deadline:
            raise AssertionError(f"RabbitMQ started but refuses {amqp_url.rpartition('@')[2]}")
        time.sleep(0.5)


@contextlib.contextmanager
def broker_restart(amqp_url: str):
    """Stop the broker for the with-block, then start it again and wait until it
    accepts ``amqp_url`` — also when the block or the stop itself failed."""
    rabbitmqctl_or_skip()
    with open(BROKER_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one restart at a time on this machine
        try:
            stop_broker()
            yield
        finally:
            start_broker(amqp_url)


@contextlib.asynccontextmanager
async def broker_restart_async(amqp_url: str):
    """``broker_restart`` for async tests: the rabbitmqctl calls run in threads."""
    rabbitmqctl_or_skip()
    cm = broker_restart(amqp_url)
    await asyncio.to_thread(cm.__enter__)
    try:
        yield
    except BaseException as exc:
        if not await asyncio.to_thread(cm.__exit__, type(exc), exc, exc.__traceback__):
            raise
    else:
        await asyncio.to_thread(cm.__exit__, None, None, None)


async def test_broker_restart_fails_calls_in_flight_then_everything_works(env, amqp_url, caplog):
    rabbitmqctl_or_skip()
    t, slow_t, f, parked = env.topic(), env.topic(), env.topic(), env.topic()
    rec, fan = Recorder("s"), Recorder("f")
    started, release = asyncio.Event(), asyncio.Event()

    async def slow(method, kwargs):
        started.set()
        await release.wait()
        return "late"

    server = await env.bus(reconnect_interval=0.3)
    await server.serve(t, rec)
    await server.serve(slow_t, slow)
    await server.serve(f, fan, fanout=True)
    # A host's durable queue whose agent is away: persistent casts wait there.
    away = await env.bus()
    await away.serve(parked, Recorder())
    await away.close()
    client = await env.bus(reconnect_interval=0.3)
    await client.cast(parked, "kept", i=1)
    assert (await client.call(t, "before"))["by"] == "s"
    in_flight = asyncio.create_task(client.call(slow_t, "x", timeout=120))
    await asyncio.wait_for(started.wait(), PATIENCE)

    async with broker_restart_async(amqp_url):
        await eventually(lambda: not client.connected and not server.connected)
        # The call in flight fails with the bus's error instead of waiting 120 s.
        with pytest.raises(Unreachable):
            await asyncio.wait_for(in_flight, PATIENCE)
        # While the broker is down: refused at once, nothing queued for later.
        with pytest.raises(Unreachable):
            await asyncio.wait_for(client.call(t, "down", timeout=LONG), PATIENCE)
        with pytest.raises(Unreachable):
            await asyncio.wait_for(client.cast(t, "down"), PATIENCE)
        with pytest.raises(Unreachable):
            await asyncio.wait_for(client.fanout(f, "down"), PATIENCE)
        release.set()  # its reply has nowhere to go: logged and dropped
        await asyncio.sleep(1.5)  # several refused reconnection attempts

    await eventually(lambda: client.connected and server.connected, timeout=60)
    assert (client.disconnects, server.disconnects) == (1, 1)
    # Reply queue, durable queue's consumer and fanout subscription are all back.
    assert (await client.call(t, "after", timeout=PATIENCE))["by"] == "s"
    assert (await server.call(t, "self", timeout=PATIENCE))["by"] == "s"
    await client.cast(t, "cast_after", i=2)
    await eventually(lambda: ("cast_after", {"i": 2}) in rec.got)
    await client.fanout(f, "fan_after")
    await eventually(lambda: fan.got == [("fan_after", {})])
    # The persistent cast published before the restart survived it.
    back = Recorder()
    await (await env.bus()).serve(parked, back)
    await eventually(lambda: back.got == [("kept", {"i": 1})])
    assert not [m for m, _ in rec.got if m == "down"]
    # aio-pika's per-channel close callbacks of an expected reconnect are one-line
    # warnings, not ERROR tracebacks (the connection loss itself stays an error).
    noise = [r for r in caplog.records if r.name == "aio_pika.tools" and "_on_close" in getattr(r, "message", "")]
    assert noise and all(r.levelno == logging.WARNING and not r.exc_info for r in noise)


async def test_traffic_through_a_broker_restart_never_hangs_or_leaks_errors(env, amqp_url):
    """Calls, casts and fanouts running all through a restart (with requests in the
    server's hands when it happens): each one ends in time, with a result or a
    ``BusError`` - never another exception, a stray CancelledError, or a hang."""
    rabbitmqctl_or_skip()
    t, f = env.topic(), env.topic()
    got: list[str] = []

    async def handler(method, kwargs):
        got.append(method)
        await asyncio.sleep(0.005)  # some requests are always in progress
        return kwargs["i"]

    server = await env.bus(reconnect_interval=0.3)
    await server.serve(t, handler)
    await server.serve(f, handler, fanout=True)
    client = await env.bus(reconnect_interval=0.3)
    outcomes: list[str] = []
    stop = asyncio.Event()

    async def worker(n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            if i % 3:
                op = client.call(t, "c", w=n, i=i, timeout=5)
            elif n % 2:
                op = client.cast(t, "k", w=n, i=i)
            else:
                op = client.fanout(f, "x", w=n, i=i)
            try:
                # Bounded by the call timeout (5 s) + the publish confirm (10 s); a hang
                # is forever, so the bound is generous for a loaded machine.
                result = await asyncio.wait_for(op, 60)
                outcomes.append("ok" if result in (None, i) else f"WRONG {result} for {i}")
            except asyncio.TimeoutError:
                outcomes.append("HANG")
            except asyncio.CancelledError:
                outcomes.append("LEAK CancelledError")  # nobody cancels the workers
            except BusError as exc:
                outcomes.append(type(exc).__name__)
            except Exception as exc:  # noqa: BLE001 - what the test looks for
                outcomes.append(f"LEAK {type(exc).__name__}: {exc}")
            await asyncio.sleep(0.005)

    workers = [asyncio.create_task(worker(n)) for n in range(8)]
    await eventually(lambda: outcomes.count("ok") > 100, timeout=60)
    async with broker_restart_async(amqp_url):
        await eventually(lambda: not client.connected)
        await asyncio.sleep(2)
    await eventually(lambda: client.connected and server.connected, timeout=60)
    n_ok = outcomes.count("ok")
    await eventually(lambda: outcomes.count("ok") > n_ok + 100, timeout=60)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*workers), 120)
    print("outcomes:", dict(Counter(outcomes)))
    bad = [o for o in outcomes if o.startswith(("HANG", "LEAK", "WRONG"))]
    assert not bad, bad[:10]
    assert "Unreachable" in outcomes
