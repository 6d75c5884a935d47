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
