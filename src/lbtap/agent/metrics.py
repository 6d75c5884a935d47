"""Prometheus metrics of the L2 agent, read from ``AgentCore.snapshot()`` at scrape time.

Nothing is counted twice: the core and the runtime already keep every figure
(counters, per-device states, retries, loop timings); ``AgentCollector`` turns one
snapshot into metric families when scraped. The snapshot is taken on the agent's event
loop -- the core is owned by that loop and not thread-safe, while scrapes arrive on
HTTP worker threads.

Where they are served:
* ``lbtap up``: through the server's ``/metrics`` (``register_agent_metrics`` on the
  app's registry);
* ``lbtap agent --metrics-port N`` (``agent.metrics_port``): its own HTTP endpoint on
  127.0.0.1 (``serve_agent_metrics``).

Cardinality: the ``device`` label appears only on ``lbtap_agent_device_retry_attempts``,
i.e. for devices currently retrying, capped at ``MAX_DEVICE_SERIES``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Callable

import psutil
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("lbtap.agent.metrics")

DEVICE_STATES = ("wired", "pending", "applying", "failed", "asking", "unknown", "orphan")
MAX_DEVICE_SERIES = 200
SNAPSHOT_TIMEOUT = 2.0

# core counter key -> (metric name without _total, help)
_COUNTERS = {
    "device_failures": ("lbtap_agent_device_failures", "Device wiring attempts that failed."),
    "cleanup_failures": ("lbtap_agent_cleanup_failures", "Bridge-level (network, teardown) operations that failed."),
    "full_scans": ("lbtap_agent_full_scans", "Full reconciles of the host's links."),
    "details_requested": ("lbtap_agent_details_requested", "Devices whose details were asked from the server."),
    "details_unknown": ("lbtap_agent_details_unknown", "Details answers for devices unknown or bound elsewhere."),
    "plans": ("lbtap_agent_plans", "Reconcile plans made."),
    "ops": ("lbtap_agent_ops", "Kernel operations planned."),
    "report_batches": ("lbtap_agent_report_batches", "update_device_list batches sent."),
    "report_failed_devices": ("lbtap_agent_report_failed_devices", "Devices the server listed as failed in a report."),
    "report_server_unreachable": ("lbtap_agent_report_server_unreachable", "Report batches not delivered."),
}


def _take(agent: Any) -> dict[str, Any]:
    """Everything a scrape needs, copied (runs on the agent's loop)."""
    return {
        "host": agent.cfg.host,
        "core": agent.core.snapshot(),
        "iterations": agent.loop_iterations,
        "last_loop_seconds": agent.last_loop_seconds,
        "stages": dict(agent.stage_seconds),
        "converged_after": agent.converged_after,
    }


def take_snapshot(agent: Any, timeout: float = SNAPSHOT_TIMEOUT) -> dict[str, Any] | None:
    """The agent's snapshot from any thread; None if its loop is not running."""
    loop = getattr(agent, "_loop", None)
    if loop is None or loop.is_closed() or not loop.is_running():
        return None
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        return _take(agent)

    async def on_loop() -> dict[str, Any]:
        return _take(agent)

    try:
        return asyncio.run_coroutine_threadsafe(on_loop(), loop).result(timeout)
    except Exception as e:  # a busy or stopping loop: skip this scrape's agent figures
        log.debug("agent snapshot unavailable: %r", e)
        return None


class AgentCollector(Collector):
    """Metric families of one L2 agent (labelled by ``host``)."""

    def __init__(self, agent: Any):
        self.agent = agent
        self._proc = psutil.Process()
        self._proc.cpu_percent(None)  # first call primes the measurement
        self._proc_lock = threading.Lock()

    def collect(self):
        snap = take_snapshot(self.agent)
        host = self.agent.cfg.host
        up = GaugeMetricFamily("lbtap_agent_up", "1 if the agent's loop answered this scrape.", labels=["host"])
        up.add_metric([host], 0.0 if snap is None else 1.0)
        yield up
        yield from self._process(host)
        if snap is None:
            return
        core = snap["core"]
        g = lambda name, doc, *labels: GaugeMetricFamily(name, doc, labels=["host", *labels])  # noqa: E731
        devices = g("lbtap_agent_devices", "Tap devices on the host, by the core's state.", "state")
        states = core.get("states", {})
        for state in sorted(set(DEVICE_STATES) | set(states)):
            devices.add_metric([host, state], float(states.get(state, 0)))
        yield devices
        retrying = core.get("retrying", {})
        for name, doc, value in (
            ("lbtap_agent_devices_retrying", "Devices waiting to retry their wiring.", len(retrying)),
            ("lbtap_agent_bridges_retrying", "Bridges waiting to retry network-level work.",
             len(core.get("bridges_retrying", {}))),
            ("lbtap_agent_networks", "Networks with devices on this host.", core.get("networks", 0)),
            ("lbtap_agent_waiting_details", "Devices waiting for details from the server.",
             core.get("waiting_details", 0)),
            ("lbtap_agent_reports_pending", "Devices whose status report is not acknowledged yet.",
             core.get("reports_pending", 0)),
            ("lbtap_agent_loop_last_seconds", "Duration of the agent loop's last pass.", snap["last_loop_seconds"]),
        ):
            fam = g(name, doc)
            fam.add_metric([host], float(value))
            yield fam
        attempts = g("lbtap_agent_device_retry_attempts", "Failed wiring attempts of each retrying device.", "device")
        for name in sorted(retrying)[:MAX_DEVICE_SERIES]:
            attempts.add_metric([host, name], float(retrying[name].get("attempts") or 0))
        yield attempts
        stages = g("lbtap_agent_stage_last_seconds", "Duration of each stage of the last pass that did work.", "stage")
        for stage, seconds in sorted(snap["stages"].items()):
            stages.add_metric([host, stage], float(seconds))
        yield stages
        if snap["converged_after"] is not None:
            conv = g("lbtap_agent_converged_after_seconds", "Seconds from process start to the first quiet state.")
            conv.add_metric([host], float(snap["converged_after"]))
            yield conv
        yield from self._counters(host, snap)

    @staticmethod
    def _counters(host: str, snap: dict[str, Any]):
        counters = snap["core"].get("counters", {})
        loops = CounterMetricFamily("lbtap_agent_loop_iterations", "Passes of the agent loop.", labels=["host"])
        loops.add_metric([host], float(snap["iterations"]))
        yield loops
        for key, (name, doc) in _COUNTERS.items():
            fam = CounterMetricFamily(name, doc, labels=["host"])
            fam.add_metric([host], float(counters.get(key, 0)))
            yield fam
        sent = CounterMetricFamily("lbtap_agent_reports_sent", "Device status reports sent, by kind.",
                                   labels=["host", "kind"])
        acked = CounterMetricFamily("lbtap_agent_reports_acked", "Device status reports acknowledged, by kind.",
                                    labels=["host", "kind"])
        for kind in ("up", "down"):
            sent.add_metric([host, kind], float(counters.get(f"report_sent_{kind}", 0)))
            acked.add_metric([host, kind], float(counters.get(f"report_acked_{kind}", 0)))
        yield sent
        yield acked

    def _process(self, host: str):
        with self._proc_lock, self._proc.oneshot():
            cpu_percent = self._proc.cpu_percent(None)
            times = self._proc.cpu_times()
            rss = self._proc.memory_info().rss
        for name, doc, value, family in (
            ("lbtap_agent_process_cpu_percent", "CPU% of the agent's process since the previous scrape.",
             cpu_percent, GaugeMetricFamily),
            ("lbtap_agent_process_cpu_seconds", "CPU seconds of the agent's process.",
             times.user + times.system, CounterMetricFamily),
            ("lbtap_agent_process_rss_bytes", "Resident memory of the agent's process.", rss, GaugeMetricFamily),
        ):
            fam = family(name, doc, labels=["host"])
            fam.add_metric([host], float(value))
            yield fam


def register_agent_metrics(agent: Any, registry: CollectorRegistry) -> Callable[[], None]:
    """Expose ``agent``'s metrics through ``registry``; returns the undo."""
    collector = AgentCollector(agent)
    registry.register(collector)
    return lambda: registry.unregister(collector)


def serve_agent_metrics(agent: Any, port: int, addr: str = "127.0.0.1") -> Callable[[], None]:
    """Serve ``GET /metrics`` of ``agent`` (plus process metrics) on ``addr:port`` in a
    daemon thread; returns the stop function. Raises OSError if the port is taken."""
    from prometheus_client import start_http_server

    registry = CollectorRegistry()
    registry.register(AgentCollector(agent))
    httpd, thread = start_http_server(port, addr=addr, registry=registry)
    log.info("agent metrics on http://%s:%d/metrics", addr, port)

    def stop() -> None:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)

    return stop
