"""The bus as the L2 agent and its extensions see it (``AgentBus``)."""

from __future__ import annotations

from typing import Any

from lbtap.bus.base import Bus


class AgentBus:
    """The bus as the agent and its extensions see it.

    Everything is the transport's, except ``disconnects``: it also counts the server's
    "revived" verdicts. Both mean the same to a consumer of casts — some may have been
    lost (with the exclusive fanout queue, or while the server dropped what it could not
    send, or while it thought this agent was gone) — so the agent and every extension
    that resyncs after a reconnect (security groups, QoS policies, l2population FDB
    entries) resync after a revival too, through the one path they already have.
    """

    def __init__(self, transport: Bus) -> None:
        self.transport = transport
        self.revivals = 0

    @property
    def disconnects(self) -> int:
        return getattr(self.transport, "disconnects", 0) + self.revivals

    @property
    def connected(self) -> bool:
        return getattr(self.transport, "connected", True)

    def __getattr__(self, name: str) -> Any:
        if name == "transport":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.transport, name)
