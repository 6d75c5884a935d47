"""Status-report audit: every ``update_device_up``/``down`` the server receives, per device.

This is the seed's section 4.5 check made continuous: a healthy tap gets exactly one
``up`` per DOWN→ACTIVE transition, so a second ``up`` with no ``down`` in between is
a duplicate — the signature of the ``update_device_up`` storm. The audit counts them
(``lbtap_duplicate_up_reports_total``) and keeps per-device tallies for diagnosis.
"""

from __future__ import annotations

import threading
import time
from collections import Counter as Tally
from dataclasses import dataclass, field
from typing import Callable

from prometheus_client import Counter

from lbtap.server.metrics import REGISTRY

STATUS_REPORTS = Counter(
    "lbtap_device_status_reports_total",
    "Device status reports received from agents (each device of a batch counts once).",
    ["kind"],
    registry=REGISTRY,
)
DUPLICATE_UPS = Counter(
    "lbtap_duplicate_up_reports_total",
    "update_device_up for a device whose previous report was already up (storm signal).",
    registry=REGISTRY,
)


@dataclass
class DeviceTally:
    up: int = 0
    down: int = 0
    duplicate_up: int = 0
    last: str | None = None
    last_at: float = 0.0
    last_host: str | None = None


@dataclass
class ReportAudit:
    """Thread-safe per-device tallies (RPC handlers run in worker threads)."""

    clock: Callable[[], float] = time.time
    devices: dict[str, DeviceTally] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, host: str, devices_up: list[str], devices_down: list[str]) -> list[str]:
        """Record one report; return the devices whose ``up`` was a duplicate."""
        now = self.clock()
        duplicates = []
        with self._lock:
            for kind, names in (("up", devices_up), ("down", devices_down)):
                for name in names:
                    t = self.devices.setdefault(name, DeviceTally())
                    if kind == "up":
                        t.up += 1
                        if t.last == "up":
                            t.duplicate_up += 1
                            duplicates.append(name)
                    else:
                        t.down += 1
                    t.last, t.last_at, t.last_host = kind, now, host
        if devices_up:
            STATUS_REPORTS.labels(kind="up").inc(len(devices_up))
        if devices_down:
            STATUS_REPORTS.labels(kind="down").inc(len(devices_down))
        if duplicates:
            DUPLICATE_UPS.inc(len(duplicates))
        return duplicates

    def counts(self) -> Tally:
        """Totals over every device: up, down, duplicate_up."""
        total: Tally = Tally()
        with self._lock:
            for t in self.devices.values():
                total.update(up=t.up, down=t.down, duplicate_up=t.duplicate_up)
        return total
