"""What the monitoring commands read from the server: agents, ports, networks, /metrics.

A thin synchronous client (httpx); every failure becomes ``ApiUnavailable`` with a
one-line message, because for ``doctor`` an unreachable server is a normal situation
(it then runs the host checks alone) rather than a crash. The shaping of agent rows
for ``lbtap status`` is a pure function (``agent_rows``) with ``now`` injected.
"""

from __future__ import annotations

import calendar
import os
import socket
import time
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:9696"
AGENT_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # Neutron's agent timestamps, UTC


class ApiUnavailable(Exception):
    """The server could not be reached or answered with an error."""


def resolve_url(url: str | None) -> str:
    return (url or os.environ.get("LBTAP_URL") or DEFAULT_URL).rstrip("/")


class ApiView:
    """Reads from the Neutron API at ``url`` (token from ``LBTAP_TOKEN`` if set)."""

    def __init__(self, url: str | None = None, *, timeout: float = 5.0, token: str | None = None):
        self.url = resolve_url(url)
        headers = {"Accept": "application/json"}
        token = token or os.environ.get("LBTAP_TOKEN")
        if token:
            headers["X-Auth-Token"] = token
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> ApiView:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _get(self, path: str, **params: Any) -> httpx.Response:
        try:
            resp = self.client.get(path, params=params or None)
        except httpx.HTTPError as e:
            raise ApiUnavailable(f"cannot reach the API at {self.url}: {e or type(e).__name__}") from None
        if resp.status_code >= 400:
            raise ApiUnavailable(f"GET {path}: {resp.status_code} {resp.text.strip()[:200]}")
        return resp

    def list(self, plural: str, **filters: Any) -> list[dict]:
        """Every item of a collection, following ``<plural>_links`` next pages."""
        items: list[dict] = []
        body = self._json(self._get(f"/v2.0/{plural}", **filters), plural)
        while True:
            items.extend(body.get(plural, []))
            nxt = next((lk["href"] for lk in body.get(f"{plural}_links", []) if lk.get("rel") == "next"), None)
            if not nxt:
                return items
            body = self._json(self._get(nxt), plural)

    @staticmethod
    def _json(resp: httpx.Response, what: str) -> dict:
        try:
            return resp.json()
        except ValueError:
            raise ApiUnavailable(f"{what}: the server did not answer JSON") from None

    def metrics_text(self) -> str | None:
        """The ``/metrics`` exposition, or None if the server has none."""
        try:
            return self._get("/metrics").text
        except ApiUnavailable:
            return None


# ---------------------------------------------------------------------- pure shaping

def parse_agent_time(value: str | None) -> float | None:
    """Epoch seconds of an agent timestamp ("2026-11-29 00:31:35", UTC; ISO accepted)."""
    if not value:
        return None
    v = value.replace("T", " ").rstrip("Z").split(".")[0]
    try:
        return float(calendar.timegm(time.strptime(v, AGENT_TIME_FORMAT)))
    except ValueError:
        return None


def agent_rows(agents: list[dict], now: float) -> list[dict]:
    """One row per agent: host, type, alive, heartbeat age, devices, CPU%, RSS."""
    rows = []
    for a in sorted(agents, key=lambda a: (a.get("host") or "", a.get("agent_type") or "")):
        conf = a.get("configurations") or {}
        proc = conf.get("process") or {}
        hb = parse_agent_time(a.get("heartbeat_timestamp"))
        rows.append({
            "host": a.get("host"),
            "agent_type": a.get("agent_type"),
            "alive": bool(a.get("alive")),
            "admin_state_up": a.get("admin_state_up"),
            "heartbeat_timestamp": a.get("heartbeat_timestamp"),
            "heartbeat_age": None if hb is None else max(0.0, now - hb),
            "devices": conf.get("devices"),
            "cpu_percent": proc.get("cpu_percent"),
            "cpu_percent_sustained": proc.get("cpu_percent_sustained"),
            "rss_bytes": proc.get("rss_bytes"),
            "netns": conf.get("netns"),
            "tunneling_ip": conf.get("tunneling_ip"),
            "physical_interface_mappings": conf.get("physical_interface_mappings"),
        })
    return rows


# Process figures a Prometheus exposition may carry (prometheus_client's process
# collector names, plus lbtap's own gauges should the server export them).
PROCESS_METRICS = ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_start_time_seconds",
                   "process_open_fds", "lbtap_process_cpu_percent", "lbtap_process_rss_bytes")


def parse_metrics(text: str) -> dict[str, Any]:
    """Process figures and ports-by-status from a ``/metrics`` exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, Any] = {"process": {}, "ports_by_status": {}}
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError:
        return out
    for fam in families:
        for s in fam.samples:
            if s.name in PROCESS_METRICS:
                out["process"][s.name] = s.value
            elif s.name == "lbtap_ports" and "status" in s.labels:
                out["ports_by_status"][s.labels["status"]] = int(s.value)
    return out


def pick_agent(agents: list[dict], netns: str | None, host: str | None) -> dict | None:
    """The L2 agent for this host: by ``--host`` if given, else the one managing
    ``netns`` (configurations.netns), else the one named after this machine."""
    l2 = [a for a in agents if (a.get("agent_type") or "").lower().startswith("linux bridge")] or agents
    if host:
        return next((a for a in l2 if a.get("host") == host), None)
    by_ns = [a for a in l2 if (a.get("configurations") or {}).get("netns") == netns]
    if netns is not None and by_ns:
        return by_ns[0]
    me = socket.gethostname()
    return next((a for a in l2 if a.get("host") == me), by_ns[0] if by_ns else None)
