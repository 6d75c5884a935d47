"""Typed proxies over the bus for both sides of the agent <-> server contract.

Wire contract (keyword arguments of each message; names follow Neutron):

agent -> server, calls on ``topics.PLUGIN`` (``report_state`` on ``topics.REPORTS``):
  ``get_devices_details_list(devices: list[str], agent_id: str, host: str)``
      -> ``list[dict]``, one ``DeviceDetails.to_wire()`` dict per device
  ``update_device_list(devices_up, devices_down, agent_id, host)``
      -> ``{"devices_up": [...], "devices_down": [...],
            "failed_devices_up": [...], "failed_devices_down": [...]}``
  ``update_device_up(device, agent_id, host)`` / ``update_device_down(...)`` -> dict
  ``report_state(agent_state: dict, time: str | float)`` -> ``"alive"`` or ``"revived"``
      (``agent_state`` is ``dataclasses.asdict(AgentState)``; "revived": the server had
      considered the agent dead, its previous heartbeat older than ``agent_down_time``,
      so the agent resyncs as after a bus reconnect; a new agent is "alive")
  ``get_fdb_entries(host)`` -> ``fdb_entries`` dict (l2population resync; lbtap's own)

server -> agents, one-way:
  fanout on ``topics.AGENT_FANOUT``: ``port_update(port)``, ``port_delete(port_id)``,
  ``network_update(network)``, ``network_delete(network_id)``,
  ``fdb_add(fdb_entries)``, ``fdb_remove(fdb_entries)``;
  cast on ``topics.agent_host_topic(host)``: ``port_update(port)``,
  ``port_delete(port_id)``, ``fdb_add(fdb_entries)`` and ``fdb_remove(fdb_entries)`` for
  one host's agent.

The receiving side uses :class:`Dispatcher` as its bus handler.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as _dt
import inspect
import logging
from typing import Any, Callable, Iterable, Mapping

from lbtap.bus.base import Bus
from lbtap.domain.models import AgentState, DeviceDetails
from lbtap.rpc import topics

log = logging.getLogger(__name__)


class PluginClient:
    """The agent's view of the server: blocking-free calls with a per-client timeout.

    Every method raises the bus errors unchanged: ``CallTimeout`` and ``Unreachable``
    mean "server unreachable, retry later"; ``RemoteError`` means the server failed.
    """

    def __init__(self, bus: Bus, *, timeout: float = 10.0) -> None:
        self.bus = bus
        self.timeout = timeout

    async def get_devices_details_list(
        self, devices: Iterable[str], agent_id: str, host: str
    ) -> list[DeviceDetails]:
        """Details for each device, in the server's order (unknown ports carry only
        ``device``; ports bound elsewhere have ``bound_elsewhere``)."""
        raw = await self.bus.call(
            topics.PLUGIN,
            topics.GET_DEVICES_DETAILS_LIST,
            timeout=self.timeout,
            devices=list(devices),
            agent_id=agent_id,
            host=host,
        )
        return [DeviceDetails.from_wire(d) for d in raw or []]

    async def update_device_list(
        self, devices_up: Iterable[str], devices_down: Iterable[str], agent_id: str, host: str
    ) -> dict[str, list[str]]:
        """Batched status report; the result names the devices that failed either way."""
        result = await self.bus.call(
            topics.PLUGIN,
            topics.UPDATE_DEVICE_LIST,
            timeout=self.timeout,
            devices_up=list(devices_up),
            devices_down=list(devices_down),
            agent_id=agent_id,
            host=host,
        )
        return dict(result or {})

    async def update_device_up(self, device: str, agent_id: str, host: str) -> Any:
        """Neutron's single-device report (kept for compatibility; prefer the batch)."""
        return await self.bus.call(
            topics.PLUGIN, topics.UPDATE_DEVICE_UP, timeout=self.timeout,
            device=device, agent_id=agent_id, host=host,
        )

    async def update_device_down(self, device: str, agent_id: str, host: str) -> Any:
        """Neutron's single-device report (kept for compatibility; prefer the batch)."""
        return await self.bus.call(
            topics.PLUGIN, topics.UPDATE_DEVICE_DOWN, timeout=self.timeout,
            device=device, agent_id=agent_id, host=host,
        )

    async def get_fdb_entries(self, host: str, network_ids: list[str] | None = None, *,
                              timeout: float | None = None) -> dict[str, Any]:
        """l2population: every remote forwarding entry of the VXLAN networks ``host``
        has ports on (of ``network_ids`` only, when given: a host joining networks), in
        the ``fdb_entries`` shape (its own VTEP left out)."""
        extra = {} if network_ids is None else {"network_ids": list(network_ids)}
        return dict(await self.bus.call(
            topics.PLUGIN, topics.GET_FDB_ENTRIES, timeout=self.timeout if timeout is None else timeout,
            host=host, **extra,
        ) or {})

    async def report_state(self, state: AgentState, time: float | str | _dt.datetime) -> str:
        """Heartbeat on ``topics.REPORTS``; returns the server's verdict ("alive", or
        "revived" when it had considered the agent dead: casts may have been missed).
        ``time`` is the agent's clock (datetimes travel as ISO 8601)."""
        if isinstance(time, _dt.datetime):
            time = time.isoformat()
        return await self.bus.call(
            topics.REPORTS,
            topics.REPORT_STATE,
            timeout=self.timeout,
            agent_state=dataclasses.asdict(state),
            time=time,
        )


class AgentNotifier:
    """The server's voice towards agents: one-way fanouts, or a cast to one host.

    Bus errors propagate (``Unreachable`` when the broker is down); a notification is a
    hint, agents also reconcile periodically, so callers may log and carry on.
    """

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def port_update(self, port: dict[str, Any], host: str | None = None) -> None:
        """Tell every agent, or only ``host``'s agent, that ``port`` changed."""
        if host is None:
            await self.bus.fanout(topics.AGENT_FANOUT, topics.PORT_UPDATE, port=port)
        else:
            await self.bus.cast(topics.agent_host_topic(host), topics.PORT_UPDATE, port=port)

    async def devices_details(self, details: list[dict[str, Any]], host: str) -> None:
        """Push the details of ports bound to ``host`` (wire dicts), unasked."""
        await self.bus.cast(topics.agent_host_topic(host), topics.DEVICES_DETAILS, details=details)

    async def port_delete(self, port_id: str, host: str | None = None) -> None:
        """Tell every agent, or only ``host``'s agent (a port moved away), to unwire it."""
        if host is None:
            await self.bus.fanout(topics.AGENT_FANOUT, topics.PORT_DELETE, port_id=port_id)
        else:
            await self.bus.cast(topics.agent_host_topic(host), topics.PORT_DELETE, port_id=port_id)

    async def network_update(self, network: dict[str, Any]) -> None:
        await self.bus.fanout(topics.AGENT_FANOUT, topics.NETWORK_UPDATE, network=network)

    async def network_delete(self, network_id: str) -> None:
        await self.bus.fanout(topics.AGENT_FANOUT, topics.NETWORK_DELETE, network_id=network_id)

    async def fdb_add(self, entries: Mapping[str, Any], host: str | None = None) -> None:
        """l2population: forwarding entries to add (Neutron's ``fdb_entries`` shape), to
        every agent or only to ``host``'s (the full set for its first port on a network)."""
        await self._fdb(topics.FDB_ADD, entries, host)

    async def fdb_remove(self, entries: Mapping[str, Any], host: str | None = None) -> None:
        """l2population: forwarding entries to remove, to every agent or only ``host``'s."""
        await self._fdb(topics.FDB_REMOVE, entries, host)

    async def _fdb(self, method: str, entries: Mapping[str, Any], host: str | None) -> None:
        if host is None:
            await self.bus.fanout(topics.AGENT_FANOUT, method, fdb_entries=dict(entries))
        else:
            await self.bus.cast(topics.agent_host_topic(host), method, fdb_entries=dict(entries))


class UnknownMethod(Exception):
    """No handler is registered for the method (a caller sees RemoteError("UnknownMethod"))."""


class Dispatcher:
    """A bus handler routing each message to the callable registered for its method.

    The keyword arguments of the message become the callable's keyword arguments.
    Coroutine functions are awaited on the loop. Plain functions run in a worker thread
    (``asyncio.to_thread``) when ``threaded`` (the default, for handlers that do DB
    work); pass ``threaded=False`` for handlers that only queue intent into loop-owned
    state, which must not be touched from another thread.

    ``on_message(method)`` is called for every message received, known or not, before
    the handler runs (the server counts messages per method with it).

    Usage: ``await bus.serve(topics.PLUGIN, Dispatcher({...}, on_message=metric))``.
    """

    def __init__(
        self,
        handlers: Mapping[str, Callable[..., Any]] | None = None,
        *,
        on_message: Callable[[str], None] | None = None,
        threaded: bool = True,
    ) -> None:
        self._handlers: dict[str, tuple[Callable[..., Any], bool]] = {}
        self._on_message = on_message
        self._threaded = threaded
        for method, fn in (handlers or {}).items():
            self.register(method, fn)

    def register(self, method: str, fn: Callable[..., Any], *, threaded: bool | None = None) -> None:
        """Route ``method`` to ``fn``; ``threaded`` overrides the dispatcher's default
        for a plain function."""
        self._handlers[method] = (fn, self._threaded if threaded is None else threaded)

    @property
    def methods(self) -> list[str]:
        return sorted(self._handlers)

    async def __call__(self, method: str, kwargs: dict[str, Any]) -> Any:
        if self._on_message is not None:
            try:
                self._on_message(method)
            except Exception:  # noqa: BLE001 - metrics must never break message handling
                log.exception("on_message hook failed for %s", method)
        entry = self._handlers.get(method)
        if entry is None:
            raise UnknownMethod(f"no handler for method {method!r}")
        fn, threaded = entry
        if inspect.iscoroutinefunction(fn):
            return await fn(**kwargs)
        if threaded:
            return await asyncio.to_thread(fn, **kwargs)
        result = fn(**kwargs)
        # A plain function may still hand back an awaitable (e.g. a functools.partial
        # over a coroutine function).
        if inspect.isawaitable(result):
            return await result
        return result
