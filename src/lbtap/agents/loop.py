"""What the DHCP and L3 agents share: one loop, one host worker, heartbeats, stopping.

Each agent subclasses ``NetworkAgentLoop`` and supplies its decisions: ``iterate()``
(one pass of work), ``next_deadline()`` (when a pass is due without a cast),
``agent_state(start)`` (the heartbeat), ``_teardown_all()`` (what a clean stop of
``lbtap up`` removes) and ``_close_host()`` (release host resources, on the worker).
Bus handlers only record intent and ``wake()`` the loop; host work runs on the single
worker thread (``_host``). While running, the agent holds the state dir's agents lock
so ``lbtap cleanup`` cannot pull state from under it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import signal
import time
from typing import Any, Callable

from lbtap.agents.state import AgentsLock
from lbtap.bus.base import Bus, BusError, make_bus
from lbtap.config import Settings
from lbtap.domain.models import AgentState
from lbtap.rpc.proxies import PluginClient

BATCH_DELAY = 0.05  # after a wake-up, let a burst of casts pile up into one pass


class NetworkAgentLoop:
    """The scaffolding of one host's DHCP or L3 agent. ``run()`` until ``stop()``."""

    #: set by subclasses
    topic = ""
    kind = "network"  # for log lines
    log = logging.getLogger("lbtap.agents")

    def __init__(self, settings: Settings, bus: Bus, *, clock: Callable[[], float] = time.monotonic,
                 teardown_on_stop: bool = False):
        self.settings = settings
        self.host = settings.agent.host
        self.bus = bus
        self.clock = clock
        self.teardown_on_stop = teardown_on_stop
        self.lock = AgentsLock(settings.state_dir)
        self.plugin = PluginClient(bus)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"lbtap-{self.kind}")
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._next_resync = 0.0

    # ---- to implement ---------------------------------------------------------------
    async def iterate(self) -> None:
        raise NotImplementedError

    def next_deadline(self) -> float:
        """Clock time at which a pass is due even without a cast."""
        return self._next_resync

    def agent_state(self, start: bool = False) -> AgentState:
        raise NotImplementedError

    async def _teardown_all(self) -> None:
        raise NotImplementedError

    def _close_host(self) -> None:
        """On the host worker, once stopped."""

    def _started(self) -> str:
        return f"{self.kind} agent {self.host} started"

    # ---- shared ---------------------------------------------------------------------
    async def _host(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        await self._host(self.lock.acquire)  # waits while ``lbtap cleanup`` runs on this state dir
        try:
            await self._run()
        finally:
            self.lock.release()

    async def _handle_cast(self, method: str, kwargs: dict[str, Any]) -> None:
        raise NotImplementedError

    async def _run(self) -> None:
        await self.bus.serve(self.topic, self._handle_cast, fanout=True)
        heartbeat = asyncio.create_task(self._heartbeat_loop(), name=f"lbtap-{self.kind}-heartbeat")
        self.log.info("%s", self._started())
        try:
            while not self._stopping.is_set():
                self._wake.clear()
                await self.iterate()
                timeout = max(0.0, self.next_deadline() - self.clock())
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=timeout)
                except asyncio.TimeoutError:
                    pass
                if not self._stopping.is_set():
                    await asyncio.sleep(BATCH_DELAY)
        finally:
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
            if self.teardown_on_stop:
                await self._teardown_all()
            await self._host(self._close_host)
            self._pool.shutdown(wait=True)

    async def _heartbeat_loop(self) -> None:
        start = True
        while True:
            try:
                await self.plugin.report_state(self.agent_state(start), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
                start = False
            except BusError as e:
                self.log.warning("%s agent heartbeat not delivered: %s", self.kind, e)
            await asyncio.sleep(self.settings.agent.report_interval)


async def run_standalone(settings: Settings, factory: Callable[[Settings, Bus], NetworkAgentLoop]) -> None:
    """``lbtap dhcp-agent`` / ``l3-agent``: one agent alone, talking to a server over the bus."""
    if settings.agent.netns:
        from lbtap.drivers.host import netns

        netns.create(settings.agent.netns)
    bus = make_bus(settings.bus.transport_url)
    await bus.start()
    agent = factory(settings, bus)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, agent.stop)
    try:
        await agent.run()
    finally:
        await bus.close()
