"""Server → agent notifications: the data layer's Notifier, carried on the bus.

Services call the notifier after their transaction commits, from FastAPI's worker
threads; the casts themselves are coroutines on the event loop, so every call is
handed to the loop thread-safely and never blocks the request.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from lbtap.rpc.proxies import AgentNotifier
from lbtap.server.outbox import Outbox
from lbtap.server.metrics import count_notification

log = logging.getLogger(__name__)


class BusNotifier:
    """Implements the server's Notifier protocol by casting to agents.

    A port bound to a host, when created or changed, is pushed to that host's agent as
    ready-made device details (``devices_details``): the tap that appears next needs no
    details round trip, and a change reaches the agent with its data. Pushes are
    coalesced per host for ``PUSH_COALESCE_SECONDS`` (a bulk create of 1000 ports is
    one message per host), read and sent in order by one task, so a later push never
    overtakes an earlier one. Without a details source (``details_source`` unset) or
    when the read fails, the agent gets the plain ``port_update`` and asks itself.
    """

    PUSH_COALESCE_SECONDS = 0.005

    def __init__(self, bus, loop: asyncio.AbstractEventLoop, details_source: Any = None):
        self._agents = AgentNotifier(bus)
        self._outbox = Outbox(loop, "notification")
        # RpcHandlers (``pushable_details(port_ids, host)``); set once the server built it.
        self.details_source = details_source
        self._push_lock = threading.Lock()
        self._push_pending: dict[str, dict[str, tuple[str, dict]]] = {}  # host -> port id -> (op, port)
        self._push_scheduled = False
        self._push_order: asyncio.Lock | None = None

    def _submit(self, coro_fn, *args: Any, **kwargs: Any) -> None:
        async def run() -> None:
            try:
                await coro_fn(*args, **kwargs)
                count_notification(coro_fn.__name__)
            except Exception as e:  # a lost cast is repaired by the agents' reconcile
                log.warning("notification %s failed: %s", coro_fn.__name__, e)

        self._outbox.submit(run)

    def idle(self) -> bool:
        """True when everything handed over so far has been sent."""
        return self._outbox.idle()

    async def drain(self, timeout: float = 5.0) -> bool:
        """Wait until every notification handed over so far has been sent (pushes
        included, once their coalescing window closed); False on timeout."""
        return await self._outbox.drain(timeout)

    # ports
    def port_created(self, port: dict) -> None:
        host = port.get("binding:host_id") or None
        if host and self.details_source is not None:
            self._push(host, port, "details")

    def port_updated(self, port: dict, original: dict | None = None) -> None:
        host = port.get("binding:host_id") or None
        old_host = (original or {}).get("binding:host_id") or None
        pushing = self.details_source is not None
        if host and pushing:
            self._push(host, port, "details")
        else:
            self._submit(self._agents.port_update, port, host=host)
        if old_host and old_host != host:
            # The port moved: the old host must unwire it (in order with its pushes).
            if pushing:
                self._push(old_host, port, "delete")
            else:
                self._submit(self._agents.port_delete, port["id"], host=old_host)

    def port_deleted(self, port: dict) -> None:
        host = port.get("binding:host_id") or None
        if host and self.details_source is not None:
            self._push(host, port, "delete")  # the host's queue, after any push of it
        else:
            self._submit(self._agents.port_delete, port["id"])

    def _push(self, host: str, port: dict, op: str) -> None:
        with self._push_lock:
            # Per port only the last operation counts: details are read when sent.
            self._push_pending.setdefault(host, {})[port["id"]] = (op, port)
            if self._push_scheduled:
                return
            self._push_scheduled = True
        self._outbox.submit(self._flush_pushes, delay=self.PUSH_COALESCE_SECONDS)

    async def _flush_pushes(self) -> None:
        if self._push_order is None:
            self._push_order = asyncio.Lock()
        async with self._push_order:
            with self._push_lock:
                pending, self._push_pending, self._push_scheduled = self._push_pending, {}, False
            loop = asyncio.get_running_loop()
            for host, ops in pending.items():
                ports = {pid: port for pid, (op, port) in ops.items() if op == "details"}
                deleted = sorted(pid for pid, (op, _) in ops.items() if op == "delete")
                details: list[dict] = []
                if ports:
                    try:
                        details = await loop.run_in_executor(
                            None, self.details_source.pushable_details, sorted(ports), host)
                    except Exception as e:  # the agent will ask: fall back to the plain cast
                        log.warning("details push to %s failed, sending port_update: %s", host, e)
                pushed = {d["port_id"] for d in details}
                try:
                    if details:
                        await self._agents.devices_details(details, host)
                        count_notification("devices_details")
                    for pid in sorted(set(ports) - pushed):
                        await self._agents.port_update(ports[pid], host=host)
                        count_notification("port_update")
                    for pid in deleted:
                        await self._agents.port_delete(pid, host=host)
                        count_notification("port_delete")
                except Exception as e:  # a lost cast is repaired by the agents' reconcile
                    log.warning("notification to %s failed: %s", host, e)

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
