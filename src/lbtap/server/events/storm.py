"""Storm alarms: the seed's ``update_device_up`` storm, detected as it happens.

Two rules, evaluated per agent (host) on every status report the server applied:

* ``duplicate_up``: a device reported ``up`` by a host whose previous report for it was
  already ``up`` (no ``down`` in between). A healthy agent reports each DOWN→ACTIVE
  transition exactly once, so even one duplicate is a fault (the seed's agent re-added
  every tap after any error);
* ``report_rate``: more than ``storm_max_reports`` device reports from one host within
  ``storm_window`` seconds (a flapping or looping agent that alternates up and down).

An alarm is keyed by (host, reason): further triggers while it is active add devices to
it. It stays active until ``storm_alarm_hold`` seconds pass without a trigger. Pure
logic with an injected clock; the caller persists raised alarms (``on_raise``) and the
collector exports ``lbtap_storm_alarms_total`` and ``lbtap_storm_alarms_active``.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

REASONS = ("duplicate_up", "report_rate")
# Devices named in one alarm: enough to act on, bounded so a 10k-device storm stays small.
MAX_ALARM_DEVICES = 1000
# Hosts x devices remembered for the duplicate rule; beyond that the oldest hosts go.
MAX_TRACKED_DEVICES = 200_000


@dataclass
class Alarm:
    """One storm alarm of one agent."""

    id: int
    host: str
    reason: str
    first_at: float
    last_at: float
    devices: list[str] = field(default_factory=list)
    devices_total: int = 0  # distinct devices seen, also beyond MAX_ALARM_DEVICES
    triggers: int = 0
    detail: str = ""

    def active(self, now: float, hold: float) -> bool:
        return now - self.last_at < hold

    def to_dict(self, now: float, hold: float) -> dict[str, Any]:
        return {"id": self.id, "host": self.host, "reason": self.reason, "active": self.active(now, hold),
                "first_at": self.first_at, "last_at": self.last_at, "devices": sorted(self.devices),
                "devices_total": self.devices_total, "triggers": self.triggers, "detail": self.detail}


class StormDetector:
    """Thread-safe (status listeners run in RPC worker threads)."""

    def __init__(self, *, window: float = 60.0, max_reports: int = 2000, hold: float = 300.0,
                 clock: Callable[[], float] = time.time, keep: int = 100,
                 on_raise: Callable[[Alarm], None] | None = None):
        self.window = window
        self.max_reports = max_reports
        self.hold = hold
        self.clock = clock
        self.on_raise = on_raise
        self._lock = threading.Lock()
        self._last: dict[str, dict[str, bool]] = {}  # host -> device -> last report was up
        self._reports: dict[str, deque[tuple[float, int]]] = {}  # host -> (time, devices) in window
        self._counts: dict[str, int] = {}  # host -> device reports in window
        self._open: dict[tuple[str, str], Alarm] = {}  # (host, reason) -> latest alarm
        self._history: deque[Alarm] = deque(maxlen=keep)
        self._ids = itertools.count(1)
        self.raised_total: dict[tuple[str, str], int] = {}

    def observe(self, host: str, up: list[str], down: list[str]) -> list[Alarm]:
        """Fold in one applied report; returns the alarms it raised (new ones only)."""
        now = self.clock()
        raised: list[Alarm] = []
        with self._lock:
            last = self._last.setdefault(host, {})
            duplicates = [d for d in up if last.get(d) is True]
            for d in up:
                last[d] = True
            for d in down:
                last[d] = False
            self._bound_memory()
            if duplicates:
                new = self._trigger(host, "duplicate_up", duplicates, now,
                                    f"{len(duplicates)} device(s) reported up again without a down in between")
                if new:
                    raised.append(new)
            n = len(up) + len(down)
            if n:
                window = self._reports.setdefault(host, deque())
                window.append((now, n))
                self._counts[host] = self._counts.get(host, 0) + n
                while window and window[0][0] <= now - self.window:
                    self._counts[host] -= window.popleft()[1]
                if self._counts[host] > self.max_reports:
                    new = self._trigger(host, "report_rate", list(up) + list(down), now,
                                        f"{self._counts[host]} device reports in {self.window:g}s "
                                        f"(threshold {self.max_reports})")
                    if new:
                        raised.append(new)
        for alarm in raised:
            if self.on_raise is not None:
                self.on_raise(alarm)
        return raised

    def _trigger(self, host: str, reason: str, devices: list[str], now: float, detail: str) -> Alarm | None:
        """Add to the open alarm of (host, reason), or raise a new one (returned)."""
        alarm = self._open.get((host, reason))
        new = alarm is None or not alarm.active(now, self.hold)
        if new:
            alarm = Alarm(next(self._ids), host, reason, now, now)
            self._open[(host, reason)] = alarm
            self._history.append(alarm)
            self.raised_total[(host, reason)] = self.raised_total.get((host, reason), 0) + 1
        assert alarm is not None
        known = set(alarm.devices)
        for d in devices:
            if d not in known:
                alarm.devices_total += 1
                if len(alarm.devices) < MAX_ALARM_DEVICES:
                    alarm.devices.append(d)
                known.add(d)
        alarm.last_at, alarm.detail = now, detail
        alarm.triggers += 1
        return alarm if new else None

    def _bound_memory(self) -> None:
        total = sum(len(v) for v in self._last.values())
        while total > MAX_TRACKED_DEVICES and len(self._last) > 1:
            oldest = next(iter(self._last))
            total -= len(self._last.pop(oldest))

    def forget_host(self, host: str) -> None:
        """Drop the per-device memory of a host (its agent restarted from scratch)."""
        with self._lock:
            self._last.pop(host, None)

    def alarms(self, *, active_only: bool = False) -> list[dict[str, Any]]:
        """Recent alarms, newest first (each as a dict; ``active`` computed now)."""
        now = self.clock()
        with self._lock:
            out = [a.to_dict(now, self.hold) for a in reversed(self._history)]
        return [a for a in out if a["active"]] if active_only else out

    def active_counts(self) -> dict[tuple[str, str], int]:
        now = self.clock()
        with self._lock:
            return {k: 1 for k, a in self._open.items() if a.active(now, self.hold)}


class StormCollector(Collector):
    """``lbtap_storm_alarms_total{host,reason}`` and ``lbtap_storm_alarms_active{host,reason}``."""

    def __init__(self, detector: StormDetector):
        self.detector = detector

    def collect(self):
        total = CounterMetricFamily("lbtap_storm_alarms", "Storm alarms raised, by agent host and reason.",
                                    labels=["host", "reason"])
        active = GaugeMetricFamily("lbtap_storm_alarms_active", "Storm alarms currently active, by agent host "
                                   "and reason.", labels=["host", "reason"])
        with self.detector._lock:
            raised = dict(self.detector.raised_total)
        current = self.detector.active_counts()
        for (host, reason), n in sorted(raised.items()):
            total.add_metric([host, reason], float(n))
            active.add_metric([host, reason], float(current.get((host, reason), 0)))
        yield total
        yield active
