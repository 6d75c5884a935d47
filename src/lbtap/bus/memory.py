"""In-process bus: a server and agents living in one process talk through it.

Every ``MemoryBus`` built with the same URL in one process shares one broker
(``memory://`` is the all-in-one default; tests use ``memory://<unique>`` to stay
isolated). Semantics deliberately mirror :class:`lbtap.bus.amqp.AmqpBus`, so code tested
on this bus behaves the same over RabbitMQ:

- A non-fanout ``serve(topic)`` declares a *queue* for ``topic`` that outlives its
  consumers (like the durable RabbitMQ queue). Calls and casts go to one of its current
  servers, round-robin. While a declared queue has no server, messages wait in its
  backlog; a waiting call still expires with its timeout (``CallTimeout``).
- A call or cast to a topic nobody ever served has nowhere to go: the call raises
  ``Unreachable`` at once (no server exists to answer), the cast is dropped and logged.
  Callers treat ``Unreachable`` and ``CallTimeout`` alike: "server unreachable, retry".
- ``fanout`` reaches every current fanout subscriber of the topic; nothing is kept for
  subscribers that come later.
- Payloads make a JSON round trip (encoded once by the sender, decoded per delivery), so
  no receiver shares mutable objects with the sender or with another receiver, and
  non-serialisable payloads fail at the sender with ``TypeError`` (``ValueError`` for
  NaN/inf) as they would on AMQP.
- Each delivery runs as its own task on the subscriber's event loop, so a slow handler
  delays nobody else. A handler exception becomes ``RemoteError`` for a call and a log
  line for a cast.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from lbtap.bus.base import Bus, CallTimeout, Handler, RemoteError, Unreachable

log = logging.getLogger(__name__)

# Messages kept for a declared topic whose servers are all gone; beyond this the oldest
# are dropped (a RabbitMQ queue would keep growing; in one process memory is the limit).
BACKLOG_LIMIT = 10_000


@dataclass
class _Envelope:
    method: str
    body: str  # JSON text of the keyword arguments
    origin: asyncio.AbstractEventLoop  # the sender's loop
    reply: asyncio.Future | None = None  # set for calls; lives on the caller's loop

    @property
    def expired(self) -> bool:
        # A call whose caller gave up (timeout, cancel) is dropped, like a TTL'd message.
        # So is anything parked by a loop that has since closed: one process running
        # several loops in turn (pytest) must not leak messages from one to the next.
        return (self.reply is not None and self.reply.done()) or self.origin.is_closed()


@dataclass(eq=False)
class _Subscription:
    bus: "MemoryBus"
    handler: Handler
    loop: asyncio.AbstractEventLoop


@dataclass
class _Queue:
    consumers: list[_Subscription] = field(default_factory=list)
    backlog: collections.deque = field(default_factory=lambda: collections.deque(maxlen=BACKLOG_LIMIT))
    rr: itertools.count = field(default_factory=itertools.count)

    def pick(self) -> _Subscription:
        return self.consumers[next(self.rr) % len(self.consumers)]


class _Broker:
    """State shared by all buses of one URL. A lock guards it because buses on
    different threads (each with its own loop) may share a broker."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.queues: dict[str, _Queue] = {}
        self.fanouts: dict[str, list[_Subscription]] = {}


_brokers: dict[str, _Broker] = {}
_brokers_lock = threading.Lock()


def _broker_for(url: str) -> _Broker:
    with _brokers_lock:
        return _brokers.setdefault(url, _Broker())


def reset_brokers(url: str | None = None) -> None:
    """Forget the broker of ``url`` (all brokers if None): queues, backlogs, subscribers.

    For tests that reuse a URL; live buses keep working but are no longer reachable.
    """
    with _brokers_lock:
        if url is None:
            _brokers.clear()
        else:
            _brokers.pop(url, None)


def _encode(kwargs: dict[str, Any]) -> str:
    # allow_nan=False: NaN is not JSON and RabbitMQ peers in other languages would choke.
    return json.dumps(kwargs, allow_nan=False)


class MemoryBus(Bus):
    """The in-process transport (``memory://`` URLs); see the module docstring."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._broker = _broker_for(url)
        self._subs: list[tuple[str, bool, _Subscription]] = []
        self._tasks: set[asyncio.Task] = set()
        self._started = False
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        if self._closed:
            raise Unreachable("bus closed")
        self._started = True

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._broker.lock:
            for topic, fanout, sub in self._subs:
                if fanout:
                    subs = self._broker.fanouts.get(topic, [])
                    if sub in subs:
                        subs.remove(sub)
                else:
                    q = self._broker.queues.get(topic)
                    if q is not None and sub in q.consumers:
                        q.consumers.remove(sub)
        self._subs.clear()
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _check_open(self) -> None:
        if self._closed:
            raise Unreachable("bus closed")

    # -- sending ---------------------------------------------------------------------

    async def call(self, topic: str, method: str, *, timeout: float = 10.0, **kwargs: Any) -> Any:
        """Ask one server of ``topic``; see the module docstring for the failure modes."""
        self._check_open()
        body = _encode(kwargs)
        loop = asyncio.get_running_loop()
        env = _Envelope(method, body, loop, reply=loop.create_future())
        with self._broker.lock:
            q = self._broker.queues.get(topic)
            if q is None:
                raise Unreachable(f"no server ever served topic {topic!r}")
            target = self._route(q, env)
        if target is not None:
            target.bus._deliver(target, env)
        # Not asyncio.wait_for: on Python 3.11 it swallows a cancellation that arrives
        # as the reply does, and a cancelled heartbeat loop would then never end.
        try:
            done, _ = await asyncio.wait({env.reply}, timeout=timeout)
        finally:
            if not env.reply.done():
                env.reply.cancel()  # the caller gave up: the message is expired
        if not done:
            raise CallTimeout(f"{method} on {topic!r}: no answer within {timeout}s")
        reply = env.reply.result()
        if "error" in reply:
            err = reply["error"]
            raise RemoteError(err["type"], err["message"])
        return reply["result"]

    async def cast(self, topic: str, method: str, **kwargs: Any) -> None:
        """Send to one server of ``topic``; dropped (logged) if the topic was never served."""
        self._check_open()
        env = _Envelope(method, _encode(kwargs), asyncio.get_running_loop())
        with self._broker.lock:
            q = self._broker.queues.get(topic)
            if q is None:
                log.debug("cast %s to unserved topic %r dropped", method, topic)
                return
            target = self._route(q, env)
        if target is not None:
            target.bus._deliver(target, env)

    async def fanout(self, topic: str, method: str, **kwargs: Any) -> None:
        """Send to every current fanout subscriber of ``topic``."""
        self._check_open()
        env = _Envelope(method, _encode(kwargs), asyncio.get_running_loop())
        with self._broker.lock:
            subs = [s for s in self._broker.fanouts.get(topic, ()) if not s.loop.is_closed()]
            self._broker.fanouts[topic] = subs
        for sub in subs:
            sub.bus._deliver(sub, env)

    @staticmethod
    def _route(q: _Queue, env: _Envelope) -> _Subscription | None:
        """Pick a consumer or park the message; caller holds the broker lock."""
        # A bus never closed whose loop has ended can serve nobody any more.
        q.consumers = [c for c in q.consumers if not c.loop.is_closed()]
        if q.consumers:
            return q.pick()
        if len(q.backlog) == q.backlog.maxlen:
            log.warning("memory bus backlog full: dropping the oldest message")
        q.backlog.append(env)
        return None

    # -- receiving -------------------------------------------------------------------

    async def serve(self, topic: str, handler: Handler, *, fanout: bool = False) -> None:
        """Consume ``topic`` as a competing server, or as a fanout subscriber."""
        self._check_open()
        self._started = True
        sub = _Subscription(self, handler, asyncio.get_running_loop())
        backlog: list[_Envelope] = []
        with self._broker.lock:
            if fanout:
                self._broker.fanouts.setdefault(topic, []).append(sub)
            else:
                q = self._broker.queues.setdefault(topic, _Queue())
                q.consumers.append(sub)
                # The newcomer drains what waited while nobody served the topic.
                backlog = list(q.backlog)
                q.backlog.clear()
            self._subs.append((topic, fanout, sub))
        for env in backlog:
            if not env.expired:
                self._deliver(sub, env)

    def _deliver(self, sub: _Subscription, env: _Envelope) -> None:
        """Run the handler for one message on the subscriber's loop (any thread)."""
        if sub.loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is sub.loop:
            self._spawn(sub, env)
        else:
            sub.loop.call_soon_threadsafe(self._spawn, sub, env)

    def _spawn(self, sub: _Subscription, env: _Envelope) -> None:
        if self._closed or env.expired:
            return
        task = sub.loop.create_task(self._handle(sub, env))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, sub: _Subscription, env: _Envelope) -> None:
        kwargs = json.loads(env.body)
        try:
            result = await sub.handler(env.method, kwargs)
            reply: dict[str, Any] = {"result": result}
            body = json.dumps(reply, allow_nan=False) if env.reply is not None else None
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the bus boundary reports every failure
            if env.reply is None:
                log.exception("cast handler for %s failed", env.method)
                return
            log.warning("call handler for %s raised %s: %s", env.method, type(exc).__name__, exc)
            body = json.dumps({"error": {"type": type(exc).__name__, "message": str(exc)}})
        if env.reply is None:
            return
        _resolve(env.reply, json.loads(body))


def _resolve(fut: asyncio.Future, reply: dict[str, Any]) -> None:
    """Complete a caller's future from whichever thread the server runs on."""
    loop = fut.get_loop()

    def _set() -> None:
        if not fut.done():
            fut.set_result(reply)

    try:
        same = asyncio.get_running_loop() is loop
    except RuntimeError:
        same = False
    if same:
        _set()
    elif not loop.is_closed():
        loop.call_soon_threadsafe(_set)
