"""Server → agent notifications: the data layer's Notifier, carried on the bus.

Services call the notifier after their transaction commits, from FastAPI's worker
threads; the casts themselves are coroutines on the event loop, so every call is
handed to the loop thread-safely and never blocks the request.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from lbtap.rpc.proxies import AgentNotifier

log = logging.getLogger(__name__)


class BusNotifier:
    """Implements the server's Notifier protocol by casting to agents."""

    def __init__(self, bus, loop: asyncio.AbstractEventLoop):
        self._agents = AgentNotifier(bus)
        self._loop = loop

    def _submit(self, coro_fn, *args: Any, **kwargs: Any) -> None:
        async def run() -> None:
            try:
                await coro_fn(*args, **kwargs)
            except Exception as e:  # a lost cast is repaired by the agents' reconcile
                log.warning("notification %s failed: %s", coro_fn.__name__, e)

        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._loop.create_task(run())
        else:
            self._loop.call_soon_threadsafe(lambda: self._loop.create_task(run()))

    # ports
    def port_created(self, port: dict) -> None:
        # Agents learn about new ports when their device appears; nothing to push.
        pass

    def port_updated(self, port: dict, original: dict | None = None) -> None:
        host = port.get("binding:host_id") or None
        old_host = (original or {}).get("binding:host_id") or None
        self._submit(self._agents.port_update, port, host=host)
        if old_host and old_host != host:
            # The port moved: the old host must unwire it.
            self._submit(self._agents.port_delete, port["id"], host=old_host)

    def port_deleted(self, port: dict) -> None:
        self._submit(self._agents.port_delete, port["id"])

    # networks
    def network_created(self, network: dict) -> None:
        pass

    def network_updated(self, network: dict, original: dict | None = None) -> None:
        self._submit(self._agents.network_update, network)

    def network_deleted(self, network: dict) -> None:
        self._submit(self._agents.network_delete, network["id"])

    # subnets: the L2 agent does not care; DHCP (later) does.
    def subnet_created(self, subnet: dict) -> None:
        pass

    def subnet_updated(self, subnet: dict, original: dict | None = None) -> None:
        pass

    def subnet_deleted(self, subnet: dict) -> None:
        pass
