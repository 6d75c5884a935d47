"""RabbitMQ transport on aio-pika (``amqp://user:pass@host:port/vhost``).

Layout on the broker:

- Exchange ``lbtap`` (topic, durable) routes calls and casts by topic name to a queue
  of that name. ``serve(topic)`` declares the queue durable, so a cast to one host's
  agent (persistent message) waits for the agent across a consumer restart — and a broker
  restart. Competing servers of a topic share the queue; RabbitMQ round-robins among them.
- Fanout topic ``T``: exchange ``lbtap.fanout.T`` (fanout, durable); each subscriber owns
  an exclusive auto-delete queue bound to it, so it only sees messages while it lives.
- Calls carry ``reply_to`` (this process's exclusive reply queue) and a correlation id;
  they are non-persistent and expire with the call's timeout, so a server that returns
  late never works on requests whose caller already gave up.
- Bodies are JSON (the keyword arguments); the header ``method`` names the method.
  Replies are ``{"result": ...}`` or ``{"error": {"type", "message"}}``.

Failure modes, as callers see them:

- Broker down (never connected, or connection lost and not yet restored): ``call``,
  ``cast`` and ``fanout`` raise ``Unreachable`` at once rather than wait for the broker.
  Calls in flight when the connection drops fail with ``Unreachable`` immediately.
- ``call`` to a topic no server ever declared: the broker returns the message
  (mandatory publish) and the call raises ``Unreachable`` at once. Declared but no live
  server: the request waits in the queue and the call raises ``CallTimeout``.
- ``cast`` to a never-declared topic is dropped and logged (as on the memory bus).
- The connection is robust: aio-pika reconnects every ``reconnect_interval`` seconds and
  restores channels, QoS, exchanges, queues, bindings and consumers. Nothing is replayed:
  a message whose publish failed was reported as ``Unreachable`` to its sender.

Handler semantics match :mod:`lbtap.bus.memory`: each delivery runs as its own task,
a handler exception becomes ``RemoteError`` (calls) or a log line (casts); messages are
acked after the handler finished, and ``prefetch`` bounds the deliveries in progress per
consumer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import uuid
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aio_pika.exceptions import CONNECTION_EXCEPTIONS, PublishError

from lbtap.bus.base import Bus, BusError, CallTimeout, Handler, RemoteError, Unreachable

log = logging.getLogger(__name__)


class _ReconnectNoise(logging.Filter):
    """A broker restart makes aio-pika log an ERROR with a traceback for every channel
    it closes (``RobustChannel._on_close ... RuntimeError``) although the robust
    connection recovers on its own; operators must not read an expected reconnect as a
    failure. Those records become one-line WARNINGs; everything else passes untouched."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        try:
            text = str(record.msg) + repr(record.args)
        except Exception:  # a repr of aio-pika's objects may fail: never break logging
            return True
        if "_on_close" in text:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
        return True


logging.getLogger("aio_pika.tools").addFilter(_ReconnectNoise())

EXCHANGE = "lbtap"
FANOUT_PREFIX = "lbtap.fanout."
CONTENT_TYPE = "application/json"


class _Unroutable(Exception):
    """The broker returned a mandatory message: no queue is bound for its topic."""


class AmqpBus(Bus):
    """RabbitMQ transport; see the module docstring for the broker layout and failures.

    ``prefetch``: unacked deliveries per consumer (bounds concurrent handlers per topic).
    ``publish_timeout``: longest wait for the broker to confirm one publish.
    ``reconnect_interval``: pause between reconnection attempts after a connection loss.
    ``connect_timeout``: longest wait for the first connection in ``start``.
    """

    def __init__(
        self,
        url: str,
        *,
        prefetch: int = 64,
        publish_timeout: float = 10.0,
        reconnect_interval: float = 1.0,
        connect_timeout: float = 5.0,
    ) -> None:
        self.url = url
        self.prefetch = prefetch
        self.publish_timeout = publish_timeout
        self.reconnect_interval = reconnect_interval
        self.connect_timeout = connect_timeout
        self._conn: AbstractRobustConnection | None = None
        self._pub: AbstractChannel | None = None  # requests, casts, fanouts; confirmed
        self._rpc: AbstractChannel | None = None  # call replies, no confirms
        self._sub: AbstractChannel | None = None  # consumes, with QoS
        self._exchange: AbstractExchange | None = None
        self._fanout_exchanges: dict[str, AbstractExchange] = {}
        self._reply_queue: AbstractQueue | None = None
        self._pending: dict[str, asyncio.Future] = {}
        self._tasks: set[asyncio.Task] = set()
        self._start_lock = asyncio.Lock()
        # Set only once channels, queues and consumers are (re)declared: aio-pika's own
        # ``connection.connected`` is set before a reconnect has restored the channels.
        self._usable = asyncio.Event()
        self.disconnects = 0  # connection losses so far (for metrics and tests)
        self._closed = False
        # Shown by `rabbitmqctl list_connections client_properties`: tells operators (and
        # the outage tests) which process holds which connection.
        self.connection_name = f"lbtap:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and declare the shared layout; ``Unreachable`` if the broker is down.

        Safe to call again after a failure: the next call retries the connection.
        """
        if self._closed:
            raise Unreachable("bus closed")
        async with self._start_lock:
            if self._conn is not None:
                return
            try:
                conn = await aio_pika.connect_robust(
                    self.url,
                    timeout=self.connect_timeout,
                    reconnect_interval=self.reconnect_interval,
                    client_properties={"connection_name": self.connection_name},
                )
            except (*CONNECTION_EXCEPTIONS, asyncio.TimeoutError) as exc:
                raise Unreachable(f"cannot connect to {_redact(self.url)}: {exc}") from exc
            try:
                self._pub = await conn.channel(publisher_confirms=True, on_return_raises=True)
                # Replies need no confirms (a lost reply is a caller's timeout anyway);
                # skipping them saves a broker round trip per reply.
                self._rpc = await conn.channel(publisher_confirms=False)
                self._sub = await conn.channel()
                await self._sub.set_qos(prefetch_count=self.prefetch)
                self._exchange = await self._pub.declare_exchange(
                    EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
                )
                # Named by us, not by the broker: a robust queue is re-declared under the
                # same name after a reconnect, and "amq.gen-*" names may not be declared.
                self._reply_queue = await self._sub.declare_queue(
                    f"lbtap.reply.{uuid.uuid4().hex}", exclusive=True, auto_delete=True
                )
                await self._reply_queue.consume(self._on_reply, no_ack=True)
            except BaseException as exc:
                await conn.close()
                if isinstance(exc, CONNECTION_EXCEPTIONS):
                    raise Unreachable(f"broker {_redact(self.url)} failed during setup: {exc}") from exc
                raise
            conn.close_callbacks.add(self._on_connection_lost)
            conn.reconnect_callbacks.add(self._on_reconnected)
            self._conn = conn
            self._usable.set()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._fail_pending(Unreachable("bus closed"))
        if self._conn is not None:
            await self._conn.close()

    def _on_connection_lost(self, _sender: Any, exc: BaseException | None) -> None:
        # Called on every failed reconnection attempt too: count the loss only once.
        was_usable = self._usable.is_set()
        self._usable.clear()
        if was_usable and not self._closed:
            self.disconnects += 1
            log.warning("AMQP connection lost (%s); reconnecting", exc)
        # The exclusive reply queue dies with the connection: no reply can arrive.
        self._fail_pending(Unreachable(f"connection to broker lost: {exc}"))

    def _on_reconnected(self, _sender: Any) -> None:
        self._usable.set()
        log.info("AMQP connection to %s restored", _redact(self.url))

    def _fail_pending(self, exc: BusError) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(exc)

    async def _ready(self) -> None:
        """Start lazily, and refuse to wait on a broker that is not there."""
        if self._closed:
            raise Unreachable("bus closed")
        if self._conn is None:
            await self.start()
        assert self._conn is not None
        if not self._usable.is_set():
            raise Unreachable(f"broker {_redact(self.url)} unreachable (reconnecting)")

    @property
    def connected(self) -> bool:
        """True while the connection to the broker is up and fully restored."""
        return self._usable.is_set() and not self._closed

    # -- sending ---------------------------------------------------------------------

    async def _publish(
        self, exchange: AbstractExchange, message: aio_pika.Message, key: str, *,
        mandatory: bool, timeout: float | None = None,
    ) -> None:
        """Publish and wait for the broker's confirm (where the channel confirms).

        A dead connection raises Unreachable; a confirm slower than ``timeout`` (default
        ``publish_timeout``) raises asyncio.TimeoutError for the caller to classify.
        """
        try:
            await asyncio.wait_for(
                exchange.publish(message, key, mandatory=mandatory),
                self.publish_timeout if timeout is None else timeout,
            )
        except PublishError as exc:
            raise _Unroutable(key) from exc
        except asyncio.TimeoutError:
            raise
        except CONNECTION_EXCEPTIONS as exc:
            raise Unreachable(f"publish failed: {exc}") from exc

    async def _publish_one_way(
        self, exchange: AbstractExchange, message: aio_pika.Message, key: str, *, mandatory: bool
    ) -> None:
        try:
            await self._publish(exchange, message, key, mandatory=mandatory)
        except asyncio.TimeoutError as exc:
            # Connected but not confirming (overloaded, or a memory/disk alarm blocking
            # publishers): to a sender of a one-way message that is "not delivered".
            raise Unreachable(f"broker did not confirm within {self.publish_timeout}s") from exc

    async def call(self, topic: str, method: str, *, timeout: float = 10.0, **kwargs: Any) -> Any:
        """Ask one server of ``topic``; raises CallTimeout, Unreachable or RemoteError."""
        body = _encode(kwargs)
        await self._ready()
        assert self._exchange is not None and self._reply_queue is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        corr = uuid.uuid4().hex
        fut = loop.create_future()
        self._pending[corr] = fut
        try:
            message = aio_pika.Message(
                body,
                headers={"method": method},
                content_type=CONTENT_TYPE,
                correlation_id=corr,
                reply_to=self._reply_queue.name,
                expiration=timeout,
                delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
            )
            try:
                # The confirm shares the call's deadline: a broker that is up but slow
                # is a timeout, not an outage.
                await self._publish(self._exchange, message, topic, mandatory=True, timeout=timeout)
                reply = await asyncio.wait_for(fut, max(0.0, deadline - loop.time()))
            except _Unroutable:
                raise Unreachable(f"no server ever served topic {topic!r}") from None
            except asyncio.TimeoutError:
                raise CallTimeout(f"{method} on {topic!r}: no answer within {timeout}s") from None
        finally:
            self._pending.pop(corr, None)
            if fut.done() and not fut.cancelled():
                fut.exception()  # failed while we were still publishing: mark it seen
        if "error" in reply:
            err = reply["error"]
            raise RemoteError(err.get("type", "Exception"), err.get("message", ""))
        return reply.get("result")

    async def cast(self, topic: str, method: str, **kwargs: Any) -> None:
        """Persistent one-way message to one server of ``topic``; Unreachable if the
        broker is down; dropped (logged) if no server ever declared the topic."""
        body = _encode(kwargs)
        await self._ready()
        assert self._exchange is not None
        message = aio_pika.Message(
            body,
            headers={"method": method},
            content_type=CONTENT_TYPE,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        try:
            await self._publish_one_way(self._exchange, message, topic, mandatory=True)
        except _Unroutable:
            log.debug("cast %s to unserved topic %r dropped", method, topic)

    async def fanout(self, topic: str, method: str, **kwargs: Any) -> None:
        """One-way message to every live subscriber of ``topic``; Unreachable if the
        broker is down."""
        body = _encode(kwargs)
        await self._ready()
        exchange = await self._fanout_exchange(topic)
        message = aio_pika.Message(
            body,
            headers={"method": method},
            content_type=CONTENT_TYPE,
            delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
        )
        # Not mandatory: a fanout with no subscriber is not an error.
        await self._publish_one_way(exchange, message, "", mandatory=False)

    async def _fanout_exchange(self, topic: str) -> AbstractExchange:
        # Publishing to an undeclared exchange would close the channel (404): declare
        # once per topic; the robust channel re-declares it after a reconnect.
        ex = self._fanout_exchanges.get(topic)
        if ex is None:
            assert self._pub is not None
            try:
                ex = await asyncio.wait_for(
                    self._pub.declare_exchange(
                        FANOUT_PREFIX + topic, aio_pika.ExchangeType.FANOUT, durable=True
                    ),
                    self.publish_timeout,
                )
            except (*CONNECTION_EXCEPTIONS, asyncio.TimeoutError) as exc:
                raise Unreachable(f"cannot declare fanout exchange: {exc}") from exc
            self._fanout_exchanges[topic] = ex
        return ex

    def _on_reply(self, message: AbstractIncomingMessage) -> None:
        fut = self._pending.get(message.correlation_id or "")
        if fut is None or fut.done():
            return  # the caller gave up (timeout) or the reply is a duplicate
        try:
            fut.set_result(json.loads(message.body))
        except ValueError as exc:
            fut.set_exception(RemoteError("BadReply", str(exc)))

    # -- receiving -------------------------------------------------------------------

    async def serve(self, topic: str, handler: Handler, *, fanout: bool = False) -> None:
        """Consume ``topic`` as a competing server (durable queue ``topic``) or, with
        ``fanout=True``, as a subscriber with its own exclusive queue."""
        await self._ready()
        assert self._sub is not None
        try:
            if fanout:
                ex = await self._sub.declare_exchange(
                    FANOUT_PREFIX + topic, aio_pika.ExchangeType.FANOUT, durable=True
                )
                queue = await self._sub.declare_queue(
                    f"{FANOUT_PREFIX}{topic}.{uuid.uuid4().hex[:12]}",
                    exclusive=True,
                    auto_delete=True,
                )
                await queue.bind(ex)
            else:
                await self._sub.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
                queue = await self._sub.declare_queue(topic, durable=True)
                await queue.bind(EXCHANGE, routing_key=topic)
            await queue.consume(lambda m: self._on_request(handler, m))
        except CONNECTION_EXCEPTIONS as exc:
            raise Unreachable(f"cannot serve {topic!r}: {exc}") from exc

    async def _on_request(self, handler: Handler, message: AbstractIncomingMessage) -> None:
        # aiormq already runs each delivery in a task; tracking it lets close() cancel.
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await self._handle(handler, message)
        finally:
            if task is not None:
                self._tasks.discard(task)

    async def _handle(self, handler: Handler, message: AbstractIncomingMessage) -> None:
        method = str((message.headers or {}).get("method", ""))
        body: bytes | None = None  # the reply, for calls
        try:
            result = await handler(method, json.loads(message.body))
            if message.reply_to:
                body = json.dumps({"result": result}, allow_nan=False).encode()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the bus boundary reports every failure
            if not message.reply_to:
                log.exception("cast handler for %s failed", method)
            else:
                log.warning("call handler for %s raised %s: %s", method, type(exc).__name__, exc)
                body = json.dumps({"error": {"type": type(exc).__name__, "message": str(exc)}}).encode()
        if body is not None:
            await self._reply(message, body, method)
        try:
            # Acked only now: a server dying mid-message lets the broker redeliver it.
            # A handler that failed is acked too; redelivering it would fail again.
            await message.ack()
        except CONNECTION_EXCEPTIONS as exc:
            # The channel is gone and the broker requeues the message by itself.
            log.warning("could not ack %s: %s", method, exc)

    async def _reply(self, message: AbstractIncomingMessage, body: bytes, method: str) -> None:
        try:
            if not self._usable.is_set():
                # Consumers are restored channel by channel: right after a reconnect a
                # request may arrive before the reply channel is back. Wait for it.
                await asyncio.wait_for(self._usable.wait(), self.publish_timeout)
            assert self._rpc is not None
            response = aio_pika.Message(
                body,
                content_type=CONTENT_TYPE,
                correlation_id=message.correlation_id,
                delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
            )
            # Not mandatory: a caller that went away is not this server's problem.
            await self._publish_one_way(
                self._rpc.default_exchange, response, message.reply_to or "", mandatory=False
            )
        except (Unreachable, asyncio.TimeoutError) as exc:
            # The caller will see CallTimeout or Unreachable and retry.
            log.warning("could not answer %s: %s", method, exc)


def _encode(kwargs: dict[str, Any]) -> bytes:
    return json.dumps(kwargs, allow_nan=False).encode()


def _redact(url: str) -> str:
    """The URL without its password, for logs and errors."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
