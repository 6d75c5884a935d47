"""The L2 agent process: link events in, AgentCore decides, one worker applies, bus out.

Threads and loops, and why:
* the asyncio loop owns the ``AgentCore`` and the bus; every core call happens here,
  so the core needs no locks;
* one worker thread owns the ``HostDriver`` (netlink sockets are bound to the namespace
  they were opened in, and pyroute2's sync API cannot run inside an event loop); all
  kernel work is serialised through it by ``_host``;
* the driver's event thread only hands ``LinkEvent``s to the loop.

Bus handlers only record intent (``_intents``); the single ``_run_loop`` does the work.
A failure is handled per device by the core; nothing here turns an error into a resync.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import time
import uuid
from collections import deque
from typing import Any, Callable

from lbtap.agent.agent_bus import AgentBus
from lbtap.agent.core.agent import AgentCore
from lbtap.agent.core.executor import apply as apply_ops
from lbtap.agent.extensions import AgentExtension, load_extensions
from lbtap.bus.base import Bus, BusError, make_bus
from lbtap.config import Settings
from lbtap.domain import constants as c
from lbtap.domain.models import AgentState
from lbtap.domain.naming import is_tap, tap_name
from lbtap.drivers.host.base import HostDriver, LinkEvent
from lbtap.rpc import topics
from lbtap.monitoring.process import process_age
from lbtap.rpc.proxies import PluginClient

log = logging.getLogger("lbtap.agent")

#: How often the bus watch looks for a restored connection (counters only, no I/O).
BUS_WATCH_PERIOD = 0.5
#: The server's answer to a heartbeat from an agent it had considered dead.
REVIVED = "revived"


def default_driver_factory(settings: Settings) -> HostDriver:
    from lbtap.drivers.host.netlink import NetlinkHost

    driver: HostDriver = NetlinkHost(netns=settings.agent.netns)
    if settings.agent.inject_faults:
        from lbtap.drivers.host.faults import FaultInjectingHost

        log.warning("FAULT INJECTION ENABLED (testing only): %s", ", ".join(settings.agent.inject_faults))
        driver = FaultInjectingHost(driver, settings.agent.inject_faults)  # type: ignore[assignment]
    return driver


class L2Agent:
    """One host's L2 agent. ``run()`` until ``stop()``."""

    def __init__(
        self,
        settings: Settings,
        bus: Bus,
        *,
        driver_factory: Callable[[Settings], HostDriver] = default_driver_factory,
        clock: Callable[[], float] = time.monotonic,
        extensions: list[AgentExtension] | None = None,
    ):
        self.settings = settings
        self.cfg = settings.agent
        self.bus = AgentBus(bus)
        self.clock = clock
        self.agent_id = f"{self.cfg.host}-{uuid.uuid4().hex[:8]}"
        self.core = AgentCore(self.cfg)
        self.plugin = PluginClient(bus)
        self._driver_factory = driver_factory
        self.extensions: list[AgentExtension] = list(extensions) if extensions is not None else load_extensions(self.cfg.extensions)
        self._ext_casts: dict[str, Callable[[dict[str, Any]], None]] = {}
        for ext in self.extensions:
            ext.bind(self)
            self._ext_casts.update(ext.cast_handlers())
        holders = [ext.holds for ext in self.extensions if hasattr(ext, "holds")]
        if holders:
            self.core.reporter.hold = lambda device: any(h(device) for h in holders)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="lbtap-host")
        self.driver: HostDriver | None = None
        self._stop_watch: Callable[[], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._events: deque[LinkEvent] = deque()
        self._intents: deque[Callable[[float], None]] = deque()
        self._full_scan_due = True
        self._next_reconcile = 0.0
        self._next_refresh = 0.0
        self._bus_disconnects = self.bus.disconnects
        self.resyncs = 0  # re-reads of every device's details after casts may have been lost
        self._start_flag = True
        self.loop_iterations = 0
        self.last_loop_seconds = 0.0
        self.stage_seconds: dict[str, float] = {}
        # Measured from the process's own start (imports included), as an operator sees it.
        self._started = time.monotonic() - process_age()
        self.converged_after: float | None = None  # seconds from process start to first quiet state

    # ---- host worker -------------------------------------------------------------
    async def _host(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, fn, *args)

    def _on_link_event(self, ev: LinkEvent) -> None:
        # Called from the driver's event thread: hand over, never touch the core here.
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._push_event, ev)

    def _push_event(self, ev: LinkEvent) -> None:
        self._events.append(ev)
        self._wake.set()

    # ---- bus handlers: record intent only ----------------------------------------
    async def _handle_cast(self, method: str, kwargs: dict[str, Any]) -> None:
        if method == topics.DEVICES_DETAILS:
            details = list(kwargs.get("details") or ())
            if details:
                self._intents.append(lambda now: self.core.offer_details(details, now))
        elif method == topics.PORT_UPDATE:
            port_id = (kwargs.get("port") or {}).get("id")
            if port_id:
                self._intents.append(lambda now: self.core.port_updated(port_id, now))
        elif method == topics.PORT_DELETE:
            port_id = kwargs.get("port_id")
            if port_id:
                self._intents.append(lambda now: self._port_deleted(port_id, now))
        elif method == topics.NETWORK_DELETE:
            net_id = kwargs.get("network_id")
            if net_id:
                self._intents.append(lambda now: self.core.network_deleted(net_id, now))
        elif method == topics.NETWORK_UPDATE:
            net_id = (kwargs.get("network") or {}).get("id")
            if net_id:
                self._intents.append(lambda now: self.core.network_updated(net_id, now))
        elif method in self._ext_casts:
            self._ext_casts[method](kwargs)
        else:
            log.debug("ignoring cast %s", method)
            return
        self._wake.set()

    def _port_deleted(self, port_id: str, now: float) -> None:
        self.core.port_deleted(port_id, now)
        for ext in self.extensions:
            ext.device_gone(tap_name(port_id))

    def wake(self) -> None:
        """Ask the loop for a pass (for extensions that queued work)."""
        self._wake.set()

    async def on_host(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the host worker thread (the only thread using the driver)."""
        return await self._host(fn, *args)

    # ---- lifecycle -----------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.driver = await self._host(self._driver_factory, self.settings)
        self._stop_watch = await self._host(self.driver.watch_links, self._on_link_event)
        await self.bus.serve(topics.AGENT_FANOUT, self._handle_cast, fanout=True)
        await self.bus.serve(topics.agent_host_topic(self.cfg.host), self._handle_cast)
        for ext in self.extensions:
            await ext.start()
        if self.cfg.test_hooks:
            from lbtap.agent import testhooks

            testhooks.install(self)
        log.info("agent %s managing %s", self.cfg.host, f"netns {self.cfg.netns}" if self.cfg.netns else "the current namespace")

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def close(self) -> None:
        for ext in self.extensions:
            try:
                await ext.stop()
            except Exception:
                log.exception("extension %s failed to stop", ext.name)
        if self._stop_watch is not None:
            await self._host(self._stop_watch)
            self._stop_watch = None
        if self.driver is not None:
            await self._host(self.driver.close)
            self.driver = None
        self._pool.shutdown(wait=True)

    async def run(self) -> None:
        """Start, then loop until stop(); heartbeats run beside the main loop."""
        await self.start()
        heartbeat = asyncio.create_task(self._heartbeat_loop(), name="lbtap-heartbeat")
        watch = asyncio.create_task(self._watch_bus(), name="lbtap-bus-watch")
        try:
            await self._run_loop()
        finally:
            for task in (heartbeat, watch):
                task.cancel()
            await asyncio.gather(heartbeat, watch, return_exceptions=True)
            await self.close()

    # ---- the one loop --------------------------------------------------------------
    async def _run_loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            started = time.perf_counter()
            await self.iterate()
            self.loop_iterations += 1
            if self.converged_after is None and self._converged():
                self.converged_after = time.monotonic() - self._started
                log.info("host converged %.3f s after start (%d devices)", self.converged_after,
                         self.core.snapshot().get("devices", 0))
            self.last_loop_seconds = time.perf_counter() - started
            now = self.clock()
            deadline = min(filter(None, (self.core.next_wakeup(now), self._next_reconcile, self._next_refresh,
                                         *(ext.next_wakeup(now) for ext in self.extensions))))
            # Work that became due while iterating (events, intents) must not wait.
            if self._events or self._intents:
                continue
            timeout = max(0.0, deadline - now)
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)
            except asyncio.TimeoutError:
                pass

    async def iterate(self) -> None:
        """One pass: observe, ask, plan, apply, report. Each step is per device."""
        now = self.clock()
        if now >= self._next_reconcile:
            self._full_scan_due = True
        refresh = self.cfg.details_refresh_interval
        if refresh and now >= self._next_refresh:
            if self._next_refresh:  # not at start: the first full scan asks anyway
                self.core.refresh_details(now)
            self._next_refresh = now + refresh
        self._drain_events(now)
        while self._intents:
            self._intents.popleft()(now)
        self._after_lost_casts(now)
        if self._full_scan_due:
            await self._full_scan(now)

        t0 = time.perf_counter()
        devices = self.core.devices_needing_details(now)
        if devices:
            try:
                details = await self.plugin.get_devices_details_list(devices, self.agent_id, self.cfg.host)
            except BusError as e:
                log.warning("device details unavailable, will retry: %s", e)
                self.core.details_failed(devices, self.clock())
            else:
                self.core.observe_details(details, self.clock())
        for d in self.core.take_fresh_details():  # answers and pushes alike
            for ext in self.extensions:
                ext.port_details(d)

        t1 = time.perf_counter()
        ops = self.core.plan(self.clock())
        if ops:
            result = await self._host(apply_ops, self.driver, ops)
            self.core.applied(result, self.clock())
            if result.touched_addresses:
                await self._observe_addresses()
        for ext in self.extensions:
            try:
                await ext.process(self.clock())
            except Exception:  # an extension bug must not stop wiring and reporting
                log.exception("extension %s failed", ext.name)
        t2 = time.perf_counter()
        sent = await self._send_reports()
        t3 = time.perf_counter()
        if devices or ops or sent:
            self.stage_seconds = {"details": t1 - t0, "apply": t2 - t1, "report": t3 - t2}
            log.debug("pass: %d details %.1f ms, %d ops %.1f ms, %d reports %.1f ms", len(devices),
                      (t1 - t0) * 1e3, len(ops), (t2 - t1) * 1e3, sent, (t3 - t2) * 1e3)

    def _after_lost_casts(self, now: float) -> None:
        """After a reconnect (or a "revived" heartbeat answer), casts may have been lost:
        ``network_update`` / ``network_delete`` fanouts gone with the exclusive queue,
        casts the server dropped during its own broker outage. Re-read every known
        device's details once (one batched request; acknowledged status is never
        re-reported), rather than waiting for ``details_refresh_interval``.

        Runs after the intents (casts queued before the loss are taken first) and only
        once the bus is usable again: asking while it is down would only fail, and an
        answer read before the fanout queue is back could still miss a cast."""
        disconnects = self.bus.disconnects
        if disconnects == self._bus_disconnects or not self.bus.connected:
            return
        self._bus_disconnects = disconnects
        # Pushes waiting for their tap may have missed casts lost meanwhile.
        self.core.forget_pushed()
        n = self.core.refresh_details(now)
        self.resyncs += 1
        log.info("casts may have been lost (bus reconnected or agent revived): re-reading %d devices' details", n)

    async def _watch_bus(self) -> None:
        """Wake the loop once the bus is back after a connection loss: the loop may be
        asleep until its next deadline (counters only, no I/O)."""
        while True:
            await asyncio.sleep(BUS_WATCH_PERIOD)
            if self.bus.disconnects != self._bus_disconnects and self.bus.connected:
                self._wake.set()

    def _drain_events(self, now: float) -> None:
        # Only the last event of each link matters (a "new" queued before a "del" must
        # not resurrect the link), so coalesce per name, keeping the order of last events.
        last: dict[str, LinkEvent] = {}
        while self._events:
            ev = self._events.popleft()
            if ev.kind == "overflow":
                log.warning("link event socket overflowed; full reconcile")
                self._full_scan_due = True
                continue
            name = ev.link.name if ev.link is not None else ev.name
            last.pop(name, None)
            last[name] = ev
        changed = []
        for name, ev in last.items():
            if ev.kind == "del":
                self.core.observe_link_deleted(name, now)
                if is_tap(name):
                    for ext in self.extensions:
                        ext.device_gone(name)
            elif ev.link is not None:
                changed.append(ev.link)
        if changed:
            self.core.observe_links(changed, full=False, now=now)

    async def _full_scan(self, now: float) -> None:
        links = await self._host(self.driver.list_links)
        self.core.observe_links(links, full=True, now=self.clock())
        await self._observe_addresses()
        self._full_scan_due = False
        self._next_reconcile = self.clock() + self.cfg.reconcile_interval

    async def _observe_addresses(self) -> None:
        addresses = await self._host(self.driver.list_addresses)
        routes = await self._host(self.driver.list_routes)
        self.core.observe_addresses(addresses, routes)

    async def _send_reports(self) -> int:
        """Send what the core says is pending; returns how many devices were reported."""
        up, down = self.core.pending_reports()
        if not up and not down:
            return 0
        try:
            result = await self.plugin.update_device_list(up, down, self.agent_id, self.cfg.host)
        except BusError as e:
            log.warning("status report of %d up / %d down not delivered, will resend: %s", len(up), len(down), e)
            result = None
        self.core.reports_sent(up, down, result, self.clock())
        return len(up) + len(down)

    def _converged(self) -> bool:
        snap = self.core.snapshot()
        return not self._full_scan_due and not snap.get("waiting_details") and not snap.get("reports_pending")

    # ---- heartbeats ----------------------------------------------------------------
    def agent_state(self) -> AgentState:
        from lbtap.monitoring.process import process_usage

        snap = self.core.snapshot()
        cfg = self.cfg
        configurations = {
            "physical_interface_mappings": dict(cfg.physical_interface_mappings),
            "devices": snap.get("devices", 0),
            # Devices still waiting for details or for their report to be acknowledged:
            # 0 means the host has converged.
            "pending": snap.get("waiting_details", 0) + snap.get("reports_pending", 0),
            "retrying": len(snap.get("retrying", {})),
            # Why each retrying device fails (for `lbtap explain`); bounded for big hosts.
            "retrying_devices": {name: {"attempts": r["attempts"], "error": r["error"]}
                                 for name, r in sorted(snap.get("retrying", {}).items())[:100]},
            "tunnel_types": ["vxlan"] if cfg.local_ip else [],
            "tunneling_ip": cfg.local_ip,
            "l2_population": cfg.l2_population,
            "netns": cfg.netns,
            "process": process_usage(),
            "pid": os.getpid(),
            "converged_after": self.converged_after,
            "extensions": {ext.name: ext.snapshot() for ext in self.extensions},
            "loop": {"iterations": self.loop_iterations, "last_seconds": round(self.last_loop_seconds, 6),
                     "last_work": {k: round(v, 6) for k, v in self.stage_seconds.items()}},
        }
        return AgentState(
            binary=c.AGENT_BINARY_L2,
            host=cfg.host,
            agent_type=c.AGENT_TYPE_LINUXBRIDGE,
            topic=topics.AGENT_FANOUT,
            configurations=configurations,
            start_flag=self._start_flag,
        )

    async def _heartbeat_loop(self) -> None:
        while True:
            try:
                await self.heartbeat()
            except BusError as e:
                log.warning("heartbeat not delivered: %s", e)
            await asyncio.sleep(self.cfg.report_interval)

    async def heartbeat(self) -> str:
        """One ``report_state``; returns the server's verdict. "revived" (the server had
        considered this agent dead, so it may have missed casts meanwhile) triggers the
        same resync as a bus reconnect, extensions' included. Not on the first heartbeat
        after start (``start_flag``): a starting agent reads everything anyway."""
        starting = self._start_flag
        verdict = await self.plugin.report_state(self.agent_state(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        self._start_flag = False
        if verdict == REVIVED and not starting:
            log.warning("the server had considered this agent dead: resyncing")
            self.bus.revivals += 1
            self._wake.set()
        return verdict


async def run_agent(settings: Settings) -> None:
    """``lbtap agent``: the L2 agent alone, talking to a server over the bus."""
    bus = make_bus(settings.bus.transport_url)
    await bus.start()
    agent = L2Agent(settings, bus)
    _stop_on_signals(agent.stop)
    stop_metrics = None
    try:
        if settings.agent.metrics_port:
            from lbtap.agent.metrics import serve_agent_metrics
            from lbtap.config import ConfigError

            try:
                stop_metrics = serve_agent_metrics(agent, settings.agent.metrics_port)
            except OSError as e:
                raise ConfigError(f"agent.metrics_port {settings.agent.metrics_port}: {e.strerror or e}") from None
        await agent.run()
    finally:
        if stop_metrics is not None:
            stop_metrics()
        await bus.close()


def _stop_on_signals(stop: Callable[[], None]) -> None:
    import signal

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
