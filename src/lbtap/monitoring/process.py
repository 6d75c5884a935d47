"""CPU and memory of this process, for heartbeats and /metrics."""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Sequence

import psutil

_proc = psutil.Process(os.getpid())
_proc.cpu_percent(None)  # prime: the first reading is always 0.0

#: CPU counts as sustained when every reading over this long was at least that high.
SUSTAINED_WINDOW = 60.0
# (monotonic time, CPU% of the interval ending then); pruned by age in process_usage
_readings: deque[tuple[float, float]] = deque()


def sustained_cpu(readings: Sequence[tuple[float, float]], now: float,
                  window: float = SUSTAINED_WINDOW) -> float | None:
    """The lowest per-interval CPU% over the last ``window`` seconds, or None while the
    readings do not cover that long yet.

    A busy minute after start (imports, a burst of plugs, the API of an all-in-one) is
    work; a loop re-processing every device (the seed's storm) keeps every reading high,
    and only that should alarm."""
    if not readings or readings[0][0] > now - window:
        return None
    recent = [cpu for when, cpu in readings if when > now - window]
    # No reading inside the window: the newest is older, and says nothing of this minute.
    return min(recent) if recent else None


def process_usage(now: float | None = None) -> dict[str, float | None]:
    """CPU% since the previous call (of one core), CPU% sustained over the last minute
    (``sustained_cpu``), resident memory in bytes and thread count."""
    now = time.monotonic() if now is None else now
    with _proc.oneshot():
        cpu = _proc.cpu_percent(None)
        usage: dict[str, float | None] = {
            "cpu_percent": cpu,
            "rss_bytes": float(_proc.memory_info().rss),
            "threads": float(_proc.num_threads()),
        }
    _readings.append((now, cpu))
    while len(_readings) > 1 and _readings[1][0] <= now - SUSTAINED_WINDOW:
        _readings.popleft()  # keep one reading older than the window: it marks coverage
    usage["cpu_percent_sustained"] = sustained_cpu(_readings, now)
    return usage


def process_age() -> float:
    """Seconds since this process started, to ~10 ms (psutil's create_time() rests on
    the boot time in whole seconds, so it can be off by up to a second)."""
    with open("/proc/self/stat") as f:
        after_comm = f.read().rsplit(")", 1)[1].split()
    start_ticks = int(after_comm[19])  # field 22 of proc(5): starttime, in clock ticks since boot
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
