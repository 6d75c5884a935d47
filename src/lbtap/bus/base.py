"""The bus interface: RPC calls, casts to one host, and fanout casts to all agents.

Payloads are JSON-serialisable keyword arguments. A handler receives the method name
and the keyword arguments; for calls its return value (JSON-serialisable) goes back to
the caller. Handlers must only queue intent and return quickly: the owner's main loop
does the work.
"""

from __future__ import annotations

import abc
from typing import Any, Awaitable, Callable

Handler = Callable[[str, dict[str, Any]], Awaitable[Any]]


class BusError(Exception):
    """Base of bus failures."""


class RemoteError(BusError):
    """The remote handler raised; ``exc_type`` is its exception class name."""

    def __init__(self, exc_type: str, message: str):
        super().__init__(f"{exc_type}: {message}")
        self.exc_type = exc_type
        self.message = message


class CallTimeout(BusError):
    """No answer within the call's timeout (no server, or server too slow)."""


class Unreachable(BusError):
    """The transport is down (broker unreachable); the message was not sent."""


class Bus(abc.ABC):
    """One process's connection to the message bus."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect (idempotent)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop consumers and disconnect (idempotent)."""

    @abc.abstractmethod
    async def call(self, topic: str, method: str, *, timeout: float = 10.0, **kwargs: Any) -> Any:
        """Send a request to one server of ``topic`` and wait for its answer.

        Raises CallTimeout, Unreachable or RemoteError.
        """

    @abc.abstractmethod
    async def cast(self, topic: str, method: str, **kwargs: Any) -> None:
        """Send a one-way message to one consumer of ``topic`` (e.g. one host's agent)."""

    @abc.abstractmethod
    async def fanout(self, topic: str, method: str, **kwargs: Any) -> None:
        """Send a one-way message to every consumer subscribed to ``topic`` with fanout."""

    @abc.abstractmethod
    async def serve(self, topic: str, handler: Handler, *, fanout: bool = False) -> None:
        """Consume ``topic``: as one of its competing servers (calls and casts), or,
        with ``fanout=True``, as one of its broadcast subscribers."""


def make_bus(transport_url: str) -> Bus:
    """Build the bus for a transport URL: ``memory://`` or ``amqp://user:pass@host:port/vhost``."""
    if transport_url.startswith("memory://"):
        from lbtap.bus.memory import MemoryBus

        return MemoryBus(transport_url)
    if transport_url.startswith(("amqp://", "amqps://")):
        from lbtap.bus.amqp import AmqpBus

        return AmqpBus(transport_url)
    raise ValueError(f"unsupported transport_url {transport_url!r}: use memory:// or amqp://")
