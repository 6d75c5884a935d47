"""CPU and memory of this process, for heartbeats and /metrics."""

from __future__ import annotations

import os

import psutil

_proc = psutil.Process(os.getpid())
_proc.cpu_percent(None)  # prime: the first reading is always 0.0


def process_usage() -> dict[str, float]:
    """CPU% since the previous call (of one core) and resident memory in bytes."""
    with _proc.oneshot():
        return {
            "cpu_percent": _proc.cpu_percent(None),
            "rss_bytes": float(_proc.memory_info().rss),
            "threads": float(_proc.num_threads()),
        }


def process_age() -> float:
    """Seconds since this process started, to ~10 ms (psutil's create_time() rests on
    the boot time in whole seconds, so it can be off by up to a second)."""
    with open("/proc/self/stat") as f:
        after_comm = f.read().rsplit(")", 1)[1].split()
    start_ticks = int(after_comm[19])  # field 22 of proc(5): starttime, in clock ticks since boot
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
