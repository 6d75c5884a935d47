"""The server process: database, API (uvicorn) and RPC handlers on the bus.

``build_server`` assembles the parts so that ``lbtap server`` and the all-in-one
``lbtap up`` share one wiring; ``run_server`` runs them until SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import signal
from dataclasses import dataclass, field
from typing import Any, Callable

import uvicorn

from lbtap.bus.base import Bus, make_bus
from lbtap.config import Settings
from lbtap.rpc import topics

log = logging.getLogger("lbtap.server")


@dataclass
class ServerParts:
    """Everything a server process runs; extensions add to the last three fields."""

    engine: Any
    services: Any
    rpc: Any
    app: Any
    bus: Bus
    audit: Any
    settings: Settings | None = None
    loop: asyncio.AbstractEventLoop | None = None
    # Extra agent-facing RPC methods: name -> handler (sync handlers run in a thread).
    rpc_handlers: dict[str, Callable[..., Any]] = field(default_factory=dict)
    # Called after each status report is applied, in the handler's thread, with
    # (host, devices_up, devices_down): e.g. l2population, port lifecycle events.
    status_listeners: list[Callable[[str, list[str], list[str]], None]] = field(default_factory=list)
    # Extra Notifier objects: every data-layer notification also reaches them.
    notifiers: list[Any] = field(default_factory=list)
    # Called after each get_devices_details_list, in the handler's thread, with
    # (host, devices, details as sent): e.g. the port timeline's "device seen".
    details_listeners: list[Callable[[str, list[str], list[dict]], None]] = field(default_factory=list)
    # The core notifier (details pushes, port/network casts); extensions' are in ``notifiers``.
    bus_notifier: Any = None


# Server extensions, each a module with ``install(parts: ServerParts) -> None``; features
# (security groups, l3, dhcp, l2population, events) register here as they land.
EXTENSION_MODULES: tuple[str, ...] = ("lbtap.server.l2pop", "lbtap.server.dhcp_ext", "lbtap.server.l3_ext", "lbtap.server.events", "lbtap.server.security_ext")


RPC_METHODS = (
    topics.GET_DEVICES_DETAILS_LIST,
    topics.UPDATE_DEVICE_LIST,
    topics.UPDATE_DEVICE_UP,
    topics.UPDATE_DEVICE_DOWN,
)


def build_server(settings: Settings, bus: Bus, loop: asyncio.AbstractEventLoop) -> ServerParts:
    """Create engine (running migrations), services, RPC handlers and the ASGI app."""
    from lbtap.server.app import create_app
    from lbtap.server.audit import ReportAudit
    from lbtap.server.bus_notifier import BusNotifier
    from lbtap.server.db.engine import create_db_engine, upgrade
    from lbtap.server.rpc_handlers import RpcHandlers
    from lbtap.server.services import Services

    engine = create_db_engine(settings.db_url)
    upgrade(engine)
    bus_notifier = BusNotifier(bus, loop)
    notifier = FanoutNotifier(bus_notifier)
    services = Services(engine, settings, notifier=notifier)
    rpc = RpcHandlers(engine, settings, notifier=notifier)
    bus_notifier.details_source = rpc
    app = create_app(settings, services)
    audit = ReportAudit()
    app.state.audit = audit
    parts = ServerParts(engine=engine, services=services, rpc=rpc, app=app, bus=bus, audit=audit,
                        settings=settings, loop=loop, bus_notifier=bus_notifier)
    for module in EXTENSION_MODULES:
        importlib.import_module(module).install(parts)
    notifier.extra.extend(parts.notifiers)
    return parts


async def drain_notifications(parts: ServerParts, timeout: float = 5.0) -> bool:
    """Send what the last API requests and status reports handed to the notifiers
    (coalesced pushes, member deltas, l2population entries) before the bus closes, so
    a server stopping right after a change does not leave agents to find it out at
    their next periodic re-read. False if something was still unsent at ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    notifiers = [n for n in (parts.bus_notifier, *parts.notifiers) if hasattr(n, "drain")]
    # Status reports still arrive while draining and may hand one notifier more work
    # after it was drained: done only when all are idle at once.
    while True:
        for n in notifiers:
            await n.drain(max(0.0, deadline - loop.time()))
        if all(n.idle() for n in notifiers if hasattr(n, "idle")):
            return True
        if loop.time() >= deadline:
            log.warning("stopping with notifications unsent after %.1fs; agents re-read them later", timeout)
            return False
        await asyncio.sleep(0.005)


class FanoutNotifier:
    """Forwards every Notifier call to the bus notifier and to extensions' notifiers."""

    def __init__(self, primary: Any):
        self.primary = primary
        self.extra: list[Any] = []

    def __getattr__(self, name: str) -> Callable[..., None]:
        targets = [t for t in (self.primary, *self.extra) if hasattr(t, name)]

        def call(*args: Any, **kwargs: Any) -> None:
            for t in targets:
                try:
                    getattr(t, name)(*args, **kwargs)
                except Exception:  # one listener's failure must not fail the API request
                    log.exception("notifier %s.%s failed", type(t).__name__, name)

        return call


async def serve_rpc(parts: ServerParts) -> None:
    """Consume the agents' calls and heartbeats; count every message for /metrics."""
    from lbtap.rpc.proxies import Dispatcher
    from lbtap.server.metrics import count_rpc

    handlers = {name: getattr(parts.rpc, name) for name in RPC_METHODS}
    handlers[topics.REPORT_STATE] = parts.rpc.report_state
    audit = parts.audit

    def notify_status(host: str, up: list[str], down: list[str]) -> None:
        for listener in parts.status_listeners:
            try:
                listener(host, up, down)
            except Exception:
                log.exception("status listener %r failed", listener)

    def update_device_list(devices_up=(), devices_down=(), agent_id="", host="", **kw):
        audit.record(host, list(devices_up), list(devices_down))
        result = parts.rpc.update_device_list(list(devices_up), list(devices_down), agent_id, host, **kw)
        notify_status(host, result.get("devices_up", []), result.get("devices_down", []))
        return result

    def update_device_up(device, agent_id="", host="", **kw):
        audit.record(host, [device], [])
        result = parts.rpc.update_device_up(device, agent_id, host, **kw)
        notify_status(host, [device], [])
        return result

    def update_device_down(device, agent_id="", host="", **kw):
        audit.record(host, [], [device])
        result = parts.rpc.update_device_down(device, agent_id, host, **kw)
        notify_status(host, [], [device])
        return result

    def get_devices_details_list(devices=(), agent_id="", host="", **kw):
        result = parts.rpc.get_devices_details_list(list(devices), agent_id, host, **kw)
        for listener in parts.details_listeners:
            try:
                listener(host, list(devices), result)
            except Exception:
                log.exception("details listener %r failed", listener)
        return result

    if parts.details_listeners:
        handlers[topics.GET_DEVICES_DETAILS_LIST] = get_devices_details_list
    handlers[topics.UPDATE_DEVICE_LIST] = update_device_list
    handlers[topics.UPDATE_DEVICE_UP] = update_device_up
    handlers[topics.UPDATE_DEVICE_DOWN] = update_device_down
    handlers.update(parts.rpc_handlers)
    dispatcher = Dispatcher(handlers, on_message=count_rpc)
    await parts.bus.serve(topics.PLUGIN, dispatcher)
    await parts.bus.serve(topics.REPORTS, dispatcher)


class _Uvicorn(uvicorn.Server):
    """uvicorn re-raises a captured SIGTERM after its graceful shutdown, which would make
    every clean stop exit with -15; our own handlers end serve() and we exit 0."""

    @contextlib.contextmanager
    def capture_signals(self):
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._request_exit)
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    def _request_exit(self) -> None:
        # A second signal while shutting down forces the exit, as uvicorn does.
        if self.should_exit:
            self.force_exit = True
        self.should_exit = True


def make_uvicorn(settings: Settings, app: Any) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        host=settings.server.bind,
        port=settings.server.port,
        log_level=settings.log_level.lower(),
        access_log=False,
        lifespan="off",
        log_config=None,  # keep our one structured log format
    )
    return _Uvicorn(config)


async def run_server(settings: Settings) -> None:
    """``lbtap server``: API and RPC handlers until a signal stops uvicorn."""
    bus = make_bus(settings.bus.transport_url)
    await bus.start()
    try:
        parts = build_server(settings, bus, asyncio.get_running_loop())
        await serve_rpc(parts)
        log.info("server listening on http://%s:%d/ (db %s, bus %s)", settings.server.bind,
                 settings.server.port, parts.engine.url.render_as_string(hide_password=True),
                 settings.bus.transport_url.split("@")[-1])
        server = make_uvicorn(settings, parts.app)
        await server.serve()
        if not server.force_exit:  # a second signal means now
            await drain_notifications(parts)
    finally:
        await bus.close()
