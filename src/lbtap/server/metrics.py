"""Prometheus metrics of the server, served at ``GET /metrics``.

``REGISTRY`` is the process-wide registry. It holds ``lbtap_rpc_messages_total{method}``,
which the bus dispatcher bumps through ``count_rpc``. Each ``create_app`` builds an
``ApiMetrics`` on its own registry (so several apps can live in one test process) with
request counters and a ports-by-status gauge that is read from the database at scrape
time, and that registry forwards ``REGISTRY`` so one scrape shows everything.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from lbtap.domain.constants import PORT_STATUSES
from lbtap.rpc import topics

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry()

RPC_MESSAGES = Counter(
    "lbtap_rpc_messages_total", "RPC messages received from agents, by method.", ["method"], registry=REGISTRY
)

NOTIFICATIONS = Counter(
    "lbtap_agent_notifications_total",
    "Server -> agent casts and fanouts sent by the core and security/QoS notifiers, by method.",
    ["method"], registry=REGISTRY,
)


def count_notification(method: str) -> None:
    """Count one server → agent message (method names are the server's own)."""
    NOTIFICATIONS.labels(method=method).inc()

# The dispatcher reports unknown methods too; whatever a peer sends must not grow the
# label set without bound. Known RPC methods always get their own label; the first few
# unknown names do too (useful when diagnosing a version mismatch), the rest are "other".
_KNOWN_RPC = frozenset(v for k, v in vars(topics).items() if k.isupper() and isinstance(v, str) and v.isidentifier())
_MAX_UNKNOWN_RPC = 16
_unknown_rpc: set[str] = set()


def count_rpc(method: str) -> None:
    """Count one agent → server RPC message (called by the bus dispatcher)."""
    name = method
    if name not in _KNOWN_RPC:
        if not (isinstance(name, str) and len(name) <= 64 and name.isidentifier()):
            name = "other"
        elif name not in _unknown_rpc:
            if len(_unknown_rpc) >= _MAX_UNKNOWN_RPC:
                name = "other"
            else:
                _unknown_rpc.add(name)
    RPC_MESSAGES.labels(method=name).inc()


class _Forward(Collector):
    """Exposes another registry's metrics through this one."""

    def __init__(self, source: CollectorRegistry):
        self._source = source

    def collect(self):
        yield from self._source.collect()


class _PortStatusCollector(Collector):
    """``lbtap_ports{status}``: how many ports are in each status, counted per scrape."""

    def __init__(self, count: Callable[[], Mapping[str, int]]):
        self._count = count

    def collect(self):
        family = GaugeMetricFamily("lbtap_ports", "Ports by status, read from the database.", labels=["status"])
        up = GaugeMetricFamily("lbtap_ports_scrape_ok", "1 if the last ports-by-status query succeeded.")
        try:
            counts = dict(self._count())
            ok = 1.0
        except Exception:  # a broken DB must not break the scrape of every other metric
            log.exception("ports-by-status query failed")
            counts, ok = {}, 0.0
        for status in sorted(set(PORT_STATUSES) | set(counts)):
            family.add_metric([status], float(counts.get(status, 0)))
        up.add_metric([], ok)
        yield family
        yield up


class ApiMetrics:
    """The per-app metrics: request counts and latency plus the DB-backed port gauge."""

    def __init__(self, registry: CollectorRegistry | None, port_status_counts: Callable[[], Mapping[str, int]]):
        if registry is None:
            registry = CollectorRegistry()
        if registry is not REGISTRY:
            registry.register(_Forward(REGISTRY))
        self.registry = registry
        self.requests = Counter(
            "lbtap_api_requests_total", "API requests, by method, route template and status code.",
            ["method", "route", "status"], registry=registry,
        )
        self.latency = Histogram(
            "lbtap_api_request_seconds", "API request latency, by method and route template.",
            ["method", "route"], registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        registry.register(_PortStatusCollector(port_status_counts))

    def observe(self, method: str, route: str, status: int, started: float) -> None:
        self.requests.labels(method=method, route=route, status=str(status)).inc()
        self.latency.labels(method=method, route=route).observe(time.perf_counter() - started)


class MetricsMiddleware:
    """Pure ASGI middleware counting every HTTP request by its route template.

    The template (``/v2.0/ports/{id}``), not the raw path, is the label, so ids do not
    explode label cardinality; unmatched paths are counted as ``unmatched``.
    """

    def __init__(self, app, metrics: ApiMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(scope.get("method", "?"), template, status, started)
