"""CPU readings for heartbeats: the sustained figure the doctor alarms on."""

from __future__ import annotations

from collections import deque

from lbtap.monitoring import process
from lbtap.monitoring.process import SUSTAINED_WINDOW, process_usage, sustained_cpu


def test_nothing_sustained_before_the_readings_cover_the_window():
    assert sustained_cpu([], 100.0) is None
    assert sustained_cpu([(50.0, 99.0), (80.0, 99.0)], 100.0, window=60.0) is None


def test_sustained_is_the_lowest_reading_within_the_window():
    readings = [(0.0, 100.0), (30.0, 97.0), (60.0, 100.0), (90.0, 98.0)]
    assert sustained_cpu(readings, 90.0, window=60.0) == 98.0  # 0 and 30 are outside
    calm_once = [(0.0, 100.0), (30.0, 3.0), (60.0, 100.0)]
    assert sustained_cpu(calm_once, 60.0, window=60.0) == 3.0


def test_readings_sparser_than_the_window():
    # The interval ending at 120 s lies in the window (70 s .. 130 s]: it counts.
    assert sustained_cpu([(0.0, 40.0), (120.0, 85.0)], 130.0, window=60.0) == 85.0
    # Nothing read within the last minute says nothing about it.
    assert sustained_cpu([(0.0, 40.0), (120.0, 85.0)], 500.0, window=60.0) is None


def test_process_usage_reports_sustained_once_a_window_has_passed(monkeypatch):
    monkeypatch.setattr(process, "_readings", deque())
    first = process_usage(now=1_000_000.0)
    assert set(first) >= {"cpu_percent", "cpu_percent_sustained", "rss_bytes", "threads"}
    assert first["rss_bytes"] > 0 and first["cpu_percent_sustained"] is None
    later = process_usage(now=1_000_000.0 + SUSTAINED_WINDOW + 1)
    assert isinstance(later["cpu_percent_sustained"], float)
